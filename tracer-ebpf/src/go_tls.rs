//! Go's crypto/tls: `(*Conn).Read`, `(*Conn).Write` and
//! `(*Conn).handshakeContext`, from entry to one of their return
//! instructions (user space puts `go_tls_return` on each: no uretprobes in
//! Go code, see `go_dns`), keyed by goroutine. The time a call waited for
//! its socket is the time its goroutine spent in
//! `internal/poll.runtime_pollWait` inside it: Go parks the goroutine
//! there until the socket is ready, while the thread runs others.
//!
//! Reported as OpenSSL's calls are (`TlsEvent`), with the `*tls.Conn` for
//! the connection and its socket read through it.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use tracer_common::{
    EventKind, GoTlsCall, GoroutineKey, LostCounter, MAX_GO_CALLS, STACK_FOR_TLS,
    TLS_STACK_EVERY_NS, TlsEvent, TlsFn,
};

use crate::{
    maps::{GO_TLS_CALLS, count_lost, output},
    mem::user_or as read_user_or,
    stacks::{self, UserRegs},
};

/// A call open longer than this lost its return: start afresh.
const STALE_NS: u64 = 600_000_000_000;

/// When each goroutine's last TLS stack was taken, per kind of call, and
/// for which connection: stacks are sampled as for OpenSSL
/// (`TLS_STACK_EVERY_NS`).
#[map]
static GO_TLS_STACKS: LruHashMap<GoroutineKey, [u64; 6]> =
    LruHashMap::with_max_entries(MAX_GO_CALLS, 0);

/// When the last Write on each connection (tgid, `*tls.Conn` in `g`)
/// began: a read's idle wait ends there (`TlsEvent::write_began_us`).
#[map]
static GO_TLS_WRITE_STARTS: LruHashMap<GoroutineKey, u64> =
    LruHashMap::with_max_entries(MAX_GO_CALLS, 0);

#[inline(always)]
fn regs(ctx: &ProbeContext) -> &pt_regs {
    // SAFETY: the probe context is the thread's user registers.
    unsafe { &*ctx.regs }
}

#[inline(always)]
fn goroutine(ctx: &ProbeContext, pid_tgid: u64) -> GoroutineKey {
    GoroutineKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        g: regs(ctx).r14,
    }
}

/// The socket under a `*tls.Conn` whose `conn` is a `*net.TCPConn`:
/// tls.Conn.conn (an interface: its data word at 8) → net.conn.fd
/// (`*netFD`, at 0) → poll.FD.Sysfd (at 16), the same from Go 1.13 to
/// 1.23. -1 when the chain does not lead to a plausible descriptor.
#[inline(always)]
fn conn_fd(conn: u64) -> i32 {
    let tcp = read_user_or::<u64>(conn + 8, 0);
    if tcp == 0 {
        return -1;
    }
    let net_fd = read_user_or::<u64>(tcp, 0);
    if net_fd == 0 {
        return -1;
    }
    let fd = read_user_or::<u64>(net_fd + 16, u64::MAX);
    if fd < 1 << 20 { fd as i32 } else { -1 }
}

#[inline(always)]
fn entry(ctx: &ProbeContext, func: TlsFn) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !crate::scope::traced_or_adopted(ctx, pid_tgid) {
        return 0;
    }
    let key = goroutine(ctx, pid_tgid);
    let r = regs(ctx);
    let conn = r.rax;
    let now = unsafe { bpf_ktime_get_ns() };
    // The return address: the same one twice in a row, with no return in
    // between, is one call whose entry ran again after runtime.morestack
    // grew the stack (a function that must grow it does that first).
    let ra = read_user_or::<u64>(r.rsp, 0);
    if let Some(open) = GO_TLS_CALLS.get_ptr_mut(key) {
        // SAFETY: a live map value of this goroutine.
        let open = unsafe { &mut *open };
        if open.depth > 0 && now.saturating_sub(open.start_ns) < STALE_NS {
            if !(open.last_entry_func == func as u32 && open.last_entry_ra == ra) {
                // A call inside the open one: Read runs handshakeContext,
                // which returns at once once the handshake is done.
                open.depth += 1;
                open.last_entry_func = func as u32;
                open.last_entry_ra = ra;
            }
            return 0;
        }
    }
    let tid = pid_tgid as u32;
    if func == TlsFn::GoWrite {
        let on = GoroutineKey {
            tgid: key.tgid,
            _pad: 0,
            g: conn,
        };
        let _ = GO_TLS_WRITE_STARTS.insert(on, now, 0);
    }
    sample_stack(ctx, key, func, conn, now, tid);
    // Read(b []byte) and Write(b []byte): b's length in rcx.
    let requested = if func == TlsFn::GoHandshake {
        0
    } else {
        r.rcx as u32
    };
    let call = GoTlsCall {
        start_ns: now,
        conn,
        blocked_ns: 0,
        wait_start_ns: 0,
        tid,
        func: func as u32,
        depth: 1,
        requested,
        fd: conn_fd(conn),
        waits: 0,
        last_entry_func: func as u32,
        last_entry_ra: ra,
    };
    if GO_TLS_CALLS.insert(key, call, 0).is_err() {
        count_lost(LostCounter::TlsCallMapFull);
    }
    0
}

/// Takes the goroutine's stack unless one of this kind of call on this
/// connection was taken less than `TLS_STACK_EVERY_NS` ago.
#[inline(always)]
fn sample_stack(ctx: &ProbeContext, key: GoroutineKey, func: TlsFn, conn: u64, now: u64, tid: u32) {
    let class = func.class();
    let mut last = match GO_TLS_STACKS.get_ptr(key) {
        // SAFETY: a live map value of this goroutine.
        Some(p) => unsafe { *p },
        None => [0; 6],
    };
    let (Some(&at), Some(&on)) = (last.get(class), last.get(class + 3)) else {
        return;
    };
    if on == conn && now.saturating_sub(at) < TLS_STACK_EVERY_NS {
        return;
    }
    if let Some(slot) = last.get_mut(class) {
        *slot = now;
    }
    if let Some(slot) = last.get_mut(class + 3) {
        *slot = conn;
    }
    let _ = GO_TLS_STACKS.insert(key, last, 0);
    stacks::capture(
        key.tgid,
        tid,
        STACK_FOR_TLS,
        now,
        &UserRegs::from_probe_ctx(ctx.regs),
    );
}

/// `(*Conn).Read(b []byte) (int, error)`: the receiver in rax, b in rbx,
/// rcx and rdi.
#[uprobe]
pub fn go_tls_read_entry(ctx: ProbeContext) -> u32 {
    entry(&ctx, TlsFn::GoRead)
}

#[uprobe]
pub fn go_tls_write_entry(ctx: ProbeContext) -> u32 {
    entry(&ctx, TlsFn::GoWrite)
}

/// `(*Conn).handshakeContext(ctx context.Context) (ret error)`.
#[uprobe]
pub fn go_tls_handshake_entry(ctx: ProbeContext) -> u32 {
    entry(&ctx, TlsFn::GoHandshake)
}

/// At each return instruction of the three: Read and Write return the
/// count in rax and the error in rbx and rcx; handshakeContext the error
/// in rax and rbx. A nil error has a 0 type word.
#[uprobe]
pub fn go_tls_return(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = goroutine(&ctx, pid_tgid);
    let Some(call) = GO_TLS_CALLS.get_ptr_mut(key) else {
        return 0;
    };
    // SAFETY: a live map value of this goroutine.
    let call = unsafe { &mut *call };
    if call.depth == 0 {
        return 0;
    }
    call.depth -= 1;
    call.last_entry_ra = 0;
    if call.depth > 0 {
        return 0;
    }
    let call = *call;
    let _ = GO_TLS_CALLS.remove(key);
    let now = unsafe { bpf_ktime_get_ns() };
    let r = regs(&ctx);
    let (ret, bytes) = if call.func == TlsFn::GoHandshake as u32 {
        (i32::from(r.rax == 0), 0)
    } else {
        let n = r.rax as i64;
        let failed = r.rbx != 0;
        if n > 0 {
            (n as i32, n as u32)
        } else if failed {
            (-1, 0)
        } else {
            (0, 0)
        }
    };
    let mut write_began_us = 0;
    if call.func == TlsFn::GoRead as u32 {
        let conn = GoroutineKey {
            tgid: key.tgid,
            _pad: 0,
            g: call.conn,
        };
        // SAFETY: a map value, copied at once.
        if let Some(&began) = unsafe { GO_TLS_WRITE_STARTS.get(conn) }
            && began > call.start_ns
            && began <= now
        {
            write_began_us =
                ((began - call.start_ns) / 1000).min(u64::from(u32::MAX - 1)) as u32 + 1;
        }
    }
    output(&TlsEvent {
        kind: EventKind::Tls as u32,
        tgid: key.tgid,
        tid: call.tid,
        func: call.func,
        ssl: call.conn,
        start_ns: call.start_ns,
        duration_ns: now.saturating_sub(call.start_ns),
        blocked_ns: call.blocked_ns,
        ret,
        bytes,
        requested: call.requested,
        nested_syscalls: call.waits,
        fd: call.fd,
        hint_fd: -1,
        handshake_step: 0,
        write_began_us,
    });
    0
}

/// `internal/poll.runtime_pollWait(ctx uintptr, mode int)`'s entry: a
/// goroutine inside a TLS call starts waiting for its socket. `ctx` (in
/// rax) is the runtime's `*pollDesc`, whose `fd` is at 8 from Go 1.13 to
/// 1.23: the socket the call waits on, which names it better than
/// `conn_fd` can. A connection whose `net.Conn` is wrapped (a connection
/// tracker, a rate limiter) is not a `*net.TCPConn`, and `conn_fd`'s chain
/// then reads other fields.
#[uprobe]
pub fn go_poll_wait_entry(ctx: ProbeContext) -> u32 {
    let key = goroutine(&ctx, bpf_get_current_pid_tgid());
    if let Some(call) = GO_TLS_CALLS.get_ptr_mut(key) {
        // SAFETY: a live map value of this goroutine.
        let call = unsafe { &mut *call };
        call.wait_start_ns = unsafe { bpf_ktime_get_ns() };
        let fd = read_user_or::<u64>(regs(&ctx).rax + 8, u64::MAX);
        if fd < 1 << 20 {
            call.fd = fd as i32;
        }
    }
    0
}

/// Its return instructions: the wait is over.
#[uprobe]
pub fn go_poll_wait_return(ctx: ProbeContext) -> u32 {
    let key = goroutine(&ctx, bpf_get_current_pid_tgid());
    let Some(call) = GO_TLS_CALLS.get_ptr_mut(key) else {
        return 0;
    };
    // SAFETY: a live map value of this goroutine.
    let call = unsafe { &mut *call };
    if call.wait_start_ns != 0 {
        let now = unsafe { bpf_ktime_get_ns() };
        call.blocked_ns += now.saturating_sub(call.wait_start_ns);
        call.waits += 1;
        call.wait_start_ns = 0;
    }
    0
}
