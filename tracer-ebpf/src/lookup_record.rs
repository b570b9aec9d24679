//! A finished name lookup's record, whoever timed it (libc's functions,
//! Go's resolver): its addresses walked into a per-CPU scratch first, then
//! the ring buffer record.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_probe_read_user_buf, generated},
    macros::map,
    maps::PerCpuArray,
};
use tracer_common::{
    EventKind, LOOKUP_ADDRS, LookupEvent, LookupFn, LookupStartEvent, LostCounter,
    STACK_FOR_GO_LOOKUP, STACK_FOR_LOOKUP,
};

use crate::{
    maps::{EVENTS, count_lost, output, submit_flags},
    stacks::{self, UserRegs},
};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// The addresses of a lookup's result, as `LookupEvent` holds them
/// (`families` then `addrs`, back to back).
#[repr(C)]
pub struct LookupAddrs {
    pub families: [u16; LOOKUP_ADDRS],
    pub addrs: [[u8; 16]; LOOKUP_ADDRS],
}

const _: () = assert!(
    core::mem::offset_of!(LookupEvent, addrs) - core::mem::offset_of!(LookupEvent, families)
        == core::mem::offset_of!(LookupAddrs, addrs)
);

/// The result being walked on this CPU.
#[map]
pub static LOOKUP_SCRATCH: PerCpuArray<LookupAddrs> = PerCpuArray::with_max_entries(1, 0);

/// Copies one address (4 or 16 bytes) from `src` into slot `i`.
#[inline(always)]
pub fn copy_addr(out: &mut LookupAddrs, i: usize, family: u16, src: u64) {
    if i >= LOOKUP_ADDRS {
        return;
    }
    let dst = &mut out.addrs[i];
    // SAFETY: the helper checks the user-space access.
    let ok = unsafe {
        if family == AF_INET6 {
            bpf_probe_read_user_buf(src as *const u8, &mut dst[..16])
        } else {
            bpf_probe_read_user_buf(src as *const u8, &mut dst[..4])
        }
    };
    if ok.is_ok() {
        out.families[i] = family;
    }
}

/// This CPU's scratch, emptied for a new result.
#[inline(always)]
pub fn scratch() -> Option<&'static mut LookupAddrs> {
    let out = LOOKUP_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; the program is not re-entered on this CPU.
    let out = unsafe { &mut *out };
    out.families = [0; LOOKUP_ADDRS];
    Some(out)
}

/// A lookup began: its call site (the stack at the probe, `regs`), which
/// is also its start for user space (joining the DNS messages that
/// follow); the start alone when no stack went.
#[inline(always)]
pub fn started(tgid: u32, tid: u32, func: LookupFn, now: u64, regs: *const pt_regs) {
    let reason = if func.is_go() {
        STACK_FOR_GO_LOOKUP
    } else {
        STACK_FOR_LOOKUP
    };
    if stacks::capture(tgid, tid, reason, now, &UserRegs::from_probe_ctx(regs)) {
        return;
    }
    output(&LookupStartEvent {
        kind: EventKind::LookupStart as u32,
        tgid,
        tid,
        func: func as u32,
        start_ns: now,
    });
}

/// What a lookup's record says besides its names and addresses.
pub struct LookupHead {
    pub tgid: u32,
    pub tid: u32,
    pub end_tid: u32,
    pub func: u32,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub ret: i32,
    pub naddrs: u32,
}

/// Sends a lookup's record: the head, the addresses in this CPU's scratch,
/// and the names that `names` writes into the record.
#[inline(always)]
pub fn emit(head: &LookupHead, names: impl FnOnce(*mut LookupEvent)) {
    let Some(addrs) = LOOKUP_SCRATCH.get_ptr(0) else {
        return;
    };
    let Some(mut slot) = EVENTS.reserve::<LookupEvent>(0) else {
        count_lost(LostCounter::RingFull);
        return;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points to a reserved ring buffer record of our size.
    unsafe {
        (*ev).kind = EventKind::Lookup as u32;
        (*ev).tgid = head.tgid;
        (*ev).tid = head.tid;
        (*ev).func = head.func;
        (*ev).start_ns = head.start_ns;
        (*ev).duration_ns = head.duration_ns;
        (*ev).ret = head.ret;
        (*ev).naddrs = head.naddrs;
        (*ev).end_tid = head.end_tid;
        (*ev)._pad = 0;
        (*ev).host[0] = 0;
        (*ev).service[0] = 0;
        names(ev);
        // SAFETY: the scratch has the layout of the record's two fields.
        let copied = generated::bpf_probe_read_kernel(
            (&raw mut (*ev).families).cast::<c_void>(),
            core::mem::size_of::<LookupAddrs>() as u32,
            addrs.cast(),
        );
        if copied != 0 {
            (*ev).families = [0; LOOKUP_ADDRS];
        }
    }
    slot.submit(submit_flags(false));
}
