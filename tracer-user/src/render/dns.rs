//! The DNS tables and findings: per host looked up, and the queries of
//! other resolvers.

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use comfy_table::Table;
use serde::Serialize;

use super::{
    Kind, Report,
    findings::{Finding, MIN_SHARE},
    new_table, right_align, section,
};
use crate::{
    aggregate::Aggregate,
    dns::{HostStats, IN_PROGRESS, LookupRecord},
    units::{LatencyRow, fmt_count, fmt_ns, fmt_share, share},
};

#[derive(Debug, Serialize)]
pub struct DnsHostRow {
    pub host: String,
    #[serde(flatten)]
    pub latency: LatencyRow,
    pub share: f64,
    pub results: BTreeMap<String, u64>,
    pub queries: u64,
    pub retries: u64,
    pub timeouts: u64,
    /// Query names tried that are not the host (search domains).
    pub expansions: Vec<String>,
    /// Per query type: asked and answered.
    pub query_types: BTreeMap<String, (u64, u64)>,
    pub servers: Vec<String>,
    /// The findings in plain words.
    pub findings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct DnsQueryRow {
    pub name: String,
    pub qtype: String,
    pub server: String,
    #[serde(flatten)]
    pub latency: LatencyRow,
    pub unanswered: u64,
    pub rcodes: BTreeMap<String, u64>,
}

impl Report {
    pub(super) fn write_dns(&self, out: &mut String, rows: usize) {
        section(
            out,
            &format!("DNS lookups by host ({} lookups)", self.dns_lookups_total),
            dns_host_table(&self.dns_hosts, rows, self.share_of.header()),
        );
        let findings: Vec<&String> = self
            .dns_hosts
            .iter()
            .take(rows)
            .flat_map(|h| h.findings.iter())
            .collect();
        if !findings.is_empty() {
            let _ = writeln!(out, "\nWhy the lookups took that long");
            for f in findings {
                let _ = writeln!(out, "  {f}");
            }
        }
        if !self.slowest_lookups.is_empty() {
            let _ = writeln!(out, "\nSlowest lookups, with the DNS messages inside them");
            for l in self.slowest_lookups.iter().take(rows.min(5)) {
                let _ = writeln!(
                    out,
                    "  {} {}({}) pid {} tid {}: {} -> {}{}",
                    fmt_ns(l.duration_ns),
                    l.function,
                    l.host,
                    l.pid,
                    l.tid,
                    l.result,
                    l.addresses.len(),
                    if l.addresses.len() == 1 {
                        " address"
                    } else {
                        " addresses"
                    },
                );
                for q in &l.queries {
                    let answer = match (&q.latency_ns, &q.rcode) {
                        (Some(t), Some(rc)) => {
                            format!("{rc} in {}, {} answers", fmt_ns(*t), q.answers)
                        }
                        _ => "no answer".to_string(),
                    };
                    let _ = writeln!(
                        out,
                        "      {}{} {} -> {}: {answer}",
                        if q.retry { "retry " } else { "" },
                        q.qtype,
                        q.name,
                        q.server.as_deref().unwrap_or("?"),
                    );
                }
                for w in l.waits.iter().filter(|w| w.timed_out) {
                    // A Go resolver's wait is in the netpoller: no poll
                    // timeout to show.
                    let bound = if w.timeout_ms >= 0 {
                        format!(" (poll timeout {} ms)", w.timeout_ms)
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        out,
                        "      timeout: waited {}{bound} with no answer",
                        fmt_ns(w.duration_ns),
                    );
                }
            }
        }
        if !self.dns_queries.is_empty() {
            section(
                out,
                "DNS queries outside libc lookups (other resolvers)",
                dns_query_table(&self.dns_queries, rows),
            );
        }
    }
}

fn dns_host_table(rows: &[DnsHostRow], limit: usize, share_header: &str) -> Option<Table> {
    if rows.is_empty() {
        return None;
    }
    let mut t = new_table(&[
        "HOST",
        "CALLS",
        "RESULTS",
        "TOTAL",
        "P50",
        "P99",
        "MAX",
        share_header,
        "QUERIES",
        "TIMEOUTS",
    ]);
    for r in rows.iter().take(limit) {
        let results: Vec<String> = r.results.iter().map(|(o, n)| format!("{o} {n}")).collect();
        t.add_row(vec![
            r.host.clone(),
            r.latency.count.to_string(),
            results.join(", "),
            fmt_ns(r.latency.total_ns),
            fmt_ns(r.latency.p50_ns),
            fmt_ns(r.latency.p99_ns),
            fmt_ns(r.latency.max_ns),
            fmt_share(r.share),
            r.queries.to_string(),
            r.timeouts.to_string(),
        ]);
    }
    right_align(&mut t, 1..2);
    right_align(&mut t, 3..10);
    Some(t)
}

fn dns_query_table(rows: &[DnsQueryRow], limit: usize) -> Option<Table> {
    let mut t = new_table(&[
        "NAME",
        "TYPE",
        "SERVER",
        "ANSWERED",
        "NO ANSWER",
        "P50",
        "MAX",
        "RCODES",
    ]);
    for r in rows.iter().take(limit) {
        let rcodes: Vec<String> = r.rcodes.iter().map(|(o, n)| format!("{o} {n}")).collect();
        t.add_row(vec![
            r.name.clone(),
            r.qtype.clone(),
            r.server.clone(),
            r.latency.count.to_string(),
            r.unanswered.to_string(),
            fmt_ns(r.latency.p50_ns),
            fmt_ns(r.latency.max_ns),
            rcodes.join(", "),
        ]);
    }
    right_align(&mut t, 3..7);
    Some(t)
}

/// A DNS answer slower than this is the server's doing, worth a finding.
const SLOW_SERVER_NS: u64 = 10_000_000;

/// The plain-words findings for one host, strongest evidence first.
/// What is worth saying about the lookups of one host; `of` names the
/// time `wall_ns` is ("busy time", "wall time").
pub fn host_findings(
    host: &str,
    h: &HostStats,
    wall_ns: u64,
    of: &str,
    traced_ns: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    // getaddrinfo("10.0.0.7") asks no server: nothing to explain.
    if host.parse::<IpAddr>().is_ok() {
        return out;
    }
    let calls = h.latency.count;
    let share = if wall_ns > 0 {
        h.latency.total_ns as f64 / wall_ns as f64 * 100.0
    } else {
        0.0
    };
    out.push(format!(
        "{host}: {calls} lookup{} took {} in all ({share:.1}% of {of}), p50 {}, max {}",
        if calls == 1 { "" } else { "s" },
        fmt_ns(h.latency.total_ns),
        fmt_ns(h.latency.quantile_ns(0.5)),
        fmt_ns(h.latency.max_ns),
    ));
    // Which query type went unanswered, next to the ones that were answered.
    let unanswered: Vec<String> = h
        .by_type
        .iter()
        .filter(|(_, t)| t.answered < t.asked)
        .map(|(ty, t)| format!("{} of {} {ty} queries", t.asked - t.answered, t.asked))
        .collect();
    if let Some(per) = h.timeout_wait_ns.checked_div(h.timeouts) {
        let per = fmt_ns(per);
        let answered: Vec<String> = h
            .by_type
            .iter()
            .filter(|(_, t)| t.answered > 0)
            .map(|(ty, t)| format!("{ty} answered in {}", fmt_ns(t.latency.quantile_ns(0.5))))
            .collect();
        let mut s = format!(
            "  waited for answers that never came: {} timeout{} of {per} each",
            h.timeouts,
            if h.timeouts == 1 { "" } else { "s" },
        );
        if !unanswered.is_empty() {
            s.push_str(&format!(" ({} got no answer", unanswered.join(", ")));
            if !answered.is_empty() {
                s.push_str(&format!("; {}", answered.join(", ")));
            }
            s.push(')');
        }
        if h.retries > 0 {
            s.push_str(&format!(
                "; the resolver re-sent {} quer{}",
                h.retries,
                if h.retries == 1 { "y" } else { "ies" }
            ));
        }
        out.push(s);
    } else if !unanswered.is_empty() {
        out.push(format!("  no answer seen for {}", unanswered.join(", ")));
    } else if h.retries > 0 {
        out.push(format!("  {} queries were retried", h.retries));
    } else {
        // Every query answered, none re-sent: the time is the server's.
        let answered: Vec<String> = h
            .by_type
            .iter()
            .filter(|(_, t)| t.answered > 0)
            .map(|(ty, t)| format!("{ty} in {}", fmt_ns(t.latency.quantile_ns(0.5))))
            .collect();
        let slowest_answer = h
            .by_type
            .values()
            .filter(|t| t.answered > 0)
            .map(|t| t.latency.quantile_ns(0.5))
            .max()
            .unwrap_or(0);
        if slowest_answer >= SLOW_SERVER_NS && slowest_answer * 2 >= h.latency.quantile_ns(0.5) {
            let servers: Vec<&str> = h.servers.keys().map(String::as_str).collect();
            out.push(format!(
                "  the DNS server {} is slow: it answered {} (p50), every query the first time; \
                 the lookups wait on the server, not on timeouts or retries",
                servers.join(", "),
                answered.join(", "),
            ));
        }
    }
    if !h.expansions.is_empty() {
        let per_lookup = h.expansions.values().sum::<u64>() as f64 / calls.max(1) as f64;
        let names: Vec<&str> = h.expansions.keys().take(3).map(String::as_str).collect();
        out.push(format!(
            "  {} search-domain expansion{} per lookup before the name itself ({}): a trailing \
             dot (\"{host}.\") or fewer ndots in resolv.conf avoids them",
            fmt_count(per_lookup),
            if per_lookup == 1.0 { "" } else { "s" },
            names.join(", "),
        ));
    }
    let failed: Vec<String> = h
        .results
        .iter()
        .filter(|(r, _)| !matches!(r.as_str(), "ok" | IN_PROGRESS))
        .map(|(r, n)| format!("{n} failed with {r}"))
        .collect();
    if let Some(n) = h.results.get(IN_PROGRESS) {
        out.push(format!(
            "  {n} still in progress when the trace ended (timed until then)"
        ));
    }
    if !failed.is_empty() {
        let rcodes: Vec<String> = h
            .by_type
            .values()
            .flat_map(|t| t.rcodes.iter())
            .filter(|(rc, _)| rc.as_str() != "NOERROR")
            .map(|(rc, n)| format!("{rc} {n}"))
            .collect();
        let mut s = format!("  {}", failed.join(", "));
        if !rcodes.is_empty() {
            s.push_str(&format!(" (server answered {})", rcodes.join(", ")));
        }
        out.push(s);
    }
    if calls >= 3 && traced_ns > 0 && share >= 1.0 {
        out.push(format!(
            "  resolved {calls} times in {}: the process does not cache the answer",
            fmt_ns(traced_ns)
        ));
    }
    out
}

/// The DNS rows: per host, the slowest lookups, and other resolvers' queries.
pub(super) fn rows(
    agg: &Aggregate,
    wall_ns: u64,
    of: &str,
    traced_ns: u64,
) -> (Vec<DnsHostRow>, Vec<LookupRecord>, Vec<DnsQueryRow>) {
    let (hosts, slowest_lookups) = agg.dns().hosts_with(agg.in_flight_lookups());
    let mut dns_hosts: Vec<DnsHostRow> = hosts
        .iter()
        .map(|(host, h)| DnsHostRow {
            host: host.clone(),
            latency: LatencyRow::from(&h.latency),
            share: share(h.latency.total_ns, wall_ns),
            results: h.results.clone(),
            queries: h.queries,
            retries: h.retries,
            timeouts: h.timeouts,
            expansions: h.expansions.keys().cloned().collect(),
            query_types: h
                .by_type
                .iter()
                .map(|(t, s)| (t.clone(), (s.asked, s.answered)))
                .collect(),
            servers: h.servers.keys().cloned().collect(),
            findings: host_findings(host, h, wall_ns, of, traced_ns),
        })
        .collect();
    dns_hosts.sort_by_key(|r| std::cmp::Reverse(r.latency.total_ns));
    let mut dns_queries: Vec<DnsQueryRow> = agg
        .dns()
        .standalone
        .iter()
        .map(|((name, qtype, server), s)| DnsQueryRow {
            name: name.clone(),
            qtype: qtype.clone(),
            server: server.clone(),
            latency: LatencyRow::from(&s.latency),
            unanswered: s.unanswered,
            rcodes: s.rcodes.clone(),
        })
        .collect();
    dns_queries.sort_by_key(|r| std::cmp::Reverse((r.unanswered, r.latency.total_ns)));
    (dns_hosts, slowest_lookups, dns_queries)
}

/// What to fix first about the lookups of each host.
pub(super) fn findings(r: &Report, out: &mut Vec<Finding>) {
    for h in &r.dns_hosts {
        if h.share < MIN_SHARE || h.host.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        // The host's findings, after their first line (the totals).
        let evidence = h
            .findings
            .iter()
            .skip(1)
            .map(|f| f.trim())
            .collect::<Vec<_>>()
            .join("; ");
        let fix = if h.timeouts > 0 {
            "make the DNS server answer every query type promptly (even with an empty answer), \
             ask only for the family you use (AF_INET), or shorten `options timeout:` in \
             resolv.conf"
        } else if !h.expansions.is_empty() {
            "write the name with a trailing dot, or lower `options ndots:` in resolv.conf, so \
             that the search domains are not tried first"
        } else {
            "resolve once and keep the address (cache it in the process, with its TTL), or run a \
             caching resolver next to the process (nscd, systemd-resolved, dnsmasq)"
        };
        out.push(Finding {
            kind: Kind::Dns,
            share: h.share,
            what: format!(
                "{} lookups of {} took {} ({} of the {})",
                h.latency.count,
                h.host,
                fmt_ns(h.latency.total_ns),
                fmt_share(h.share),
                r.share_of.words()
            ),
            evidence: if evidence.is_empty() {
                format!("p50 {} per lookup", fmt_ns(h.latency.p50_ns))
            } else {
                evidence
            },
            fix: fix.to_string(),
        });
    }
}
