//! The latency series of every kind of call, one per kind, target and
//! process name (and container or pod, if asked), capped: past the caps,
//! the least busy fold into `other`.

use std::collections::BTreeMap;

use tracer_common::LatencyStats;

use super::OTHER;
use crate::{
    aggregate::{Aggregate, OwnedTarget},
    kind::CallKind,
    syscall_names, tls,
};

/// One latency series: its labels and statistics.
#[derive(Clone)]
pub(super) struct Series {
    pub labels: Vec<(&'static str, String)>,
    pub stats: LatencyStats,
}

/// The lookup, connect, TLS and slow I/O series for all traced processes
/// together, one per target.
pub(super) fn node_wide(
    agg: &Aggregate,
    tls_peers: &BTreeMap<String, tls::PeerTls>,
    series: impl Fn(String, &LatencyStats) -> Series,
    calls: &mut Vec<(&'static str, Vec<Series>)>,
) {
    calls.push((
        CallKind::Lookup.metric_name(),
        agg.dns()
            .hosts
            .iter()
            .map(|(host, h)| series(host.clone(), &h.latency))
            .collect(),
    ));
    calls.push((
        CallKind::Connect.metric_name(),
        agg.connects()
            .peers
            .iter()
            .map(|(peer, p)| series(agg.name_peer(peer), &p.latency))
            .collect(),
    ));
    calls.push((
        CallKind::TlsRead.metric_name(),
        tls_peers
            .iter()
            .map(|(peer, p)| series(peer.clone(), &p.reads.latency))
            .collect(),
    ));
    calls.push((
        CallKind::TlsWrite.metric_name(),
        tls_peers
            .iter()
            .map(|(peer, p)| series(peer.clone(), &p.writes.latency))
            .collect(),
    ));
    calls.push((
        CallKind::TlsHandshake.metric_name(),
        tls_peers
            .iter()
            .filter_map(|(peer, p)| Some(series(peer.clone(), p.handshakes.as_ref()?)))
            .collect(),
    ));
    calls.push((
        CallKind::SlowRead.metric_name(),
        agg.slow_io()
            .iter()
            .map(|(target, s)| series(target.clone(), &s.reads))
            .collect(),
    ));
    calls.push((
        CallKind::SlowWrite.metric_name(),
        agg.slow_io()
            .iter()
            .map(|(target, s)| series(target.clone(), &s.writes))
            .collect(),
    ));
}

/// The same series per process name and container (`--labels`): one per
/// target, process name and the container or pod labels asked for.
pub(super) fn owned(
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
pub(super) fn cap(list: Vec<Series>, label: &str, max: usize) -> Vec<Series> {
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
pub(super) fn cap_values<T>(
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

/// Syscall latencies per process name (and container and pod, if asked).
pub(super) fn syscalls(agg: &Aggregate, with_container: bool, with_pod: bool) -> Vec<Series> {
    let mut by_name: BTreeMap<(String, String, String, String), LatencyStats> = BTreeMap::new();
    for (key, stats) in agg.syscalls() {
        let (comm, container, pod) = match agg.processes().get(&key.tgid) {
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
        .collect()
}
