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
    /// Whether the request in progress is an HTTP request: one of
    /// `HTTP_*`.
    pub http: u32,
    /// When the request's first bytes were read (the read's return).
    pub start_ns: u64,
    /// The return of the last write of the response so far.
    pub last_write_ns: u64,
    /// The `SSL *` last seen on it (with `--http-tls`): a memory BIO's
    /// SSL call finds its connection by it, and an `SSL *` freed and
    /// reused for another connection does not match.
    pub ssl: u64,
    /// The return of the last write syscall of a TLS response, made inside
    /// an SSL write on a socket BIO (0 when taken). The response ends there
    /// rather than at the SSL write's return: on the way back to user
    /// space the kernel may run the client, woken by those very bytes,
    /// first, and the return probe then fires after the client had the
    /// whole response (gunicorn over TLS, 0.8 ms after, on a CI machine).
    pub last_sent_ns: u64,
}

/// Opened, or its last request ended: waiting for the client.
pub const CONN_WAITING: u32 = 0;

/// A request read, nothing written back yet.
pub const CONN_IN_REQUEST: u32 = 1;

/// A response (partly) written: the request ends at its last write.
pub const CONN_ANSWERED: u32 = 2;

/// `ServerConn::http`: not an HTTP request (or not yet known).
pub const HTTP_NONE: u32 = 0;

/// `ServerConn::http`: the request began with a request line, sent as a
/// `RequestLineEvent`: its end is sent too.
pub const HTTP_LINE_SENT: u32 = 1;

/// `ServerConn::http`: the request's first read was not a request line,
/// as a TLS record is not: with `--http-tls`, the first plaintext an
/// SSL read returns on the connection is looked at instead.
pub const HTTP_LINE_IN_TLS: u32 = 2;

/// A server's finished requests per process: how many, and their time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestTime {
    pub ns: u64,
    pub count: u64,
}

/// The bytes of a request line read at most: method, space, path.
pub const REQUEST_LINE_BYTES: usize = 256;

/// A request on an accepted connection began with an HTTP/1.x request
/// line. `line` holds its method and path, and nothing after them: the
/// kernel side zeroes every byte from the end of the path (the space before
/// the version, a `?` or `#`, or the end of the line) on, so no query
/// string, header or body byte leaves the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RequestLineEvent {
    pub kind: u32,
    pub tgid: u32,
    /// The thread that read it: in a thread-per-request server, the thread
    /// that serves it.
    pub tid: u32,
    pub fd: i32,
    /// The request's start (the return of the read), as `ServerConn`'s.
    pub start_ns: u64,
    /// Bytes of `line` used; `REQUEST_LINE_BYTES` when the path was longer.
    pub len: u32,
    pub _pad: u32,
    pub line: [u8; REQUEST_LINE_BYTES],
}

/// The end of a request a `RequestLineEvent` began: the return of its
/// response's last write. `end_ns` is 0 when no response was written (the
/// client went away, or the connection was closed unanswered).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RequestEndEvent {
    pub kind: u32,
    pub tgid: u32,
    pub fd: i32,
    pub _pad: u32,
    pub start_ns: u64,
    pub end_ns: u64,
}

// SAFETY: #[repr(C)] structs of integers and byte arrays, valid for any
// bit pattern.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ServerConn {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for RequestTime {}
