//! The report's other outputs against a live process: the event stream
//! (`--events`), folded stacks (`--folded`) and the SVG flame graph
//! (`--flamegraph`), checked against the connects the fixture made.

use std::time::Duration;

use tracer_tests::*;

const LONG: Duration = Duration::from_secs(60);
const CONNECTS: usize = 7;

#[test]
fn event_stream_and_flame_graph_name_each_call_and_its_code() {
    require_root();
    let closed = closed_port();
    let target = format!("127.0.0.1:{closed}");
    let mut fixture = Fixture::start();
    let pid = fixture.pid.to_string();
    let events = scratch("events.jsonl");
    let folded = scratch("stacks.folded");
    let svg = scratch("flamegraph.svg");
    // -vv: when a call site comes out wrong, the unwinder's debug lines
    // say where and why it stopped (see `unwind_notes`).
    let tracer = Tracer::attached(&[
        "-vv",
        "report",
        "--pid",
        &pid,
        "--events",
        events.to_str().unwrap(),
        "--min-latency",
        "1ns",
        "--folded",
        folded.to_str().unwrap(),
        "--flamegraph",
        svg.to_str().unwrap(),
    ]);
    let made = fixture.run(&format!("connect-refused {closed} {CONNECTS}"), LONG);
    assert_eq!(made["errnos"].as_array().unwrap().len(), CONNECTS);
    fixture.exit();
    let done = tracer.finish(LONG);
    assert_eq!(done.code, Some(0), "{}", done.stderr);

    // One JSON line per call, as it happened.
    let text = std::fs::read_to_string(&events).expect("event stream written");
    let connects: Vec<Value> = text
        .lines()
        .map(json)
        .filter(|e| e["kind"] == "connect")
        .collect();
    assert_eq!(connects.len(), CONNECTS, "{text}");
    let sites: Vec<&str> = connects
        .iter()
        .map(|e| e["call_site"].as_str().unwrap_or("(none)"))
        .collect();
    for e in &connects {
        assert_eq!(e["target"], target.as_str(), "{e}");
        assert_eq!(e["result"], "ECONNREFUSED", "{e}");
        assert_eq!(e["pid"], fixture_pid(&pid), "{e}");
        assert!(e["latency_ns"].as_u64().unwrap() > 0, "{e}");
        assert!(
            e["call_site"]
                .as_str()
                .unwrap_or("")
                .contains("blocking_connect_to"),
            "{e}\nevery connect's call site: {sites:#?}\nthe unwinder said: {}",
            unwind_notes(&done.stderr)
        );
    }
    let starts: Vec<u64> = connects
        .iter()
        .map(|e| e["start_ns"].as_u64().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "in order: {starts:?}"
    );

    // Folded stacks: `frame;frame;leaf value`, the call as the leaf.
    let folded = std::fs::read_to_string(&folded).expect("folded stacks written");
    let leaf = format!("[connect {target}]");
    let line = folded
        .lines()
        .find(|l| l.contains(&leaf))
        .unwrap_or_else(|| panic!("no {leaf} in:\n{folded}"));
    let (stack, value) = line.rsplit_once(' ').unwrap();
    assert!(value.parse::<u64>().is_ok(), "{line}");
    let frames: Vec<&str> = stack.split(';').collect();
    assert_eq!(*frames.last().unwrap(), leaf);
    assert!(
        frames.iter().any(|f| f.contains("blocking_connect_to")),
        "{line}"
    );

    // The SVG draws those frames.
    let svg = std::fs::read_to_string(&svg).expect("flame graph written");
    assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "an SVG");
    assert!(
        svg.contains("blocking_connect_to"),
        "frame names in the SVG"
    );
    assert!(
        svg.contains(&format!("connect {target}")),
        "the leaf in the SVG"
    );
}

/// The tracer's debug lines about unwinding and unwind data (with -vv).
fn unwind_notes(stderr: &str) -> String {
    let notes: Vec<&str> = stderr.lines().filter(|l| l.contains("unwind")).collect();
    if notes.is_empty() {
        "nothing".to_string()
    } else {
        notes.join("\n")
    }
}

fn fixture_pid(pid: &str) -> u64 {
    pid.parse().unwrap()
}
