//! "What to fix first": the worst offenders in plain words, each with the
//! evidence the trace holds and the obvious fix, largest share first.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Kind, Report};
use crate::{
    kind::CallKind,
    units::{fmt_ns, fmt_share, share},
};

/// Offenders smaller than this share of the time are not worth a line,
/// except connects that stall for a second or more.
const MIN_SHARE: f64 = 0.01;

#[derive(Debug, Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub share: f64,
    pub what: String,
    pub evidence: String,
    pub fix: String,
}

/// Well-known server ports, for a more pointed fix.
fn service_of(target: &str) -> Option<&'static str> {
    let port = target
        .split(" (")
        .next()?
        .rsplit(':')
        .next()?
        .parse::<u16>()
        .ok()?;
    match port {
        3306 => Some("MySQL"),
        5432 => Some("PostgreSQL"),
        6379 => Some("Redis"),
        27017 => Some("MongoDB"),
        9200 => Some("Elasticsearch"),
        _ => None,
    }
}

pub fn build(r: &Report, denominator_ns: u64) -> Vec<Finding> {
    let mut out = Vec::new();
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
    for p in &r.tls_peers {
        let read_share = share(p.read_ns, denominator_ns);
        if read_share >= MIN_SHARE && p.reads > 0 {
            let per_read = p.read_bytes.checked_div(p.reads_with_data).unwrap_or(0);
            let waiting = share(p.read_waiting_ns, p.read_ns);
            let mut evidence = format!(
                "{} SSL reads of {per_read} bytes on average; {:.0}% of the read time waits on \
                 the network",
                p.reads,
                waiting * 100.0
            );
            if p.responses > 0 {
                let _ = write!(
                    evidence,
                    "; {} reads per response",
                    p.reads_with_data.div_ceil(p.responses)
                );
            }
            let fix = if per_read > 0 && per_read < 1024 && p.reads_with_data >= 100 {
                "the server writes small TLS records, one read each: have it write larger ones \
                 (up to 16 KiB), or ask for fewer, larger responses (bigger pages)"
            } else if waiting >= 0.5 {
                "the time is the peer's: it is slow to send; look at the server, or ask for less"
            } else {
                "the reads cost CPU here: fewer, larger reads (a bigger buffer) help"
            };
            out.push(Finding {
                kind: Kind::Tls,
                share: read_share,
                what: format!(
                    "TLS reads from {} took {} ({})",
                    p.peer,
                    fmt_ns(p.read_ns),
                    fmt_share(read_share)
                ),
                evidence,
                fix: fix.to_string(),
            });
        }
        let hs_share = share(p.handshake_ns, denominator_ns);
        if p.handshakes >= 3 && p.handshakes >= p.connections && hs_share >= MIN_SHARE / 2.0 {
            out.push(Finding {
                kind: Kind::Tls,
                share: hs_share,
                what: format!(
                    "{} TLS handshakes with {} took {} ({})",
                    p.handshakes,
                    p.peer,
                    fmt_ns(p.handshake_ns),
                    fmt_share(hs_share)
                ),
                evidence: format!(
                    "{} connections, each with its own handshake, {} responses in all",
                    p.connections, p.responses
                ),
                fix: "reuse connections: one client session (e.g. a requests.Session) or a \
                      connection pool with keep-alive"
                    .to_string(),
            });
        }
    }
    for io in &r.slow_io {
        if io.share < MIN_SHARE {
            continue;
        }
        let n = io.reads.count + io.writes.count;
        let site = r
            .breakdown
            .iter()
            .find(|b| b.kind == CallKind::SlowRead && b.target == io.target)
            .and_then(|b| b.sites.first())
            .map(|s| format!(", most from {}", s.0))
            .unwrap_or_default();
        let fix = match service_of(&io.target) {
            Some(db @ ("MySQL" | "PostgreSQL")) => format!(
                "the {db} server takes this long to answer: look at the query's plan (EXPLAIN), \
                 an index, or cache the result"
            ),
            Some(service) => {
                format!("the {service} server takes this long to answer: look at what is asked")
            }
            None => "the other end is slow to answer: look at it, or at what is asked".to_string(),
        };
        out.push(Finding {
            kind: Kind::Io,
            share: io.share,
            what: format!(
                "{n} reads and writes on {} over the threshold took {} ({})",
                io.target,
                fmt_ns(io.reads.total_ns + io.writes.total_ns),
                fmt_share(io.share)
            ),
            evidence: format!(
                "max {}{site}",
                fmt_ns(io.reads.max_ns.max(io.writes.max_ns))
            ),
            fix,
        });
    }
    for p in &r.connect_peers {
        let s = share(p.latency.total_ns, denominator_ns);
        let stalls = p.proto == "tcp" && p.latency.max_ns >= 900_000_000;
        if stalls {
            out.push(Finding {
                kind: Kind::Connect,
                share: s,
                what: format!(
                    "connects to {} stall: up to {} ({})",
                    p.peer,
                    fmt_ns(p.latency.max_ns),
                    fmt_share(s)
                ),
                evidence: format!(
                    "{} connects, p50 {}, p99 {}: a second or more is a SYN retransmit (after \
                     1 s, then 3 s)",
                    p.latency.count,
                    fmt_ns(p.latency.p50_ns),
                    fmt_ns(p.latency.p99_ns)
                ),
                fix: "the server's accept queue is full or SYNs are lost: a larger listen \
                      backlog, a server that accepts faster, or fewer new connections (reuse them)"
                    .to_string(),
            });
        } else if let Some(refused) = p.outcomes.get("ECONNREFUSED")
            && *refused >= 3
        {
            out.push(Finding {
                kind: Kind::Connect,
                share: s,
                what: format!("{refused} connects to {} were refused", p.peer),
                evidence: "nothing listens there".to_string(),
                fix: "is the service down, or the address stale? stop calling it, or fail \
                      over sooner"
                    .to_string(),
            });
        }
    }
    out.sort_by(|a, b| b.share.total_cmp(&a.share));
    out
}

pub fn write(out: &mut String, r: &Report, rows: usize, kinds: Option<&[Kind]>) {
    let shown: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| kinds.is_none_or(|k| k.contains(&f.kind)))
        .collect();
    if shown.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nWhat to fix first");
    for (i, f) in shown.into_iter().take(rows).enumerate() {
        let _ = writeln!(out, "  {}. {}", i + 1, f.what);
        let _ = writeln!(out, "     why: {}", f.evidence);
        let _ = writeln!(out, "     fix: {}", f.fix);
    }
}
