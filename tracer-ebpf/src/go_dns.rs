//! Go's resolver: one name lookup as the program sees it, from the entry of
//! `net.(*Resolver).lookupIPAddr` or `lookupHost` to one of its return
//! instructions. No uretprobe: it would rewrite a return address on the
//! goroutine's stack, which Go moves and walks. User space puts
//! `go_lookup_return` on each RET of the function instead.
//!
//! A goroutine can move between threads inside the call, so the call is
//! keyed by its goroutine (`g`, in r14 in Go's register ABI, Go 1.17 and
//! later). Arguments and results are in registers (the ABI's order: rax,
//! rbx, rcx, rdi, rsi, r8, r9, r10, r11).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated},
    macros::uprobe,
    programs::ProbeContext,
};
use tracer_common::{GoLookupState, GoroutineKey, HOST_MAX, LOOKUP_ADDRS, LookupFn, LostCounter};

use crate::{
    lookup_record::{self, AF_INET, AF_INET6, LookupHead, copy_addr},
    maps::{GO_LOOKUPS, count_lost},
    mem::user_or as read_user_or,
};

/// A call open longer than this lost its return (a panic unwound through
/// it): the next entry starts afresh.
const STALE_NS: u64 = 120_000_000_000;

#[inline(always)]
fn regs(ctx: &ProbeContext) -> &pt_regs {
    // SAFETY: the probe context is the thread's user registers.
    unsafe { &*ctx.regs }
}

#[inline(always)]
fn lookup_entry(ctx: &ProbeContext, func: LookupFn, host_ptr: u64, host_len: u64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !crate::scope::traced_or_adopted(ctx, pid_tgid) {
        return 0;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let key = GoroutineKey {
        tgid,
        _pad: 0,
        g: regs(ctx).r14,
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // A function whose stack must grow runs its entry twice (after
    // runtime.morestack): the first is the call's start.
    if let Some(open) = GO_LOOKUPS.get_ptr(key) {
        // SAFETY: a live map value of this goroutine.
        if now.saturating_sub(unsafe { (*open).start_ns }) < STALE_NS {
            return 0;
        }
    }
    let state = GoLookupState {
        start_ns: now,
        tid,
        func: func as u32,
        host_ptr,
        host_len,
    };
    if GO_LOOKUPS.insert(key, state, 0).is_err() {
        count_lost(LostCounter::LookupMapFull);
        return 0;
    }
    lookup_record::started(tgid, tid, func, now, ctx.regs);
    0
}

/// `lookupIPAddr(ctx context.Context, network, host string)`: the
/// receiver in rax, ctx in rbx and rcx, network in rdi and rsi, host in r8
/// and r9.
#[uprobe]
pub fn go_lookup_ip_addr_entry(ctx: ProbeContext) -> u32 {
    let r = regs(&ctx);
    lookup_entry(&ctx, LookupFn::GoLookupIpAddr, r.r8, r.r9)
}

/// `lookupHost(ctx context.Context, host string)`: host in rdi and rsi.
#[uprobe]
pub fn go_lookup_host_entry(ctx: ProbeContext) -> u32 {
    let r = regs(&ctx);
    lookup_entry(&ctx, LookupFn::GoLookupHost, r.rdi, r.rsi)
}

/// At each return instruction of both: the result slice in rax (pointer)
/// and rbx (length), the error (an interface) in rdi and rsi, nil when
/// rdi is 0.
#[uprobe]
pub fn go_lookup_return(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let r = regs(&ctx);
    let key = GoroutineKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        g: r.r14,
    };
    let Some(state) = GO_LOOKUPS.get_ptr(key) else {
        return 0;
    };
    // SAFETY: a live map value of this goroutine, copied before removal.
    let state = unsafe { *state };
    let _ = GO_LOOKUPS.remove(key);
    let now = unsafe { bpf_ktime_get_ns() };
    let failed = r.rdi != 0;
    let naddrs = if failed {
        tracer_walk_go_ip_addrs(0, 0)
    } else if state.func == LookupFn::GoLookupIpAddr as u32 {
        tracer_walk_go_ip_addrs(r.rax, r.rbx)
    } else {
        // lookupHost's []string of addresses: counted, not parsed here.
        tracer_walk_go_ip_addrs(0, 0);
        r.rbx as u32
    };
    let head = LookupHead {
        tgid: key.tgid,
        tid: state.tid,
        end_tid: pid_tgid as u32,
        func: state.func,
        start_ns: state.start_ns,
        duration_ns: now.saturating_sub(state.start_ns),
        ret: if failed { -1 } else { 0 },
        naddrs,
    };
    let len = state.host_len;
    lookup_record::emit(&head, |ev| {
        if len == 0 || len >= HOST_MAX as u64 {
            return;
        }
        // The mask is hidden from LLVM, which knows it changes nothing and
        // dropped it; 5.10's and 6.1's verifiers lost the bound checked
        // above when the length was spilled and reloaded.
        let n = core::hint::black_box(len as u32) & (HOST_MAX as u32 - 1);
        // SAFETY: `ev` is the reserved record, `n` below the host field's
        // size; the helper checks the user-space read.
        unsafe {
            let host = &raw mut (*ev).host;
            let r = generated::bpf_probe_read_user(
                host.cast::<c_void>(),
                n,
                state.host_ptr as *const c_void,
            );
            if r == 0 {
                (*ev).host[n as usize] = 0;
            }
        }
    });
    0
}

/// Walks a `[]net.IPAddr` (40 bytes each: the IP, a byte slice of 4 or
/// 16, then the zone) into this CPU's lookup scratch; returns its length.
/// Global, checked once on its own.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_walk_go_ip_addrs(ptr: u64, len: u64) -> u32 {
    let Some(out) = lookup_record::scratch() else {
        return 0;
    };
    for i in 0..LOOKUP_ADDRS {
        if i as u64 >= len {
            break;
        }
        let at = ptr + 40 * i as u64;
        let ip = read_user_or::<u64>(at, 0);
        let ip_len = read_user_or::<u64>(at + 8, 0);
        if ip_len == 4 {
            copy_addr(out, i, AF_INET, ip);
        } else if ip_len == 16 {
            copy_addr(out, i, AF_INET6, ip);
        }
    }
    len as u32
}
