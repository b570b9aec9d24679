//! Reads of user and kernel memory, and atomic adds to map values: a leaf
//! every program may call.
//!
//! aya's typed read helpers leave the value of a failed read undefined,
//! and an `Option`'s `None` carries an undefined payload: LLVM is then free
//! to take "anything" for it, and does, by loading a stack slot nothing
//! wrote yet. The verifiers of 5.10 and 6.1 refuse such a read (6.12's
//! accepts it). These versions zero the destination first (the kernel also
//! zeroes it on a failed read) and the `_or` forms return a defined value
//! on every path: use them wherever a failed read has a default, rather
//! than `Option::unwrap_or`.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::helpers::generated;

/// Reads a `T` at a user-space address into zeroed memory; the helper's
/// result (0: read).
#[inline(always)]
fn read_user_into<T>(v: &mut MaybeUninit<T>, addr: u64) -> i64 {
    if addr == 0 {
        return -1;
    }
    // SAFETY: the helper checks the user-space access and writes at most
    // size_of::<T>() bytes into `v`.
    unsafe {
        generated::bpf_probe_read_user(
            v.as_mut_ptr().cast::<c_void>(),
            core::mem::size_of::<T>() as u32,
            addr as *const c_void,
        )
    }
}

/// Reads a `T` from kernel memory into zeroed memory; the helper's result.
#[inline(always)]
fn read_kernel_into<T>(v: &mut MaybeUninit<T>, src: *const T) -> i64 {
    // SAFETY: the helper checks the kernel access and writes at most
    // size_of::<T>() bytes into `v`.
    unsafe {
        generated::bpf_probe_read_kernel(
            v.as_mut_ptr().cast::<c_void>(),
            core::mem::size_of::<T>() as u32,
            src.cast::<c_void>(),
        )
    }
}

/// The `T` at a user-space address, or `default` for a null address or a
/// failed read.
#[inline(always)]
pub fn user_or<T>(addr: u64, default: T) -> T {
    let mut v = MaybeUninit::<T>::zeroed();
    if read_user_into(&mut v, addr) == 0 {
        // SAFETY: zeroed, then written by the helper; the callers' types are
        // plain integers, valid for any bits.
        unsafe { v.assume_init() }
    } else {
        default
    }
}

/// The `T` at a user-space address; `None` for a null address or a failed
/// read. Only where the caller stops on `None`: see the module's note.
#[inline(always)]
pub fn user<T>(addr: u64) -> Option<T> {
    let mut v = MaybeUninit::<T>::zeroed();
    // SAFETY: as in `user_or`.
    (read_user_into(&mut v, addr) == 0).then(|| unsafe { v.assume_init() })
}

/// The `T` in kernel memory at `src`, or `default` for a failed read.
#[inline(always)]
pub fn kernel_or<T>(src: *const T, default: T) -> T {
    let mut v = MaybeUninit::<T>::zeroed();
    if read_kernel_into(&mut v, src) == 0 {
        // SAFETY: as in `user_or`.
        unsafe { v.assume_init() }
    } else {
        default
    }
}

/// The `T` at `offset` bytes past a kernel address (a struct's field, at an
/// offset found in BTF), or `default` for a failed read.
#[inline(always)]
pub fn kernel_at_or<T>(base: u64, offset: u32, default: T) -> T {
    kernel_or(
        (base as *const u8)
            .wrapping_add(offset as usize)
            .cast::<T>(),
        default,
    )
}

/// Zeroes `data` from `end` on, for buffers whose start alone may reach
/// user space (a DNS question, an HTTP method and path): nothing past
/// `end` leaves the kernel. Word by word, so the verifier walks `N / 8`
/// steps, not `N`; `N` is a multiple of 8.
#[inline(always)]
pub fn scrub_after<const N: usize>(data: &mut [u8; N], end: usize) {
    let words = N / 8;
    let mut w = 0;
    while w < words {
        let at = w * 8;
        // SAFETY: `at + 8 <= N`; unaligned access is fine.
        let word = unsafe { data.as_mut_ptr().add(at).cast::<u64>() };
        if at >= end {
            unsafe { core::ptr::write_unaligned(word, 0) };
        } else if at + 8 > end {
            // Keep the first `end - at` bytes of this word (little endian).
            let keep = (end - at) as u32;
            let mask = (1u64 << (keep * 8)) - 1;
            unsafe { core::ptr::write_unaligned(word, core::ptr::read_unaligned(word) & mask) };
        }
        w += 1;
    }
}

/// Copies the first bytes of `len` at user address `data`, at most `N`,
/// into `scratch`; the bytes copied, or 0 when nothing could be read.
#[inline(always)]
pub fn user_prefix<const N: usize>(scratch: &mut [u8; N], data: u64, len: u64) -> usize {
    // At most the scratch's size; the verifier wants the bound it can see.
    let n = if len > N as u64 { N as u32 } else { len as u32 };
    if data == 0 || n == 0 {
        return 0;
    }
    // SAFETY: the helper checks the user-space access; `n` is at most the
    // scratch's size.
    let r = unsafe {
        generated::bpf_probe_read_user(scratch.as_mut_ptr().cast(), n, data as *const c_void)
    };
    if r == 0 { n as usize } else { 0 }
}

/// `*p += v` as one eBPF atomic instruction (BPF_ATOMIC | BPF_ADD).
#[inline(always)]
pub unsafe fn atomic_add(p: *mut u64, v: u64) {
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack),
        )
    };
}
