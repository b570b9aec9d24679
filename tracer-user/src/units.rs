//! How numbers are shown: durations, sizes, shares, and the latency
//! summary every table carries. A leaf: every layer may use it.

use serde::Serialize;
use tracer_common::LatencyStats;

#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    pub count: u64,
    pub total_ns: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl From<&LatencyStats> for LatencyRow {
    fn from(s: &LatencyStats) -> Self {
        Self {
            count: s.count,
            total_ns: s.total_ns,
            p50_ns: s.quantile_ns(0.50),
            p99_ns: s.quantile_ns(0.99),
            max_ns: s.max_ns,
        }
    }
}

/// A size for people: `812 B`, `16.0 KiB`, `2.4 MiB`.
pub fn fmt_bytes(b: u64) -> String {
    let v = b as f64;
    if b < 1024 {
        format!("{b} B")
    } else if b < 1024 * 1024 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{:.1} MiB", v / (1024.0 * 1024.0))
    }
}

/// `part / whole`, 0 when there is no whole.
pub fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

pub fn fmt_share(s: f64) -> String {
    format!("{:.1}%", s * 100.0)
}

/// A latency for people: `850ns`, `12.3µs`, `45.6ms`, `1.02s`.
pub fn fmt_ns(ns: u64) -> String {
    let v = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", v / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1}ms", v / 1e6)
    } else {
        format!("{:.2}s", v / 1e9)
    }
}

pub fn fmt_ratio(v: f64) -> String {
    if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// 2, or 1.5: a count that may be an average.
pub fn fmt_count(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_read_naturally() {
        assert_eq!(fmt_ns(850), "850ns");
        assert_eq!(fmt_ns(12_345), "12.3µs");
        assert_eq!(fmt_ns(45_600_000), "45.6ms");
        assert_eq!(fmt_ns(1_020_000_000), "1.02s");
    }
}
