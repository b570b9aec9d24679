//! Building the `prometheus` crate's metric families from our own
//! aggregates.

use prometheus::proto::{Bucket, Counter, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use tracer_common::{LatencyStats, histogram::bucket_bounds};

use super::LE_SECONDS;

pub(super) fn family(name: &str, help: &str, kind: MetricType) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f
}

pub(super) fn metric(labels: &[(&str, String)]) -> Metric {
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

pub(super) fn counters(
    name: &str,
    help: &str,
    values: Vec<(Vec<(&str, String)>, f64)>,
) -> MetricFamily {
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
pub(super) fn histogram(s: &LatencyStats) -> Histogram {
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
