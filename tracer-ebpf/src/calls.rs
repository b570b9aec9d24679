//! A syscall that finished, and the in-kernel statistics it is counted
//! in: a leaf that the syscall programs, the decoders and the thread-exit
//! program share (none of them calls back into another's module).

use aya_ebpf::bindings::BPF_NOEXIST;
use tracer_common::{
    HIST_BUCKETS, LatencyStats, LostCounter, RowName, SyscallKey, ThreadEntry,
    histogram::bucket_of, sysno,
};

use crate::{
    maps::{
        ROW_NAMES, SYSCALL_STATS, ZERO_STATS, count_lost, name_row_of_current, names_gen,
        names_settled, rows_by_name,
    },
    mem::{atomic_add, user as read_user},
};

/// Plain reads and writes: only their fd is kept (it names the socket of
/// an SSL call).
#[inline(always)]
pub fn fd_only(nr: u64) -> bool {
    matches!(
        nr,
        sysno::READ | sysno::WRITE | sysno::READV | sysno::WRITEV
    )
}

/// Syscalls that move data on a file descriptor (their first argument).
#[inline(always)]
pub fn is_fd_io(nr: u64) -> bool {
    fd_only(nr)
        || matches!(
            nr,
            sysno::SENDTO | sysno::RECVFROM | sysno::SENDMSG | sysno::RECVMSG | sysno::SENDMMSG
        )
}

/// Syscalls that read from a file descriptor (their first argument).
#[inline(always)]
pub fn is_read(nr: u64) -> bool {
    matches!(
        nr,
        sysno::READ | sysno::READV | sysno::RECVFROM | sysno::RECVMSG
    )
}

/// Counts the call `entry` holds, of process `tgid`, that took `duration`
/// ns and ended at `now`, in the row of its process (or, in node mode, of
/// its name and cgroup, found once per thread and kept in `entry` until a
/// rename).
#[inline(always)]
pub fn record(tgid: u32, entry: &mut ThreadEntry, now: u64, duration: u64) {
    let nr = entry.nr as u32;
    let Some(layout) = rows_by_name() else {
        // Not node mode: the row is the process's, and no name is built
        // (zeroing one is a call to a byte loop, on every syscall).
        record_syscall(&SyscallKey { tgid, nr }, duration, None);
        return;
    };
    let names_gen = names_gen();
    if entry.row != 0 && entry.row_gen == names_gen {
        let key = SyscallKey {
            tgid: entry.row,
            nr,
        };
        if let Some(stats) = SYSCALL_STATS.get_ptr_mut(key) {
            // SAFETY: pointer to a live map value, 8-byte aligned.
            unsafe { record_shared(stats, duration) };
            return;
        }
    }
    // The thread's first syscall since a rename, or the row's first call
    // of this syscall: its name is wanted for the row table.
    let mut row_name = RowName::default();
    let owner = name_row_of_current(tgid, layout, &mut row_name);
    entry.row = owner;
    // Right after a rename the name read may be the old one (another
    // thread renamed the process): kept for this call only.
    entry.row_gen = if names_settled(now) {
        names_gen
    } else {
        names_gen.wrapping_sub(1)
    };
    record_syscall(
        &SyscallKey { tgid: owner, nr },
        duration,
        (owner != tgid).then_some(&row_name),
    );
}

/// A syscall that just returned, for the decoders.
pub struct Finished<'a> {
    pub tgid: u32,
    pub tid: u32,
    pub entry: &'a ThreadEntry,
    pub ret: i64,
    pub start_ns: u64,
    pub duration: u64,
}

#[inline(always)]
fn record_syscall(key: &SyscallKey, duration: u64, row_name: Option<&RowName>) {
    let stats = match SYSCALL_STATS.get_ptr_mut(key) {
        Some(p) => p,
        None => {
            let Some(zero) = ZERO_STATS.get_ptr(0) else {
                return;
            };
            // Fails when another CPU inserted the key first (fine) or when
            // the map is full: the lookup below tells which.
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "by value, the 2.6 KB struct would land on the 512-byte eBPF stack"
            )]
            // SAFETY: pointer into a map value, valid for this program run.
            let _ = SYSCALL_STATS.insert(key, unsafe { &*zero }, BPF_NOEXIST.into());
            // A new row's name, for user space (the first one's, if two
            // names share a key).
            if let Some(name) = row_name {
                let _ = ROW_NAMES.insert(key.tgid, name, BPF_NOEXIST.into());
            }
            match SYSCALL_STATS.get_ptr_mut(key) {
                Some(p) => p,
                None => {
                    count_lost(LostCounter::SyscallMapFull);
                    return;
                }
            }
        }
    };
    // SAFETY: pointer to a live map value, which the map keeps 8-byte aligned.
    unsafe { record_shared(stats, duration) };
}

/// Records one call into a `LatencyStats` shared by all CPUs: count, sum and
/// histogram are atomic adds, so they are exact. The extremes are a plain
/// compare and store: two calls of the same syscall of the same process
/// ending on two CPUs within nanoseconds can lose one extreme, never a count.
#[inline(always)]
unsafe fn record_shared(stats: *mut LatencyStats, ns: u64) {
    unsafe {
        atomic_add(&raw mut (*stats).count, 1);
        atomic_add(&raw mut (*stats).total_ns, ns);
        let b = bucket_of(ns);
        if b < HIST_BUCKETS {
            atomic_add(&raw mut (*stats).hist[b], 1);
        }
        let max = &raw mut (*stats).max_ns;
        if ns > max.read_volatile() {
            max.write_volatile(ns);
        }
        // min_ns is 0 until the first call: no syscall takes 0 ns.
        let min = &raw mut (*stats).min_ns;
        let cur = min.read_volatile();
        if cur == 0 || ns < cur {
            min.write_volatile(ns);
        }
    }
}

/// The first descriptor of a poll()/ppoll() call, if any.
#[inline(always)]
pub fn first_polled_fd(call: &Finished) -> Option<i32> {
    let args = &call.entry.args;
    if args[1] == 0 {
        return None;
    }
    read_user::<i32>(args[0])
}
