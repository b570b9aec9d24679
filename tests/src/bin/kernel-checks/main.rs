//! The kernel matrix's end-to-end checks (`cargo xtask kernels`): a subset
//! of the tests, run on one kernel, one line per check for the host to put
//! in its table of kernel × check.
//!
//!   kernel-checks           run here, in network and mount namespaces of
//!                           its own (its DNS server takes 127.0.0.1:53)
//!   (as PID 1)              the init process of a qemu guest: mount the
//!                           kernel's file systems, run, power off
//!   kernel-checks --files   what the checks run, for the guest's initramfs:
//!                           `file PATH` (with the libraries it links) and
//!                           `tree PATH` (a directory: Python's library)
//!
//! Output: `tracer-check kernel RELEASE`, then per check
//! `tracer-check NAME ok|degraded|failed DETAIL`, then `tracer-check done`.
//! A check that fails where the tracer warned that this kernel lacks
//! something is `degraded`, with the warning as its detail.

use std::{
    collections::HashMap,
    panic::{AssertUnwindSafe, catch_unwind},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use tracer_tests::*;

mod servers;

use servers::{server_requests, tls_server_requests};

const LONG: Duration = Duration::from_secs(120);
const MARK: &str = "tracer-check";

/// A check: its name in the table and what it runs.
type Check = (&'static str, fn() -> String);

const CHECKS: &[Check] = &[
    ("syscalls", syscall_counts),
    ("connect", connect_handshake),
    ("dns", lookup_with_messages),
    ("tls", ssl_reads_and_writes),
    ("go", go_lookup_and_tls),
    ("python", python_call_site),
    ("server", server_requests),
    ("tls-server", tls_server_requests),
    ("node", node_mode),
    ("cgroup", cgroup_scope),
    ("netns", netns_scope),
    ("detach", nothing_left_loaded),
];

/// Warnings the tracer printed during the current check that name this
/// kernel (what it lacks): `tracer: warning: Linux 5.10...: ...`.
static KERNEL_WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn note_warnings(stderr: &str) {
    let mut seen = KERNEL_WARNINGS.lock().unwrap();
    for line in stderr.lines() {
        if let Some(w) = line.split_once("warning: Linux ").map(|(_, w)| w) {
            let w = format!("Linux {w}");
            if !seen.contains(&w) {
                seen.push(w);
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--files") => print_guest_files(),
        None if std::process::id() == 1 => {
            mount_kernel_filesystems();
            run_checks();
            // SAFETY: sync and reboot(2) with a valid command; we are init.
            unsafe {
                libc::sync();
                libc::reboot(libc::RB_POWER_OFF);
            }
        }
        None => run_checks(),
        Some(other) => {
            eprintln!("kernel-checks: unknown argument {other}; see the source's header");
            std::process::exit(2);
        }
    }
}

fn run_checks() {
    require_root();
    isolate();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("{MARK} kernel {}", release.trim());
    // The failures' messages go into the table, not to the console.
    std::panic::set_hook(Box::new(|_| {}));
    for (name, check) in CHECKS {
        KERNEL_WARNINGS.lock().unwrap().clear();
        let t0 = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(check));
        let warnings = KERNEL_WARNINGS.lock().unwrap().join("; ");
        let (status, detail) = match result {
            Ok(detail) => ("ok", detail),
            Err(panic) if !warnings.is_empty() => {
                ("degraded", format!("{warnings} ({})", panic_text(&panic)))
            }
            Err(panic) => ("failed", panic_text(&panic)),
        };
        let detail = detail.replace('\n', " ");
        println!("{MARK} {name} {status} {detail} [{:.0?}]", t0.elapsed());
    }
    println!("{MARK} done");
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("panicked");
    // Long assertion dumps (whole reports) would swamp the table.
    text.chars().take(600).collect()
}

/// The guest has only what the initramfs holds: mount what the kernel
/// provides (the tracer mounts tracefs itself). The initramfs is writable:
/// no tmpfs on /tmp, which would hide a checkout under /tmp.
fn mount_kernel_filesystems() {
    for (fs, target) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("cgroup2", "/sys/fs/cgroup"),
    ] {
        let _ = std::fs::create_dir_all(target);
        mount(fs, target, fs, 0);
    }
    // SAFETY: single-threaded still; nothing reads the environment at once.
    unsafe { std::env::set_var("PATH", "/usr/local/bin:/usr/bin:/usr/sbin") };
}

fn mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong) {
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let (src, tgt, ty) = (c(source), c(target), c(fstype));
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            if fstype.is_empty() {
                std::ptr::null()
            } else {
                ty.as_ptr()
            },
            flags,
            std::ptr::null(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mount {source} on {target}: {}",
        std::io::Error::last_os_error()
    );
}

/// Network and mount namespaces of our own: loopback up, and a resolv.conf
/// that names our DNS server on 127.0.0.1:53. The same on the host and in a
/// guest, so that the checks are the same.
fn isolate() {
    // SAFETY: unshare(2) before any thread is started.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    mount("none", "/", "", libc::MS_REC | libc::MS_PRIVATE);
    loopback_up();
    let resolv = std::env::temp_dir().join(format!("kernel-checks-resolv-{}", std::process::id()));
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    if !std::path::Path::new("/etc/resolv.conf").exists() {
        std::fs::write("/etc/resolv.conf", "").unwrap();
    }
    mount(
        resolv.to_str().unwrap(),
        "/etc/resolv.conf",
        "",
        libc::MS_BIND,
    );
}

fn loopback_up() {
    // SAFETY: ioctls on a socket of our own with a zeroed, named ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0, "socket");
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req), 0, "lo flags");
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &req), 0, "lo up");
        libc::close(fd);
    }
}

/// Traces a fixture until it exits, keeping what the tracer warned.
fn traced(name: &str, client: Fixture, drive: impl FnOnce(&mut Fixture)) -> Value {
    let t = trace_until_exit(name, client, drive);
    note_warnings(&t.stderr);
    t.report
}

fn one_row<'a>(report: &'a Value, key: &str, field: &str, want: &str) -> &'a Value {
    let found = rows(report, key, |r| r[field] == want);
    assert_eq!(
        found.len(),
        1,
        "one {key} row for {want}: {:#}",
        report[key]
    );
    found[0]
}

fn f64_of(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Within 10% of the client's own clock.
fn assert_close(tracer_ns: f64, truth_ns: f64, what: &str) {
    let err = (tracer_ns - truth_ns).abs() / truth_ns;
    assert!(
        err < 0.10,
        "{what}: tracer {tracer_ns} ns vs client {truth_ns} ns"
    );
}

/// Syscall latency with exact counts: every getppid the fixture made.
fn syscall_counts() -> String {
    const N: u64 = 20_000;
    let fixture = Fixture::start();
    let pid = fixture.pid;
    let report = traced("k-syscalls", fixture, |f| {
        let done = f.run(&format!("getppid {N}"), LONG);
        assert_eq!(done["calls"], N);
    });
    let counted: u64 = rows(&report, "syscalls", |r| {
        r["pid"] == pid && r["syscall"] == "getppid"
    })
    .iter()
    .map(|r| r["count"].as_u64().unwrap())
    .sum();
    assert_eq!(counted, N, "getppid calls counted");
    format!("{counted} of {N} getppid counted")
}

/// Connects counted, and the real handshake time of a non-blocking connect
/// whose first SYN the server drops.
fn connect_handshake() -> String {
    let open = OpenListener::start();
    let mut slow = SlowListener::start();
    let fixture = Fixture::start();
    let mut truth_ns = 0.0;
    let report = traced("k-connect", fixture, |f| {
        let ok = f.run(&format!("connect-ok {} 5", open.port), LONG);
        assert!(
            ok["errnos"].as_array().unwrap().iter().all(|e| e == 0),
            "{ok}"
        );
        f.send(&format!("connect-slow {}", slow.port));
        let started = json(&f.out.wait_for("started", LONG));
        assert_eq!(started["errno"], libc::EINPROGRESS, "non-blocking");
        slow.release_after(Duration::from_millis(500));
        let done = json(&f.out.wait_for("\"cmd\":\"connect-slow\"", LONG));
        assert_eq!(done["so_error"], 0, "{done}");
        truth_ns = f64_of(&done, "micros") * 1e3;
    });
    let ok = one_row(
        &report,
        "connect_peers",
        "peer",
        &format!("127.0.0.1:{}", open.port),
    );
    assert_eq!(ok["count"], 5, "{ok}");
    let p = one_row(
        &report,
        "connect_peers",
        "peer",
        &format!("127.0.0.1:{}", slow.port),
    );
    let handshake = f64_of(p, "max_ns");
    assert!(handshake > 0.9e9, "a SYN retransmit takes a second: {p}");
    assert_close(handshake, truth_ns, "handshake");
    format!(
        "5 of 5 connects; handshake {:.3} s, the client saw {:.3} s",
        handshake / 1e9,
        truth_ns / 1e9
    )
}

/// A getaddrinfo timed, with the DNS messages inside it decoded, against a
/// DNS server that answers in 200 ms and logs what it received.
fn lookup_with_messages() -> String {
    let mut server = DnsServer::start_here(&["--delay-ms", "200"]);
    let client = Fixture::start_command(Command::new(env!("RESOLVE_BIN")));
    let mut truth = Value::Null;
    let report = traced("k-dns", client, |c| {
        truth = c.run("getaddrinfo api.example.test", LONG);
    });
    assert_eq!(truth["ret"], 0, "{truth}");
    let h = one_row(&report, "dns_hosts", "host", "api.example.test");
    assert_eq!(h["count"], 1, "{h}");
    let truth_ns = f64_of(&truth, "micros") * 1e3;
    assert_close(f64_of(h, "max_ns"), truth_ns, "lookup");
    let received = server.queries();
    let queries = report["slowest_lookups"][0]["queries"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in the lookup: {:#}", report["slowest_lookups"]));
    assert_eq!(
        queries.len(),
        received.len(),
        "{queries:#?} vs {received:#?}"
    );
    let mut types = Vec::new();
    for (q, r) in queries.iter().zip(&received) {
        assert_eq!(
            (&q["name"], &q["qtype"], &q["id"]),
            (&r["name"], &r["type"], &r["id"])
        );
        let latency = f64_of(q, "latency_ns");
        assert!(latency > 0.19e9, "answered after the server's 200 ms: {q}");
        types.push(q["qtype"].as_str().unwrap_or("?").to_string());
    }
    format!(
        "1 lookup, {:.0} ms (the client saw {:.0} ms); {} messages decoded: {}",
        f64_of(h, "max_ns") / 1e6,
        truth_ns / 1e6,
        queries.len(),
        types.join(", ")
    )
}

/// SSL_read/SSL_write through libssl: every call and byte the client saw.
fn ssl_reads_and_writes() -> String {
    let mut server = TlsServer::start(50, 100, 1);
    let client = Fixture::start_command(Command::new(env!("TLS_CLIENT_BIN")));
    let mut truth = Value::Null;
    let report = traced("k-tls", client, |c| {
        truth = c.run(&format!("get {} 100", server.port), LONG);
    });
    assert_eq!(server.served(), 5000);
    let p = one_row(
        &report,
        "tls_peers",
        "peer",
        &format!("127.0.0.1:{}", server.port),
    );
    assert_eq!(p["reads"], truth["reads"], "{p:#}");
    assert_eq!(p["read_bytes"], truth["bytes"], "{p:#}");
    assert_eq!(p["writes"], 1, "{p:#}");
    assert_eq!(p["write_bytes"], truth["written"], "{p:#}");
    assert_eq!(p["handshakes"], 1, "{p:#}");
    format!(
        "{} reads of {} bytes, {} write of {} bytes, 1 handshake",
        p["reads"], p["read_bytes"], p["writes"], p["write_bytes"]
    )
}

/// A stripped Go program: a lookup timed at Go's resolver with the
/// messages of its connected socket and its line of code, and
/// crypto/tls's reads and bytes, exact.
fn go_lookup_and_tls() -> String {
    let mut dns = DnsServer::start_here(&["--delay-ms", "100"]);
    let mut tls = TlsServer::start(50, 100, 1);
    let client = Fixture::start_command(Command::new(go_fixture(23, GoBuild::PureStripped)));
    let (mut lookup, mut get) = (Value::Null, Value::Null);
    let report = traced("k-go", client, |c| {
        lookup = c.run("lookup api.example.test", LONG);
        get = c.run(&format!("get https://127.0.0.1:{}/", tls.port), LONG);
    });
    assert_eq!(lookup["err"], "", "{lookup}");
    assert_eq!(get["err"], "", "{get}");
    assert_eq!(tls.served(), 5000);
    let l = &report["slowest_lookups"][0];
    assert_eq!(l["host"], "api.example.test", "{l:#}");
    assert_eq!(l["function"], "net.(*Resolver).lookupIPAddr", "{l:#}");
    assert_close(
        f64_of(l, "duration_ns"),
        f64_of(&lookup, "micros") * 1e3,
        "Go lookup",
    );
    let queries = l["queries"].as_array().map_or(0, Vec::len);
    assert_eq!(queries, dns.queries().len(), "{l:#}");
    assert!(
        l["call_site"]
            .as_str()
            .unwrap_or("")
            .contains("main.lookup (gofixture.go:"),
        "{l:#}"
    );
    let p = one_row(
        &report,
        "tls_peers",
        "peer",
        &format!("127.0.0.1:{}", tls.port),
    );
    assert_eq!(p["reads"], get["tls_reads"], "{p:#} vs {get}");
    assert_eq!(p["read_bytes"], get["tls_read"], "{p:#} vs {get}");
    assert_eq!(p["write_bytes"], get["tls_written"], "{p:#} vs {get}");
    format!(
        "1 lookup, {:.0} ms, {queries} messages; {} TLS reads of {} bytes; {}",
        f64_of(l, "duration_ns") / 1e6,
        p["reads"],
        p["read_bytes"],
        assert_unwound_in_kernel(&report)
    )
}

/// A lookup from CPython, named by its function and line.
fn python_call_site() -> String {
    let source = std::fs::read_to_string(fixture_file("callsites.py")).unwrap();
    let markers: HashMap<String, u64> = source
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            Some((
                l.split("# CALLSITE ").nth(1)?.trim().to_string(),
                i as u64 + 1,
            ))
        })
        .collect();
    let mut cmd = Command::new(python());
    cmd.arg(fixture_file("callsites.py"));
    let report = traced("k-python", Fixture::start_command(cmd), |c| {
        c.run("lookup localhost", LONG);
        // The frames are read while the process lives.
        std::thread::sleep(Duration::from_millis(2500));
    });
    let sites = rows(&report, "call_sites", |c| {
        c["kind"] == "dns" && c["target"].as_str().unwrap_or("").contains("localhost")
    });
    let frame = sites
        .iter()
        .flat_map(|s| s["frames"].as_array().into_iter().flatten())
        .find(|f| f["python"] == true && f["function"] == "lookup_host")
        .unwrap_or_else(|| panic!("no Python frame lookup_host: {:#}", report["call_sites"]));
    assert_eq!(frame["line"].as_u64(), Some(markers["lookup"]), "{frame}");
    // Down to libc, through CPython's C code, unwound without frame
    // pointers.
    let native = sites
        .iter()
        .flat_map(|s| s["frames"].as_array().into_iter().flatten())
        .filter(|f| f["python"] == false)
        .filter(|f| f["module"].as_str().is_some_and(|m| m.contains("libc.so")))
        .filter_map(|f| f["function"].as_str())
        .find(|f| f.contains("getaddrinfo"))
        .unwrap_or_else(|| panic!("no getaddrinfo frame in libc: {:#}", report["call_sites"]));
    let file = frame["file"].as_str().unwrap_or("?");
    format!(
        "lookup_host ({}:{}) down to {native}; {}",
        file.rsplit('/').next().unwrap_or(file),
        frame["line"],
        assert_unwound_in_kernel(&report)
    )
}

/// `--all`: a process started after the tracer, never named to it.
fn node_mode() -> String {
    let open = OpenListener::start();
    let json_path = scratch("k-all");
    let mut tracer = Tracer::start(&[
        "report",
        "--all",
        "--duration",
        "10s",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    tracer.stderr.wait_for("tracing every process", LONG);
    let mut fixture = Fixture::start();
    fixture.run(&format!("connect-ok {} 6", open.port), LONG);
    // Each thread keeps its syscall row (name and cgroup) until a rename.
    fixture.run("getppid 300", LONG);
    let renamed = fixture.run("rename k-renamed", LONG);
    assert_eq!(renamed["rc"], 0, "{renamed}");
    fixture.run("getppid 700", LONG);
    let pid = fixture.pid;
    fixture.exit();
    let done = tracer.finish(LONG);
    note_warnings(&done.stderr);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let report = read_report(&json_path);
    let peer = format!("127.0.0.1:{}", open.port);
    let seen: u64 = rows(&report, "connect_peers", |r| r["peer"] == peer.as_str())
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(seen, 6, "connects of PID {pid}");
    assert_eq!(rows(&report, "processes", |p| p["pid"] == pid).len(), 1);
    let getppid_of = |comm: &str| -> u64 {
        rows(&report, "syscalls", |r| {
            r["comm"] == comm && r["syscall"] == "getppid"
        })
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
    };
    let (before, after) = (getppid_of("netfixture"), getppid_of("k-renamed"));
    assert_eq!(
        (before, after),
        (300, 700),
        "getppid before and after a rename"
    );
    "6 of 6 connects of a process started later; 300 and 700 getppid before and after its rename"
        .to_string()
}

/// `--cgroup`: a process in a cgroup below the scope is traced, one outside
/// it is not (5.10 finds a task's ancestors through BTF, newer kernels ask
/// a helper).
fn cgroup_scope() -> String {
    let (inside, outside) = (OpenListener::start(), OpenListener::start());
    let scope = Cgroup::new("k-scope");
    let inner = scope.path.join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    let json_path = scratch("k-cgroup");
    let mut tracer = Tracer::start(&[
        "report",
        "--cgroup",
        scope.path.to_str().unwrap(),
        "--duration",
        "10s",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    tracer.stderr.wait_for("tracer: tracing", LONG);
    let mut member = Fixture::start();
    std::fs::write(inner.join("cgroup.procs"), member.pid.to_string()).unwrap();
    let mut stranger = Fixture::start();
    member.run(&format!("connect-ok {} 4", inside.port), LONG);
    stranger.run(&format!("connect-ok {} 5", outside.port), LONG);
    member.exit();
    stranger.exit();
    let _ = std::fs::remove_dir(&inner);
    let done = tracer.finish(LONG);
    note_warnings(&done.stderr);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let report = read_report(&json_path);
    let count = |port: u16| -> u64 {
        let peer = format!("127.0.0.1:{port}");
        rows(&report, "connect_peers", |r| r["peer"] == peer.as_str())
            .iter()
            .map(|r| r["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(count(inside.port), 4, "connects from inside the cgroup");
    assert_eq!(count(outside.port), 0, "connects from outside it");
    "4 of 4 connects from a cgroup below the scope, 0 of 5 from outside".to_string()
}

/// `--netns`: a process in the namespace is traced, one in another is not
/// (the namespace is found from the task at offsets from BTF).
fn netns_scope() -> String {
    let open = OpenListener::start();
    let json_path = scratch("k-netns");
    let ours = format!("/proc/{}/ns/net", std::process::id());
    // Started before the tracer: a child forked while we are traced would
    // be followed, whatever namespace it then moves to.
    let mut elsewhere = {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(fixture_bin());
        // SAFETY: unshare(2) in the child before exec; no allocation.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
        Fixture::start_command(cmd)
    };
    let mut tracer = Tracer::start(&[
        "report",
        "--netns",
        &ours,
        "--duration",
        "10s",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    tracer.stderr.wait_for("tracer: tracing", LONG);
    let mut member = Fixture::start();
    member.run(&format!("connect-ok {} 4", open.port), LONG);
    // Its loopback is down: the connects fail, and are not ours to count.
    elsewhere.run(&format!("connect-refused {} 5", open.port), LONG);
    let (member_pid, elsewhere_pid) = (member.pid, elsewhere.pid);
    member.exit();
    elsewhere.exit();
    let done = tracer.finish(LONG);
    note_warnings(&done.stderr);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let report = read_report(&json_path);
    let peer = format!("127.0.0.1:{}", open.port);
    let counted: u64 = rows(&report, "connect_peers", |r| r["peer"] == peer.as_str())
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 4, "connects from the namespace only");
    assert_eq!(
        rows(&report, "processes", |p| p["pid"] == member_pid).len(),
        1
    );
    assert!(rows(&report, "processes", |p| p["pid"] == elsewhere_pid).is_empty());
    "4 of 4 connects from the namespace, 0 of 5 from another".to_string()
}

/// Nothing of ours stays loaded once the tracer is interrupted, or killed.
fn nothing_left_loaded() -> String {
    for (signal, name) in [(libc::SIGINT, "Ctrl-C"), (libc::SIGKILL, "SIGKILL")] {
        let mut fixture = Fixture::start();
        let pid = fixture.pid.to_string();
        let tracer = Tracer::attached(&["report", "--pid", &pid]);
        fixture.run("getppid 100", LONG);
        assert!(!our_programs_loaded().is_empty(), "loaded while tracing");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(tracer.child.id() as i32, signal) };
        let done = tracer.finish(LONG);
        note_warnings(&done.stderr);
        if signal == libc::SIGINT {
            assert_eq!(done.code, Some(0), "{name}: {}", done.stderr);
        }
        assert_nothing_left_loaded();
        fixture.exit();
    }
    "nothing loaded after Ctrl-C, nor after SIGKILL".to_string()
}
