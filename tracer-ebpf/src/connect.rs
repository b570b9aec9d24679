//! connect(): one event per call, with the peer the process asked for; the
//! real TCP handshake time from `sock:inet_sock_set_state`; and sockets
//! connected to a DNS server remembered for the DNS decoder.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{
    ConnectEvent, DNS_PORT, DnsServer, EventKind, FdClosedEvent, FdKey, HandshakeEvent,
    LostCounter, PendingHandshake, TCP_CLOSE, TCP_ESTABLISHED, TCP_SYN_SENT,
};

use crate::{
    calls::Finished,
    maps::{
        CONNECTED_FDS, DNS_SOCKETS, DNS_SOCKETS_OPEN, EVENTS, PENDING_HANDSHAKES, THREAD_ENTRIES,
        count_lost, is_traced, output, read_sockaddr, sockaddr_port, submit_flags,
    },
};

const EINPROGRESS: i64 = 115;

#[inline(always)]
pub fn on_connect_exit(call: &Finished) {
    let Some(mut slot) = EVENTS.reserve::<ConnectEvent>(0) else {
        count_lost(LostCounter::RingFull);
        return;
    };
    let ev = slot.as_mut_ptr();
    let entry = call.entry;
    let addr_len = entry.args[2] as u32;
    // SAFETY: `ev` points to a reserved ring buffer record of our size.
    let (port, server) = unsafe {
        (*ev).kind = EventKind::Connect as u32;
        (*ev).tgid = call.tgid;
        (*ev).tid = call.tid;
        (*ev).fd = entry.args[0] as i32;
        (*ev).ret = call.ret;
        (*ev).start_ns = call.start_ns;
        (*ev).duration_ns = call.duration;
        (*ev).skaddr = entry.skaddr;
        (*ev).addr_len = addr_len;
        (*ev)._pad = 0;
        let addr = &mut (*ev).addr;
        if !read_sockaddr(entry.args[1] as *const u8, addr_len, addr) {
            (*ev).addr_len = 0;
        }
        // Only a TCP connect passed through SYN_SENT (and so has its
        // socket's address).
        let mut server = DnsServer {
            addr: [0; 28],
            tcp: u32::from(entry.skaddr != 0),
        };
        server.addr.copy_from_slice(&addr[..28]);
        (sockaddr_port(&addr[..4]), server)
    };
    slot.submit(submit_flags(false));

    if call.ret == 0 || call.ret == -EINPROGRESS {
        let key = FdKey {
            tgid: call.tgid,
            fd: entry.args[0] as u32,
        };
        let _ = CONNECTED_FDS.insert(key, 1u8, 0);
    }
    // A socket connected to port 53 (glibc's resolver connects its UDP
    // socket, then sends without an address): its traffic is DNS.
    if port == DNS_PORT && (call.ret == 0 || call.ret == -EINPROGRESS) {
        let key = FdKey {
            tgid: call.tgid,
            fd: entry.args[0] as u32,
        };
        let new = DNS_SOCKETS.get_ptr(key).is_none();
        if DNS_SOCKETS.insert(key, server, 0).is_err() {
            count_lost(LostCounter::DnsSocketMapFull);
        } else if new && let Some(n) = DNS_SOCKETS_OPEN.get_ptr_mut(0) {
            // SAFETY: the array's one slot; other CPUs add too.
            unsafe { crate::mem::atomic_add(n, 1) };
        }
    }
}

// sock:inet_sock_set_state field offsets (checked against the format file by
// user space before attaching).
const ISS_SKADDR: usize = 8;
const ISS_OLDSTATE: usize = 16;
const ISS_NEWSTATE: usize = 20;
const ISS_PROTOCOL: usize = 30;
const IPPROTO_TCP: u16 = 6;

/// close() of a socket this process connected, at its entry (see
/// `syscalls`): tell user space.
pub fn on_close(tgid: u32, fd: u32) {
    if CONNECTED_FDS.remove(FdKey { tgid, fd }).is_ok() {
        output(&FdClosedEvent {
            kind: EventKind::FdClosed as u32,
            tgid,
            fd: fd as i32,
            _pad: 0,
        });
    }
}

/// The real handshake time of a TCP connect, blocking or not: from the
/// SYN_SENT transition (in the connecting thread) to ESTABLISHED or CLOSE
/// (usually in softirq, where the current task is unrelated: hence the key
/// is the socket, not the pid).
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_inet_sock_set_state(&ctx);
    0
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    let protocol: u16 = unsafe { ctx.read_at(ISS_PROTOCOL)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let old: i32 = unsafe { ctx.read_at(ISS_OLDSTATE)? };
    let new: i32 = unsafe { ctx.read_at(ISS_NEWSTATE)? };
    let skaddr: u64 = unsafe { ctx.read_at(ISS_SKADDR)? };
    let now = unsafe { bpf_ktime_get_ns() };
    if new as u32 == TCP_SYN_SENT {
        let pid_tgid = bpf_get_current_pid_tgid();
        let tgid = (pid_tgid >> 32) as u32;
        if !is_traced(tgid) {
            return Ok(());
        }
        let tid = pid_tgid as u32;
        let pending = PendingHandshake {
            start_ns: now,
            tgid,
            tid,
        };
        if PENDING_HANDSHAKES.insert(skaddr, pending, 0).is_err() {
            count_lost(LostCounter::HandshakeMapFull);
        }
        // Tell the connect() in progress on this thread which socket it is.
        if let Some(slot) = THREAD_ENTRIES.get_ptr_mut(tid) {
            unsafe { (*slot).skaddr = skaddr };
        }
        return Ok(());
    }
    if old as u32 != TCP_SYN_SENT {
        return Ok(());
    }
    let Some(pending) = PENDING_HANDSHAKES.get_ptr(skaddr) else {
        return Ok(());
    };
    let pending = unsafe { *pending };
    let _ = PENDING_HANDSHAKES.remove(skaddr);
    let new_state = if new as u32 == TCP_ESTABLISHED {
        TCP_ESTABLISHED
    } else {
        TCP_CLOSE
    };
    output(&HandshakeEvent {
        kind: EventKind::Handshake as u32,
        tgid: pending.tgid,
        tid: pending.tid,
        new_state,
        skaddr,
        start_ns: pending.start_ns,
        duration_ns: now.saturating_sub(pending.start_ns),
    });
    Ok(())
}
