//! What is work and what is waiting for work: the waits of a thread that
//! accepts connections (a server's listener, idle until a client comes)
//! are counted apart, so shares of time are shares of the busy time, as a
//! profiler of request handlers would give them. And single reads and
//! writes that take long, with their call site: a process waiting on a
//! database, a pipe, a disk.

use aya_ebpf::bindings::pt_regs;
use tracer_common::{EventKind, FdKey, SLOW_IO_NS, STACK_FOR_IO, SlowIoEvent, ThreadEntry, sysno};

use crate::{
    calls::{Finished, atomic_add},
    maps::{DNS_SOCKETS, IDLE_NS, KERNEL_LAYOUT, output},
    stacks::{self, UserRegs},
};

fn add_idle(tgid: u32, ns: u64) {
    if ns == 0 {
        return;
    }
    match IDLE_NS.get_ptr_mut(tgid) {
        // SAFETY: a live map value; other threads of the process add too.
        Some(p) => unsafe { atomic_add(p, ns) },
        None => {
            let _ = IDLE_NS.insert(tgid, ns, 0);
        }
    }
}

#[inline(always)]
fn is_wait_for_work(nr: u64) -> bool {
    matches!(
        nr,
        sysno::POLL
            | sysno::PPOLL
            | sysno::SELECT
            | sysno::PSELECT6
            | sysno::EPOLL_WAIT
            | sysno::EPOLL_PWAIT
            | sysno::EPOLL_PWAIT2
            | sysno::ACCEPT
            | sysno::ACCEPT4
    )
}

/// Counts a finished wait as idle if its thread is a listener; a thread's
/// first successful accept makes it one, and its earlier waits idle too.
#[inline(always)]
pub fn account(tgid: u32, ret: i64, duration: u64, entry: &mut ThreadEntry) {
    let nr = entry.nr;
    if !is_wait_for_work(nr) {
        return;
    }
    if entry.listener != 0 {
        add_idle(tgid, duration);
        return;
    }
    if (nr == sysno::ACCEPT || nr == sysno::ACCEPT4) && ret >= 0 {
        entry.listener = 1;
        add_idle(tgid, entry.pending_wait_ns + duration);
        entry.pending_wait_ns = 0;
    } else {
        entry.pending_wait_ns += duration;
    }
}

/// A read or write that took at least the slow-I/O threshold: sent on its
/// own with the stack of the thread (unchanged since the syscall began).
#[inline(always)]
pub fn maybe_slow_io(call: &Finished, regs: *const pt_regs) {
    let threshold = match KERNEL_LAYOUT.get(0) {
        Some(l) if l.slow_io_ns > 0 => l.slow_io_ns,
        _ => SLOW_IO_NS,
    };
    if call.duration < threshold {
        return;
    }
    let fd = call.entry.args[0] as i32;
    // DNS traffic is the DNS decoder's.
    let key = FdKey {
        tgid: call.tgid,
        fd: fd as u32,
    };
    if DNS_SOCKETS.get_ptr(key).is_some() {
        return;
    }
    // The stack first: user space joins it to the event that follows.
    let user = UserRegs::from_kernel_pt_regs(regs);
    stacks::capture(call.tgid, call.tid, STACK_FOR_IO, call.start_ns, &user);
    output(&SlowIoEvent {
        kind: EventKind::SlowIo as u32,
        tgid: call.tgid,
        tid: call.tid,
        fd,
        nr: call.entry.nr as u32,
        _pad: 0,
        start_ns: call.start_ns,
        duration_ns: call.duration,
        ret: call.ret,
    });
}
