//! Collect: everything the kernel side hands us. Single events come through
//! the ring buffer (taken out by `intake`'s thread when the kernel wakes it,
//! and drained here on its word and on a timer); aggregates are read from
//! the maps on demand; loss counters are read with them.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow};
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use tracer_common::{
    CONN_ANSWERED, CONN_IN_REQUEST, DnsServer, FdKey, GoLookupState, GoroutineKey, LatencyStats,
    LookupState, LostCounter, RequestTime, ServerConn, SyscallKey, ThreadEntry,
};

use crate::{
    attach::Probes,
    decode::{Batch, Decoder},
    intake::Intake,
};

/// Counters of things the kernel side could not record (see
/// `tracer_common::LostCounter`), plus records user space could not decode.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LostCounts {
    pub ring_full: u64,
    pub syscall_map_full: u64,
    pub thread_map_full: u64,
    pub handshake_map_full: u64,
    pub process_map_full: u64,
    pub lookup_map_full: u64,
    pub dns_socket_map_full: u64,
    pub tls_call_map_full: u64,
    pub undecodable: u64,
}

impl LostCounts {
    pub fn total(&self) -> u64 {
        self.ring_full
            + self.syscall_map_full
            + self.thread_map_full
            + self.handshake_map_full
            + self.process_map_full
            + self.lookup_map_full
            + self.dns_socket_map_full
            + self.tls_call_map_full
            + self.undecodable
    }
}

/// Bytes of records that the buffers between the reader and the collector
/// keep room for between drains (10,000 lookups a second with call sites
/// send about half a MiB in the 100 ms between two drains).
const KEPT_BYTES: usize = 1 << 20;

pub struct Collector {
    /// The ring buffer, read by a thread of its own.
    intake: Intake,
    /// The records of one drain as the reader took them, kept between
    /// drains for its memory (it goes back to the reader at the next).
    raw: Vec<u8>,
    /// Decodes the records of each drain, lending the large ones.
    decoder: Decoder,
    /// Records of a kind we do not know.
    undecodable: u64,
    syscall_stats: HashMap<MapData, SyscallKey, LatencyStats>,
    thread_entries: HashMap<MapData, u32, ThreadEntry>,
    lookups: HashMap<MapData, u32, LookupState>,
    go_lookups: HashMap<MapData, GoroutineKey, GoLookupState>,
    dns_sockets: HashMap<MapData, FdKey, DnsServer>,
    tls_sockets: HashMap<MapData, FdKey, u8>,
    connected_fds: HashMap<MapData, FdKey, u8>,
    row_names: HashMap<MapData, u32, tracer_common::RowName>,
    idle: HashMap<MapData, u32, u64>,
    server_conns: HashMap<MapData, FdKey, ServerConn>,
    request_time: HashMap<MapData, u32, RequestTime>,
    lost: PerCpuArray<MapData, u64>,
    /// Syscall stats of processes that exited, moved out of the kernel map
    /// so that its size bounds the live processes, not all there ever were
    /// (node mode runs for days).
    retired: BTreeMap<SyscallKey, LatencyStats>,
    /// Idle time of processes that exited, moved out of the kernel map
    /// likewise.
    retired_idle: std::collections::HashMap<u32, u64>,
    /// Requests served by processes that exited, likewise.
    retired_requests: std::collections::HashMap<u32, RequestTime>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    probes: &mut Probes,
    name: &str,
) -> anyhow::Result<T> {
    let map = probes
        .ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("opening map {name}"))
}

impl Collector {
    pub fn new(probes: &mut Probes) -> anyhow::Result<Self> {
        let ring: RingBuf<MapData> = take(probes, "EVENTS")?;
        Ok(Self {
            intake: Intake::start(ring)?,
            raw: Vec::new(),
            decoder: Decoder::default(),
            undecodable: 0,
            syscall_stats: take(probes, "SYSCALL_STATS")?,
            thread_entries: take(probes, "THREAD_ENTRIES")?,
            lookups: take(probes, "LOOKUPS")?,
            go_lookups: take(probes, "GO_LOOKUPS")?,
            dns_sockets: take(probes, "DNS_SOCKETS")?,
            tls_sockets: take(probes, "TLS_SOCKETS")?,
            connected_fds: take(probes, "CONNECTED_FDS")?,
            row_names: take(probes, "ROW_NAMES")?,
            idle: take(probes, "IDLE_NS")?,
            server_conns: take(probes, "SERVER_CONNS")?,
            request_time: take(probes, "REQUEST_TIME")?,
            lost: take(probes, "LOST")?,
            retired: BTreeMap::new(),
            retired_idle: Default::default(),
            retired_requests: Default::default(),
        })
    }

    /// Waits until the ring buffer's reader took records.
    pub async fn readable(&self) {
        self.intake.woken().await;
    }

    /// Ring buffer records taken so far.
    pub fn events_seen(&self) -> u64 {
        self.intake.lock().seen
    }

    /// Hands every ring buffer record written so far to `sink`, in order,
    /// as one batch (so that the fast, time-critical part of a batch can be
    /// done before the slow part: see `Aggregate::apply_batch`): what the
    /// reader thread took, then the ring's rest. The batch's memory is
    /// kept for the next drain rather than grown anew each time.
    pub fn drain(&mut self, sink: impl FnOnce(&mut Batch)) {
        // Empty (cleared at the end of each drain): the reader goes on in it.
        let raw = &mut self.raw;
        {
            let mut taken = self.intake.lock();
            taken.take_pending();
            // The reader goes on into the last drain's (emptied) memory.
            std::mem::swap(raw, &mut taken.bytes);
        }
        if !raw.is_empty() {
            let mut batch = Batch::new(raw, &mut self.decoder);
            sink(&mut batch);
            self.undecodable += batch.undecodable();
        }
        raw.clear();
        // A burst's worth is not kept for the rest of the run.
        raw.shrink_to(KEPT_BYTES);
    }

    /// The kernel's per-(process, syscall) aggregates.
    pub fn syscall_stats(&self) -> BTreeMap<SyscallKey, LatencyStats> {
        let mut all = self.retired.clone();
        for (key, stats) in self.syscall_stats.iter().filter_map(Result::ok) {
            all.entry(key).or_insert(LatencyStats::ZERO).merge(&stats);
        }
        all
    }

    /// Node mode: the process name and cgroup of a row of syscall stats.
    pub fn row_name(&self, key: u32) -> Option<tracer_common::RowName> {
        self.row_names.get(&key, 0).ok()
    }

    /// Moves the kernel's syscall stats of processes that have exited into
    /// user space. Only for exited processes: a live one could update an
    /// entry between its read and its deletion.
    pub fn retire(&mut self, exited: &std::collections::HashSet<u32>) {
        let keys: Vec<SyscallKey> = self
            .syscall_stats
            .keys()
            .filter_map(Result::ok)
            .filter(|k| exited.contains(&k.tgid))
            .collect();
        for key in keys {
            if let Ok(stats) = self.syscall_stats.get(&key, 0) {
                self.retired
                    .entry(key)
                    .or_insert(LatencyStats::ZERO)
                    .merge(&stats);
            }
            let _ = self.syscall_stats.remove(&key);
        }
        for pid in exited {
            if let Ok(ns) = self.idle.get(pid, 0) {
                *self.retired_idle.entry(*pid).or_default() += ns;
                let _ = self.idle.remove(pid);
            }
            if let Ok(t) = self.request_time.get(pid, 0) {
                add_requests(&mut self.retired_requests, *pid, t);
                let _ = self.request_time.remove(pid);
            }
        }
    }

    /// Moves what was retired of each folded process to its row (see
    /// `Aggregate::fold_exited_processes`).
    pub fn fold(&mut self, moved: &std::collections::HashMap<u32, u32>) {
        if moved.is_empty() {
            return;
        }
        let keys: Vec<SyscallKey> = self
            .retired
            .keys()
            .filter(|k| moved.contains_key(&k.tgid))
            .copied()
            .collect();
        for key in keys {
            if let Some(stats) = self.retired.remove(&key) {
                let row = SyscallKey {
                    tgid: moved[&key.tgid],
                    ..key
                };
                self.retired
                    .entry(row)
                    .or_insert(LatencyStats::ZERO)
                    .merge(&stats);
            }
        }
        for (pid, row) in moved {
            if let Some(ns) = self.retired_idle.remove(pid) {
                *self.retired_idle.entry(*row).or_default() += ns;
            }
            if let Some(t) = self.retired_requests.remove(pid) {
                add_requests(&mut self.retired_requests, *row, t);
            }
        }
    }

    /// Gives each thread of `pid` that is blocked in a syscall right now an
    /// entry as if the call had begun at `since_ns` (the start of its
    /// tracing), so that its return is paired and timed from there: a
    /// listener blocked in poll at attach would otherwise return unseen,
    /// and that wait would count as work. A thread that has entered a
    /// syscall since keeps its own entry.
    pub fn seed_blocked_threads(&mut self, pid: u32, since_ns: u64) {
        for tid in crate::target::threads_of(pid) {
            let Some((nr, args)) = crate::target::blocked_syscall(pid, tid) else {
                continue;
            };
            let entry = ThreadEntry {
                start_ns: since_ns,
                nr,
                args,
                last_io_fd: -1,
                ..Default::default()
            };
            // BPF_NOEXIST: never over an entry the thread made itself.
            let _ = self.thread_entries.insert(tid, entry, 1);
        }
    }

    /// Times the requests on connections `pid` accepted before it was
    /// traced, from their next request on (the one in progress, if any,
    /// began unseen).
    pub fn seed_accepted_connections(&mut self, pid: u32) {
        for fd in crate::target::accepted_sockets(pid) {
            let key = FdKey {
                tgid: pid,
                fd: fd as u32,
            };
            // BPF_NOEXIST: never over a connection the kernel saw accepted.
            let _ = self.server_conns.insert(key, ServerConn::default(), 1);
        }
    }

    /// Syscalls in progress right now: (tid, entry) of threads inside one.
    pub fn in_flight(&self) -> Vec<(u32, ThreadEntry)> {
        self.thread_entries
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, e)| e.start_ns != 0)
            .collect()
    }

    pub fn lost(&self) -> LostCounts {
        let sum = |c: LostCounter| -> u64 {
            self.lost
                .get(&(c as u32), 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        };
        LostCounts {
            ring_full: sum(LostCounter::RingFull),
            syscall_map_full: sum(LostCounter::SyscallMapFull),
            thread_map_full: sum(LostCounter::ThreadMapFull),
            handshake_map_full: sum(LostCounter::HandshakeMapFull),
            process_map_full: sum(LostCounter::ProcessMapFull),
            lookup_map_full: sum(LostCounter::LookupMapFull),
            dns_socket_map_full: sum(LostCounter::DnsSocketMapFull),
            tls_call_map_full: sum(LostCounter::TlsCallMapFull),
            undecodable: self.undecodable,
        }
    }

    /// Drops kernel state of processes that are gone: a process's sockets
    /// are closed at exit without a close() syscall to tell us.
    pub fn forget_exited(&mut self, live: &[u32]) {
        // A set: node mode has hundreds of live processes and the maps up
        // to 65,536 sockets, checked each second.
        let live: std::collections::HashSet<u32> = live.iter().copied().collect();
        forget_fds_of_exited(&mut self.dns_sockets, &live);
        forget_fds_of_exited(&mut self.tls_sockets, &live);
        forget_fds_of_exited(&mut self.connected_fds, &live);
        // A connection answered when its process exited: that request is
        // done, with no close() to tell the kernel.
        let gone: Vec<(FdKey, ServerConn)> = self
            .server_conns
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| !live.contains(&k.tgid))
            .collect();
        for (key, conn) in gone {
            if let Some(t) = finished_request(&conn) {
                add_requests(&mut self.retired_requests, key.tgid, t);
            }
            let _ = self.server_conns.remove(&key);
        }
    }

    /// Requests served per process so far: those finished, those answered
    /// and not yet followed by another, and those in progress (to `now_ns`).
    pub fn requests(&self, now_ns: u64) -> std::collections::HashMap<u32, RequestTime> {
        let mut all = self.retired_requests.clone();
        for (pid, t) in self.request_time.iter().filter_map(Result::ok) {
            add_requests(&mut all, pid, t);
        }
        for (key, conn) in self.server_conns.iter().filter_map(Result::ok) {
            let open = if conn.state == CONN_IN_REQUEST {
                Some(RequestTime {
                    ns: now_ns.saturating_sub(conn.start_ns),
                    count: 1,
                })
            } else {
                finished_request(&conn)
            };
            if let Some(t) = open {
                add_requests(&mut all, key.tgid, t);
            }
        }
        all
    }

    /// Idle time (listener threads waiting for work) per process.
    pub fn idle_ns(&self) -> std::collections::HashMap<u32, u64> {
        let mut all = self.retired_idle.clone();
        for (pid, ns) in self.idle.iter().filter_map(Result::ok) {
            *all.entry(pid).or_default() += ns;
        }
        all
    }

    /// Lookups in progress right now: libc's threads and Go's goroutines
    /// inside one.
    pub fn open_lookups(&self) -> OpenLookups {
        OpenLookups {
            by_thread: self
                .lookups
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, l)| l.depth > 0)
                .collect(),
            by_goroutine: self
                .go_lookups
                .iter()
                .filter_map(Result::ok)
                .map(|(key, l)| (key.tgid, l))
                .collect(),
        }
    }

    /// Threads that made at least one syscall since we attached.
    pub fn threads_seen(&self) -> std::collections::HashSet<u32> {
        self.thread_entries.keys().filter_map(Result::ok).collect()
    }
}

/// The kernel's open lookups: (tid, state) of threads inside a libc
/// lookup, (pid, state) of goroutines inside a Go one.
pub struct OpenLookups {
    by_thread: Vec<(u32, LookupState)>,
    by_goroutine: Vec<(u32, GoLookupState)>,
}

impl OpenLookups {
    /// As (pid, tid, function, start, host), with the host read from the
    /// process, for live threads (`owners`: tid → pid) and processes: a
    /// goroutine's entry outlives a process that exits inside its lookup.
    pub fn resolve(
        &self,
        now: u64,
        owners: &std::collections::HashMap<u32, u32>,
    ) -> Vec<(u32, u32, u32, u64, String)> {
        let by_thread = self.by_thread.iter().filter(|(_, l)| l.start_ns < now);
        let libc = by_thread.filter_map(|(tid, l)| {
            let pid = *owners.get(tid)?;
            let host = crate::target::read_c_string(pid, l.args[0], tracer_common::HOST_MAX);
            Some((pid, *tid, l.func, l.start_ns, host.unwrap_or_default()))
        });
        let live: std::collections::HashSet<u32> = owners.values().copied().collect();
        let by_goroutine = self.by_goroutine.iter();
        let go = by_goroutine
            .filter(|(pid, l)| l.start_ns < now && live.contains(pid))
            .map(|(pid, l)| {
                // A Go string: a pointer and a length.
                let len = (l.host_len as usize).min(tracer_common::HOST_MAX);
                let host = crate::target::read_memory(*pid, l.host_ptr, len)
                    .map(|b| String::from_utf8_lossy(&b).into_owned());
                (*pid, l.tid, l.func, l.start_ns, host.unwrap_or_default())
            });
        libc.chain(go).collect()
    }
}

/// A connection's last request, if answered and not yet counted by the
/// kernel (which counts it when the next one starts or the client leaves).
fn finished_request(conn: &ServerConn) -> Option<RequestTime> {
    (conn.state == CONN_ANSWERED).then(|| RequestTime {
        ns: conn.last_write_ns.saturating_sub(conn.start_ns),
        count: 1,
    })
}

fn add_requests(all: &mut std::collections::HashMap<u32, RequestTime>, pid: u32, t: RequestTime) {
    let sum = all.entry(pid).or_default();
    sum.ns += t.ns;
    sum.count += t.count;
}

fn forget_fds_of_exited<V: aya::Pod>(
    map: &mut HashMap<MapData, FdKey, V>,
    live: &std::collections::HashSet<u32>,
) {
    let gone: Vec<FdKey> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !live.contains(&k.tgid))
        .collect();
    for key in gone {
        let _ = map.remove(&key);
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
