//! TLS: uprobes on OpenSSL's SSL_read/_ex, SSL_write/_ex, SSL_do_handshake,
//! SSL_connect and SSL_accept (in libssl, or in an executable that links
//! OpenSSL statically, like node). One entry program per function (which
//! the attach cookie could tell, but 5.10 has none), one return program
//! for all. Sizes only: the payload is never read, but for a TLS server's
//! request line with `--http-tls` (http.rs).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::{
    EventKind, ExecMapEvent, FdKey, LostCounter, STACK_FOR_TLS, TLS_STACK_EVERY_NS, ThreadEntry,
    TlsCall, TlsEvent, TlsFn, TlsWaitEvent,
};

use crate::{
    calls::{Finished, first_polled_fd, is_fd_io},
    maps::{THREAD_ENTRIES, TLS_CALLS, TLS_SOCKETS, count_lost, output, output_with},
    stacks::{self, UserRegs},
};

/// A call still open after this long lost its return probe: start afresh.
const STALE_CALL_NS: u64 = 600_000_000_000;
const PROT_EXEC: u64 = 4;

/// Marks (or unmarks) the thread as inside an SSL call, so that its
/// syscalls are charged to the call.
#[inline(always)]
fn set_in_tls(tid: u32, on: bool) -> i32 {
    match THREAD_ENTRIES.get_ptr_mut(tid) {
        Some(slot) => unsafe {
            (*slot).in_tls = u32::from(on);
            // Only a read just before says which socket a call on a memory
            // BIO is about: after anything else (the first handshake call
            // of a new connection, say), the last fd is another socket's.
            if (*slot).read_just_before != 0 {
                (*slot).last_io_fd
            } else {
                -1
            }
        },
        None => {
            if on {
                let entry = ThreadEntry {
                    in_tls: 1,
                    last_io_fd: -1,
                    ..Default::default()
                };
                if THREAD_ENTRIES.insert(tid, entry, 0).is_err() {
                    count_lost(LostCounter::ThreadMapFull);
                }
            }
            -1
        }
    }
}

/// The entry programs, one per function (`TlsFn::entry_program` names
/// them for user space).
macro_rules! tls_entry_programs {
    ($($program:ident => $func:ident),* $(,)?) => {
        $(
            #[uprobe]
            pub fn $program(ctx: ProbeContext) -> u32 {
                tls_entry(&ctx, TlsFn::$func)
            }
        )*
    };
}

tls_entry_programs! {
    tls_entry_read => Read,
    tls_entry_read_ex => ReadEx,
    tls_entry_write => Write,
    tls_entry_write_ex => WriteEx,
    tls_entry_do_handshake => DoHandshake,
    tls_entry_connect => Connect,
    tls_entry_accept => Accept,
    tls_entry_statem_connect => StatemConnect,
    tls_entry_statem_accept => StatemAccept,
}

#[inline(always)]
fn tls_entry(ctx: &ProbeContext, func: TlsFn) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !crate::scope::traced_or_adopted(ctx, pid_tgid) {
        return 0;
    }
    let tid = pid_tgid as u32;
    let now = unsafe { bpf_ktime_get_ns() };
    let step = func.is_handshake_step();
    let class = func.class();
    let reads = func.is_read();
    let func = func as u32;
    // SAFETY: the probe context is the thread's user registers.
    let sp = unsafe { (*ctx.regs).rsp };
    let mut last_stack_ns = [0u64; 3];
    let mut last_stack_ssl = [0u64; 3];
    if let Some(call) = TLS_CALLS.get_ptr_mut(tid) {
        // SAFETY: this thread's own map value.
        let call = unsafe { &mut *call };
        // As for lookups (`LookupState::sp`): a call at or above the open
        // one's stack pointer is not inside it.
        if call.depth > 0 && now.saturating_sub(call.start_ns) < STALE_CALL_NS && sp < call.sp {
            // SSL_connect calls SSL_do_handshake: report the outer call.
            // The state machine marks the call it runs in as handshake work.
            call.depth += 1;
            if step {
                call.handshake_step = 1;
            }
            return 0;
        }
        last_stack_ns = call.last_stack_ns;
        last_stack_ssl = call.last_stack_ssl;
    }
    if step {
        // Outside any probed call (SSL_peek, say): not a call to report.
        return 0;
    }
    // The call site of a thread's SSL calls, sampled: a response can take
    // a thousand reads from one line of code. A call on another connection
    // than the last sampled one is likely from other code: sampled too.
    let ssl = ctx.arg::<u64>(0).unwrap_or(0);
    let last = last_stack_ns.get(class).copied().unwrap_or(0);
    let last_ssl = last_stack_ssl.get(class).copied().unwrap_or(0);
    if ssl != last_ssl || now.saturating_sub(last) >= TLS_STACK_EVERY_NS {
        if let Some(slot) = last_stack_ssl.get_mut(class) {
            *slot = ssl;
        }
        if let Some(slot) = last_stack_ns.get_mut(class) {
            *slot = now;
        }
        let tgid = (pid_tgid >> 32) as u32;
        stacks::capture(
            tgid,
            tid,
            STACK_FOR_TLS,
            now,
            &UserRegs::from_probe_ctx(ctx.regs),
        );
    }
    // SSL_read(ssl, buf, int num), SSL_read_ex(ssl, buf, size_t num,
    // size_t *readbytes); the same shapes for write.
    let (requested, out_ptr) = if func == TlsFn::ReadEx as u32 || func == TlsFn::WriteEx as u32 {
        (
            ctx.arg::<u64>(2).unwrap_or(0) as u32,
            ctx.arg::<u64>(3).unwrap_or(0),
        )
    } else if func == TlsFn::Read as u32 || func == TlsFn::Write as u32 {
        (ctx.arg::<u64>(2).unwrap_or(0) as u32, 0)
    } else {
        (0, 0)
    };
    let buf = if reads {
        ctx.arg::<u64>(1).unwrap_or(0)
    } else {
        0
    };
    let hint_fd = set_in_tls(tid, true);
    let call = TlsCall {
        start_ns: now,
        ssl,
        out_ptr,
        buf,
        blocked_ns: 0,
        func,
        depth: 1,
        requested,
        nested_syscalls: 0,
        fd: -1,
        hint_fd,
        handshake_step: 0,
        _pad: 0,
        last_stack_ns,
        last_stack_ssl,
        sp,
    };
    if TLS_CALLS.insert(tid, call, 0).is_err() {
        count_lost(LostCounter::TlsCallMapFull);
        set_in_tls(tid, false);
    }
    0
}

#[uretprobe]
pub fn tls_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(call) = TLS_CALLS.get_ptr_mut(tid) else {
        return 0;
    };
    // SAFETY: this thread's own map value.
    let call = unsafe { &mut *call };
    if call.depth == 0 {
        return 0;
    }
    call.depth -= 1;
    if call.depth > 0 {
        return 0;
    }
    set_in_tls(tid, false);
    let now = unsafe { bpf_ktime_get_ns() };
    let ret: i64 = ctx.ret();
    let ret = ret as i32;
    let bytes = if call.out_ptr != 0 {
        if ret == 1 {
            // SAFETY: the helper checks the user-space access.
            crate::mem::user_or::<u64>(call.out_ptr, 0) as u32
        } else {
            0
        }
    } else if (call.func == TlsFn::Read as u32 || call.func == TlsFn::Write as u32) && ret > 0 {
        ret as u32
    } else {
        0
    };
    let tgid = (pid_tgid >> 32) as u32;
    // A read or handshake on a memory BIO (asyncio, Node.js) makes no
    // socket syscall (OpenSSL's getpid checks are not about the socket):
    // the event loop's read just before names its socket (a write's bytes
    // are sent after it), as a candidate (user space checks it; the
    // kernel uses it to see the loop's waits for that socket,
    // `tracer_tls_loop_wait`, and for a TLS server's request lines).
    let wrote = call.func == TlsFn::Write as u32 || call.func == TlsFn::WriteEx as u32;
    let socket = if call.fd >= 0 {
        call.fd
    } else if !wrote {
        call.hint_fd
    } else {
        -1
    };
    if socket >= 0 {
        let _ = TLS_SOCKETS.insert(
            FdKey {
                tgid,
                fd: socket as u32,
            },
            1u8,
            0,
        );
    }
    // A TLS server's request line, and its response's end (`--http-tls`;
    // http.rs): the socket in the low half, whether it wrote in bit 32.
    crate::http::tracer_request_line_tls(
        pid_tgid,
        call.ssl,
        u64::from(socket as u32) | (u64::from(wrote) << 32),
        call.buf,
        u64::from(bytes),
    );
    output(&TlsEvent {
        kind: EventKind::Tls as u32,
        tgid,
        tid,
        func: call.func,
        ssl: call.ssl,
        start_ns: call.start_ns,
        duration_ns: now.saturating_sub(call.start_ns),
        blocked_ns: call.blocked_ns,
        ret,
        bytes,
        requested: call.requested,
        nested_syscalls: call.nested_syscalls,
        fd: call.fd,
        hint_fd: call.hint_fd,
        handshake_step: call.handshake_step,
        write_began_us: 0,
    });
    0
}

/// A syscall made inside an SSL call: its time is time the call waited; a
/// read or write names the call's socket.
#[inline(always)]
pub fn on_nested_syscall(tid: u32, entry: &ThreadEntry, ret: i64, duration: u64) {
    let Some(call) = TLS_CALLS.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: this thread's own map value.
    unsafe {
        (*call).blocked_ns += duration;
        (*call).nested_syscalls += 1;
        if is_fd_io(entry.nr) && (ret >= 0 || ret == -11) {
            // -EAGAIN still names the socket.
            (*call).fd = entry.args[0] as i32;
        }
    }
}

/// close() of a TLS socket, at its entry (see `syscalls`).
pub fn on_close(tgid: u32, fd: u32) {
    let _ = TLS_SOCKETS.remove(FdKey { tgid, fd });
}

/// poll()/ppoll() on a socket that carries TLS: a client with a
/// non-blocking socket waiting for the peer between SSL calls. Returns
/// whether it was one.
pub fn on_poll_exit(call: &Finished) -> bool {
    let Some(fd) = first_polled_fd(call) else {
        return false;
    };
    let key = FdKey {
        tgid: call.tgid,
        fd: fd as u32,
    };
    if TLS_SOCKETS.get_ptr(key).is_none() {
        return false;
    }
    output(&TlsWaitEvent {
        kind: EventKind::TlsWait as u32,
        tgid: call.tgid,
        tid: call.tid,
        fd,
        ts_ns: call.start_ns + call.duration,
        duration_ns: call.duration,
        ret: call.ret,
    });
    true
}

/// An event loop woke from a wait (epoll, poll, select) and its first
/// read was of socket `fd`: if that carries TLS, the wait was the TLS
/// connection's (the call that awaited its data, in asyncio or Node.js,
/// waited that long), told to user space as a wait of that socket, as for
/// a blocking client's poll. `ts` is when the read began. A global BPF
/// function: `sys_exit` is near the older kernels' verifier budget.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_tls_loop_wait(tgid: u64, tid: u64, fd: u64, wait_ns: u64, ts: u64) -> u64 {
    let key = FdKey {
        tgid: tgid as u32,
        fd: fd as u32,
    };
    if TLS_SOCKETS.get_ptr(key).is_none() {
        return 0;
    }
    output(&TlsWaitEvent {
        kind: EventKind::TlsWait as u32,
        tgid: tgid as u32,
        tid: tid as u32,
        fd: fd as i32,
        ts_ns: ts,
        duration_ns: wait_ns,
        ret: 1,
    });
    0
}

/// mmap(..., PROT_EXEC, ..., fd, ...) succeeded: a library was loaded.
pub fn on_mmap_exit(call: &Finished) {
    let args = &call.entry.args;
    if call.ret < 0 || args[2] & PROT_EXEC == 0 || (args[4] as i32) < 0 {
        return;
    }
    output_with(
        &ExecMapEvent {
            kind: EventKind::ExecMap as u32,
            tgid: call.tgid,
            ts_ns: call.start_ns + call.duration,
        },
        true,
    );
}
