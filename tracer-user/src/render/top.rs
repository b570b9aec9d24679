//! The live screen of `tracer top`: the header, where the time went, and
//! one table of the slowest targets (syscalls, hosts, peers, files) with
//! the code that called them, sorted by the column the user picked.

use std::fmt::Write as _;

use super::{Report, breakdown, new_table, right_align};
use crate::kind::CallKind;
use crate::units::{LatencyRow, fmt_ns, fmt_share, share};

/// The column `tracer top` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    Total,
    P99,
    Max,
    Count,
}

struct Entry {
    kind: &'static str,
    target: String,
    latency: LatencyRow,
    share: f64,
    called_from: String,
}

impl Report {
    /// The screen: at most `rows` rows per table.
    pub fn to_top(&self, rows: usize, interval: &str, sort: SortBy) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        breakdown::write(
            &mut out,
            self,
            self.share_of.words(),
            self.denominator_ns(),
            rows,
        );
        let _ = writeln!(
            out,
            "\nSlowest targets, by {}; refreshing every {interval}; q or Ctrl-C to quit",
            match sort {
                SortBy::Total => "total time",
                SortBy::P99 => "p99",
                SortBy::Max => "max",
                SortBy::Count => "count",
            }
        );
        let mut entries = self.top_entries();
        entries.sort_by_key(|e| {
            std::cmp::Reverse(match sort {
                SortBy::Total => e.latency.total_ns,
                SortBy::P99 => e.latency.p99_ns,
                SortBy::Max => e.latency.max_ns,
                SortBy::Count => e.latency.count,
            })
        });
        let mut table = new_table(&[
            "KIND",
            "TARGET",
            "COUNT",
            "TOTAL",
            "P50",
            "P99",
            "MAX",
            self.share_of.header(),
            "CALLED FROM",
        ]);
        for e in entries.into_iter().take(rows) {
            table.add_row(vec![
                e.kind.to_string(),
                e.target,
                e.latency.count.to_string(),
                fmt_ns(e.latency.total_ns),
                fmt_ns(e.latency.p50_ns),
                fmt_ns(e.latency.p99_ns),
                fmt_ns(e.latency.max_ns),
                fmt_share(e.share),
                e.called_from,
            ]);
        }
        right_align(&mut table, 2..8);
        let _ = writeln!(out, "{table}");
        out
    }

    /// The busiest call site of a breakdown row, with how many of its calls.
    fn called_from(&self, kind: CallKind, target: &str) -> String {
        self.breakdown
            .iter()
            .find(|b| b.kind == kind.row() && b.target.eq_ignore_ascii_case(target))
            .and_then(|b| b.sites.first())
            .map(|(summary, calls, _, _)| format!("{summary} ({calls})"))
            .unwrap_or_default()
    }

    fn top_entries(&self) -> Vec<Entry> {
        let mut entries = Vec::new();
        for r in self.syscall_groups.iter().filter(|r| !r.waiting) {
            let mut latency = r.latency.clone();
            latency.total_ns += r.in_flight_ns;
            entries.push(Entry {
                kind: "syscall",
                target: if self.processes.len() > 1 {
                    format!("{} ({})", r.syscall, r.comm)
                } else {
                    r.syscall.clone()
                },
                latency,
                share: r.share,
                called_from: String::new(),
            });
        }
        for h in &self.dns_hosts {
            entries.push(Entry {
                kind: CallKind::Lookup.label(),
                target: h.host.clone(),
                latency: h.latency.clone(),
                share: h.share,
                called_from: self.called_from(CallKind::Lookup, &h.host),
            });
        }
        for p in &self.tls_peers {
            entries.push(Entry {
                kind: CallKind::TlsRead.label(),
                target: p.peer.clone(),
                latency: p.read_latency.clone(),
                share: share(p.read_latency.total_ns, self.denominator_ns()),
                called_from: self.called_from(CallKind::TlsRead, &p.peer),
            });
        }
        for p in &self.connect_peers {
            entries.push(Entry {
                kind: CallKind::Connect.label(),
                target: p.peer.clone(),
                latency: p.latency.clone(),
                share: share(p.latency.total_ns, self.denominator_ns()),
                called_from: self.called_from(CallKind::Connect, &p.peer),
            });
        }
        for io in &self.slow_io {
            for (kind, latency) in [
                (CallKind::SlowRead, &io.reads),
                (CallKind::SlowWrite, &io.writes),
            ] {
                if latency.count > 0 {
                    entries.push(Entry {
                        kind: kind.label(),
                        target: io.target.clone(),
                        latency: latency.clone(),
                        share: share(latency.total_ns, self.denominator_ns()),
                        called_from: self.called_from(kind, &io.target),
                    });
                }
            }
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{LatencyStats, SyscallKey, sysno};

    use super::*;
    use crate::{
        aggregate::Aggregate,
        collect::LostCounts,
        render::{EndReason, ShareOf},
    };

    /// One thread traced for a second: 2 reads of 100 ms, 50 writes of 1 ms.
    pub(super) fn report() -> Report {
        let mut agg = Aggregate::new(0);
        agg.add_target(7, "app".into(), &[7]);
        let mut reads = LatencyStats::ZERO;
        reads.record(100_000_000);
        reads.record(100_000_000);
        let mut writes = LatencyStats::ZERO;
        for _ in 0..50 {
            writes.record(1_000_000);
        }
        let mut stats = std::collections::BTreeMap::new();
        stats.insert(
            SyscallKey {
                tgid: 7,
                nr: sysno::READ as u32,
            },
            reads,
        );
        stats.insert(
            SyscallKey {
                tgid: 7,
                nr: sysno::WRITE as u32,
            },
            writes,
        );
        agg.set_syscalls(stats, &[], 0, |_, _, _| None);
        Report::build(
            &agg,
            1_000_000_000,
            EndReason::Running,
            LostCounts::default(),
            &[],
            ShareOf::Wall,
        )
    }

    fn table_lines(screen: &str) -> Vec<String> {
        screen
            .lines()
            .skip_while(|l| !l.starts_with("Slowest targets"))
            .skip(1)
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    #[test]
    fn the_table_is_sorted_by_the_chosen_column() {
        let r = report();
        assert_eq!(
            table_lines(&r.to_top(10, "1s", SortBy::Total)),
            [
                " KIND     TARGET  COUNT    TOTAL      P50      P99      MAX  WALL%  CALLED FROM",
                " syscall  read        2  200.0ms  100.0ms  100.0ms  100.0ms  20.0%",
                " syscall  write      50   50.0ms    1.0ms    1.0ms    1.0ms   5.0%",
            ]
        );
        let by_count = table_lines(&r.to_top(10, "1s", SortBy::Count));
        assert!(by_count[1].contains("write"), "{by_count:?}");
        assert!(by_count[2].contains("read"), "{by_count:?}");
        // -n 1: one row.
        assert_eq!(table_lines(&r.to_top(1, "1s", SortBy::Total)).len(), 2);
    }
}

#[cfg(test)]
mod json_tests {
    /// Every top-level field of the JSON report is in docs/report-json.md,
    /// and every field documented there exists.
    #[test]
    fn the_json_report_matches_its_documentation() {
        let doc = include_str!("../../../docs/report-json.md");
        let documented: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let report = serde_json::to_value(super::tests::report()).unwrap();
        let fields: Vec<&str> = report
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for f in &fields {
            assert!(documented.contains(f), "{f} is not in docs/report-json.md");
        }
        for d in &documented {
            assert!(
                fields.contains(d),
                "docs/report-json.md names {d}, the report has no such field"
            );
        }
    }
}
