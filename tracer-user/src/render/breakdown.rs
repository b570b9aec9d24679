//! "Where the time went": the report's first table. One row per kind of
//! call and target (lookups of one host, TLS reads from one peer, slow
//! reads from one socket, ...), largest first, each with the lines of code
//! that spent the time. The tables further down hold the details.

use std::fmt::Write as _;

use serde::Serialize;

use super::{CallSiteRow, Report};
use crate::{
    kind::{CallKind, Kind},
    units::{LatencyRow, fmt_ns, fmt_share, share},
};

/// Rows smaller than this share are left out of the text (not the JSON).
const MIN_SHARE: f64 = 0.005;
/// Call sites shown under a row.
const SITES_PER_ROW: usize = 3;

#[derive(Debug, Serialize)]
pub struct BreakdownRow {
    /// The kind of call this row's time comes from (slow reads and writes
    /// are one row: `CallKind::row`).
    pub kind: CallKind,
    pub target: String,
    /// What it is, for people: "DNS lookups of api.example.com".
    pub what: String,
    /// Counts and per-call facts: "20 lookups, 151ms each".
    pub detail: String,
    pub total_ns: u64,
    pub share: f64,
    /// Count and percentiles of the single calls, where they are kept.
    pub latency: Option<LatencyRow>,
    /// (call site summary, calls, time, share), busiest first.
    pub sites: Vec<(String, u64, u64, f64)>,
}

/// How the tree is grouped: by kind and target (then call site), or by
/// call site (then kind and target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    Target,
    Callsite,
    Thread,
}

/// Builds the rows from the report's per-target tables and call sites.
pub fn build(r: &Report, denominator_ns: u64) -> Vec<BreakdownRow> {
    let mut rows = Vec::new();
    let mut push = |kind: CallKind,
                    target: &str,
                    what: String,
                    detail: String,
                    ns: u64,
                    latency: Option<&LatencyRow>| {
        if ns > 0 {
            rows.push(BreakdownRow {
                kind,
                target: target.to_string(),
                what,
                detail,
                total_ns: ns,
                share: share(ns, denominator_ns),
                latency: latency.cloned(),
                sites: sites_of(&r.call_sites, kind, target, denominator_ns),
            });
        }
    };
    for h in &r.dns_hosts {
        let n = h.latency.count;
        push(
            CallKind::Lookup,
            &h.host,
            format!("DNS lookups of {}", h.host),
            format!("{n} lookup{}, p50 {}", plural(n), fmt_ns(h.latency.p50_ns)),
            h.latency.total_ns,
            Some(&h.latency),
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
            CallKind::TlsRead,
            &p.peer,
            format!("TLS reads from {}", p.peer),
            detail,
            p.read_ns,
            Some(&p.read_latency),
        );
        if p.handshakes > 0 {
            push(
                CallKind::TlsHandshake,
                &p.peer,
                format!("TLS handshakes with {}", p.peer),
                format!(
                    "{} handshake{}, {} each",
                    p.handshakes,
                    plural(p.handshakes),
                    fmt_ns(p.handshake_ns / p.handshakes)
                ),
                p.handshake_ns,
                None,
            );
        }
        push(
            CallKind::TlsWrite,
            &p.peer,
            format!("TLS writes to {}", p.peer),
            format!("{} writes", p.writes),
            p.write_ns,
            None,
        );
    }
    for io in &r.slow_io {
        let n = io.reads.count + io.writes.count;
        push(
            CallKind::SlowRead,
            &io.target,
            format!("Slow reads and writes on {}", io.target),
            format!(
                "{n} call{} over the threshold, max {}",
                plural(n),
                fmt_ns(io.reads.max_ns.max(io.writes.max_ns))
            ),
            io.reads.total_ns + io.writes.total_ns,
            None,
        );
    }
    for p in &r.connect_peers {
        let n = p.latency.count;
        push(
            CallKind::Connect,
            &p.peer,
            format!("Connects to {}", p.peer),
            format!("{n} connect{}, p50 {}", plural(n), fmt_ns(p.latency.p50_ns)),
            p.latency.total_ns,
            Some(&p.latency),
        );
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.total_ns));
    rows
}

fn sites_of(
    sites: &[CallSiteRow],
    kind: CallKind,
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

/// The report's tree: kind, then target, then call site (`By::Target`), or
/// call site, then kind and target (`By::Callsite`); each line with its
/// share, time and counts. Rows under `MIN_SHARE` are left out; `kinds`
/// (when given) keeps only those kinds.
pub fn write_tree(
    out: &mut String,
    r: &Report,
    words: &str,
    denominator_ns: u64,
    o: &super::TextOptions,
) {
    let (rows, by, kinds, min_latency_ns) = (o.rows, o.by, o.kinds.as_deref(), o.min_latency_ns);
    let wanted = |kind: CallKind| kinds.is_none_or(|k| k.contains(&kind.family()));
    let slow_enough = |b: &BreakdownRow| {
        min_latency_ns.is_none_or(|min| b.latency.as_ref().is_none_or(|l| l.max_ns >= min))
    };
    let shown: Vec<&BreakdownRow> = r
        .breakdown
        .iter()
        .filter(|b| wanted(b.kind) && b.share >= MIN_SHARE && slow_enough(b))
        .collect();
    if shown.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nWhere the {words} went ({}), by {}",
        fmt_ns(denominator_ns),
        match by {
            By::Target => "kind, target and call site",
            By::Callsite => "call site, then kind and target",
            By::Thread => "thread, then kind of call",
        }
    );
    let line = |out: &mut String, depth: usize, s: f64, ns: u64, text: &str| {
        let _ = writeln!(
            out,
            "{:indent$}{:>6} {:>8}  {text}",
            "",
            fmt_share(s),
            fmt_ns(ns),
            indent = 2 + depth * 4
        );
    };
    match by {
        By::Thread => {
            for t in r.threads.iter().filter(|t| t.share >= MIN_SHARE).take(rows) {
                let name = if t.name.is_empty() {
                    "?"
                } else {
                    t.name.as_str()
                };
                line(
                    out,
                    0,
                    t.share,
                    t.total_ns,
                    &format!("thread {} (tid {}, pid {})", name, t.tid, t.pid),
                );
                for (kind, calls, ns) in &t.kinds {
                    if wanted(*kind) {
                        line(
                            out,
                            1,
                            share(*ns, denominator_ns),
                            *ns,
                            &format!("{kind}: {calls} calls"),
                        );
                    }
                }
            }
        }
        By::Target => {
            // Kinds in the order of their total.
            let mut kinds: Vec<(Kind, u64, f64)> = Vec::new();
            for b in &shown {
                let k = b.kind.family();
                match kinds.iter_mut().find(|(kk, _, _)| *kk == k) {
                    Some(e) => {
                        e.1 += b.total_ns;
                        e.2 += b.share;
                    }
                    None => kinds.push((k, b.total_ns, b.share)),
                }
            }
            kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
            for (kind, ns, s) in kinds {
                line(out, 0, s, ns, kind.title());
                for b in shown.iter().filter(|b| b.kind.family() == kind).take(rows) {
                    let mut text = format!("{}: {}", b.what, b.detail);
                    if let Some(l) = &b.latency {
                        let _ = write!(
                            text,
                            " (p99 {}, max {})",
                            fmt_ns(l.p99_ns),
                            fmt_ns(l.max_ns)
                        );
                    }
                    line(out, 1, b.share, b.total_ns, &text);
                    for (summary, calls, ns, s) in b.sites.iter().take(SITES_PER_ROW) {
                        line(out, 2, *s, *ns, &format!("{calls} from {summary}"));
                    }
                }
            }
        }
        By::Callsite => {
            /// One call site and the rows it spent time in.
            struct Site<'a> {
                summary: &'a str,
                ns: u64,
                share: f64,
                under: Vec<(&'a BreakdownRow, u64, u64, f64)>,
            }
            let mut sites: Vec<Site> = Vec::new();
            for b in &shown {
                for (summary, calls, ns, s) in &b.sites {
                    let i = match sites.iter().position(|e| e.summary == summary) {
                        Some(i) => i,
                        None => {
                            sites.push(Site {
                                summary,
                                ns: 0,
                                share: 0.0,
                                under: Vec::new(),
                            });
                            sites.len() - 1
                        }
                    };
                    let e = &mut sites[i];
                    e.ns += ns;
                    e.share += s;
                    e.under.push((b, *calls, *ns, *s));
                }
            }
            sites.sort_by_key(|e| std::cmp::Reverse(e.ns));
            for site in sites.into_iter().take(rows) {
                line(out, 0, site.share, site.ns, site.summary);
                for (b, calls, ns, s) in site.under {
                    line(out, 1, s, ns, &format!("{}: {calls} calls", b.what));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::ConnectEvent;

    use super::*;
    use crate::{
        aggregate::Aggregate,
        collect::LostCounts,
        decode::Event,
        render::{EndReason, ShareOf, TextOptions},
    };

    /// A blocking connect to 127.0.0.1:9000 that took `ms` and returned `ret`.
    fn connect(start_ms: u64, ms: u64, ret: i64) -> Event<'static> {
        let mut addr = [0u8; 112];
        addr[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        addr[2..4].copy_from_slice(&9000u16.to_be_bytes());
        addr[4..8].copy_from_slice(&[127, 0, 0, 1]);
        Event::Connect(ConnectEvent {
            kind: 1,
            tgid: 10,
            tid: 10,
            fd: 3,
            ret,
            start_ns: start_ms * 1_000_000,
            duration_ns: ms * 1_000_000,
            skaddr: 0,
            addr_len: 16,
            _pad: 0,
            addr,
        })
    }

    /// One thread for 2 s: three refused connects of 100 ms, one of 10 ms.
    fn report() -> Report {
        let mut agg = Aggregate::new(0);
        agg.add_target(10, "client".into(), &[10]);
        for (start, ms) in [(0, 100), (200, 100), (400, 100), (600, 10)] {
            agg.apply(connect(start, ms, -111));
        }
        Report::build(
            &agg,
            2_000_000_000,
            EndReason::Duration,
            LostCounts::default(),
            &[],
            ShareOf::Wall,
        )
    }

    #[test]
    fn the_tree_and_the_findings_read_as_expected() {
        let text = report().to_text(&TextOptions {
            rows: 5,
            by: By::Target,
            kinds: Some(vec![Kind::Connect]),
            min_latency_ns: None,
        });
        let start = text.find("Where the").expect("a tree");
        let end = text.find("Connects by peer").expect("the connect table");
        assert_eq!(
            &text[start..end],
            "Where the wall time went (2.00s), by kind, target and call site\n\
             \x20  15.5%  310.0ms  Connects\n\
             \x20      15.5%  310.0ms  Connects to 127.0.0.1:9000: 4 connects, p50 95.1ms (p99 100.0ms, max 100.0ms)\n\
             \n\
             What to fix first\n\
             \x20 1. 4 connects to 127.0.0.1:9000 were refused\n\
             \x20    why: nothing listens there\n\
             \x20    fix: is the service down, or the address stale? stop calling it, or fail over sooner\n\
             \n"
        );
        // Another kind asked for: no tree, no findings, no connect tables.
        let dns_only = report().to_text(&TextOptions {
            rows: 5,
            by: By::Target,
            kinds: Some(vec![Kind::Dns]),
            min_latency_ns: None,
        });
        assert!(!dns_only.contains("Where the"), "{dns_only}");
        assert!(!dns_only.contains("What to fix"), "{dns_only}");
        assert!(!dns_only.contains("Connects by peer"), "{dns_only}");
        // --min-latency above the slowest connect (100 ms): nothing to show.
        let slow_only = report().to_text(&TextOptions {
            rows: 5,
            by: By::Target,
            kinds: None,
            min_latency_ns: Some(200_000_000),
        });
        assert!(!slow_only.contains("Where the"), "{slow_only}");
    }
}
