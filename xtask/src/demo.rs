//! `cargo xtask demo`: build tracer, start a bundled workload, and trace it
//! from outside by PID, as a user would a live service. The default is the
//! seed (scenario/, run by the `seed-demo` program of the tests crate, which
//! the acceptance test shares); `connects` is demo/.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{cargo, is_root, root, run as run_cmd};

/// Kills a helper process when the demo ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real interpreter behind `python3` (pyenv's `python3` is a shell shim,
/// which would add a shell to what we trace).
fn python() -> anyhow::Result<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .context("python3 not found")?;
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Workload {
    Seed,
    Connects,
}

pub fn run(workload: Workload, requests: u32, duration: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the demo loads eBPF programs and network namespaces: run `cargo xtask demo` as root"
        );
    }
    match workload {
        Workload::Seed => seed(requests),
        Workload::Connects => connects(duration),
    }
}

fn seed(requests: u32) -> anyhow::Result<()> {
    // Only what the demo runs: tracer, the demo's driver and its DNS
    // server (not the benchmark, soak and kernel-check programs). Release:
    // from a clean checkout it built in 112 and 118 s against the debug
    // build's 200 and 193 s (whose dependencies are optimized and carry
    // debug info), and the demo's tracer is the one users run.
    run_cmd(cargo().args([
        "build",
        "--release",
        "-p",
        "tracer-user",
        "-p",
        "tracer-tests",
        "--bin",
        "tracer",
        "--bin",
        "seed-demo",
        "--bin",
        "dnsfixture",
    ]))?;
    run_cmd(
        Command::new(root().join("target/release/seed-demo"))
            .args(["--requests", &requests.to_string()]),
    )
}

fn connects(duration: &str) -> anyhow::Result<()> {
    run_cmd(cargo().args(["build", "--release", "-p", "tracer-user", "--bin", "tracer"]))?;
    let tracer = root().join("target/release/tracer");
    let python = python()?;
    let demo = root().join("demo");

    let mut backends = KillOnDrop(
        Command::new(&python)
            .arg(demo.join("backends.py"))
            .stdout(Stdio::piped())
            .spawn()
            .context("starting demo/backends.py")?,
    );
    let mut first = String::new();
    BufReader::new(backends.0.stdout.take().expect("piped"))
        .read_line(&mut first)
        .context("reading the backends' ports")?;
    let ports: Vec<&str> = first
        .split_whitespace()
        .filter_map(|kv| kv.split_once('=').map(|(_, v)| v))
        .collect();
    if ports.len() != 2 {
        bail!("demo/backends.py printed {first:?}, expected api=PORT cache=PORT");
    }
    let app = KillOnDrop(
        Command::new(&python)
            .arg(demo.join("app.py"))
            .args(&ports)
            .spawn()
            .context("starting demo/app.py")?,
    );
    let pid = app.0.id().to_string();
    eprintln!(
        "xtask: demo/app.py is running as PID {pid}: three worker threads call an API on \
         127.0.0.1:{} (overloaded: listen backlog 0, accepts 2 connections a second) and a cache on \
         127.0.0.1:{} (down). Tracing it from outside for {duration}:\n",
        ports[0], ports[1]
    );
    run_cmd(Command::new(tracer).args(["report", "--pid", &pid, "--duration", duration]))?;
    drop(app);
    drop(backends);
    Ok(())
}
