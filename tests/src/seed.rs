//! The seed scenario (scenario/seed.py: a Flask app that looks up a slow
//! DNS name on every request, pages through an HTTPS API in small records,
//! and queries MariaDB), driven from Rust for the acceptance test and for
//! `cargo xtask demo`; and the seed's categories of time, from tracer's JSON
//! report and from the app's own cProfile files, side by side.
//!
//! Errors are returned as text, not panics: the demo reports them to a user.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc::channel,
    thread,
    time::Duration,
};

use serde_json::Value;

mod categories;

pub use categories::*;

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
        Self::start_with(paths, dns_delay_ms, true, Server::Werkzeug, false)
    }

    /// The same, under another server.
    pub fn start_under(paths: &Paths, dns_delay_ms: u32, server: Server) -> Result<Self> {
        Self::start_with(paths, dns_delay_ms, true, server, false)
    }

    /// The same, the app serving HTTPS (gunicorn, uvicorn and node only),
    /// the driver a client of it.
    pub fn start_over_tls(paths: &Paths, dns_delay_ms: u32, server: Server) -> Result<Self> {
        Self::start_with(paths, dns_delay_ms, true, server, true)
    }

    /// The same, the app without a profiler (for the benchmark).
    pub fn start_unprofiled(paths: &Paths, dns_delay_ms: u32) -> Result<Self> {
        Self::start_with(paths, dns_delay_ms, false, Server::Werkzeug, false)
    }

    fn start_with(
        paths: &Paths,
        ms: u32,
        profile: bool,
        server: Server,
        tls: bool,
    ) -> Result<Self> {
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
        if tls {
            cmd.arg("--tls");
        }
        let mut child = cmd
            .arg("--server")
            .arg(server.name())
            .arg("--dns-delay-ms")
            .arg(ms.to_string())
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
        self.driven(&format!("drive {n}"), n)
    }

    /// Sends `n` requests to GET /overview and `m` to POST /repos/ID,
    /// taking turns; returns the driver's summary with each request's time
    /// (`timings`) and the canaries it sent in query strings, headers and
    /// bodies (`canaries`).
    pub fn drive_routes(&mut self, n: u32, m: u32) -> Result<Value> {
        self.driven(&format!("drive {n} {m}"), n + m)
    }

    fn driven(&mut self, command: &str, requests: u32) -> Result<Value> {
        let answer = self.command(command, Duration::from_secs(300))?;
        if answer["ok"] != requests {
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
