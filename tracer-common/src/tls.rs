//! TLS: OpenSSL's reads, writes and handshakes, and the waits of an event
//! loop for a TLS socket.

/// Sockets known to carry TLS, per process.
pub const MAX_TLS_SOCKETS: u32 = 16384;

/// Threads inside an SSL call at once.
pub const MAX_TLS_CALLS: u32 = 16384;

/// The OpenSSL functions probed; the attach cookie of each probe.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsFn {
    Read = 1,
    ReadEx = 2,
    Write = 3,
    WriteEx = 4,
    DoHandshake = 5,
    Connect = 6,
    Accept = 7,
    /// OpenSSL's internal handshake state machine (client, server): called
    /// by the handshake functions and by SSL_read/SSL_write while a
    /// handshake is under way. Node.js never calls SSL_do_handshake: its
    /// handshakes happen inside SSL_read. Probed only where the symbol
    /// table has it; never reported as a call of its own.
    StatemConnect = 8,
    StatemAccept = 9,
    /// Go's crypto/tls: `(*Conn).Read`, `(*Conn).Write` and
    /// `(*Conn).handshakeContext` (what Handshake and HandshakeContext
    /// call), probed in a Go executable.
    GoRead = 10,
    GoWrite = 11,
    GoHandshake = 12,
}

impl TlsFn {
    pub const ALL: [TlsFn; 9] = [
        Self::Read,
        Self::ReadEx,
        Self::Write,
        Self::WriteEx,
        Self::DoHandshake,
        Self::Connect,
        Self::Accept,
        Self::StatemConnect,
        Self::StatemAccept,
    ];

    /// Go's functions, apart from OpenSSL's `ALL`.
    pub const GO: [TlsFn; 3] = [Self::GoRead, Self::GoWrite, Self::GoHandshake];

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain(Self::GO)
            .find(|f| *f as u32 == v)
    }

    pub const fn symbol(self) -> &'static str {
        match self {
            Self::Read => "SSL_read",
            Self::ReadEx => "SSL_read_ex",
            Self::Write => "SSL_write",
            Self::WriteEx => "SSL_write_ex",
            Self::DoHandshake => "SSL_do_handshake",
            Self::Connect => "SSL_connect",
            Self::Accept => "SSL_accept",
            Self::StatemConnect => "ossl_statem_connect",
            Self::StatemAccept => "ossl_statem_accept",
            Self::GoRead => "crypto/tls.(*Conn).Read",
            Self::GoWrite => "crypto/tls.(*Conn).Write",
            Self::GoHandshake => "crypto/tls.(*Conn).handshakeContext",
        }
    }

    /// The eBPF entry program probed on this function. One per function,
    /// not one for all told apart by the attach cookie: 5.10 has no
    /// cookies.
    pub const fn entry_program(self) -> &'static str {
        match self {
            Self::Read => "tls_entry_read",
            Self::ReadEx => "tls_entry_read_ex",
            Self::Write => "tls_entry_write",
            Self::WriteEx => "tls_entry_write_ex",
            Self::DoHandshake => "tls_entry_do_handshake",
            Self::Connect => "tls_entry_connect",
            Self::Accept => "tls_entry_accept",
            Self::StatemConnect => "tls_entry_statem_connect",
            Self::StatemAccept => "tls_entry_statem_accept",
            Self::GoRead => "go_tls_read_entry",
            Self::GoWrite => "go_tls_write_entry",
            Self::GoHandshake => "go_tls_handshake_entry",
        }
    }

    /// The state machine: a mark on the call it runs in.
    pub fn is_handshake_step(self) -> bool {
        matches!(self, Self::StatemConnect | Self::StatemAccept)
    }

    pub fn is_read(self) -> bool {
        matches!(self, Self::Read | Self::ReadEx | Self::GoRead)
    }

    pub fn is_write(self) -> bool {
        matches!(self, Self::Write | Self::WriteEx | Self::GoWrite)
    }

    pub fn is_go(self) -> bool {
        matches!(self, Self::GoRead | Self::GoWrite | Self::GoHandshake)
    }

    pub fn is_handshake(self) -> bool {
        matches!(
            self,
            Self::DoHandshake
                | Self::Connect
                | Self::Accept
                | Self::StatemConnect
                | Self::StatemAccept
                | Self::GoHandshake
        )
    }
}

/// A thread inside an SSL call (outermost one; nested calls only count).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsCall {
    pub start_ns: u64,
    pub ssl: u64,
    /// `size_t *readbytes` / `*written` of the `_ex` functions.
    pub out_ptr: u64,
    /// A read's buffer (`--http-tls` looks for a request line in it).
    pub buf: u64,
    /// Time in syscalls made inside the call (waiting on the network).
    pub blocked_ns: u64,
    pub func: u32,
    pub depth: u32,
    /// Bytes asked for (num).
    pub requested: u32,
    pub nested_syscalls: u32,
    /// The socket fd, from the syscalls inside the call; -1 if none.
    pub fd: i32,
    /// The thread's last read/write fd when the call began (a hint).
    pub hint_fd: i32,
    /// 1 if OpenSSL's handshake state machine ran inside the call.
    pub handshake_step: u32,
    pub _pad: u32,
    /// When this thread's last SSL call stack was taken, per kind of call
    /// (read, write, handshake): stacks of SSL calls are sampled, one per
    /// thread and kind per `TLS_STACK_EVERY_NS`.
    pub last_stack_ns: [u64; 3],
    /// The `SSL *` of the thread's last sampled call, per kind of call.
    pub last_stack_ssl: [u64; 3],
    /// The stack pointer at the outermost call's entry (see
    /// `LookupState::sp`).
    pub sp: u64,
}

impl TlsFn {
    /// 0 for reads, 1 for writes, 2 for handshakes: the sampling slot.
    pub fn class(self) -> usize {
        if self.is_read() {
            0
        } else if self.is_write() {
            1
        } else {
            2
        }
    }
}

/// A goroutine inside one of crypto/tls's functions (the outermost: Read
/// runs the handshake when it is not done yet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GoTlsCall {
    pub start_ns: u64,
    /// The `*tls.Conn`.
    pub conn: u64,
    /// Time the goroutine waited for its socket inside the call
    /// (`internal/poll.runtime_pollWait`).
    pub blocked_ns: u64,
    /// When its current wait began; 0 when not waiting.
    pub wait_start_ns: u64,
    /// The thread it entered on, whose stack was taken.
    pub tid: u32,
    pub func: u32,
    pub depth: u32,
    pub requested: u32,
    /// The connection's socket, read through the `*tls.Conn`; -1 if not.
    pub fd: i32,
    /// Waits for the socket inside the call.
    pub waits: u32,
    /// The function and return address of the goroutine's last entry
    /// probe hit, cleared at each return: the same again means the entry
    /// ran twice for one call (after runtime.morestack grew the stack).
    pub last_entry_func: u32,
    pub last_entry_ra: u64,
}

/// Stacks of a thread's SSL calls are taken at most this often: a response
/// can take a thousand reads from the same line.
pub const TLS_STACK_EVERY_NS: u64 = 20_000_000;

/// One finished SSL call. No payload: sizes only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TlsEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub func: u32,
    pub ssl: u64,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub blocked_ns: u64,
    /// The function's return value (SSL_read: bytes or <= 0; _ex: 1 or 0).
    pub ret: i32,
    /// Bytes read or written (from the return value or *readbytes).
    pub bytes: u32,
    pub requested: u32,
    pub nested_syscalls: u32,
    pub fd: i32,
    pub hint_fd: i32,
    /// 1 if OpenSSL's handshake state machine ran inside the call (a
    /// handshake done by SSL_read, as Node.js does).
    pub handshake_step: u32,
    /// A Go read: microseconds from its start to when the last write on
    /// its connection that began during it began, plus 1; 0: none began.
    /// Taken at the write's entry, so known whatever order the two calls'
    /// records come in (a write can return after the read it was
    /// answered by).
    pub write_began_us: u32,
}

/// A poll() on a socket that carries TLS: the time a TLS client with a
/// non-blocking socket (Python with a timeout) waits for data between calls.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TlsWaitEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub ts_ns: u64,
    pub duration_ns: u64,
    pub ret: i64,
}

// SAFETY: #[repr(C)] structs of integers and byte arrays, valid for any
// bit pattern.
#[cfg(feature = "user")]
unsafe impl aya::Pod for TlsCall {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for GoTlsCall {}
