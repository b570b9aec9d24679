//! Slow reads and writes, and the closing of the sockets they name.

/// A socket a traced process connected was closed: its fd number means
/// something else from now on.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FdClosedEvent {
    pub kind: u32,
    pub tgid: u32,
    pub fd: i32,
    pub _pad: u32,
}

/// Sockets a traced process connected, per process and fd, at most.
pub const MAX_CONNECTED_FDS: u32 = 65536;

/// Default threshold for reporting a single read or write.
pub const SLOW_IO_NS: u64 = 1_000_000;

/// A read or write (on a socket, pipe or file) that took long, outside
/// SSL calls and DNS: a process waiting on a peer, such as a database.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SlowIoEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub nr: u32,
    pub _pad: u32,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// Bytes moved, or a negative errno.
    pub ret: i64,
}
