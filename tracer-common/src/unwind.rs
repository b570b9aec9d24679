//! Native stacks unwound in the kernel: compact unwind tables compiled in
//! user space from each module's `.eh_frame`, the modules each process
//! maps, and the one step from a frame to its caller that both the eBPF
//! unwinder and user space's tests run.
//!
//! A row says, from its address up to the next row's, where the canonical
//! frame address (CFA: the caller's stack pointer) is, as rsp or rbp plus
//! an offset, and where rbp was saved. The return address is at CFA - 8 on
//! x86_64 (rows whose CFI says otherwise are compiled as "no information").
//! This is the layout of the Parca agent's and the OpenTelemetry
//! profiler's tables, smaller: 8 bytes a row.

/// One row of a module's table. `pc` is the module's own (link-time)
/// address, which fits 32 bits in every shared object and executable of
/// a size seen in practice (the compiler refuses a module where it does
/// not).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    pub pc: u32,
    /// The CFA's offset from its register, in units of 8 bytes (CFA
    /// offsets on x86_64 are multiples of 8; the compiler checks).
    pub cfa_offset: u16,
    /// `UNWIND_*`, with `UNWIND_RBP_SAVED` when rbp was saved.
    pub rule: u8,
    /// Where rbp was saved, from the CFA, in units of 8 bytes.
    pub rbp_offset: i8,
}

/// No CFI covers this address: frame pointers.
pub const UNWIND_NONE: u8 = 0;
/// The outermost frame (`_start`, a thread's start): the stack ends here.
pub const UNWIND_END: u8 = 1;
/// CFA = rsp + offset.
pub const UNWIND_CFA_RSP: u8 = 2;
/// CFA = rbp + offset.
pub const UNWIND_CFA_RBP: u8 = 3;
/// A PLT entry: CFA = rsp + 8, + 8 more from the 11th byte of each 16-byte
/// entry on (where the entry has pushed its argument); `rbp_offset` holds
/// that threshold.
pub const UNWIND_PLT: u8 = 4;
/// CFI this unwinder cannot follow (a register other than rsp or rbp, an
/// expression): the unwind stops here.
pub const UNWIND_UNSUPPORTED: u8 = 5;
/// Flag: rbp was saved at CFA + `rbp_offset` * 8.
pub const UNWIND_RBP_SAVED: u8 = 0x80;

/// Rows every module's table holds together, in one array map.
pub const UNWIND_ROWS_MAX: u32 = 1 << 20;

/// Executable mappings of one process the kernel's unwinder knows, at most.
pub const UNWIND_MAPPINGS_MAX: usize = 128;

/// Processes whose mappings the kernel's unwinder knows, at most.
pub const UNWIND_PROCS_MAX: u32 = 1024;

/// `rows_len` of a mapping with no table: unwound by frame pointers (Go
/// code, a module without `.eh_frame`).
pub const UNWIND_FRAME_POINTERS: u32 = 0;

/// One executable mapping: `[start, end)` in the process, its module's
/// addresses are the process's minus `bias`, and its rows are
/// `rows_start..rows_start + rows_len` of the shared array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindMapping {
    pub start: u64,
    pub end: u64,
    pub bias: u64,
    pub rows_start: u32,
    pub rows_len: u32,
    /// `UNWIND_MAP_*`.
    pub flags: u32,
    pub _pad: u32,
}

/// The mapping is the CPython interpreter's code.
pub const UNWIND_MAP_INTERPRETER: u32 = 1;

/// A process's executable mappings, sorted by address.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnwindMappings {
    pub len: u32,
    pub _pad: u32,
    pub entries: [UnwindMapping; UNWIND_MAPPINGS_MAX],
}

/// The registers an unwind step reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRegs {
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
}

/// What one step found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `regs` are now the caller's.
    Caller,
    /// The outermost frame: nothing above it.
    End,
    /// A read failed or the chain went nowhere.
    Stop,
}

/// The caller's registers from a frame's, by its row (`None`: no CFI,
/// frame pointers). `read` reads a word of the thread's stack. `pc` in the
/// result is the return address itself, not yet moved back into its call.
#[inline(always)]
pub fn unwind_step(
    row: Option<&UnwindRow>,
    regs: &mut UnwindRegs,
    mut read: impl FnMut(u64) -> Option<u64>,
) -> Step {
    let rule = row.map_or(UNWIND_NONE, |r| r.rule & !UNWIND_RBP_SAVED);
    let cfa = match (rule, row) {
        (UNWIND_END, _) => return Step::End,
        (UNWIND_UNSUPPORTED, _) => return Step::Stop,
        (UNWIND_CFA_RSP, Some(r)) => regs.sp.wrapping_add(u64::from(r.cfa_offset) * 8),
        (UNWIND_CFA_RBP, Some(r)) => regs.bp.wrapping_add(u64::from(r.cfa_offset) * 8),
        (UNWIND_PLT, Some(r)) => {
            let pushed = (regs.pc & 15) >= r.rbp_offset as u64;
            regs.sp + if pushed { 16 } else { 8 }
        }
        _ => {
            // Frame pointers: the caller's rbp at rbp, its return
            // address above; a chain that does not climb is over.
            if regs.bp <= regs.sp {
                return Step::Stop;
            }
            let Some(ra) = read(regs.bp + 8) else {
                return Step::Stop;
            };
            let Some(caller_bp) = read(regs.bp) else {
                return Step::Stop;
            };
            regs.sp = regs.bp + 16;
            regs.bp = caller_bp;
            regs.pc = ra;
            return if ra == 0 { Step::End } else { Step::Caller };
        }
    };
    let Some(ra) = read(cfa.wrapping_sub(8)) else {
        return Step::Stop;
    };
    if let Some(r) = row
        && r.rule & UNWIND_RBP_SAVED != 0
    {
        let at = cfa.wrapping_add((i64::from(r.rbp_offset) * 8) as u64);
        match read(at) {
            Some(bp) => regs.bp = bp,
            None => return Step::Stop,
        }
    }
    regs.sp = cfa;
    regs.pc = ra;
    if ra == 0 { Step::End } else { Step::Caller }
}

/// The row covering `pc` among `len` rows that `row_at` returns by index
/// (sorted by `pc`): the last whose `pc` is at or below it. 24 halvings
/// cover `UNWIND_ROWS_MAX`.
#[inline(always)]
pub fn find_row(
    len: u32,
    pc: u32,
    mut row_at: impl FnMut(u32) -> Option<UnwindRow>,
) -> Option<UnwindRow> {
    let (mut lo, mut hi) = (0u32, len);
    // Invariant: rows below `lo` start at or below pc; rows from `hi` on
    // start above it.
    for _ in 0..24 {
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        let row = row_at(mid)?;
        if row.pc <= pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 { None } else { row_at(lo - 1) }
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers, valid for any bit pattern.
unsafe impl aya::Pod for UnwindRow {}
#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers, valid for any bit pattern.
unsafe impl aya::Pod for UnwindMappings {}
