//! Call sites: the line of code behind each lookup, connect and SSL read,
//! in Python (every CPython on this machine) and in native code built
//! without frame pointers.

use std::{collections::HashMap, process::Command, time::Duration};

use tracer_tests::*;

const LONG: Duration = Duration::from_secs(60);

/// The CPython builds the tracer supports here (see `pyenv versions`).
const PYTHONS: &[&str] = &[
    "/root/.pyenv/versions/3.10.13/bin/python3.10",
    "/root/.pyenv/versions/3.11.7/bin/python3.11",
    "/root/.pyenv/versions/3.12.1/bin/python3.12",
    "/root/.pyenv/versions/3.13.0/bin/python3.13",
    // Debian's: libpython linked into a non-PIE, stripped executable.
    "/usr/bin/python3.11",
];

/// Line numbers of the `# CALLSITE name` markers in callsites.py.
fn markers() -> HashMap<String, u64> {
    let src = std::fs::read_to_string(fixture_file("callsites.py")).unwrap();
    src.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let name = l.split("# CALLSITE ").nth(1)?;
            Some((name.trim().to_string(), i as u64 + 1))
        })
        .collect()
}

/// The call-site rows of one kind and target.
fn sites<'a>(report: &'a Value, kind: &str, target_has: &str) -> Vec<&'a Value> {
    rows(report, "call_sites", |c| {
        c["kind"] == kind && c["target"].as_str().unwrap().contains(target_has)
    })
}

/// The Python frame of `function` in callsites.py, if the call site has one.
fn frame_line(site: &Value, function: &str) -> Option<u64> {
    site["frames"].as_array()?.iter().find_map(|f| {
        (f["python"] == true
            && f["function"] == function
            && f["file"].as_str()?.ends_with("callsites.py"))
        .then(|| f["line"].as_u64())?
    })
}

/// Names of the native frames, outermost first.
fn native_functions(site: &Value) -> Vec<String> {
    site["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["python"] == false)
        .map(|f| f["function"].as_str().unwrap_or("").to_string())
        .collect()
}

/// callsites.py under the Python `python`.
fn callsites_py(python: impl AsRef<std::ffi::OsStr>) -> Fixture {
    let mut cmd = Command::new(python);
    cmd.arg(fixture_file("callsites.py"));
    Fixture::start_command(cmd)
}

/// Gives the tracer a moment to read the frames of the last calls before
/// the process exits (a live service never exits under it).
fn settle() {
    std::thread::sleep(Duration::from_millis(2500));
}

#[test]
fn python_call_sites_name_the_functions_and_lines_in_every_cpython() {
    let lines = markers();
    for python in PYTHONS {
        let mut server = TlsServer::start(20, 100, 1);
        let client = callsites_py(python);
        let traced = trace_until_exit("callsites-py", client, |c| {
            c.run("lookup localhost", LONG);
            c.run("thread-lookup 127.0.0.1", LONG);
            c.run("connect 1", LONG);
            let tls = c.run(&format!("tls {}", server.port), LONG);
            assert!(tls["bytes"].as_u64().unwrap() > 2000, "{tls}");
            settle();
        });
        let report = &traced.report;
        // By the kernel's unwind tables, not from a stack copy.
        assert_unwound_in_kernel(report);
        let ctx = format!("{python}: {:#}", report["call_sites"]);
        // (A module's top-level code object is freed once it has run: a
        // stack taken during an import can name one that is gone by the time
        // it is read. Those show as gone, and are not checked here.)
        server.served();

        // The lookup in the main thread: lookup_host at its line, called
        // from main().
        let main_lookups: Vec<_> = sites(report, "dns", "localhost")
            .into_iter()
            .filter(|s| frame_line(s, "main").is_some())
            .collect();
        assert_eq!(main_lookups.len(), 1, "{ctx}");
        assert_eq!(
            frame_line(main_lookups[0], "lookup_host"),
            Some(lines["lookup"]),
            "{ctx}"
        );
        // ...down to libc's getaddrinfo, as a native frame (not only
        // CPython's socket_getaddrinfo above it).
        assert!(
            main_lookups[0]["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["python"] == false
                    && f["function"]
                        .as_str()
                        .is_some_and(|n| n.contains("getaddrinfo"))
                    && f["module"].as_str().is_some_and(|m| m.contains("libc"))),
            "{ctx}"
        );

        // The lookup in a worker thread: found through that thread's state.
        let thread_lookups = sites(report, "dns", "127.0.0.1");
        let worker = thread_lookups
            .iter()
            .find(|s| frame_line(s, "worker_lookup").is_some())
            .unwrap_or_else(|| panic!("no worker-thread lookup: {ctx}"));
        assert_eq!(
            frame_line(worker, "worker_lookup"),
            Some(lines["worker"]),
            "{ctx}"
        );
        assert_eq!(
            frame_line(worker, "lookup_host"),
            Some(lines["lookup"]),
            "{ctx}"
        );

        // The refused connect.
        let connects = sites(report, "connect", ":1");
        assert_eq!(connects.len(), 1, "{ctx}");
        assert_eq!(
            frame_line(connects[0], "open_connection"),
            Some(lines["connect"]),
            "{ctx}"
        );

        // The SSL reads, from the worker thread's read loop.
        let reads = sites(report, "tls read", &server.port.to_string());
        assert!(
            reads
                .iter()
                .any(|s| frame_line(s, "read_all") == Some(lines["read"])),
            "{ctx}"
        );
    }
}

/// Traces one of the `deep-*` fixtures resolving `localhost`.
fn trace_deep(bin: &str) -> Value {
    let client = Fixture::start_command(Command::new(bin));
    let traced = trace_until_exit("callsites-deep", client, |c| {
        c.run("lookup localhost", LONG);
        settle();
    });
    let lookups = sites(&traced.report, "dns", "localhost");
    assert_eq!(lookups.len(), 1, "{:#}", traced.report["call_sites"]);
    assert_unwound_in_kernel(&traced.report);
    lookups[0].clone()
}

#[test]
fn native_call_chains_are_recovered_without_frame_pointers() {
    for bin in [env!("DEEP_PIE_BIN"), env!("DEEP_NOPIE_BIN")] {
        let site = trace_deep(bin);
        let names = native_functions(&site);
        // Five frames deep through the program and libdeep.so, then libc.
        let chain = [
            "main",
            "level_one",
            "level_two",
            "deep_resolve",
            "deep_inner",
        ];
        let found: Vec<usize> = chain
            .iter()
            .map(|f| {
                names
                    .iter()
                    .position(|n| n == f)
                    .unwrap_or_else(|| panic!("{bin}: no {f} in {names:?}"))
            })
            .collect();
        assert!(
            found.windows(2).all(|w| w[0] + 1 == w[1]),
            "{bin}: {names:?}"
        );
        assert!(
            names.last().unwrap().contains("getaddrinfo"),
            "{bin}: {names:?}"
        );
        // The frames carry the source lines of debug info.
        let level_two = site["frames"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == "level_two")
            .unwrap();
        assert_eq!(level_two["file"], "deep.c", "{level_two}");
        assert!(level_two["line"].as_u64().is_some());
    }
}

#[test]
fn a_stripped_binary_gives_module_and_offset_frames() {
    let site = trace_deep(env!("DEEP_STRIPPED_BIN"));
    let frames = site["frames"].as_array().unwrap();
    let in_exe: Vec<&Value> = frames
        .iter()
        .filter(|f| {
            f["module"]
                .as_str()
                .is_some_and(|m| m.ends_with("/deep-stripped"))
        })
        .collect();
    // main, level_one, level_two and _start, without names but located.
    assert!(in_exe.len() >= 3, "{frames:#?}");
    assert!(
        in_exe
            .iter()
            .all(|f| f["function"].is_null() && f["offset"].is_u64())
    );
    // The library kept its symbols, and the chain goes on through it.
    let names = native_functions(&site);
    assert!(names.iter().any(|n| n == "deep_resolve"), "{names:?}");
    assert!(names.iter().any(|n| n == "deep_inner"), "{names:?}");
    let label = site["call_site"].as_str().unwrap();
    assert!(label.contains("deep-stripped+0x"), "{label}");
}

#[test]
fn an_unsupported_python_gets_native_stacks_and_one_warning() {
    // Python 3.9: a CPython without a frame layout in the tracer.
    let client = callsites_py("/root/.pyenv/versions/3.9.18/bin/python3.9");
    let traced = trace_until_exit("callsites-py39", client, |c| {
        c.run("lookup localhost", LONG);
        settle();
    });
    let warnings = traced.warnings();
    assert_eq!(warnings.len(), 1, "{}", traced.stderr);
    assert!(warnings[0].contains("Python 3.9"), "{}", warnings[0]);
    let lookups = sites(&traced.report, "dns", "localhost");
    let site = lookups.first().expect("the lookup has a call site");
    assert!(
        site["frames"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["python"] == false)
    );
    assert!(
        native_functions(site)
            .iter()
            .any(|f| f.contains("getaddrinfo"))
    );
}

#[test]
fn a_python_program_that_execs_itself_is_named_from_its_new_frames() {
    // The same interpreter and script, run again by execv in the same
    // process: the same executable, its libpython mapped at a new address.
    // What the tracer read of the old program's interpreter must not be
    // used for the new one's frames.
    let lines = markers();
    let client = callsites_py(python());
    let pid = client.pid;
    let traced = trace_until_exit("callsites-exec", client, |c| {
        c.run("lookup localhost", LONG);
        // Its code objects are read from the live process: before it
        // replaces them.
        settle();
        c.send("exec");
        let ready = json(&c.out.wait_for("ready", LONG));
        assert_eq!(ready["ready"], pid, "exec keeps the PID");
        // The tracer probes the new program when it maps its libraries;
        // nothing tells this test when that is done. Lookups of another
        // host for 5 s give it the time, then five of a third are checked.
        for _ in 0..50 {
            c.run("lookup 127.0.0.1", LONG);
            std::thread::sleep(Duration::from_millis(100));
        }
        for _ in 0..5 {
            c.run("lookup 127.0.0.2", LONG);
        }
        settle();
    });
    let report = &traced.report;
    let ctx = format!("{:#}", report["call_sites"]);
    let before = sites(report, "dns", "localhost");
    assert_eq!(before.len(), 1, "{ctx}");
    assert_eq!(
        frame_line(before[0], "lookup_host"),
        Some(lines["lookup"]),
        "before the exec: {ctx}"
    );
    let after = sites(report, "dns", "127.0.0.2");
    assert_eq!(after.len(), 1, "one call site after the exec: {ctx}");
    assert_eq!(after[0]["count"], 5, "{ctx}");
    assert_eq!(
        frame_line(after[0], "lookup_host"),
        Some(lines["lookup"]),
        "after the exec, named from the new program's frames: {ctx}"
    );
    assert!(frame_line(after[0], "main").is_some(), "{ctx}");
}

#[test]
fn a_process_whose_tables_do_not_fit_has_every_stack_copied() {
    // More executable mappings than the kernel's table holds for one
    // process (128): 140 copies of a small library, each its own file.
    // Its tables are never written, so every stack is copied and unwound
    // here, past the share of copies a process sends while its tables
    // are being made.
    let dir = scratch("callsites-libs");
    std::fs::create_dir_all(&dir).unwrap();
    let lib = std::path::Path::new(env!("DEEP_PIE_BIN")).with_file_name("libdeep.so");
    for i in 0..140 {
        std::fs::copy(&lib, dir.join(format!("libdeep{i:03}.so"))).unwrap();
    }
    let lines = markers();
    let client = callsites_py(python());
    let calls = 100;
    let traced = trace_until_exit("callsites-many-libs", client, |c| {
        let loaded = c.run(&format!("load {}", dir.display()), LONG);
        assert_eq!(loaded["loaded"], 140, "{loaded}");
        // Probed when it maps them; nothing tells this test when.
        settle();
        for _ in 0..calls {
            c.run("connect 1", LONG);
        }
        settle();
    });
    let _ = std::fs::remove_dir_all(&dir);
    let a = &traced.report["attribution"];
    assert!(
        a["unwound_here_tables_full"].as_u64().unwrap() >= calls,
        "every connect's stack copied: {a:#}"
    );
    assert_eq!(a["leaf_only_no_tables_yet"], 0, "{a:#}");
    let connects: Vec<_> = sites(&traced.report, "connect", "127.0.0.1:1")
        .into_iter()
        .filter(|s| frame_line(s, "open_connection") == Some(lines["connect"]))
        .collect();
    assert_eq!(connects.len(), 1, "{:#}", traced.report["call_sites"]);
    assert_eq!(connects[0]["count"], calls, "{:#}", connects[0]);
}
