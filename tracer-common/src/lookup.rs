//! Name lookups: getaddrinfo and its kin, from entry to return.

/// Host names are at most 253 characters.
pub const HOST_MAX: usize = 256;

pub const SERVICE_MAX: usize = 32;

/// Addresses of a lookup's result copied out.
pub const LOOKUP_ADDRS: usize = 8;

/// Lookups in progress at once (threads inside getaddrinfo).
pub const MAX_LOOKUPS: u32 = 16384;

/// The name-lookup functions probed in libc.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupFn {
    Getaddrinfo = 1,
    Gethostbyname = 2,
    Gethostbyname2 = 3,
    GethostbynameR = 4,
    /// Go's `net.(*Resolver).lookupIPAddr` (LookupIPAddr, LookupIP,
    /// Dial, net/http).
    GoLookupIpAddr = 5,
    /// Go's `net.(*Resolver).lookupHost` (LookupHost).
    GoLookupHost = 6,
}

impl LookupFn {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Getaddrinfo),
            2 => Some(Self::Gethostbyname),
            3 => Some(Self::Gethostbyname2),
            4 => Some(Self::GethostbynameR),
            5 => Some(Self::GoLookupIpAddr),
            6 => Some(Self::GoLookupHost),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Getaddrinfo => "getaddrinfo",
            Self::Gethostbyname => "gethostbyname",
            Self::Gethostbyname2 => "gethostbyname2",
            Self::GethostbynameR => "gethostbyname_r",
            Self::GoLookupIpAddr => "net.(*Resolver).lookupIPAddr",
            Self::GoLookupHost => "net.(*Resolver).lookupHost",
        }
    }

    /// Go's resolver: its calls are keyed by goroutine, not thread.
    pub fn is_go(self) -> bool {
        matches!(self, Self::GoLookupIpAddr | Self::GoLookupHost)
    }
}

/// Go calls in progress at once (goroutines inside a probed function).
pub const MAX_GO_CALLS: u32 = 16384;

/// A goroutine of a process: its `g` (register r14 in Go code), which is
/// the same on whichever thread the goroutine runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GoroutineKey {
    pub tgid: u32,
    pub _pad: u32,
    pub g: u64,
}

/// A goroutine inside one of Go's resolver functions, between its entry
/// and one of its return instructions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GoLookupState {
    pub start_ns: u64,
    /// The thread it entered on, whose stack was taken.
    pub tid: u32,
    pub func: u32,
    /// The host name, a Go string.
    pub host_ptr: u64,
    pub host_len: u64,
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
    /// The thread the call returned on: `tid` for libc, but a Go lookup's
    /// goroutine parks while it waits and may resume on another thread,
    /// where it goes on to dial.
    pub end_tid: u32,
    pub _pad: u32,
    /// Address family of each copied address (AF_INET / AF_INET6).
    pub families: [u16; LOOKUP_ADDRS],
    pub addrs: [[u8; 16]; LOOKUP_ADDRS],
    pub host: [u8; HOST_MAX],
    pub service: [u8; SERVICE_MAX],
}

// SAFETY: #[repr(C)] structs of integers and byte arrays, valid for any
// bit pattern.
#[cfg(feature = "user")]
unsafe impl aya::Pod for LookupState {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for GoroutineKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for GoLookupState {}
