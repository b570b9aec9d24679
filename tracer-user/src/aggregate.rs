//! Aggregate: the state a report is drawn from. Per process: its threads'
//! lifetimes (the denominator of every share), its syscalls (aggregated in
//! the kernel, copied here), its connects joined with their TCP handshakes,
//! grouped per peer.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use serde::Serialize;
use tracer_common::{
    ConnectEvent, HandshakeEvent, LatencyStats, SlowIoEvent, SyscallKey, TASK_ADOPTED, TASK_EXEC,
    TASK_EXIT_PROCESS, TASK_EXIT_THREAD, TASK_NEW_PROCESS, TASK_NEW_THREAD, TCP_ESTABLISHED,
    TaskEvent, ThreadEntry, sysno,
};

use crate::{
    attribute::Attributor,
    collect::Event,
    dns::{ConnectName, DnsState, LookupRecord},
    tls::TlsState,
};

/// How long a handshake seen before its connect() record is kept for the join.
const EARLY_HANDSHAKE_TTL_NS: u64 = 60_000_000_000;
/// How many individual connects are kept for the "slowest" list.
const SLOWEST_KEPT: usize = 200;
/// Exited processes kept as rows of their own. Past this, exited processes
/// fold into the row of their name and cgroup (a node starts millions of
/// processes over its life: a row each would grow without end).
pub const MAX_EXITED_PROCESS_ROWS: usize = 256;
pub use tracer_common::NAME_ROW_BASE;

/// Whether a key of `Aggregate::processes` is a process, not a row of
/// processes by name and cgroup.
pub fn is_process(key: u32) -> bool {
    key < NAME_ROW_BASE
}

const EINPROGRESS: i64 = 115;

/// Where a connect() went.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Peer {
    Inet(SocketAddr),
    Unix(String),
    /// AF_UNSPEC: dissolves a datagram socket's association.
    Unspecified,
    Other(u16),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Inet(a) => write!(f, "{a}"),
            Peer::Unix(p) => write!(f, "unix:{p}"),
            Peer::Unspecified => write!(f, "AF_UNSPEC"),
            Peer::Other(fam) => write!(f, "family {fam}"),
        }
    }
}

/// Decodes the `struct sockaddr` bytes a process passed to connect().
pub fn parse_sockaddr(bytes: &[u8]) -> Option<Peer> {
    let family = u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?);
    match family as i32 {
        libc::AF_INET => {
            let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
            let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(Peer::Inet(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(ip)),
                port,
            )))
        }
        libc::AF_INET6 => {
            let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
            let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            let ip = Ipv6Addr::from(ip);
            // Show v4-mapped peers as the IPv4 address they are.
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            Some(Peer::Inet(SocketAddr::new(ip, port)))
        }
        libc::AF_UNIX => {
            let path = bytes.get(2..).unwrap_or_default();
            let (prefix, path) = match path.first() {
                // Abstract socket: leading NUL, name is the rest (not NUL-terminated).
                Some(0) => ("@", &path[1..]),
                _ => ("", path.split(|&b| b == 0).next().unwrap_or_default()),
            };
            let path = path.split(|&b| b == 0).next().unwrap_or_default();
            Some(Peer::Unix(format!(
                "{prefix}{}",
                String::from_utf8_lossy(path)
            )))
        }
        libc::AF_UNSPEC => Some(Peer::Unspecified),
        other => Some(Peer::Other(other as u16)),
    }
}

/// How a connect attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ConnectOutcome {
    Connected,
    /// connect() failed with this errno name (ECONNREFUSED, ETIMEDOUT, ...).
    Failed(String),
    /// Non-blocking connect whose handshake failed (reset or timed out).
    HandshakeFailed,
    /// Not finished when tracing stopped: a blocking connect still in the
    /// syscall, or a non-blocking one with no answer to its SYN yet.
    InProgress,
}

impl fmt::Display for ConnectOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectOutcome::Connected => f.write_str("ok"),
            ConnectOutcome::Failed(e) => f.write_str(e),
            ConnectOutcome::HandshakeFailed => f.write_str("handshake failed"),
            ConnectOutcome::InProgress => f.write_str("in progress"),
        }
    }
}

/// One connect() call, joined with its TCP handshake where there was one.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectRecord {
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub peer: Option<Peer>,
    /// True when the kernel moved a TCP socket to SYN_SENT in this call.
    pub tcp: bool,
    pub nonblocking: bool,
    pub outcome: ConnectOutcome,
    /// Monotonic time the call started.
    pub start_ns: u64,
    /// Time spent inside the connect() syscall.
    pub syscall_ns: u64,
    /// SYN sent to SYN-ACK received (or failure), when known.
    pub handshake_ns: Option<u64>,
    /// The code that called connect().
    #[serde(skip)]
    pub call_site: Option<u32>,
}

impl ConnectRecord {
    /// The latency that counts: the handshake for a non-blocking connect,
    /// the syscall for a blocking one.
    pub fn latency_ns(&self) -> u64 {
        if self.nonblocking {
            self.handshake_ns.unwrap_or(self.syscall_ns)
        } else {
            self.syscall_ns
        }
    }
}

/// All connects to one peer.
#[derive(Debug, Clone)]
pub struct PeerStats {
    pub latency: LatencyStats,
    pub outcomes: BTreeMap<ConnectOutcome, u64>,
    pub tcp: bool,
}

/// Counts a connect in the statistics of its peer.
pub fn add_to_peers(peers: &mut BTreeMap<Peer, PeerStats>, record: &ConnectRecord) {
    let Some(peer) = &record.peer else { return };
    let stats = peers.entry(peer.clone()).or_insert_with(|| PeerStats {
        latency: LatencyStats::ZERO,
        outcomes: BTreeMap::new(),
        tcp: false,
    });
    stats.latency.record(record.latency_ns());
    *stats.outcomes.entry(record.outcome.clone()).or_default() += 1;
    stats.tcp |= record.tcp;
}

/// A thread's life while traced, in monotonic nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct ThreadSpan {
    pub start_ns: u64,
    pub end_ns: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct ProcessState {
    pub comm: String,
    /// The traced process that forked this one, if it was not named by the user.
    pub parent: Option<u32>,
    pub threads: HashMap<u32, ThreadSpan>,
    /// Threads that exited while the process went on, folded: how many,
    /// and their time while traced (a server that starts a thread per
    /// request would otherwise grow one entry per request).
    pub exited_threads: usize,
    pub exited_threads_ns: u64,
    pub exited_ns: Option<u64>,
    /// Its container and pod, from its cgroup (children inherit them).
    pub container: crate::container::ContainerInfo,
    /// For a row of processes by name and cgroup (keyed `NAME_ROW_BASE`
    /// and up): how many exited processes folded into it; 0 for a process.
    pub folded: usize,
    /// Its cgroup v2 id (0 if unknown): with the name, the row it folds
    /// into, as the kernel keys node mode's syscall stats.
    pub cgroup_id: u64,
}

#[derive(Debug, Default)]
pub struct Aggregate {
    /// Monotonic time tracing started.
    pub start_ns: u64,
    pub processes: BTreeMap<u32, ProcessState>,
    pub syscalls: BTreeMap<SyscallKey, LatencyStats>,
    /// Syscall time in progress when the snapshot was taken: (pid, nr) -> ns.
    pub in_flight: BTreeMap<SyscallKey, u64>,
    pub peers: BTreeMap<Peer, PeerStats>,
    pub connects_total: u64,
    /// The slowest connects, slowest first, at most `SLOWEST_KEPT`.
    pub slowest_connects: Vec<ConnectRecord>,
    /// Connects inside the syscall when the snapshot was taken.
    pub in_flight_connects: Vec<ConnectRecord>,
    awaiting_handshake: HashMap<u64, ConnectRecord>,
    early_handshakes: HashMap<u64, HandshakeEvent>,
    pub dns: DnsState,
    /// Lookups inside getaddrinfo & co. when the snapshot was taken.
    pub in_flight_lookups: Vec<LookupRecord>,
    pub tls: TlsState,
    /// The peer each (process, fd) connected to, and its name for people,
    /// until the fd is closed.
    pub fd_peers: HashMap<(u32, i32), (Peer, String)>,
    /// Host names of the addresses connected to, from the lookup the
    /// connecting thread made just before; `None` for an address the
    /// program connected to by number.
    names_by_addr: HashMap<SocketAddr, Option<String>>,
    /// Processes that mapped a file executable since the last look: they
    /// may have loaded a library to probe.
    pub mapped_new_code: BTreeSet<u32>,
    /// Node mode: processes the kernel started tracing since the last look
    /// (PID, name); the session lists their threads and probes their code.
    pub adopted: Vec<(u32, String)>,
    /// Call sites, and the stacks waiting for their events.
    pub sites: Attributor,
    /// Latency per (kind, target, call site) for lookups, connects and
    /// slow reads and writes.
    pub by_site: BTreeMap<(&'static str, String, u32), LatencyStats>,
    /// Slow reads and writes (over the threshold) per target: the peer of a
    /// socket, or the path of a pipe or file.
    pub slow_io: BTreeMap<String, SlowIoStats>,
    /// Idle time per process (listener threads waiting for work), as of
    /// the last snapshot, in-flight waits included.
    pub idle: BTreeMap<u32, u64>,
    /// Requests served per process (row), timed on the connections it
    /// accepted: the busy time of a server.
    pub requests: BTreeMap<u32, tracer_common::RequestTime>,
    /// With `--events`: calls at least this slow are kept in `slow_calls`
    /// until taken.
    pub slow_call_threshold_ns: Option<u64>,
    pub slow_calls: Vec<SlowCall>,
    /// Calls and time per thread and kind of call (lookups, connects, SSL
    /// calls, slow reads and writes), for `--by thread`.
    pub by_thread: BTreeMap<(u32, u32), ThreadTime>,
    /// With `serve --labels container|pod`: latency per kind, target,
    /// process name and container, the series those labels split (`None`
    /// unless asked: they multiply the series by the containers).
    pub by_owner: Option<BTreeMap<OwnedTarget, LatencyStats>>,
    /// Exited processes folded because a new process took their PID, for
    /// the next `fold_exited_processes` to report.
    reused_pids_folded: HashMap<u32, u32>,
    /// The container of each cgroup seen, for the rows the kernel names
    /// by cgroup id.
    containers_by_cgroup: HashMap<u64, crate::container::ContainerInfo>,
}

/// A lookup, connect, SSL call or slow read or write series of one process
/// name in one container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnedTarget {
    /// As in the metrics: dns, connect, tls_read, tls_write,
    /// tls_handshake, slow_read, slow_write.
    pub kind: &'static str,
    pub target: String,
    pub comm: String,
    pub container: crate::container::ContainerInfo,
}

/// One thread's calls: its name when first seen, and per kind (count, ns).
#[derive(Debug, Clone, Default)]
pub struct ThreadTime {
    pub name: String,
    pub kinds: BTreeMap<&'static str, (u64, u64)>,
}

/// Per-thread rows kept before an exited thread's row is folded into its
/// process's `(exited threads)` row (tid 0): enough for `--by thread`,
/// bounded for a tracer that runs for days.
const MAX_THREAD_ROWS: usize = 1024;

/// Folds the row of a thread that exited into its process's `(exited
/// threads)` row, once there are many rows.
fn fold_thread_time(rows: &mut BTreeMap<(u32, u32), ThreadTime>, pid: u32, tid: u32) {
    if rows.len() <= MAX_THREAD_ROWS {
        return;
    }
    let Some(gone) = rows.remove(&(pid, tid)) else {
        return;
    };
    merge_thread_time(rows, pid, gone);
}

/// Adds a thread's row to its process's `(exited threads)` row (tid 0).
fn merge_thread_time(rows: &mut BTreeMap<(u32, u32), ThreadTime>, pid: u32, gone: ThreadTime) {
    let folded = rows.entry((pid, 0)).or_insert_with(|| ThreadTime {
        name: "(exited threads)".to_string(),
        kinds: BTreeMap::new(),
    });
    for (kind, (n, ns)) in gone.kinds {
        let k = folded.kinds.entry(kind).or_default();
        k.0 += n;
        k.1 += ns;
    }
}

/// One call at or over the `--events` threshold: a line of the event stream.
#[derive(Debug, Clone, Serialize)]
pub struct SlowCall {
    /// When the call started: CLOCK_MONOTONIC nanoseconds.
    pub start_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// dns, connect, tls read, tls write, handshake, io.
    pub kind: &'static str,
    /// Host, peer, or file.
    pub target: String,
    pub latency_ns: u64,
    /// ok, an error name, or bytes moved.
    pub result: String,
    /// The program's own innermost frame and the call, where known.
    pub call_site: Option<String>,
}

/// Slow reads and writes to one target.
#[derive(Debug, Clone)]
pub struct SlowIoStats {
    pub reads: LatencyStats,
    pub writes: LatencyStats,
    pub bytes: u64,
}

impl Aggregate {
    pub fn new(start_ns: u64) -> Self {
        Self {
            start_ns,
            ..Default::default()
        }
    }

    /// Registers a process named by the user, with the threads it has now.
    pub fn add_target(&mut self, pid: u32, comm: String, threads: &[u32]) {
        self.make_room_for(pid);
        let start = self.start_ns;
        let containers = &mut self.containers_by_cgroup;
        let proc = self.processes.entry(pid).or_insert_with(|| {
            let (container, cgroup_id) = crate::container::of_process_with_id(pid);
            containers.insert(cgroup_id, container.clone());
            ProcessState {
                comm,
                container,
                cgroup_id,
                ..Default::default()
            }
        });
        for &tid in threads {
            proc.threads.entry(tid).or_insert(ThreadSpan {
                start_ns: start,
                end_ns: None,
            });
        }
    }

    /// Applies a batch of events in order, after reading the Python code
    /// objects its stacks name: those are read from the live process,
    /// which may exit any moment, while unwinding native stacks is slow
    /// the first time a library is seen.
    pub fn apply_batch(&mut self, batch: Vec<Event>) {
        for ev in &batch {
            if let Event::Stack(st) = ev {
                self.sites.prefetch_python(st);
            }
        }
        for ev in batch {
            self.apply(ev);
        }
    }

    pub fn apply(&mut self, ev: Event) {
        match ev {
            Event::Connect(c) => self.on_connect(c),
            Event::Handshake(h) => self.on_handshake(h),
            Event::Task(t) => self.on_task(t),
            Event::LookupStart(l) => self.dns.on_lookup_start(&l),
            Event::Lookup(l) => {
                let site = self.sites.take(l.tid, l.start_ns);
                let label = site.map(|id| self.sites.site(id).label());
                let record = self.dns.on_lookup(&l, label);
                self.add_thread_time(record.pid, record.tid, "dns", record.duration_ns);
                self.count_for_owner(
                    record.pid,
                    "dns",
                    |_| record.host.to_lowercase(),
                    record.duration_ns,
                );
                self.note_slow(record.duration_ns, |this| SlowCall {
                    start_ns: record.start_ns,
                    pid: record.pid,
                    tid: record.tid,
                    kind: "dns",
                    target: record.host.clone(),
                    latency_ns: record.duration_ns,
                    result: record.result.clone(),
                    call_site: site.map(|id| this.sites.site(id).summary()),
                });
                if let Some(id) = site {
                    self.by_site
                        .entry(("dns", record.host.to_lowercase(), id))
                        .or_insert(LatencyStats::ZERO)
                        .record(record.duration_ns);
                }
            }
            Event::DnsPacket(p) => self.dns.on_packet(&p),
            Event::DnsWait(w) => self.dns.on_wait(&w),
            Event::Tls(t) => {
                let class = crate::tls::work_of(&t).map_or(0, tracer_common::TlsFn::class);
                let site = self.sites.take_tls(t.tid, t.start_ns, t.ssl, class);
                // A socket: one we saw connected and not closed, or one
                // /proc says is a socket; named now, as its fd number may
                // be reused later.
                let mut tls = std::mem::take(&mut self.tls);
                let this = &*self;
                tls.on_call(&t, site, |pid, fd| {
                    if this.fd_peers.contains_key(&(pid, fd)) || crate::target::is_socket(pid, fd) {
                        Some(
                            this.peer_name(pid, fd)
                                .unwrap_or_else(|| format!("pid {pid} fd {fd}")),
                        )
                    } else {
                        None
                    }
                });
                self.tls = tls;
                if let Some(func) = crate::tls::work_of(&t) {
                    self.add_thread_time(t.tgid, t.tid, crate::tls::call_kind(func), t.duration_ns);
                    let kind = if func.is_read() {
                        "tls_read"
                    } else if func.is_write() {
                        "tls_write"
                    } else {
                        "tls_handshake"
                    };
                    let peer = |this: &Self| match this.tls.connections.get(&(t.tgid, t.ssl)) {
                        Some(conn) => crate::tls::peer_key(conn),
                        None => format!("pid {} (socket unknown)", t.tgid),
                    };
                    self.count_for_owner(t.tgid, kind, peer, t.duration_ns);
                    self.note_slow(t.duration_ns, |this| SlowCall {
                        start_ns: t.start_ns,
                        pid: t.tgid,
                        tid: t.tid,
                        kind: crate::tls::call_kind(func),
                        target: this
                            .tls
                            .connections
                            .get(&(t.tgid, t.ssl))
                            .and_then(|c| c.peer.clone())
                            .unwrap_or_else(|| format!("pid {} (socket unknown)", t.tgid)),
                        latency_ns: t.duration_ns,
                        result: if t.ret > 0 {
                            format!("{} bytes", t.bytes)
                        } else {
                            format!("returned {}", t.ret)
                        },
                        call_site: site.map(|id| this.sites.site(id).summary()),
                    });
                }
            }
            Event::TlsWait(w) => self.tls.on_wait(&w),
            Event::ExecMap(m) => {
                self.mapped_new_code.insert(m.tgid);
            }
            Event::Stack(st) => self.sites.on_stack(&st),
            Event::SlowIo(io) => self.on_slow_io(&io),
            Event::FdClosed(c) => {
                self.fd_peers.remove(&(c.tgid, c.fd));
                self.tls.on_close(c.tgid, c.fd);
            }
        }
    }

    fn on_task(&mut self, t: TaskEvent) {
        let comm = comm_string(&t.comm);
        match t.what {
            TASK_NEW_THREAD => {
                if let Some(p) = self.processes.get_mut(&t.tgid) {
                    p.threads.entry(t.child).or_insert(ThreadSpan {
                        start_ns: t.ts_ns,
                        end_ns: None,
                    });
                }
            }
            TASK_NEW_PROCESS => {
                self.make_room_for(t.child);
                let mut threads = HashMap::new();
                threads.insert(
                    t.child,
                    ThreadSpan {
                        start_ns: t.ts_ns,
                        end_ns: None,
                    },
                );
                let (container, cgroup_id) = self
                    .processes
                    .get(&t.tgid)
                    .map(|p| (p.container.clone(), p.cgroup_id))
                    .unwrap_or_default();
                self.processes.entry(t.child).or_insert(ProcessState {
                    comm,
                    parent: Some(t.tgid),
                    threads,
                    container,
                    cgroup_id,
                    ..Default::default()
                });
            }
            TASK_EXEC => {
                // Named after the new program from its next call on; its
                // code is probed.
                if let Some(p) = self.processes.get_mut(&t.tgid)
                    && !comm.is_empty()
                {
                    p.comm = comm;
                }
                self.mapped_new_code.insert(t.tgid);
            }
            TASK_ADOPTED => {
                // Known at once (the calls behind this record in the batch
                // are counted under its name and container); its threads
                // are listed by the session.
                self.add_target(t.tgid, comm.clone(), &[]);
                self.adopted.push((t.tgid, comm));
            }
            TASK_EXIT_THREAD | TASK_EXIT_PROCESS => {
                let Some(p) = self.processes.get_mut(&t.tgid) else {
                    return;
                };
                // The name at exit is the one after any exec (the main
                // thread's: another thread's name is its own).
                if !comm.is_empty() && t.tid == t.tgid {
                    p.comm = comm;
                }
                if t.what == TASK_EXIT_THREAD {
                    if let Some(span) = p.threads.remove(&t.tid) {
                        let start = span.start_ns.max(self.start_ns);
                        let end = span.end_ns.unwrap_or(t.ts_ns);
                        p.exited_threads += 1;
                        p.exited_threads_ns += end.saturating_sub(start);
                    }
                    fold_thread_time(&mut self.by_thread, t.tgid, t.tid);
                } else if let Some(span) = p.threads.get_mut(&t.tid) {
                    span.end_ns.get_or_insert(t.ts_ns);
                }
                self.dns.forget_thread(t.tid);
                self.sites.forget_thread(t.tid);
                if t.what == TASK_EXIT_PROCESS {
                    self.sites.forget_process(t.tgid);
                }
                if t.what == TASK_EXIT_PROCESS {
                    p.exited_ns = Some(t.ts_ns);
                    for span in p.threads.values_mut() {
                        span.end_ns.get_or_insert(t.ts_ns);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_slow_io(&mut self, io: &SlowIoEvent) {
        // A socket we saw connected (and not closed since) by its peer;
        // else what the fd is now: a file or pipe by its path, a socket by
        // its peer (the fd may have been closed and reused since the call:
        // events come in order, /proc is read later).
        let target = match self.fd_peers.get(&(io.tgid, io.fd)) {
            Some((_, name)) => name.clone(),
            None => match crate::target::fd_path(io.tgid, io.fd) {
                Some(path) if !path.starts_with("socket:") => path,
                _ => self
                    .peer_name(io.tgid, io.fd)
                    .unwrap_or_else(|| format!("fd {}", io.fd)),
            },
        };
        let stats = self
            .slow_io
            .entry(target.clone())
            .or_insert_with(|| SlowIoStats {
                reads: LatencyStats::ZERO,
                writes: LatencyStats::ZERO,
                bytes: 0,
            });
        let nr = u64::from(io.nr);
        let is_write = matches!(
            nr,
            sysno::WRITE | sysno::WRITEV | sysno::SENDTO | sysno::SENDMSG | sysno::SENDMMSG
        );
        if is_write {
            stats.writes.record(io.duration_ns);
        } else {
            stats.reads.record(io.duration_ns);
        }
        stats.bytes += io.ret.max(0) as u64;
        let site = self.sites.take(io.tid, io.start_ns);
        self.add_thread_time(io.tgid, io.tid, "io", io.duration_ns);
        let kind = if is_write { "slow_write" } else { "slow_read" };
        self.count_for_owner(io.tgid, kind, |_| target.clone(), io.duration_ns);
        self.note_slow(io.duration_ns, |this| SlowCall {
            start_ns: io.start_ns,
            pid: io.tgid,
            tid: io.tid,
            kind: "io",
            target: target.clone(),
            latency_ns: io.duration_ns,
            result: if io.ret >= 0 {
                format!("{} bytes", io.ret)
            } else {
                errno_name(-io.ret)
            },
            call_site: site.map(|id| this.sites.site(id).summary()),
        });
        if let Some(site) = site {
            self.by_site
                .entry(("io", target, site))
                .or_insert(LatencyStats::ZERO)
                .record(io.duration_ns);
        }
    }

    /// Counts a call in its thread's totals.
    /// Counts a call in its process name's and container's series, when
    /// those are kept (`by_owner`).
    fn count_for_owner(
        &mut self,
        pid: u32,
        kind: &'static str,
        target: impl FnOnce(&Self) -> String,
        ns: u64,
    ) {
        if self.by_owner.is_none() {
            return;
        }
        let (comm, container) = self
            .processes
            .get(&pid)
            .map(|p| (p.comm.clone(), p.container.clone()))
            .unwrap_or_default();
        let key = OwnedTarget {
            kind,
            target: target(self),
            comm,
            container,
        };
        if let Some(series) = self.by_owner.as_mut() {
            series.entry(key).or_insert(LatencyStats::ZERO).record(ns);
        }
    }

    fn add_thread_time(&mut self, pid: u32, tid: u32, kind: &'static str, ns: u64) {
        let t = self
            .by_thread
            .entry((pid, tid))
            .or_insert_with(|| ThreadTime {
                // Read once, when the thread is first seen: it may be gone later.
                name: std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                    .map(|s| s.trim_end().to_string())
                    .unwrap_or_default(),
                kinds: BTreeMap::new(),
            });
        let e = t.kinds.entry(kind).or_default();
        e.0 += 1;
        e.1 += ns;
    }

    /// Keeps a call for the event stream if it is slow enough (made only
    /// then: most calls are not).
    fn note_slow(&mut self, latency_ns: u64, make: impl FnOnce(&Self) -> SlowCall) {
        if self
            .slow_call_threshold_ns
            .is_some_and(|min| latency_ns >= min)
        {
            let call = make(self);
            self.slow_calls.push(call);
        }
    }

    /// Takes the kernel's idle counters, and adds the waits listener
    /// threads are in right now.
    pub fn set_idle(
        &mut self,
        idle: HashMap<u32, u64>,
        in_flight: &[(u32, ThreadEntry)],
        now_ns: u64,
    ) {
        self.idle = idle.into_iter().collect();
        let owners = self.thread_owners();
        for (tid, e) in in_flight {
            if e.listener == 0 || !crate::syscall_names::is_wait_for_work(e.nr as u32) {
                continue;
            }
            if let Some(&pid) = owners.get(tid) {
                *self.idle.entry(pid).or_default() +=
                    now_ns.saturating_sub(e.start_ns.max(self.start_ns));
            }
        }
    }

    /// Marks a process gone that exited without us seeing the event (it
    /// exited between the PID check and the attach).
    pub fn mark_exited(&mut self, pid: u32, now_ns: u64) {
        if let Some(p) = self.processes.get_mut(&pid)
            && p.exited_ns.is_none()
        {
            p.exited_ns = Some(now_ns);
            for span in p.threads.values_mut() {
                span.end_ns.get_or_insert(now_ns);
            }
        }
    }

    /// The other end of a process's socket, for people: the host name it
    /// was looked up by when we saw the lookup, and the address.
    pub fn peer_name(&self, pid: u32, fd: i32) -> Option<String> {
        if let Some((_, name)) = self.fd_peers.get(&(pid, fd)) {
            return Some(name.clone());
        }
        let peer = crate::target::socket_peer(pid, fd).map(Peer::Inet)?;
        Some(self.name_peer(&peer))
    }

    /// `api.example.com:443 (10.0.0.7)` when the address was connected to
    /// right after a lookup of that host, or only one traced lookup
    /// returned it; else the address.
    pub fn name_peer(&self, peer: &Peer) -> String {
        match peer {
            Peer::Inet(a) => {
                let host = match self.names_by_addr.get(a) {
                    Some(named) => named.as_deref(),
                    None => self.guess_host(a),
                };
                match host {
                    Some(host) => format!("{host}:{} ({})", a.port(), a.ip()),
                    None => a.to_string(),
                }
            }
            other => other.to_string(),
        }
    }

    /// The host of an address no connect named: the one host lookups
    /// returned its IP for, unless connects to other ports of that IP went
    /// to other names (or to the bare address): then services share the IP
    /// (127.0.0.1 above all) and the IP says nothing.
    fn guess_host(&self, a: &SocketAddr) -> Option<&str> {
        let host = self.dns.host_of(&a.ip())?;
        let agrees = self
            .names_by_addr
            .iter()
            .filter(|(other, _)| other.ip() == a.ip())
            .all(|(_, name)| {
                name.as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(host))
            });
        agrees.then_some(host)
    }

    /// Processes that have exited.
    pub fn exited_pids(&self) -> std::collections::HashSet<u32> {
        self.processes
            .iter()
            .filter(|&(&pid, p)| is_process(pid) && p.exited_ns.is_some())
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// Once more than `MAX_EXITED_PROCESS_ROWS` exited processes have rows,
    /// folds every exited process into the row of its name and container:
    /// thread time, idle time, per-thread rows and TLS connections move
    /// there, and what is kept per PID is dropped. Returns which PID went
    /// to which row, for the syscall stats and idle time kept elsewhere.
    pub fn fold_exited_processes(&mut self) -> HashMap<u32, u32> {
        let exited: Vec<u32> = self
            .processes
            .iter()
            .filter(|&(&pid, p)| is_process(pid) && p.exited_ns.is_some())
            .map(|(&pid, _)| pid)
            .collect();
        let mut moved = std::mem::take(&mut self.reused_pids_folded);
        if exited.len() <= MAX_EXITED_PROCESS_ROWS {
            return moved;
        }
        for pid in exited {
            if let Some(row) = self.fold_process(pid) {
                moved.insert(pid, row);
            }
        }
        moved
    }

    /// Folds one exited process into the row of its name and container;
    /// returns the row.
    fn fold_process(&mut self, pid: u32) -> Option<u32> {
        let end_ns = self.processes.get(&pid)?.exited_ns?;
        let wall_ns = self.wall_ns(pid, end_ns);
        let p = self.processes.remove(&pid)?;
        let row = tracer_common::name_row(&comm_bytes(&p.comm), p.cgroup_id);
        let folded = self.processes.entry(row).or_insert_with(|| ProcessState {
            comm: p.comm.clone(),
            parent: p.parent,
            container: p.container.clone(),
            cgroup_id: p.cgroup_id,
            ..Default::default()
        });
        folded.folded += 1;
        folded.exited_threads += p.threads.len() + p.exited_threads;
        folded.exited_threads_ns += wall_ns;
        folded.exited_ns = folded.exited_ns.max(p.exited_ns);
        let tids: Vec<u32> = self
            .by_thread
            .range((pid, 0)..=(pid, u32::MAX))
            .map(|(&(_, tid), _)| tid)
            .collect();
        for tid in tids {
            if let Some(gone) = self.by_thread.remove(&(pid, tid)) {
                merge_thread_time(&mut self.by_thread, row, gone);
            }
        }
        self.tls.forget_process(pid);
        self.fd_peers.retain(|&(owner, _), _| owner != pid);
        self.sites.forget_process(pid);
        Some(row)
    }

    /// A new process took the PID of one that exited and still has its
    /// row: that row folds away first (the collector moves its syscall
    /// stats with the next `fold_exited_processes`).
    fn make_room_for(&mut self, pid: u32) {
        if self
            .processes
            .get(&pid)
            .is_some_and(|p| p.exited_ns.is_some())
            && let Some(row) = self.fold_process(pid)
        {
            self.reused_pids_folded.insert(pid, row);
        }
    }

    /// Node mode: rows for the kernel's syscall stats kept by process name
    /// and cgroup, named from the kernel's row table (`name_of`).
    pub fn add_name_rows<'a>(
        &mut self,
        keys: impl Iterator<Item = &'a SyscallKey>,
        name_of: impl Fn(u32) -> Option<tracer_common::RowName>,
    ) {
        for key in keys {
            if is_process(key.tgid) || self.processes.contains_key(&key.tgid) {
                continue;
            }
            let Some(name) = name_of(key.tgid) else {
                continue;
            };
            self.processes.insert(
                key.tgid,
                ProcessState {
                    comm: comm_string(&name.comm),
                    container: self
                        .containers_by_cgroup
                        .get(&name.cgroup_id)
                        .cloned()
                        .unwrap_or_default(),
                    cgroup_id: name.cgroup_id,
                    ..Default::default()
                },
            );
        }
    }

    /// The process of each live thread.
    pub fn thread_owners(&self) -> HashMap<u32, u32> {
        self.processes
            .iter()
            .filter(|(_, p)| p.exited_ns.is_none())
            .flat_map(|(&pid, p)| p.threads.keys().map(move |&tid| (tid, pid)))
            .collect()
    }

    /// Re-reads the names of live processes (an exec changes them).
    pub fn refresh_names(&mut self) {
        for (&pid, p) in self.processes.iter_mut() {
            if is_process(pid)
                && p.exited_ns.is_none()
                && let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            {
                p.comm = comm.trim_end().to_string();
            }
        }
    }

    pub fn live_pids(&self) -> Vec<u32> {
        self.processes
            .iter()
            .filter(|&(&pid, p)| is_process(pid) && p.exited_ns.is_none())
            .map(|(&pid, _)| pid)
            .collect()
    }

    fn on_connect(&mut self, c: ConnectEvent) {
        let len = (c.addr_len as usize).min(c.addr.len());
        let record = ConnectRecord {
            pid: c.tgid,
            tid: c.tid,
            fd: c.fd,
            peer: parse_sockaddr(&c.addr[..len]),
            tcp: c.skaddr != 0,
            nonblocking: c.ret == -EINPROGRESS,
            outcome: if c.ret == 0 {
                ConnectOutcome::Connected
            } else {
                ConnectOutcome::Failed(errno_name(-c.ret))
            },
            start_ns: c.start_ns,
            syscall_ns: c.duration_ns,
            handshake_ns: None,
            call_site: self.sites.take(c.tid, c.start_ns),
        };
        if let Some(peer) = &record.peer {
            if let Peer::Inet(a) = peer {
                match self.dns.host_for_connect(record.tid, &a.ip()) {
                    ConnectName::Host(host) => {
                        self.names_by_addr.insert(*a, Some(host));
                    }
                    ConnectName::Address => {
                        self.names_by_addr.entry(*a).or_insert(None);
                    }
                    ConnectName::Unknown => {}
                }
            }
            let name = self.name_peer(peer);
            self.fd_peers
                .insert((record.pid, record.fd), (peer.clone(), name));
        }
        if c.skaddr == 0 {
            return self.finish_connect(record);
        }
        let early = self.early_handshakes.remove(&c.skaddr);
        if record.nonblocking {
            match early {
                Some(h) => self.finish_with_handshake(record, &h),
                None => {
                    self.awaiting_handshake.insert(c.skaddr, record);
                }
            }
        } else {
            let mut record = record;
            record.handshake_ns = early.map(|h| h.duration_ns);
            self.finish_connect(record);
        }
    }

    fn on_handshake(&mut self, h: HandshakeEvent) {
        match self.awaiting_handshake.remove(&h.skaddr) {
            Some(record) => self.finish_with_handshake(record, &h),
            None => {
                // A blocking connect's handshake ends inside the syscall, so
                // it arrives before the connect record: keep it for the join.
                let now = h.start_ns + h.duration_ns;
                self.early_handshakes
                    .retain(|_, e| now.saturating_sub(e.start_ns) < EARLY_HANDSHAKE_TTL_NS);
                self.early_handshakes.insert(h.skaddr, h);
            }
        }
    }

    fn finish_with_handshake(&mut self, mut record: ConnectRecord, h: &HandshakeEvent) {
        record.handshake_ns = Some(h.duration_ns);
        record.outcome = if h.new_state == TCP_ESTABLISHED {
            ConnectOutcome::Connected
        } else {
            ConnectOutcome::HandshakeFailed
        };
        self.finish_connect(record);
    }

    fn finish_connect(&mut self, record: ConnectRecord) {
        self.connects_total += 1;
        self.add_thread_time(record.pid, record.tid, "connect", record.latency_ns());
        if let Some(peer) = &record.peer {
            self.count_for_owner(
                record.pid,
                "connect",
                |this| this.name_peer(peer),
                record.latency_ns(),
            );
        }
        self.note_slow(record.latency_ns(), |this| SlowCall {
            start_ns: record.start_ns,
            pid: record.pid,
            tid: record.tid,
            kind: "connect",
            target: record
                .peer
                .as_ref()
                .map_or_else(|| "?".to_string(), |p| this.name_peer(p)),
            latency_ns: record.latency_ns(),
            result: record.outcome.to_string(),
            call_site: record.call_site.map(|id| this.sites.site(id).summary()),
        });
        add_to_peers(&mut self.peers, &record);
        if let (Some(id), Some(peer)) = (record.call_site, &record.peer) {
            self.by_site
                .entry(("connect", self.name_peer(peer), id))
                .or_insert(LatencyStats::ZERO)
                .record(record.latency_ns());
        }
        let pos = self
            .slowest_connects
            .partition_point(|r| r.latency_ns() >= record.latency_ns());
        if pos < SLOWEST_KEPT {
            self.slowest_connects.insert(pos, record);
            self.slowest_connects.truncate(SLOWEST_KEPT);
        }
    }

    /// Ends the run: connects not finished are counted as in progress, with
    /// the time they have waited so far.
    pub fn finish(&mut self, now_ns: u64) {
        let mut unfinished: Vec<_> = self.awaiting_handshake.drain().map(|(_, r)| r).collect();
        unfinished.append(&mut self.in_flight_connects);
        for mut record in unfinished {
            record.outcome = ConnectOutcome::InProgress;
            record.handshake_ns = Some(now_ns.saturating_sub(record.start_ns));
            self.finish_connect(record);
        }
        let lookups = std::mem::take(&mut self.in_flight_lookups);
        self.dns.finish(lookups);
    }

    /// Replaces the syscall aggregates with a fresh copy from the kernel, and
    /// records which syscalls are in progress (threads blocked right now).
    /// `read_memory(pid, address, length)` reads the target's memory: the
    /// address an unfinished connect() is trying.
    pub fn set_syscalls(
        &mut self,
        stats: BTreeMap<SyscallKey, LatencyStats>,
        in_flight: &[(u32, ThreadEntry)],
        now_ns: u64,
        read_memory: impl Fn(u32, u64, usize) -> Option<Vec<u8>>,
    ) {
        self.syscalls = stats;
        self.in_flight.clear();
        self.in_flight_connects.clear();
        let tid_to_pid = self.thread_owners();
        for (tid, entry) in in_flight {
            let Some(&pid) = tid_to_pid.get(tid) else {
                continue;
            };
            if entry.start_ns >= now_ns {
                continue;
            }
            let since = entry.start_ns.max(self.start_ns);
            if entry.nr == tracer_common::sysno::CONNECT {
                let len = (entry.args[2] as usize).min(tracer_common::SOCKADDR_MAX);
                let peer =
                    read_memory(pid, entry.args[1], len).and_then(|bytes| parse_sockaddr(&bytes));
                // Only a stream connect blocks: one to an IP address is TCP.
                let tcp = entry.skaddr != 0 || matches!(peer, Some(Peer::Inet(_)));
                self.in_flight_connects.push(ConnectRecord {
                    pid,
                    tid: *tid,
                    fd: entry.args[0] as i32,
                    peer,
                    tcp,
                    nonblocking: false,
                    outcome: ConnectOutcome::InProgress,
                    start_ns: entry.start_ns,
                    syscall_ns: now_ns.saturating_sub(entry.start_ns),
                    handshake_ns: None,
                    call_site: self.sites.take(*tid, entry.start_ns),
                });
            }
            *self
                .in_flight
                .entry(SyscallKey {
                    tgid: pid,
                    nr: entry.nr as u32,
                })
                .or_default() += now_ns.saturating_sub(since);
        }
    }

    /// Sum of the traced threads' lifetimes while traced, per process.
    pub fn wall_ns(&self, pid: u32, now_ns: u64) -> u64 {
        let Some(p) = self.processes.get(&pid) else {
            return 0;
        };
        p.exited_threads_ns
            + p.threads
                .values()
                .map(|s| {
                    let start = s.start_ns.max(self.start_ns);
                    s.end_ns.unwrap_or(now_ns).min(now_ns).saturating_sub(start)
                })
                .sum::<u64>()
    }
}

/// A process name as the kernel keeps it: at most 15 bytes, NUL-padded.
fn comm_bytes(comm: &str) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let len = comm.len().min(15);
    bytes[..len].copy_from_slice(&comm.as_bytes()[..len]);
    bytes
}

fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// `ECONNREFUSED` for 111, and so on.
pub fn errno_name(errno: i64) -> String {
    syscalls::Errno::new(errno as i32)
        .name_and_description()
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| format!("errno {errno}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockaddr_in(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&ip);
        b
    }

    #[test]
    fn parses_socket_addresses() {
        assert_eq!(
            parse_sockaddr(&sockaddr_in([127, 0, 0, 1], 443)),
            Some(Peer::Inet("127.0.0.1:443".parse().unwrap()))
        );
        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v6[23] = 1;
        assert_eq!(
            parse_sockaddr(&v6),
            Some(Peer::Inet("[::1]:8080".parse().unwrap()))
        );
        let mut un = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        un.extend_from_slice(b"/run/mysqld/mysqld.sock\0junk");
        assert_eq!(
            parse_sockaddr(&un),
            Some(Peer::Unix("/run/mysqld/mysqld.sock".into()))
        );
        let mut abs = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        abs.extend_from_slice(b"\0name");
        assert_eq!(parse_sockaddr(&abs), Some(Peer::Unix("@name".into())));
        assert_eq!(parse_sockaddr(&[1]), None);
        assert_eq!(parse_sockaddr(&sockaddr_in([1, 2, 3, 4], 5)[..6]), None);
    }

    fn connect_event(skaddr: u64, ret: i64, start: u64, dur: u64) -> ConnectEvent {
        let mut addr = [0u8; 112];
        addr[..16].copy_from_slice(&sockaddr_in([127, 0, 0, 1], 9000));
        ConnectEvent {
            kind: 1,
            tgid: 10,
            tid: 11,
            fd: 3,
            ret,
            start_ns: start,
            duration_ns: dur,
            skaddr,
            addr_len: 16,
            _pad: 0,
            addr,
        }
    }

    fn handshake(skaddr: u64, state: u32, start: u64, dur: u64) -> HandshakeEvent {
        HandshakeEvent {
            kind: 2,
            tgid: 10,
            tid: 11,
            new_state: state,
            skaddr,
            start_ns: start,
            duration_ns: dur,
        }
    }

    #[test]
    fn nonblocking_connect_takes_the_handshake_time_in_either_order() {
        let mut agg = Aggregate::new(0);
        // connect record first, handshake later
        agg.apply(Event::Connect(connect_event(1, -EINPROGRESS, 100, 5)));
        assert_eq!(agg.connects_total, 0, "waits for its handshake");
        agg.apply(Event::Handshake(handshake(
            1,
            TCP_ESTABLISHED,
            101,
            1_000_000,
        )));
        // handshake first (completed inside the call), then the record
        agg.apply(Event::Handshake(handshake(2, 7, 200, 3_000)));
        agg.apply(Event::Connect(connect_event(2, -EINPROGRESS, 199, 5)));
        assert_eq!(agg.connects_total, 2);
        let slow = &agg.slowest_connects;
        assert_eq!(slow[0].latency_ns(), 1_000_000);
        assert_eq!(slow[0].outcome, ConnectOutcome::Connected);
        assert_eq!(slow[1].outcome, ConnectOutcome::HandshakeFailed);
    }

    #[test]
    fn blocking_connect_keeps_syscall_time_and_errno() {
        let mut agg = Aggregate::new(0);
        agg.apply(Event::Handshake(handshake(3, 7, 10, 50)));
        agg.apply(Event::Connect(connect_event(3, -111, 9, 80)));
        let r = &agg.slowest_connects[0];
        assert_eq!(r.outcome, ConnectOutcome::Failed("ECONNREFUSED".into()));
        assert_eq!((r.latency_ns(), r.handshake_ns), (80, Some(50)));
        let peer = Peer::Inet("127.0.0.1:9000".parse().unwrap());
        assert_eq!(agg.peers[&peer].latency.count, 1);
    }

    #[test]
    fn unanswered_handshake_is_pending_at_the_end() {
        let mut agg = Aggregate::new(0);
        agg.apply(Event::Connect(connect_event(4, -EINPROGRESS, 1_000, 5)));
        agg.finish(5_000);
        let r = &agg.slowest_connects[0];
        assert_eq!(r.outcome, ConnectOutcome::InProgress);
        assert_eq!(r.latency_ns(), 4_000);
    }

    #[test]
    fn wall_time_counts_each_thread_while_traced() {
        let mut agg = Aggregate::new(1_000);
        agg.add_target(10, "app".into(), &[10, 11]);
        agg.apply(Event::Task(TaskEvent {
            kind: 3,
            what: TASK_NEW_THREAD,
            tgid: 10,
            tid: 10,
            child: 12,
            _pad: 0,
            ts_ns: 2_000,
            comm: [0; 16],
        }));
        agg.apply(Event::Task(TaskEvent {
            kind: 3,
            what: TASK_EXIT_THREAD,
            tgid: 10,
            tid: 11,
            child: 0,
            _pad: 0,
            ts_ns: 3_000,
            comm: *b"app\0\0\0\0\0\0\0\0\0\0\0\0\0",
        }));
        // thread 10: 1000..5000, 11: 1000..3000, 12: 2000..5000
        assert_eq!(agg.wall_ns(10, 5_000), 4_000 + 2_000 + 3_000);
        // The exited thread is folded: its time stays, its entry goes.
        let p = &agg.processes[&10];
        assert_eq!((p.threads.len(), p.exited_threads), (2, 1));
        assert!(!p.threads.contains_key(&11));
    }

    #[test]
    fn exited_processes_fold_by_name_once_there_are_many() {
        let task = |what, tgid, tid, child, ts_ns, name: &str| {
            let mut comm = [0u8; 16];
            comm[..name.len()].copy_from_slice(name.as_bytes());
            Event::Task(TaskEvent {
                kind: 3,
                what,
                tgid,
                tid,
                child,
                _pad: 0,
                ts_ns,
                comm,
            })
        };
        let mut agg = Aggregate::new(0);
        agg.add_target(1, "shell".into(), &[1]);
        let children = MAX_EXITED_PROCESS_ROWS as u32 + 44;
        for i in 0..children {
            let (pid, name) = (100 + i, if i % 2 == 0 { "sh" } else { "curl" });
            agg.apply(task(TASK_NEW_PROCESS, 1, 1, pid, 1_000, name));
            agg.apply(task(TASK_EXIT_PROCESS, pid, pid, 0, 1_500, name));
        }
        // Under the limit nothing folds: each child keeps its row.
        let mut few = Aggregate::new(0);
        few.add_target(1, "shell".into(), &[1]);
        few.apply(task(TASK_NEW_PROCESS, 1, 1, 7, 1_000, "sh"));
        few.apply(task(TASK_EXIT_PROCESS, 7, 7, 0, 1_500, "sh"));
        assert!(few.fold_exited_processes().is_empty());
        assert!(few.processes.contains_key(&7));

        let moved = agg.fold_exited_processes();
        assert_eq!(moved.len(), children as usize);
        // The live shell, and one row per name.
        assert_eq!(agg.processes.len(), 3);
        let rows: Vec<&ProcessState> = agg
            .processes
            .range(NAME_ROW_BASE..)
            .map(|(_, p)| p)
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows.iter().map(|p| p.folded).sum::<usize>(),
            children as usize
        );
        // Each child lived 500 ns with one thread: the time is all kept.
        let folded_ns: u64 = agg
            .processes
            .range(NAME_ROW_BASE..)
            .map(|(&row, _)| agg.wall_ns(row, 10_000))
            .sum();
        assert_eq!(folded_ns, 500 * children as u64);
        assert!(moved.values().all(|&row| row >= NAME_ROW_BASE));
        // Folding again finds nothing new.
        assert!(agg.fold_exited_processes().is_empty());

        // A PID that comes back is a new, live process; the one that had
        // it folds away at once.
        few.apply(task(TASK_NEW_PROCESS, 1, 1, 7, 2_000, "sh"));
        assert_eq!(few.processes[&7].exited_ns, None);
        let moved = few.fold_exited_processes();
        let row = moved[&7];
        assert_eq!(few.processes[&row].folded, 1);
        assert_eq!(few.wall_ns(row, 10_000), 500);
    }
}
