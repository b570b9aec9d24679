//! Export: the aggregates as Prometheus metrics (`tracer serve`), built as
//! metric families of the `prometheus` crate and written by its text
//! encoder. The latencies are aggregated already (in the kernel, or by the
//! collector), so the histograms are filled from our buckets rather than
//! observed one by one: a bucket counts under the first `le` bound at or
//! above its midpoint, which puts a call at most half a bucket (6.25%) off.
//!
//! Cardinality stays bounded: no PID or call-site label, at most
//! `SeriesCaps::processes` process names and `SeriesCaps::targets` targets
//! per kind, the busiest; the rest add up under `process="other"` and
//! `target="other"`.

pub mod http;
mod proto;
mod series;

use std::collections::BTreeMap;

use prometheus::{
    Encoder as _, TextEncoder,
    proto::{Gauge, MetricFamily, MetricType},
};
use tracer_common::LatencyStats;

use self::{
    proto::{counters, family, histogram, metric},
    series::{Series, cap, cap_values},
};
use crate::{
    aggregate::Aggregate, collect::LostCounts, container::ExtraLabel, render::Report, tls,
};

/// Upper bounds of the exported buckets, in seconds: 1 µs to 10 s.
pub const LE_SECONDS: &[f64] = &[
    0.000_001, 0.000_01, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Target label of the series folded together past the cap.
pub const OTHER: &str = "other";

/// Process names joined in one label, at most; past it, `MANY_PROCESSES`.
const MAX_JOINED_NAMES: usize = 4;
const MANY_PROCESSES: &str = "(many)";

/// How many values the unbounded labels may take per kind of call
/// (`--max-targets`, `--max-processes`).
#[derive(Debug, Clone, Copy)]
pub struct SeriesCaps {
    pub targets: usize,
    pub processes: usize,
}

/// The exposition of everything traced so far.
pub fn exposition(
    agg: &Aggregate,
    report: &Report,
    lost: &LostCounts,
    caps: SeriesCaps,
    labels: &[ExtraLabel],
) -> String {
    let mut families = families(agg, report, lost, caps, labels);
    // The encoder refuses a family without series (no DNS seen yet, say).
    families.retain(|f| !f.get_metric().is_empty());
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        log::warn!("encoding the metrics: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

fn families(
    agg: &Aggregate,
    report: &Report,
    lost: &LostCounts,
    caps: SeriesCaps,
    labels: &[ExtraLabel],
) -> Vec<MetricFamily> {
    let tls_peers = tls::by_peer(agg.tls());
    vec![
        durations(agg, report, &tls_peers, caps, labels),
        dns_queries(agg),
        tls_bytes(&tls_peers, caps.targets),
        connects(agg, caps.targets),
        http_request_durations(agg),
        http_request_call_seconds(agg),
        lost_events(lost),
        thread_seconds(report),
        build_info(),
        traced_processes(report),
    ]
}

/// The latency histograms: one series per kind of call, target and
/// process name (and container or pod, if asked), capped.
fn durations(
    agg: &Aggregate,
    report: &Report,
    tls_peers: &BTreeMap<String, tls::PeerTls>,
    caps: SeriesCaps,
    labels: &[ExtraLabel],
) -> MetricFamily {
    let max_targets = caps.targets;
    // The DNS, connect and TLS aggregates span every traced process: their
    // series carry the traced processes' names together, up to a few (node
    // mode sees hundreds, and a label that grows with each new name would
    // start a new series every time).
    let mut roots: Vec<&str> = report.processes.iter().map(|p| p.comm.as_str()).collect();
    roots.sort_unstable();
    roots.dedup();
    let all = if roots.len() <= MAX_JOINED_NAMES {
        roots.join(",")
    } else {
        MANY_PROCESSES.to_string()
    };
    let with_container = labels.contains(&ExtraLabel::Container);
    let with_pod = labels.contains(&ExtraLabel::Pod);
    let mut calls: Vec<(&'static str, Vec<Series>)> =
        vec![("syscall", series::syscalls(agg, with_container, with_pod))];
    let series = |target: String, stats: &LatencyStats| Series {
        labels: vec![("process", all.clone()), ("target", target)],
        stats: *stats,
    };
    match agg.by_owner() {
        Some(owned) if with_container || with_pod => {
            calls.extend(series::owned(owned, with_container, with_pod));
        }
        _ => series::node_wide(agg, tls_peers, series, &mut calls),
    }

    let mut duration = family(
        "tracer_call_duration_seconds",
        "Latency of the traced processes' calls, by kind (syscall, dns, connect, tls_read, \
         tls_write, tls_handshake, slow_read, slow_write) and target (syscall, host, peer, file)",
        MetricType::HISTOGRAM,
    );
    for (kind, list) in calls {
        let list = cap(list, "process", caps.processes);
        for s in cap(list, "target", max_targets) {
            if s.stats.count == 0 {
                continue;
            }
            let mut labels = vec![("kind", kind.to_string())];
            labels.extend(s.labels);
            let mut m = metric(&labels);
            m.set_histogram(histogram(&s.stats));
            duration.mut_metric().push(m);
        }
    }

    duration
}

/// The HTTP requests' latency per route (`--max-routes` of them; the rest
/// under `route="other"`).
fn http_request_durations(agg: &Aggregate) -> MetricFamily {
    let mut f = family(
        "tracer_http_request_duration_seconds",
        "Latency of the HTTP requests the traced servers served, from the read of the request \
         line to the response's last write, by method and route (ids as :id)",
        MetricType::HISTOGRAM,
    );
    for (labels, stats) in http_routes(agg) {
        let mut m = metric(&labels);
        m.set_histogram(histogram(&stats.latency));
        f.mut_metric().push(m);
    }
    f
}

/// The time the HTTP requests of each route spent in each kind of call.
fn http_request_call_seconds(agg: &Aggregate) -> MetricFamily {
    let mut values = Vec::new();
    for (labels, stats) in http_routes(agg) {
        let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
        for ((kind, _), &(_, ns)) in &stats.calls {
            *by_kind.entry(kind.metric_name()).or_default() += ns;
        }
        for (kind, ns) in by_kind {
            let mut l = labels.clone();
            l.push(("kind", kind.to_string()));
            values.push((l, ns as f64 / 1e9));
        }
    }
    counters(
        "tracer_http_request_call_seconds_total",
        "Time the HTTP requests of each route spent in lookups, connects, TLS calls and slow \
         reads and writes, by kind of call (as tracer_call_duration_seconds's kind)",
        values,
    )
}

/// Each route's labels (method, route) and its requests.
fn http_routes(agg: &Aggregate) -> Vec<(Vec<(&'static str, String)>, &crate::http::RouteStats)> {
    let http = agg.http();
    let mut out: Vec<_> = http
        .routes
        .iter()
        .map(|(r, s)| {
            (
                vec![("method", r.method.clone()), ("route", r.path.clone())],
                s,
            )
        })
        .collect();
    if http.other.latency.count > 0 {
        out.push((
            vec![("method", OTHER.to_string()), ("route", OTHER.to_string())],
            &http.other,
        ));
    }
    out
}

/// DNS queries by type, response code and server.
fn dns_queries(agg: &Aggregate) -> MetricFamily {
    counters(
        "tracer_dns_queries_total",
        "DNS queries seen, by type, response code (none: no answer) and server",
        agg.dns()
            .query_counts
            .iter()
            .map(|((qtype, rcode, server), n)| {
                (
                    vec![
                        ("type", qtype.clone()),
                        ("rcode", rcode.clone()),
                        ("server", server.clone()),
                    ],
                    *n as f64,
                )
            })
            .collect(),
    )
}

/// TLS plaintext bytes by direction and peer, capped.
fn tls_bytes(tls_peers: &BTreeMap<String, tls::PeerTls>, max_targets: usize) -> MetricFamily {
    let bytes: Vec<(String, u64, u64)> = tls_peers
        .iter()
        .map(|(peer, p)| (peer.clone(), p.reads.bytes, p.writes.bytes))
        .collect();
    let bytes = cap_values(
        bytes,
        max_targets,
        |(_, r, w)| r + w,
        |a, b| (OTHER.to_string(), a.1 + b.1, a.2 + b.2),
    );
    counters(
        "tracer_tls_bytes_total",
        "Plaintext bytes through SSL_read and SSL_write, by direction and peer",
        bytes
            .iter()
            .flat_map(|(peer, r, w)| {
                [("read", *r), ("write", *w)].map(|(dir, n)| {
                    (
                        vec![("direction", dir.to_string()), ("peer", peer.clone())],
                        n as f64,
                    )
                })
            })
            .collect(),
    )
}

/// Connects by peer and result, capped.
fn connects(agg: &Aggregate, max_targets: usize) -> MetricFamily {
    let mut results: Vec<(String, BTreeMap<String, u64>)> = agg
        .connects()
        .peers
        .iter()
        .map(|(peer, p)| {
            (
                agg.name_peer(peer),
                p.outcomes
                    .iter()
                    .map(|(o, n)| (o.to_string(), *n))
                    .collect(),
            )
        })
        .collect();
    results = cap_values(
        results,
        max_targets,
        |(_, o)| o.values().sum(),
        |mut a, b| {
            for (k, v) in b.1 {
                *a.1.entry(k).or_default() += v;
            }
            (OTHER.to_string(), a.1)
        },
    );
    counters(
        "tracer_connects_total",
        "connect() calls by peer and result (ok, an errno name, handshake failed, in progress)",
        results
            .iter()
            .flat_map(|(peer, outcomes)| {
                outcomes.iter().map(move |(o, n)| {
                    (
                        vec![("peer", peer.clone()), ("result", o.clone())],
                        *n as f64,
                    )
                })
            })
            .collect(),
    )
}

/// Events the tracer could not record, by reason.
fn lost_events(lost: &LostCounts) -> MetricFamily {
    counters(
        "tracer_events_lost_total",
        "Events the tracer could not record, by reason: the counts above are low by these",
        [
            ("ring_buffer_full", lost.ring_full),
            ("syscall_map_full", lost.syscall_map_full),
            ("thread_map_full", lost.thread_map_full),
            ("handshake_map_full", lost.handshake_map_full),
            ("process_map_full", lost.process_map_full),
            ("lookup_map_full", lost.lookup_map_full),
            ("dns_socket_map_full", lost.dns_socket_map_full),
            ("tls_call_map_full", lost.tls_call_map_full),
            ("undecodable", lost.undecodable),
        ]
        .into_iter()
        .map(|(reason, n)| (vec![("reason", reason.to_string())], n as f64))
        .collect(),
    )
}

/// The traced threads' busy and idle time.
fn thread_seconds(report: &Report) -> MetricFamily {
    counters(
        "tracer_thread_seconds_total",
        "The traced threads' time while traced: busy (a server's requests, from each one's \
         first read to its response's last write; else the threads' time less listeners' waits \
         for new work), or idle (the rest)",
        vec![
            (
                vec![("state", "busy".to_string())],
                report.busy_ns as f64 / 1e9,
            ),
            (
                vec![("state", "idle".to_string())],
                report.idle_ns as f64 / 1e9,
            ),
        ],
    )
}

/// The tracer's version.
fn build_info() -> MetricFamily {
    let mut info = family(
        "tracer_build_info",
        "The tracer's version, as a label; the value is 1",
        MetricType::GAUGE,
    );
    let mut m = metric(&[("version", env!("CARGO_PKG_VERSION").to_string())]);
    let mut g = Gauge::default();
    g.set_value(1.0);
    m.set_gauge(g);
    info.mut_metric().push(m);
    info
}

/// Processes traced now.
fn traced_processes(report: &Report) -> MetricFamily {
    let mut processes = family(
        "tracer_traced_processes",
        "Processes traced now (the named ones and their children)",
        MetricType::GAUGE,
    );
    let mut m = metric(&[]);
    let mut g = Gauge::default();
    g.set_value(
        report
            .processes
            .iter()
            .filter(|p| !p.exited && crate::aggregate::is_process(p.pid))
            .count() as f64,
    );
    m.set_gauge(g);
    processes.mut_metric().push(m);
    processes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_has_its_request_histogram_with_ids_folded_into_one_route() {
        use tracer_common::{REQUEST_LINE_BYTES, RequestEndEvent, RequestLineEvent};
        let mut agg = Aggregate::new(0);
        for (i, path) in ["/repos/17", "/repos/18", "/health"].iter().enumerate() {
            let text = format!("GET {path}");
            let mut line = [0u8; REQUEST_LINE_BYTES];
            line[..text.len()].copy_from_slice(text.as_bytes());
            let start_ns = 1_000_000_000 * (i as u64 + 1);
            agg.apply(crate::decode::Event::RequestLine(
                &(RequestLineEvent {
                    kind: 15,
                    tgid: 7,
                    tid: 7,
                    fd: 4,
                    start_ns,
                    len: text.len() as u32,
                    _pad: 0,
                    line,
                }),
            ));
            agg.apply(crate::decode::Event::RequestEnd(RequestEndEvent {
                kind: 16,
                tgid: 7,
                fd: 4,
                _pad: 0,
                start_ns,
                end_ns: start_ns + 30_000_000,
            }));
        }
        let text = {
            let mut families = vec![http_request_durations(&agg)];
            families.retain(|f| !f.get_metric().is_empty());
            let mut out = Vec::new();
            TextEncoder::new().encode(&families, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(
            text.contains(
                "tracer_http_request_duration_seconds_count{method=\"GET\",route=\"/repos/:id\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tracer_http_request_duration_seconds_bucket{method=\"GET\",route=\"/health\",le=\"0.05\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn buckets_are_cumulative_and_end_at_the_count() {
        let mut s = LatencyStats::ZERO;
        for ns in [500, 2_000, 900_000, 1_100_000, 30_000_000_000] {
            s.record(ns);
        }
        let h = histogram(&s);
        let counts: Vec<u64> = h
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        // 500 ns under 1 µs; 2 µs under 10 µs; 0.9 ms under 1 ms; 1.1 ms
        // under 2.5 ms; 30 s above every bound (only in the count).
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 2);
        assert_eq!(counts[5], 3);
        assert_eq!(counts[6], 4);
        assert_eq!(*counts.last().unwrap(), 4);
        assert_eq!(h.get_sample_count(), 5);
    }

    #[test]
    fn targets_past_the_cap_add_up_as_other() {
        let list: Vec<Series> = (1..=5)
            .map(|i| {
                let mut stats = LatencyStats::ZERO;
                stats.record(i * 1000);
                Series {
                    labels: vec![("target", format!("t{i}"))],
                    stats,
                }
            })
            .collect();
        let capped = cap(list, "target", 3);
        let names: Vec<&str> = capped.iter().map(|s| s.labels[0].1.as_str()).collect();
        assert_eq!(names, ["t4", "t5", OTHER]);
        assert_eq!(capped[2].stats.count, 3);
        assert_eq!(capped[2].stats.total_ns, 6000);
    }

    #[test]
    fn the_cap_counts_targets_and_keeps_other_per_process() {
        // Two processes call the same three targets; t3 is the least busy.
        let mut list = Vec::new();
        for (process, scale) in [("api", 1), ("worker", 10)] {
            for (i, target) in ["t1", "t2", "t3"].into_iter().enumerate() {
                let mut stats = LatencyStats::ZERO;
                stats.record(scale * (3 - i as u64) * 1000);
                list.push(Series {
                    labels: vec![("process", process.into()), ("target", target.into())],
                    stats,
                });
            }
        }
        let capped = cap(list, "target", 2);
        let labels: Vec<(String, String)> = capped
            .iter()
            .map(|s| (s.labels[0].1.clone(), s.labels[1].1.clone()))
            .collect();
        let pair = |p: &str, t: &str| (p.to_string(), t.to_string());
        assert_eq!(
            labels,
            [
                pair("api", "t1"),
                pair("worker", "t1"),
                pair("api", OTHER),
                pair("worker", OTHER)
            ]
        );
        // worker's t2 (20 µs) and t3 (10 µs) add up in its `other`.
        assert_eq!(capped[3].stats.total_ns, 30_000);
        // Two process names fit a cap of two; a cap of one is `other`
        // alone, its series added up per target.
        assert_eq!(cap(capped.clone(), "process", 2).len(), 4);
        let by_process = cap(capped, "process", 1);
        let labels: Vec<(String, String)> = by_process
            .iter()
            .map(|s| (s.labels[0].1.clone(), s.labels[1].1.clone()))
            .collect();
        assert_eq!(labels, [pair(OTHER, OTHER), pair(OTHER, "t1")]);
        assert_eq!(by_process[1].stats.total_ns, 3_000 + 30_000);
    }

    /// Unescapes a label value as Prometheus's text parser does.
    fn unescape(v: &str) -> String {
        let mut out = String::new();
        let mut chars = v.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(o) => out.push(o),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    proptest::proptest! {
        // Host and process names come from the traced process: whatever
        // they hold, each sample stays one line and reads back as it was.
        #[test]
        fn any_label_value_survives_the_exposition_format(value in "(?s).{0,40}|[\\\\\"\n a-z{}=,]{0,20}", n in 0u32..1000) {
            let family = counters("tracer_test_total", "test", vec![(vec![("host", value.clone())], n as f64)]);
            let mut out = Vec::new();
            TextEncoder::new().encode(&[family], &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            proptest::prop_assert_eq!(lines.len(), 3, "{}", text);
            let sample = lines[2];
            let inner = sample
                .strip_prefix("tracer_test_total{host=\"")
                .and_then(|r| r.strip_suffix(&format!("\"}} {n}")))
                .unwrap_or_else(|| panic!("{sample}"));
            proptest::prop_assert_eq!(unescape(inner), value);
        }
    }
}
