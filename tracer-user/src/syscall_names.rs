//! Syscall numbers as names, and which syscalls are waits.

use syscalls::Sysno;

/// `connect` for 42 on x86_64; `syscall_NNN` for numbers this table lacks.
pub fn name(nr: u32) -> String {
    Sysno::new(nr as usize)
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| format!("syscall_{nr}"))
}

/// Syscalls that wait for an event, a peer, a child or a timer rather than do
/// work. Shown apart so a thread idling in `epoll_wait` does not drown the
/// network calls (see DESIGN.md: "share of wall time: mind the denominator").
const WAITING: &[Sysno] = &[
    Sysno::poll,
    Sysno::ppoll,
    Sysno::select,
    Sysno::pselect6,
    Sysno::epoll_wait,
    Sysno::epoll_pwait,
    Sysno::epoll_pwait2,
    Sysno::futex,
    Sysno::futex_waitv,
    Sysno::nanosleep,
    Sysno::clock_nanosleep,
    Sysno::accept,
    Sysno::accept4,
    Sysno::wait4,
    Sysno::waitid,
    Sysno::pause,
    Sysno::rt_sigsuspend,
    Sysno::rt_sigtimedwait,
    Sysno::io_getevents,
    Sysno::io_pgetevents,
    Sysno::msgrcv,
    Sysno::semop,
    Sysno::semtimedop,
    Sysno::mq_timedreceive,
];

pub fn is_waiting(nr: u32) -> bool {
    WAITING.iter().any(|s| s.id() as u32 == nr)
}

/// The waits a server's listener thread idles in (the kernel counts those
/// of threads that accept as idle).
pub fn is_wait_for_work(nr: u32) -> bool {
    [
        Sysno::poll,
        Sysno::ppoll,
        Sysno::select,
        Sysno::pselect6,
        Sysno::epoll_wait,
        Sysno::epoll_pwait,
        Sysno::epoll_pwait2,
        Sysno::accept,
        Sysno::accept4,
    ]
    .iter()
    .any(|s| s.id() as u32 == nr)
}

/// `ECONNREFUSED` for 111, and so on.
pub fn errno_name(errno: i64) -> String {
    syscalls::Errno::new(errno as i32)
        .name_and_description()
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| format!("errno {errno}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_classes() {
        assert_eq!(name(42), "connect");
        assert_eq!(name(0), "read");
        assert_eq!(name(99_999), "syscall_99999");
        assert!(is_waiting(Sysno::clock_nanosleep.id() as u32));
        assert!(is_waiting(Sysno::epoll_wait.id() as u32));
        assert!(!is_waiting(42));
        assert!(!is_waiting(0));
    }
}
