//! Maps shared by the programs, and the small helpers every program uses.

use crate::mem;
use aya_ebpf::{
    Global,
    helpers::bpf_probe_read_user_buf,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    DnsServer, EVENT_RING_BYTES, FdKey, GoLookupState, GoTlsCall, GoroutineKey, KernelLayout,
    LAYOUT_ALL, LOST_COUNTERS, LatencyStats, LookupState, LostCounter, MAX_CONNECTED_FDS,
    MAX_DNS_SOCKETS, MAX_GO_CALLS, MAX_IDLE_PROCESSES, MAX_LOOKUPS, MAX_NAME_ROWS,
    MAX_PENDING_HANDSHAKES, MAX_PY_PROCS, MAX_SERVER_CONNS, MAX_SYSCALL_KEYS, MAX_TLS_CALLS,
    MAX_TLS_SOCKETS, MAX_TRACED_PROCESSES, MAX_TRACED_THREADS, PendingHandshake, PyProcess,
    RequestTime, RowName, ServerConn, SyscallKey, ThreadEntry, TlsCall, name_row,
};

/// Processes (tgids) being traced. User space seeds it; forks add to it.
#[map]
pub static TRACED_PROCESSES: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TRACED_PROCESSES, 0);

/// Changes to `TRACED_PROCESSES`: [0] counts the kernel's (atomic adds,
/// after each insert and remove), [1] user space's (one writer, after each
/// insert). A CPU's cached answer (`TRACED_CACHE`) holds while both are
/// what they were when it was looked up.
#[map]
pub static TRACED_GEN: Array<u64> = Array::with_max_entries(2, 0);

/// The last process looked up in `TRACED_PROCESSES` on this CPU, and the
/// answer: a CPU runs the same process's syscalls one after another, and a
/// hash lookup is the dearest part of a syscall's entry (about 25 ns of
/// some 100, `kernel.bpf_stats_enabled` on this VM) after the clock.
#[map]
static TRACED_CACHE: PerCpuArray<TracedCache> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct TracedCache {
    kernel_gen: u64,
    user_gen: u64,
    tgid: u32,
    traced: u32,
}

/// The traced set changed (an insert or a remove by a kernel program).
#[inline(always)]
pub fn traced_set_changed() {
    if let Some(p) = TRACED_GEN.get_ptr_mut(0) {
        // SAFETY: a live array value; other CPUs add too.
        unsafe { crate::mem::atomic_add(p, 1) };
    }
}

#[inline(always)]
fn traced_gens() -> (u64, u64) {
    (slot(&TRACED_GEN, 0), slot(&TRACED_GEN, 1))
}

/// Slot `i` of a counter array that other CPUs write, read once (0 if
/// out of range).
#[inline(always)]
fn slot(array: &Array<u64>, i: u32) -> u64 {
    // SAFETY: a live array value.
    array.get_ptr(i).map_or(0, |p| unsafe { p.read_volatile() })
}

impl TracedCache {
    /// Whether this answer is for `tgid` and the traced set is as it was.
    #[inline(always)]
    fn holds_for(&self, tgid: u32, (kernel_gen, user_gen): (u64, u64)) -> bool {
        self.tgid == tgid && self.kernel_gen == kernel_gen && self.user_gen == user_gen
    }
}

/// Whether this CPU's cached answer for `tgid` is still good: Some(traced).
#[inline(always)]
pub fn traced_cached(tgid: u32) -> Option<bool> {
    let c = TRACED_CACHE.get_ptr(0)?;
    // SAFETY: this CPU's slot; programs on one CPU do not interleave.
    let c = unsafe { &*c };
    c.holds_for(tgid, traced_gens()).then_some(c.traced != 0)
}

/// `is_traced`-like `ask`, answered from this CPU's cache while the traced
/// set is unchanged. The generations are read before `ask` looks: a change
/// after that read leaves the cache stale by one change, which the next
/// call sees.
#[inline(always)]
pub fn traced_via_cache(tgid: u32, ask: impl FnOnce() -> bool) -> bool {
    let gens = traced_gens();
    let Some(c) = TRACED_CACHE.get_ptr_mut(0) else {
        return ask();
    };
    // SAFETY: this CPU's slot; programs on one CPU do not interleave.
    let c = unsafe { &mut *c };
    if c.holds_for(tgid, gens) {
        return c.traced != 0;
    }
    let traced = ask();
    *c = TracedCache {
        kernel_gen: gens.0,
        user_gen: gens.1,
        tgid,
        traced: traced as u32,
    };
    traced
}

/// Syscall in progress per traced thread, keyed by tid. An entry exists only
/// for threads of traced processes, so the exit path needs no tgid lookup.
#[map]
pub static THREAD_ENTRIES: HashMap<u32, ThreadEntry> =
    HashMap::with_max_entries(MAX_TRACED_THREADS, 0);

/// Latency per (process, syscall). One value shared by all CPUs, updated
/// with atomic adds: a per-CPU map would cost kilobytes per key per CPU, and
/// without preallocation its inserts fail under bursts (measured: 100 of
/// ~2500 lost while a shell forked 20 children).
#[map]
pub static SYSCALL_STATS: HashMap<SyscallKey, LatencyStats> =
    HashMap::with_max_entries(MAX_SYSCALL_KEYS, 0);

/// A zeroed `LatencyStats` to insert from: it is too large for the 512-byte
/// eBPF stack.
#[map]
pub static ZERO_STATS: PerCpuArray<LatencyStats> = PerCpuArray::with_max_entries(1, 0);

/// TCP sockets in SYN_SENT, keyed by `struct sock *`.
#[map]
pub static PENDING_HANDSHAKES: HashMap<u64, PendingHandshake> =
    HashMap::with_max_entries(MAX_PENDING_HANDSHAKES, 0);

/// Threads inside a probed lookup function (getaddrinfo, ...), by tid.
#[map]
pub static LOOKUPS: HashMap<u32, LookupState> = HashMap::with_max_entries(MAX_LOOKUPS, 0);

/// Threads inside an SSL call, by tid.
/// How many `DNS_SOCKETS` there are (it may run high: a process that exits
/// without closing one leaves it counted). While 0, reads and writes skip
/// the DNS check, one array read instead of a hash lookup each.
#[map]
pub static DNS_SOCKETS_OPEN: Array<u64> = Array::with_max_entries(1, 0);

/// Whether any socket may be a DNS server's.
#[inline(always)]
pub fn dns_sockets_open() -> bool {
    DNS_SOCKETS_OPEN.get(0).is_some_and(|n| *n > 0)
}

/// Goroutines inside Go's resolver functions.
#[map]
pub static GO_LOOKUPS: HashMap<GoroutineKey, GoLookupState> =
    HashMap::with_max_entries(MAX_GO_CALLS, 0);

/// Goroutines inside crypto/tls's functions.
#[map]
pub static GO_TLS_CALLS: HashMap<GoroutineKey, GoTlsCall> =
    HashMap::with_max_entries(MAX_GO_CALLS, 0);

#[map]
pub static TLS_CALLS: HashMap<u32, TlsCall> = HashMap::with_max_entries(MAX_TLS_CALLS, 0);

/// Sockets an SSL call of a traced process used: a poll on them is a TLS
/// client waiting for data.
#[map]
pub static TLS_SOCKETS: HashMap<FdKey, u8> = HashMap::with_max_entries(MAX_TLS_SOCKETS, 0);

/// Sockets a traced process connected: their close is reported, so that
/// user space knows when an fd number stops meaning that peer.
#[map]
pub static CONNECTED_FDS: HashMap<FdKey, u8> = HashMap::with_max_entries(MAX_CONNECTED_FDS, 0);

/// Sockets a traced process connected to port 53: their traffic is DNS.
#[map]
pub static DNS_SOCKETS: HashMap<FdKey, DnsServer> = HashMap::with_max_entries(MAX_DNS_SOCKETS, 0);

/// Idle time per process: the waits of listener threads for new work.
#[map]
pub static IDLE_NS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_IDLE_PROCESSES, 0);

/// Connections the traced processes accepted: their requests are timed.
#[map]
pub static SERVER_CONNS: LruHashMap<FdKey, ServerConn> =
    LruHashMap::with_max_entries(MAX_SERVER_CONNS, 0);

/// Finished requests per process (see `ServerConn`).
#[map]
pub static REQUEST_TIME: HashMap<u32, RequestTime> =
    HashMap::with_max_entries(MAX_IDLE_PROCESSES, 0);

/// CPython processes and where their interpreter keeps its frames.
#[map]
pub static PY_PROCS: HashMap<u32, PyProcess> = HashMap::with_max_entries(MAX_PY_PROCS, 0);

/// Node mode: the name and cgroup of each row syscall stats are kept under.
#[map]
pub static ROW_NAMES: HashMap<u32, RowName> = HashMap::with_max_entries(MAX_NAME_ROWS, 0);

/// Kernel struct offsets user space found in BTF.
#[map]
pub static KERNEL_LAYOUT: Array<KernelLayout> = Array::with_max_entries(1, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);

/// Things lost, by `LostCounter`: never hidden, always reported.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_COUNTERS, 0);

#[inline(always)]
pub fn count_lost(what: LostCounter) {
    if let Some(p) = LOST.get_ptr_mut(what as u32) {
        // SAFETY: per-CPU slot, the program is not re-entered on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn is_traced(tgid: u32) -> bool {
    TRACED_PROCESSES.get_ptr(tgid).is_some()
}

/// The inode number of the current task's network namespace: task ->
/// nsproxy -> net_ns -> ns.inum, at offsets user space found in BTF (no
/// helper gives it). 0 if a read fails (a task exiting has no nsproxy).
#[inline(always)]
fn current_netns(layout: &KernelLayout) -> u32 {
    // SAFETY: a helper without arguments; every read of what it returns
    // goes through the checked helper.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    let nsproxy = mem::kernel_at_or::<u64>(task, layout.task_nsproxy, 0);
    if nsproxy == 0 {
        return 0;
    }
    let net = mem::kernel_at_or::<u64>(nsproxy, layout.nsproxy_net_ns, 0);
    if net == 0 {
        return 0;
    }
    mem::kernel_at_or::<u32>(net, layout.net_inum, 0)
}

/// The kernel layout, when syscall rows are by process name and cgroup
/// (node mode, on a kernel whose task layout user space found) rather than
/// by process.
#[inline(always)]
pub fn rows_by_name() -> Option<&'static KernelLayout> {
    KERNEL_LAYOUT
        .get(0)
        .filter(|l| l.flags & LAYOUT_ALL != 0 && l.task_group_leader != 0)
}

/// Node mode's row of the current process: that of its name and cgroup
/// (the number of rows follows the programs a node runs, not its
/// processes), whose name it writes into `name` for the row table; the
/// process itself when its name cannot be read.
#[inline(always)]
pub fn name_row_of_current(tgid: u32, layout: &KernelLayout, name: &mut RowName) -> u32 {
    // SAFETY: a helper without arguments; every read of what it returns
    // goes through the checked helper.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    let leader = mem::kernel_at_or::<u64>(task, layout.task_group_leader, 0);
    if leader == 0 {
        return tgid;
    }
    name.comm = mem::kernel_at_or(leader, layout.task_comm, [0; 16]);
    if name.comm[0] == 0 {
        return tgid;
    }
    // SAFETY: a helper without arguments.
    name.cgroup_id = unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() };
    name_row(&name.comm, name.cgroup_id)
}

/// Renames (exec included) and cgroup moves: [0] how many so far, [1]
/// when the last one was seen (`bpf_ktime_get_ns`). A thread's cached name
/// row (`ThreadEntry::row`) holds while [0] is what it was. Bumped by
/// `names_changed`, in node mode only.
#[map]
pub static NAMES_GEN: Array<u64> = Array::with_max_entries(2, 0);

/// How long after a rename a name just read may still be the old one: the
/// kernel fires `task_rename` before it writes the name (both under the
/// task's spinlock, so nanoseconds apart; this is a wide margin).
pub const RENAME_SETTLES_NS: u64 = 1_000_000;

/// The current names generation (truncated: a row found 2^32 renames ago
/// and not looked at since is the only one it could mistake).
#[inline(always)]
pub fn names_gen() -> u32 {
    slot(&NAMES_GEN, 0) as u32
}

/// A task was renamed or moved to another cgroup (tasks.rs). The time
/// first, then the count: a syscall that sees the new count sees this time
/// or a later one (`calls::record` trusts no name read within
/// `RENAME_SETTLES_NS` of it).
#[inline(always)]
pub fn names_changed() {
    if let Some(p) = NAMES_GEN.get_ptr_mut(1) {
        // SAFETY: a live array value; a plain store (the last writer's
        // time is as good as any other's).
        unsafe { p.write_volatile(aya_ebpf::helpers::bpf_ktime_get_ns()) };
    }
    if let Some(p) = NAMES_GEN.get_ptr_mut(0) {
        // SAFETY: a live array value; other CPUs add too.
        unsafe { crate::mem::atomic_add(p, 1) };
    }
}

/// Whether the last rename or move was long enough before `now` that a
/// name read now is the new one.
#[inline(always)]
pub fn names_settled(now: u64) -> bool {
    now.saturating_sub(slot(&NAMES_GEN, 1)) > RENAME_SETTLES_NS
}

/// Whether tracing programs may call `bpf_get_current_ancestor_cgroup_id`
/// on this kernel (5.10 allows it only to cgroup programs). User space
/// probes it and sets this at load; the value is then a constant to the
/// verifier, which skips the branch not taken, so a kernel without the
/// helper never sees the call.
#[unsafe(no_mangle)]
pub static TRACER_HAS_ANCESTOR_CGROUP_ID: Global<u8> = Global::new(1);

/// The id of the current task's cgroup v2 ancestor at the scope's level,
/// read the way the helper does: task -> cgroups -> dfl_cgrp ->
/// ancestor_ids[level] (at offsets from BTF). 0 when the task sits above
/// that level or a read fails.
#[inline(always)]
fn ancestor_cgroup_id_from_task(layout: &KernelLayout) -> u64 {
    if layout.cgroup_ancestor_ids == 0 {
        return 0;
    }
    // SAFETY: a helper without arguments; every read of what it returns
    // goes through the checked helper.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    let cset = mem::kernel_at_or::<u64>(task, layout.task_cgroups, 0);
    if cset == 0 {
        return 0;
    }
    let cgrp = mem::kernel_at_or::<u64>(cset, layout.css_set_dfl_cgrp, 0);
    if cgrp == 0 {
        return 0;
    }
    let level = mem::kernel_at_or::<i32>(cgrp, layout.cgroup_level, -1);
    if level < layout.scope_level as i32 {
        return 0;
    }
    let at = layout.cgroup_ancestor_ids + 8 * layout.scope_level;
    mem::kernel_at_or::<u64>(cgrp, at, 0)
}

/// Node mode: is the current process (`tgid`) one to trace that we have
/// not met yet? If so it joins the traced set. Only for the current task:
/// the scope is the current task's cgroup.
#[inline(always)]
pub fn adopt_current(tgid: u32) -> bool {
    let Some(layout) = KERNEL_LAYOUT.get(0) else {
        return false;
    };
    if layout.flags & LAYOUT_ALL == 0 || tgid == layout.self_tgid || tgid == 0 {
        return false;
    }
    if layout.scope_netns != 0 && current_netns(layout) != layout.scope_netns {
        return false;
    }
    if layout.scope_cgroup != 0 {
        let id = if TRACER_HAS_ANCESTOR_CGROUP_ID.load() != 0 {
            // SAFETY: a helper without pointer arguments.
            unsafe {
                aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id(
                    layout.scope_level as i32,
                )
            }
        } else {
            ancestor_cgroup_id_from_task(layout)
        };
        if id != layout.scope_cgroup {
            return false;
        }
    }
    // BPF_NOEXIST: another CPU may adopt the same process at once; one wins.
    if TRACED_PROCESSES.insert(tgid, 1u8, 1).is_err() {
        if TRACED_PROCESSES.get_ptr(tgid).is_some() {
            return true;
        }
        count_lost(LostCounter::ProcessMapFull);
        return false;
    }
    traced_set_changed();
    true
}

/// `bpf_ringbuf_submit` flags and `bpf_ringbuf_query` fields.
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// When to wake the reader: waking it on every record costs the traced
/// thread microseconds per call (the kernel's wakeup work runs in its
/// context), so records wait until an eighth of the ring is used; user
/// space also drains on a timer. `urgent` records (a process exiting, a
/// stack whose Python frames must be read while the process lives) wake it
/// at once.
#[inline(always)]
pub fn submit_flags(urgent: bool) -> u64 {
    let wakeup = match KERNEL_LAYOUT.get(0) {
        Some(l) if l.wakeup_bytes > 0 => l.wakeup_bytes,
        _ => u64::from(EVENT_RING_BYTES / 8),
    };
    if urgent || EVENTS.query(BPF_RB_AVAIL_DATA) >= wakeup {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Sends a fixed-size record through the ring buffer, counting a full buffer.
#[inline(always)]
pub fn output<T: 'static>(ev: &T) {
    output_with(ev, false);
}

/// The same, waking the reader at once when `urgent`.
#[inline(always)]
pub fn output_with<T: 'static>(ev: &T, urgent: bool) {
    if EVENTS.output::<T>(ev, submit_flags(urgent)).is_err() {
        count_lost(LostCounter::RingFull);
    }
}

/// Copies a `struct sockaddr` of `len` bytes from user memory into `dst`
/// (at most 110 bytes, a sockaddr_un). The verifier wants constant sizes, so
/// copy the largest size class that covers `len` (sockaddr_un, sockaddr_in6,
/// sockaddr_in); bytes past `len` are ignored by user space. A large read
/// can fail at the end of a mapping, so fall back to the smaller classes.
/// Returns whether anything was copied.
#[inline(always)]
pub fn read_sockaddr(src: *const u8, len: u32, dst: &mut [u8; 112]) -> bool {
    // SAFETY: the helper checks the user-space access.
    unsafe {
        let mut copied = Err(0);
        if len > 28 {
            copied = bpf_probe_read_user_buf(src, &mut dst[..110]);
        }
        if copied.is_err() && len > 16 {
            copied = bpf_probe_read_user_buf(src, &mut dst[..28]);
        }
        if copied.is_err() && len >= 16 {
            copied = bpf_probe_read_user_buf(src, &mut dst[..16]);
        }
        if copied.is_err() && len >= 2 {
            copied = bpf_probe_read_user_buf(src, &mut dst[..2]);
        }
        copied.is_ok()
    }
}

/// The port of an AF_INET/AF_INET6 sockaddr (both keep it at bytes 2..4),
/// or 0 for other families.
#[inline(always)]
pub fn sockaddr_port(addr: &[u8]) -> u16 {
    if addr.len() < 4 {
        return 0;
    }
    let family = u16::from_ne_bytes([addr[0], addr[1]]);
    if family != 2 && family != 10 {
        return 0;
    }
    u16::from_be_bytes([addr[2], addr[3]])
}
