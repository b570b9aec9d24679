//! What a user sees when things are not as they should be: bad PIDs, no
//! privileges, tracefs missing, Ctrl-C, a SIGKILLed tracer; and `top`.

use std::{path::Path, process::Command, time::Duration};

use tracer_tests::*;

const LONG: Duration = Duration::from_secs(60);

fn free_pid() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (300..max)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap()
}

#[test]
fn nonexistent_pid_is_a_one_line_error_with_exit_code_2() {
    require_root();
    let pid = free_pid().to_string();
    let done = run_tracer(&["report", "--pid", &pid, "--duration", "1s"], LONG);
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert_eq!(done.stderr.lines().count(), 1, "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!("no process with PID {pid}")),
        "{}",
        done.stderr
    );
    assert!(done.stdout.is_empty());
    assert_nothing_left_loaded();
}

#[test]
fn a_kernel_older_than_the_minimum_is_a_one_line_error_with_exit_code_1() {
    require_root();
    // The UNAME26 personality: uname(2) says 2.6.x, as an old kernel would.
    let out = Command::new("setarch")
        .args(["x86_64", "--uname-2.6"])
        .arg(tracer_bin())
        .args(["report", "--", "true"])
        .output()
        .expect("setarch (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("tracer: Linux 2.6.") && stderr.contains("older than 5.10"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert_nothing_left_loaded();
}

/// A process that has exited and was not reaped: (its PID, the parent to
/// reap it).
#[expect(
    clippy::zombie_processes,
    reason = "the parent is returned; the caller reaps it"
)]
fn zombie() -> (u32, std::process::Child) {
    let mut parent = Command::new("sh")
        .args(["-c", "sleep 0 & exec sleep 60"])
        .spawn()
        .unwrap();
    // sh exec'd sleep 60, which never waits for the `sleep 0` child.
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", parent.id()))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
            {
                return (pid, parent);
            }
        }
        if std::time::Instant::now() > deadline {
            let _ = parent.kill();
            let _ = parent.wait();
            panic!("no zombie");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_input_is_one_line_naming_the_problem_and_exit_code_2() {
    require_root();
    let me = std::process::id().to_string();
    let (zombie_pid, mut zombie_parent) = zombie();
    let zombie_pid = zombie_pid.to_string();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let nowhere = "/nonexistent-dir/out";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["report", "--pid", "abc"], "abc"),
        (vec!["report", "--pid", "0"], "PID 0"),
        (vec!["report", "--pid", "-5"], "-5"),
        (vec!["report", "--pid", "99999999999"], "99999999999"),
        (vec!["report", "--pid", &me, "--duration", "-5s"], "-5"),
        (vec!["report", "--pid", &me, "--duration", "0"], "zero"),
        (
            vec!["report", "--pid", &me, "--duration", "99999999h"],
            "longer than a year",
        ),
        (vec!["report", "--pid", &me, "--duration", "soon"], "soon"),
        (vec!["report", "--pid", &me, "--kind", "http"], "http"),
        (vec!["report", "--pid", &me, "--by", "color"], "color"),
        (
            vec!["report", "--pid", &me, "--min-latency", "fast"],
            "fast",
        ),
        (vec!["report", "--pid", &me, "--json", nowhere], nowhere),
        (
            vec!["report", "--pid", &me, "--flamegraph", nowhere],
            nowhere,
        ),
        (vec!["report", "--pid", &me, "--folded", nowhere], nowhere),
        (vec!["report", "--pid", &me, "--events", nowhere], nowhere),
        (vec!["report", "--pid", &me, "--baseline", nowhere], nowhere),
        (
            vec!["report", "--pid", &me, "--ring-size", "3MiB"],
            "power of two",
        ),
        (vec!["report", "--pid", &me, "--ring-size", "1TiB"], "1TiB"),
        (vec!["report"], "--pid"),
        (vec!["top", "--pid", &me, "--rows", "0"], "0"),
        (vec!["top", "--pid", &me, "--interval", "-1s"], "-1"),
        (vec!["top", "--pid", &me, "--sort", "name"], "name"),
        (
            vec!["serve", "--pid", &me, "--listen", "nonsense"],
            "nonsense",
        ),
        (vec!["serve", "--pid", &me, "--listen", &busy], &busy),
        (vec!["serve", "--pid", &me, "--max-targets", "0"], "0"),
        (
            vec!["report", "--netns", "/etc/hostname"],
            "not a network namespace",
        ),
        (vec!["report", "--netns", nowhere], nowhere),
        (
            vec!["report", "--cgroup", "/etc"],
            "not a cgroup v2 directory",
        ),
        (vec!["report", "--container", "xyz"], "xyz"),
        (vec!["report", "--pid", "2"], "kernel thread"),
        (vec!["report", "--pid", &zombie_pid], "zombie"),
        (vec!["frobnicate"], "frobnicate"),
    ];
    for (args, names) in &cases {
        let done = run_tracer(args, LONG);
        let what = format!("{args:?}: {}", done.stderr);
        assert_eq!(done.code, Some(2), "{what}");
        assert_eq!(done.stderr.lines().count(), 1, "one line: {what}");
        assert!(done.stderr.starts_with("tracer: "), "{what}");
        assert!(done.stderr.contains(names), "names {names}: {what}");
        assert!(!done.stderr.contains("panicked"), "{what}");
        assert!(done.stdout.is_empty(), "{what}");
    }
    assert!(!std::path::Path::new(nowhere).exists());
    assert_nothing_left_loaded();
    let _ = zombie_parent.kill();
    let _ = zombie_parent.wait();
}

#[test]
fn pid_1_is_traced_like_any_process() {
    // In a container, PID 1 is often the very program to trace.
    require_root();
    let done = run_tracer(&["report", "--pid", "1", "--duration", "300ms"], LONG);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(done.stdout.contains("PID 1 ("), "{}", done.stdout);
}

#[test]
fn help_is_the_manual() {
    let done = run_tracer(&["--help"], LONG);
    assert_eq!(done.code, Some(0));
    for word in ["top", "report", "Exit codes", "CAP_BPF"] {
        assert!(
            done.stdout.contains(word),
            "--help mentions {word}: {}",
            done.stdout
        );
    }
    let done = run_tracer(&["report", "--help"], LONG);
    for word in ["--pid", "--duration", "--json", "--rows"] {
        assert!(done.stdout.contains(word), "report --help mentions {word}");
    }
}

#[test]
fn without_privileges_it_says_what_is_needed() {
    require_root();
    let fixture = Fixture::start();
    let pid = fixture.pid.to_string();
    // Drop to nobody: no capabilities at all.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(tracer_bin())
        .args(["report", "--pid", &pid, "--duration", "1s"])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("root"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    fixture.exit();
}

#[test]
fn mounts_tracefs_when_it_is_missing() {
    require_root();
    // Unmount whatever is there (lazily: a previous tracer may still be
    // releasing it), so the tracer finds tracefs missing, as on a fresh machine.
    while Path::new("/sys/kernel/tracing/events").exists() {
        let st = Command::new("umount")
            .args(["-l", "/sys/kernel/tracing"])
            .status()
            .unwrap();
        assert!(st.success(), "umount tracefs");
    }
    let fixture = Fixture::start();
    let pid = fixture.pid.to_string();
    let done = run_tracer(&["report", "--pid", &pid, "--duration", "500ms"], LONG);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(Path::new("/sys/kernel/tracing/events/sock").is_dir());
    fixture.exit();
}

#[test]
fn ctrl_c_detaches_and_prints_the_final_report() {
    require_root();
    let open = OpenListener::start();
    let mut fixture = Fixture::start();
    let pid = fixture.pid.to_string();
    let tracer = Tracer::attached(&["report", "--pid", &pid]);
    fixture.run(&format!("connect-ok {} 3", open.port), LONG);
    tracer.interrupt();
    let done = tracer.finish(LONG);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(done.stdout.contains("(interrupted)"), "{}", done.stdout);
    assert!(
        done.stdout.contains(&format!("127.0.0.1:{}", open.port)),
        "{}",
        done.stdout
    );
    assert_nothing_left_loaded();
    // The target never noticed.
    let again = fixture.run(&format!("connect-ok {} 1", open.port), LONG);
    assert_eq!(again["errnos"][0], 0);
    fixture.exit();
}

#[test]
fn sigkilled_tracer_leaves_nothing_attached() {
    require_root();
    let mut fixture = Fixture::start();
    let pid = fixture.pid.to_string();
    let mut tracer = Tracer::attached(&["report", "--pid", &pid]);
    assert!(!our_programs_loaded().is_empty(), "loaded while tracing");
    tracer.child.kill().unwrap();
    let _ = tracer.child.wait();
    assert_nothing_left_loaded();
    let again = fixture.run("sleep 1 1", LONG);
    assert!(again["micros"][0].as_f64().unwrap() >= 1000.0);
    fixture.exit();
}

#[test]
fn top_appends_snapshots_when_piped() {
    require_root();
    let open = OpenListener::start();
    let mut fixture = Fixture::start();
    let pid = fixture.pid.to_string();
    let tracer = Tracer::attached(&[
        "top",
        "--pid",
        &pid,
        "--interval",
        "300ms",
        "--duration",
        "3s",
    ]);
    fixture.run(&format!("connect-ok {} 4", open.port), LONG);
    let done = tracer.finish(LONG);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let snapshots = done.stdout.matches("KIND").count();
    assert!(snapshots >= 3, "{snapshots} snapshots: {}", done.stdout);
    assert!(
        !done.stdout.contains("\x1b[2J"),
        "no screen clearing when piped"
    );
    let peer = format!("127.0.0.1:{}", open.port);
    let row = done
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains(&peer))
        .unwrap_or_else(|| panic!("a row for {peer}: {}", done.stdout));
    assert!(row.trim_start().starts_with("connect"), "{row}");
    let count: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(count[2], "4", "count column: {row}");
    fixture.exit();
}

#[test]
fn top_on_a_terminal_redraws_sorts_and_quits_on_q() {
    require_root();
    let open = OpenListener::start();
    let mut fixture = Fixture::start();
    let pid = fixture.pid.to_string();
    fixture.run(&format!("connect-ok {} 3", open.port), LONG);
    // A pseudo-terminal from script(1): stdin and stdout are a terminal.
    let command = format!(
        "{} top --pid {pid} --interval 200ms --sort count -n 5",
        tracer_bin().display()
    );
    let mut script = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script(1), from util-linux");
    let mut out = Lines::new_from(script.stdout.take().unwrap());
    out.wait_for("Slowest targets, by count", LONG);
    let t0 = std::time::Instant::now();
    {
        use std::io::Write as _;
        let stdin = script.stdin.as_mut().unwrap();
        stdin.write_all(b"q").unwrap();
        stdin.flush().unwrap();
    }
    let status = loop {
        if let Some(s) = script.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < LONG, "top did not quit on q");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let screen = out.rest(std::time::Duration::from_secs(2)).join("\n");
    assert!(screen.contains("\x1b[2J"), "redraws in place on a terminal");
    fixture.exit();
}
