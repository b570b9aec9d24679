//! Connects: the connect() record and the TCP handshake that finishes it.

use crate::SOCKADDR_MAX;

/// A TCP handshake waiting for its SYN-ACK, keyed by socket address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingHandshake {
    pub start_ns: u64,
    pub tgid: u32,
    pub tid: u32,
}

/// One finished connect() syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    /// Syscall return value: 0, or a negative errno.
    pub ret: i64,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// The socket that entered SYN_SENT in this call (0: not TCP, or failed
    /// before the SYN). Matches `HandshakeEvent::skaddr`.
    pub skaddr: u64,
    pub addr_len: u32,
    pub _pad: u32,
    /// The `struct sockaddr` the process passed, as many bytes as `addr_len`
    /// (capped at `SOCKADDR_MAX`).
    pub addr: [u8; SOCKADDR_MAX],
}

/// A TCP socket left SYN_SENT: the handshake finished (ESTABLISHED) or failed
/// (CLOSE). Runs in softirq, so the ids come from the SYN_SENT record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HandshakeEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    /// TCP state entered: 1 = ESTABLISHED, 7 = CLOSE.
    pub new_state: u32,
    pub skaddr: u64,
    pub start_ns: u64,
    pub duration_ns: u64,
}

pub const TCP_ESTABLISHED: u32 = 1;

pub const TCP_SYN_SENT: u32 = 2;

pub const TCP_CLOSE: u32 = 7;

/// TCP handshakes in flight (SYN sent, no answer yet).
pub const MAX_PENDING_HANDSHAKES: u32 = 16384;

// SAFETY: #[repr(C)] structs of integers and byte arrays, valid for any
// bit pattern.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PendingHandshake {}
