//! Call sites: at the entry of a call that reaches user space, copy the
//! thread's registers and the top of its user stack (unwound with DWARF CFI
//! in user space: the Python and glibc here have no frame pointers), and,
//! in a CPython process, walk the interpreter's own frames. Kernel side
//! reads pointers only; names and lines are resolved in user space.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_task, generated},
    macros::map,
    maps::PerCpuArray,
};
use tracer_common::{
    EventKind, FRAME_WORDS, FRAMES_HEADER, LAYOUT_NO_STACKS, LostCounter, NATIVE_FRAMES,
    PY_FRAME_VIA_CFRAME, PY_FRAMES, PY_NO_THREAD, PY_NOT_PYTHON, PY_OK, PY_READ_FAILED, PY_THREADS,
    PyFrameRef, PyProcess, STACK_COPY, StackEvent, UNWOUND_UNKNOWN_CODE,
};

use crate::{
    maps::{EVENTS, KERNEL_LAYOUT, PY_PROCS, count_lost, submit_flags},
    mem::{self, user_or as read_or},
    unwind::{self, FRAMES_SCRATCH, FRAMES_SEND_MASK, UNWIND_PROCS},
};

/// User registers at the call.
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// At a function's first instruction (a uprobe on its entry).
    pub at_entry: bool,
}

impl UserRegs {
    /// From a `struct pt_regs *` in kernel memory (a syscall's).
    #[inline(always)]
    pub fn from_kernel_pt_regs(regs: *const pt_regs) -> Self {
        // SAFETY: the helper checks the kernel access.
        unsafe {
            Self {
                ip: mem::kernel_or(&raw const (*regs).rip, 0),
                sp: mem::kernel_or(&raw const (*regs).rsp, 0),
                bp: mem::kernel_or(&raw const (*regs).rbp, 0),
                at_entry: false,
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
                at_entry: true,
            }
        }
    }
}

/// Takes the stack of the current thread and sends it, tagged with the
/// start time of the call it belongs to; whether a record went.
#[inline(always)]
pub fn capture(tgid: u32, tid: u32, reason: u32, key_ns: u64, regs: &UserRegs) -> bool {
    if KERNEL_LAYOUT
        .get(0)
        .is_some_and(|l| l.flags & LAYOUT_NO_STACKS != 0)
    {
        return false;
    }
    if let Some(sent) = send_frames(tgid, tid, reason, key_ns, regs) {
        return sent;
    }
    let Some(mut slot) = EVENTS.reserve::<StackEvent>(0) else {
        count_lost(LostCounter::RingFull);
        return false;
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
    true
}

/// Sends the call site unwound in the kernel, when the process's tables
/// are loaded: the Python frames first (the native unwind stops at the
/// interpreter when there are some), then the native frames, as one
/// record as long as its frames. Without tables, once the process has
/// sent its stack copies: the leaf and the Python frames. None: take the
/// copy; else whether the record went.
#[inline(always)]
fn send_frames(tgid: u32, tid: u32, reason: u32, key_ns: u64, regs: &UserRegs) -> Option<bool> {
    let tables = UNWIND_PROCS.get_ptr(tgid).is_some();
    if !tables && unwind::may_copy_stack(tgid) {
        return None;
    }
    let found = tracer_py_thread_frame(tgid);
    let (py_status, py_depth) = if found < PY_FOUND_MIN {
        (found as u32, 0)
    } else {
        (PY_OK, tracer_py_walk_frames(tgid, found))
    };
    let unwound = if tables {
        unwind::unwind(tgid, regs.ip, regs.sp, regs.bp, regs.at_entry, py_depth > 0)
    } else {
        unwind::leaf_only(regs.ip)
    };
    let (depth, end) = unwound?;
    if depth == 1 && end == UNWOUND_UNKNOWN_CODE {
        // The call is in code its tables do not have yet (a library it
        // loaded just now, still compiling): the copy, unwound in user
        // space, which knows the library.
        return None;
    }
    let (Some(scratch), Some(py)) = (FRAMES_SCRATCH.get_ptr_mut(0), PY_SCRATCH.get_ptr(0)) else {
        return Some(false);
    };
    // SAFETY: this CPU's slot.
    let ev = unsafe { &raw mut (*scratch).ev };
    if depth == 0 || depth as usize > NATIVE_FRAMES || py_depth as usize > PY_FRAMES {
        return Some(false);
    }
    // SAFETY: this CPU's slot, written by the unwind just above; the copy
    // of the Python frames ends within `words` (depth and py_depth are
    // bounded just above).
    unsafe {
        (*ev).kind = EventKind::Frames as u32;
        (*ev).tgid = tgid;
        (*ev).tid = tid;
        (*ev).reason = reason;
        (*ev).key_ns = key_ns;
        (*ev).native_depth = depth;
        (*ev).native_end = end;
        (*ev).py_status = py_status;
        (*ev).py_depth = py_depth;
        if py_depth > 0 {
            let copied = generated::bpf_probe_read_kernel(
                (*ev).words.as_mut_ptr().add(depth as usize).cast(),
                // Masked for the verifier (see below); it changes nothing.
                core::hint::black_box(py_depth * core::mem::size_of::<PyFrameRef>() as u32) & 1023,
                py.cast(),
            );
            if copied != 0 {
                (*ev).py_status = PY_READ_FAILED;
                (*ev).py_depth = 0;
            }
        }
    }
    // SAFETY: as above.
    let words = unsafe { (*ev).native_depth + 2 * (*ev).py_depth } as usize;
    if words > FRAME_WORDS {
        return Some(false);
    }
    // Hidden from LLVM, which knows the mask changes nothing and drops
    // it; the verifier does not know that.
    let len = core::hint::black_box(FRAMES_HEADER + words * 8) & FRAMES_SEND_MASK;
    // SAFETY: the record's first bytes, within the scratch slot (the mask
    // bounds `len` by its size).
    let bytes = unsafe { core::slice::from_raw_parts(scratch.cast::<u8>(), len) };
    if EVENTS
        .output::<[u8]>(bytes, submit_flags(py_depth > 0))
        .is_err()
    {
        count_lost(LostCounter::RingFull);
        return Some(false);
    }
    Some(true)
}

/// Copies the top of the user stack: as much of `STACK_COPY` bytes as is
/// mapped. A read past the end of the stack mapping fails, and the mapping
/// ends at a page boundary: after the whole copy, try the copies that end
/// at each of the next pages' boundaries, largest first. (Halving instead
/// lost up to a third of what was there: a main thread near the top of its
/// stack got 2 KiB of its 5, too little to reach the program's frames.)
#[inline(always)]
fn copy_stack(dst: &mut [u8; STACK_COPY], sp: u64) -> u32 {
    const PAGE: u64 = 4096;
    let src = sp as *const core::ffi::c_void;
    let to_page = PAGE - (sp & (PAGE - 1));
    for pages in [STACK_COPY as u64 / PAGE, 3, 2, 1, 0] {
        let mut size = to_page + pages * PAGE;
        if size > STACK_COPY as u64 {
            size = STACK_COPY as u64;
        }
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
    // SAFETY: a helper without arguments; the read of what it returns
    // goes through the checked helper.
    let task = unsafe { bpf_get_current_task() };
    Some(mem::kernel_at_or::<u64>(task, layout.task_fsbase, 0)).filter(|&fs| fs != 0)
}

/// This thread's Python frames, written into `ev.py`. Returns (status,
/// frames written).
///
/// The two walks are global functions, which the verifier checks once
/// each, on their own, instead of once per caller and per path through it:
/// inlined into `sys_enter`, they made older verifiers (5.10, 6.1) give up
/// at their budget of a million instructions. A global function takes
/// only scalars, so the frames come back through a per-CPU scratch slot.
#[inline(always)]
fn python_frames(tgid: u32, ev: &mut StackEvent) -> (u32, u32) {
    let found = tracer_py_thread_frame(tgid);
    if found < PY_FOUND_MIN {
        return (found as u32, 0);
    }
    let depth = tracer_py_walk_frames(tgid, found);
    let Some(scratch) = PY_SCRATCH.get_ptr(0) else {
        return (PY_READ_FAILED, 0);
    };
    // SAFETY: a per-CPU map value of the same type and size as `ev.py`,
    // written by the walk just above on this CPU; one helper call copies
    // it (by value it would not fit the 512-byte eBPF stack).
    let copied = unsafe {
        generated::bpf_probe_read_kernel(
            ev.py.as_mut_ptr().cast(),
            core::mem::size_of_val(&ev.py) as u32,
            scratch.cast(),
        )
    };
    if copied == 0 {
        (PY_OK, depth)
    } else {
        (PY_READ_FAILED, 0)
    }
}

/// `tracer_py_thread_frame` returns a status below this, a frame address
/// (8-byte aligned, never this small) otherwise.
const PY_FOUND_MIN: u64 = 8;

/// The frames of the last walk on this CPU.
#[map]
static PY_SCRATCH: PerCpuArray<[PyFrameRef; PY_FRAMES]> = PerCpuArray::with_max_entries(1, 0);

/// Walks the interpreter's thread states to this thread's and returns its
/// current frame, or a `PY_*` status (below `PY_FOUND_MIN`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_py_thread_frame(tgid: u32) -> u64 {
    let Some(py) = PY_PROCS.get_ptr(tgid) else {
        return u64::from(PY_NOT_PYTHON);
    };
    // SAFETY: map value pointer, valid for this program run.
    let py: &PyProcess = unsafe { &*py };
    let Some(me) = current_fsbase() else {
        return u64::from(PY_READ_FAILED);
    };
    let interp = read_or::<u64>(py.runtime + py.runtime_interp_head as u64, 0);
    if interp == 0 {
        return u64::from(PY_READ_FAILED);
    }
    let mut tstate = read_or::<u64>(interp + py.interp_threads_head as u64, 0);
    for _ in 0..PY_THREADS {
        if tstate == 0 {
            break;
        }
        // `me` is never 0.
        if read_or::<u64>(tstate + py.tstate_thread_id as u64, 0) == me {
            let frame = if py.frame_mode == PY_FRAME_VIA_CFRAME {
                let cframe = read_or::<u64>(tstate + py.tstate_frame as u64, 0);
                if cframe == 0 {
                    0
                } else {
                    read_or::<u64>(cframe + py.cframe_current as u64, 0)
                }
            } else {
                read_or::<u64>(tstate + py.tstate_frame as u64, 0)
            };
            // A new thread's state briefly has no frame: keep looking.
            if frame >= PY_FOUND_MIN {
                return frame;
            }
        }
        tstate = read_or::<u64>(tstate + py.tstate_next as u64, 0);
    }
    u64::from(PY_NO_THREAD)
}

/// Follows the frame chain from `frame` into this CPU's `PY_SCRATCH`;
/// returns the number of frames written.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_py_walk_frames(tgid: u32, mut frame: u64) -> u32 {
    let Some(py) = PY_PROCS.get_ptr(tgid) else {
        return 0;
    };
    // SAFETY: map value pointer, valid for this program run.
    let py: &PyProcess = unsafe { &*py };
    let Some(out) = PY_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; the program is not re-entered on this CPU.
    let out = unsafe { &mut *out };
    let mut depth = 0u32;
    for slot in out.iter_mut() {
        if frame == 0 {
            break;
        }
        // 3.12+: frames owned by the C stack are shims, not code.
        let shim =
            py.frame_owner != u32::MAX && read_or::<u8>(frame + py.frame_owner as u64, 0) == 3;
        if shim {
            slot.code = 0;
            slot.instr = 0;
        } else {
            slot.code = read_or::<u64>(frame + py.frame_code as u64, 0);
            slot.instr = if py.instr_is_index == 1 {
                read_or::<i32>(frame + py.frame_instr as u64, -1) as i64 as u64
            } else {
                read_or::<u64>(frame + py.frame_instr as u64, 0)
            };
        }
        depth += 1;
        frame = read_or::<u64>(frame + py.frame_previous as u64, 0);
    }
    depth
}
