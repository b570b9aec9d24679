//! `cargo xtask`: the project's own commands.
//!
//!   cargo xtask setup   install what is missing (idempotent, one line a step)
//!   cargo xtask test    setup, build, then every check and test
//!   cargo xtask demo    setup, build, start the bundled workload, trace it
//!   cargo xtask bench   setup, release build, measure what tracing costs
//!   cargo xtask soak    setup, release build, the seed under load for 30 min
//!   cargo xtask kernels setup, release build, the checks on every kernel of the matrix
//!   cargo xtask dist    setup, the static executable and the Debian package (target/dist/)
//!   cargo xtask image   setup, dist, then the container image localhost/tracer:VERSION
//!   cargo xtask architecture  the layout rules: no module circles, no long files or functions

mod architecture;
mod demo;
mod dist;
mod initramfs;
mod kernels;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test and demo tracer")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: Debian packages, nightly rust-src, bpf-linker
    Setup,
    /// Setup, build, then formatting, lints, unit tests and the root end-to-end tests
    Test {
        /// Only run end-to-end tests whose name contains this
        #[arg(long)]
        filter: Option<String>,
    },
    /// Setup, release build, then measure what tracing costs (writes target/bench/)
    Bench {
        /// Rounds per measurement (median and range are reported)
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Only these sections, comma-separated (per-call, application, ...)
        #[arg(long)]
        only: Option<String>,
    },
    /// Check the layout rules of ARCHITECTURE.md: no module circles, no file
    /// over 700 lines, no function over 150 lines
    Architecture,
    /// Setup, release build, then the seed scenario under continuous load
    /// with `tracer serve` attached: memory, lost events and counters
    /// (writes target/soak/results.md)
    Soak {
        /// How long
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
    /// Setup, release build, then boot Linux 5.10, 6.1 and 6.12 under qemu
    /// and run the end-to-end checks on each and on this machine's kernel
    /// (writes target/kernels/results.md)
    Kernels,
    /// Setup, then a static executable (target/dist/tracer) and a Debian
    /// package with its man page, completions and systemd unit
    /// (target/dist/tracer_VERSION_amd64.deb)
    Dist {
        /// Then install the package, run it, read its man page, and
        /// remove it, checking that nothing is left
        #[arg(long)]
        check: bool,
    },
    /// Setup, dist, then the OCI image the DaemonSet runs,
    /// localhost/tracer:VERSION (FROM scratch around the static executable)
    Image,
    /// Setup, build, start the bundled example workload and trace it
    Demo {
        /// Which workload: `seed` (the slow Flask app of the seed, traced and
        /// set against its own cProfile, then fixed) or `connects` (workers
        /// calling an overloaded API and a cache that is down)
        #[arg(long, value_enum, default_value = "seed")]
        workload: demo::Workload,
        /// Requests per run (seed)
        #[arg(long, default_value_t = 10)]
        requests: u32,
        /// How long to trace (connects)
        #[arg(long, default_value = "10s")]
        duration: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::run(setup::Needs::Everything),
        Cmd::Test { filter } => {
            setup::run(setup::Needs::Everything).and_then(|()| test(filter.as_deref()))
        }
        Cmd::Bench { rounds, only } => {
            setup::run(setup::Needs::Everything).and_then(|()| bench(rounds, only.as_deref()))
        }
        Cmd::Architecture => architecture::run(&root()),
        Cmd::Soak { minutes } => setup::run(setup::Needs::Everything).and_then(|()| soak(minutes)),
        Cmd::Kernels => setup::run(setup::Needs::Everything).and_then(|()| kernels::run()),
        Cmd::Image => setup::run(setup::Needs::Everything)
            .and_then(|()| dist::run_dist())
            .and_then(|made| dist::build_image(&made).map(drop)),
        Cmd::Dist { check } => setup::run(setup::Needs::Everything).and_then(|()| {
            let made = dist::run_dist()?;
            if check {
                dist::check_deb(&made)
            } else {
                Ok(())
            }
        }),
        Cmd::Demo {
            workload,
            requests,
            duration,
        } => setup::run(setup::Needs::Demo).and_then(|()| demo::run(workload, requests, &duration)),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs a command in the workspace root, echoing it; fails on non-zero exit.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    cmd.current_dir(root());
    eprintln!("xtask: $ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("running {}", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn bench(rounds: u32, only: Option<&str>) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the benchmark loads eBPF programs: run `cargo xtask bench` as root");
    }
    release_bins()?;
    let mut cmd = Command::new(root().join("target/release/bench"));
    cmd.args(["--rounds", &rounds.to_string()]);
    if let Some(only) = only {
        cmd.args(["--only", only]);
    }
    run(&mut cmd)
}

fn soak(minutes: u64) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the soak run loads eBPF programs: run `cargo xtask soak` as root");
    }
    release_bins()?;
    run(Command::new(root().join("target/release/soak")).args(["--minutes", &minutes.to_string()]))
}

/// Release builds of tracer and the test binaries: what a user runs.
pub fn release_bins() -> anyhow::Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "tracer-user",
        "-p",
        "tracer-tests",
        "--bins",
    ]))
}

fn test(filter: Option<&str>) -> anyhow::Result<()> {
    let started = Instant::now();
    // The layout rules first: they take a second and need no build.
    architecture::run(&root())?;
    let mut timings = vec![("architecture".to_string(), started.elapsed())];
    let mut step = |name: &str, cmd: &mut Command| -> anyhow::Result<()> {
        let t0 = Instant::now();
        run(cmd)?;
        timings.push((name.to_string(), t0.elapsed()));
        Ok(())
    };
    step("format", cargo().args(["fmt", "--all", "--check"]))?;
    // Builds tracer (and, through its build.rs, the eBPF object), the test
    // fixtures and xtask.
    step("build", cargo().args(["build", "--all-targets"]))?;
    step(
        "lint",
        cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]),
    )?;
    // The eBPF crate builds only for the bpf target, with nightly.
    step(
        "lint (eBPF)",
        Command::new("rustup").args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "-p",
            "tracer-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "unit tests",
        cargo().args([
            "test",
            "-p",
            "tracer-common",
            "-p",
            "tracer-user",
            "-p",
            "xtask",
        ]),
    )?;
    if !is_root() {
        bail!(
            "the end-to-end tests load eBPF programs: run `cargo xtask test` as root \
             (unit tests passed)"
        );
    }
    // What a user installs without Rust: the static executable (the
    // container test runs it in the DaemonSet's image) and the package,
    // installed, run and removed.
    let t0 = Instant::now();
    let made = dist::run_dist()?;
    if filter.is_none() {
        dist::check_deb(&made)?;
    }
    let dist_took = t0.elapsed();
    // One at a time: they share the kernel's tracepoints and tracefs.
    let mut e2e = cargo();
    e2e.args(["test", "-p", "tracer-tests", "--", "--test-threads=1"]);
    if let Some(f) = filter {
        e2e.arg(f);
    }
    step("end-to-end tests (root)", &mut e2e)?;
    timings.push(("static binary and package".to_string(), dist_took));
    if filter.is_none() {
        // The same checks on every kernel of the matrix (release build).
        let t0 = Instant::now();
        kernels::run()?;
        timings.push(("kernel matrix".to_string(), t0.elapsed()));
    }
    eprintln!("xtask: all checks passed in {:.0?}", started.elapsed());
    for (name, d) in timings {
        eprintln!("xtask:   {name:<26} {d:.1?}");
    }
    Ok(())
}
