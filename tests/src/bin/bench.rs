//! `cargo xtask bench`: what tracing costs, measured in one run, each
//! figure a difference or ratio against a baseline of the same run.
//!
//! 1. Per-call cost: a C loop (fixtures/bench_loop.c) times getppid,
//!    getaddrinfo("localhost"), connect to loopback and SSL_read_ex, with
//!    nothing attached, with empty programs on the same attach points (the
//!    floor: `tracer floor`), with bpftrace 0.17 keeping a latency
//!    histogram (and a variant taking `ustack`), with tracer without call
//!    sites, and with tracer as shipped.
//! 2. Application cost: requests per second of the seed's Flask app.
//! 3. Capacity: the call rates tracer took with nothing lost, checked by
//!    its counts against the calls made.
//! 4. Collector footprint: tracer's CPU share and peak RSS at fixed rates.
//! 5. Node mode: `tracer serve --all` idle, then busy with a getppid loop
//!    and a connect loop: its CPU share, peak RSS and processes traced, and
//!    the loops' cost per call against their untraced rounds.
//!
//!   bench [--rounds N] [--out DIR] [--only SECTION,...]
//!
//! `--only` runs the named sections alone (per-call, application, capacity,
//! footprint, node), to try one while working on it; a full run is what
//! the README quotes.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{Receiver, channel},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tracer_tests::{
    prometheus::{metric_sum, try_http_get},
    seed::{Paths, Seed},
};

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
const SECTIONS: [&str; 5] = ["per-call", "application", "capacity", "footprint", "node"];

/// Lines of a child's stream, read on a thread.
fn lines(read: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        for line in BufReader::new(read).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &Receiver<String>, needle: &str, what: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return Ok(l),
            Ok(_) => {}
            Err(_) => return Err(format!("{what}: no line with {needle:?}")),
        }
    }
}

fn interrupt(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A tool attached to a workload: interrupted (detached) when dropped,
/// on every path out, errors included; a tool left attached would skew
/// every figure after it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        interrupt(&mut self.0);
    }
}

/// The workload process.
struct Loop {
    child: Child,
    stdin: ChildStdin,
    out: Receiver<String>,
    pid: u32,
}

impl Loop {
    fn start(env: &Env, mode: &str) -> Result<Self> {
        let mut child = Command::new(&env.bench_loop)
            .arg(mode)
            .arg(&env.cert)
            .arg(&env.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("bench-loop: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let out = lines(child.stdout.take().expect("piped"));
        let ready: Value = serde_json::from_str(&wait_line(&out, "ready", "bench-loop")?)
            .map_err(|e| e.to_string())?;
        let pid = ready["ready"].as_u64().ok_or("bench-loop: no pid")? as u32;
        Ok(Self {
            child,
            stdin,
            out,
            pid,
        })
    }

    fn ask(&mut self, cmd: &str) -> Result<Value> {
        writeln!(self.stdin, "{cmd}").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())?;
        let line = self
            .out
            .recv_timeout(Duration::from_secs(300))
            .map_err(|_| format!("bench-loop did not answer `{cmd}`"))?;
        serde_json::from_str(&line).map_err(|e| format!("{line}: {e}"))
    }

    fn run(&mut self, calls: u64) -> Result<f64> {
        self.ask(&format!("run {calls}"))?["ns_per_call"]
            .as_f64()
            .ok_or_else(|| "no ns_per_call".into())
    }

    /// The library file the workload's calls land in (for uprobes).
    fn library(&self, name: &str) -> Result<String> {
        Self::library_of(self.pid, name)
    }

    fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Floor,
    Bpftrace,
    BpftraceUstack,
    TracerNoSites,
    Tracer,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Floor => "floor (empty programs)",
            Tool::Bpftrace => "bpftrace histogram",
            Tool::BpftraceUstack => "bpftrace histogram + ustack",
            Tool::TracerNoSites => "tracer --no-call-sites",
            Tool::Tracer => "tracer",
        }
    }
}

/// Where a workload's calls are probed: syscalls, or a library function.
enum Point {
    Syscall,
    Function(&'static str, &'static str),
}

struct Workload {
    name: &'static str,
    mode: &'static str,
    calls: u64,
    point: Point,
}

/// A tool attached to the workload.
struct Attached {
    _tool: Guard,
}

impl Attached {
    fn start(env: &Env, tool: Tool, point: &Point, lp: &Loop) -> Result<Self> {
        let pid = lp.pid;
        let function = match point {
            Point::Function(lib, sym) => Some((lp.library(lib)?, *sym)),
            Point::Syscall => None,
        };
        let (mut cmd, ready, on_stdout) = match tool {
            Tool::Floor => {
                let mut c = Command::new(&env.tracer);
                c.arg("floor");
                match &function {
                    Some((lib, sym)) => c.arg("--uprobe").arg(format!("{lib}:{sym}")),
                    None => c.arg("--syscalls"),
                };
                (c, "floor attached", false)
            }
            Tool::Bpftrace | Tool::BpftraceUstack => {
                let key = if tool == Tool::BpftraceUstack {
                    "[ustack]"
                } else {
                    ""
                };
                let script = match &function {
                    Some((lib, sym)) => format!(
                        "uprobe:{lib}:{sym} /pid == {pid}/ {{ @s[tid] = nsecs; }} \
                         uretprobe:{lib}:{sym} /@s[tid]/ {{ @h{key} = hist(nsecs - @s[tid]); \
                         delete(@s[tid]); }}"
                    ),
                    None => format!(
                        "tracepoint:raw_syscalls:sys_enter /pid == {pid}/ {{ @s[tid] = nsecs; }} \
                         tracepoint:raw_syscalls:sys_exit /@s[tid]/ {{ @h[args->id] = \
                         hist(nsecs - @s[tid]); delete(@s[tid]); }}"
                    ),
                };
                let mut c = Command::new("bpftrace");
                c.arg("-e").arg(script);
                (c, "Attaching", true)
            }
            Tool::TracerNoSites | Tool::Tracer => {
                let mut c = Command::new(&env.tracer);
                c.args(["report", "--pid", &pid.to_string(), "--json", "/dev/null"]);
                if tool == Tool::TracerNoSites {
                    c.arg("--no-call-sites");
                }
                c.stdout(Stdio::null());
                (c, "tracing PID", false)
            }
        };
        if on_stdout {
            cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        } else {
            cmd.stderr(Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", tool.name()))?;
        let rx = if on_stdout {
            lines(child.stdout.take().expect("piped"))
        } else {
            lines(child.stderr.take().expect("piped"))
        };
        let child = Guard(child);
        wait_line(&rx, ready, tool.name())?;
        // bpftrace says "Attaching" before it attaches: give it time.
        if on_stdout {
            thread::sleep(Duration::from_secs(1));
        }
        // Keep draining its output so that it never blocks on a full pipe.
        thread::spawn(move || while rx.recv().is_ok() {});
        Ok(Self { _tool: child })
    }

    fn stop(self) {
        drop(self);
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per call of `w`, one figure per round: untraced, then under `tool`,
/// then untraced again, all in one process, so that the difference is the
/// tool's and not the machine's drift between measurements.
fn measure(env: &Env, w: &Workload, tool: Tool) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut lp = Loop::start(env, w.mode)?;
    let mut base = Vec::new();
    for _ in 0..env.rounds.div_ceil(2) {
        base.push(lp.run(w.calls)?);
    }
    let attached = Attached::start(env, tool, &w.point, &lp)?;
    let mut traced = Vec::new();
    for _ in 0..env.rounds {
        traced.push(lp.run(w.calls)?);
    }
    attached.stop();
    for _ in 0..env.rounds.div_ceil(2) {
        base.push(lp.run(w.calls)?);
    }
    lp.quit();
    Ok((base, traced))
}

fn per_call(env: &Env, report: &mut Report) -> Result<()> {
    let workloads = [
        Workload {
            name: "getppid (syscall)",
            mode: "getppid",
            calls: 2_000_000,
            point: Point::Syscall,
        },
        Workload {
            name: "getaddrinfo(\"localhost\")",
            mode: "getaddrinfo",
            calls: 50_000,
            point: Point::Function("libc.so", "getaddrinfo"),
        },
        Workload {
            name: "connect to loopback (+socket, close)",
            mode: "connect",
            calls: 10_000,
            point: Point::Syscall,
        },
        Workload {
            name: "SSL_read_ex of a 64-byte record",
            mode: "ssl_read",
            calls: 100_000,
            point: Point::Function("libssl.so", "SSL_read_ex"),
        },
    ];
    let _ = writeln!(
        report.md,
        "## Per-call cost\n\nFor each tool, one process runs the calls untraced, traced, and \
         untraced again; the added cost is the median of {} traced rounds minus the median of \
         the untraced ones around them (range: the traced rounds' spread).\n",
        env.rounds
    );
    let _ = writeln!(
        report.md,
        "| call | untraced | floor | bpftrace hist | bpftrace + ustack | tracer --no-call-sites | tracer |\n|---|---|---|---|---|---|---|"
    );
    for w in &workloads {
        eprintln!("bench: {}", w.name);
        let mut figures = Vec::new();
        let mut bases = Vec::new();
        let mut cells = String::new();
        let mut added = std::collections::BTreeMap::new();
        for tool in [
            Tool::Floor,
            Tool::Bpftrace,
            Tool::BpftraceUstack,
            Tool::TracerNoSites,
            Tool::Tracer,
        ] {
            if tool == Tool::BpftraceUstack && matches!(w.point, Point::Syscall) {
                cells.push_str(" - |");
                continue;
            }
            let (base, traced) = measure(env, w, tool)?;
            let base_med = median(&base);
            let med = median(&traced);
            let lo = traced.iter().copied().fold(f64::MAX, f64::min) - base_med;
            let hi = traced.iter().copied().fold(f64::MIN, f64::max) - base_med;
            let _ = write!(cells, " +{:.0} ns ({lo:+.0}..{hi:+.0}) |", med - base_med);
            added.insert(tool.name(), med - base_med);
            bases.push(base_med);
            figures.push(json!({"tool": tool.name(), "untraced_rounds": base,
                                "traced_rounds": traced, "added_ns": med - base_med}));
        }
        let untraced = median(&bases);
        let _ = writeln!(report.md, "| {} | {untraced:.0} ns |{cells}", w.name);
        let spread = bases.iter().copied().fold(f64::MIN, f64::max)
            - bases.iter().copied().fold(f64::MAX, f64::min);
        report.notes.push(format!(
            "{}: untraced {untraced:.0} ns per call (its medians across the runs spread over \
             {spread:.0} ns)",
            w.name
        ));
        let get = |t: Tool| added.get(t.name()).copied().unwrap_or(f64::NAN);
        let ratio = match w.point {
            Point::Syscall => format!(
                "{}: tracer adds {:.2}x the floor's cost (target: at most 1.3x)",
                w.name,
                get(Tool::Tracer) / get(Tool::Floor)
            ),
            Point::Function(..) => format!(
                "{}: tracer --no-call-sites adds {:.2}x bpftrace's histogram (target: at most 1x); \
                 tracer with call sites {:.2}x bpftrace with ustack (target: at most 1x)",
                w.name,
                get(Tool::TracerNoSites) / get(Tool::Bpftrace),
                get(Tool::Tracer) / get(Tool::BpftraceUstack)
            ),
        };
        report.notes.push(ratio);
        report.json["per_call"]
            .as_array_mut()
            .expect("array")
            .push(json!({"call": w.name, "untraced_ns": untraced, "figures": figures}));
    }
    Ok(())
}

/// The seed's Flask app, no profiler, no DNS delay: requests per second.
fn application(env: &Env, report: &mut Report) -> Result<()> {
    eprintln!("bench: the seed's Flask app");
    let bins = env.tracer.parent().expect("bin dir");
    let paths = Paths::new(&env.repo, bins, &env.repo.join("target/bench/seed"));
    let mut scenario = Seed::start_unprofiled(&paths, 0)?;
    const REQUESTS: u32 = 30;
    let rps = |scenario: &mut Seed, tool: &str| -> Result<f64> {
        let pid = scenario.app_pid.to_string();
        let child = match tool {
            "tracer" => {
                let mut c = Command::new(&env.tracer)
                    .args(["report", "--pid", &pid, "--json", "/dev/null"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| e.to_string())?;
                let rx = lines(c.stderr.take().expect("piped"));
                let c = Guard(c);
                wait_line(&rx, "tracing PID", "tracer")?;
                Some(c)
            }
            "bpftrace" => {
                let libc = Loop::library_of(scenario.app_pid, "libc.so")?;
                let libssl = Loop::library_of(scenario.app_pid, "libssl.so")?;
                let script = format!(
                    "uprobe:{libc}:getaddrinfo,uprobe:{libssl}:SSL_read_ex /pid == {pid}/ \
                     {{ @s[tid] = nsecs; }} \
                     uretprobe:{libc}:getaddrinfo,uretprobe:{libssl}:SSL_read_ex /@s[tid]/ \
                     {{ @h[probe] = hist(nsecs - @s[tid]); delete(@s[tid]); }} \
                     tracepoint:raw_syscalls:sys_enter /pid == {pid}/ {{ @e[tid] = nsecs; }} \
                     tracepoint:raw_syscalls:sys_exit /@e[tid]/ {{ @sys[args->id] = \
                     hist(nsecs - @e[tid]); delete(@e[tid]); }}"
                );
                let mut c = Command::new("bpftrace")
                    .arg("-e")
                    .arg(script)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| e.to_string())?;
                let rx = lines(c.stdout.take().expect("piped"));
                let c = Guard(c);
                wait_line(&rx, "Attaching", "bpftrace")?;
                thread::sleep(Duration::from_secs(1));
                thread::spawn(move || while rx.recv().is_ok() {});
                Some(c)
            }
            _ => None,
        };
        let driven = scenario.drive(REQUESTS);
        drop(child);
        let driven = driven?;
        let secs = driven["seconds"].as_f64().ok_or("no seconds")?;
        Ok(f64::from(REQUESTS) / secs)
    };
    // Warm the app up (first connections, imports) before measuring.
    scenario.drive(5)?;
    let mut runs: Vec<(&str, f64)> = Vec::new();
    for tool in [
        "untraced", "tracer", "bpftrace", "untraced", "tracer", "bpftrace",
    ] {
        runs.push((tool, rps(&mut scenario, tool)?));
    }
    scenario.down();
    let mean = |t: &str| {
        let v: Vec<f64> = runs.iter().filter(|r| r.0 == t).map(|r| r.1).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let base = mean("untraced");
    let _ = writeln!(
        report.md,
        "\n## Application cost\n\nThe seed's Flask app (no profiler, DNS answered at once), \
         {REQUESTS} requests one after the other, twice per setting, in turns.\n\n\
         | setting | requests/s | of untraced |\n|---|---|---|"
    );
    for t in ["untraced", "tracer", "bpftrace"] {
        let _ = writeln!(
            report.md,
            "| {t} | {:.2} | {:.1}% |",
            mean(t),
            mean(t) / base * 100.0
        );
    }
    report.notes.push(format!(
        "Flask app: {:.1}% of its untraced throughput with tracer (target: at least 98%)",
        mean("tracer") / base * 100.0
    ));
    report.json["application"] = json!(
        runs.iter()
            .map(|(t, r)| json!({"setting": t, "requests_per_s": r}))
            .collect::<Vec<_>>()
    );
    Ok(())
}

impl Loop {
    fn library_of(pid: u32, name: &str) -> Result<String> {
        let maps =
            std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| e.to_string())?;
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.rsplit('/').next().is_some_and(|b| b.starts_with(name)))
            .map(str::to_string)
            .ok_or_else(|| format!("{name} is not mapped by PID {pid}"))
    }
}

/// Runs `calls` calls of `mode` under `tracer report --json` until the
/// loop exits; returns (ns per call, the report).
fn traced_run(env: &Env, mode: &str, calls: u64) -> Result<(f64, Value)> {
    let mut lp = Loop::start(env, mode)?;
    let json_path = env.out.join(format!("capacity-{mode}.json"));
    let mut tracer = Command::new(&env.tracer)
        .args(["report", "--pid", &lp.pid.to_string(), "--json"])
        .arg(&json_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let rx = lines(tracer.stderr.take().expect("piped"));
    wait_line(&rx, "tracing PID", "tracer")?;
    let ns = lp.run(calls)?;
    lp.quit();
    let _ = tracer.wait();
    let text = std::fs::read_to_string(&json_path).map_err(|e| e.to_string())?;
    Ok((ns, serde_json::from_str(&text).map_err(|e| e.to_string())?))
}

fn lost_total(report: &Value) -> u64 {
    report["lost"]
        .as_object()
        .map_or(0, |o| o.values().filter_map(Value::as_u64).sum())
}

fn capacity(env: &Env, report: &mut Report) -> Result<()> {
    eprintln!("bench: capacity");
    let _ = writeln!(
        report.md,
        "\n## Capacity\n\nAs fast as the loop goes, tracer attached (with call sites); its \
         counts against the calls made (1000 warm-up calls included).\n\n\
         | calls | rate | made | counted by tracer | lost |\n|---|---|---|---|---|"
    );
    // getppid: aggregated in the kernel.
    let n = 5_000_000;
    let (ns, r) = traced_run(env, "getppid", n)?;
    let counted: u64 = r["syscalls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["syscall"] == "getppid")
        .filter_map(|s| s["count"].as_u64())
        .sum();
    let _ = writeln!(
        report.md,
        "| getppid | {:.0}/s | {} | {counted} | {} |",
        1e9 / ns,
        n + 1000,
        lost_total(&r)
    );
    report.json["capacity"]["getppid"] = json!({"rate_per_s": 1e9 / ns, "made": n + 1000, "counted": counted, "lost": lost_total(&r)});
    // connect: one event each (and a stack, and a close).
    let n = 30_000;
    let (ns, r) = traced_run(env, "connect", n)?;
    let counted = r["connects_total"].as_u64().unwrap_or(0);
    let _ = writeln!(
        report.md,
        "| connect (3 ring-buffer records each) | {:.0}/s | {} | {counted} | {} |",
        1e9 / ns,
        n + 1000,
        lost_total(&r)
    );
    report.json["capacity"]["connect"] = json!({"rate_per_s": 1e9 / ns, "made": n + 1000, "counted": counted, "lost": lost_total(&r)});
    // SSL_read_ex: one event each, the busiest stream.
    let n = 500_000;
    let (ns, r) = traced_run(env, "ssl_read", n)?;
    let counted: u64 = r["tls_peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["reads"].as_u64())
        .sum();
    let _ = writeln!(
        report.md,
        "| SSL_read_ex (1 record each) | {:.0}/s | {} | {counted} | {} |",
        1e9 / ns,
        n + 1000,
        lost_total(&r)
    );
    report.json["capacity"]["ssl_read"] = json!({"rate_per_s": 1e9 / ns, "made": n + 1000, "counted": counted, "lost": lost_total(&r)});
    Ok(())
}

/// (utime + stime) in clock ticks, and peak RSS in KiB, of a process.
fn cpu_and_peak_rss(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, hwm)
}

fn footprint(env: &Env, report: &mut Report) -> Result<()> {
    eprintln!("bench: collector footprint");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let _ = writeln!(
        report.md,
        "\n## Collector footprint\n\ngetaddrinfo(\"localhost\") paced at a fixed rate for 5 s, \
         tracer attached with call sites: each call is 3 ring-buffer records (start, end, \
         stack). CPU is tracer's user + system time over the window.\n\n\
         | calls/s asked | calls/s made | tracer CPU | tracer peak RSS | lost |\n|---|---|---|---|---|"
    );
    for rate in [1_000u64, 10_000, 100_000] {
        let mut lp = Loop::start(env, "getaddrinfo")?;
        let json_path = env.out.join(format!("footprint-{rate}.json"));
        let mut tracer = Command::new(&env.tracer)
            .args(["report", "--pid", &lp.pid.to_string(), "--json"])
            .arg(&json_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let rx = lines(tracer.stderr.take().expect("piped"));
        wait_line(&rx, "tracing PID", "tracer")?;
        let (cpu0, _) = cpu_and_peak_rss(tracer.id());
        let answer = lp.ask(&format!("rate {rate} 5"))?;
        let (cpu1, rss) = cpu_and_peak_rss(tracer.id());
        lp.quit();
        let _ = tracer.wait();
        let r: Value =
            serde_json::from_str(&std::fs::read_to_string(&json_path).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let secs = answer["seconds"].as_f64().unwrap_or(5.0);
        let made = answer["calls"].as_u64().unwrap_or(0) as f64 / secs;
        let cpu = (cpu1 - cpu0) as f64 / hz / secs * 100.0;
        let _ = writeln!(
            report.md,
            "| {rate} | {made:.0} | {cpu:.1}% of a core | {:.1} MiB | {} |",
            rss as f64 / 1024.0,
            lost_total(&r)
        );
        report.json["footprint"]
            .as_array_mut()
            .expect("array")
            .push(json!({"rate": rate, "made_per_s": made, "cpu_percent": cpu,
                         "peak_rss_kib": rss, "lost": lost_total(&r)}));
        if rate == 10_000 {
            report.notes.push(format!(
                "collector at 10k calls/s (30k events/s): {cpu:.1}% of a core (target: under \
                 2% at 10k events/s), peak RSS {:.1} MiB (target: under 64 MB)",
                rss as f64 / 1024.0
            ));
        }
    }
    Ok(())
}

/// How long each node-mode window lasts: the idle tracer uses a few clock
/// ticks (10 ms each) in it, so a shorter window would be mostly rounding.
const NODE_WINDOW: Duration = Duration::from_secs(20);
/// The untraced windows before and after the busy one.
const NODE_BASELINE: Duration = Duration::from_secs(5);
/// Calls per round in node mode: the per-call section's sizes.
const GETPPID_ROUND: u64 = 2_000_000;
const CONNECT_ROUND: u64 = 10_000;

/// `tracer serve --all` on a free loopback port; interrupted when dropped.
struct NodeTracer {
    tracer: Guard,
    port: u16,
}

impl NodeTracer {
    /// Returns once /metrics answers: /healthz answers as soon as the port
    /// is bound, before the probes are attached, while /metrics is
    /// answered by the collector's loop, which runs only once they are.
    fn start(env: &Env) -> Result<Self> {
        let port = tracer_tests::closed_port();
        let mut child = Command::new(&env.tracer)
            .args(["serve", "--all", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("tracer serve --all: {e}"))?;
        let rx = lines(child.stderr.take().expect("piped"));
        let mut tracer = Guard(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = try_http_get(port, "/metrics") {
                break;
            }
            if let Ok(Some(status)) = tracer.0.try_wait() {
                let said: Vec<String> = rx.iter().collect();
                return Err(format!(
                    "tracer serve --all exited ({status}): {}",
                    said.join("; ")
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("tracer serve --all: no /metrics on port {port}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
        // Keep draining its output so that it never blocks on a full pipe.
        thread::spawn(move || while rx.recv().is_ok() {});
        Ok(Self { tracer, port })
    }

    fn pid(&self) -> u32 {
        self.tracer.0.id()
    }

    /// (processes traced now, events lost so far), from its /metrics.
    fn scrape(&self) -> Result<(f64, f64)> {
        let (code, body) = try_http_get(self.port, "/metrics")
            .map_err(|e| format!("tracer serve --all /metrics: {e}"))?;
        if code != 200 {
            return Err(format!("tracer serve --all /metrics: HTTP {code}"));
        }
        Ok((
            metric_sum(&body, "tracer_traced_processes", &[]),
            metric_sum(&body, "tracer_events_lost_total", &[]),
        ))
    }

    fn stop(self) {
        drop(self);
    }
}

/// User-space processes running now (kernel threads have an empty command
/// line): what `serve --all` could trace.
fn user_processes() -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| !c.is_empty()))
        .count()
}

/// The getppid and the connect loop at full speed, each driven from its own
/// thread, until `until`, when `at_until` runs with both still busy. Returns
/// the ns per call of the rounds of each that ended before `until`: a round
/// ending after it ran partly with the other loop stopped, or with the
/// tracer being stopped.
fn side_by_side<T>(
    getppid: &mut Loop,
    connect: &mut Loop,
    until: Instant,
    at_until: impl FnOnce() -> T,
) -> Result<(Vec<f64>, Vec<f64>, T)> {
    let rounds = |lp: &mut Loop, calls: u64| -> Result<Vec<f64>> {
        let mut ns = Vec::new();
        loop {
            let round = lp.run(calls)?;
            if Instant::now() > until {
                return Ok(ns);
            }
            ns.push(round);
        }
    };
    thread::scope(|s| {
        let g = s.spawn(|| rounds(getppid, GETPPID_ROUND));
        let c = s.spawn(|| rounds(connect, CONNECT_ROUND));
        thread::sleep(until.saturating_duration_since(Instant::now()));
        let seen = at_until();
        let g = g.join().map_err(|_| "the getppid loop's thread panicked")?;
        let c = c.join().map_err(|_| "the connect loop's thread panicked")?;
        Ok((g?, c?, seen))
    })
}

/// Tasks (processes and threads) created on the machine since boot, from
/// /proc/stat.
fn tasks_created() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("processes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The start or end of a node-mode window: tracer's CPU ticks and the
/// machine's task count, read together.
#[derive(Clone, Copy)]
struct Mark {
    at: Instant,
    ticks: u64,
    tasks: u64,
}

impl Mark {
    fn now(tracer: &NodeTracer) -> Self {
        Self {
            at: Instant::now(),
            ticks: cpu_and_peak_rss(tracer.pid()).0,
            tasks: tasks_created(),
        }
    }
}

/// One node-mode window's figures.
struct NodeWindow {
    seconds: f64,
    cpu_percent: f64,
    peak_rss_kib: u64,
    traced: f64,
    processes: usize,
    /// Whatever starts on the node is traced, and a new program can cost
    /// tracer far more than a running one (its files probed, its stacks
    /// unwound): this tells a quiet window from a busy one.
    tasks_started: u64,
    lost: f64,
}

impl NodeWindow {
    /// Between two marks; the rest read now.
    fn read(tracer: &NodeTracer, start: Mark, end: Mark) -> Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let seconds = (end.at - start.at).as_secs_f64();
        let (_, peak_rss_kib) = cpu_and_peak_rss(tracer.pid());
        let (traced, lost) = tracer.scrape()?;
        Ok(Self {
            seconds,
            cpu_percent: end.ticks.saturating_sub(start.ticks) as f64 / hz / seconds * 100.0,
            peak_rss_kib,
            traced,
            processes: user_processes(),
            tasks_started: end.tasks.saturating_sub(start.tasks),
            lost,
        })
    }

    fn row(&self, node: &str) -> String {
        format!(
            "| {node} | {:.2}% of a core | {:.1} MiB | {:.0} of {} | {} | {:.0} |",
            self.cpu_percent,
            self.peak_rss_kib as f64 / 1024.0,
            self.traced,
            self.processes,
            self.tasks_started,
            self.lost
        )
    }

    fn json(&self) -> Value {
        json!({"seconds": self.seconds, "cpu_percent": self.cpu_percent,
               "peak_rss_kib": self.peak_rss_kib, "traced_processes": self.traced,
               "user_processes": self.processes, "tasks_started": self.tasks_started,
               "events_lost": self.lost})
    }
}

/// `tracer serve --all` on this machine: idle, then under two loops at full
/// speed, with the loops' cost per call against their untraced rounds.
fn node_mode(env: &Env, report: &mut Report) -> Result<()> {
    let window = NODE_WINDOW.as_secs();
    eprintln!("bench: node mode, idle ({window} s)");
    let tracer = NodeTracer::start(env)?;
    let start = Mark::now(&tracer);
    thread::sleep(NODE_WINDOW);
    let idle = NodeWindow::read(&tracer, start, Mark::now(&tracer))?;
    tracer.stop();

    eprintln!("bench: node mode, busy ({window} s, and untraced rounds around it)");
    let mut getppid = Loop::start(env, "getppid")?;
    let mut connect = Loop::start(env, "connect")?;
    let (mut g_base, mut c_base, ()) = side_by_side(
        &mut getppid,
        &mut connect,
        Instant::now() + NODE_BASELINE,
        || {},
    )?;
    let tracer = NodeTracer::start(env)?;
    let start = Mark::now(&tracer);
    let (g_traced, c_traced, end) =
        side_by_side(&mut getppid, &mut connect, start.at + NODE_WINDOW, || {
            Mark::now(&tracer)
        })?;
    let busy = NodeWindow::read(&tracer, start, end)?;
    tracer.stop();
    let (g_after, c_after, ()) = side_by_side(
        &mut getppid,
        &mut connect,
        Instant::now() + NODE_BASELINE,
        || {},
    )?;
    getppid.quit();
    connect.quit();
    g_base.extend(g_after);
    c_base.extend(c_after);

    let base_secs = NODE_BASELINE.as_secs();
    let _ = writeln!(
        report.md,
        "\n## Node mode\n\n`tracer serve --all` (every process on the machine, each from its \
         next syscall), /metrics on loopback, for {window} s: idle (nothing started by the \
         bench), then busy (a getppid loop and a connect loop at full speed, each its own \
         process). CPU is tracer's user + system time over the window; processes traced is \
         its `tracer_traced_processes` at the end of the window, of the user-space processes \
         running then; tasks started are the processes and threads created on the machine \
         in the window (/proc/stat), the bench's included: tracer traces them all, so the \
         figures hold for this machine's activity during the run.\n\n\
         | node | tracer CPU | tracer peak RSS | processes traced | tasks started | events lost |\n\
         |---|---|---|---|---|---|\n{}\n{}\n\n\
         Per call on the busy node: each loop's rounds in the {window} s under `serve --all` \
         against its untraced rounds in {base_secs} s before and {base_secs} s after, both \
         loops running throughout; medians of the rounds that ended within each window \
         (range: the traced rounds' spread).\n\n\
         | call | rounds untraced / traced | untraced | under serve --all | added | ratio |\n\
         |---|---|---|---|---|---|",
        idle.row("idle"),
        busy.row("busy: getppid + connect loops"),
    );
    let mut calls = Vec::new();
    let mut added = Vec::new();
    for (name, base, traced) in [
        ("getppid (syscall)", &g_base, &g_traced),
        ("connect to loopback (+socket, close)", &c_base, &c_traced),
    ] {
        if base.is_empty() || traced.is_empty() {
            return Err(format!(
                "node mode: no round of {name} ended within a window"
            ));
        }
        let (base_med, med) = (median(base), median(traced));
        let lo = traced.iter().copied().fold(f64::MAX, f64::min) - base_med;
        let hi = traced.iter().copied().fold(f64::MIN, f64::max) - base_med;
        let _ = writeln!(
            report.md,
            "| {name} | {} / {} | {base_med:.0} ns | {med:.0} ns | +{:.0} ns ({lo:+.0}..{hi:+.0}) \
             | {:.2}x |",
            base.len(),
            traced.len(),
            med - base_med,
            med / base_med
        );
        added.push(format!(
            "{} +{:.0} ns ({:.2}x)",
            name.split_whitespace().next().unwrap_or(name),
            med - base_med,
            med / base_med
        ));
        calls.push(json!({
            "call": name, "untraced_rounds": base, "traced_rounds": traced,
            "untraced_ns": base_med, "traced_ns": med, "added_ns": med - base_med,
            "ratio": med / base_med,
        }));
    }
    report.notes.push(format!(
        "node mode (serve --all): idle {:.2}% of a core, peak RSS {:.1} MiB, {:.0} processes \
         traced; busy {:.2}% of a core, {:.1} MiB; per call {}",
        idle.cpu_percent,
        idle.peak_rss_kib as f64 / 1024.0,
        idle.traced,
        busy.cpu_percent,
        busy.peak_rss_kib as f64 / 1024.0,
        added.join(", ")
    ));
    report.json["node_mode"] = json!({
        "window_s": window, "baseline_window_s": base_secs,
        "idle": idle.json(), "busy": busy.json(), "per_call": calls,
    });
    Ok(())
}

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
    let sections: [Section; 5] = [per_call, application, capacity, footprint, node_mode];
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
