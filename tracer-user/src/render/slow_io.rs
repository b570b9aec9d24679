//! The slow reads and writes table, per target.

use serde::Serialize;

use super::{
    Kind, Report,
    findings::{Finding, MIN_SHARE},
    new_table, right_align, section,
};
use crate::{
    aggregate::Aggregate,
    kind::CallKind,
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
    agg.slow_io()
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

/// What to fix first about each target of slow reads and writes.
pub(super) fn findings(r: &Report, out: &mut Vec<Finding>) {
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
