//! "Where the time went": the report's first table. One row per kind of
//! call and target (lookups of one host, TLS reads from one peer, slow
//! reads from one socket, ...), largest first, each with the lines of code
//! that spent the time. The tables further down hold the details.

use std::fmt::Write as _;

use serde::Serialize;

use super::{CallSiteRow, Report, fmt_ns, fmt_share, share};

/// Rows smaller than this share are left out of the text (not the JSON).
const MIN_SHARE: f64 = 0.005;
/// Call sites shown under a row.
const SITES_PER_ROW: usize = 3;

#[derive(Debug, Serialize)]
pub struct BreakdownRow {
    /// The kind of call sites this row's time comes from ("dns", "tls read",
    /// "handshake", "tls write", "io", "connect").
    pub kind: &'static str,
    pub target: String,
    /// What it is, for people: "DNS lookups of api.example.com".
    pub what: String,
    /// Counts and per-call facts: "20 lookups, 151ms each".
    pub detail: String,
    pub total_ns: u64,
    pub share: f64,
    /// (call site summary, calls, time, share), busiest first.
    pub sites: Vec<(String, u64, u64, f64)>,
}

/// Builds the rows from the report's per-target tables and call sites.
pub fn build(r: &Report, denominator_ns: u64) -> Vec<BreakdownRow> {
    let mut rows = Vec::new();
    let mut push = |kind: &'static str, target: &str, what: String, detail: String, ns: u64| {
        if ns > 0 {
            rows.push(BreakdownRow {
                kind,
                target: target.to_string(),
                what,
                detail,
                total_ns: ns,
                share: share(ns, denominator_ns),
                sites: sites_of(&r.call_sites, kind, target, denominator_ns),
            });
        }
    };
    for h in &r.dns_hosts {
        let n = h.latency.count;
        push(
            "dns",
            &h.host,
            format!("DNS lookups of {}", h.host),
            format!("{n} lookup{}, p50 {}", plural(n), fmt_ns(h.latency.p50_ns)),
            h.latency.total_ns,
        );
    }
    for p in &r.tls_peers {
        let mut detail = format!("{} reads", p.reads);
        if p.responses > 0 {
            let _ = write!(
                detail,
                ", {} per response",
                p.reads_with_data.div_ceil(p.responses)
            );
        }
        let _ = write!(
            detail,
            ", {:.0}% of the time waiting on the network",
            share(p.read_waiting_ns, p.read_ns) * 100.0
        );
        push(
            "tls read",
            &p.peer,
            format!("TLS reads from {}", p.peer),
            detail,
            p.read_ns,
        );
        if p.handshakes > 0 {
            push(
                "handshake",
                &p.peer,
                format!("TLS handshakes with {}", p.peer),
                format!(
                    "{} handshake{}, {} each",
                    p.handshakes,
                    plural(p.handshakes),
                    fmt_ns(p.handshake_ns / p.handshakes)
                ),
                p.handshake_ns,
            );
        }
        push(
            "tls write",
            &p.peer,
            format!("TLS writes to {}", p.peer),
            format!("{} writes", p.writes),
            p.write_ns,
        );
    }
    for io in &r.slow_io {
        let n = io.reads.count + io.writes.count;
        push(
            "io",
            &io.target,
            format!("Slow reads and writes on {}", io.target),
            format!(
                "{n} call{} over the threshold, max {}",
                plural(n),
                fmt_ns(io.reads.max_ns.max(io.writes.max_ns))
            ),
            io.reads.total_ns + io.writes.total_ns,
        );
    }
    for p in &r.connect_peers {
        let n = p.latency.count;
        push(
            "connect",
            &p.peer,
            format!("Connects to {}", p.peer),
            format!("{n} connect{}, p50 {}", plural(n), fmt_ns(p.latency.p50_ns)),
            p.latency.total_ns,
        );
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.total_ns));
    rows
}

fn sites_of(
    sites: &[CallSiteRow],
    kind: &str,
    target: &str,
    denominator_ns: u64,
) -> Vec<(String, u64, u64, f64)> {
    let mut out: Vec<(String, u64, u64, f64)> = Vec::new();
    // Rows of one summary (the same line, reached by different paths) are
    // one entry here.
    for s in sites
        .iter()
        .filter(|s| s.kind == kind && s.target.eq_ignore_ascii_case(target))
    {
        match out.iter_mut().find(|o| o.0 == s.summary) {
            Some(o) => {
                o.1 += s.count;
                o.2 += s.total_ns;
            }
            None => out.push((s.summary.clone(), s.count, s.total_ns, 0.0)),
        }
    }
    for o in &mut out {
        o.3 = share(o.2, denominator_ns);
    }
    out.sort_by_key(|o| std::cmp::Reverse(o.2));
    out
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The text of the breakdown: rows of at least `MIN_SHARE`, at most `rows`.
pub fn write(out: &mut String, r: &Report, words: &str, denominator_ns: u64, rows: usize) {
    let shown: Vec<&BreakdownRow> = r
        .breakdown
        .iter()
        .filter(|b| b.share >= MIN_SHARE)
        .take(rows)
        .collect();
    if shown.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nWhere the {words} went ({}), largest first",
        fmt_ns(denominator_ns)
    );
    for b in shown {
        let _ = writeln!(
            out,
            "  {:>6} {:>8}  {}: {}",
            fmt_share(b.share),
            fmt_ns(b.total_ns),
            b.what,
            b.detail
        );
        for (summary, calls, ns, s) in b.sites.iter().take(SITES_PER_ROW) {
            let _ = writeln!(
                out,
                "  {:>6} {:>8}    {calls} from {summary}",
                fmt_share(*s),
                fmt_ns(*ns),
            );
        }
    }
}
