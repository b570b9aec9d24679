//! `tracer report` against a real process making real syscalls and
//! connects, compared with what that process measured itself.

use std::time::Duration;

use tracer_tests::*;

const LONG: Duration = Duration::from_secs(60);
const UNIX_PATH: &str = "/nonexistent/tracer-test/a-unix-socket-path-longer-than-28-bytes.sock";

fn micros(v: &Value) -> Vec<f64> {
    v["micros"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn ns(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Traces `fixture` until it exits; the report, with its text checked too.
fn trace(name: &str, fixture: Fixture, drive: impl FnOnce(&mut Fixture)) -> Value {
    let traced = trace_until_exit(name, fixture, drive);
    assert!(
        traced.stdout.contains("Connects by peer"),
        "{}",
        traced.stdout
    );
    traced.report
}

fn peer(report: &Value, port: u16) -> &Value {
    let want = format!("127.0.0.1:{port}");
    let found = rows(report, "connect_peers", |r| r["peer"] == want.as_str());
    assert_eq!(
        found.len(),
        1,
        "one row for {want}: {:#}",
        report["connect_peers"]
    );
    found[0]
}

fn syscall_count(report: &Value, pid: u32, name: &str) -> u64 {
    rows(report, "syscalls", |r| {
        r["pid"] == pid && r["syscall"] == name
    })
    .iter()
    .map(|r| r["count"].as_u64().unwrap())
    .sum()
}

#[test]
fn connects_are_counted_exactly_with_errno_and_real_handshake_time() {
    let open = OpenListener::start();
    let open6 = OpenListener::start_v6();
    let closed = closed_port();
    let fixture = Fixture::start();
    let pid = fixture.pid;
    let mut slow_ports = Vec::new();
    let mut slow_truth = Vec::new();
    let report = trace("connects", fixture, |f| {
        let ok = f.run(&format!("connect-ok {} 20", open.port), LONG);
        assert!(ok["errnos"].as_array().unwrap().iter().all(|e| e == 0));
        let refused = f.run(&format!("connect-refused {closed} 10"), LONG);
        assert!(
            refused["errnos"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e == libc::ECONNREFUSED)
        );
        let v6 = f.run(&format!("connect-ok6 {} 2", open6.port), LONG);
        assert_eq!(v6["errnos"], serde_json::json!([0, 0]));
        let unix = f.run(&format!("connect-unix {UNIX_PATH}"), LONG);
        assert_eq!(unix["errno"], libc::ENOENT);
        for _ in 0..3 {
            let mut slow = SlowListener::start();
            f.send(&format!("connect-slow {}", slow.port));
            let started = json(&f.out.wait_for("started", LONG));
            assert_eq!(started["errno"], libc::EINPROGRESS, "non-blocking");
            slow.release_after(Duration::from_millis(500));
            let done = json(&f.out.wait_for("\"cmd\":\"connect-slow\"", LONG));
            assert_eq!(done["so_error"], 0);
            slow_ports.push(slow.port);
            slow_truth.push(done["micros"].as_f64().unwrap() * 1e3);
        }
    });

    let ok = peer(&report, open.port);
    assert_eq!(ok["count"], 20);
    assert_eq!(ok["outcomes"]["ok"], 20);
    assert_eq!(ok["proto"], "tcp");
    let refused = peer(&report, closed);
    assert_eq!(refused["count"], 10);
    assert_eq!(refused["outcomes"]["ECONNREFUSED"], 10);

    for (port, truth_ns) in slow_ports.iter().zip(&slow_truth) {
        let p = peer(&report, *port);
        assert_eq!(p["count"], 1);
        assert_eq!(p["outcomes"]["ok"], 1);
        let measured = ns(p, "max_ns");
        // The handshake took about a second (one SYN retransmit)...
        assert!(measured > 0.9e9, "handshake {measured} ns");
        // ...and the tracer agrees with the client's own clock within 10%.
        let err = (measured - truth_ns).abs() / truth_ns;
        assert!(err < 0.10, "tracer {measured} ns vs client {truth_ns} ns");
    }
    // The three slowest connects are the non-blocking ones, with handshake
    // time apart from the (instant) syscall.
    let slowest = report["slowest_connects"].as_array().unwrap();
    for r in &slowest[..3] {
        assert_eq!(r["nonblocking"], true, "{r}");
        assert_eq!(r["outcome"], "ok");
        assert!(
            ns(r, "syscall_ns") < 50e6,
            "connect() itself returns at once: {r}"
        );
        assert!(ns(r, "handshake_ns") > 0.9e9, "{r}");
    }
    // A unix path longer than a sockaddr_in6 is read whole.
    let unix = rows(&report, "connect_peers", |r| {
        r["peer"] == format!("unix:{UNIX_PATH}").as_str()
    });
    assert_eq!(unix.len(), 1, "{:#}", report["connect_peers"]);
    assert_eq!(unix[0]["outcomes"]["ENOENT"], 1);
    let v6 = rows(&report, "connect_peers", |r| {
        r["peer"] == format!("[::1]:{}", open6.port).as_str()
    });
    assert_eq!(v6.len(), 1, "{:#}", report["connect_peers"]);
    assert_eq!(
        (&v6[0]["count"], &v6[0]["proto"]),
        (&2.into(), &"tcp".into())
    );
    assert_eq!(report["connects_total"], 36);
    assert_eq!(syscall_count(&report, pid, "connect"), 36);
    // Blocking connect latency agrees with the client's own timing: the
    // syscall can't take longer than the client saw around it.
    assert!(ns(ok, "max_ns") < 50e6);
}

#[test]
fn sleep_histogram_matches_the_sleeps_taken() {
    let fixture = Fixture::start();
    let pid = fixture.pid;
    let mut truth = Vec::new();
    let report = trace("sleeps", fixture, |f| {
        truth.extend(micros(&f.run("sleep 10 40", LONG)));
        truth.extend(micros(&f.run("sleep 50 4", LONG)));
    });
    let sleeps = rows(&report, "syscalls", |r| {
        r["pid"] == pid && (r["syscall"] == "clock_nanosleep" || r["syscall"] == "nanosleep")
    });
    assert_eq!(sleeps.len(), 1, "{:#}", report["syscalls"]);
    let s = sleeps[0];
    assert_eq!(s["count"], 44);
    assert_eq!(s["waiting"], true, "sleeps are waits");
    let mut truth_ns: Vec<f64> = truth.iter().map(|us| us * 1e3).collect();
    truth_ns.sort_by(f64::total_cmp);
    let pct = |q: f64| truth_ns[((q * truth_ns.len() as f64).ceil() as usize).clamp(1, 44) - 1];
    // The histogram has 8 sub-buckets per power of two: 12.5% resolution.
    for (key, q) in [("p50_ns", 0.5), ("p99_ns", 0.99)] {
        let (got, want) = (ns(s, key), pct(q));
        assert!(
            (got - want).abs() / want < 0.125,
            "{key}: tracer {got} vs client {want}"
        );
    }
    // The sleep syscall sits inside the client's own timing of it.
    let max = ns(s, "max_ns");
    assert!(
        max <= truth_ns[43] && max > 50e6,
        "max {max} vs client {}",
        truth_ns[43]
    );
    let total = ns(s, "total_ns");
    let truth_total: f64 = truth_ns.iter().sum();
    assert!(
        total <= truth_total && total > 0.98 * truth_total,
        "total {total} vs {truth_total}"
    );
    // Sleeping is waiting: it is not counted as work.
    assert!(ns(&report, "waiting_ns") >= total);
}

#[test]
fn attaches_to_all_threads_and_follows_forked_children() {
    let open = OpenListener::start();
    let fixture = Fixture::start();
    let pid = fixture.pid;
    let mut tids = Vec::new();
    let mut child = 0;
    let report = trace("threads", fixture, |f| {
        let t = f.run(&format!("threads 4 {}", open.port), LONG);
        tids = t["tids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let c = f.run(&format!("fork-connect {} 3", open.port), LONG);
        child = c["child"].as_u64().unwrap();
    });
    let connects = report["slowest_connects"].as_array().unwrap();
    for tid in &tids {
        let by_tid: Vec<_> = connects.iter().filter(|c| c["tid"] == *tid).collect();
        assert_eq!(by_tid.len(), 1, "thread {tid} made one connect");
        assert_eq!(by_tid[0]["pid"], pid);
    }
    let from_child = connects.iter().filter(|c| c["pid"] == child).count();
    assert_eq!(from_child, 3, "the forked child's connects are traced");
    let procs = rows(&report, "processes", |p| p["pid"] == child);
    assert_eq!(procs.len(), 1);
    assert_eq!(procs[0]["parent"], pid);
    assert_eq!(procs[0]["exited"], true);
    let main = &rows(&report, "processes", |p| p["pid"] == pid)[0];
    assert!(main["threads"].as_u64().unwrap() >= 5, "{main}");
    assert_eq!(report["connects_total"], 7);
}

#[test]
fn a_command_is_traced_from_its_first_syscall() {
    require_root();
    let open = OpenListener::start();
    let json_path = scratch("command");
    let fixture = fixture_bin();
    let mut tracer = Tracer::start_with_stdin(
        &[
            "report",
            "--json",
            json_path.to_str().unwrap(),
            "--",
            fixture.to_str().unwrap(),
        ],
        std::process::Stdio::piped(),
    );
    {
        use std::io::Write as _;
        let stdin = tracer.child.stdin.as_mut().unwrap();
        writeln!(stdin, "connect-ok {} 2\nexit", open.port).unwrap();
    }
    tracer.child.stdin.take();
    let done = tracer.finish(LONG);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let report = read_report(&json_path);
    assert_eq!(report["ended"], "target_exited");
    let procs = report["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{procs:#?}");
    let pid = procs[0]["pid"].as_u64().unwrap() as u32;
    // The exec itself is the first syscall the command makes.
    assert_eq!(syscall_count(&report, pid, "execve"), 1);
    assert_eq!(syscall_count(&report, pid, "connect"), 2);
    assert_eq!(procs[0]["comm"], "netfixture");
}

#[test]
fn target_exiting_mid_trace_still_yields_the_report() {
    require_root();
    let open = OpenListener::start();
    let mut fixture = Fixture::start();
    let json_path = scratch("exit-mid");
    let pid = fixture.pid.to_string();
    let tracer = Tracer::attached(&[
        "report",
        "--pid",
        &pid,
        "--duration",
        "10m",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    fixture.run(&format!("connect-ok {} 5", open.port), LONG);
    let t0 = std::time::Instant::now();
    fixture.kill();
    let done = tracer.finish(LONG);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "noticed the exit promptly"
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(done.stderr.contains("exited"), "{}", done.stderr);
    let report = read_report(&json_path);
    assert_eq!(report["ended"], "target_exited");
    assert_eq!(report["connects_total"], 5);
    assert_nothing_left_loaded();
}

/// A backend that answers each connection after `delay`, on a thread.
#[test]
fn a_servers_waits_for_connections_are_idle_and_its_slow_reads_are_named() {
    require_root();
    let backend = slow_backend(Duration::from_millis(60));
    let mut server = std::process::Command::new(python())
        .arg(fixture_file("slow_server.py"))
        .arg(backend.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = Lines::new_from(server.stdout.take().unwrap());
    let ready = json(&out.wait_for("ready", LONG));
    let (pid, port) = (
        ready["ready"].as_u64().unwrap().to_string(),
        ready["port"].as_u64().unwrap() as u16,
    );
    let json_path = scratch("idle");
    let tracer = Tracer::attached(&[
        "report",
        "--pid",
        &pid,
        "--json",
        json_path.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(700));
    for _ in 0..8 {
        http_get_root(port);
        std::thread::sleep(Duration::from_millis(150));
    }
    let handled: f64 = (0..8)
        .map(|_| {
            json(&out.wait_for("handled", LONG))["micros"]
                .as_f64()
                .unwrap()
                * 1e3
        })
        .sum();
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
    let done = tracer.finish(LONG);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let report = read_report(&json_path);
    let (wall, idle, busy) = (
        ns(&report, "wall_ns"),
        ns(&report, "idle_ns"),
        ns(&report, "busy_ns"),
    );
    // The listener waited most of the time; busy is the requests' time.
    assert_eq!(report["requests"], 8, "requests served");
    assert!(idle > 0.5 * wall, "idle {idle} of wall {wall}");
    assert!(
        busy >= handled && busy < handled + 0.35e9,
        "busy {busy} ns vs the handlers' own {handled} ns"
    );
    assert_eq!(report["share_of"], "busy");
    // Each request's wait for the backend is a slow read of that peer,
    // from the handler's line.
    let want = format!("127.0.0.1:{backend}");
    let io = rows(&report, "slow_io", |r| r["target"] == want.as_str());
    assert_eq!(io.len(), 1, "{:#}", report["slow_io"]);
    assert_eq!(io[0]["reads"]["count"], 8);
    let site = rows(&report, "call_sites", |c| {
        c["kind"] == "io" && c["target"] == want.as_str()
    });
    assert_eq!(site.len(), 1, "{:#}", report["call_sites"]);
    assert!(
        site[0]["summary"]
            .as_str()
            .unwrap()
            .contains("slow_server.py"),
        "{}",
        site[0]["summary"]
    );
    let share = site[0]["share"].as_f64().unwrap();
    assert!(
        share > 0.5,
        "the backend wait is most of the busy time: {share}"
    );
}

/// A connection the server accepted before the tracer attached (a proxy's
/// kept-alive one, say): its requests from then on are counted and timed.
#[test]
fn requests_on_a_connection_accepted_before_attach_are_counted() {
    use std::io::{BufRead as _, BufReader, Write as _};
    require_root();
    // Answers each line on one accepted connection after 30 ms.
    let server = "import json, os, socket, time\n\
        l = socket.create_server(('127.0.0.1', 0))\n\
        print(json.dumps({'ready': os.getpid(), 'port': l.getsockname()[1]}), flush=True)\n\
        c, _ = l.accept()\n\
        f = c.makefile('rb')\n\
        for line in f:\n    time.sleep(0.03)\n    c.sendall(b'ok\\n')\n";
    let mut cmd = std::process::Command::new(python());
    cmd.args(["-c", server]);
    let fixture = Fixture::start_command(cmd);
    let ready = fixture
        .out
        .seen
        .iter()
        .find(|l| l.contains("ready"))
        .unwrap();
    let port = json(ready)["port"].as_u64().unwrap() as u16;
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut ask = |w: &mut std::net::TcpStream| {
        w.write_all(b"q\n").unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        assert_eq!(answer, "ok\n");
    };
    let mut writer = stream.try_clone().unwrap();
    ask(&mut writer);
    let json_path = scratch("accepted-before");
    let pid = fixture.pid.to_string();
    let tracer = Tracer::attached(&[
        "report",
        "--pid",
        &pid,
        "--json",
        json_path.to_str().unwrap(),
    ]);
    for _ in 0..3 {
        ask(&mut writer);
    }
    // The server's loop ends when the connection closes: every handle to it.
    drop(reader);
    drop(writer);
    drop(stream);
    fixture.exit();
    let done = tracer.finish(LONG);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let report = read_report(&json_path);
    assert_eq!(report["requests"], 3, "the 3 requests after attach");
    let busy = ns(&report, "busy_ns");
    assert!(
        (0.09e9..0.3e9).contains(&busy),
        "3 answers of 30 ms each: busy {busy} ns"
    );
}
