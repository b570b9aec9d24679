//! Process and thread lifecycle: forks, exits, execs, adoptions.

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
