//! Harness for the end-to-end tests: run the real `tracer` binary against
//! real processes, and the ground truth they measure themselves.
//!
//! These tests load eBPF programs: they need root, and they run one at a
//! time (`--test-threads=1`, as `cargo xtask test` does) because they share
//! the kernel's tracepoints and tracefs.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    thread,
    time::{Duration, Instant},
};

pub use serde_json::Value;

pub mod prometheus;
pub mod seed;

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
fn bin_dir() -> PathBuf {
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
    /// attached when it returns.
    pub fn attached(args: &[&str]) -> Self {
        let mut t = Self::start(args);
        t.stderr
            .wait_for("tracer: tracing PID", Duration::from_secs(30));
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

/// A loopback TCP listener that accepts everything, on a thread.
pub struct OpenListener {
    pub port: u16,
}

impl OpenListener {
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    pub fn start_v6() -> Self {
        Self::start_on("[::1]:0")
    }

    fn start_on(addr: &str) -> Self {
        let l = TcpListener::bind(addr).unwrap();
        let port = l.local_addr().unwrap().port();
        thread::spawn(move || {
            for conn in l.incoming() {
                drop(conn);
            }
        });
        Self { port }
    }
}

/// A loopback port nobody listens on: connects are refused.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
    // dropped here: the port is closed (and not reused at once)
}

/// A listener whose accept queue is full (backlog 0 plus one connection the
/// test itself made), so the kernel drops the next SYN. Released after a
/// delay, it drains the queue and the client's SYN retransmit, sent about
/// 1 s after the first SYN, completes the handshake. This kernel has no
/// netem; this is how a known handshake delay is made (see PLATFORM.md).
pub struct SlowListener {
    pub port: u16,
    listener: Option<TcpListener>,
    _filler: TcpStream,
}

impl SlowListener {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // SAFETY: listen(2) on our socket; backlog 0 leaves room for one.
        unsafe {
            use std::os::fd::AsRawFd as _;
            assert_eq!(libc::listen(listener.as_raw_fd(), 0), 0);
        }
        let filler = TcpStream::connect(("127.0.0.1", port)).unwrap();
        Self {
            port,
            listener: Some(listener),
            _filler: filler,
        }
    }

    /// Starts accepting after `delay`, for a few seconds.
    pub fn release_after(&mut self, delay: Duration) {
        let listener = self.listener.take().expect("released once");
        thread::spawn(move || {
            thread::sleep(delay);
            listener.set_nonblocking(true).unwrap();
            let end = Instant::now() + Duration::from_secs(4);
            let mut held = Vec::new();
            while Instant::now() < end {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }
}

/// Names of the eBPF programs `tracer` loads, as the kernel shows them
/// (truncated to 15 characters), or their beginnings (`tls_entry`: one
/// program per OpenSSL function).
pub const OUR_PROGRAMS: &[&str] = &[
    "sys_enter",
    "sys_exit",
    "inet_sock_set_s",
    "task_newtask",
    "sched_process_e",
    "getaddrinfo_ent",
    "gethostbyname_e",
    "gethostbyname2_",
    "gethostbyname_r",
    "lookup_return",
    "tls_entry",
    "tls_return",
];

/// A network namespace the test made, with its own loopback and
/// resolv.conf (`ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf
/// over /etc/resolv.conf). Deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str, resolv_conf: &str) -> Self {
        let name = format!("tracer-{tag}-{}", std::process::id());
        // A namespace left by an earlier run that was killed.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = |args: &[&str]| {
            let st = Command::new("ip")
                .args(args)
                .status()
                .expect("ip (iproute2)");
            assert!(st.success(), "ip {args:?}");
        };
        ok(&["netns", "add", &name]);
        ok(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        let dir = format!("/etc/netns/{name}");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/resolv.conf"), resolv_conf).unwrap();
        Self { name }
    }

    /// `program args...` run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// The test DNS server (`dnsfixture`) on 127.0.0.1:53 inside a namespace.
/// Its log is every query it received: the ground truth.
pub struct DnsServer {
    child: Child,
    pub log: Lines,
}

impl DnsServer {
    pub fn start(ns: &NetNs, args: &[&str]) -> Self {
        Self::start_command(ns.command(bin_dir().join("dnsfixture")), args)
    }

    /// In the network namespace the caller is in.
    pub fn start_here(args: &[&str]) -> Self {
        Self::start_command(Command::new(bin_dir().join("dnsfixture")), args)
    }

    fn start_command(mut cmd: Command, args: &[&str]) -> Self {
        let mut child = cmd
            .args(["--listen", "127.0.0.1:53"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start dnsfixture");
        let mut log = Lines::new(child.stdout.take().unwrap());
        log.wait_for("listening", Duration::from_secs(10));
        Self { child, log }
    }

    /// The queries received so far (waits a moment for the log to catch up).
    pub fn queries(&mut self) -> Vec<Value> {
        while self.log.next(Duration::from_millis(300)).is_some() {}
        self.log
            .seen
            .iter()
            .filter(|l| l.contains("\"name\""))
            .map(|l| json(l))
            .collect()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// A fresh self-signed certificate for CN=localhost: (cert, key) paths.
pub fn self_signed_cert() -> (PathBuf, PathBuf) {
    let dir = scratch("tls-cert");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success(), "openssl req");
    (cert, key)
}

/// A TLS server on loopback (tests/fixtures/tls_server.py) with a fresh
/// self-signed certificate: every request gets `records` TLS records of
/// `size` bytes, `delay_ms` apart.
pub struct TlsServer {
    child: Child,
    pub port: u16,
    pub out: Lines,
}

impl TlsServer {
    pub fn start(records: u32, size: u32, delay_ms: u32) -> Self {
        let (cert, key) = self_signed_cert();
        let mut child = Command::new(python())
            .arg(fixture_file("tls_server.py"))
            .arg(&cert)
            .arg(&key)
            .args([records, size, delay_ms].map(|v| v.to_string()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tls_server.py");
        let mut out = Lines::new(child.stdout.take().unwrap());
        let line = json(&out.wait_for("listening", Duration::from_secs(20)));
        let port = line["listening"].as_u64().unwrap() as u16;
        Self { child, port, out }
    }

    /// The response size in bytes: the body the server sends.
    pub fn served(&mut self) -> u64 {
        json(&self.out.wait_for("served", Duration::from_secs(30)))["served"]
            .as_u64()
            .unwrap()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// Our programs the kernel still has loaded, from `bpftool prog show`.
pub fn our_programs_loaded() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("bpftool (installed by cargo xtask setup)");
    assert!(out.status.success(), "bpftool failed: {out:?}");
    let progs: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    progs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .filter(|n| OUR_PROGRAMS.iter().any(|p| n.starts_with(p)))
        .map(str::to_string)
        .collect()
}

/// Fails unless none of our programs is loaded. They disappear once the
/// tracer's file descriptors are closed, freed by the kernel after an RCU
/// grace period: allow a moment.
pub fn assert_nothing_left_loaded() {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = our_programs_loaded();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still loaded: {left:?}");
        thread::sleep(Duration::from_millis(100));
    }
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

/// Rows of `report["syscall_groups"]` (or another array) matching a predicate.
pub fn rows<'a>(report: &'a Value, key: &str, pred: impl Fn(&Value) -> bool) -> Vec<&'a Value> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("report has no {key}"))
        .iter()
        .filter(|r| pred(r))
        .collect()
}

/// A cgroup v2 directory of a test's own, under wherever cgroup2 is mounted
/// (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid machine).
pub struct Cgroup {
    pub path: PathBuf,
    root: PathBuf,
}

impl Cgroup {
    pub fn new(tag: &str) -> Self {
        Self::named(&format!("tracer-{tag}-{}", std::process::id()))
    }

    /// One with exactly this name (to look like a container runtime's).
    pub fn named(name: &str) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = mountinfo
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                (right.split_whitespace().next()? == "cgroup2")
                    .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
            })
            .expect("a cgroup v2 hierarchy (node mode scopes by cgroup v2)");
        let path = root.join(name);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self { path, root }
    }

    /// Moves a process into it.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.path.display()));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A cgroup with processes cannot be removed: move any left out.
        let procs = std::fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// How many entries a kernel map of ours holds now (bpftool).
pub fn kernel_map_entries(name: &str) -> usize {
    let out = Command::new("bpftool")
        .args(["map", "dump", "name", name, "--json"])
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool map dump {name}: {out:?}");
    let dump: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    dump.as_array().map_or(0, Vec::len)
}

/// A TCP backend that answers each connection's first read with "result"
/// after `delay`: a slow database for a server fixture to query.
pub fn slow_backend(delay: Duration) -> u16 {
    use std::io::{Read as _, Write as _};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 100];
                let _ = c.read(&mut buf);
                std::thread::sleep(delay);
                let _ = c.write_all(b"result");
            });
        }
    });
    port
}

/// One HTTP/1.0 GET of / on loopback, read to the end.
pub fn http_get_root(port: u16) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
}
