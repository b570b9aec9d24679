//! The syscall tables: per process and syscall, and per process name.

use std::collections::BTreeMap;

use comfy_table::Table;
use serde::Serialize;
use tracer_common::LatencyStats;

use super::{new_table, right_align};
use crate::{
    aggregate::Aggregate,
    syscall_names,
    units::{LatencyRow, fmt_ns, fmt_share, share},
};

#[derive(Debug, Serialize)]
pub struct SyscallRow {
    pub pid: u32,
    pub comm: String,
    pub syscall: String,
    pub nr: u32,
    /// A wait for an event, peer, child or timer (shown apart).
    pub waiting: bool,
    #[serde(flatten)]
    pub latency: LatencyRow,
    /// Time of calls still in progress when the report was made.
    pub in_flight_ns: u64,
    /// (total + in flight) / traced thread wall time.
    pub share: f64,
}

/// Syscalls of all traced processes with the same name (a server's workers,
/// a shell's children) taken together.
#[derive(Debug, Serialize)]
pub struct SyscallGroupRow {
    pub comm: String,
    pub processes: usize,
    pub syscall: String,
    pub nr: u32,
    pub waiting: bool,
    #[serde(flatten)]
    pub latency: LatencyRow,
    pub in_flight_ns: u64,
    pub share: f64,
}

fn group_syscalls(agg: &Aggregate, wall_ns: u64, total_wall_ns: u64) -> Vec<SyscallGroupRow> {
    struct Group {
        /// Process (or name) rows counted in.
        rows: std::collections::BTreeSet<u32>,
        stats: LatencyStats,
        in_flight_ns: u64,
    }
    let comm = |pid: u32| {
        agg.processes()
            .get(&pid)
            .map(|p| p.comm.clone())
            .unwrap_or_default()
    };
    // Processes per name: those with rows of their own, and those folded
    // into name rows (node mode keeps syscalls per name, not per process).
    let mut processes_named: BTreeMap<String, usize> = BTreeMap::new();
    for (&pid, p) in agg.processes() {
        *processes_named.entry(p.comm.clone()).or_default() += if crate::aggregate::is_process(pid)
        {
            1
        } else {
            p.folded
        };
    }
    let mut groups: BTreeMap<(String, u32), Group> = BTreeMap::new();
    let empty = LatencyStats::ZERO;
    let keys = agg.syscalls().keys().chain(agg.in_flight().keys());
    for key in keys {
        let g = groups
            .entry((comm(key.tgid), key.nr))
            .or_insert_with(|| Group {
                rows: Default::default(),
                stats: LatencyStats::ZERO,
                in_flight_ns: 0,
            });
        // A key in both maps is visited twice: count each part once.
        if g.rows.insert(key.tgid) {
            g.stats.merge(agg.syscalls().get(key).unwrap_or(&empty));
            g.in_flight_ns += agg.in_flight().get(key).copied().unwrap_or(0);
        }
    }
    let mut rows: Vec<SyscallGroupRow> = groups
        .into_iter()
        .map(|((comm, nr), g)| SyscallGroupRow {
            processes: processes_named.get(&comm).copied().unwrap_or(0),
            comm,
            syscall: syscall_names::name(nr),
            nr,
            waiting: syscall_names::is_waiting(nr),
            share: share(
                g.stats.total_ns + g.in_flight_ns,
                if syscall_names::is_waiting(nr) {
                    total_wall_ns
                } else {
                    wall_ns
                },
            ),
            latency: LatencyRow::from(&g.stats),
            in_flight_ns: g.in_flight_ns,
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.latency.total_ns + r.in_flight_ns));
    rows
}

pub(super) fn table(
    rows: &[&SyscallGroupRow],
    limit: usize,
    many: bool,
    share_header: &str,
) -> Option<Table> {
    if rows.is_empty() {
        return None;
    }
    let mut header = vec![];
    if many {
        header.extend(["PROCESS", "PIDS"]);
    }
    header.extend([
        "SYSCALL",
        "CALLS",
        "TOTAL",
        "P50",
        "P99",
        "MAX",
        share_header,
    ]);
    let mut t = new_table(&header);
    for r in rows.iter().take(limit) {
        let mut row: Vec<String> = vec![];
        if many {
            row.extend([r.comm.clone(), r.processes.to_string()]);
        }
        let mut total = fmt_ns(r.latency.total_ns + r.in_flight_ns);
        if r.in_flight_ns > 0 {
            total.push('+');
        }
        row.extend([
            r.syscall.clone(),
            r.latency.count.to_string(),
            total,
            fmt_ns(r.latency.p50_ns),
            fmt_ns(r.latency.p99_ns),
            fmt_ns(r.latency.max_ns),
            fmt_share(r.share),
        ]);
        t.add_row(row);
    }
    if many {
        right_align(&mut t, 1..2);
    }
    let first = if many { 3 } else { 1 };
    right_align(&mut t, first..first + 6);
    Some(t)
}

/// The syscall rows, per process and per process name, and the time in
/// waiting syscalls.
pub(super) fn rows(
    agg: &Aggregate,
    wall_ns: u64,
    total_wall_ns: u64,
) -> (Vec<SyscallRow>, Vec<SyscallGroupRow>, u64) {
    let comm = |pid: u32| {
        agg.processes()
            .get(&pid)
            .map(|p| p.comm.clone())
            .unwrap_or_default()
    };
    let mut keys: Vec<_> = agg
        .syscalls()
        .keys()
        .chain(agg.in_flight().keys())
        .copied()
        .collect();
    keys.sort();
    keys.dedup();
    let mut syscalls: Vec<SyscallRow> = keys
        .into_iter()
        .map(|key| {
            let latency = agg
                .syscalls()
                .get(&key)
                .map(LatencyRow::from)
                .unwrap_or(LatencyRow::from(&LatencyStats::ZERO));
            let in_flight_ns = agg.in_flight().get(&key).copied().unwrap_or(0);
            SyscallRow {
                pid: key.tgid,
                comm: comm(key.tgid),
                syscall: syscall_names::name(key.nr),
                nr: key.nr,
                waiting: syscall_names::is_waiting(key.nr),
                // Waits are idle time as often as not: their share is
                // of all the threads' time.
                share: share(
                    latency.total_ns + in_flight_ns,
                    if syscall_names::is_waiting(key.nr) {
                        total_wall_ns
                    } else {
                        wall_ns
                    },
                ),
                latency,
                in_flight_ns,
            }
        })
        .collect();
    syscalls.sort_by_key(|r| std::cmp::Reverse(r.latency.total_ns + r.in_flight_ns));
    let syscall_groups = group_syscalls(agg, wall_ns, total_wall_ns);
    let waiting_ns = syscalls
        .iter()
        .filter(|r| r.waiting)
        .map(|r| r.latency.total_ns + r.in_flight_ns)
        .sum::<u64>()
        .min(total_wall_ns);
    (syscalls, syscall_groups, waiting_ns)
}
