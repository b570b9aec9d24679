//! HTTP/1.x request lines: the method and path of each request a traced
//! server reads on a connection it accepted (idle.rs times the request),
//! for "Requests by endpoint". Only the first bytes of the request's first
//! read are looked at, in this CPU's scratch; the method and path are all
//! that is sent on, and everything after them (the query string, the
//! version, headers, body) is zeroed before the record is written. A TLS
//! server's request line is in the plaintext of its first SSL read of the
//! request, looked at only with `--http-tls`.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use tracer_common::{
    CONN_ANSWERED, EventKind, FdKey, HTTP_LINE_IN_TLS, HTTP_LINE_SENT, HTTP_NONE, LAYOUT_HTTP_TLS,
    LAYOUT_NO_HTTP, LostCounter, MAX_SERVER_CONNS, REQUEST_LINE_BYTES, RequestLineEvent, sysno,
};

use crate::{
    maps::{EVENTS, KERNEL_LAYOUT, SERVER_CONNS, count_lost, submit_flags},
    mem::{self, user_or as read_user_or},
};

/// The start of the read being looked at, on this CPU.
#[map]
static LINE_SCRATCH: PerCpuArray<[u8; REQUEST_LINE_BYTES]> = PerCpuArray::with_max_entries(1, 0);

/// The first read of a request on an accepted connection returned `ret`
/// bytes (idle.rs's `tracer_server_io` said so): syscall `nr_fd >> 32`
/// on fd `nr_fd & 0xffffffff`, its buffer argument `buf` (an iovec array
/// for readv, a msghdr for recvmsg). When they begin with a request line,
/// sends its method and path, and marks the connection so that idle.rs
/// sends the request's end. Returns 1 when sent. A global function, checked
/// once: `sys_exit` is near the older kernels' verifier budget.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_request_line(pid_tgid: u64, nr_fd: u64, buf: u64, ret: u64) -> u64 {
    if layout_flags() & LAYOUT_NO_HTTP != 0 {
        return 0;
    }
    let (data, len) = match nr_fd >> 32 {
        sysno::READ | sysno::RECVFROM => (buf, ret),
        // struct iovec { iov_base, iov_len }: the line is in the first.
        sysno::READV => first_iovec(buf, ret),
        // struct msghdr: msg_iov after msg_name and msg_namelen (padded).
        sysno::RECVMSG => first_iovec(read_user_or::<u64>(buf + 16, 0), ret),
        _ => return 0,
    };
    tracer_request_line_send(pid_tgid, nr_fd & 0xffff_ffff, data, len)
}

/// The accepted connection of each `SSL *` of a TLS server, with
/// `--http-tls`: a read on a memory BIO (asyncio, Node.js) makes no
/// syscall to name its socket, and the event loop's read just before does
/// not always come right before it (the client's last handshake flight
/// and its request read at once: the server writes its tickets first).
#[map]
static SSL_SERVER_SOCKETS: LruHashMap<SslKey, i32> =
    LruHashMap::with_max_entries(MAX_SERVER_CONNS, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct SslKey {
    ssl: u64,
    tgid: u32,
    _pad: u32,
}

/// An SSL call on `ssl` returned (tls.rs), on socket `socket & 0xffffffff`
/// if known (-1 if not), a write if bit 32 of `socket` is set; a read,
/// `len` bytes of plaintext at `buf`. With `--http-tls`: if a request
/// began on that accepted connection and its first read was no request
/// line (a TLS record is not), these bytes are looked at instead, once.
/// A write that returns ends the response so far (at the return of the
/// write syscall it made, if it made one): the write syscalls after it
/// (the close_notify alert a server sends as it closes) are not the
/// response. Returns 1 when a line was sent.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_request_line_tls(
    pid_tgid: u64,
    ssl: u64,
    socket: u64,
    buf: u64,
    len: u64,
) -> u64 {
    if layout_flags() & LAYOUT_HTTP_TLS == 0 {
        return 0;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let ssl_key = SslKey { ssl, tgid, _pad: 0 };
    let wrote = socket >> 32 & 1 != 0;
    let socket = socket as u32 as i32;
    let fd = match socket {
        fd if fd >= 0 => fd,
        _ => match SSL_SERVER_SOCKETS.get_ptr(ssl_key) {
            // SAFETY: a live map value.
            Some(fd) => unsafe { *fd },
            None => return 0,
        },
    };
    let key = FdKey {
        tgid,
        fd: fd as u32,
    };
    let Some(conn) = SERVER_CONNS.get_ptr_mut(key) else {
        return 0;
    };
    // SAFETY (each access below): a live map value; one thread at a time
    // serves a connection.
    if socket >= 0 {
        unsafe { (*conn).ssl = ssl };
        let _ = SSL_SERVER_SOCKETS.insert(ssl_key, fd, 0);
    } else if unsafe { (*conn).ssl } != ssl {
        // The fd number is another connection's now.
        return 0;
    }
    let http = unsafe { (*conn).http };
    if wrote {
        // SAFETY: as above.
        let sent = unsafe { core::mem::replace(&mut (*conn).last_sent_ns, 0) };
        if len > 0 && http == HTTP_LINE_SENT {
            // On a socket BIO (`socket` known: the write made its syscall)
            // the bytes left at that syscall's return; on a memory BIO
            // they are sent after this return, by the event loop.
            let end = if socket >= 0 && sent != 0 {
                sent
            } else {
                unsafe { bpf_ktime_get_ns() }
            };
            // SAFETY: as above.
            unsafe {
                (*conn).state = CONN_ANSWERED;
                (*conn).last_write_ns = end;
            }
        }
        return 0;
    }
    if buf == 0 || len == 0 || http != HTTP_LINE_IN_TLS {
        return 0;
    }
    let sent = tracer_request_line_send(pid_tgid, fd as u64, buf, len);
    if sent == 0 {
        // Only the request's first plaintext can begin it.
        unsafe { (*conn).http = HTTP_NONE };
    }
    sent
}

fn layout_flags() -> u32 {
    KERNEL_LAYOUT.get(0).map_or(0, |l| l.flags)
}

/// Sends the request line at the start of `len` bytes at user address
/// `data`, read on connection `fd` of the process, if they hold one: the
/// request's start is the connection's. Returns 1 when sent.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_request_line_send(pid_tgid: u64, fd: u64, data: u64, len: u64) -> u64 {
    let key = FdKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: fd as u32,
    };
    let end = tracer_request_line_capture(data, len);
    if end == 0 {
        return 0;
    }
    let Some(conn) = SERVER_CONNS.get_ptr_mut(key) else {
        return 0;
    };
    let Some(scratch) = LINE_SCRATCH.get_ptr(0) else {
        return 0;
    };
    let Some(mut slot) = EVENTS.reserve::<RequestLineEvent>(0) else {
        count_lost(LostCounter::RingFull);
        return 0;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points to a reserved ring buffer record of our size;
    // `conn` is a live map value, and one thread at a time serves a
    // connection.
    unsafe {
        (*ev).kind = EventKind::RequestLine as u32;
        (*ev).tgid = key.tgid;
        (*ev).tid = pid_tgid as u32;
        (*ev).fd = key.fd as i32;
        (*ev).start_ns = (*conn).start_ns;
        (*ev).len = end as u32;
        (*ev)._pad = 0;
        // The scratch is all zeros past the path.
        let r = generated::bpf_probe_read_kernel(
            (&raw mut (*ev).line).cast::<c_void>(),
            REQUEST_LINE_BYTES as u32,
            scratch.cast(),
        );
        if r != 0 {
            slot.discard(0);
            return 0;
        }
        (*conn).http = HTTP_LINE_SENT;
    }
    slot.submit(submit_flags(false));
    1
}

/// The first buffer of an iovec array, and the bytes of `ret` in it.
#[inline(always)]
fn first_iovec(iov: u64, ret: u64) -> (u64, u64) {
    if iov == 0 {
        return (0, 0);
    }
    let base = read_user_or::<u64>(iov, 0);
    let len = read_user_or::<u64>(iov + 8, 0);
    (base, if len < ret { len } else { ret })
}

/// Copies the first bytes of the read (`len` at user address `data`) into
/// this CPU's scratch, and zeroes all of it but the method and path of a
/// request line; returns the bytes kept (0: not a request line). Global,
/// so that the verifier walks the scan once.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_request_line_capture(data: u64, len: u64) -> u64 {
    let Some(scratch) = LINE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; the program is not re-entered on this CPU.
    let scratch = unsafe { &mut *scratch };
    let n = mem::user_prefix(scratch, data, len);
    let end = if n > 0 { path_end(scratch, n) } else { 0 };
    mem::scrub_after(scratch, end);
    end as u64
}

/// Where a request line's path ends in the first `len` bytes of `data`:
/// a method (2 to 7 capital letters), a space, a path that starts with `/`
/// (or `*`, for OPTIONS), up to the space before the version, a `?` or `#`,
/// or the end of the line or of the bytes read. 0 when the bytes are not a
/// request line.
#[inline(always)]
fn path_end(data: &[u8; REQUEST_LINE_BYTES], len: usize) -> usize {
    let mut space = 0;
    let mut i = 0;
    while i < 8 && i < len {
        let Some(&c) = data.get(i) else {
            return 0;
        };
        if c == b' ' {
            space = i;
            break;
        }
        if !c.is_ascii_uppercase() {
            return 0;
        }
        i += 1;
    }
    if space < 2 {
        return 0;
    }
    match data.get(space + 1) {
        Some(b'/' | b'*') if space + 1 < len => {}
        _ => return 0,
    }
    let mut end = space + 1;
    while end < REQUEST_LINE_BYTES && end < len {
        let Some(&c) = data.get(end) else {
            break;
        };
        if matches!(c, b' ' | b'?' | b'#' | b'\r' | b'\n' | 0) {
            break;
        }
        end += 1;
    }
    end
}
