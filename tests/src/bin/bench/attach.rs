//! 6. Attach: the time from starting `tracer report --pid P` to its
//!    "tracing PID" line, for a Python process that imported `ssl`, with
//!    call sites (the kernel's unwind tables of what it maps are compiled
//!    and written first) and without (the baseline: the same probes, no
//!    tables).

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    Env, Report, Result,
    harness::{interrupt, lines, median, wait_line},
};

/// Seconds to "tracing PID" for a fresh tracer on a fresh Python process.
fn time_to_tracing(env: &Env, extra: &[&str]) -> Result<f64> {
    let mut target = Command::new("python3")
        .args(["-c", "import ssl, sys; sys.stdin.read()"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3: {e}"))?;
    // Time to import ssl and settle.
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let mut tracer = Command::new(&env.tracer)
        .args(["report", "--pid", &target.id().to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let rx = lines(tracer.stderr.take().expect("piped"));
    let seen = wait_line(&rx, "tracing PID", "tracer");
    let took = started.elapsed().as_secs_f64();
    interrupt(&mut tracer);
    let _ = target.kill();
    let _ = target.wait();
    seen.map(|_| took)
}

pub(crate) fn attach(env: &Env, report: &mut Report) -> Result<()> {
    eprintln!("bench: attach");
    let mut with = Vec::new();
    let mut without = Vec::new();
    // In turns, so that a slow moment of the machine hits both.
    for _ in 0..env.rounds.max(3) {
        without.push(time_to_tracing(env, &["--no-call-sites"])?);
        with.push(time_to_tracing(env, &[])?);
    }
    let (w, wo) = (median(&with), median(&without));
    let _ = writeln!(
        report.md,
        "\n## Attach\n\nFrom starting `tracer report --pid P` to its \"tracing PID\" line, P a \
         Python process that imported `ssl` (libpython, libc, libssl, libcrypto mapped); median \
         of {} tries each, in turns. With call sites, tracer compiles and writes the kernel's \
         unwind tables of what P maps before it says so.\n\n\
         | | to \"tracing PID\" | tries |\n|---|---|---|\n\
         | `--no-call-sites` (baseline) | {wo:.2} s | {} |\n\
         | with call sites | {w:.2} s ({:+.2} s) | {} |",
        with.len(),
        fmt_tries(&without),
        w - wo,
        fmt_tries(&with),
    );
    report.json["attach"] = json!({
        "seconds_without_call_sites": without,
        "seconds_with_call_sites": with,
    });
    Ok(())
}

fn fmt_tries(v: &[f64]) -> String {
    v.iter()
        .map(|s| format!("{s:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
