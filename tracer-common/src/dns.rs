//! DNS messages on the wire: the queries and answers a process sends
//! and receives, and its waits for them.

/// DNS servers listen here; traffic to or from it is parsed as DNS.
pub const DNS_PORT: u16 = 53;

/// Bytes of a DNS message copied from the process: enough for the header
/// (12), the longest name (255) and the type and class (4). The kernel
/// zeroes everything after the first question before user space sees it.
pub const DNS_CAPTURE: usize = 272;

/// Sockets known to talk to a DNS server, per process.
pub const MAX_DNS_SOCKETS: u32 = 16384;

/// Key of `DNS_SOCKETS`: a process's file descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: u32,
}

/// The DNS server a socket was connected to (a `sockaddr_in`/`sockaddr_in6`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsServer {
    pub addr: [u8; 28],
    /// 1 for TCP: each message goes with its 2-byte length.
    pub tcp: u32,
}

pub const DNS_SEND: u32 = 1;

pub const DNS_RECV: u32 = 2;

/// A DNS message a traced process sent or received (a send/recv syscall on a
/// socket talking to port 53). Several per sendmmsg.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsPacketEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub direction: u32,
    pub nr: u32,
    /// When the syscall returned.
    pub ts_ns: u64,
    pub syscall_ns: u64,
    /// Length of the message; `captured` bytes of it are in `data`.
    pub len: u32,
    pub captured: u32,
    /// The server: destination of a send, source of a receive (sockaddr).
    pub peer: [u8; 28],
    pub _pad: u32,
    pub data: [u8; DNS_CAPTURE],
}

/// A poll() on a DNS socket: how long the resolver waited for an answer,
/// and whether the wait ended in a timeout (ret 0).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsWaitEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub ts_ns: u64,
    pub duration_ns: u64,
    pub ret: i64,
    pub timeout_ms: i64,
}

// SAFETY: #[repr(C)] structs of integers and byte arrays, valid for any
// bit pattern.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FdKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for DnsServer {}
