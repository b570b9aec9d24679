//! Syscalls: a thread's syscall in progress, and the per-process (or
//! per-name) statistics the kernel keeps.

/// Most threads that can be inside a traced syscall at the same moment.
pub const MAX_TRACED_THREADS: u32 = 65536;

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
    pub const MPROTECT: u64 = 10;
    pub const MUNMAP: u64 = 11;
    pub const BRK: u64 = 12;
    pub const RT_SIGPROCMASK: u64 = 14;
    pub const SCHED_YIELD: u64 = 24;
    pub const MREMAP: u64 = 25;
    pub const MADVISE: u64 = 28;
    pub const GETPID: u64 = 39;
    pub const GETTID: u64 = 186;
    pub const FUTEX: u64 = 202;
    pub const CLOCK_GETTIME: u64 = 228;
    pub const GETRANDOM: u64 = 318;
}

/// Syscalls about no descriptor (memory, the clock, the process's own id,
/// random bytes, locks): made between an event loop's read and the SSL
/// call that decrypts what it brought, they leave `read_just_before` set.
#[inline(always)]
pub fn keeps_read_hint(nr: u64) -> bool {
    matches!(
        nr,
        sysno::MMAP
            | sysno::MPROTECT
            | sysno::MUNMAP
            | sysno::BRK
            | sysno::RT_SIGPROCMASK
            | sysno::SCHED_YIELD
            | sysno::MREMAP
            | sysno::MADVISE
            | sysno::GETPID
            | sysno::GETTID
            | sysno::FUTEX
            | sysno::CLOCK_GETTIME
            | sysno::GETRANDOM
    )
}

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
    /// Non-zero when the thread's last syscall about descriptors was a
    /// read that returned data (of `last_io_fd`): an SSL call right after
    /// it, on a memory BIO, is decrypting what that read brought. Syscalls
    /// about none (`keeps_read_hint`: Python allocating the buffer to read
    /// into, say) come in between.
    pub read_just_before: u32,
    /// Waits of a thread not (yet) known as a listener: idle if it turns
    /// out to be one.
    pub pending_wait_ns: u64,
    /// An event loop's waits (epoll, poll, select) since its last read or
    /// write: if its next is a read of a TLS socket, they were that
    /// connection's wait for data.
    pub loop_wait_ns: u64,
    /// Node mode: the row this thread's syscalls count in (its process's
    /// name and cgroup, `name_row`), kept so that a syscall needs no
    /// reading and hashing of them. 0 until the first syscall's exit.
    pub row: u32,
    /// The names generation (`NAMES_GEN`) `row` was found in: a rename or
    /// a cgroup move since makes it stale.
    pub row_gen: u32,
}

/// Key of the in-kernel per-syscall aggregate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyscallKey {
    pub tgid: u32,
    pub nr: u32,
}

// SAFETY: #[repr(C)] structs of integers and byte arrays, valid for any
// bit pattern.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ThreadEntry {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for SyscallKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for RowName {}
