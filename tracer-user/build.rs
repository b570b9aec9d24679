//! Builds the eBPF programs (crate `tracer-ebpf`, nightly, target
//! bpfel-unknown-none, linked by bpf-linker) so that a plain `cargo build`
//! embeds an up-to-date object in the `tracer` binary.
//!
//! What aya-build does, with one difference: aya-build passes every line
//! the inner cargo prints through as a `cargo:warning`, so a first build
//! showed some 60 `warning: ... Compiling ...` lines. Here the inner cargo
//! is quiet: its real warnings and errors come through, then one line says
//! what was built.
use std::{
    env,
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

const PACKAGE: &str = "tracer-ebpf";
const TARGET: &str = "bpfel-unknown-none";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../{PACKAGE}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    // aya-ebpf reads the registers of the architecture it traces by this cfg.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--quiet"])
        .args(["--package", PACKAGE, "--bins", "--release"])
        .args(["--target", TARGET, "-Z", "build-std=core"])
        .args(["--message-format", "short"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        // The outer build's compiler is not the nightly one.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let output = cmd
        .spawn()
        .and_then(|child| child.wait_with_output())
        .context("running `rustup run nightly cargo build` for the eBPF programs")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stderr.lines() {
        // Quiet cargo prints only diagnostics; on failure, everything.
        if !output.status.success() || line.contains("warning") || line.contains("error") {
            println!("cargo:warning={line}");
        }
    }
    if !output.status.success() {
        bail!(
            "building the eBPF programs failed ({}); `cargo xtask setup` installs \
             nightly, rust-src and bpf-linker",
            output.status
        );
    }
    let built = target_dir.join(TARGET).join("release").join(PACKAGE);
    std::fs::copy(&built, out_dir.join(PACKAGE))
        .with_context(|| format!("copying {}", built.display()))?;
    println!(
        "cargo:warning=built the eBPF programs ({PACKAGE}, nightly, {TARGET}) in {:.0?}",
        started.elapsed()
    );
    Ok(())
}
