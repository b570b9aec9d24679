//! Servers: the connections a process accepted, and its requests' time.

/// Connections a traced server accepted whose requests are timed (least
/// recently used ones make room: a connection never closed in our sight
/// must not keep its slot).
pub const MAX_SERVER_CONNS: u32 = 16384;

/// A connection the traced process accepted, timed as a server's
/// requests: a request starts at the first read that returns data after
/// the connection was answered (or opened), and ends at the last write
/// before the next such read, the end of input, or the close.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerConn {
    /// One of `CONN_*`.
    pub state: u32,
    pub _pad: u32,
    /// When the request's first bytes were read (the read's return).
    pub start_ns: u64,
    /// The return of the last write of the response so far.
    pub last_write_ns: u64,
}

/// Opened, or its last request ended: waiting for the client.
pub const CONN_WAITING: u32 = 0;

/// A request read, nothing written back yet.
pub const CONN_IN_REQUEST: u32 = 1;

/// A response (partly) written: the request ends at its last write.
pub const CONN_ANSWERED: u32 = 2;

/// A server's finished requests per process: how many, and their time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestTime {
    pub ns: u64,
    pub count: u64,
}

// SAFETY: #[repr(C)] structs of integers and byte arrays, valid for any
// bit pattern.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ServerConn {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for RequestTime {}
