//! What is work and what is waiting for work. A server's busy time is the
//! time it spends on requests, timed on the connections it accepted: from
//! a request's first read to its response's last write, as a profiler of
//! request handlers would measure it, whatever the server's threads do in
//! between. For a process that serves no requests, the waits of a thread
//! that accepts connections (idle until a client comes) are counted apart.
//! And single reads and writes that take long, with their call site: a
//! process waiting on a database, a pipe, a disk.

use aya_ebpf::bindings::pt_regs;
use tracer_common::{
    CONN_ANSWERED, CONN_IN_REQUEST, CONN_WAITING, EventKind, FdKey, HTTP_LINE_IN_TLS,
    HTTP_LINE_SENT, HTTP_NONE, RequestEndEvent, RequestTime, SLOW_IO_NS, STACK_FOR_IO, ServerConn,
    SlowIoEvent, ThreadEntry, sysno,
};

use crate::{
    calls::Finished,
    maps::{DNS_SOCKETS, IDLE_NS, KERNEL_LAYOUT, REQUEST_TIME, SERVER_CONNS, output},
    mem::atomic_add,
    stacks::{self, UserRegs},
};

fn add_idle(tgid: u32, ns: u64) {
    if ns == 0 {
        return;
    }
    match IDLE_NS.get_ptr_mut(tgid) {
        // SAFETY: a live map value; other threads of the process add too.
        Some(p) => unsafe { atomic_add(p, ns) },
        None => {
            let _ = IDLE_NS.insert(tgid, ns, 0);
        }
    }
}

/// An event loop's wait for any of its descriptors.
#[inline(always)]
pub fn is_event_wait(nr: u64) -> bool {
    matches!(
        nr,
        sysno::POLL
            | sysno::PPOLL
            | sysno::SELECT
            | sysno::PSELECT6
            | sysno::EPOLL_WAIT
            | sysno::EPOLL_PWAIT
            | sysno::EPOLL_PWAIT2
    )
}

/// A listener's wait for work: an event loop's wait, or accept itself.
#[inline(always)]
fn is_wait_for_work(nr: u64) -> bool {
    is_event_wait(nr) || nr == sysno::ACCEPT || nr == sysno::ACCEPT4
}

/// Counts a finished wait as idle if its thread is a listener; a thread's
/// first successful accept makes it one, and its earlier waits idle too.
#[inline(always)]
pub fn account(tgid: u32, ret: i64, duration: u64, entry: &mut ThreadEntry) {
    let nr = entry.nr;
    if !is_wait_for_work(nr) {
        return;
    }
    if entry.listener != 0 {
        add_idle(tgid, duration);
        return;
    }
    if (nr == sysno::ACCEPT || nr == sysno::ACCEPT4) && ret >= 0 {
        entry.listener = 1;
        add_idle(tgid, entry.pending_wait_ns + duration);
        entry.pending_wait_ns = 0;
    } else {
        entry.pending_wait_ns += duration;
    }
}

/// A read or write that took at least the slow-I/O threshold: sent on its
/// own with the stack of the thread (unchanged since the syscall began).
#[inline(always)]
pub fn maybe_slow_io(call: &Finished, regs: *const pt_regs) {
    let threshold = match KERNEL_LAYOUT.get(0) {
        Some(l) if l.slow_io_ns > 0 => l.slow_io_ns,
        _ => SLOW_IO_NS,
    };
    if call.duration < threshold {
        return;
    }
    let fd = call.entry.args[0] as i32;
    // DNS traffic is the DNS decoder's.
    let key = FdKey {
        tgid: call.tgid,
        fd: fd as u32,
    };
    if DNS_SOCKETS.get_ptr(key).is_some() {
        return;
    }
    // The stack first: user space joins it to the event that follows.
    let user = UserRegs::from_kernel_pt_regs(regs);
    stacks::capture(call.tgid, call.tid, STACK_FOR_IO, call.start_ns, &user);
    output(&SlowIoEvent {
        kind: EventKind::SlowIo as u32,
        tgid: call.tgid,
        tid: call.tid,
        fd,
        nr: call.entry.nr as u32,
        _pad: 0,
        start_ns: call.start_ns,
        duration_ns: call.duration,
        ret: call.ret,
    });
}

/// Whether the server-request timing looks at this syscall's exit.
#[inline(always)]
pub fn is_server_io(nr: u64) -> bool {
    matches!(
        nr,
        sysno::ACCEPT
            | sysno::ACCEPT4
            | sysno::READ
            | sysno::READV
            | sysno::RECVFROM
            | sysno::RECVMSG
            | sysno::WRITE
            | sysno::WRITEV
            | sysno::SENDTO
            | sysno::SENDMSG
            | sysno::SENDMMSG
    )
}

fn add_request(tgid: u32, ns: u64) {
    match REQUEST_TIME.get_ptr_mut(tgid) {
        // SAFETY: a live map value; other threads of the process add too.
        Some(p) => unsafe {
            atomic_add(&raw mut (*p).ns, ns);
            atomic_add(&raw mut (*p).count, 1);
        },
        None => {
            let _ = REQUEST_TIME.insert(tgid, RequestTime { ns, count: 1 }, 0);
        }
    }
}

/// Times a server's requests on the connections it accepted (see
/// `ServerConn`): called on the exit of each syscall `is_server_io` names,
/// and on the entry of close (at its exit the number may be another
/// thread's new connection already: accept can reuse it as soon as close
/// lets it go, and the old connection's request was lost with the new one),
/// with the syscall's fd (the new one for accept) and its return value.
/// Returns 1 when a read began a request (http.rs then looks for its
/// request line). A global BPF function, checked once on its own:
/// `sys_exit` is near the older kernels' verifier budget.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_server_io(tgid: u64, nr: u64, fd: u64, ret: u64, now: u64) -> u64 {
    let ret = ret as i64;
    let key = FdKey {
        tgid: tgid as u32,
        fd: fd as u32,
    };
    if nr == sysno::ACCEPT || nr == sysno::ACCEPT4 {
        let _ = SERVER_CONNS.insert(key, ServerConn::default(), 0);
        return 0;
    }
    let Some(conn) = SERVER_CONNS.get_ptr_mut(key) else {
        return 0;
    };
    // SAFETY: a live map value; one thread at a time serves a connection.
    let conn = unsafe { &mut *conn };
    let answered = conn.state == CONN_ANSWERED;
    match nr {
        sysno::CLOSE => {
            // An HTTP request never answered ends too, with no time.
            end_request(key, conn);
            let _ = SERVER_CONNS.remove(key);
        }
        sysno::READ | sysno::READV | sysno::RECVFROM | sysno::RECVMSG => {
            if ret == 0 {
                // The client is done: so is its last request (one it sent
                // before it shut its side is still to be answered).
                if answered {
                    end_request(key, conn);
                    conn.state = CONN_WAITING;
                }
            } else if ret > 0 && conn.state != CONN_IN_REQUEST {
                end_request(key, conn);
                conn.state = CONN_IN_REQUEST;
                conn.start_ns = now;
                conn.last_sent_ns = 0;
                // Until http.rs finds a request line in the read.
                conn.http = HTTP_LINE_IN_TLS;
                return 1;
            }
        }
        _ => {
            // An HTTP request over TLS is answered by its SSL writes, and
            // ends at the last one's return (http.rs): a write syscall of
            // its own is TLS's (the session tickets a server flushes
            // after it read the request, the close_notify after the
            // response). Taken for an answer, a ticket's write ended a
            // POST at the read of its body, at no time at all (fresh43).
            let tls_request = conn.http == HTTP_LINE_SENT && conn.ssl != 0;
            if ret > 0 && tls_request {
                // On a socket BIO, the SSL write this is inside ends the
                // response here (http.rs); on a memory BIO this is the
                // event loop's send after the SSL write, and goes unused.
                conn.last_sent_ns = now;
            } else if ret > 0 && conn.state != CONN_WAITING {
                conn.state = CONN_ANSWERED;
                conn.last_write_ns = now;
            }
        }
    }
    0
}

/// The request in progress on a connection is over (its response's last
/// write is its end): counted if it was answered, and its end sent if its
/// request line was.
#[inline(always)]
fn end_request(key: FdKey, conn: &mut ServerConn) {
    let answered = conn.state == CONN_ANSWERED;
    if answered {
        add_request(key.tgid, conn.last_write_ns.saturating_sub(conn.start_ns));
    }
    let sent = conn.http == HTTP_LINE_SENT;
    conn.http = HTTP_NONE;
    if sent {
        output(&RequestEndEvent {
            kind: EventKind::RequestEnd as u32,
            tgid: key.tgid,
            fd: key.fd as i32,
            _pad: 0,
            start_ns: conn.start_ns,
            end_ns: if answered { conn.last_write_ns } else { 0 },
        });
    }
}
