//! The seed scenario (scenario/seed.py: a Flask app that looks up a slow
//! DNS name on every request, pages through an HTTPS API in small records,
//! and queries MariaDB), driven from Rust for the acceptance test and for
//! `cargo xtask demo`; and the seed's categories of time, from tracer's JSON
//! report and from the app's own cProfile files, side by side.
//!
//! Errors are returned as text, not panics: the demo reports them to a user.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc::channel,
    thread,
    time::Duration,
};

use serde_json::Value;

pub type Result<T> = std::result::Result<T, String>;

/// Where the programs and the scenario's files are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub scenario: PathBuf,
    pub tracer: PathBuf,
    pub dnsfixture: PathBuf,
    /// The venv's Python, with flask, flask-login, requests and pymysql.
    pub python: PathBuf,
    /// MariaDB's data, certificates, logs, profiles.
    pub workdir: PathBuf,
}

impl Paths {
    /// The layout of a checkout after `cargo build`: `bin_dir` holds the
    /// binaries, the venv is `target/venv`.
    pub fn new(repo: &Path, bin_dir: &Path, workdir: &Path) -> Self {
        Self {
            scenario: repo.join("scenario"),
            tracer: bin_dir.join("tracer"),
            dnsfixture: bin_dir.join("dnsfixture"),
            python: repo.join("target/venv/bin/python"),
            workdir: workdir.to_path_buf(),
        }
    }

    /// For a program of this crate (seed-demo, soak): the binaries beside
    /// it, its working files under `target/<dir>`.
    pub fn for_this_program(dir: &str) -> Result<Self> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("repo root")
            .to_path_buf();
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let bin_dir = exe.parent().expect("bin dir");
        Ok(Self::new(&repo, bin_dir, &repo.join("target").join(dir)))
    }

    pub fn profiles(&self) -> PathBuf {
        self.workdir.join("profiles")
    }
}

/// The running scenario; brought down when dropped.
pub struct Seed {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub app_pid: u32,
    /// The server's processes: the app's, or gunicorn's master and workers.
    pub app_pids: Vec<u32>,
    pub netns: String,
}

/// What tracer and the app's own timing are compared on.
#[derive(Debug, Clone, Copy)]
pub struct Compared {
    /// SSL read calls, one for one (cProfile counts `_ssl` reads; an app on
    /// an event loop awaits a stream, which may take many SSL reads at once).
    pub ssl_read_calls: bool,
    /// The MySQL query (the Node.js app has none).
    pub mysql: bool,
}

/// The server the app runs under (scenario/seed.py --server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// Werkzeug's threaded development server: a thread per request.
    Werkzeug,
    /// gunicorn, 2 worker processes of one thread each.
    GunicornSync,
    /// gunicorn, 2 worker processes with 4 threads each.
    GunicornGthread,
    /// waitress: one process, an I/O thread and 4 worker threads.
    Waitress,
    /// uvicorn on asyncio: one event loop serves every request
    /// (scenario/async_app.py, timed by hand: cProfile cannot follow
    /// coroutines).
    Uvicorn,
    /// Node.js's http server (scenario/node_app.js, timed by hand with
    /// process.hrtime; no MySQL query).
    Node,
}

impl Server {
    /// What its app's own timing can be compared on.
    pub fn compared(self) -> Compared {
        match self {
            Server::Uvicorn => Compared {
                ssl_read_calls: false,
                mysql: true,
            },
            Server::Node => Compared {
                ssl_read_calls: false,
                mysql: false,
            },
            _ => Compared {
                ssl_read_calls: true,
                mysql: true,
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Server::Werkzeug => "werkzeug",
            Server::GunicornSync => "gunicorn-sync",
            Server::GunicornGthread => "gunicorn-gthread",
            Server::Waitress => "waitress",
            Server::Uvicorn => "uvicorn",
            Server::Node => "node",
        }
    }
}

impl Seed {
    /// Starts everything in a network namespace of its own, the app under
    /// Werkzeug's ProfilerMiddleware (one cProfile file per request).
    pub fn start(paths: &Paths, dns_delay_ms: u32) -> Result<Self> {
        Self::start_with(paths, dns_delay_ms, true, Server::Werkzeug)
    }

    /// The same, under another server.
    pub fn start_under(paths: &Paths, dns_delay_ms: u32, server: Server) -> Result<Self> {
        Self::start_with(paths, dns_delay_ms, true, server)
    }

    /// The same, the app without a profiler (for the benchmark).
    pub fn start_unprofiled(paths: &Paths, dns_delay_ms: u32) -> Result<Self> {
        Self::start_with(paths, dns_delay_ms, false, Server::Werkzeug)
    }

    fn start_with(paths: &Paths, dns_delay_ms: u32, profile: bool, server: Server) -> Result<Self> {
        for (what, p) in [
            ("the venv's Python (run `cargo xtask setup`)", &paths.python),
            (
                "dnsfixture (run `cargo build -p tracer-tests`)",
                &paths.dnsfixture,
            ),
        ] {
            if !p.exists() {
                return Err(format!("{} is missing: {what}", p.display()));
            }
        }
        std::fs::create_dir_all(&paths.workdir)
            .map_err(|e| format!("creating {}: {e}", paths.workdir.display()))?;
        let mut cmd = Command::new(&paths.python);
        cmd.arg(paths.scenario.join("seed.py"))
            .arg("--dnsfixture")
            .arg(&paths.dnsfixture)
            .arg("--python")
            .arg(&paths.python)
            .arg("--workdir")
            .arg(&paths.workdir);
        if profile {
            cmd.arg("--profile-dir").arg(paths.profiles());
        }
        let mut child = cmd
            .arg("--server")
            .arg(server.name())
            .arg("--dns-delay-ms")
            .arg(dns_delay_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting scenario/seed.py: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut seed = Self {
            child,
            stdin,
            stdout,
            app_pid: 0,
            app_pids: Vec::new(),
            netns: String::new(),
        };
        let ready = seed.answer(Duration::from_secs(300))?;
        seed.app_pid = ready["app_pid"]
            .as_u64()
            .ok_or_else(|| format!("scenario/seed.py said {ready}, not the app's PID"))?
            as u32;
        seed.app_pids = ready["app_pids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_u64().map(|p| p as u32))
            .collect();
        seed.netns = ready["netns"].as_str().unwrap_or_default().to_string();
        Ok(seed)
    }

    /// The next JSON line from seed.py.
    fn answer(&mut self, timeout: Duration) -> Result<Value> {
        // Read on a thread, so that a hung scenario fails instead of hanging.
        let (tx, rx) = channel();
        let mut line = String::new();
        thread::scope(|s| {
            let stdout = &mut self.stdout;
            s.spawn(move || {
                let n = stdout.read_line(&mut line);
                let _ = tx.send(n.map(|_| line));
            });
            match rx.recv_timeout(timeout) {
                Ok(Ok(line)) if !line.is_empty() => serde_json::from_str(&line)
                    .map_err(|e| format!("scenario/seed.py said {line:?} ({e})")),
                Ok(_) => Err("scenario/seed.py exited (its messages are above)".to_string()),
                Err(_) => {
                    let _ = self.child.kill();
                    Err(format!("scenario/seed.py did not answer in {timeout:?}"))
                }
            }
        })
    }

    fn command(&mut self, line: &str, timeout: Duration) -> Result<Value> {
        let stdin = self.stdin.as_mut().ok_or("the scenario is down")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("telling scenario/seed.py `{line}`: {e}"))?;
        let answer = self.answer(timeout)?;
        if let Some(err) = answer.get("error") {
            return Err(format!("scenario/seed.py, `{line}`: {err}"));
        }
        Ok(answer)
    }

    /// Sends `n` requests, one after the other; returns the driver's
    /// summary (`requests`, `ok`, `seconds`).
    pub fn drive(&mut self, n: u32) -> Result<Value> {
        let answer = self.command(&format!("drive {n}"), Duration::from_secs(300))?;
        if answer["ok"] != n {
            return Err(format!("not every request succeeded: {answer}"));
        }
        Ok(answer)
    }

    /// Sends `n` requests to GET /overview and `m` to POST /repos/ID,
    /// taking turns; returns the driver's summary with each request's time
    /// (`timings`) and the canaries it sent in query strings, headers and
    /// bodies (`canaries`).
    pub fn drive_routes(&mut self, n: u32, m: u32) -> Result<Value> {
        let answer = self.command(&format!("drive {n} {m}"), Duration::from_secs(300))?;
        if answer["ok"] != n + m {
            return Err(format!("not every request succeeded: {answer}"));
        }
        Ok(answer)
    }

    /// Restarts the DNS server with another answer delay.
    pub fn set_dns_delay(&mut self, ms: u32) -> Result<()> {
        self.command(&format!("dns-delay {ms}"), Duration::from_secs(30))
            .map(drop)
    }

    /// Deletes the cProfile files written so far.
    pub fn clear_profiles(&mut self) -> Result<()> {
        self.command("clear-profiles", Duration::from_secs(30))
            .map(drop)
    }

    /// Stops every process and deletes the namespace.
    pub fn down(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "down");
        }
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // SIGTERM: seed.py stops its children and the namespace on it.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What one traced run left.
pub struct TracedRun {
    pub report: Value,
    /// The text report.
    pub text: String,
    pub stderr: String,
    /// The driver's summary of the requests.
    pub driven: Value,
}

/// Attaches `tracer report` to the app, sends `requests` requests, stops
/// tracer with Ctrl-C (SIGINT), and returns its reports. `extra` are more
/// arguments for tracer; with `echo`, tracer's output is copied to ours as
/// it comes.
pub fn trace_requests(
    paths: &Paths,
    seed: &mut Seed,
    requests: u32,
    json: &Path,
    extra: &[&str],
    echo: bool,
) -> Result<TracedRun> {
    trace_driven(paths, seed, json, (extra, &[]), echo, |seed| {
        seed.drive(requests)
    })
}

/// The same, with the requests sent by `drive`, and `extra` tracer's
/// arguments and environment.
pub fn trace_driven(
    paths: &Paths,
    seed: &mut Seed,
    json: &Path,
    extra: (&[&str], &[(&str, &Path)]),
    echo: bool,
    drive: impl FnOnce(&mut Seed) -> Result<Value>,
) -> Result<TracedRun> {
    let (extra, env) = extra;
    let _ = std::fs::remove_file(json);
    let pids = seed
        .app_pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut tracer = Command::new(&paths.tracer)
        .args(["report", "--pid", &pids, "--json"])
        .arg(json)
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", paths.tracer.display()))?;
    let stdout = collect(tracer.stdout.take().expect("piped"), echo);
    let (attached_tx, attached) = channel();
    let stderr = {
        let read = tracer.stderr.take().expect("piped");
        thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(read).lines().map_while(|l| l.ok()) {
                if echo {
                    eprintln!("{line}");
                }
                if line.contains("tracer: tracing PID") {
                    let _ = attached_tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        })
    };
    if attached.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = tracer.kill();
        let _ = tracer.wait();
        return Err(format!(
            "tracer did not attach: {}",
            stderr.join().unwrap_or_default()
        ));
    }
    let driven = drive(seed);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let status = tracer
        .wait()
        .map_err(|e| format!("waiting for tracer: {e}"))?;
    let text = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let driven = driven?;
    if !status.success() {
        return Err(format!("tracer failed ({status}): {stderr}"));
    }
    let report = std::fs::read_to_string(json)
        .map_err(|e| format!("reading {}: {e}", json.display()))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{}: {e}", json.display())))?;
    Ok(TracedRun {
        report,
        text,
        stderr,
        driven,
    })
}

/// Reads a child's standard output to the end, copying it to ours if `echo`.
fn collect(read: impl std::io::Read + Send + 'static, echo: bool) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(read).lines().map_while(|l| l.ok()) {
            if echo {
                println!("{line}");
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    })
}

/// Calls and time in one of the seed's categories.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Category {
    pub calls: u64,
    pub seconds: f64,
    /// Of the run's time: tracer's busy time, or cProfile's profiled time.
    pub share: f64,
}

/// The seed's categories: what its author's call graph showed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Categories {
    pub lookups: Category,
    pub ssl_reads: Category,
    pub handshakes: Category,
    pub mysql_query: Category,
    pub mysql_connect: Category,
    /// The denominator of the shares, in seconds.
    pub total_seconds: f64,
}

fn sum(rows: &Value, pick: impl Fn(&Value) -> Option<(u64, u64)>) -> (u64, u64) {
    rows.as_array()
        .into_iter()
        .flatten()
        .filter_map(pick)
        .fold((0, 0), |(c, t), (c2, t2)| (c + c2, t + t2))
}

/// The categories in a tracer JSON report.
pub fn tracer_categories(report: &Value) -> Categories {
    let busy_ns = report["busy_ns"].as_u64().unwrap_or(0);
    let cat = |(calls, ns): (u64, u64)| Category {
        calls,
        seconds: ns as f64 / 1e9,
        share: if busy_ns > 0 {
            ns as f64 / busy_ns as f64
        } else {
            0.0
        },
    };
    let mysql = |r: &Value| {
        r["peer"]
            .as_str()
            .or(r["target"].as_str())
            .is_some_and(|p| p.ends_with(":3306"))
    };
    Categories {
        lookups: cat(sum(&report["dns_hosts"], |h| {
            Some((h["count"].as_u64()?, h["total_ns"].as_u64()?))
        })),
        ssl_reads: cat(sum(&report["tls_peers"], |p| {
            Some((p["reads"].as_u64()?, p["read_ns"].as_u64()?))
        })),
        handshakes: cat(sum(&report["tls_peers"], |p| {
            Some((p["handshakes"].as_u64()?, p["handshake_ns"].as_u64()?))
        })),
        // The slow reads on the MySQL socket from the line that sends the
        // query (the busiest call site); the connect's greeting can be
        // over the threshold too, from another line.
        mysql_query: cat(sum(&report["breakdown"], |r| {
            (r["kind"] == "io" && mysql(r)).then(|| {
                let top = &r["sites"][0];
                (top[1].as_u64().unwrap_or(0), top[2].as_u64().unwrap_or(0))
            })
        })),
        mysql_connect: cat(sum(&report["connect_peers"], |p| {
            mysql(p).then(|| {
                (
                    p["count"].as_u64().unwrap_or(0),
                    p["total_ns"].as_u64().unwrap_or(0),
                )
            })
        })),
        total_seconds: busy_ns as f64 / 1e9,
    }
}

/// Runs scenario/profile_stats.py on the cProfile files of `requests`
/// requests (the middleware writes a request's file after its response is
/// sent: the last may come a moment after the driver is done).
pub fn profiler_categories(paths: &Paths, requests: u32) -> Result<Categories> {
    let count = || {
        std::fs::read_dir(paths.profiles())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        e.path()
                            .extension()
                            .is_some_and(|x| x == "prof" || x == "json")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    for _ in 0..100 {
        if count() >= requests as usize {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    if count() != requests as usize {
        return Err(format!(
            "{} cProfile files in {}, not one per request ({requests})",
            count(),
            paths.profiles().display()
        ));
    }
    let out = Command::new(&paths.python)
        .arg(paths.scenario.join("profile_stats.py"))
        .arg(paths.profiles())
        .output()
        .map_err(|e| format!("running scenario/profile_stats.py: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scenario/profile_stats.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("scenario/profile_stats.py printed no JSON: {e}"))?;
    let cat = |k: &str| Category {
        calls: v[k]["calls"].as_u64().unwrap_or(0),
        seconds: v[k]["seconds"].as_f64().unwrap_or(0.0),
        share: v[k]["share"].as_f64().unwrap_or(0.0),
    };
    Ok(Categories {
        lookups: cat("lookups"),
        ssl_reads: cat("ssl_reads"),
        handshakes: cat("handshakes"),
        mysql_query: cat("mysql_query"),
        mysql_connect: cat("mysql_connect"),
        total_seconds: v["total_seconds"].as_f64().unwrap_or(0.0),
    })
}

/// Per request of one endpoint, tracer's (from its "Requests by endpoint")
/// and the profiler's (its time and lookups over its request count): mean
/// request seconds and lookups per request, or `None` when tracer has no
/// such endpoint.
pub fn per_request(
    report: &Value,
    endpoint: &str,
    profiler: &Categories,
    requests: u32,
) -> Option<((f64, f64), (f64, f64))> {
    let e = report["http_requests"]["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["endpoint"] == endpoint)?;
    let count = e["latency"]["count"].as_f64()?.max(1.0);
    let lookups: u64 = e["calls"]
        .as_array()?
        .iter()
        .filter(|c| c["kind"] == "dns")
        .filter_map(|c| c["calls"].as_u64())
        .sum();
    let n = f64::from(requests.max(1));
    Some((
        (
            e["latency"]["total_ns"].as_f64()? / 1e9 / count,
            lookups as f64 / count,
        ),
        (
            profiler.total_seconds / n,
            profiler.lookups.calls as f64 / n,
        ),
    ))
}

/// The two side by side, as a table.
pub fn side_by_side(tracer: &Categories, profiler: &Categories) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<15} {:>7} {:>8} {:>7}   {:>8} {:>8} {:>7}",
        "", "TRACER", "TIME", "SHARE", "CPROFILE", "TIME", "SHARE"
    );
    for (name, t, p) in [
        ("lookups", tracer.lookups, profiler.lookups),
        ("SSL reads", tracer.ssl_reads, profiler.ssl_reads),
        ("MySQL query", tracer.mysql_query, profiler.mysql_query),
        (
            "MySQL connect",
            tracer.mysql_connect,
            profiler.mysql_connect,
        ),
        ("TLS handshakes", tracer.handshakes, profiler.handshakes),
    ] {
        let _ = writeln!(
            out,
            "{name:<15} {:>7} {:>7.3}s {:>6.1}%   {:>8} {:>7.3}s {:>6.1}%",
            t.calls,
            t.seconds,
            t.share * 100.0,
            p.calls,
            p.seconds,
            p.share * 100.0
        );
    }
    let _ = writeln!(
        out,
        "(calls, time and share. tracer: of the app's busy time, {:.2}s; cProfile: of the profiled \
         request time, {:.2}s. tracer counts a MySQL query by the reads over 1 ms of its line, a \
         connect by connect().)",
        tracer.total_seconds, profiler.total_seconds
    );
    out
}

/// Where tracer and the profiler disagree on `requests` requests of the
/// seed app, one line each; empty when the shares of lookups, SSL reads and
/// the MySQL query are within `points` of each other, the lookup and
/// handshake counts equal, the SSL read count within 2% and one slow query
/// read counted per request.
/// `compared` leaves out what the app's timing cannot say.
pub fn disagreements(
    t: &Categories,
    p: &Categories,
    requests: u32,
    points: f64,
    compared: Compared,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut shares = vec![
        ("lookups", t.lookups, p.lookups),
        ("SSL reads", t.ssl_reads, p.ssl_reads),
    ];
    if compared.mysql {
        shares.push(("MySQL query", t.mysql_query, p.mysql_query));
    }
    for (what, a, b) in shares {
        let diff = (a.share - b.share).abs() * 100.0;
        if diff > points {
            out.push(format!(
                "{what}: tracer {:.1}% vs cProfile {:.1}% ({diff:.1} points apart, at most \
                 {points})",
                a.share * 100.0,
                b.share * 100.0
            ));
        }
    }
    let mut counts = vec![
        ("getaddrinfo calls", t.lookups.calls, p.lookups.calls),
        ("TLS handshakes", t.handshakes.calls, p.handshakes.calls),
    ];
    if compared.mysql {
        counts.push(("slow query reads", t.mysql_query.calls, u64::from(requests)));
    }
    for (what, a, b) in counts {
        if a != b {
            out.push(format!("{what}: tracer {a}, expected {b}"));
        }
    }
    let (reads, profiled) = (t.ssl_reads.calls as f64, p.ssl_reads.calls as f64);
    if compared.ssl_read_calls && (reads - profiled).abs() > profiled * 0.02 {
        out.push(format!("SSL reads: tracer {reads}, cProfile {profiled}"));
    }
    out
}
