//! `cargo xtask bench`: what tracing costs, measured in one run, each
//! figure a difference or ratio against a baseline of the same run.
//!
//! 1. Per-call cost: a C loop (fixtures/bench_loop.c) times getppid,
//!    getaddrinfo("localhost"), connect to loopback and SSL_read_ex, with
//!    nothing attached, with empty programs on the same attach points (the
//!    floor: `tracer floor`), with bpftrace 0.17 keeping a latency
//!    histogram (and a variant taking `ustack`), with tracer without call
//!    sites, and with tracer as shipped; flat out (rounds of calls back
//!    to back) and paced (2,000 calls a second, the loop asleep between
//!    them, each call timed alone).
//! 2. Application cost: requests per second of the seed's Flask app.
//! 3. Capacity: the call rates tracer took with nothing lost, checked by
//!    its counts against the calls made.
//! 4. Collector footprint: tracer's CPU share and peak RSS at fixed rates.
//! 5. Node mode: `tracer serve --all` idle, then busy with a getppid loop
//!    and a connect loop: its CPU share, peak RSS and processes traced, and
//!    the loops' cost per call against their untraced rounds and against
//!    the floor's empty programs under the same load.
//! 6. Attach: the time to "tracing PID" with call sites (unwind tables
//!    written first) against `--no-call-sites`.
//!
//!   bench [--rounds N] [--out DIR] [--only SECTION,...]
//!
//! `--only` runs the named sections alone (per-call, application, capacity,
//! footprint, node, attach), to try one while working on it; a full run is what
//! the README quotes.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Instant,
};

use serde_json::{Value, json};

mod application;
mod attach;
mod capacity;
mod footprint;
mod harness;
mod node;
mod per_call;

type Result<T> = std::result::Result<T, String>;

struct Env {
    repo: PathBuf,
    tracer: PathBuf,
    bench_loop: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    out: PathBuf,
    rounds: usize,
    /// Sections to run (`--only`); empty: all of them.
    only: Vec<String>,
}

/// The sections, by the names `--only` takes.
const SECTIONS: [&str; 6] = [
    "per-call",
    "application",
    "capacity",
    "footprint",
    "node",
    "attach",
];

struct Report {
    md: String,
    json: Value,
    notes: Vec<String>,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

fn run(env: &Env) -> Result<()> {
    std::fs::create_dir_all(&env.out).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut report = Report {
        md: format!(
            "# tracer benchmark\n\nMachine: {}. Every figure is against a baseline measured \
             in the same run.\n\n",
            machine()
        ),
        json: json!({"machine": machine(), "per_call": [], "capacity": {}, "footprint": [],
                     "node_mode": {}}),
        notes: Vec::new(),
    };
    type Section = fn(&Env, &mut Report) -> Result<()>;
    let sections: [Section; 6] = [
        per_call::per_call,
        application::application,
        capacity::capacity,
        footprint::footprint,
        node::node_mode,
        attach::attach,
    ];
    for (name, section) in SECTIONS.into_iter().zip(sections) {
        if env.only.is_empty() || env.only.iter().any(|o| o == name) {
            section(env, &mut report)?;
        }
    }
    let _ = writeln!(report.md, "\n## Against the targets\n");
    for n in &report.notes {
        let _ = writeln!(report.md, "- {n}");
    }
    let _ = writeln!(
        report.md,
        "\n(run took {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    report.json["notes"] = json!(report.notes);
    let md = env.out.join("results.md");
    std::fs::write(&md, &report.md).map_err(|e| e.to_string())?;
    std::fs::write(
        env.out.join("results.json"),
        serde_json::to_string_pretty(&report.json).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    println!("{}", report.md);
    eprintln!(
        "bench: written {} and results.json next to it",
        md.display()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let mut rounds = 5;
    let mut args = std::env::args().skip(1);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo")
        .to_path_buf();
    let mut out = repo.join("target/bench");
    let mut only = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(5),
            "--out" => out = args.next().map(PathBuf::from).unwrap_or(out),
            "--only" => {
                only = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_string)
                    .collect();
                if let Some(bad) = only.iter().find(|o| !SECTIONS.contains(&o.as_str())) {
                    eprintln!(
                        "bench: no section {bad:?} (sections: {})",
                        SECTIONS.join(", ")
                    );
                    return std::process::ExitCode::from(2);
                }
            }
            other => {
                eprintln!(
                    "bench: unknown argument {other:?} (--rounds N, --out DIR, --only SECTION,...)"
                );
                return std::process::ExitCode::from(2);
            }
        }
    }
    let exe = std::env::current_exe().expect("exe");
    let bins = exe.parent().expect("bin dir");
    // A certificate for the SSL_read workload's own TLS server.
    let (cert, key) = (out.join("cert.pem"), out.join("key.pem"));
    let _ = std::fs::create_dir_all(&out);
    if !cert.exists() {
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            ])
            .args(["-subj", "/CN=bench", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("bench: openssl could not make a certificate");
            return std::process::ExitCode::FAILURE;
        }
    }
    let env = Env {
        repo,
        tracer: bins.join("tracer"),
        bench_loop: PathBuf::from(env!("BENCH_LOOP_BIN")),
        cert,
        key,
        out,
        rounds,
        only,
    };
    match run(&env) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
