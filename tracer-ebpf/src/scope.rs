//! Which processes are traced: the traced set, and node mode's adoption of
//! a process at its first probe hit (told to user space as a task record).
//! A helper every kind's entry point calls.

use aya_ebpf::{EbpfContext, helpers::bpf_ktime_get_ns};
use tracer_common::{EventKind, TASK_ADOPTED, TaskEvent};

use crate::maps::{adopt_current, is_traced, output_with};

/// Tells user space of a task's start, end, exec or adoption, at once.
pub fn emit_task(ctx: &impl EbpfContext, what: u32, tgid: u32, tid: u32, child: u32) {
    let comm = ctx.command().unwrap_or([0; 16]);
    // Rare, and user space must know at once (a process to probe, or one
    // that is gone): wake it.
    output_with(
        &TaskEvent {
            kind: EventKind::Task as u32,
            what,
            tgid,
            tid,
            child,
            _pad: 0,
            ts_ns: unsafe { bpf_ktime_get_ns() },
            comm,
        },
        true,
    );
}

/// Whether the current process is traced, adopting it first in node mode
/// (and telling user space). For probes that run in the process itself:
/// syscalls, and the uprobes, whose call may come before any syscall.
#[inline(always)]
pub fn traced_or_adopted(ctx: &impl EbpfContext, pid_tgid: u64) -> bool {
    let tgid = (pid_tgid >> 32) as u32;
    if is_traced(tgid) {
        return true;
    }
    if !adopt_current(tgid) {
        return false;
    }
    emit_task(ctx, TASK_ADOPTED, tgid, pid_tgid as u32, tgid);
    true
}
