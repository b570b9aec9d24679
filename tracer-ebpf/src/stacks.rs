//! Call sites: at the entry of a call that reaches user space, copy the
//! thread's registers and the top of its user stack (unwound with DWARF CFI
//! in user space: the Python and glibc here have no frame pointers), and,
//! in a CPython process, walk the interpreter's own frames. Kernel side
//! reads pointers only; names and lines are resolved in user space.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user, generated},
};
use tracer_common::{
    EventKind, LAYOUT_NO_STACKS, LostCounter, PY_FRAME_VIA_CFRAME, PY_FRAMES, PY_NO_THREAD,
    PY_NOT_PYTHON, PY_OK, PY_READ_FAILED, PY_THREADS, PyProcess, STACK_COPY, StackEvent,
};

use crate::maps::{EVENTS, KERNEL_LAYOUT, PY_PROCS, count_lost, submit_flags};

/// User registers at the call.
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

impl UserRegs {
    /// From a `struct pt_regs *` in kernel memory (a syscall's).
    #[inline(always)]
    pub fn from_kernel_pt_regs(regs: *const pt_regs) -> Self {
        // SAFETY: the helper checks the kernel access.
        unsafe {
            Self {
                ip: bpf_probe_read_kernel(&raw const (*regs).rip).unwrap_or(0),
                sp: bpf_probe_read_kernel(&raw const (*regs).rsp).unwrap_or(0),
                bp: bpf_probe_read_kernel(&raw const (*regs).rbp).unwrap_or(0),
            }
        }
    }

    /// From a uprobe's context, which is the user registers.
    #[inline(always)]
    pub fn from_probe_ctx(regs: *const pt_regs) -> Self {
        // SAFETY: the probe context is a pt_regs the program may read.
        unsafe {
            Self {
                ip: (*regs).rip,
                sp: (*regs).rsp,
                bp: (*regs).rbp,
            }
        }
    }
}

#[inline(always)]
fn read<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: the helper checks the user-space access.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// Takes the stack of the current thread and sends it, tagged with the
/// start time of the call it belongs to.
#[inline(always)]
pub fn capture(tgid: u32, tid: u32, reason: u32, key_ns: u64, regs: &UserRegs) {
    if KERNEL_LAYOUT
        .get(0)
        .is_some_and(|l| l.flags & LAYOUT_NO_STACKS != 0)
    {
        return;
    }
    let Some(mut slot) = EVENTS.reserve::<StackEvent>(0) else {
        count_lost(LostCounter::RingFull);
        return;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points to a reserved ring buffer record of our size.
    unsafe {
        (*ev).kind = EventKind::Stack as u32;
        (*ev).tgid = tgid;
        (*ev).tid = tid;
        (*ev).reason = reason;
        (*ev).key_ns = key_ns;
        (*ev).ip = regs.ip;
        (*ev).sp = regs.sp;
        (*ev).bp = regs.bp;
        (*ev)._pad = 0;
        (*ev).stack_len = copy_stack(&mut (*ev).stack, regs.sp);
        let (status, depth) = python_frames(tgid, &mut *ev);
        (*ev).py_status = status;
        (*ev).py_depth = depth;
    }
    // Python frames name code objects read from the live process: wake the
    // reader before the process can exit.
    // SAFETY: written just above.
    let urgent = unsafe { (*ev).py_depth } > 0;
    slot.submit(submit_flags(urgent));
}

/// Copies the top of the user stack: as much of `STACK_COPY` bytes as is
/// mapped (a read past the end of the stack mapping fails, so try smaller).
#[inline(always)]
fn copy_stack(dst: &mut [u8; STACK_COPY], sp: u64) -> u32 {
    let src = sp as *const core::ffi::c_void;
    // The stack mapping ends somewhere above sp: keep the largest copy that
    // fits (a new thread's stack is shallow).
    for size in [
        STACK_COPY,
        STACK_COPY * 3 / 4,
        STACK_COPY / 2,
        STACK_COPY * 3 / 8,
        STACK_COPY / 4,
        STACK_COPY * 3 / 16,
        STACK_COPY / 8,
        STACK_COPY / 16,
        STACK_COPY / 32,
    ] {
        // SAFETY: the helper checks the user-space access; `size` is at most
        // the destination's length.
        let r =
            unsafe { generated::bpf_probe_read_user(dst.as_mut_ptr().cast(), size as u32, src) };
        if r == 0 {
            return size as u32;
        }
    }
    0
}

/// The thread's fs base: what CPython stores as a thread state's
/// `thread_id` (pthread_self). Unlike a tid it is the same in every PID
/// namespace.
#[inline(always)]
fn current_fsbase() -> Option<u64> {
    let layout = KERNEL_LAYOUT.get(0)?;
    if layout.task_fsbase == 0 {
        return None;
    }
    // SAFETY: the current task, read through the helper.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        bpf_probe_read_kernel(task.add(layout.task_fsbase as usize) as *const u64).ok()
    }
}

/// Walks the interpreter to this thread's state, then its frame chain.
/// Returns (status, frames written).
#[inline(always)]
fn python_frames(tgid: u32, ev: &mut StackEvent) -> (u32, u32) {
    let Some(py) = PY_PROCS.get_ptr(tgid) else {
        return (PY_NOT_PYTHON, 0);
    };
    // SAFETY: map value pointer, valid for this program run.
    let py: &PyProcess = unsafe { &*py };
    let Some(me) = current_fsbase() else {
        return (PY_READ_FAILED, 0);
    };
    let Some(interp) = read::<u64>(py.runtime + py.runtime_interp_head as u64) else {
        return (PY_READ_FAILED, 0);
    };
    let mut tstate = read::<u64>(interp + py.interp_threads_head as u64).unwrap_or(0);
    let mut frame = 0u64;
    for _ in 0..PY_THREADS {
        if tstate == 0 {
            break;
        }
        if read::<u64>(tstate + py.tstate_thread_id as u64) == Some(me) {
            frame = if py.frame_mode == PY_FRAME_VIA_CFRAME {
                read::<u64>(tstate + py.tstate_frame as u64)
                    .and_then(|cf| read::<u64>(cf + py.cframe_current as u64))
                    .unwrap_or(0)
            } else {
                read::<u64>(tstate + py.tstate_frame as u64).unwrap_or(0)
            };
            // A new thread's state briefly has no frame: keep looking.
            if frame != 0 {
                break;
            }
        }
        tstate = read::<u64>(tstate + py.tstate_next as u64).unwrap_or(0);
    }
    if frame == 0 {
        return (PY_NO_THREAD, 0);
    }
    let mut depth = 0u32;
    for i in 0..PY_FRAMES {
        if frame == 0 {
            break;
        }
        // 3.12+: frames owned by the C stack are shims, not code.
        let shim =
            py.frame_owner != u32::MAX && read::<u8>(frame + py.frame_owner as u64) == Some(3);
        if !shim {
            let code = read::<u64>(frame + py.frame_code as u64).unwrap_or(0);
            let instr = if py.instr_is_index == 1 {
                read::<i32>(frame + py.frame_instr as u64).unwrap_or(-1) as i64 as u64
            } else {
                read::<u64>(frame + py.frame_instr as u64).unwrap_or(0)
            };
            if let Some(slot) = ev.py.get_mut(i) {
                slot.code = code;
                slot.instr = instr;
                depth += 1;
            }
        } else if let Some(slot) = ev.py.get_mut(i) {
            slot.code = 0;
            slot.instr = 0;
            depth += 1;
        }
        frame = read::<u64>(frame + py.frame_previous as u64).unwrap_or(0);
    }
    (PY_OK, depth)
}
