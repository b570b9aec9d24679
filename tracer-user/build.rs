//! Builds the eBPF programs (crate `tracer-ebpf`, nightly, target
//! bpfel-unknown-none, linked by bpf-linker) so that a plain `cargo build`
//! embeds an up-to-date object in the `tracer` binary.
fn main() -> anyhow::Result<()> {
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: "../tracer-ebpf",
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
