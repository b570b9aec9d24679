//! What user space tells the eBPF programs: kernel offsets and choices.

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

/// `KernelLayout::flags`: read no HTTP request lines (`--no-http`).
pub const LAYOUT_NO_HTTP: u32 = 4;

/// `KernelLayout::flags`: read the request line of a TLS server from the
/// plaintext of its first SSL read of each request (`--http-tls`).
pub const LAYOUT_HTTP_TLS: u32 = 8;

// SAFETY: #[repr(C)] structs of integers and byte arrays, valid for any
// bit pattern.
#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelLayout {}
