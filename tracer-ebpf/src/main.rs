//! Kernel side of `tracer`.
//!
//! Cost matters on every syscall of every process on the machine, so the hot
//! path is: one hash lookup on the thread id (only traced threads have an
//! entry), one in-place write at entry, one hash lookup and a few atomic
//! adds at exit. Everything that is a histogram or a sum stays in the
//! kernel; only rare, detailed events (connects, handshakes, lookups, DNS
//! messages, process lifecycle) go through the ring buffer, and every record
//! the ring buffer could not take is counted.
// Built for the bpfel-unknown-none target by tracer-user's build.rs. On the
// host (`cargo build --workspace`) it is an empty program.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// Inline asm for the eBPF atomic add: Rust's bpf target has no atomic RMW.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod calls;
#[cfg(target_arch = "bpf")]
mod connect;
#[cfg(target_arch = "bpf")]
mod dns;
#[cfg(target_arch = "bpf")]
mod floor;
#[cfg(target_arch = "bpf")]
mod go_dns;
#[cfg(target_arch = "bpf")]
mod go_tls;
#[cfg(target_arch = "bpf")]
mod http;
#[cfg(target_arch = "bpf")]
mod idle;
#[cfg(target_arch = "bpf")]
mod lookup_record;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod mem;
#[cfg(target_arch = "bpf")]
mod scope;
#[cfg(target_arch = "bpf")]
mod stacks;
#[cfg(target_arch = "bpf")]
mod syscalls;
#[cfg(target_arch = "bpf")]
mod tasks;
#[cfg(target_arch = "bpf")]
mod tls;
#[cfg(target_arch = "bpf")]
mod unwind;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
