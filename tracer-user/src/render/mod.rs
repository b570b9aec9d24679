//! Render: the aggregate as a report a person reads (tables) and a script
//! reads (JSON), and the live `top` screen.

pub mod breakdown;
mod call_sites;
pub mod compare;
mod connect;
mod dns;
pub mod findings;
pub mod flame;
mod requests;
mod slow_io;
mod syscalls;
mod tls;
pub mod top;

use std::fmt::Write as _;

use comfy_table::{CellAlignment, Table, presets};

use serde::Serialize;

#[cfg(test)]
pub use self::tls::peer_row;
pub use self::{
    breakdown::By,
    call_sites::CallSiteRow,
    connect::{ConnectRow, PeerRow},
    dns::{DnsHostRow, DnsQueryRow},
    slow_io::SlowIoRow,
    syscalls::{SyscallGroupRow, SyscallRow},
    tls::TlsPeerRow,
};
pub use crate::kind::Kind;
use crate::{
    aggregate::Aggregate,
    attribute::AttributionCounts,
    collect::LostCounts,
    dns::LookupRecord,
    kind::CallKind,
    units::{fmt_ns, fmt_share, share},
};

/// Why tracing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Duration,
    Interrupted,
    TargetExited,
    /// Still running (a `top` snapshot).
    Running,
}

#[derive(Debug, Serialize)]
pub struct ProcessRow {
    pub pid: u32,
    pub comm: String,
    /// The traced process that forked it; null for the ones named by the user.
    pub parent: Option<u32>,
    pub threads: usize,
    pub wall_ns: u64,
    /// Requests it served (on connections it accepted) and their time,
    /// each from its first read to its response's last write.
    pub requests: u64,
    pub request_ns: u64,
    pub exited: bool,
    /// The container id (from the cgroup), if it runs in one.
    pub container: Option<String>,
    /// The Kubernetes pod UID, if any.
    pub pod: Option<String>,
    /// For a row of exited processes folded by name and container (its
    /// `pid` is a row id, not a PID): how many; 0 for a process.
    pub folded: usize,
    /// A Go program: its busy time is the time it was traced (see
    /// `Report::build`), `lifetime_ns`.
    pub go: bool,
    #[serde(skip)]
    pub lifetime_ns: u64,
}

/// What the text report shows, from the command line.
#[derive(Debug, Clone)]
pub struct TextOptions {
    /// Rows per table.
    pub rows: usize,
    pub by: By,
    /// Only these kinds of call (all when None).
    pub kinds: Option<Vec<Kind>>,
    /// Hide targets and call sites whose slowest call is faster.
    pub min_latency_ns: Option<u64>,
}

/// The denominator of the shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ShareOf {
    /// Thread time minus listener threads' waits for new work: what a
    /// profiler of request handlers measures.
    Busy,
    /// All of the traced threads' time.
    Wall,
}

impl ShareOf {
    /// The share column's header.
    pub fn header(self) -> &'static str {
        match self {
            ShareOf::Busy => "BUSY%",
            ShareOf::Wall => "WALL%",
        }
    }

    /// What the shares are of, in words.
    pub fn words(self) -> &'static str {
        match self {
            ShareOf::Busy => "busy time",
            ShareOf::Wall => "wall time",
        }
    }
}

/// One thread's lookups, connects, SSL calls and slow reads and writes.
#[derive(Debug, Serialize)]
pub struct ThreadRow {
    pub pid: u32,
    pub tid: u32,
    /// The thread's name (comm) when first seen.
    pub name: String,
    pub total_ns: u64,
    pub share: f64,
    /// (kind, calls, ns), busiest first.
    pub kinds: Vec<(CallKind, u64, u64)>,
}

/// Everything a report says, in one serializable value.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tracer_version: &'static str,
    pub ended: EndReason,
    pub traced_ns: u64,
    pub processes: Vec<ProcessRow>,
    /// Sum of the traced threads' lifetimes while traced.
    pub wall_ns: u64,
    /// Part of `wall_ns` spent in waiting syscalls.
    pub waiting_ns: u64,
    /// Requests served, on connections the traced processes accepted.
    pub requests: u64,
    /// The time spent handling work: with `requests`, their time (each
    /// from its first read to its response's last write); without, the
    /// threads' time less the waits of listener threads for new work
    /// (accept, and poll/select/epoll of threads that accept).
    pub busy_ns: u64,
    /// `wall_ns - busy_ns` (0 when concurrent requests add up to more).
    pub idle_ns: u64,
    /// What every `share` is a share of: "busy" (default) or "wall".
    pub share_of: ShareOf,
    /// Slow reads and writes (single calls over the threshold) per target.
    pub slow_io: Vec<SlowIoRow>,
    /// Per process and syscall.
    pub syscalls: Vec<SyscallRow>,
    /// Per process name and syscall.
    pub syscall_groups: Vec<SyscallGroupRow>,
    pub connects_total: u64,
    pub connect_peers: Vec<PeerRow>,
    pub slowest_connects: Vec<ConnectRow>,
    pub dns_lookups_total: u64,
    pub dns_hosts: Vec<DnsHostRow>,
    pub slowest_lookups: Vec<LookupRecord>,
    /// DNS queries sent outside libc lookups (other resolvers).
    pub dns_queries: Vec<DnsQueryRow>,
    /// Files whose OpenSSL functions are probed.
    pub tls_libraries: Vec<String>,
    pub tls_calls_total: u64,
    pub tls_peers: Vec<TlsPeerRow>,
    /// Lookups, connects and SSL calls by call site, slowest first.
    pub call_sites: Vec<CallSiteRow>,
    /// Where the time went: per kind of call and target, largest first.
    pub breakdown: Vec<breakdown::BreakdownRow>,
    /// HTTP requests by endpoint, and the slowest requests' calls.
    pub http_requests: requests::RequestsSection,
    /// The worst offenders, with evidence and fix, largest first.
    pub findings: Vec<findings::Finding>,
    /// Lookups, connects, SSL calls and slow I/O per thread, busiest first.
    pub threads: Vec<ThreadRow>,
    /// Before and after, when a baseline report was given.
    pub comparison: Option<compare::Comparison>,
    pub attribution: AttributionCounts,
    pub lost: LostCounts,
}

impl Report {
    pub fn build(
        agg: &Aggregate,
        now_ns: u64,
        ended: EndReason,
        lost: LostCounts,
        tls_libraries: &[String],
        share_of: ShareOf,
    ) -> Self {
        let processes = process_rows(agg, now_ns);
        let total_wall_ns: u64 = processes.iter().map(|p| p.wall_ns).sum();
        let requests: u64 = processes.iter().map(|p| p.requests).sum();
        // A server's busy time is the time of its requests (what a
        // profiler of its request handlers sums), whatever its threads do
        // around them: a listener's waits, a pool's idle workers, an event
        // loop's waits between requests, a supervisor process. Anything
        // else: its threads' time, less a listener's waits for work; but a
        // Go program's, the time it was traced, one flow of work (its
        // goroutines run on a pool of threads that park in futex and
        // epoll whenever a goroutine waits: their time is not its work).
        let busy_ns = if requests > 0 {
            processes.iter().map(|p| p.request_ns).sum()
        } else {
            processes
                .iter()
                .map(|p| {
                    if p.go {
                        p.lifetime_ns
                    } else {
                        let idle = agg.idle().get(&p.pid).copied().unwrap_or(0);
                        p.wall_ns.saturating_sub(idle)
                    }
                })
                .sum()
        };
        let idle_ns = total_wall_ns.saturating_sub(busy_ns);
        // The denominator of every share below.
        let wall_ns = match share_of {
            ShareOf::Busy => busy_ns,
            ShareOf::Wall => total_wall_ns,
        };
        let traced_ns = now_ns.saturating_sub(agg.start_ns());
        let (syscalls, syscall_groups, waiting_ns) = syscalls::rows(agg, wall_ns, total_wall_ns);
        let (connect_peers, slowest_connects) = connect::rows(agg);
        let (dns_hosts, slowest_lookups, dns_queries) =
            dns::rows(agg, wall_ns, share_of.words(), traced_ns);
        let tls_peers = tls::rows(agg, wall_ns, share_of.words());
        let call_sites = call_sites::rows(agg, &tls_peers, wall_ns);
        let mut report = Self {
            tracer_version: env!("CARGO_PKG_VERSION"),
            ended,
            traced_ns,
            processes,
            wall_ns: total_wall_ns,
            waiting_ns,
            requests,
            busy_ns,
            idle_ns,
            share_of,
            slow_io: slow_io::rows(agg, wall_ns),
            syscalls,
            syscall_groups,
            connects_total: agg.connects().total + agg.connects().in_flight.len() as u64,
            connect_peers,
            slowest_connects,
            dns_lookups_total: agg.dns().lookups_total + agg.in_flight_lookups().len() as u64,
            dns_hosts,
            slowest_lookups,
            dns_queries,
            tls_libraries: tls_libraries.to_vec(),
            tls_calls_total: agg.tls().calls_total,
            tls_peers,
            call_sites,
            breakdown: Vec::new(),
            http_requests: requests::section_of(agg),
            findings: Vec::new(),
            threads: thread_rows(agg, wall_ns),
            comparison: None,
            attribution: agg.sites().counts,
            lost,
        };
        report.breakdown = breakdown::build(&report, wall_ns);
        report.findings = findings(&report, wall_ns);
        report
    }

    /// The report as text: the tree of where the time went, what to fix
    /// first, then the tables (at most `o.rows` rows each) of the kinds
    /// asked for.
    pub fn to_text(&self, o: &TextOptions) -> String {
        let rows = o.rows;
        let wanted = |k: Kind| o.kinds.as_deref().is_none_or(|ks| ks.contains(&k));
        let mut out = String::new();
        self.write_header(&mut out);
        breakdown::write_tree(
            &mut out,
            self,
            self.share_of.words(),
            self.denominator_ns(),
            o,
        );
        findings::write(&mut out, self, rows, o.kinds.as_deref());
        compare::write(&mut out, self, self.share_of.words(), rows);
        self.write_requests(&mut out, rows);
        if wanted(Kind::Syscall) {
            let (work, waits): (Vec<&SyscallGroupRow>, Vec<&SyscallGroupRow>) =
                self.syscall_groups.iter().partition(|r| !r.waiting);
            let many = self.processes.len() > 1;
            section(
                &mut out,
                "Syscalls doing work, by total time",
                syscalls::table(&work, rows, many, self.share_of.header()),
            );
            section(
                &mut out,
                "Syscalls waiting (poll, futex, sleep, accept, ...): idle time, shown apart",
                syscalls::table(&waits, rows, many, "WALL%"),
            );
        }
        if wanted(Kind::Dns) && (!self.dns_hosts.is_empty() || !self.dns_queries.is_empty()) {
            self.write_dns(&mut out, rows);
        }
        if wanted(Kind::Tls) {
            self.write_tls(&mut out, rows);
        }
        if wanted(Kind::Io) {
            self.write_slow_io(&mut out, rows);
        }
        self.write_call_sites(&mut out, rows, o.kinds.as_deref(), o.min_latency_ns);
        if wanted(Kind::Connect) {
            section(
                &mut out,
                &format!("Connects by peer ({} calls)", self.connects_total),
                connect::peer_table(&self.connect_peers, rows),
            );
            section(
                &mut out,
                "Slowest connects (latency: handshake for non-blocking calls, syscall otherwise)",
                connect::slowest_table(&self.slowest_connects, rows),
            );
        }
        out
    }

    fn write_header(&self, out: &mut String) {
        const MAX_NAMED_PROCESSES: usize = 8;
        let names: Vec<String> = self
            .processes
            .iter()
            .filter(|p| p.parent.is_none() && crate::aggregate::is_process(p.pid))
            .map(|p| match &p.container {
                // As docker ps and crictl ps show it: 12 digits.
                Some(id) => format!(
                    "{} ({}, container {})",
                    p.pid,
                    p.comm,
                    &id[..12.min(id.len())]
                ),
                None => format!("{} ({})", p.pid, p.comm),
            })
            .collect();
        let children = self
            .processes
            .iter()
            .filter(|p| p.parent.is_some() && crate::aggregate::is_process(p.pid))
            .count();
        let folded: usize = self.processes.iter().map(|p| p.folded).sum();
        let threads: usize = self.processes.iter().map(|p| p.threads).sum();
        let ended = match self.ended {
            EndReason::Duration => "duration reached",
            EndReason::Interrupted => "interrupted",
            EndReason::TargetExited => "target exited",
            EndReason::Running => "running",
        };
        // Node mode traces hundreds: name a few.
        let mut who = Vec::new();
        if names.len() > MAX_NAMED_PROCESSES {
            who.push(format!(
                "PID {}, and {} more",
                names[..MAX_NAMED_PROCESSES].join(", "),
                names.len() - MAX_NAMED_PROCESSES
            ));
        } else if !names.is_empty() {
            who.push(format!("PID {}", names.join(", ")));
        }
        if children > 0 {
            who.push(format!("{children} child process(es)"));
        }
        if folded > 0 {
            who.push(format!("{folded} exited processes (counted by name)"));
        }
        if who.is_empty() {
            who.push("no process made a call in scope".to_string());
        }
        let _ = writeln!(
            out,
            "tracer: {}; {} threads; traced {} ({ended})",
            who.join(" and "),
            threads,
            fmt_ns(self.traced_ns),
        );
        if self.requests > 0 {
            let _ = writeln!(
                out,
                "Busy {}: {} requests served, each from its first read to its response's last \
                 write (thread wall time {}). In syscalls that wait: {}.",
                fmt_ns(self.busy_ns),
                self.requests,
                fmt_ns(self.wall_ns),
                fmt_ns(self.waiting_ns),
            );
        } else {
            let _ = writeln!(
                out,
                "Thread wall time {} = busy {} + idle {} (threads that accept connections, \
                 waiting for new ones). In syscalls that wait: {}.",
                fmt_ns(self.wall_ns),
                fmt_ns(self.busy_ns),
                fmt_ns(self.idle_ns),
                fmt_ns(self.waiting_ns),
            );
        }
        let _ = writeln!(
            out,
            "Shares below are of the {} ({}), except waits (of wall time).",
            self.share_of.words(),
            fmt_ns(self.denominator_ns()),
        );
        let lost = self.lost.total();
        if lost == 0 {
            let _ = writeln!(out, "Events lost: none");
        } else {
            let _ = writeln!(
                out,
                "Events lost: {lost} (ring buffer full {}, syscall map full {}, thread map full {}, \
                 handshake map full {}, process map full {}, lookup map full {}, DNS socket map \
                 full {}, SSL call map full {}, undecodable {}): counts above are low",
                self.lost.ring_full,
                self.lost.syscall_map_full,
                self.lost.thread_map_full,
                self.lost.handshake_map_full,
                self.lost.process_map_full,
                self.lost.lookup_map_full,
                self.lost.dns_socket_map_full,
                self.lost.tls_call_map_full,
                self.lost.undecodable
            );
        }
    }

    fn denominator_ns(&self) -> u64 {
        match self.share_of {
            ShareOf::Busy => self.busy_ns,
            ShareOf::Wall => self.wall_ns,
        }
    }
}

fn section(out: &mut String, title: &str, table: Option<Table>) {
    let _ = writeln!(out, "\n{title}");
    match table {
        Some(t) => {
            let _ = writeln!(out, "{t}");
        }
        None => {
            let _ = writeln!(out, "  (none)");
        }
    }
}

fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.to_vec());
    t
}

fn right_align(t: &mut Table, cols: std::ops::Range<usize>) {
    for c in cols {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Every kind's findings, largest share first.
fn findings(r: &Report, denominator_ns: u64) -> Vec<findings::Finding> {
    let mut out = Vec::new();
    dns::findings(r, &mut out);
    tls::findings(r, denominator_ns, &mut out);
    slow_io::findings(r, &mut out);
    requests::findings(r, denominator_ns, &mut out);
    connect::findings(r, denominator_ns, &mut out);
    out.sort_by(|a, b| b.share.total_cmp(&a.share));
    out
}

/// One row per traced process (and per row of exited processes folded by
/// name).
fn process_rows(agg: &Aggregate, now_ns: u64) -> Vec<ProcessRow> {
    agg.processes()
        .iter()
        .map(|(&pid, p)| ProcessRow {
            pid,
            comm: p.comm.clone(),
            parent: p.parent,
            threads: p.threads.len() + p.exited_threads,
            wall_ns: agg.wall_ns(pid, now_ns),
            requests: agg.requests().get(&pid).map_or(0, |r| r.count),
            request_ns: agg.requests().get(&pid).map_or(0, |r| r.ns),
            exited: p.exited_ns.is_some(),
            container: p.container.id.clone(),
            pod: p.container.pod_uid.clone(),
            folded: p.folded,
            go: p.go,
            lifetime_ns: agg.lifetime_ns(pid, now_ns),
        })
        .collect()
}

/// One row per thread that made calls, busiest first; its kinds of call
/// busiest first.
fn thread_rows(agg: &Aggregate, wall_ns: u64) -> Vec<ThreadRow> {
    let mut rows: Vec<ThreadRow> = agg
        .by_thread()
        .iter()
        .map(|(&(pid, tid), t)| {
            let total_ns = t.kinds.values().map(|k| k.1).sum();
            let mut kinds: Vec<(CallKind, u64, u64)> =
                t.kinds.iter().map(|(k, (n, ns))| (*k, *n, *ns)).collect();
            kinds.sort_by_key(|k| std::cmp::Reverse(k.2));
            ThreadRow {
                pid,
                tid,
                name: t.name.clone(),
                total_ns,
                share: share(total_ns, wall_ns),
                kinds,
            }
        })
        .collect();
    rows.sort_by_key(|t| std::cmp::Reverse(t.total_ns));
    rows
}
