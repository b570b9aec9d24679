//! Collect: everything the kernel side hands us. Single events come through
//! the ring buffer (taken out by `intake`'s thread when the kernel wakes it,
//! and drained here on its word and on a timer); aggregates are read from
//! the maps on demand; loss counters are read with them.

use std::{cell::Cell, collections::BTreeMap, mem::size_of};

use anyhow::{Context as _, anyhow};
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use tracer_common::{
    CONN_ANSWERED, CONN_IN_REQUEST, ConnectEvent, DnsPacketEvent, DnsServer, DnsWaitEvent,
    EventKind, ExecMapEvent, FRAMES_HEADER, FdClosedEvent, FdKey, FramesEvent, GoLookupState,
    GoroutineKey, HandshakeEvent, LatencyStats, LookupEvent, LookupStartEvent, LookupState,
    LostCounter, NATIVE_FRAMES, PY_FRAMES, PyFrameRef, RequestEndEvent, RequestLineEvent,
    RequestTime, ServerConn, SlowIoEvent, StackEvent, SyscallKey, TaskEvent, ThreadEntry, TlsEvent,
    TlsWaitEvent,
};

use crate::{
    attach::Probes,
    intake::{self, Intake},
};

/// One record from the ring buffer.
#[derive(Debug, Clone)]
pub enum Event {
    Connect(ConnectEvent),
    Handshake(HandshakeEvent),
    Task(TaskEvent),
    LookupStart(LookupStartEvent),
    Lookup(Box<LookupEvent>),
    DnsPacket(Box<DnsPacketEvent>),
    DnsWait(DnsWaitEvent),
    Tls(TlsEvent),
    TlsWait(TlsWaitEvent),
    ExecMap(ExecMapEvent),
    Stack(Box<StackEvent>),
    Frames(Box<FramesEvent>),
    SlowIo(SlowIoEvent),
    FdClosed(FdClosedEvent),
    RequestLine(Box<RequestLineEvent>),
    RequestEnd(RequestEndEvent),
}

/// Decodes a ring buffer record; `None` for a record we do not know (a
/// newer kernel object, or a short read), which is counted by the caller.
pub fn parse_event(bytes: &[u8]) -> Option<Event> {
    fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
        read_at(bytes, 0)
    }
    /// Straight into the heap: a stack record is 16 KiB, copied once.
    fn read_boxed<T: Copy>(bytes: &[u8]) -> Option<Box<T>> {
        if bytes.len() < size_of::<T>() {
            return None;
        }
        let mut boxed = Box::<T>::new_uninit();
        // SAFETY: length checked; T is a repr(C) plain-data event type,
        // valid for any bytes, and the copy fills all of it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                boxed.as_mut_ptr().cast::<u8>(),
                size_of::<T>(),
            );
            Some(boxed.assume_init())
        }
    }
    /// A record sent only as long as its content: what came, the rest
    /// zero; None when the header says more than came.
    fn read_frames(bytes: &[u8]) -> Option<Box<FramesEvent>> {
        let len = bytes.len().min(size_of::<FramesEvent>());
        if len < FRAMES_HEADER {
            return None;
        }
        // SAFETY: FramesEvent is repr(C) integers, valid as all zeroes.
        let mut ev: Box<FramesEvent> = unsafe { Box::new_zeroed().assume_init() };
        // SAFETY: at most the record's size, from a slice that long.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut *ev).cast::<u8>(), len);
        }
        let words = ev.native_depth as usize + 2 * ev.py_depth as usize;
        (ev.native_depth as usize <= NATIVE_FRAMES && FRAMES_HEADER + words * 8 <= len)
            .then_some(ev)
    }
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    match EventKind::from_u32(kind)? {
        EventKind::Connect => read(bytes).map(Event::Connect),
        EventKind::Handshake => read(bytes).map(Event::Handshake),
        EventKind::Task => read(bytes).map(Event::Task),
        EventKind::LookupStart => read(bytes).map(Event::LookupStart),
        EventKind::Lookup => read_boxed(bytes).map(Event::Lookup),
        EventKind::DnsPacket => read_boxed(bytes).map(Event::DnsPacket),
        EventKind::DnsWait => read(bytes).map(Event::DnsWait),
        EventKind::Tls => read(bytes).map(Event::Tls),
        EventKind::TlsWait => read(bytes).map(Event::TlsWait),
        EventKind::ExecMap => read(bytes).map(Event::ExecMap),
        EventKind::Stack => read_boxed(bytes).map(Event::Stack),
        EventKind::Frames => read_frames(bytes).map(Event::Frames),
        EventKind::SlowIo => read(bytes).map(Event::SlowIo),
        EventKind::FdClosed => read(bytes).map(Event::FdClosed),
        EventKind::RequestLine => read_boxed(bytes).map(Event::RequestLine),
        EventKind::RequestEnd => read(bytes).map(Event::RequestEnd),
    }
}

/// The records of one drain, as the reader took them. Each is decoded as
/// it is applied, so that its memory is freed before the next one's is
/// allocated: glibc's per-thread cache serves them all, where records
/// decoded all at once, then applied, took the arena's slow path for most
/// of their mallocs and frees.
pub struct Batch<'a> {
    bytes: &'a [u8],
    undecodable: Cell<u64>,
}

impl Batch<'_> {
    /// Each record, decoded, in the kernel's order; a record we do not
    /// know is counted and skipped. Once per batch.
    pub fn events(&self) -> impl Iterator<Item = Event> + '_ {
        intake::records(self.bytes).filter_map(|record| {
            let ev = parse_event(record);
            if ev.is_none() {
                self.undecodable.set(self.undecodable.get() + 1);
            }
            ev
        })
    }

    /// The Python frames of each stack in the batch, with its process and
    /// the kernel's status of them, read where they lie in the record.
    pub fn python_frames(&self) -> impl Iterator<Item = (u32, u32, Vec<PyFrameRef>)> + '_ {
        intake::records(self.bytes).filter_map(python_frames_of)
    }
}

/// A `T` read from `bytes` at `offset`, if they hold one there.
fn read_at<T: Copy>(bytes: &[u8], offset: usize) -> Option<T> {
    let bytes = bytes.get(offset..offset.checked_add(size_of::<T>())?)?;
    // SAFETY: length checked; T is a repr(C) plain-data event type or an
    // integer, valid for any bytes.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A stack record's process, Python status and Python frames, when it has
/// any, read from the record's bytes (the frames' layout as
/// `attribute::frames_words` and `attribute::stack_python` read a decoded
/// one): no 1 KiB record decoded for a prefetch.
fn python_frames_of(record: &[u8]) -> Option<(u32, u32, Vec<PyFrameRef>)> {
    use std::mem::offset_of;
    let (tgid, status, depth, frames, stride) = match EventKind::from_u32(read_at(record, 0)?)? {
        EventKind::Frames => {
            let native: u32 = read_at(record, offset_of!(FramesEvent, native_depth))?;
            (
                read_at(record, offset_of!(FramesEvent, tgid))?,
                read_at(record, offset_of!(FramesEvent, py_status))?,
                read_at::<u32>(record, offset_of!(FramesEvent, py_depth))?,
                FRAMES_HEADER + 8 * (native as usize).min(NATIVE_FRAMES),
                16,
            )
        }
        EventKind::Stack => (
            read_at(record, offset_of!(StackEvent, tgid))?,
            read_at(record, offset_of!(StackEvent, py_status))?,
            read_at::<u32>(record, offset_of!(StackEvent, py_depth))?.min(PY_FRAMES as u32),
            offset_of!(StackEvent, py),
            size_of::<PyFrameRef>(),
        ),
        _ => return None,
    };
    if depth == 0 {
        return None;
    }
    let python = (0..depth as usize)
        .map_while(|i| {
            let at = frames + i * stride;
            Some(PyFrameRef {
                code: read_at(record, at)?,
                instr: read_at(record, at + 8)?,
            })
        })
        .collect();
    Some((tgid, status, python))
}

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
    pub fn drain(&mut self, sink: impl FnOnce(&Batch)) {
        // Empty (cleared at the end of each drain): the reader goes on in it.
        let raw = &mut self.raw;
        {
            let mut taken = self.intake.lock();
            taken.take_pending();
            // The reader goes on into the last drain's (emptied) memory.
            std::mem::swap(raw, &mut taken.bytes);
        }
        if !raw.is_empty() {
            let batch = Batch {
                bytes: raw,
                undecodable: Cell::new(0),
            };
            sink(&batch);
            self.undecodable += batch.undecodable.get();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_known_records_and_refuses_short_ones() {
        let ev = HandshakeEvent {
            kind: EventKind::Handshake as u32,
            tgid: 1,
            tid: 2,
            new_state: 1,
            skaddr: 0xdead,
            start_ns: 5,
            duration_ns: 7,
        };
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<HandshakeEvent>())
        };
        match parse_event(bytes) {
            Some(Event::Handshake(h)) => assert_eq!((h.skaddr, h.duration_ns), (0xdead, 7)),
            other => panic!("{other:?}"),
        }
        assert!(parse_event(&bytes[..10]).is_none());
        assert!(parse_event(&[9, 0, 0, 0, 1, 2]).is_none());
        assert!(parse_event(&[]).is_none());
    }

    /// A batch as the reader leaves it: a stack of 2 native and 1 Python
    /// frames sent only as long as its content, then a record of no kind.
    #[test]
    fn a_batch_reads_python_frames_in_place_and_counts_what_it_cannot_decode() {
        let mut ev: FramesEvent = unsafe { std::mem::zeroed() };
        (ev.kind, ev.tgid, ev.py_status) = (EventKind::Frames as u32, 7, 0);
        (ev.native_depth, ev.py_depth) = (2, 1);
        ev.words[..4].copy_from_slice(&[0x10, 0x20, 0xc0de, 3]);
        let len = FRAMES_HEADER + 4 * 8;
        let mut bytes = Vec::new();
        for record in [
            unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), len) },
            &[9, 0, 0, 0],
        ] {
            bytes.extend_from_slice(&(record.len() as u32).to_ne_bytes());
            bytes.extend_from_slice(record);
        }
        let batch = Batch {
            bytes: &bytes,
            undecodable: Cell::new(0),
        };
        let python: Vec<_> = batch.python_frames().collect();
        assert_eq!(python.len(), 1);
        let (tgid, status, frames) = &python[0];
        assert_eq!((*tgid, *status, frames.len()), (7, 0, 1));
        assert_eq!((frames[0].code, frames[0].instr), (0xc0de, 3));
        let events: Vec<_> = batch.events().collect();
        assert!(
            matches!(&events[..], [Event::Frames(f)] if f.words[2] == 0xc0de && f.words[4] == 0)
        );
        assert_eq!(batch.undecodable.get(), 1);
    }
}
