//! raw_syscalls:sys_enter / sys_exit: the latency of every syscall of the
//! traced processes, and the hook for the syscalls decoded further
//! (connect, DNS traffic).

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use tracer_common::{LostCounter, STACK_FOR_CONNECT, ThreadEntry, sysno};

use crate::{
    calls::{self, Finished, fd_only, is_fd_io},
    connect, dns, http, idle,
    maps::{THREAD_ENTRIES, count_lost, dns_sockets_open, traced_cached, traced_via_cache},
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

/// raw_syscalls:sys_enter(struct pt_regs *regs, long id)
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !traced_via_cache(tgid, || crate::scope::traced_or_adopted(&ctx, pid_tgid)) {
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
    if nr == sysno::CLOSE {
        // While the number is still this socket's: by the exit, another
        // thread's accept, socket or connect may have it already, and
        // forgetting it then would forget that new socket (see
        // `tracer_server_io`). Linux frees the number even when close
        // fails, but for EBADF, when it was not open.
        idle::tracer_server_io(u64::from(tgid), nr, args[0], 0, start_ns);
        let fd = args[0] as u32;
        dns::on_close(tgid, fd);
        tls::on_close(tgid, fd);
        connect::on_close(tgid, fd);
    }
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
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    if traced_cached(tgid) == Some(false) {
        // Not traced (this CPU's last answer for its process, and the
        // traced set has not changed since): no entry to look up.
        return 0;
    }
    let Some(slot) = THREAD_ENTRIES.get_ptr_mut(tid) else {
        return 0;
    };
    // After the lookups, not before: the clock is the dearest step here
    // (some 34 ns a read on this VM), and every other process's syscalls
    // pass through this program too.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: map value of this thread; only this thread writes it.
    let entry = unsafe { &mut *slot };
    if entry.start_ns == 0 {
        // Entered before we attached, or already consumed.
        return 0;
    }
    let duration = now.saturating_sub(entry.start_ns);
    let start_ns = entry.start_ns;
    entry.start_ns = 0;
    calls::record(tgid, entry, now, duration);
    let ret: i64 = ctx.arg(1);
    if is_fd_io(entry.nr) && ret >= 0 {
        entry.last_io_fd = entry.args[0] as i32;
    }
    if calls::is_read(entry.nr) && ret > 0 {
        entry.read_just_before = 1;
    } else if !tracer_common::keeps_read_hint(entry.nr) {
        entry.read_just_before = 0;
    }
    if entry.in_tls != 0 {
        tls::on_nested_syscall(tid, entry, ret, duration);
    }
    if idle::is_server_io(entry.nr) {
        let accepted = entry.nr == sysno::ACCEPT || entry.nr == sysno::ACCEPT4;
        let fd = if accepted { ret as u64 } else { entry.args[0] };
        if (!accepted || ret >= 0)
            && idle::tracer_server_io(tgid as u64, entry.nr, fd, ret as u64, now) != 0
        {
            // A request began: its line is at the buffer still in the
            // saved registers.
            let regs: *const u8 = ctx.arg(0);
            // SAFETY: the kernel pt_regs of this syscall; the helper checks.
            let buf = mem::kernel_or(unsafe { regs.add(ARG_REGS[1]) } as *const u64, 0);
            http::tracer_request_line(
                pid_tgid,
                (entry.nr << 32) | (fd & 0xffff_ffff),
                buf,
                ret as u64,
            );
        }
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
                // Taken at its entry.
                sysno::CLOSE => {}
                sysno::POLL | sysno::PPOLL => {
                    known_wait = dns::on_poll_exit(&call) || tls::on_poll_exit(&call);
                }
                sysno::MMAP => tls::on_mmap_exit(&call),
                _ => dns::on_io_exit(&call),
            }
        }
        if fd_only(entry.nr) && ret > 0 && dns_sockets_open() {
            // The buffer's address is still in the saved registers.
            let regs: *const u8 = ctx.arg(0);
            // SAFETY: the kernel pt_regs of this syscall; the helper checks.
            let buf = mem::kernel_or(unsafe { regs.add(ARG_REGS[1]) } as *const u64, 0);
            dns::tracer_dns_fd_io(
                pid_tgid,
                (entry.nr << 32) | (entry.args[0] & 0xffff_ffff),
                buf,
                ret as u64,
                start_ns,
            );
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
    if idle::is_event_wait(entry.nr) {
        // Waits one after the other (a timer's timeout, a wake with nothing
        // to read) add up until the loop reads or writes.
        if !known_wait && entry.in_tls == 0 {
            entry.loop_wait_ns += duration;
        }
    } else if entry.loop_wait_ns > 0 && is_fd_io(entry.nr) {
        // The first read or write after the wait says what it was for.
        let wait = entry.loop_wait_ns;
        entry.loop_wait_ns = 0;
        if calls::is_read(entry.nr) && ret > 0 && entry.in_tls == 0 {
            tls::tracer_tls_loop_wait(tgid as u64, tid as u64, entry.args[0], wait, start_ns);
        }
    }
    0
}
