//! Types shared by the eBPF programs (`tracer-ebpf`) and the user-space
//! collector (`tracer-user`). Everything here is `#[repr(C)]` plain data: the
//! kernel writes it into maps and the ring buffer, user space reads the same
//! bytes back. With the `user` feature each type is also `aya::Pod`.
//!
//! One file per kind of record: its event type, its map values, its
//! constants, and its `Pod` impl. Everything is re-exported here.
#![cfg_attr(not(test), no_std)]

mod connect;
mod dns;
mod framing;
pub mod histogram;
mod layout;
mod lookup;
mod server;
mod slow_io;
mod stack;
mod syscall;
mod task;
mod tls;
mod unwind;

pub use connect::*;
pub use dns::*;
pub use framing::framed_records;
pub use layout::*;
pub use lookup::*;
pub use server::*;
pub use slow_io::*;
pub use stack::*;
pub use syscall::*;
pub use task::*;
pub use tls::*;
pub use unwind::*;

pub use histogram::{HIST_BUCKETS, LatencyStats};

/// Most processes the tracer follows at once (the target and its children).
pub const MAX_TRACED_PROCESSES: u32 = 8192;
/// Processes whose idle time is counted.
pub const MAX_IDLE_PROCESSES: u32 = 8192;
/// Ring buffer for single events (connects, handshakes, process lifecycle).
pub const EVENT_RING_BYTES: u32 = 16 << 20;

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
    Frames = 14,
    RequestLine = 15,
    RequestEnd = 16,
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
            14 => Some(Self::Frames),
            15 => Some(Self::RequestLine),
            16 => Some(Self::RequestEnd),
            _ => None,
        }
    }
}

// SAFETY: #[repr(C)] plain data, valid for any bit pattern.
#[cfg(feature = "user")]
unsafe impl aya::Pod for LatencyStats {}
