//! The eBPF programs and maps (compiled for the bpf target only).

use aya_ebpf::{
    bindings::{BPF_NOEXIST, pt_regs},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user_buf,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::warn;
use tracer_common::{
    ConnectEvent, EVENT_RING_BYTES, EventKind, HIST_BUCKETS, HandshakeEvent, LOST_COUNTERS,
    LatencyStats, LostCounter, MAX_PENDING_HANDSHAKES, MAX_SYSCALL_KEYS, MAX_TRACED_PROCESSES,
    MAX_TRACED_THREADS, PendingHandshake, SyscallKey, TASK_EXIT_PROCESS, TASK_EXIT_THREAD,
    TASK_NEW_PROCESS, TASK_NEW_THREAD, TCP_CLOSE, TCP_ESTABLISHED, TCP_SYN_SENT, TaskEvent,
    ThreadEntry, histogram::bucket_of, sysno,
};

/// Processes (tgids) being traced. User space seeds it; forks add to it.
#[map]
static TRACED_PROCESSES: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TRACED_PROCESSES, 0);

/// Syscall in progress per traced thread, keyed by tid. An entry exists only
/// for threads of traced processes, so the exit path needs no tgid lookup.
#[map]
static THREAD_ENTRIES: HashMap<u32, ThreadEntry> = HashMap::with_max_entries(MAX_TRACED_THREADS, 0);

/// Latency per (process, syscall). One value shared by all CPUs, updated
/// with atomic adds: a per-CPU map would cost kilobytes per key per CPU, and
/// without preallocation its inserts fail under bursts (measured: 100 of
/// ~2500 lost while a shell forked 20 children).
#[map]
static SYSCALL_STATS: HashMap<SyscallKey, LatencyStats> =
    HashMap::with_max_entries(MAX_SYSCALL_KEYS, 0);

/// A zeroed `LatencyStats` to insert from: it is too large for the 512-byte
/// eBPF stack.
#[map]
static ZERO_STATS: PerCpuArray<LatencyStats> = PerCpuArray::with_max_entries(1, 0);

/// TCP sockets in SYN_SENT, keyed by `struct sock *`.
#[map]
static PENDING_HANDSHAKES: HashMap<u64, PendingHandshake> =
    HashMap::with_max_entries(MAX_PENDING_HANDSHAKES, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);

/// Things lost, by `LostCounter`: never hidden, always reported.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_COUNTERS, 0);

#[inline(always)]
fn count_lost(what: LostCounter) {
    if let Some(p) = LOST.get_ptr_mut(what as u32) {
        // SAFETY: per-CPU slot, the program is not re-entered on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn is_traced(tgid: u32) -> bool {
    TRACED_PROCESSES.get_ptr(tgid).is_some()
}

// Offsets of syscall arguments in x86_64 `struct pt_regs`.
const REG_DI: usize = core::mem::offset_of!(pt_regs, rdi);
const REG_SI: usize = core::mem::offset_of!(pt_regs, rsi);
const REG_DX: usize = core::mem::offset_of!(pt_regs, rdx);

#[inline(always)]
fn read_reg(regs: *const u8, offset: usize) -> u64 {
    // SAFETY: `regs` is the kernel pt_regs of the current syscall; the helper
    // checks the access.
    unsafe { bpf_probe_read_kernel(regs.add(offset) as *const u64) }.unwrap_or(0)
}

/// raw_syscalls:sys_enter(struct pt_regs *regs, long id)
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced(tgid) {
        return 0;
    }
    let tid = pid_tgid as u32;
    let nr: u64 = ctx.arg(1);
    let mut args = [0u64; 3];
    if nr == sysno::CONNECT {
        let regs: *const u8 = ctx.arg(0);
        args = [
            read_reg(regs, REG_DI),
            read_reg(regs, REG_SI),
            read_reg(regs, REG_DX),
        ];
    }
    let entry = ThreadEntry {
        start_ns: unsafe { bpf_ktime_get_ns() },
        nr,
        args,
        skaddr: 0,
    };
    // Rewrite the thread's slot in place: cheaper than a hash update, which
    // allocates a new element and frees the old one.
    match THREAD_ENTRIES.get_ptr_mut(tid) {
        Some(slot) => unsafe { *slot = entry },
        None => {
            if THREAD_ENTRIES.insert(tid, entry, 0).is_err() {
                count_lost(LostCounter::ThreadMapFull);
            }
        }
    }
    0
}

/// raw_syscalls:sys_exit(struct pt_regs *regs, long ret)
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let now = unsafe { bpf_ktime_get_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(slot) = THREAD_ENTRIES.get_ptr_mut(tid) else {
        return 0;
    };
    // SAFETY: map value of this thread; only this thread writes it.
    let entry = unsafe { &mut *slot };
    if entry.start_ns == 0 {
        // Entered before we attached, or already consumed.
        return 0;
    }
    let duration = now.saturating_sub(entry.start_ns);
    let start_ns = entry.start_ns;
    entry.start_ns = 0;
    let tgid = (pid_tgid >> 32) as u32;
    let key = SyscallKey {
        tgid,
        nr: entry.nr as u32,
    };
    record_syscall(&key, duration);

    if entry.nr == sysno::CONNECT {
        let ret: i64 = ctx.arg(1);
        emit_connect(tgid, tid, entry, ret, start_ns, duration);
    }
    0
}

#[inline(always)]
fn record_syscall(key: &SyscallKey, duration: u64) {
    let stats = match SYSCALL_STATS.get_ptr_mut(key) {
        Some(p) => p,
        None => {
            let Some(zero) = ZERO_STATS.get_ptr(0) else {
                return;
            };
            // Fails when another CPU inserted the key first (fine) or when
            // the map is full: the lookup below tells which.
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "by value, the 2.6 KB struct would land on the 512-byte eBPF stack"
            )]
            // SAFETY: pointer into a map value, valid for this program run.
            let _ = SYSCALL_STATS.insert(key, unsafe { &*zero }, BPF_NOEXIST.into());
            match SYSCALL_STATS.get_ptr_mut(key) {
                Some(p) => p,
                None => {
                    count_lost(LostCounter::SyscallMapFull);
                    return;
                }
            }
        }
    };
    // SAFETY: pointer to a live map value, which the map keeps 8-byte aligned.
    unsafe { record_shared(stats, duration) };
}

/// `*p += v` as one eBPF atomic instruction (BPF_ATOMIC | BPF_ADD).
#[inline(always)]
unsafe fn atomic_add(p: *mut u64, v: u64) {
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack),
        )
    };
}

/// Records one call into a `LatencyStats` shared by all CPUs: count, sum and
/// histogram are atomic adds, so they are exact. The extremes are a plain
/// compare and store: two calls of the same syscall of the same process
/// ending on two CPUs within nanoseconds can lose one extreme, never a count.
#[inline(always)]
unsafe fn record_shared(stats: *mut LatencyStats, ns: u64) {
    unsafe {
        atomic_add(&raw mut (*stats).count, 1);
        atomic_add(&raw mut (*stats).total_ns, ns);
        let b = bucket_of(ns);
        if b < HIST_BUCKETS {
            atomic_add(&raw mut (*stats).hist[b], 1);
        }
        let max = &raw mut (*stats).max_ns;
        if ns > max.read_volatile() {
            max.write_volatile(ns);
        }
        // min_ns is 0 until the first call: no syscall takes 0 ns.
        let min = &raw mut (*stats).min_ns;
        let cur = min.read_volatile();
        if cur == 0 || ns < cur {
            min.write_volatile(ns);
        }
    }
}

#[inline(always)]
fn emit_connect(tgid: u32, tid: u32, entry: &ThreadEntry, ret: i64, start_ns: u64, duration: u64) {
    let Some(mut slot) = EVENTS.reserve::<ConnectEvent>(0) else {
        count_lost(LostCounter::RingFull);
        return;
    };
    let ev = slot.as_mut_ptr();
    let user_addr = entry.args[1] as *const u8;
    let addr_len = entry.args[2] as u32;
    // SAFETY: `ev` points to a reserved ring buffer record of our size.
    unsafe {
        (*ev).kind = EventKind::Connect as u32;
        (*ev).tgid = tgid;
        (*ev).tid = tid;
        (*ev).fd = entry.args[0] as i32;
        (*ev).ret = ret;
        (*ev).start_ns = start_ns;
        (*ev).duration_ns = duration;
        (*ev).skaddr = entry.skaddr;
        (*ev).addr_len = addr_len;
        (*ev)._pad = 0;
        let addr = &mut (*ev).addr;
        // The verifier wants constant sizes. Copy the largest size class that
        // covers `addr_len` (sockaddr_un, sockaddr_in6, sockaddr_in); bytes
        // past `addr_len` are ignored by user space. A large read can fail at
        // the end of a mapping, so fall back to the smaller classes.
        let mut copied = Err(0);
        if addr_len > 28 {
            copied = bpf_probe_read_user_buf(user_addr, &mut addr[..110]);
        }
        if copied.is_err() && addr_len > 16 {
            copied = bpf_probe_read_user_buf(user_addr, &mut addr[..28]);
        }
        if copied.is_err() && addr_len >= 16 {
            copied = bpf_probe_read_user_buf(user_addr, &mut addr[..16]);
        }
        if copied.is_err() && addr_len >= 2 {
            copied = bpf_probe_read_user_buf(user_addr, &mut addr[..2]);
        }
        if copied.is_err() {
            (*ev).addr_len = 0;
        }
    }
    slot.submit(0);
}

// sock:inet_sock_set_state field offsets (checked against the format file by
// user space before attaching).
const ISS_SKADDR: usize = 8;
const ISS_OLDSTATE: usize = 16;
const ISS_NEWSTATE: usize = 20;
const ISS_PROTOCOL: usize = 30;
const IPPROTO_TCP: u16 = 6;

/// The real handshake time of a TCP connect, blocking or not: from the
/// SYN_SENT transition (in the connecting thread) to ESTABLISHED or CLOSE
/// (usually in softirq, where the current task is unrelated: hence the key
/// is the socket, not the pid).
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_inet_sock_set_state(&ctx);
    0
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    let protocol: u16 = unsafe { ctx.read_at(ISS_PROTOCOL)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let old: i32 = unsafe { ctx.read_at(ISS_OLDSTATE)? };
    let new: i32 = unsafe { ctx.read_at(ISS_NEWSTATE)? };
    let skaddr: u64 = unsafe { ctx.read_at(ISS_SKADDR)? };
    let now = unsafe { bpf_ktime_get_ns() };
    if new as u32 == TCP_SYN_SENT {
        let pid_tgid = bpf_get_current_pid_tgid();
        let tgid = (pid_tgid >> 32) as u32;
        if !is_traced(tgid) {
            return Ok(());
        }
        let tid = pid_tgid as u32;
        let pending = PendingHandshake {
            start_ns: now,
            tgid,
            tid,
        };
        if PENDING_HANDSHAKES.insert(skaddr, pending, 0).is_err() {
            count_lost(LostCounter::HandshakeMapFull);
        }
        // Tell the connect() in progress on this thread which socket it is.
        if let Some(slot) = THREAD_ENTRIES.get_ptr_mut(tid) {
            unsafe { (*slot).skaddr = skaddr };
        }
        return Ok(());
    }
    if old as u32 != TCP_SYN_SENT {
        return Ok(());
    }
    let Some(pending) = PENDING_HANDSHAKES.get_ptr(skaddr) else {
        return Ok(());
    };
    let pending = unsafe { *pending };
    let _ = PENDING_HANDSHAKES.remove(skaddr);
    let new_state = if new as u32 == TCP_ESTABLISHED {
        TCP_ESTABLISHED
    } else {
        TCP_CLOSE
    };
    let ev = HandshakeEvent {
        kind: EventKind::Handshake as u32,
        tgid: pending.tgid,
        tid: pending.tid,
        new_state,
        skaddr,
        start_ns: pending.start_ns,
        duration_ns: now.saturating_sub(pending.start_ns),
    };
    if EVENTS.output::<HandshakeEvent>(&ev, 0).is_err() {
        count_lost(LostCounter::RingFull);
    }
    Ok(())
}

// task:task_newtask and sched:sched_process_exit field offsets (checked
// against the format files by user space).
const NEWTASK_PID: usize = 8;
const NEWTASK_CLONE_FLAGS: usize = 32;
const EXIT_GROUP_DEAD: usize = 32;
const CLONE_THREAD: u64 = 0x0001_0000;

fn emit_task(ctx: &impl aya_ebpf::EbpfContext, what: u32, tgid: u32, tid: u32, child: u32) {
    let comm = ctx.command().unwrap_or([0; 16]);
    let ev = TaskEvent {
        kind: EventKind::Task as u32,
        what,
        tgid,
        tid,
        child,
        _pad: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        comm,
    };
    if EVENTS.output::<TaskEvent>(&ev, 0).is_err() {
        count_lost(LostCounter::RingFull);
    }
}

/// A traced task created a thread or a process: follow new processes from
/// their first instruction. Runs in the parent, so the current tgid tells
/// whether the parent is traced; `clone_flags` tells thread from process.
#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced(tgid) {
        return 0;
    }
    let Ok(child) = (unsafe { ctx.read_at::<i32>(NEWTASK_PID) }) else {
        return 0;
    };
    let flags: u64 = unsafe { ctx.read_at(NEWTASK_CLONE_FLAGS) }.unwrap_or(0);
    let child = child as u32;
    if flags & CLONE_THREAD != 0 {
        emit_task(&ctx, TASK_NEW_THREAD, tgid, pid_tgid as u32, child);
    } else {
        if TRACED_PROCESSES.insert(child, 1u8, 0).is_err() {
            count_lost(LostCounter::ProcessMapFull);
            warn!(
                &ctx,
                "traced-process map full: child {} of {} not followed", child, tgid
            );
        }
        emit_task(&ctx, TASK_NEW_PROCESS, tgid, pid_tgid as u32, child);
    }
    0
}

/// A traced thread exited: drop its entry; say when the whole process is gone.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced(tgid) {
        return 0;
    }
    let tid = pid_tgid as u32;
    let _ = THREAD_ENTRIES.remove(tid);
    let group_dead: u8 = unsafe { ctx.read_at(EXIT_GROUP_DEAD) }.unwrap_or(0);
    if group_dead != 0 {
        let _ = TRACED_PROCESSES.remove(tgid);
        emit_task(&ctx, TASK_EXIT_PROCESS, tgid, tid, 0);
    } else {
        emit_task(&ctx, TASK_EXIT_THREAD, tgid, tid, 0);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
