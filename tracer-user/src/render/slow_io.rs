//! The slow reads and writes table, per target.

use serde::Serialize;

use super::{Report, new_table, right_align, section};
use crate::{
    aggregate::Aggregate,
    units::{LatencyRow, fmt_ns, fmt_share, share},
};

/// Slow reads and writes to one target.
#[derive(Debug, Serialize)]
pub struct SlowIoRow {
    pub target: String,
    pub reads: LatencyRow,
    pub writes: LatencyRow,
    pub bytes: u64,
    pub share: f64,
}

impl Report {
    pub(super) fn write_slow_io(&self, out: &mut String, rows: usize) {
        if self.slow_io.is_empty() {
            return;
        }
        let mut t = new_table(&[
            "TARGET",
            "READS",
            "READ TIME",
            "MAX",
            "WRITES",
            "WRITE TIME",
            self.share_of.header(),
        ]);
        let mut sorted: Vec<&SlowIoRow> = self.slow_io.iter().collect();
        sorted.sort_by_key(|r| std::cmp::Reverse(r.reads.total_ns + r.writes.total_ns));
        for r in sorted.into_iter().take(rows) {
            t.add_row(vec![
                r.target.clone(),
                r.reads.count.to_string(),
                fmt_ns(r.reads.total_ns),
                fmt_ns(r.reads.max_ns.max(r.writes.max_ns)),
                r.writes.count.to_string(),
                fmt_ns(r.writes.total_ns),
                fmt_share(r.share),
            ]);
        }
        right_align(&mut t, 1..7);
        section(
            out,
            "Slow reads and writes (single calls over 1 ms, outside TLS and DNS): waiting on a peer",
            Some(t),
        );
    }
}

/// One row per target of slow reads and writes.
pub(super) fn rows(agg: &Aggregate, wall_ns: u64) -> Vec<SlowIoRow> {
    agg.slow_io
        .iter()
        .map(|(target, s)| SlowIoRow {
            target: target.clone(),
            reads: LatencyRow::from(&s.reads),
            writes: LatencyRow::from(&s.writes),
            bytes: s.bytes,
            share: share(s.reads.total_ns + s.writes.total_ns, wall_ns),
        })
        .collect()
}
