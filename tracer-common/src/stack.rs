//! Call sites: the user stack and Python frames taken at a call, and
//! the interpreters they are read from.

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
///
/// A lookup's stack record (`STACK_FOR_LOOKUP`, `STACK_FOR_GO_LOOKUP`) is
/// also its start for user space: no `LookupStartEvent` follows one, a
/// record fewer per lookup through the ring (the kernel's reserve and
/// submit in the traced thread, the collector's read and decode). The
/// start is sent alone when no stack record went (call sites off, or the
/// ring full).
pub const STACK_FOR_LOOKUP: u32 = 1;

pub const STACK_FOR_CONNECT: u32 = 2;

pub const STACK_FOR_TLS: u32 = 3;

pub const STACK_FOR_IO: u32 = 4;

/// A Go resolver's lookup (`LookupFn::is_go`): user space counts those by
/// process, not by thread (the goroutine may move).
pub const STACK_FOR_GO_LOOKUP: u32 = 5;

/// Whether a stack record taken for `reason` starts a lookup, and if so
/// whether Go's.
pub fn lookup_started_by(reason: u32) -> Option<bool> {
    match reason {
        STACK_FOR_LOOKUP => Some(false),
        STACK_FOR_GO_LOOKUP => Some(true),
        _ => None,
    }
}

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

/// Native frames the kernel's unwinder sends at most (the user-space
/// unwinder's limit is 64; a Python process's native frames stop at the
/// interpreter).
pub const NATIVE_FRAMES: usize = 32;

/// Words of a `FramesEvent`: the native frames, then two per Python frame.
pub const FRAME_WORDS: usize = NATIVE_FRAMES + 2 * PY_FRAMES;

/// Why the kernel's unwinder stopped.
pub const UNWOUND_END: u32 = 1;
/// At the first frame in the interpreter, in a process whose Python
/// frames were read: user space shows those in its place.
pub const UNWOUND_INTERPRETER: u32 = 2;
/// `NATIVE_FRAMES` reached.
pub const UNWOUND_LIMIT: u32 = 3;
/// Code in no mapping it knows (JIT code, or a library mapped since its
/// tables were written).
pub const UNWOUND_UNKNOWN_CODE: u32 = 4;
/// A read of the stack failed, CFI it cannot follow, or a frame-pointer
/// chain that goes nowhere.
pub const UNWOUND_STOPPED: u32 = 5;
/// Not unwound: the process's tables are not written yet, and it has sent
/// its share of stack copies (`STACK_COPIES_WITHOUT_TABLES`). The leaf
/// alone, with the Python frames.
pub const UNWOUND_NO_TABLES_YET: u32 = 6;

/// Stack copies (16 KiB each) a process sends for user space to unwind
/// before its tables are written; after them, until they are, its call
/// sites are the leaf and the Python frames (`UNWOUND_NO_TABLES_YET`). A
/// busy process has made thousands of calls by the time user space has
/// probed it (one adopted in node mode, a program just exec'd): their
/// copies overran the ring and lost the calls' own events. 64 copies are
/// 1 MiB of its 16.
pub const STACK_COPIES_WITHOUT_TABLES: u32 = 64;

/// A process's count of stack copies when it is to send them all: user
/// space found that its tables do not fit, or could not make them.
pub const STACK_COPIES_ALWAYS: u32 = u32::MAX;

/// Processes whose stack copies are counted at once (traced and without
/// tables, or whose tables do not fit).
pub const STACK_COPIES_MAX: u32 = 16384;

/// A call site unwound in the kernel: the native frames (the leaf's
/// instruction, then return addresses as found), then each Python frame
/// as two words (code object, instruction). Sent only as long as its
/// frames: the header and `native_depth + 2 * py_depth` words.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FramesEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub reason: u32,
    /// The start time of the call it belongs to (joins the two).
    pub key_ns: u64,
    pub native_depth: u32,
    /// `UNWOUND_*`.
    pub native_end: u32,
    pub py_status: u32,
    pub py_depth: u32,
    pub words: [u64; FRAME_WORDS],
}

impl core::fmt::Debug for FramesEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FramesEvent")
            .field("tgid", &self.tgid)
            .field("tid", &self.tid)
            .field("reason", &self.reason)
            .field("key_ns", &self.key_ns)
            .field("native_depth", &self.native_depth)
            .field("native_end", &self.native_end)
            .field("py_status", &self.py_status)
            .field("py_depth", &self.py_depth)
            .finish_non_exhaustive()
    }
}

/// Bytes of a `FramesEvent` before its words.
pub const FRAMES_HEADER: usize = 40;

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

// SAFETY: #[repr(C)] structs of integers and byte arrays, valid for any
// bit pattern.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PyProcess {}
