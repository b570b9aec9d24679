//! Process and thread lifecycle of the traced processes: follow children,
//! and tell user space when threads start and end (the denominator of every
//! share of wall time).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::warn;
use tracer_common::{
    LostCounter, STACK_COPIES_ALWAYS, TASK_EXEC, TASK_EXIT_PROCESS, TASK_EXIT_THREAD,
    TASK_NEW_PROCESS, TASK_NEW_THREAD,
};

use crate::{
    maps::{
        KERNEL_LAYOUT, LOOKUPS, PY_PROCS, THREAD_ENTRIES, TLS_CALLS, TRACED_PROCESSES, count_lost,
        is_traced, names_changed, traced_set_changed,
    },
    mem,
    scope::emit_task,
    unwind::{STACK_COPIES, UNWIND_PROCS},
};

// task:task_newtask field offsets (checked against the format file by
// user space).
const NEWTASK_PID: usize = 8;
const NEWTASK_CLONE_FLAGS: usize = 32;
const CLONE_THREAD: u64 = 0x0001_0000;

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
        } else {
            // Its PID may be cached as another's, untraced.
            traced_set_changed();
        }
        inherit_unwind_tables(tgid, child);
        emit_task(&ctx, TASK_NEW_PROCESS, tgid, pid_tgid as u32, child);
    }
    0
}

/// A forked child maps what its parent maps, where the parent maps it:
/// it is unwound with the parent's tables from its first call (until its
/// exec), not by a 16 KiB stack copy per call until user space has probed
/// it. A thousand children forked at once each sent one and overran the
/// ring. Runs before the child can run (the tracepoint is in
/// `copy_process`). Without room in the map, the child takes the copy.
#[inline(always)]
fn inherit_unwind_tables(parent: u32, child: u32) {
    if let Some(tables) = UNWIND_PROCS.get_ptr(parent) {
        // SAFETY: a map value, passed back to the map by pointer.
        // Borrowed, not copied: the value (5 KiB) is ten times the stack.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let _ = UNWIND_PROCS.insert(child, unsafe { &*tables }, 0);
    }
    // SAFETY: a map value, read once.
    if let Some(sent) = unsafe { STACK_COPIES.get(parent) }
        && *sent == STACK_COPIES_ALWAYS
    {
        // A parent whose tables do not fit has a child whose do not.
        let _ = STACK_COPIES.insert(child, STACK_COPIES_ALWAYS, 0);
    }
}

/// A traced thread exited: drop its state; say when the whole process is gone.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced(tgid) {
        return 0;
    }
    let tid = pid_tgid as u32;
    let _ = THREAD_ENTRIES.remove(tid);
    let _ = LOOKUPS.remove(tid);
    let _ = TLS_CALLS.remove(tid);
    if group_dead(&ctx, tgid, tid) {
        let _ = TRACED_PROCESSES.remove(tgid);
        traced_set_changed();
        // Its PID may come back for a process that is not Python.
        let _ = PY_PROCS.remove(tgid);
        let _ = UNWIND_PROCS.remove(tgid);
        let _ = STACK_COPIES.remove(tgid);
        emit_task(&ctx, TASK_EXIT_PROCESS, tgid, tid, 0);
    } else {
        emit_task(&ctx, TASK_EXIT_THREAD, tgid, tid, 0);
    }
    0
}

/// Whether the exiting thread is the last of its process, by whichever
/// means this kernel has (see `KernelLayout::exit_group_dead`).
#[inline(always)]
fn group_dead(ctx: &TracePointContext, tgid: u32, tid: u32) -> bool {
    let Some(layout) = KERNEL_LAYOUT.get(0) else {
        return tid == tgid;
    };
    if layout.exit_group_dead != 0 {
        // SAFETY: an offset inside the record, from the format file.
        let dead: u8 = unsafe { ctx.read_at(layout.exit_group_dead as usize) }.unwrap_or(0);
        return dead != 0;
    }
    if layout.task_signal == 0 {
        return tid == tgid;
    }
    // SAFETY: a helper without arguments; every read of what it returns
    // goes through the checked helper.
    let task = unsafe { bpf_get_current_task() };
    let signal = mem::kernel_at_or::<u64>(task, layout.task_signal, 0);
    if signal == 0 {
        return tid == tgid;
    }
    // do_exit decrements `live` before this tracepoint runs.
    mem::kernel_at_or::<i32>(signal, layout.signal_live, -1) == 0
}

/// A traced process ran execve: user space names it after the new program
/// (calls from here on count under that name) and probes its code. A
/// dynamic program's libraries would tell it by their mmap; a static
/// executable maps nothing with a syscall, and in node mode its file is
/// new to the probes.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced(tgid) {
        return 0;
    }
    // Its tables, and where its interpreter was, are of the program it ran
    // before: user space writes the new program's when it probes it (see
    // `TASK_EXEC` there); until then its calls take the stack copy (a new
    // share of them), with no Python frames. Even the same Python run
    // again has its libpython at another address.
    let _ = UNWIND_PROCS.remove(tgid);
    let _ = PY_PROCS.remove(tgid);
    let _ = STACK_COPIES.remove(tgid);
    emit_task(&ctx, TASK_EXEC, tgid, pid_tgid as u32, 0);
    0
}

/// task:task_rename(struct task_struct *task, const char *comm): a task
/// took a new name (its exec, prctl, a write to /proc/PID/comm). Node mode
/// keeps each thread's row of its process's name (`ThreadEntry::row`);
/// the next syscall of each thread finds its row again.
#[raw_tracepoint(tracepoint = "task_rename")]
pub fn task_rename(_ctx: RawTracePointContext) -> i32 {
    names_changed();
    0
}

/// cgroup:cgroup_attach_task: a task moved to another cgroup, which is
/// half of a row's name in node mode.
#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn cgroup_attach_task(_ctx: RawTracePointContext) -> i32 {
    names_changed();
    0
}
