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

use std::collections::BTreeMap;

use prometheus::{
    Encoder as _, TextEncoder,
    proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType},
};
use tracer_common::{LatencyStats, histogram::bucket_bounds};

use crate::{
    aggregate::{Aggregate, OwnedTarget},
    collect::LostCounts,
    container::ExtraLabel,
    render::Report,
    syscall_names, tls,
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

/// One latency series: its labels and statistics.
#[derive(Clone)]
struct Series {
    labels: Vec<(&'static str, String)>,
    stats: LatencyStats,
}

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

    let mut calls: Vec<(&'static str, Vec<Series>)> = Vec::new();
    // Syscalls, per process name (and container and pod, if asked).
    let with_container = labels.contains(&ExtraLabel::Container);
    let with_pod = labels.contains(&ExtraLabel::Pod);
    let mut by_name: BTreeMap<(String, String, String, String), LatencyStats> = BTreeMap::new();
    for (key, stats) in &agg.syscalls {
        let (comm, container, pod) = match agg.processes.get(&key.tgid) {
            Some(p) => (
                p.comm.clone(),
                p.container
                    .short_id()
                    .filter(|_| with_container)
                    .unwrap_or_default()
                    .to_string(),
                p.container
                    .pod_uid
                    .clone()
                    .filter(|_| with_pod)
                    .unwrap_or_default(),
            ),
            None => Default::default(),
        };
        by_name
            .entry((comm, container, pod, syscall_names::name(key.nr)))
            .or_insert(LatencyStats::ZERO)
            .merge(stats);
    }
    calls.push((
        "syscall",
        by_name
            .into_iter()
            .map(|((comm, container, pod, name), stats)| {
                let mut labels = vec![("process", comm), ("target", name)];
                if with_container {
                    labels.push(("container", container));
                }
                if with_pod {
                    labels.push(("pod", pod));
                }
                Series { labels, stats }
            })
            .collect(),
    ));
    let series = |target: String, stats: &LatencyStats| Series {
        labels: vec![("process", all.clone()), ("target", target)],
        stats: *stats,
    };
    let tls_peers = tls::by_peer(&agg.tls);
    match &agg.by_owner {
        Some(owned) if with_container || with_pod => {
            calls.extend(owned_series(owned, with_container, with_pod));
        }
        _ => node_wide_series(agg, &tls_peers, series, &mut calls),
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

    let mut families = vec![duration];
    families.push(counters(
        "tracer_dns_queries_total",
        "DNS queries seen, by type, response code (none: no answer) and server",
        agg.dns
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
    ));
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
    families.push(counters(
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
    ));
    let mut results: Vec<(String, BTreeMap<String, u64>)> = agg
        .connects
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
    families.push(counters(
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
    ));
    families.push(counters(
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
    ));
    families.push(counters(
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
    ));
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
    families.push(info);
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
    families.push(processes);
    families
}

/// The lookup, connect, TLS and slow I/O series for all traced processes
/// together, one per target.
fn node_wide_series(
    agg: &Aggregate,
    tls_peers: &BTreeMap<String, tls::PeerTls>,
    series: impl Fn(String, &LatencyStats) -> Series,
    calls: &mut Vec<(&'static str, Vec<Series>)>,
) {
    calls.push((
        "dns",
        agg.dns
            .hosts
            .iter()
            .map(|(host, h)| series(host.clone(), &h.latency))
            .collect(),
    ));
    calls.push((
        "connect",
        agg.connects
            .peers
            .iter()
            .map(|(peer, p)| series(agg.name_peer(peer), &p.latency))
            .collect(),
    ));
    calls.push((
        "tls_read",
        tls_peers
            .iter()
            .map(|(peer, p)| series(peer.clone(), &p.reads.latency))
            .collect(),
    ));
    calls.push((
        "tls_write",
        tls_peers
            .iter()
            .map(|(peer, p)| series(peer.clone(), &p.writes.latency))
            .collect(),
    ));
    calls.push((
        "tls_handshake",
        tls_peers
            .iter()
            .filter_map(|(peer, p)| Some(series(peer.clone(), p.handshakes.as_ref()?)))
            .collect(),
    ));
    calls.push((
        "slow_read",
        agg.slow_io
            .iter()
            .map(|(target, s)| series(target.clone(), &s.reads))
            .collect(),
    ));
    calls.push((
        "slow_write",
        agg.slow_io
            .iter()
            .map(|(target, s)| series(target.clone(), &s.writes))
            .collect(),
    ));
}

/// The same series per process name and container (`--labels`): one per
/// target, process name and the container or pod labels asked for.
fn owned_series(
    owned: &BTreeMap<OwnedTarget, LatencyStats>,
    with_container: bool,
    with_pod: bool,
) -> Vec<(&'static str, Vec<Series>)> {
    let mut merged: BTreeMap<(&'static str, String, String, String, String), LatencyStats> =
        BTreeMap::new();
    for (key, stats) in owned {
        let container = key
            .container
            .short_id()
            .filter(|_| with_container)
            .unwrap_or_default()
            .to_string();
        let pod = key
            .container
            .pod_uid
            .clone()
            .filter(|_| with_pod)
            .unwrap_or_default();
        merged
            .entry((
                key.kind.metric_name(),
                key.target.clone(),
                key.comm.clone(),
                container,
                pod,
            ))
            .or_insert(LatencyStats::ZERO)
            .merge(stats);
    }
    let mut calls: Vec<(&'static str, Vec<Series>)> = Vec::new();
    for ((kind, target, comm, container, pod), stats) in merged {
        let mut labels = vec![("process", comm), ("target", target)];
        if with_container {
            labels.push(("container", container));
        }
        if with_pod {
            labels.push(("pod", pod));
        }
        let series = Series { labels, stats };
        match calls.last_mut() {
            Some((k, list)) if *k == kind => list.push(series),
            _ => calls.push((kind, vec![series])),
        }
    }
    calls
}

/// Keeps the `max` busiest values of `label` (targets, process names) in
/// a kind's series, by their total time over all their series; the series
/// of the rest add up under `label="other"`, one per set of other labels.
fn cap(list: Vec<Series>, label: &str, max: usize) -> Vec<Series> {
    let target_of = |s: &Series| {
        s.labels
            .iter()
            .find(|(name, _)| *name == label)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for s in &list {
        *totals.entry(target_of(s)).or_default() += s.stats.total_ns;
    }
    if totals.len() <= max {
        return list;
    }
    let mut ranked: Vec<(String, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let kept: std::collections::HashSet<String> = ranked
        .into_iter()
        .take(max.saturating_sub(1))
        .map(|(target, _)| target)
        .collect();
    let mut out = Vec::new();
    // The rest, per set of the other labels (a process, a container).
    let mut other: BTreeMap<Vec<(&'static str, String)>, LatencyStats> = BTreeMap::new();
    for s in list {
        if kept.contains(&target_of(&s)) {
            out.push(s);
            continue;
        }
        let labels = s
            .labels
            .into_iter()
            .map(|(name, value)| {
                if name == label {
                    (name, OTHER.to_string())
                } else {
                    (name, value)
                }
            })
            .collect();
        other
            .entry(labels)
            .or_insert(LatencyStats::ZERO)
            .merge(&s.stats);
    }
    out.extend(
        other
            .into_iter()
            .map(|(labels, stats)| Series { labels, stats }),
    );
    out
}

/// The same for plain values: the `max` largest by `weight`, the rest
/// folded together by `fold`.
fn cap_values<T>(
    mut list: Vec<T>,
    max: usize,
    weight: impl Fn(&T) -> u64,
    fold: impl Fn(T, T) -> T,
) -> Vec<T> {
    if list.len() <= max {
        return list;
    }
    list.sort_by_key(|t| std::cmp::Reverse(weight(t)));
    let rest = list.split_off(max.saturating_sub(1));
    if let Some(folded) = rest.into_iter().reduce(fold) {
        list.push(folded);
    }
    list
}

fn family(name: &str, help: &str, kind: MetricType) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f
}

fn metric(labels: &[(&str, String)]) -> Metric {
    let mut m = Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name(k.to_string());
                l.set_value(v.clone());
                l
            })
            .collect(),
    );
    m
}

fn counters(name: &str, help: &str, values: Vec<(Vec<(&str, String)>, f64)>) -> MetricFamily {
    let mut f = family(name, help, MetricType::COUNTER);
    for (labels, v) in values {
        let mut m = metric(&labels);
        let mut c = Counter::default();
        c.set_value(v);
        m.set_counter(c);
        f.mut_metric().push(m);
    }
    f
}

/// Our log-linear buckets as cumulative Prometheus buckets.
fn histogram(s: &LatencyStats) -> Histogram {
    let mut per_le = vec![0u64; LE_SECONDS.len()];
    for (b, &n) in s.hist.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let (lo, hi) = bucket_bounds(b);
        let mid = (lo + hi) as f64 / 2.0 / 1e9;
        if let Some(i) = LE_SECONDS.iter().position(|&le| mid <= le) {
            per_le[i] += n;
        }
    }
    let mut cumulative = 0;
    let buckets = LE_SECONDS
        .iter()
        .zip(per_le)
        .map(|(&le, n)| {
            cumulative += n;
            let mut b = Bucket::default();
            b.set_upper_bound(le);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let mut h = Histogram::default();
    h.set_sample_count(s.count);
    h.set_sample_sum(s.total_ns as f64 / 1e9);
    h.set_bucket(buckets);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

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
