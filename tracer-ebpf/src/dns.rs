//! DNS: name lookups timed by uprobes on libc's getaddrinfo and
//! gethostbyname*, and the DNS messages a traced process sends and receives
//! (any resolver: libc, c-ares, Go, dig), with the poll() waits between them.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user_buf,
        bpf_probe_read_user_str_bytes, generated,
    },
    macros::{map, uprobe, uretprobe},
    maps::PerCpuArray,
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::{
    DNS_CAPTURE, DNS_PORT, DNS_RECV, DNS_SEND, DnsPacketEvent, DnsWaitEvent, EventKind, FdKey,
    LOOKUP_ADDRS, LookupFn, LookupState, LostCounter, sysno,
};

use crate::{
    calls::{Finished, first_polled_fd},
    lookup_record::{self, AF_INET, AF_INET6, LookupHead, copy_addr},
    maps::{
        DNS_SOCKETS, DNS_SOCKETS_OPEN, EVENTS, LOOKUPS, count_lost, output, sockaddr_port,
        submit_flags,
    },
    mem::{self, user as read_user, user_or as read_user_or},
};

/// A probed lookup still open after this long lost its return probe (the
/// thread longjmp'd out, say): the next call starts afresh.
const STALE_LOOKUP_NS: u64 = 120_000_000_000;

/// close() of a DNS socket, at its entry (see `syscalls`).
pub fn on_close(tgid: u32, fd: u32) {
    if DNS_SOCKETS.remove(FdKey { tgid, fd }).is_ok()
        && let Some(n) = DNS_SOCKETS_OPEN.get_ptr_mut(0)
    {
        // SAFETY: the array's one slot; adding all ones takes one away.
        unsafe { crate::mem::atomic_add(n, u64::MAX) };
    }
}

/// poll()/ppoll() whose first descriptor is a DNS socket: a resolver
/// waiting for an answer. Returning 0 means the wait timed out. Returns
/// whether it was one.
pub fn on_poll_exit(call: &Finished) -> bool {
    let args = &call.entry.args;
    let Some(fd) = first_polled_fd(call) else {
        return false;
    };
    let key = FdKey {
        tgid: call.tgid,
        fd: fd as u32,
    };
    if DNS_SOCKETS.get_ptr(key).is_none() {
        return false;
    }
    let timeout_ms = if call.entry.nr == sysno::POLL {
        args[2] as i32 as i64
    } else if args[2] == 0 {
        -1
    } else {
        // ppoll: struct timespec { tv_sec, tv_nsec }. Unsigned arithmetic:
        // eBPF has no signed division.
        let sec = read_user_or::<u64>(args[2], 0);
        let nsec = read_user_or::<u64>(args[2] + 8, 0);
        (sec * 1000 + nsec / 1_000_000) as i64
    };
    output(&DnsWaitEvent {
        kind: EventKind::DnsWait as u32,
        tgid: call.tgid,
        tid: call.tid,
        fd,
        ts_ns: call.start_ns + call.duration,
        duration_ns: call.duration,
        ret: call.ret,
        timeout_ms,
    });
    true
}

/// One message of a send/recv syscall: where its bytes are and who the
/// other end is (a sockaddr pointer, or 0 when the socket is connected).
struct Message {
    data: u64,
    len: u64,
    name: u64,
}

/// `struct msghdr` offsets (x86_64): msg_name 0, msg_iov 16; `struct iovec`
/// iov_base 0.
fn msghdr_message(msghdr: u64, len: u64) -> Option<Message> {
    let name = read_user::<u64>(msghdr)?;
    let iov = read_user::<u64>(msghdr + 16)?;
    let data = read_user::<u64>(iov)?;
    Some(Message { data, len, name })
}

/// sendto, recvfrom, sendmsg, recvmsg, sendmmsg on a socket talking to port
/// 53: copy the DNS message out.
pub fn on_io_exit(call: &Finished) {
    if call.ret <= 0 {
        return;
    }
    let args = &call.entry.args;
    let nr = call.entry.nr;
    let direction = if nr == sysno::RECVFROM || nr == sysno::RECVMSG {
        DNS_RECV
    } else {
        DNS_SEND
    };
    let ret = call.ret as u64;
    match nr {
        sysno::SENDTO | sysno::RECVFROM => emit_packet(
            call,
            direction,
            &Message {
                data: args[1],
                len: ret,
                name: args[4],
            },
        ),
        sysno::SENDMSG | sysno::RECVMSG => {
            if let Some(m) = msghdr_message(args[1], ret) {
                emit_packet(call, direction, &m);
            }
        }
        sysno::SENDMMSG => {
            // glibc sends the A and AAAA queries together: two messages.
            // `struct mmsghdr` is a msghdr (56 bytes) and msg_len, 64 in all.
            for i in 0..2u64 {
                if i >= ret {
                    break;
                }
                let hdr = args[1] + i * 64;
                let Some(len) = read_user::<u32>(hdr + 56) else {
                    break;
                };
                if let Some(m) = msghdr_message(hdr, len as u64) {
                    emit_packet(call, direction, &m);
                }
            }
        }
        _ => {}
    }
}

/// Which syscall a message came in, for its record.
struct Carrier {
    tgid: u32,
    tid: u32,
    fd: i32,
    nr: u32,
    start_ns: u64,
    duration: u64,
}

impl Carrier {
    fn of(call: &Finished) -> Self {
        Self {
            tgid: call.tgid,
            tid: call.tid,
            fd: call.entry.args[0] as i32,
            nr: call.entry.nr as u32,
            start_ns: call.start_ns,
            duration: call.duration,
        }
    }
}

#[inline(always)]
fn emit_packet(call: &Finished, direction: u32, msg: &Message) {
    // Who is at the other end: the address given with the message, else the
    // server the socket was connected to.
    let mut peer = [0u8; 28];
    let mut is_dns = false;
    if msg.name != 0 {
        // SAFETY: the helper checks the user-space access.
        if unsafe { bpf_probe_read_user_buf(msg.name as *const u8, &mut peer[..16]) }.is_ok() {
            if u16::from_ne_bytes([peer[0], peer[1]]) == AF_INET6 {
                let _ = unsafe { bpf_probe_read_user_buf(msg.name as *const u8, &mut peer) };
            }
            is_dns = sockaddr_port(&peer[..4]) == DNS_PORT;
        }
    }
    if !is_dns {
        let key = FdKey {
            tgid: call.tgid,
            fd: call.entry.args[0] as u32,
        };
        let Some(server) = DNS_SOCKETS.get_ptr(key) else {
            return;
        };
        // SAFETY: map value pointer, valid during this program run.
        peer = unsafe { (*server).addr };
    }
    emit_message(&Carrier::of(call), direction, msg, &peer);
}

/// Sends one DNS message to user space: `peer` is the server.
#[inline(always)]
fn emit_message(call: &Carrier, direction: u32, msg: &Message, peer: &[u8; 28]) {
    // First the message, into this CPU's scratch, then the record: the
    // copy and the parse are one global function (see `tracer_dns_capture`).
    let captured = tracer_dns_capture(msg.data, msg.len);
    let Some(scratch) = DNS_SCRATCH.get_ptr(0) else {
        return;
    };
    let Some(mut slot) = EVENTS.reserve::<DnsPacketEvent>(0) else {
        count_lost(LostCounter::RingFull);
        return;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points to a reserved ring buffer record of our size.
    unsafe {
        (*ev).kind = EventKind::DnsPacket as u32;
        (*ev).tgid = call.tgid;
        (*ev).tid = call.tid;
        (*ev).fd = call.fd;
        (*ev).direction = direction;
        (*ev).nr = call.nr;
        (*ev).ts_ns = call.start_ns + call.duration;
        (*ev).syscall_ns = call.duration;
        (*ev).len = msg.len as u32;
        (*ev).peer = *peer;
        (*ev)._pad = 0;
        // The scratch is all zeros past the question.
        let r = generated::bpf_probe_read_kernel(
            (&raw mut (*ev).data).cast::<c_void>(),
            DNS_CAPTURE as u32,
            scratch.cast(),
        );
        (*ev).captured = if r == 0 { captured } else { 0 };
        if r != 0 {
            (*ev).data = [0; DNS_CAPTURE];
        }
    }
    slot.submit(submit_flags(false));
}

/// read, write, readv or writev that moved `ret` bytes at `buf` (an iovec
/// array for the vector calls) on descriptor `nr_fd & 0xffffffff`
/// (syscall `nr_fd >> 32`): a DNS message when the socket was connected to
/// a DNS server. Go's resolver, for one, connects and then writes and
/// reads. Over TCP each message goes with its 2-byte length: a read of
/// just the length is skipped, and a length at the start of a buffer is
/// stripped. A global function, checked once: `sys_exit` is near the
/// older kernels' verifier budget.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_dns_fd_io(
    pid_tgid: u64,
    nr_fd: u64,
    buf: u64,
    ret: u64,
    start_ns: u64,
) -> u64 {
    let key = FdKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: nr_fd as u32,
    };
    let Some(server) = DNS_SOCKETS.get_ptr(key) else {
        return 0;
    };
    // SAFETY: map value pointer, valid during this program run.
    let server = unsafe { *server };
    let nr = nr_fd >> 32;
    let direction = if nr == sysno::READ || nr == sysno::READV {
        DNS_RECV
    } else {
        DNS_SEND
    };
    let mut msg = Message {
        data: buf,
        len: ret,
        name: 0,
    };
    if nr == sysno::READV || nr == sysno::WRITEV {
        // struct iovec { iov_base, iov_len }: the message is the first, or
        // the second when the first is a TCP length (glibc's writev).
        let first_len = read_user_or::<u64>(buf + 8, 0);
        if server.tcp != 0 && first_len == 2 && ret > 2 {
            msg.data = read_user_or::<u64>(buf + 16, 0);
            msg.len = ret - 2;
        } else {
            msg.data = read_user_or::<u64>(buf, 0);
            msg.len = if first_len < ret { first_len } else { ret };
        }
    } else if server.tcp != 0 {
        if msg.len <= 2 {
            return 0;
        }
        let prefix = read_user_or::<[u8; 2]>(msg.data, [0, 0]);
        if u16::from_be_bytes(prefix) as u64 == msg.len - 2 {
            msg.data += 2;
            msg.len -= 2;
        }
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let carrier = Carrier {
        tgid: key.tgid,
        tid: pid_tgid as u32,
        fd: key.fd as i32,
        nr: nr as u32,
        start_ns,
        duration: now.saturating_sub(start_ns),
    };
    emit_message(&carrier, direction, &msg, &server.addr);
    0
}

/// The message being captured on this CPU.
#[map]
static DNS_SCRATCH: PerCpuArray<[u8; DNS_CAPTURE]> = PerCpuArray::with_max_entries(1, 0);

/// Copies the start of a DNS message (`len` bytes at user address `data`)
/// into this CPU's `DNS_SCRATCH`, up to the end of its first question and
/// zeroed after; returns the bytes kept. A global function: the verifier
/// checks the label walk once, not at each of the four places a message is
/// emitted (inlined there, older verifiers ran out of budget).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_dns_capture(data: u64, len: u64) -> u32 {
    let Some(scratch) = DNS_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; the program is not re-entered on this CPU.
    let n = mem::user_prefix(unsafe { &mut *scratch }, data, len);
    let end = if n > 0 {
        tracer_dns_question_end(n as u64)
    } else {
        0
    };
    tracer_dns_scrub_after(end);
    end as u32
}

/// `question_end` of the message in this CPU's scratch, as a global
/// function: its result reaches the caller as a number the verifier knows
/// nothing about, so the caller is checked once, not once per way the walk
/// can end (the 64 ways, each followed by the scrub, were over budget).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_dns_question_end(len: u64) -> u64 {
    let Some(scratch) = DNS_SCRATCH.get_ptr(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot, written by the caller.
    question_end(unsafe { &*scratch }, len as usize) as u64
}

/// `scrub_after` on this CPU's scratch, a global function for the same
/// reason.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_dns_scrub_after(end: u64) -> u64 {
    let Some(scratch) = DNS_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; the program is not re-entered on this CPU.
    mem::scrub_after(unsafe { &mut *scratch }, end as usize);
    0
}

/// Where the first question of a DNS message ends (the 12-byte header,
/// then the name's labels, type and class): all that user space gets to
/// see. Only the header when the question is cut short, malformed or has
/// more than 64 labels (the verifier's budget bounds the walk).
#[inline(always)]
fn question_end(data: &[u8; DNS_CAPTURE], len: usize) -> usize {
    const HEADER: usize = 12;
    if len < HEADER {
        return len;
    }
    let mut pos = HEADER;
    let mut end = HEADER;
    let mut labels = 0;
    while labels < 64 && pos < len {
        let Some(&label) = data.get(pos) else {
            break;
        };
        if label == 0 {
            if pos + 5 <= len {
                end = pos + 5;
            }
            break;
        }
        if label & 0xC0 != 0 {
            // A compression pointer has no place in a question.
            break;
        }
        pos += label as usize + 1;
        labels += 1;
    }
    end
}

#[inline(always)]
fn lookup_entry(ctx: &ProbeContext, func: LookupFn) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !crate::scope::traced_or_adopted(ctx, pid_tgid) {
        return 0;
    }
    let tid = pid_tgid as u32;
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the probe context is the thread's user registers.
    let sp = unsafe { (*ctx.regs).rsp };
    if let Some(state) = LOOKUPS.get_ptr_mut(tid) {
        // SAFETY: this thread's own map value.
        let state = unsafe { &mut *state };
        // gethostbyname calls gethostbyname_r: report the outer call. A
        // call entered at or above the open one's stack pointer is not
        // inside it: that one returned unseen (its return probe was not
        // yet attached when it began, say), and this one starts afresh.
        if state.depth > 0 && now.saturating_sub(state.start_ns) < STALE_LOOKUP_NS && sp < state.sp
        {
            state.depth += 1;
            return 0;
        }
    }
    let mut args = [0u64; 6];
    for (i, a) in args.iter_mut().enumerate() {
        *a = ctx.arg::<u64>(i).unwrap_or(0);
    }
    let state = LookupState {
        start_ns: now,
        func: func as u32,
        depth: 1,
        args,
        sp,
    };
    if LOOKUPS.insert(tid, state, 0).is_err() {
        count_lost(LostCounter::LookupMapFull);
        return 0;
    }
    lookup_record::started(tgid, tid, func, now, ctx.regs);
    0
}

#[uprobe]
pub fn getaddrinfo_entry(ctx: ProbeContext) -> u32 {
    lookup_entry(&ctx, LookupFn::Getaddrinfo)
}

#[uprobe]
pub fn gethostbyname_entry(ctx: ProbeContext) -> u32 {
    lookup_entry(&ctx, LookupFn::Gethostbyname)
}

#[uprobe]
pub fn gethostbyname2_entry(ctx: ProbeContext) -> u32 {
    lookup_entry(&ctx, LookupFn::Gethostbyname2)
}

#[uprobe]
pub fn gethostbyname_r_entry(ctx: ProbeContext) -> u32 {
    lookup_entry(&ctx, LookupFn::GethostbynameR)
}

/// One return probe for every lookup function: the state says which it was.
#[uretprobe]
pub fn lookup_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(state) = LOOKUPS.get_ptr_mut(tid) else {
        return 0;
    };
    // SAFETY: this thread's own map value.
    let state = unsafe { &mut *state };
    if state.depth == 0 {
        return 0;
    }
    state.depth -= 1;
    if state.depth > 0 {
        return 0;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let args = state.args;
    let func = state.func;
    // The result first, into this CPU's scratch (see `tracer_walk_addrinfo`),
    // then the record.
    let (ret, naddrs) = if func == LookupFn::Getaddrinfo as u32 {
        let ret: i32 = ctx.ret();
        let naddrs = if ret == 0 {
            // args[3] is `struct addrinfo **res`.
            tracer_walk_addrinfo(read_user_or::<u64>(args[3], 0))
        } else {
            tracer_walk_addrinfo(0)
        };
        (ret, naddrs)
    } else if func == LookupFn::GethostbynameR as u32 {
        // int gethostbyname_r(name, ret, buf, buflen, **result, *h_errnop)
        let ret: i32 = ctx.ret();
        let result = read_user_or::<u64>(args[4], 0);
        if ret == 0 && result != 0 {
            (0, tracer_walk_hostent(result))
        } else {
            (read_user_or::<i32>(args[5], -1), tracer_walk_hostent(0))
        }
    } else {
        // struct hostent *gethostbyname(name), gethostbyname2(name, af)
        let hostent: u64 = ctx.ret();
        (
            if hostent == 0 { -1 } else { 0 },
            tracer_walk_hostent(hostent),
        )
    };
    let head = LookupHead {
        tgid: (pid_tgid >> 32) as u32,
        tid,
        end_tid: tid,
        func,
        start_ns: state.start_ns,
        duration_ns: now.saturating_sub(state.start_ns),
        ret,
        naddrs,
    };
    lookup_record::emit(&head, |ev| {
        // SAFETY: `ev` is the reserved record; the helpers check the reads.
        unsafe {
            let _ = bpf_probe_read_user_str_bytes(args[0] as *const u8, &mut (*ev).host);
            if func == LookupFn::Getaddrinfo as u32 && args[1] != 0 {
                let _ = bpf_probe_read_user_str_bytes(args[1] as *const u8, &mut (*ev).service);
            }
        }
    });
    0
}

/// Walks getaddrinfo's result list into this CPU's `LOOKUP_SCRATCH`;
/// returns the number of entries. `struct addrinfo` has ai_family at 4,
/// ai_addr at 24, ai_next at 40 (x86_64). A global function: the verifier
/// checks the walk once, on its own; inlined into the return probe, with
/// the ring buffer record held, older verifiers ran out of budget.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_walk_addrinfo(mut ai: u64) -> u32 {
    let Some(out) = lookup_record::scratch() else {
        return 0;
    };
    let mut naddrs = 0;
    for i in 0..32usize {
        if ai == 0 {
            break;
        }
        naddrs += 1;
        if i < LOOKUP_ADDRS {
            let family = read_user_or::<u32>(ai + 4, 0) as u16;
            let sa = read_user_or::<u64>(ai + 24, 0);
            if sa != 0 {
                // sin_addr at 4, sin6_addr at 8.
                let at = if family == AF_INET6 { 8 } else { 4 };
                copy_addr(out, i, family, sa + at);
            }
        }
        ai = read_user_or::<u64>(ai + 40, 0);
    }
    naddrs
}

/// Walks a `struct hostent` (h_addrtype at 16, h_addr_list at 24) into
/// this CPU's `LOOKUP_SCRATCH`; returns the number of addresses. Global,
/// as `tracer_walk_addrinfo`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_walk_hostent(h: u64) -> u32 {
    let Some(out) = lookup_record::scratch() else {
        return 0;
    };
    if h == 0 {
        return 0;
    }
    let family = read_user_or::<i32>(h + 16, AF_INET as i32) as u16;
    let Some(list) = read_user::<u64>(h + 24) else {
        return 0;
    };
    let mut naddrs = 0;
    for i in 0..LOOKUP_ADDRS {
        let Some(a) = read_user::<u64>(list + 8 * i as u64) else {
            break;
        };
        if a == 0 {
            break;
        }
        naddrs += 1;
        copy_addr(out, i, family, a);
    }
    naddrs
}
