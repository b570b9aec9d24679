//! Harness for the end-to-end tests: run the real `tracer` binary against
//! real processes, and the ground truth they measure themselves.
//!
//! These tests load eBPF programs: they need root, and they run one at a
//! time (`--test-threads=1`, as `cargo xtask test` does) because they share
//! the kernel's tracepoints and tracefs.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    thread,
    time::{Duration, Instant},
};

pub use serde_json::Value;

mod fsroot;
mod go;
mod kernel;
mod net;
pub mod prometheus;
pub mod seed;

pub use fsroot::*;
pub use go::*;
pub use kernel::*;
pub use net::*;

/// Fails the test (never skips it) when not root: a skipped test proves nothing.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the end-to-end tests load eBPF programs and must run as root (cargo xtask test)"
    );
}

/// Directory holding the built binaries (target/debug), found from the
/// running executable: a test (target/debug/deps/e2e-*) or a binary of
/// this crate beside them (kernel-checks).
pub(crate) fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("target dir");
    if dir.ends_with("deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The `tracer` binary under test (override with TRACER_BIN).
pub fn tracer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACER_BIN") {
        return p.into();
    }
    let p = bin_dir().join("tracer");
    assert!(
        p.exists(),
        "{} not built: run `cargo build -p tracer-user` (cargo xtask test does)",
        p.display()
    );
    p
}

/// The `netfixture` binary of this crate (built alongside the tests).
pub fn fixture_bin() -> PathBuf {
    bin_dir().join("netfixture")
}

/// Lines of a child's output, read on a thread so that nothing blocks.
pub struct Lines {
    rx: Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    /// Lines of any reader (a child's stdout).
    pub fn new_from(read: impl std::io::Read + Send + 'static) -> Self {
        Self::new(read)
    }

    fn new(read: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = channel();
        thread::spawn(move || {
            for line in BufReader::new(read).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line, or None at end of output or after `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<String> {
        match self.rx.recv_timeout(timeout) {
            Ok(l) => {
                self.seen.push(l.clone());
                Some(l)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Reads until a line contains `needle`; panics with what was seen.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(l) if l.contains(needle) => return l,
                Some(_) => {}
                None => panic!("no line containing {needle:?}; saw: {:#?}", self.seen),
            }
        }
    }

    /// Everything still to come, until the writer closes.
    pub fn rest(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        while let Some(_l) = self.next(deadline.saturating_duration_since(Instant::now())) {}
        self.seen.clone()
    }
}

/// The fixture process (`netfixture`), driven line by line.
pub struct Fixture {
    child: Child,
    stdin: Option<ChildStdin>,
    pub out: Lines,
    pub pid: u32,
}

impl Fixture {
    pub fn start() -> Self {
        Self::start_command(Command::new(fixture_bin()))
    }

    /// Any program that speaks the fixture protocol: prints {"ready": PID},
    /// then one JSON line per command read on stdin.
    pub fn start_command(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let mut out = Lines::new(child.stdout.take().unwrap());
        let ready = json(&out.wait_for("ready", Duration::from_secs(10)));
        let pid = ready["ready"].as_u64().unwrap() as u32;
        Self {
            child,
            stdin,
            out,
            pid,
        }
    }

    pub fn send(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().expect("fixture stdin open");
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends a command and returns its JSON result line.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Value {
        self.send(cmd);
        let word = cmd.split_whitespace().next().unwrap();
        json(&self.out.wait_for(&format!("\"cmd\":\"{word}\""), timeout))
    }

    /// The process this fixture started (`pid` is what the fixture said it
    /// is, which differs in a PID namespace or behind a wrapper).
    pub fn spawned_pid(&self) -> u32 {
        self.child.id()
    }

    /// Tells it to exit and reaps it.
    pub fn exit(mut self) {
        self.send("exit");
        self.stdin.take();
        let _ = self.child.wait();
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// A running `tracer`, its output collected.
pub struct Tracer {
    pub child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Tracer {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_stdin(args, Stdio::null())
    }

    pub fn start_with_stdin(args: &[&str], stdin: Stdio) -> Self {
        let mut child = Command::new(tracer_bin())
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tracer");
        let stdout = Lines::new(child.stdout.take().unwrap());
        let stderr = Lines::new(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Starts `tracer` and waits for its "tracing PID" line: the probes are
    /// attached when it returns. The wait is long for the kernel matrix's
    /// guests, which run without KVM: on one host an attach there took
    /// over 30 s (the kernel's verifier is most of an attach's CPU time).
    pub fn attached(args: &[&str]) -> Self {
        let mut t = Self::start(args);
        t.stderr
            .wait_for("tracer: tracing PID", Duration::from_secs(120));
        t
    }

    pub fn interrupt(&self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
    }

    pub fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "tracer did not finish in {timeout:?}; stderr: {:#?}",
                    self.stderr.rest(Duration::from_secs(1))
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        Finished {
            code,
            stdout: self.stdout.rest(Duration::from_secs(5)).join("\n"),
            stderr: self.stderr.rest(Duration::from_secs(5)).join("\n"),
        }
    }
}

/// A test that fails midway must not leave a tracer running (it would keep
/// its programs loaded for every later test).
impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a traced fixture run left: the JSON report and what tracer printed.
pub struct Traced {
    pub report: Value,
    pub stdout: String,
    pub stderr: String,
}

impl Traced {
    /// The warnings tracer printed.
    pub fn warnings(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.contains("warning"))
            .collect()
    }
}

/// Attaches `tracer report` to `client`, lets `drive` tell it what to do,
/// makes it exit, and returns the report. Fails unless tracer ended by
/// itself with exit code 0, saying the target exited, with nothing lost.
pub fn trace_until_exit(name: &str, client: Fixture, drive: impl FnOnce(&mut Fixture)) -> Traced {
    trace_until_exit_with(name, client, &[], drive)
}

/// The same, with more arguments for tracer.
pub fn trace_until_exit_with(
    name: &str,
    mut client: Fixture,
    extra: &[&str],
    drive: impl FnOnce(&mut Fixture),
) -> Traced {
    require_root();
    let json = scratch(name);
    let pid = client.pid.to_string();
    let mut args = vec!["report", "--pid", &pid, "--json", json.to_str().unwrap()];
    args.extend_from_slice(extra);
    let tracer = Tracer::attached(&args);
    drive(&mut client);
    client.exit();
    let done = tracer.finish(Duration::from_secs(60));
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);
    assert!(
        done.stderr.contains("exited"),
        "says the target exited: {}",
        done.stderr
    );
    // What tracer printed, kept next to the JSON for a person to read.
    let _ = std::fs::write(json.with_extension("txt"), &done.stdout);
    let report = read_report(&json);
    assert_eq!(report["ended"], "target_exited");
    for counter in ["ring_full", "syscall_map_full", "thread_map_full"] {
        assert_eq!(
            report["lost"][counter], 0,
            "{counter}: {:#}",
            report["lost"]
        );
    }
    Traced {
        report,
        stdout: done.stdout,
        stderr: done.stderr,
    }
}

/// Runs `tracer` to completion.
pub fn run_tracer(args: &[&str], timeout: Duration) -> Finished {
    Tracer::start(args).finish(timeout)
}

/// The Python of the venv `cargo xtask setup` made (with requests).
pub fn venv_python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python");
    assert!(
        p.exists(),
        "{} missing: run `cargo xtask setup`",
        p.display()
    );
    p
}

/// A file under tests/fixtures.
pub fn fixture_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The real Python interpreter behind `python3` (pyenv's is a shell shim),
/// or `TRACER_TEST_PYTHON` (the kernel matrix's guests have no pyenv).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACER_TEST_PYTHON") {
        return p.into();
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A memory figure of a process from /proc/PID/status, in KiB (`field`
/// such as "VmRSS" or "VmHWM"); None once the process is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Reads a JSON report the tracer wrote.
pub fn read_report(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("report {} not written: {e}", path.display()));
    serde_json::from_str(&text).expect("report is JSON")
}

/// A fresh path under the target directory for a test's files.
pub fn scratch(name: &str) -> PathBuf {
    let dir = bin_dir().join("e2e-scratch");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Checks that the report's call sites were unwound by the kernel's
/// tables (a stack or two may be copied before a process's tables are
/// written) and says how many were.
pub fn assert_unwound_in_kernel(report: &Value) -> String {
    let a = &report["attribution"];
    let count = |key: &str| a[key].as_u64().unwrap_or(0);
    let kernel = count("unwound_in_kernel");
    let here = count("unwound_here_no_tables_yet") + count("unwound_here_tables_full");
    assert!(kernel > here, "stacks unwound in the kernel: {a:#}");
    format!("{kernel} stacks unwound in the kernel, {here} here")
}

/// Rows of `report["syscall_groups"]` (or another array) matching a predicate.
pub fn rows<'a>(report: &'a Value, key: &str, pred: impl Fn(&Value) -> bool) -> Vec<&'a Value> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("report has no {key}"))
        .iter()
        .filter(|r| pred(r))
        .collect()
}
