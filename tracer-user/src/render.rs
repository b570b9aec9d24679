//! Render: the aggregate as a report a person reads (tables) and a script
//! reads (JSON), and the live `top` screen.

pub mod breakdown;
pub mod compare;
pub mod findings;
pub mod flame;
pub mod top;

use std::{collections::BTreeMap, fmt::Write as _};

use comfy_table::{CellAlignment, Table, presets};

pub use self::breakdown::{By, Kind};
use serde::Serialize;
use tracer_common::LatencyStats;

use crate::{
    aggregate::{Aggregate, ConnectRecord, Peer, add_to_peers},
    attribute::{AttributionCounts, Frame},
    collect::LostCounts,
    dns::{self, LookupRecord},
    syscall_names,
    tls::{self, TlsPeerRow},
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
}

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

#[derive(Debug, Serialize)]
pub struct PeerRow {
    pub peer: String,
    pub proto: &'static str,
    #[serde(flatten)]
    pub latency: LatencyRow,
    pub outcomes: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct ConnectRow {
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub peer: String,
    pub proto: &'static str,
    pub nonblocking: bool,
    pub outcome: String,
    pub latency_ns: u64,
    pub syscall_ns: u64,
    pub handshake_ns: Option<u64>,
    pub call_site: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DnsHostRow {
    pub host: String,
    #[serde(flatten)]
    pub latency: LatencyRow,
    pub share: f64,
    pub results: BTreeMap<String, u64>,
    pub queries: u64,
    pub retries: u64,
    pub timeouts: u64,
    /// Query names tried that are not the host (search domains).
    pub expansions: Vec<String>,
    /// Per query type: asked and answered.
    pub query_types: BTreeMap<String, (u64, u64)>,
    pub servers: Vec<String>,
    /// The findings in plain words.
    pub findings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct DnsQueryRow {
    pub name: String,
    pub qtype: String,
    pub server: String,
    #[serde(flatten)]
    pub latency: LatencyRow,
    pub unanswered: u64,
    pub rcodes: BTreeMap<String, u64>,
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

/// Slow reads and writes to one target.
#[derive(Debug, Serialize)]
pub struct SlowIoRow {
    pub target: String,
    pub reads: LatencyRow,
    pub writes: LatencyRow,
    pub bytes: u64,
    pub share: f64,
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
    pub kinds: Vec<(String, u64, u64)>,
}

/// Time spent in one kind of call to one target from one call site.
#[derive(Debug, Serialize)]
pub struct CallSiteRow {
    pub kind: &'static str,
    pub target: String,
    /// The frames, outermost caller first, joined.
    pub call_site: String,
    /// The program's own innermost frame and the call: what to look at.
    pub summary: String,
    pub frames: Vec<Frame>,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: Option<u64>,
    pub share: f64,
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
    /// The worst offenders, with evidence and fix, largest first.
    pub findings: Vec<findings::Finding>,
    /// Lookups, connects, SSL calls and slow I/O per thread, busiest first.
    pub threads: Vec<ThreadRow>,
    /// Before and after, when a baseline report was given.
    pub comparison: Option<compare::Comparison>,
    pub attribution: AttributionCounts,
    pub lost: LostCounts,
}

/// "tcp" when the kernel saw the socket send a SYN; "unix" for unix
/// sockets; "-" when unknown (a datagram socket, or a call that failed
/// before any packet).
fn proto(tcp: bool, peer: Option<&Peer>) -> &'static str {
    match (tcp, peer) {
        (true, _) => "tcp",
        (false, Some(Peer::Unix(_))) => "unix",
        _ => "-",
    }
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
        let processes: Vec<ProcessRow> = agg
            .processes
            .iter()
            .map(|(&pid, p)| ProcessRow {
                pid,
                comm: p.comm.clone(),
                parent: p.parent,
                threads: p.threads.len() + p.exited_threads,
                wall_ns: agg.wall_ns(pid, now_ns),
                requests: agg.requests.get(&pid).map_or(0, |r| r.count),
                request_ns: agg.requests.get(&pid).map_or(0, |r| r.ns),
                exited: p.exited_ns.is_some(),
                container: p.container.id.clone(),
                pod: p.container.pod_uid.clone(),
                folded: p.folded,
            })
            .collect();
        let total_wall_ns: u64 = processes.iter().map(|p| p.wall_ns).sum();
        let requests: u64 = processes.iter().map(|p| p.requests).sum();
        // A server's busy time is the time of its requests (what a
        // profiler of its request handlers sums), whatever its threads do
        // around them: a listener's waits, a pool's idle workers, an event
        // loop's waits between requests, a supervisor process. Anything
        // else: its threads' time, less a listener's waits for work.
        let busy_ns = if requests > 0 {
            processes.iter().map(|p| p.request_ns).sum()
        } else {
            total_wall_ns - agg.idle.values().sum::<u64>().min(total_wall_ns)
        };
        let idle_ns = total_wall_ns.saturating_sub(busy_ns);
        // The denominator of every share below.
        let wall_ns = match share_of {
            ShareOf::Busy => busy_ns,
            ShareOf::Wall => total_wall_ns,
        };
        let comm = |pid: u32| {
            agg.processes
                .get(&pid)
                .map(|p| p.comm.clone())
                .unwrap_or_default()
        };
        let mut keys: Vec<_> = agg
            .syscalls
            .keys()
            .chain(agg.in_flight.keys())
            .copied()
            .collect();
        keys.sort();
        keys.dedup();
        let mut syscalls: Vec<SyscallRow> = keys
            .into_iter()
            .map(|key| {
                let latency = agg
                    .syscalls
                    .get(&key)
                    .map(LatencyRow::from)
                    .unwrap_or(LatencyRow::from(&LatencyStats::ZERO));
                let in_flight_ns = agg.in_flight.get(&key).copied().unwrap_or(0);
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

        // Unfinished connects count, with the time they have waited so far.
        let mut peers = agg.peers.clone();
        for r in &agg.in_flight_connects {
            add_to_peers(&mut peers, r);
        }
        let mut connect_peers: Vec<PeerRow> = peers
            .iter()
            .map(|(peer, s)| PeerRow {
                peer: agg.name_peer(peer),
                proto: proto(s.tcp, Some(peer)),
                latency: LatencyRow::from(&s.latency),
                outcomes: s
                    .outcomes
                    .iter()
                    .map(|(o, n)| (o.to_string(), *n))
                    .collect(),
            })
            .collect();
        connect_peers.sort_by_key(|r| std::cmp::Reverse(r.latency.total_ns));
        let mut slowest: Vec<&ConnectRecord> = agg
            .slowest_connects
            .iter()
            .chain(&agg.in_flight_connects)
            .collect();
        slowest.sort_by_key(|r| std::cmp::Reverse(r.latency_ns()));
        let slowest_connects = slowest
            .into_iter()
            .map(|r| ConnectRow {
                pid: r.pid,
                tid: r.tid,
                fd: r.fd,
                peer: r.peer.as_ref().map_or("?".into(), |p| agg.name_peer(p)),
                proto: proto(r.tcp, r.peer.as_ref()),
                nonblocking: r.nonblocking,
                outcome: r.outcome.to_string(),
                latency_ns: r.latency_ns(),
                syscall_ns: r.syscall_ns,
                handshake_ns: r.handshake_ns,
                call_site: r.call_site.map(|id| agg.sites.site(id).label()),
            })
            .collect();
        let traced_ns = now_ns.saturating_sub(agg.start_ns);
        let (hosts, slowest_lookups) = agg.dns.hosts_with(&agg.in_flight_lookups);
        let mut dns_hosts: Vec<DnsHostRow> = hosts
            .iter()
            .map(|(host, h)| DnsHostRow {
                host: host.clone(),
                latency: LatencyRow::from(&h.latency),
                share: share(h.latency.total_ns, wall_ns),
                results: h.results.clone(),
                queries: h.queries,
                retries: h.retries,
                timeouts: h.timeouts,
                expansions: h.expansions.keys().cloned().collect(),
                query_types: h
                    .by_type
                    .iter()
                    .map(|(t, s)| (t.clone(), (s.asked, s.answered)))
                    .collect(),
                servers: h.servers.keys().cloned().collect(),
                findings: dns::host_findings(host, h, wall_ns, share_of.words(), traced_ns),
            })
            .collect();
        dns_hosts.sort_by_key(|r| std::cmp::Reverse(r.latency.total_ns));
        let mut dns_queries: Vec<DnsQueryRow> = agg
            .dns
            .standalone
            .iter()
            .map(|((name, qtype, server), s)| DnsQueryRow {
                name: name.clone(),
                qtype: qtype.clone(),
                server: server.clone(),
                latency: LatencyRow::from(&s.latency),
                unanswered: s.unanswered,
                rcodes: s.rcodes.clone(),
            })
            .collect();
        dns_queries.sort_by_key(|r| std::cmp::Reverse((r.unanswered, r.latency.total_ns)));
        let mut tls_peers: Vec<TlsPeerRow> = tls::by_peer(&agg.tls)
            .into_iter()
            .map(|(peer, p)| {
                tls::peer_row(peer, &p, wall_ns, share_of.words(), |id| {
                    agg.sites.site(id).label()
                })
            })
            .collect();
        tls_peers.sort_by(|a, b| b.share.total_cmp(&a.share));
        let mut call_sites: Vec<CallSiteRow> = agg
            .by_site
            .iter()
            .map(|((kind, target, id), s)| {
                let site = agg.sites.site(*id);
                CallSiteRow {
                    kind,
                    target: target.clone(),
                    call_site: site.label(),
                    summary: site.summary(),
                    frames: site.frames.clone(),
                    count: s.count,
                    total_ns: s.total_ns,
                    max_ns: Some(s.max_ns),
                    share: share(s.total_ns, wall_ns),
                }
            })
            .collect();
        for peer in &tls_peers {
            for (kind, id, calls, ns) in &peer.site_ids {
                let site = agg.sites.site(*id);
                call_sites.push(CallSiteRow {
                    kind,
                    target: peer.peer.clone(),
                    call_site: site.label(),
                    summary: site.summary(),
                    frames: site.frames.clone(),
                    count: *calls,
                    total_ns: *ns,
                    max_ns: None,
                    share: share(*ns, wall_ns),
                });
            }
        }
        call_sites.sort_by_key(|r| std::cmp::Reverse(r.total_ns));
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
            slow_io: agg
                .slow_io
                .iter()
                .map(|(target, s)| SlowIoRow {
                    target: target.clone(),
                    reads: LatencyRow::from(&s.reads),
                    writes: LatencyRow::from(&s.writes),
                    bytes: s.bytes,
                    share: share(s.reads.total_ns + s.writes.total_ns, wall_ns),
                })
                .collect(),
            syscalls,
            syscall_groups,
            connects_total: agg.connects_total + agg.in_flight_connects.len() as u64,
            connect_peers,
            slowest_connects,
            dns_lookups_total: agg.dns.lookups_total + agg.in_flight_lookups.len() as u64,
            dns_hosts,
            slowest_lookups,
            dns_queries,
            tls_libraries: tls_libraries.to_vec(),
            tls_calls_total: agg.tls.calls_total,
            tls_peers,
            call_sites,
            breakdown: Vec::new(),
            findings: Vec::new(),
            threads: agg
                .by_thread
                .iter()
                .map(|(&(pid, tid), t)| {
                    let total_ns = t.kinds.values().map(|k| k.1).sum();
                    let mut kinds: Vec<(String, u64, u64)> = t
                        .kinds
                        .iter()
                        .map(|(k, (n, ns))| (k.to_string(), *n, *ns))
                        .collect();
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
                .collect(),
            comparison: None,
            attribution: agg.sites.counts,
            lost,
        };
        report.breakdown = breakdown::build(&report, wall_ns);
        report.findings = findings::build(&report, wall_ns);
        report
            .threads
            .sort_by_key(|t| std::cmp::Reverse(t.total_ns));
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
        if wanted(Kind::Syscall) {
            let (work, waits): (Vec<&SyscallGroupRow>, Vec<&SyscallGroupRow>) =
                self.syscall_groups.iter().partition(|r| !r.waiting);
            let many = self.processes.len() > 1;
            section(
                &mut out,
                "Syscalls doing work, by total time",
                syscall_table(&work, rows, many, self.share_of.header()),
            );
            section(
                &mut out,
                "Syscalls waiting (poll, futex, sleep, accept, ...): idle time, shown apart",
                syscall_table(&waits, rows, many, "WALL%"),
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
                peer_table(&self.connect_peers, rows),
            );
            section(
                &mut out,
                "Slowest connects (latency: handshake for non-blocking calls, syscall otherwise)",
                connect_table(&self.slowest_connects, rows),
            );
        }
        out
    }

    fn write_dns(&self, out: &mut String, rows: usize) {
        section(
            out,
            &format!("DNS lookups by host ({} lookups)", self.dns_lookups_total),
            dns_host_table(&self.dns_hosts, rows, self.share_of.header()),
        );
        let findings: Vec<&String> = self
            .dns_hosts
            .iter()
            .take(rows)
            .flat_map(|h| h.findings.iter())
            .collect();
        if !findings.is_empty() {
            let _ = writeln!(out, "\nWhy the lookups took that long");
            for f in findings {
                let _ = writeln!(out, "  {f}");
            }
        }
        if !self.slowest_lookups.is_empty() {
            let _ = writeln!(out, "\nSlowest lookups, with the DNS messages inside them");
            for l in self.slowest_lookups.iter().take(rows.min(5)) {
                let _ = writeln!(
                    out,
                    "  {} {}({}) pid {} tid {}: {} -> {}{}",
                    fmt_ns(l.duration_ns),
                    l.function,
                    l.host,
                    l.pid,
                    l.tid,
                    l.result,
                    l.addresses.len(),
                    if l.addresses.len() == 1 {
                        " address"
                    } else {
                        " addresses"
                    },
                );
                for q in &l.queries {
                    let answer = match (&q.latency_ns, &q.rcode) {
                        (Some(t), Some(rc)) => {
                            format!("{rc} in {}, {} answers", fmt_ns(*t), q.answers)
                        }
                        _ => "no answer".to_string(),
                    };
                    let _ = writeln!(
                        out,
                        "      {}{} {} -> {}: {answer}",
                        if q.retry { "retry " } else { "" },
                        q.qtype,
                        q.name,
                        q.server.as_deref().unwrap_or("?"),
                    );
                }
                for w in l.waits.iter().filter(|w| w.timed_out) {
                    let _ = writeln!(
                        out,
                        "      timeout: waited {} (poll timeout {} ms) with no answer",
                        fmt_ns(w.duration_ns),
                        w.timeout_ms
                    );
                }
            }
        }
        if !self.dns_queries.is_empty() {
            section(
                out,
                "DNS queries outside libc lookups (other resolvers)",
                dns_query_table(&self.dns_queries, rows),
            );
        }
    }

    fn write_slow_io(&self, out: &mut String, rows: usize) {
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

    fn write_call_sites(
        &self,
        out: &mut String,
        rows: usize,
        kinds: Option<&[Kind]>,
        min_latency_ns: Option<u64>,
    ) {
        let shown: Vec<&CallSiteRow> = self
            .call_sites
            .iter()
            .filter(|r| kinds.is_none_or(|k| k.contains(&Kind::of(r.kind))))
            // SSL call sites keep no maximum: they stay.
            .filter(|r| min_latency_ns.is_none_or(|min| r.max_ns.is_none_or(|m| m >= min)))
            .collect();
        if shown.is_empty() {
            return;
        }
        let mut t = new_table(&[
            "KIND",
            "TARGET",
            "CALLS",
            "TOTAL",
            "MAX",
            self.share_of.header(),
            "CALLED FROM",
        ]);
        for r in shown.iter().take(rows) {
            t.add_row(vec![
                r.kind.to_string(),
                r.target.clone(),
                r.count.to_string(),
                fmt_ns(r.total_ns),
                r.max_ns.map_or("-".into(), fmt_ns),
                fmt_share(r.share),
                r.summary.clone(),
            ]);
        }
        right_align(&mut t, 2..6);
        section(
            out,
            "Slowest call sites (lookups, connects and SSL calls by the code that made them)",
            Some(t),
        );
        for r in shown.iter().take(3) {
            let _ = writeln!(out, "  {} {} ({}):", r.kind, r.target, fmt_ns(r.total_ns));
            for f in &r.frames {
                let _ = writeln!(out, "      {}", f.label());
            }
        }
        let a = &self.attribution;
        if a.stale_python_frames > 0 || a.python_thread_not_found > 0 {
            let _ = writeln!(
                out,
                "  ({} Python frames could not be read back and show as ?; {} calls found no \
                 Python thread state)",
                a.stale_python_frames, a.python_thread_not_found
            );
        }
    }

    fn write_tls(&self, out: &mut String, rows: usize) {
        if self.tls_libraries.is_empty() {
            let _ = writeln!(
                out,
                "\nTLS: no TLS library (libssl, or OpenSSL linked into the executable) is mapped \
                 by the traced processes"
            );
            return;
        }
        section(
            out,
            &format!(
                "TLS by peer ({} SSL calls; probing {})",
                self.tls_calls_total,
                self.tls_libraries.join(", ")
            ),
            tls_table(&self.tls_peers, rows, self.share_of.header()),
        );
        let findings: Vec<&String> = self
            .tls_peers
            .iter()
            .take(rows)
            .flat_map(|p| p.findings.iter())
            .collect();
        for f in findings {
            let _ = writeln!(out, "  {f}");
        }
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

fn group_syscalls(agg: &Aggregate, wall_ns: u64, total_wall_ns: u64) -> Vec<SyscallGroupRow> {
    struct Group {
        /// Process (or name) rows counted in.
        rows: std::collections::BTreeSet<u32>,
        stats: LatencyStats,
        in_flight_ns: u64,
    }
    let comm = |pid: u32| {
        agg.processes
            .get(&pid)
            .map(|p| p.comm.clone())
            .unwrap_or_default()
    };
    // Processes per name: those with rows of their own, and those folded
    // into name rows (node mode keeps syscalls per name, not per process).
    let mut processes_named: BTreeMap<String, usize> = BTreeMap::new();
    for (&pid, p) in &agg.processes {
        *processes_named.entry(p.comm.clone()).or_default() += if crate::aggregate::is_process(pid)
        {
            1
        } else {
            p.folded
        };
    }
    let mut groups: BTreeMap<(String, u32), Group> = BTreeMap::new();
    let empty = LatencyStats::ZERO;
    let keys = agg.syscalls.keys().chain(agg.in_flight.keys());
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
            g.stats.merge(agg.syscalls.get(key).unwrap_or(&empty));
            g.in_flight_ns += agg.in_flight.get(key).copied().unwrap_or(0);
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

fn syscall_table(
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

fn peer_table(rows: &[PeerRow], limit: usize) -> Option<Table> {
    if rows.is_empty() {
        return None;
    }
    let mut t = new_table(&[
        "PEER", "PROTO", "CALLS", "RESULTS", "TOTAL", "P50", "P99", "MAX",
    ]);
    for r in rows.iter().take(limit) {
        let outcomes: Vec<String> = r.outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
        t.add_row(vec![
            r.peer.clone(),
            r.proto.to_string(),
            r.latency.count.to_string(),
            outcomes.join(", "),
            fmt_ns(r.latency.total_ns),
            fmt_ns(r.latency.p50_ns),
            fmt_ns(r.latency.p99_ns),
            fmt_ns(r.latency.max_ns),
        ]);
    }
    right_align(&mut t, 2..3);
    right_align(&mut t, 4..8);
    Some(t)
}

fn dns_host_table(rows: &[DnsHostRow], limit: usize, share_header: &str) -> Option<Table> {
    if rows.is_empty() {
        return None;
    }
    let mut t = new_table(&[
        "HOST",
        "CALLS",
        "RESULTS",
        "TOTAL",
        "P50",
        "P99",
        "MAX",
        share_header,
        "QUERIES",
        "TIMEOUTS",
    ]);
    for r in rows.iter().take(limit) {
        let results: Vec<String> = r.results.iter().map(|(o, n)| format!("{o} {n}")).collect();
        t.add_row(vec![
            r.host.clone(),
            r.latency.count.to_string(),
            results.join(", "),
            fmt_ns(r.latency.total_ns),
            fmt_ns(r.latency.p50_ns),
            fmt_ns(r.latency.p99_ns),
            fmt_ns(r.latency.max_ns),
            fmt_share(r.share),
            r.queries.to_string(),
            r.timeouts.to_string(),
        ]);
    }
    right_align(&mut t, 1..2);
    right_align(&mut t, 3..10);
    Some(t)
}

fn dns_query_table(rows: &[DnsQueryRow], limit: usize) -> Option<Table> {
    let mut t = new_table(&[
        "NAME",
        "TYPE",
        "SERVER",
        "ANSWERED",
        "NO ANSWER",
        "P50",
        "MAX",
        "RCODES",
    ]);
    for r in rows.iter().take(limit) {
        let rcodes: Vec<String> = r.rcodes.iter().map(|(o, n)| format!("{o} {n}")).collect();
        t.add_row(vec![
            r.name.clone(),
            r.qtype.clone(),
            r.server.clone(),
            r.latency.count.to_string(),
            r.unanswered.to_string(),
            fmt_ns(r.latency.p50_ns),
            fmt_ns(r.latency.max_ns),
            rcodes.join(", "),
        ]);
    }
    right_align(&mut t, 3..7);
    Some(t)
}

fn tls_table(rows: &[TlsPeerRow], limit: usize, share_header: &str) -> Option<Table> {
    if rows.is_empty() {
        return None;
    }
    let mut t = new_table(&[
        "PEER",
        "CONNS",
        "HANDSHAKES",
        "READS",
        "READ",
        "READ TIME",
        "WAITING",
        "WRITES",
        "WRITTEN",
        share_header,
    ]);
    for r in rows.iter().take(limit) {
        t.add_row(vec![
            r.peer.clone(),
            r.connections.to_string(),
            r.handshakes.to_string(),
            r.reads.to_string(),
            fmt_bytes(r.read_bytes),
            fmt_ns(r.read_ns),
            fmt_share(if r.read_ns == 0 {
                0.0
            } else {
                r.read_waiting_ns as f64 / r.read_ns as f64
            }),
            r.writes.to_string(),
            fmt_bytes(r.write_bytes),
            fmt_share(r.share),
        ]);
    }
    right_align(&mut t, 1..10);
    Some(t)
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

fn connect_table(rows: &[ConnectRow], limit: usize) -> Option<Table> {
    if rows.is_empty() {
        return None;
    }
    let mut t = new_table(&[
        "PID",
        "TID",
        "FD",
        "PEER",
        "PROTO",
        "MODE",
        "RESULT",
        "LATENCY",
        "SYSCALL",
        "HANDSHAKE",
    ]);
    for r in rows.iter().take(limit) {
        t.add_row(vec![
            r.pid.to_string(),
            r.tid.to_string(),
            r.fd.to_string(),
            r.peer.clone(),
            r.proto.to_string(),
            if r.nonblocking {
                "non-blocking"
            } else {
                "blocking"
            }
            .to_string(),
            r.outcome.clone(),
            fmt_ns(r.latency_ns),
            fmt_ns(r.syscall_ns),
            r.handshake_ns.map_or("-".into(), fmt_ns),
        ]);
    }
    right_align(&mut t, 0..3);
    right_align(&mut t, 7..10);
    Some(t)
}

/// `part / whole`, 0 when there is no whole.
pub fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn fmt_share(s: f64) -> String {
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
