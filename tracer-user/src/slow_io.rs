//! Slow reads and writes: single read and write syscalls over the
//! threshold, per target (a socket's peer, a pipe's or file's path).

use tracer_common::{LatencyStats, SlowIoEvent, sysno};

use crate::kind::CallKind;

/// Slow reads and writes to one target.
#[derive(Debug, Clone)]
pub struct SlowIoStats {
    pub reads: LatencyStats,
    pub writes: LatencyStats,
    pub bytes: u64,
}

impl SlowIoStats {
    /// Counts one slow call; returns its kind.
    pub fn record(&mut self, io: &SlowIoEvent) -> CallKind {
        let kind = kind_of(io);
        match kind {
            CallKind::SlowWrite => self.writes.record(io.duration_ns),
            _ => self.reads.record(io.duration_ns),
        }
        self.bytes += io.ret.max(0) as u64;
        kind
    }
}

impl Default for SlowIoStats {
    fn default() -> Self {
        Self {
            reads: LatencyStats::ZERO,
            writes: LatencyStats::ZERO,
            bytes: 0,
        }
    }
}

/// A slow read or a slow write, by its syscall.
pub fn kind_of(io: &SlowIoEvent) -> CallKind {
    if matches!(
        u64::from(io.nr),
        sysno::WRITE | sysno::WRITEV | sysno::SENDTO | sysno::SENDMSG | sysno::SENDMMSG
    ) {
        CallKind::SlowWrite
    } else {
        CallKind::SlowRead
    }
}
