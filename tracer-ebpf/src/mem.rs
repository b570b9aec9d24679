//! Reads of user and kernel memory, a leaf every program may call.
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
