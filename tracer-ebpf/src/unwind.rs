//! Native stacks unwound in the kernel, by the tables user space compiled
//! from each module's `.eh_frame` (`tracer_common::unwind`): a call site
//! costs a few hundred bytes of return addresses instead of a 16 KiB copy
//! of the stack for user space to unwind. A process without tables yet
//! (or that did not fit) keeps the copy (`stacks`).
//!
//! One step, from a frame to its caller, is a global function, which the
//! verifier checks once on its own (two binary searches, each of bounded
//! depth), not once per frame of the loop that calls it.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use tracer_common::{
    FramesEvent, NATIVE_FRAMES, STACK_COPIES_ALWAYS, STACK_COPIES_MAX, STACK_COPIES_WITHOUT_TABLES,
    Step, UNWIND_MAP_INTERPRETER, UNWIND_MAPPINGS_MAX, UNWIND_PROCS_MAX, UNWIND_ROWS_MAX,
    UNWOUND_END, UNWOUND_INTERPRETER, UNWOUND_LIMIT, UNWOUND_NO_TABLES_YET, UNWOUND_STOPPED,
    UNWOUND_UNKNOWN_CODE, UnwindMapping, UnwindMappings, UnwindRegs, UnwindRow, find_row,
    unwind_step,
};

use crate::mem;

/// Every module's rows; each process's mappings say which are theirs.
/// Mappable: user space stores a module's rows into it directly, not one
/// syscall per row (86,000 rows of libcrypto took 0.23 s that way).
#[map]
pub static UNWIND_ROWS: Array<UnwindRow> =
    Array::with_max_entries(UNWIND_ROWS_MAX, aya_ebpf::bindings::BPF_F_MMAPABLE);

/// The executable mappings of each process whose tables are loaded.
#[map]
pub static UNWIND_PROCS: HashMap<u32, UnwindMappings> =
    HashMap::with_max_entries(UNWIND_PROCS_MAX, 0);

/// Stack copies sent by each traced process that has no tables (see
/// `STACK_COPIES_WITHOUT_TABLES`), or `STACK_COPIES_ALWAYS` from user
/// space; dropped at its exec and exit. When full, every process may
/// copy, as before there was a share.
#[map]
pub static STACK_COPIES: HashMap<u32, u32> = HashMap::with_max_entries(STACK_COPIES_MAX, 0);

/// Whether a process without tables may send one more stack copy: it has
/// sent fewer than `STACK_COPIES_WITHOUT_TABLES`, or its tables will never
/// be written.
#[inline(always)]
pub fn may_copy_stack(tgid: u32) -> bool {
    match STACK_COPIES.get_ptr_mut(tgid) {
        Some(sent) => {
            // SAFETY: a live map value. Not atomic (5.10 has no fetching
            // atomics): two threads of a process at once may each send the
            // last copy, one over the share.
            let sent = unsafe { &mut *sent };
            if *sent >= STACK_COPIES_WITHOUT_TABLES {
                return *sent == STACK_COPIES_ALWAYS;
            }
            *sent += 1;
            true
        }
        None => {
            let _ = STACK_COPIES.insert(tgid, 1, 0);
            true
        }
    }
}

/// The leaf alone into this CPU's record, for a process without tables
/// that has sent its copies. Returns (depth, reason) as `unwind` does.
#[inline(always)]
pub fn leaf_only(pc: u64) -> Option<(u32, u32)> {
    let ev = FRAMES_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; the program is not re-entered on this CPU.
    unsafe { (*ev).ev.words[0] = pc };
    Some((1, UNWOUND_NO_TABLES_YET))
}

/// The record being built on this CPU (too large for the eBPF stack),
/// with room after it for any length `FRAMES_SEND_MASK` lets through: the
/// length sent is masked, which every verifier follows, where a compared
/// one was lost on the way to the helper (LLVM compared the word count
/// before multiplying it).
#[map]
pub static FRAMES_SCRATCH: PerCpuArray<FramesScratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
pub struct FramesScratch {
    pub ev: FramesEvent,
    _slack: [u8; FRAMES_SEND_MASK + 1 - core::mem::size_of::<FramesEvent>()],
}

/// Masks the length of a record sent: at least the largest record.
pub const FRAMES_SEND_MASK: usize = 2047;
const _: () = assert!(core::mem::size_of::<FramesEvent>() <= FRAMES_SEND_MASK);

/// The registers of the frame being unwound on this CPU.
#[map]
static UNWIND_STATE: PerCpuArray<UnwindState> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct UnwindState {
    pc: u64,
    sp: u64,
    bp: u64,
    /// Frames written to `FRAMES_SCRATCH` so far.
    depth: u32,
    /// 1 when the leaf is a function's first instruction (a uprobe):
    /// without CFI there, its return address is at sp, not above rbp.
    at_entry: u32,
}

/// Step results besides the `UNWOUND_*` reasons.
const CONTINUE: u32 = 0;

/// Unwinds the current thread from `pc`, `sp`, `bp` into this CPU's
/// `FRAMES_SCRATCH` words. `in_python`: its Python frames were read, so
/// the native frames stop at the interpreter. Returns (depth, reason), or
/// None when the process has no tables.
#[inline(always)]
pub fn unwind(
    tgid: u32,
    pc: u64,
    sp: u64,
    bp: u64,
    at_entry: bool,
    in_python: bool,
) -> Option<(u32, u32)> {
    UNWIND_PROCS.get_ptr(tgid)?;
    let state = UNWIND_STATE.get_ptr_mut(0)?;
    let ev = FRAMES_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slots; the program is not re-entered on this CPU.
    let ev = unsafe { &raw mut (*ev).ev };
    // SAFETY: as above.
    unsafe {
        *state = UnwindState {
            pc,
            sp,
            bp,
            depth: 1,
            at_entry: u32::from(at_entry),
        };
        (*ev).words[0] = pc;
    }
    let mut end = UNWOUND_LIMIT;
    for _ in 1..NATIVE_FRAMES {
        let r = tracer_unwind_step(tgid, u32::from(in_python));
        if r != CONTINUE {
            end = r;
            break;
        }
    }
    // SAFETY: as above.
    Some((unsafe { (*state).depth }, end))
}

/// One frame up: the caller's registers into `UNWIND_STATE`, its return
/// address into the next word of `FRAMES_SCRATCH`. Returns `CONTINUE` or
/// why the unwind is over.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_unwind_step(tgid: u32, in_python: u32) -> u32 {
    let (Some(state), Some(ev), Some(maps)) = (
        UNWIND_STATE.get_ptr_mut(0),
        FRAMES_SCRATCH.get_ptr_mut(0),
        UNWIND_PROCS.get_ptr(tgid),
    ) else {
        return UNWOUND_STOPPED;
    };
    // SAFETY: this CPU's slots, and a live map value.
    let (state, ev, maps) = unsafe { (&mut *state, &mut (*ev).ev, &*maps) };
    let depth = state.depth as usize;
    if depth >= NATIVE_FRAMES {
        return UNWOUND_LIMIT;
    }
    // A caller's frame is in its call instruction, one byte before the
    // return address.
    let pc = if depth == 1 { state.pc } else { state.pc - 1 };
    let Some(mapping) = mapping_of(maps, pc) else {
        // A return address in no code we know: JIT code, or the unwind
        // went wrong (a frame that kept no rbp for its CFI to find). User
        // space's unwinder drops it too; the leaf stays.
        if depth > 1 {
            state.depth -= 1;
        }
        return UNWOUND_UNKNOWN_CODE;
    };
    if in_python != 0 && mapping.flags & UNWIND_MAP_INTERPRETER != 0 {
        return UNWOUND_INTERPRETER;
    }
    let row = if mapping.rows_len == 0 {
        None
    } else {
        let at = pc.wrapping_sub(mapping.bias) as u32;
        let first = mapping.rows_start;
        find_row(mapping.rows_len, at, |i| {
            UNWIND_ROWS.get(first.wrapping_add(i)).copied()
        })
    };
    let mut regs = UnwindRegs {
        pc: state.pc,
        sp: state.sp,
        bp: state.bp,
    };
    let step = if row.is_none() && depth == 1 && state.at_entry != 0 {
        // A function's first instruction: the return address is on top.
        let ra = mem::user_or::<u64>(regs.sp, 0);
        regs.sp += 8;
        regs.pc = ra;
        if ra == 0 { Step::End } else { Step::Caller }
    } else {
        unwind_step(row.as_ref(), &mut regs, mem::user::<u64>)
    };
    match step {
        Step::Caller => {}
        Step::End => return UNWOUND_END,
        Step::Stop => return UNWOUND_STOPPED,
    }
    let Some(slot) = ev.words.get_mut(depth) else {
        return UNWOUND_LIMIT;
    };
    *slot = regs.pc;
    *state = UnwindState {
        pc: regs.pc,
        sp: regs.sp,
        bp: regs.bp,
        depth: state.depth + 1,
        at_entry: 0,
    };
    CONTINUE
}

/// The mapping `pc` is in: the last that starts at or below it, if it
/// ends above.
#[inline(always)]
fn mapping_of(maps: &UnwindMappings, pc: u64) -> Option<UnwindMapping> {
    let len = maps.len.min(UNWIND_MAPPINGS_MAX as u32);
    let (mut lo, mut hi) = (0u32, len);
    for _ in 0..8 {
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        let m = maps.entries.get(mid as usize)?;
        if m.start <= pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 {
        return None;
    }
    // Hidden from LLVM, which would otherwise index `lo` and subtract a
    // whole entry from the address, past what the verifier can follow.
    let m = maps.entries.get(core::hint::black_box(lo - 1) as usize)?;
    (pc < m.end).then_some(*m)
}
