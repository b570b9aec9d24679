//! raw_syscalls:sys_enter / sys_exit: the latency of every syscall of the
//! traced processes, and the hook for the syscalls decoded further
//! (connect, DNS traffic).

use aya_ebpf::{
    bindings::{BPF_NOEXIST, pt_regs},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use tracer_common::{
    HIST_BUCKETS, LatencyStats, LostCounter, RowName, STACK_FOR_CONNECT, SyscallKey, ThreadEntry,
    histogram::bucket_of, sysno,
};

use crate::{
    connect, dns, idle,
    maps::{ROW_NAMES, SYSCALL_STATS, THREAD_ENTRIES, ZERO_STATS, count_lost},
    mem,
    stacks::{self, UserRegs},
    tls,
};

// Offsets of syscall arguments in x86_64 `struct pt_regs`.
const ARG_REGS: [usize; 6] = [
    core::mem::offset_of!(pt_regs, rdi),
    core::mem::offset_of!(pt_regs, rsi),
    core::mem::offset_of!(pt_regs, rdx),
    core::mem::offset_of!(pt_regs, r10),
    core::mem::offset_of!(pt_regs, r8),
    core::mem::offset_of!(pt_regs, r9),
];

/// Syscalls whose arguments the exit path decodes.
#[inline(always)]
fn decoded(nr: u64) -> bool {
    matches!(
        nr,
        sysno::CONNECT
            | sysno::CLOSE
            | sysno::SENDTO
            | sysno::RECVFROM
            | sysno::SENDMSG
            | sysno::RECVMSG
            | sysno::SENDMMSG
            | sysno::POLL
            | sysno::PPOLL
            | sysno::MMAP
    )
}

/// Plain reads and writes: only their fd is kept (it names the socket of
/// an SSL call).
#[inline(always)]
fn fd_only(nr: u64) -> bool {
    matches!(
        nr,
        sysno::READ | sysno::WRITE | sysno::READV | sysno::WRITEV
    )
}

/// Syscalls that move data on a file descriptor (their first argument).
#[inline(always)]
pub fn is_fd_io(nr: u64) -> bool {
    fd_only(nr)
        || matches!(
            nr,
            sysno::SENDTO | sysno::RECVFROM | sysno::SENDMSG | sysno::RECVMSG | sysno::SENDMMSG
        )
}

/// raw_syscalls:sys_enter(struct pt_regs *regs, long id)
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !crate::tasks::traced_or_adopted(&ctx, pid_tgid) {
        return 0;
    }
    let tid = pid_tgid as u32;
    let nr: u64 = ctx.arg(1);
    if nr == sysno::URETPROBE {
        return 0;
    }
    let mut args = [0u64; 6];
    let regs: *const u8 = ctx.arg(0);
    if decoded(nr) {
        for (arg, off) in args.iter_mut().zip(ARG_REGS) {
            // SAFETY: `regs` is the kernel pt_regs of this syscall; the
            // helper checks the access.
            *arg = mem::kernel_or(unsafe { regs.add(off) } as *const u64, 0);
        }
    } else if fd_only(nr) {
        // SAFETY: as above.
        args[0] = mem::kernel_or(unsafe { regs.add(ARG_REGS[0]) } as *const u64, 0);
    }
    let start_ns = unsafe { bpf_ktime_get_ns() };
    if nr == sysno::CONNECT {
        let user = UserRegs::from_kernel_pt_regs(regs.cast());
        stacks::capture(tgid, tid, STACK_FOR_CONNECT, start_ns, &user);
    }
    // Rewrite the thread's slot in place: cheaper than a hash update, which
    // allocates a new element and frees the old one. `in_tls` and
    // `last_io_fd` outlive the syscall: leave them.
    match THREAD_ENTRIES.get_ptr_mut(tid) {
        Some(slot) => unsafe {
            (*slot).start_ns = start_ns;
            (*slot).nr = nr;
            (*slot).args = args;
            (*slot).skaddr = 0;
        },
        None => {
            let entry = ThreadEntry {
                start_ns,
                nr,
                args,
                last_io_fd: -1,
                ..Default::default()
            };
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
    let mut row_name = RowName::default();
    let owner = crate::maps::stats_owner(tgid, &mut row_name);
    let key = SyscallKey {
        tgid: owner,
        nr: entry.nr as u32,
    };
    record_syscall(&key, duration, (owner != tgid).then_some(&row_name));
    let ret: i64 = ctx.arg(1);
    if is_fd_io(entry.nr) && ret >= 0 {
        entry.last_io_fd = entry.args[0] as i32;
    }
    if entry.in_tls != 0 {
        tls::on_nested_syscall(tid, entry, ret, duration);
    }

    // Whether this wait was a resolver's or a TLS client's, not idleness.
    let known_wait = {
        let call = Finished {
            tgid,
            tid,
            entry,
            ret,
            start_ns,
            duration,
        };
        let mut known_wait = false;
        if decoded(entry.nr) {
            match entry.nr {
                sysno::CONNECT => connect::on_connect_exit(&call),
                sysno::CLOSE => {
                    dns::on_close(&call);
                    tls::on_close(&call);
                    connect::on_close(&call);
                }
                sysno::POLL | sysno::PPOLL => {
                    known_wait = dns::on_poll_exit(&call) || tls::on_poll_exit(&call);
                }
                sysno::MMAP => tls::on_mmap_exit(&call),
                _ => dns::on_io_exit(&call),
            }
        }
        if is_fd_io(entry.nr) && entry.in_tls == 0 {
            let regs: *const pt_regs = ctx.arg(0);
            idle::maybe_slow_io(&call, regs);
        }
        known_wait
    };
    if !known_wait {
        idle::account(tgid, ret, duration, entry);
    }
    0
}

/// A syscall that just returned, for the decoders.
pub struct Finished<'a> {
    pub tgid: u32,
    pub tid: u32,
    pub entry: &'a ThreadEntry,
    pub ret: i64,
    pub start_ns: u64,
    pub duration: u64,
}

#[inline(always)]
fn record_syscall(key: &SyscallKey, duration: u64, row_name: Option<&RowName>) {
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
            // A new row's name, for user space (the first one's, if two
            // names share a key).
            if let Some(name) = row_name {
                let _ = ROW_NAMES.insert(key.tgid, name, BPF_NOEXIST.into());
            }
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
pub unsafe fn atomic_add(p: *mut u64, v: u64) {
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
