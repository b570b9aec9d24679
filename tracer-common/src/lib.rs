//! Types shared by the eBPF programs (`tracer-ebpf`) and the user-space
//! collector (`tracer-user`). Everything here is `#[repr(C)]` plain data: the
//! kernel writes it into maps and the ring buffer, user space reads the same
//! bytes back. With the `user` feature each type is also `aya::Pod`.
#![cfg_attr(not(test), no_std)]

pub mod histogram;

pub use histogram::{HIST_BUCKETS, LatencyStats};

/// Most processes the tracer follows at once (the target and its children).
pub const MAX_TRACED_PROCESSES: u32 = 8192;
/// Most threads that can be inside a traced syscall at the same moment.
pub const MAX_TRACED_THREADS: u32 = 65536;
/// Processes whose idle time is counted.
pub const MAX_IDLE_PROCESSES: u32 = 8192;
/// Connections a traced server accepted whose requests are timed (least
/// recently used ones make room: a connection never closed in our sight
/// must not keep its slot).
pub const MAX_SERVER_CONNS: u32 = 16384;
/// Distinct (process, syscall) pairs aggregated in the kernel.
pub const MAX_SYSCALL_KEYS: u32 = 16384;
/// Process names (and cgroups) whose syscalls node mode keeps together.
pub const MAX_NAME_ROWS: u32 = 16384;

/// Rows of processes by name and cgroup are keyed from here up, above any
/// PID (the kernel's PID_MAX_LIMIT is 2^22). In node mode the kernel keeps
/// syscall stats under these keys, so that their number follows the
/// programs a node runs, not its processes; user space folds exited
/// processes into the same rows in every mode.
pub const NAME_ROW_BASE: u32 = 1 << 31;

/// What a name row stands for: the process name (its main thread's) and
/// the cgroup v2 id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowName {
    pub comm: [u8; 16],
    pub cgroup_id: u64,
}

/// The key of the row of a process name and cgroup: FNV-1a over the name
/// (up to its NUL) and the cgroup id, in `NAME_ROW_BASE..`. The kernel and
/// user space compute it alike; two names sharing a key (one chance in
/// two billion per pair) share a row.
#[inline(always)]
pub fn name_row(comm: &[u8; 16], cgroup_id: u64) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < 16 {
        let byte = comm[i];
        if byte == 0 {
            break;
        }
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        i += 1;
    }
    let cgroup = cgroup_id.to_le_bytes();
    let mut j = 0;
    while j < 8 {
        hash = (hash ^ u32::from(cgroup[j])).wrapping_mul(0x0100_0193);
        j += 1;
    }
    hash | NAME_ROW_BASE
}
/// TCP handshakes in flight (SYN sent, no answer yet).
pub const MAX_PENDING_HANDSHAKES: u32 = 16384;
/// Ring buffer for single events (connects, handshakes, process lifecycle).
pub const EVENT_RING_BYTES: u32 = 16 << 20;

/// x86_64 syscall numbers the kernel programs look at more closely.
pub mod sysno {
    pub const READ: u64 = 0;
    pub const SELECT: u64 = 23;
    pub const ACCEPT: u64 = 43;
    pub const EPOLL_WAIT: u64 = 232;
    pub const PSELECT6: u64 = 270;
    pub const EPOLL_PWAIT: u64 = 281;
    pub const ACCEPT4: u64 = 288;
    pub const EPOLL_PWAIT2: u64 = 441;
    pub const WRITE: u64 = 1;
    pub const CLOSE: u64 = 3;
    pub const MMAP: u64 = 9;
    pub const READV: u64 = 19;
    pub const WRITEV: u64 = 20;
    pub const POLL: u64 = 7;
    pub const CONNECT: u64 = 42;
    pub const SENDTO: u64 = 44;
    pub const RECVFROM: u64 = 45;
    pub const SENDMSG: u64 = 46;
    pub const RECVMSG: u64 = 47;
    pub const PPOLL: u64 = 271;
    pub const SENDMMSG: u64 = 307;
    /// Linux 6.11+ returns from uretprobes through this syscall: it is the
    /// tracer's own doing, not the process's, so it is not counted.
    pub const URETPROBE: u64 = 335;
}

/// DNS servers listen here; traffic to or from it is parsed as DNS.
pub const DNS_PORT: u16 = 53;
/// Bytes of a DNS message copied from the process: enough for the header
/// (12), the longest name (255) and the type and class (4). The kernel
/// zeroes everything after the first question before user space sees it.
pub const DNS_CAPTURE: usize = 272;
/// Host names are at most 253 characters.
pub const HOST_MAX: usize = 256;
pub const SERVICE_MAX: usize = 32;
/// Addresses of a lookup's result copied out.
pub const LOOKUP_ADDRS: usize = 8;
/// Lookups in progress at once (threads inside getaddrinfo).
pub const MAX_LOOKUPS: u32 = 16384;
/// Sockets known to talk to a DNS server, per process.
pub const MAX_DNS_SOCKETS: u32 = 16384;
/// Sockets known to carry TLS, per process.
pub const MAX_TLS_SOCKETS: u32 = 16384;
/// Threads inside an SSL call at once.
pub const MAX_TLS_CALLS: u32 = 16384;

/// Linux `sockaddr_un` is the largest address a connect() can carry here.
pub const SOCKADDR_MAX: usize = 112;

/// Per-thread state kept between `sys_enter` and `sys_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadEntry {
    /// `bpf_ktime_get_ns()` at syscall entry; 0 once the exit consumed it.
    pub start_ns: u64,
    pub nr: u64,
    /// Syscall arguments, kept only for syscalls we decode (connect, the
    /// send/recv family, poll, close, mmap; only the fd for read/write).
    pub args: [u64; 6],
    /// Kernel `struct sock *` seen moving to SYN_SENT during this syscall:
    /// joins a connect() with its TCP handshake.
    pub skaddr: u64,
    /// Non-zero while the thread is inside a probed SSL call: its syscalls
    /// are the time that call spent blocked. Kept across syscalls.
    pub in_tls: u32,
    /// The fd of this thread's last read/write-family syscall. Kept across
    /// syscalls: an SSL call reading from a memory BIO (Node.js, asyncio)
    /// makes no syscall of its own, the event loop's read just before
    /// (`read_just_before`) names the fd.
    pub last_io_fd: i32,
    /// Non-zero once the thread accepted a connection: it is a listener,
    /// and its waits (accept, poll/select/epoll) are idle, not work.
    pub listener: u32,
    /// Non-zero when the thread's last syscall was a read that returned
    /// data (of `last_io_fd`): an SSL call right after it, on a memory
    /// BIO, is decrypting what that read brought.
    pub read_just_before: u32,
    /// Waits of a thread not (yet) known as a listener: idle if it turns
    /// out to be one.
    pub pending_wait_ns: u64,
    /// An event loop's waits (epoll, poll, select) since its last read or
    /// write: if its next is a read of a TLS socket, they were that
    /// connection's wait for data.
    pub loop_wait_ns: u64,
}

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

/// Key of the in-kernel per-syscall aggregate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyscallKey {
    pub tgid: u32,
    pub nr: u32,
}

/// A TCP handshake waiting for its SYN-ACK, keyed by socket address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingHandshake {
    pub start_ns: u64,
    pub tgid: u32,
    pub tid: u32,
}

/// Which counter of `LOST_EVENTS` a failure is charged to.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostCounter {
    /// The ring buffer was full: a single event was not delivered.
    RingFull = 0,
    /// The syscall aggregate map was full: a syscall was not counted.
    SyscallMapFull = 1,
    /// The per-thread entry map was full: a syscall was not timed.
    ThreadMapFull = 2,
    /// The pending-handshake map was full: a handshake was not timed.
    HandshakeMapFull = 3,
    /// A process to follow (a fork) did not fit the traced-process map.
    ProcessMapFull = 4,
    /// The lookup map was full: a getaddrinfo call was not timed.
    LookupMapFull = 5,
    /// The DNS socket map was full: a socket's DNS traffic was not seen.
    DnsSocketMapFull = 6,
    /// The SSL call map was full: an SSL call was not timed.
    TlsCallMapFull = 7,
}
pub const LOST_COUNTERS: u32 = 8;

/// Discriminant at the start of every ring buffer record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Connect = 1,
    Handshake = 2,
    Task = 3,
    LookupStart = 4,
    Lookup = 5,
    DnsPacket = 6,
    DnsWait = 7,
    Tls = 8,
    TlsWait = 9,
    ExecMap = 10,
    Stack = 11,
    SlowIo = 12,
    FdClosed = 13,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Connect),
            2 => Some(Self::Handshake),
            3 => Some(Self::Task),
            4 => Some(Self::LookupStart),
            5 => Some(Self::Lookup),
            6 => Some(Self::DnsPacket),
            7 => Some(Self::DnsWait),
            8 => Some(Self::Tls),
            9 => Some(Self::TlsWait),
            10 => Some(Self::ExecMap),
            11 => Some(Self::Stack),
            12 => Some(Self::SlowIo),
            13 => Some(Self::FdClosed),
            _ => None,
        }
    }
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

/// Process and thread lifecycle of traced tasks.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TaskEvent {
    pub kind: u32,
    pub what: u32,
    /// For `TASK_NEW_*`, the creating task; for exits, the exiting task.
    pub tgid: u32,
    pub tid: u32,
    /// The new task (`TASK_NEW_*`), or 0.
    pub child: u32,
    pub _pad: u32,
    pub ts_ns: u64,
    pub comm: [u8; 16],
}

pub const TASK_NEW_THREAD: u32 = 1;
pub const TASK_NEW_PROCESS: u32 = 2;
pub const TASK_EXIT_THREAD: u32 = 3;
/// The last thread of a process exited.
pub const TASK_EXIT_PROCESS: u32 = 4;
/// Node mode: a process in scope made its first syscall since the tracer
/// attached, and is traced from now on (`tgid` = `child` = that process).
pub const TASK_ADOPTED: u32 = 5;
/// A traced process ran execve: `comm` is the new program's name; user
/// space probes its code.
pub const TASK_EXEC: u32 = 6;

/// The name-lookup functions probed in libc.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupFn {
    Getaddrinfo = 1,
    Gethostbyname = 2,
    Gethostbyname2 = 3,
    GethostbynameR = 4,
}

impl LookupFn {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Getaddrinfo),
            2 => Some(Self::Gethostbyname),
            3 => Some(Self::Gethostbyname2),
            4 => Some(Self::GethostbynameR),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Getaddrinfo => "getaddrinfo",
            Self::Gethostbyname => "gethostbyname",
            Self::Gethostbyname2 => "gethostbyname2",
            Self::GethostbynameR => "gethostbyname_r",
        }
    }
}

/// A thread inside a lookup function, between its uprobe and uretprobe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LookupState {
    pub start_ns: u64,
    pub func: u32,
    /// Nested probed calls (gethostbyname calls gethostbyname_r): only the
    /// outermost is reported.
    pub depth: u32,
    pub args: [u64; 6],
    /// The stack pointer at the outermost call's entry: a call entered
    /// below it is nested in it; one at or above it means that call
    /// returned unseen.
    pub sp: u64,
}

/// A thread entered a lookup: DNS traffic on this thread until the matching
/// `LookupEvent` belongs to it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LookupStartEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub func: u32,
    pub start_ns: u64,
}

/// A finished name lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LookupEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub func: u32,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// getaddrinfo: 0 or an EAI_* code (negative). gethostbyname*: 0 on
    /// success, else the h_errno value where it could be read, else -1.
    pub ret: i32,
    /// Result entries walked (getaddrinfo returns one per address and
    /// socket type).
    pub naddrs: u32,
    /// Address family of each copied address (AF_INET / AF_INET6).
    pub families: [u16; LOOKUP_ADDRS],
    pub addrs: [[u8; 16]; LOOKUP_ADDRS],
    pub host: [u8; HOST_MAX],
    pub service: [u8; SERVICE_MAX],
}

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

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| *f as u32 == v)
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
        }
    }

    /// The state machine: a mark on the call it runs in.
    pub fn is_handshake_step(self) -> bool {
        matches!(self, Self::StatemConnect | Self::StatemAccept)
    }

    pub fn is_read(self) -> bool {
        matches!(self, Self::Read | Self::ReadEx)
    }

    pub fn is_write(self) -> bool {
        matches!(self, Self::Write | Self::WriteEx)
    }

    pub fn is_handshake(self) -> bool {
        matches!(
            self,
            Self::DoHandshake
                | Self::Connect
                | Self::Accept
                | Self::StatemConnect
                | Self::StatemAccept
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
    pub _pad: u32,
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

/// A traced process mapped a file executable (a library loaded late, by
/// dlopen or `import ssl`): user space looks for new things to probe now
/// rather than at its next periodic scan.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecMapEvent {
    pub kind: u32,
    pub tgid: u32,
    pub ts_ns: u64,
}

/// Bytes of user stack copied for DWARF unwinding in user space (as
/// `perf --call-graph dwarf` does). perf's default of 8 KiB stops inside
/// glibc's getaddrinfo, which keeps large buffers on the stack: 16 KiB
/// reaches its caller.
pub const STACK_COPY: usize = 16384;
/// Python frames read from the interpreter at most.
pub const PY_FRAMES: usize = 48;
/// Python threads walked to find the current one, at most.
pub const PY_THREADS: u32 = 64;
/// Processes running a known CPython, with their layout.
pub const MAX_PY_PROCS: u32 = 4096;

/// Why a stack was taken: which event it belongs to.
pub const STACK_FOR_LOOKUP: u32 = 1;
pub const STACK_FOR_CONNECT: u32 = 2;
pub const STACK_FOR_TLS: u32 = 3;
pub const STACK_FOR_IO: u32 = 4;

/// How the interpreter's current frame is found from a thread state.
pub const PY_FRAME_DIRECT: u32 = 0; // tstate->frame (3.10) or ->current_frame (3.13)
pub const PY_FRAME_VIA_CFRAME: u32 = 1; // tstate->cframe->current_frame (3.11, 3.12)

/// Where CPython keeps what the frame walk needs, for one process. Offsets
/// are bytes into the named structs; `owner` is u32::MAX where frames have
/// no owner byte to check (3.10, 3.11).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PyProcess {
    /// Address of `_PyRuntime` in the process.
    pub runtime: u64,
    pub runtime_interp_head: u32,
    pub interp_threads_head: u32,
    pub tstate_next: u32,
    /// `thread_id`: the pthread_t, which is the thread's fs base on x86_64.
    pub tstate_thread_id: u32,
    pub frame_mode: u32,
    pub tstate_frame: u32,
    pub cframe_current: u32,
    pub frame_code: u32,
    pub frame_previous: u32,
    /// 3.10: `f_lasti` (an int, in code units); 3.11+: a pointer into the
    /// code object's bytecode (`prev_instr` / `instr_ptr`).
    pub frame_instr: u32,
    pub frame_owner: u32,
    /// 1 when `frame_instr` is 3.10's int f_lasti.
    pub instr_is_index: u32,
}

/// Constants the programs need that only user space can find or choose.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelLayout {
    /// Offset of `thread.fsbase` in `struct task_struct` (from BTF; 0:
    /// unknown, no Python frames).
    pub task_fsbase: u32,
    /// `LAYOUT_*` bits.
    pub flags: u32,
    /// A read or write taking at least this long is reported on its own,
    /// with its call site (0: the default, `SLOW_IO_NS`).
    pub slow_io_ns: u64,
    /// Wake the reader when this many bytes wait in the ring (0: an eighth
    /// of `EVENT_RING_BYTES`); user space sets an eighth of the real size.
    pub wakeup_bytes: u64,
    /// Node mode (`LAYOUT_ALL`): only processes in this cgroup v2 (its id,
    /// the inode number) or below it are adopted; 0: every process.
    pub scope_cgroup: u64,
    /// The scope cgroup's depth below the cgroup v2 root (root: 0).
    pub scope_level: u32,
    /// The tracer's own process, never adopted.
    pub self_tgid: u32,
    /// Node mode: only processes in this network namespace (its inode
    /// number, as `stat` shows for /run/netns/NAME) are adopted; 0: any.
    pub scope_netns: u32,
    /// Offsets (from BTF) of `task_struct.nsproxy`, `nsproxy.net_ns` and
    /// `net.ns.inum`: the path from a task to its network namespace.
    pub task_nsproxy: u32,
    pub nsproxy_net_ns: u32,
    pub net_inum: u32,
    /// Offsets of `task_struct.group_leader` and `task_struct.comm`: node
    /// mode keys syscall stats by the main thread's name (0: per process).
    pub task_group_leader: u32,
    pub task_comm: u32,
    /// How sched:sched_process_exit tells that the whole process is gone:
    /// the offset of its `group_dead` field (newest kernels), else 0 and
    /// the offsets of `task_struct.signal` and `signal_struct.live` (the
    /// count of live threads, already decremented at the tracepoint), else
    /// all 0 (no BTF): the main thread's exit stands for the process's.
    pub exit_group_dead: u32,
    pub task_signal: u32,
    pub signal_live: u32,
    /// Where a kernel without `bpf_get_current_ancestor_cgroup_id` for
    /// tracing programs (5.10) keeps a task's cgroup ancestors, for
    /// `--cgroup`: `task_struct.cgroups`, `css_set.dfl_cgrp`,
    /// `cgroup.level` and `cgroup.ancestor_ids` (0: not needed or unknown).
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_level: u32,
    pub cgroup_ancestor_ids: u32,
    pub _pad: u32,
}

/// `KernelLayout::flags`: take no stacks (no call sites; cheaper).
pub const LAYOUT_NO_STACKS: u32 = 1;
/// `KernelLayout::flags`: node mode, every process (in the scope cgroup)
/// is traced from its next syscall.
pub const LAYOUT_ALL: u32 = 2;

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

/// One Python frame: the code object and where in it the thread is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PyFrameRef {
    pub code: u64,
    /// 3.11+: address of the current instruction; 3.10: instruction index.
    pub instr: u64,
}

pub const PY_OK: u32 = 0;
pub const PY_NOT_PYTHON: u32 = 1;
pub const PY_NO_THREAD: u32 = 2;
pub const PY_READ_FAILED: u32 = 3;

/// The stack of the thread at the moment of a call: registers and a copy of
/// the user stack (unwound in user space), and the Python frames.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub reason: u32,
    /// The start time of the call it belongs to (joins the two).
    pub key_ns: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub stack_len: u32,
    pub py_status: u32,
    pub py_depth: u32,
    pub _pad: u32,
    pub py: [PyFrameRef; PY_FRAMES],
    pub stack: [u8; STACK_COPY],
}

impl core::fmt::Debug for StackEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StackEvent")
            .field("tgid", &self.tgid)
            .field("tid", &self.tid)
            .field("reason", &self.reason)
            .field("key_ns", &self.key_ns)
            .field("ip", &self.ip)
            .field("stack_len", &self.stack_len)
            .field("py_status", &self.py_status)
            .field("py_depth", &self.py_depth)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)] structs of integers and byte
    // arrays, valid for any bit pattern.
    unsafe impl aya::Pod for ThreadEntry {}
    unsafe impl aya::Pod for ServerConn {}
    unsafe impl aya::Pod for RequestTime {}
    unsafe impl aya::Pod for SyscallKey {}
    unsafe impl aya::Pod for PendingHandshake {}
    unsafe impl aya::Pod for LatencyStats {}
    unsafe impl aya::Pod for LookupState {}
    unsafe impl aya::Pod for FdKey {}
    unsafe impl aya::Pod for DnsServer {}
    unsafe impl aya::Pod for TlsCall {}
    unsafe impl aya::Pod for PyProcess {}
    unsafe impl aya::Pod for KernelLayout {}
    unsafe impl aya::Pod for RowName {}
}
