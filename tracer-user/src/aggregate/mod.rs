//! Aggregate: the state a report is drawn from. It takes the collector's
//! events in order and hands each to its kind's state (`dns`, `connect`,
//! `tls`, `slow_io`), then accounts the finished call the same way for
//! every kind (`account`): its thread's time, its series, the event
//! stream, its call site. Per process: its threads' lifetimes (the
//! denominator of every share, `processes`) and its syscalls (aggregated in
//! the kernel, copied here).

mod names;
mod processes;
mod tls;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
};

use serde::Serialize;
use tracer_common::{
    LatencyStats, LookupEvent, LookupFn, SlowIoEvent, SyscallKey, ThreadEntry, lookup_started_by,
};

pub use self::processes::{ProcessState, is_process};
use crate::{
    attribute::Attributor,
    connect::{ConnectOutcome, ConnectRecord, ConnectState},
    decode::Event,
    dns::{DnsState, LookupRecord},
    http::{HttpState, RequestCall},
    kind::CallKind,
    peer::{Peer, parse_sockaddr},
    slow_io::SlowIoStats,
    tls::TlsState,
};

#[derive(Debug, Default)]
pub struct Aggregate {
    /// Monotonic time tracing started.
    start_ns: u64,
    processes: BTreeMap<u32, ProcessState>,
    syscalls: BTreeMap<SyscallKey, LatencyStats>,
    /// Syscall time in progress when the snapshot was taken: (pid, nr) -> ns.
    in_flight: BTreeMap<SyscallKey, u64>,
    connects: ConnectState,
    dns: DnsState,
    /// Lookups inside getaddrinfo & co. when the snapshot was taken.
    in_flight_lookups: Vec<LookupRecord>,
    tls: TlsState,
    /// The peer each (process, fd) connected to, and its name for people,
    /// until the fd is closed.
    fd_peers: HashMap<(u32, i32), (Peer, String)>,
    /// Host names of the addresses connected to, from the lookup the
    /// connecting thread made just before; `None` for an address the
    /// program connected to by number, or by several names.
    names_by_addr: HashMap<SocketAddr, Option<String>>,
    /// Processes that mapped a file executable since the last look: they
    /// may have loaded a library to probe.
    mapped_new_code: BTreeSet<u32>,
    /// Processes that ran execve since the last look: the kernel dropped
    /// their unwind tables, and the probes must write the new program's.
    execed: Vec<u32>,
    /// Node mode: processes the kernel started tracing since the last look
    /// (PID, name); the session lists their threads and probes their code.
    adopted: Vec<(u32, String)>,
    /// Call sites, and the stacks waiting for their events.
    sites: Attributor,
    /// Latency per (kind, target, call site) for lookups, connects and
    /// slow reads and writes.
    by_site: BTreeMap<(CallKind, String, u32), LatencyStats>,
    /// Slow reads and writes (over the threshold) per target: the peer of a
    /// socket, or the path of a pipe or file.
    slow_io: BTreeMap<String, SlowIoStats>,
    /// Idle time per process (listener threads waiting for work), as of
    /// the last snapshot, in-flight waits included.
    idle: BTreeMap<u32, u64>,
    /// Requests served per process (row), timed on the connections it
    /// accepted: the busy time of a server.
    requests: BTreeMap<u32, tracer_common::RequestTime>,
    /// With `--events`: calls at least this slow are kept in `slow_calls`
    /// until taken.
    slow_call_threshold_ns: Option<u64>,
    slow_calls: Vec<SlowCall>,
    /// Calls and time per thread and kind of call (lookups, connects, SSL
    /// calls, slow reads and writes), for `--by thread`.
    by_thread: BTreeMap<(u32, u32), ThreadTime>,
    /// With `serve --labels container|pod`: latency per kind, target,
    /// process name and container, the series those labels split (`None`
    /// unless asked: they multiply the series by the containers).
    by_owner: Option<BTreeMap<OwnedTarget, LatencyStats>>,
    /// Exited processes folded because a new process took their PID, for
    /// the next `fold_exited_processes` to report.
    reused_pids_folded: HashMap<u32, u32>,
    /// The container of each cgroup seen, for the rows the kernel names
    /// by cgroup id.
    containers_by_cgroup: HashMap<u64, crate::container::ContainerInfo>,
    /// HTTP requests by endpoint, and the calls made for each.
    http: HttpState,
}

/// A lookup, connect, SSL call or slow read or write series of one process
/// name in one container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnedTarget {
    pub kind: CallKind,
    pub target: String,
    pub comm: String,
    pub container: crate::container::ContainerInfo,
}

/// One thread's calls: its name when first seen, and per kind (count, ns).
#[derive(Debug, Clone, Default)]
pub struct ThreadTime {
    pub name: String,
    /// Slow reads and writes together (`CallKind::row`).
    pub kinds: BTreeMap<CallKind, (u64, u64)>,
}

/// A finished call of any kind, as `Aggregate::account` counts it.
struct FinishedCall {
    kind: CallKind,
    pid: u32,
    tid: u32,
    start_ns: u64,
    latency_ns: u64,
    /// What it went to, as its series are keyed: a host (lower case), a
    /// peer, a file; `None` when not known.
    target: Option<String>,
    /// The socket or file it was made on, when it has one: a call on the
    /// connection a request came in on is the server's, answering it.
    fd: Option<i32>,
    site: Option<u32>,
    /// Whether `by_site` keeps it under its call site (an SSL call's site
    /// is kept with its connection instead).
    per_site: bool,
}

/// One call at or over the `--events` threshold: a line of the event stream.
#[derive(Debug, Clone, Serialize)]
pub struct SlowCall {
    /// When the call started: CLOCK_MONOTONIC nanoseconds.
    pub start_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// As rows name it: slow reads and writes are `io`.
    pub kind: CallKind,
    /// Host, peer, or file.
    pub target: String,
    pub latency_ns: u64,
    /// ok, an error name, or bytes moved.
    pub result: String,
    /// The program's own innermost frame and the call, where known.
    pub call_site: Option<String>,
}

impl Aggregate {
    pub fn new(start_ns: u64) -> Self {
        Self {
            start_ns,
            ..Default::default()
        }
    }

    // Read access for the later stages (render, export, session).
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }
    pub fn processes(&self) -> &BTreeMap<u32, ProcessState> {
        &self.processes
    }
    pub fn syscalls(&self) -> &BTreeMap<SyscallKey, LatencyStats> {
        &self.syscalls
    }
    pub fn in_flight(&self) -> &BTreeMap<SyscallKey, u64> {
        &self.in_flight
    }
    pub fn connects(&self) -> &ConnectState {
        &self.connects
    }
    pub fn dns(&self) -> &DnsState {
        &self.dns
    }
    pub fn in_flight_lookups(&self) -> &[LookupRecord] {
        &self.in_flight_lookups
    }
    pub fn tls(&self) -> &TlsState {
        &self.tls
    }
    pub fn sites(&self) -> &Attributor {
        &self.sites
    }
    pub fn by_site(&self) -> &BTreeMap<(CallKind, String, u32), LatencyStats> {
        &self.by_site
    }
    pub fn slow_io(&self) -> &BTreeMap<String, SlowIoStats> {
        &self.slow_io
    }
    pub fn idle(&self) -> &BTreeMap<u32, u64> {
        &self.idle
    }
    pub fn requests(&self) -> &BTreeMap<u32, tracer_common::RequestTime> {
        &self.requests
    }
    pub fn by_thread(&self) -> &BTreeMap<(u32, u32), ThreadTime> {
        &self.by_thread
    }
    pub fn by_owner(&self) -> Option<&BTreeMap<OwnedTarget, LatencyStats>> {
        self.by_owner.as_ref()
    }

    /// Keeps the series per process name and container (`serve --labels`).
    pub fn keep_owner_series(&mut self) {
        self.by_owner = Some(BTreeMap::new());
    }

    /// Keeps the calls at least this slow for the event stream (`--events`).
    pub fn keep_slow_calls(&mut self, min_ns: u64) {
        self.slow_call_threshold_ns = Some(min_ns);
        self.http.keep_finished(min_ns);
    }

    /// The HTTP requests finished since the last time, with `--events`,
    /// as span trees.
    pub fn take_request_spans(&mut self) -> Vec<serde_json::Value> {
        self.http.take_finished_spans()
    }

    /// The slow calls kept since the last time.
    pub fn take_slow_calls(&mut self) -> Vec<SlowCall> {
        std::mem::take(&mut self.slow_calls)
    }

    /// Node mode: the processes the kernel adopted since the last time.
    pub fn take_adopted(&mut self) -> Vec<(u32, String)> {
        std::mem::take(&mut self.adopted)
    }

    /// Marks a process as having code to probe (a library mapped, an exec).
    pub fn note_new_code(&mut self, pid: u32) {
        self.mapped_new_code.insert(pid);
    }

    /// The processes that ran execve since the last time.
    pub fn take_execed(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.execed)
    }

    /// The processes with new code since the last time.
    pub fn take_new_code(&mut self) -> BTreeSet<u32> {
        std::mem::take(&mut self.mapped_new_code)
    }

    pub fn http(&self) -> &HttpState {
        &self.http
    }

    /// Keeps at most `n` HTTP routes (`--max-routes`); the rest are `other`.
    pub fn set_max_routes(&mut self, n: usize) {
        self.http.set_max_routes(n);
    }

    pub fn sites_mut(&mut self) -> &mut Attributor {
        &mut self.sites
    }

    /// The requests served per process, as of now (from the kernel).
    pub fn set_requests(&mut self, requests: BTreeMap<u32, tracer_common::RequestTime>) {
        self.requests = requests;
    }

    /// The lookups open right now: (pid, tid, function, start, host).
    pub fn set_open_lookups(&mut self, open: &[(u32, u32, u32, u64, String)], now_ns: u64) {
        self.in_flight_lookups = self.dns.in_flight(open, now_ns);
        for r in &mut self.in_flight_lookups {
            let site = self.sites.peek(r.tid, r.start_ns);
            r.call_site = site.map(|id| self.sites.site_label(id));
        }
    }

    /// Applies a batch of events in order, after reading the Python code
    /// objects its stacks name: those are read from the live process,
    /// which may exit any moment, while unwinding native stacks is slow
    /// the first time a library is seen.
    pub fn apply_batch(&mut self, batch: &mut crate::decode::Batch) {
        for (tgid, py_status, py) in batch.python_frames() {
            self.sites.prefetch_python(tgid, py_status, &py);
        }
        batch.for_each_event(|ev| self.apply(ev));
    }

    pub fn apply(&mut self, ev: Event<'_>) {
        match ev {
            Event::Connect(c) => {
                let site = self.sites.take(c.tid, c.start_ns);
                let record = crate::connect::record_of(&c, site);
                self.name_connected_socket(&record);
                if let Some(done) = self.connects.on_connect(c.skaddr, record) {
                    self.finish_connect(done);
                }
            }
            Event::Handshake(h) => {
                if let Some(done) = self.connects.on_handshake(h) {
                    self.finish_connect(done);
                }
            }
            Event::Task(t) => self.on_task(t),
            Event::LookupStart(l) => {
                let go = LookupFn::from_u32(l.func).is_some_and(LookupFn::is_go);
                self.dns.on_lookup_start(l.tgid, l.tid, go, l.start_ns);
            }
            Event::Lookup(l) => self.on_lookup(l),
            Event::DnsPacket(p) => self.dns.on_packet(p),
            Event::DnsWait(w) => self.dns.on_wait(&w),
            Event::Tls(t) => self.on_tls(&t),
            Event::TlsWait(w) => self.tls.on_wait(&w),
            Event::ExecMap(m) => {
                self.mapped_new_code.insert(m.tgid);
            }
            Event::Stack(st) => {
                self.start_lookup_of_stack(st.reason, st.tgid, st.tid, st.key_ns);
                self.sites.on_stack(st);
            }
            Event::Frames(f) => {
                self.start_lookup_of_stack(f.reason, f.tgid, f.tid, f.key_ns);
                self.sites.on_frames(f);
            }
            Event::SlowIo(io) => self.on_slow_io(&io),
            Event::FdClosed(c) => {
                self.fd_peers.remove(&(c.tgid, c.fd));
                self.tls.on_close(c.tgid, c.fd);
            }
            Event::RequestLine(l) => self.http.on_line(l),
            Event::RequestEnd(e) => self.http.on_end(&e),
        }
    }

    /// A stack record taken for a lookup is also the lookup's start (no
    /// `LookupStartEvent` follows it).
    fn start_lookup_of_stack(&mut self, reason: u32, tgid: u32, tid: u32, start_ns: u64) {
        if let Some(go) = lookup_started_by(reason) {
            self.dns.on_lookup_start(tgid, tid, go, start_ns);
        }
    }

    fn on_lookup(&mut self, l: &LookupEvent) {
        let site = self.sites.take(l.tid, l.start_ns);
        let sites = &self.sites;
        let label = || site.map(|id| sites.site_label(id));
        if let Some(record) = self.dns.on_lookup(l, label) {
            self.account_lookup(record, site);
        }
    }

    /// Counts a finished lookup under its host in lower case (its series'
    /// key), shown as the program wrote it.
    fn account_lookup(&mut self, record: LookupRecord, site: Option<u32>) {
        let LookupRecord {
            pid,
            tid,
            start_ns,
            duration_ns,
            host,
            result,
            ..
        } = record;
        // Most hosts are written in lower case: the name is then moved,
        // not copied.
        let (target, written) = match crate::dns::lowercase(&host) {
            std::borrow::Cow::Borrowed(_) => (host, None),
            std::borrow::Cow::Owned(lower) => (lower, Some(host)),
        };
        let call = FinishedCall {
            kind: CallKind::Lookup,
            pid,
            tid,
            start_ns,
            latency_ns: duration_ns,
            target: Some(target),
            fd: None,
            site,
            per_site: true,
        };
        self.account(call, |_, call| {
            let host = written.unwrap_or_else(|| call.target.clone().unwrap_or_default());
            (host, result.into_owned())
        });
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
        let kind = self.slow_io.entry(target.clone()).or_default().record(io);
        let call = FinishedCall {
            kind,
            pid: io.tgid,
            tid: io.tid,
            start_ns: io.start_ns,
            latency_ns: io.duration_ns,
            target: Some(target),
            fd: Some(io.fd),
            site: self.sites.take(io.tid, io.start_ns),
            per_site: true,
        };
        let ret = io.ret;
        self.account(call, |_, call| {
            let result = if ret >= 0 {
                format!("{ret} bytes")
            } else {
                crate::syscall_names::errno_name(-ret)
            };
            (call.target.clone().unwrap_or_default(), result)
        });
    }

    fn finish_connect(&mut self, record: ConnectRecord) {
        let call = FinishedCall {
            kind: CallKind::Connect,
            pid: record.pid,
            tid: record.tid,
            start_ns: record.start_ns,
            latency_ns: record.latency_ns(),
            target: match self.fd_peers.get(&(record.pid, record.fd)) {
                Some((_, name)) => Some(name.clone()),
                None => record.peer.as_ref().map(|p| self.name_peer(p)),
            },
            fd: Some(record.fd),
            site: record.call_site,
            per_site: true,
        };
        self.account(call, |_, call| {
            let shown = call.target.clone().unwrap_or_else(|| "?".to_string());
            (shown, record.outcome.to_string())
        });
        self.connects.count(record);
    }

    /// Counts a finished call of any kind: in its thread's time, in its
    /// process name's series (`by_owner`), in the event stream when slow
    /// enough, and under its call site. `shown` gives the target and
    /// result as the event stream says them, made only when needed: a
    /// call costs the collector no allocation it does not keep (at 10,000
    /// lookups a second, malloc and free were a third of its time).
    fn account(
        &mut self,
        call: FinishedCall,
        shown: impl FnOnce(&Self, &FinishedCall) -> (String, String),
    ) {
        self.add_thread_time(call.pid, call.tid, call.kind.row(), call.latency_ns);
        if self.http.serving(call.pid) {
            self.http.on_call(
                (call.pid, call.tid, call.fd),
                RequestCall {
                    kind: call.kind,
                    target: call.target.clone().unwrap_or_else(|| "?".to_string()),
                    start_ns: call.start_ns,
                    latency_ns: call.latency_ns,
                    site: call.site,
                },
            );
        }
        if let Some(target) = &call.target {
            self.count_for_owner(call.pid, call.kind, target, call.latency_ns);
        }
        self.note_slow(call.latency_ns, |this| {
            let (target, result) = shown(this, &call);
            SlowCall {
                start_ns: call.start_ns,
                pid: call.pid,
                tid: call.tid,
                kind: call.kind.row(),
                target,
                latency_ns: call.latency_ns,
                result,
                call_site: call.site.map(|id| this.sites.site(id).summary()),
            }
        });
        if call.per_site
            && let (Some(id), Some(target)) = (call.site, call.target)
        {
            // The key's name is the call's own, moved in: looked up
            // without copying it.
            let key = (call.kind.row(), target, id);
            match self.by_site.get_mut(&key) {
                Some(stats) => stats.record(call.latency_ns),
                None => {
                    let mut stats = LatencyStats::ZERO;
                    stats.record(call.latency_ns);
                    self.by_site.insert(key, stats);
                }
            }
        }
    }

    /// Counts a call in its process name's and container's series, when
    /// those are kept (`by_owner`).
    fn count_for_owner(&mut self, pid: u32, kind: CallKind, target: &str, ns: u64) {
        let Some(series) = self.by_owner.as_mut() else {
            return;
        };
        let (comm, container) = self
            .processes
            .get(&pid)
            .map(|p| (p.comm.clone(), p.container.clone()))
            .unwrap_or_default();
        let key = OwnedTarget {
            kind,
            target: target.to_string(),
            comm,
            container,
        };
        series.entry(key).or_insert(LatencyStats::ZERO).record(ns);
    }

    /// Counts a call in its thread's totals.
    fn add_thread_time(&mut self, pid: u32, tid: u32, kind: CallKind, ns: u64) {
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

    /// Ends the run: connects not finished are counted as in progress, with
    /// the time they have waited so far.
    pub fn finish(&mut self, now_ns: u64) {
        for record in self.connects.take_unfinished(now_ns) {
            self.finish_connect(record);
        }
        // Lookups not finished count as far as they went, as connects do.
        let lookups = std::mem::take(&mut self.in_flight_lookups);
        for record in &lookups {
            let site = self.sites.take(record.tid, record.start_ns);
            self.account_lookup(record.clone(), site);
        }
        self.dns.finish(lookups);
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
        self.connects.in_flight.clear();
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
                self.connects.in_flight.push(ConnectRecord {
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
}

#[cfg(test)]
mod tests;
