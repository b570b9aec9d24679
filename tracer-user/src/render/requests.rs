//! "Requests by endpoint": each route's requests (count and latency) and
//! where their time went, by kind of call and target, as shares of the
//! route's request time; the slowest requests' timelines; and a finding
//! per endpoint whose requests wait mostly on one thing.

use std::fmt::Write as _;

use serde::Serialize;

use super::{
    Kind, Report,
    findings::{Finding, MIN_SHARE},
    new_table, right_align, section,
};
use crate::{
    aggregate::Aggregate,
    http::{RequestRecord, RouteStats},
    kind::CallKind,
    units::{LatencyRow, fmt_ns, fmt_share, share},
};

/// One route's requests.
#[derive(Debug, Serialize)]
pub struct EndpointRow {
    /// `GET /repos/:id`; `other` for routes over `--max-routes`.
    pub endpoint: String,
    pub latency: LatencyRow,
    /// The calls made for its requests, largest share first.
    pub calls: Vec<EndpointCallRow>,
}

/// The calls of one kind to one target made for a route's requests.
#[derive(Debug, Serialize)]
pub struct EndpointCallRow {
    pub kind: CallKind,
    pub target: String,
    pub calls: u64,
    pub per_request: f64,
    pub total_ns: u64,
    /// Of the route's request time.
    pub share: f64,
    /// Where in the code they were made, largest first (calls whose stack
    /// was taken; sites with the same summary, reached by other paths,
    /// together).
    pub call_sites: Vec<EndpointSiteRow>,
}

/// The calls of one row made from one place in the code.
#[derive(Debug, Serialize)]
pub struct EndpointSiteRow {
    pub call_site: String,
    pub calls: u64,
    pub per_request: f64,
    pub total_ns: u64,
    /// Of the route's request time.
    pub share: f64,
}

/// Call sites shown under a row of the text.
const SITES_PER_ROW: usize = 2;

/// The HTTP requests of the traced servers.
#[derive(Debug, Serialize)]
pub struct RequestsSection {
    pub total: u64,
    pub endpoints: Vec<EndpointRow>,
    pub slowest: Vec<RequestRecord>,
    /// Ended with no response (not timed).
    pub unanswered: u64,
    /// Begun and not ended when the trace ended (not counted).
    pub in_progress: u64,
    /// Calls made while several requests were open that no rule gives to
    /// one request (concurrent requests on an event loop), or still
    /// undecided when the report was made.
    pub calls_unowned: u64,
}

pub(super) fn section_of(agg: &Aggregate) -> RequestsSection {
    let http = agg.http();
    let mut endpoints: Vec<EndpointRow> = http
        .routes
        .iter()
        .map(|(route, stats)| endpoint_row(route.to_string(), stats, agg))
        .collect();
    if http.other.latency.count > 0 {
        endpoints.push(endpoint_row("other".to_string(), &http.other, agg));
    }
    endpoints.sort_by_key(|e| std::cmp::Reverse(e.latency.total_ns));
    RequestsSection {
        total: http.requests_total(),
        endpoints,
        slowest: http.slowest.clone(),
        unanswered: http.unanswered,
        in_progress: http.open_count() as u64,
        // Undecided when the report is made: no owner yet.
        calls_unowned: http.calls_unowned + http.calls_undecided(),
    }
}

fn endpoint_row(endpoint: String, stats: &RouteStats, agg: &Aggregate) -> EndpointRow {
    let requests = stats.latency.count.max(1);
    let of = stats.latency.total_ns;
    let mut calls: Vec<EndpointCallRow> = stats
        .calls
        .iter()
        .map(|((kind, target), &(n, ns))| EndpointCallRow {
            kind: *kind,
            target: target.clone(),
            calls: n,
            per_request: n as f64 / requests as f64,
            total_ns: ns,
            share: share(ns, of),
            call_sites: sites_of(stats, (*kind, target), of, agg),
        })
        .collect();
    calls.sort_by_key(|c| std::cmp::Reverse(c.total_ns));
    EndpointRow {
        endpoint,
        latency: LatencyRow::from(&stats.latency),
        calls,
    }
}

/// The call sites of a route's calls of one kind to one target.
fn sites_of(
    stats: &RouteStats,
    (kind, target): (CallKind, &String),
    of: u64,
    agg: &Aggregate,
) -> Vec<EndpointSiteRow> {
    let mut out: Vec<EndpointSiteRow> = Vec::new();
    let from = (kind, target.clone(), 0);
    for ((_, _, id), &(n, ns)) in stats
        .sites
        .range(from..)
        .take_while(|((k, t, _), _)| *k == kind && t == target)
    {
        let summary = agg.sites().site(*id).summary();
        match out.iter_mut().find(|o| o.call_site == summary) {
            Some(o) => (o.calls, o.total_ns) = (o.calls + n, o.total_ns + ns),
            None => out.push(EndpointSiteRow {
                call_site: summary,
                calls: n,
                per_request: 0.0,
                total_ns: ns,
                share: 0.0,
            }),
        }
    }
    for o in &mut out {
        o.share = share(o.total_ns, of);
        o.per_request = o.calls as f64 / stats.latency.count.max(1) as f64;
    }
    out.sort_by_key(|o| std::cmp::Reverse(o.total_ns));
    out
}

/// "lookups of X", "TLS reads from X": `n` calls of a kind to a target.
fn calls_of(kind: CallKind, n: u64, target: &str) -> String {
    let one = n == 1;
    let (singular, plural, to) = match kind {
        CallKind::Lookup => ("lookup", "lookups", "of"),
        CallKind::Connect => ("connect", "connects", "to"),
        CallKind::TlsHandshake => ("TLS handshake", "TLS handshakes", "with"),
        CallKind::TlsRead => ("TLS read", "TLS reads", "from"),
        CallKind::TlsWrite => ("TLS write", "TLS writes", "to"),
        CallKind::SlowRead => ("slow read", "slow reads", "from"),
        CallKind::SlowWrite => ("slow write", "slow writes", "to"),
    };
    format!("{} {to} {target}", if one { singular } else { plural })
}

/// How many a request makes: "2", "0.5", "113.3".
fn per_request(v: f64) -> String {
    if (v - v.round()).abs() < 0.05 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

impl Report {
    pub(super) fn write_requests(&self, out: &mut String, rows: usize) {
        let r = &self.http_requests;
        if r.total == 0 && r.unanswered == 0 {
            return;
        }
        let mut t = new_table(&["ENDPOINT", "REQUESTS", "P50", "P99", "MAX", "OF ITS TIME"]);
        for e in r.endpoints.iter().take(rows) {
            t.add_row(vec![
                e.endpoint.clone(),
                e.latency.count.to_string(),
                fmt_ns(e.latency.p50_ns),
                fmt_ns(e.latency.p99_ns),
                fmt_ns(e.latency.max_ns),
                String::new(),
            ]);
            for c in e.calls.iter().take(rows.min(5)) {
                t.add_row(vec![
                    format!(
                        "  {} per request: {}",
                        per_request(c.per_request),
                        calls_of(c.kind, c.calls.min(2), &c.target)
                    ),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    fmt_share(c.share),
                ]);
                for site in c.call_sites.iter().take(SITES_PER_ROW) {
                    t.add_row(vec![
                        format!(
                            "      {} per request from {}",
                            per_request(site.per_request),
                            site.call_site
                        ),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        fmt_share(site.share),
                    ]);
                }
            }
        }
        right_align(&mut t, 1..6);
        let mut notes = Vec::new();
        if r.unanswered > 0 {
            notes.push(format!("{} unanswered", r.unanswered));
        }
        if r.in_progress > 0 {
            notes.push(format!("{} still in progress at the end", r.in_progress));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!("; not counted: {}", notes.join(", "))
        };
        section(
            out,
            &format!(
                "Requests by endpoint ({} HTTP requests on accepted connections, first read to last \
                 write{notes})",
                r.total
            ),
            Some(t),
        );
        if r.calls_unowned > 0 {
            let _ = writeln!(
                out,
                "  {} calls were made while several requests were open (an event loop serving them \
                 at once), and no response's end told them apart: no request is named as theirs",
                r.calls_unowned
            );
        }
        self.write_slowest_requests(out, rows.min(3));
    }

    /// Each of the slowest requests with its calls in order; a run of calls
    /// of one kind to one target is one line.
    fn write_slowest_requests(&self, out: &mut String, rows: usize) {
        let slowest = &self.http_requests.slowest;
        if slowest.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\nSlowest requests (calls in order, from the request's start)"
        );
        for req in slowest.iter().take(rows) {
            let in_calls = req.in_calls_ns();
            let _ = writeln!(
                out,
                "  {} {} (PID {}, thread {}): {} of it in these calls",
                req.route,
                fmt_ns(req.latency_ns),
                req.pid,
                req.tid,
                fmt_share(share(in_calls, req.latency_ns))
            );
            let mut i = 0;
            while i < req.calls.len() {
                let first = &req.calls[i];
                let run = req.calls[i..]
                    .iter()
                    .take_while(|c| c.kind == first.kind && c.target == first.target)
                    .count();
                let ns: u64 = req.calls[i..i + run].iter().map(|c| c.latency_ns).sum();
                let _ = writeln!(
                    out,
                    "    +{:<10} {:>9}  {}",
                    fmt_ns(first.start_ns.saturating_sub(req.start_ns)),
                    fmt_ns(ns),
                    if run == 1 {
                        calls_of(first.kind, 1, &first.target)
                    } else {
                        format!("{run} {}", calls_of(first.kind, 2, &first.target))
                    }
                );
                i += run;
            }
            if req.calls_dropped > 0 {
                let _ = writeln!(out, "    and {} more calls", req.calls_dropped);
            }
        }
    }
}

/// An endpoint whose requests spend a large share waiting on one kind of
/// call to one target. Its `share` is of the report's denominator, as every
/// finding's (they are ranked together); its words give the share of the
/// endpoint's own time.
pub(super) fn findings(r: &Report, denominator_ns: u64, out: &mut Vec<Finding>) {
    for e in &r.http_requests.endpoints {
        let Some(c) = e.calls.first() else {
            continue;
        };
        if c.share < MIN_SHARE * 10.0 {
            continue;
        }
        out.push(Finding {
            kind: c.kind.family(),
            share: share(c.total_ns, denominator_ns),
            what: format!(
                "{}: {} {} per request, {} of its time",
                e.endpoint,
                per_request(c.per_request),
                calls_of(c.kind, c.calls.min(2), &c.target),
                fmt_share(c.share)
            ),
            evidence: format!(
                "{} requests, p50 {}; {} per request in these calls",
                e.latency.count,
                fmt_ns(e.latency.p50_ns),
                fmt_ns(c.total_ns / e.latency.count.max(1))
            ),
            fix: match c.kind.family() {
                Kind::Dns => "cache the lookup, or keep the connection it was for".to_string(),
                Kind::Connect => "reuse connections (a pool, keep-alive)".to_string(),
                Kind::Tls => "fewer, larger responses, or reuse TLS sessions".to_string(),
                _ => "look at the other end, or at what each request asks of it".to_string(),
            },
        });
    }
}
