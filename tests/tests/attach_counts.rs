//! Counts stay exact however the tracer attaches: `report`, `top` and
//! `serve`, each attached ten times to a process calling getaddrinfo,
//! SSL_read_ex or connect flat out. A call in flight while the probes
//! attach may be dropped, never the rest (an entry seen without its return
//! once left a thread's lookup open, and every later call counted as
//! nested inside it: `top` showed 1 lookup in 9 of 17 tries).
//!
//! Each attach: the loop runs, the tracer attaches mid-loop and the loop
//! goes on for a while (the part with calls in flight at attach); then the
//! loop stops and starts again for a second stretch, and the tracer's count
//! of that stretch must equal the loop's own count exactly. `serve` and
//! `top` are read before and after it, `report` by the start times of the
//! calls in its event stream.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use tracer_tests::{prometheus::metric_sum, prometheus::try_http_get, *};

const LONG: Duration = Duration::from_secs(60);
const ATTACHES: usize = 10;
/// How long the loop runs in each stretch.
const STRETCH: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Lookup,
    SslRead,
    Connect,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Lookup => "getaddrinfo",
            Mode::SslRead => "ssl_read",
            Mode::Connect => "connect",
        }
    }

    /// The event stream's kind for these calls.
    fn event_kind(self) -> &'static str {
        match self {
            Mode::Lookup => "dns",
            Mode::SslRead => "tls read",
            Mode::Connect => "connect",
        }
    }

    /// The metric's kind label.
    fn metric_kind(self) -> &'static str {
        match self {
            Mode::Lookup => "dns",
            Mode::SslRead => "tls_read",
            Mode::Connect => "connect",
        }
    }

    /// `top`'s row: its kind column, and the start of its target.
    fn top_row(self) -> (&'static str, &'static str) {
        match self {
            Mode::Lookup => ("dns", "localhost"),
            Mode::SslRead => ("tls read", "pid "),
            Mode::Connect => ("connect", "127.0.0.1:"),
        }
    }
}

/// The looping process (bench-loop), idle until told to spin.
fn fixture(mode: Mode) -> Fixture {
    let mut cmd = Command::new(env!("BENCH_LOOP_BIN"));
    cmd.arg(mode.arg());
    if mode == Mode::SslRead {
        let (cert, key) = self_signed_cert();
        cmd.arg(cert).arg(key);
    }
    Fixture::start_command(cmd)
}

/// Starts the loop; returns when its first call is about to begin (its
/// CLOCK_MONOTONIC time).
fn spin(f: &mut Fixture) -> u64 {
    f.send("spin");
    json(&f.out.wait_for("spinning", LONG))["t_ns"]
        .as_u64()
        .unwrap()
}

/// Stops the loop: (calls made, the time after the last one returned).
fn stop(f: &mut Fixture) -> (u64, u64) {
    f.send("stop");
    let done = json(&f.out.wait_for("spun", LONG));
    (
        done["spun"].as_u64().unwrap(),
        done["t_ns"].as_u64().unwrap(),
    )
}

/// The first stretch: the loop is running when the tracer attaches, and
/// runs on a while.
fn first_stretch(f: &mut Fixture, tracer: &mut Tracer) {
    spin(f);
    // Mid-loop.
    tracer.stderr.wait_for("tracer: tracing PID", LONG);
    std::thread::sleep(STRETCH);
    let (spun, _) = stop(f);
    assert!(spun > 100, "the loop ran: {spun} calls");
}

/// `serve`: the counter's rise over the second stretch.
fn serve_once(f: &mut Fixture, mode: Mode) -> (u64, u64) {
    let port = closed_port();
    let pid = f.pid.to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut tracer = Tracer::start(&["serve", "--pid", &pid, "--listen", &listen]);
    first_stretch(f, &mut tracer);
    let count = || -> u64 {
        let kind = format!("kind=\"{}\"", mode.metric_kind());
        let (_, body) = try_http_get(port, "/metrics").expect("scrape");
        metric_sum(&body, "tracer_call_duration_seconds_count", &[&kind]) as u64
    };
    let before = settled(count);
    spin(f);
    std::thread::sleep(STRETCH);
    let (spun, _) = stop(f);
    let after = settled(count);
    tracer.interrupt();
    assert_eq!(tracer.finish(LONG).code, Some(0));
    (after - before, spun)
}

/// A count read again until it stays the same for a moment (the tracer
/// collects on a timer).
fn settled(read: impl Fn() -> u64) -> u64 {
    let deadline = Instant::now() + LONG;
    let mut last = read();
    loop {
        // Longer than serve's collection tick (200 ms).
        std::thread::sleep(Duration::from_millis(450));
        let now = read();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// `top` (its screens printed one after another when not on a terminal):
/// the row's rise over the second stretch.
fn top_once(f: &mut Fixture, mode: Mode) -> (u64, u64) {
    let pid = f.pid.to_string();
    let mut tracer = Tracer::start(&["top", "--pid", &pid, "--interval", "100ms"]);
    first_stretch(f, &mut tracer);
    let (kind, target) = mode.top_row();
    let mut latest = 0u64;
    // Where the COUNT column ends (its numbers are right-aligned to it).
    let mut count_end = None;
    // The row's count in the screens printed from now until it stops
    // changing for six screens.
    let mut read_settled = |tracer: &mut Tracer| -> u64 {
        let mut unchanged_since = Instant::now();
        let deadline = Instant::now() + LONG;
        while unchanged_since.elapsed() < Duration::from_millis(600) && Instant::now() < deadline {
            let Some(line) = tracer.stdout.next(Duration::from_millis(300)) else {
                continue;
            };
            if line.contains(" KIND ") && line.contains(" COUNT ") {
                count_end = line.find(" COUNT ").map(|i| i + " COUNT".len());
                continue;
            }
            let Some(end) = count_end else {
                continue;
            };
            let row = line.trim_start();
            let is_ours = row
                .strip_prefix(kind)
                .is_some_and(|rest| rest.trim_start().starts_with(target));
            let count = line
                .get(..end)
                .and_then(|head| head.split_whitespace().last()?.parse::<u64>().ok());
            if let (true, Some(c)) = (is_ours, count)
                && c != latest
            {
                latest = c;
                unchanged_since = Instant::now();
            }
        }
        latest
    };
    let before = read_settled(&mut tracer);
    spin(f);
    std::thread::sleep(STRETCH);
    let (spun, _) = stop(f);
    let after = read_settled(&mut tracer);
    tracer.interrupt();
    assert_eq!(tracer.finish(LONG).code, Some(0));
    (after - before, spun)
}

/// `report` with every call in its event stream: the calls that began in
/// the second stretch. Without call sites: a 16 KiB stack with each of
/// 60,000 lookups a second, each written out as JSON, outruns the ring
/// buffer (the loss is counted and reported, and is not what this tests).
fn report_once(f: &mut Fixture, mode: Mode) -> (u64, u64) {
    let pid = f.pid.to_string();
    let events = scratch(&format!("attach-events-{}", mode.arg()));
    let mut tracer = Tracer::start(&[
        "report",
        "--pid",
        &pid,
        "--no-call-sites",
        "--events",
        events.to_str().unwrap(),
        "--min-latency",
        "1ns",
    ]);
    first_stretch(f, &mut tracer);
    let from = spin(f);
    std::thread::sleep(STRETCH);
    let (spun, to) = stop(f);
    tracer.interrupt();
    let done = tracer.finish(LONG);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(
        done.stdout.contains("Events lost: none"),
        "nothing lost: {}",
        done.stdout
    );
    let text = std::fs::read_to_string(&events).unwrap();
    let counted = text
        .lines()
        .map(json)
        .filter(|e| e["kind"] == mode.event_kind())
        .filter(|e| e["start_ns"].as_u64().is_some_and(|t| t >= from && t <= to))
        .count() as u64;
    let _ = std::fs::remove_file(&events);
    (counted, spun)
}

type Once = fn(&mut Fixture, Mode) -> (u64, u64);

fn attach_ten_times(mode: Mode, name: &str, once: Once) {
    require_root();
    let mut f = fixture(mode);
    for i in 0..ATTACHES {
        let (counted, spun) = once(&mut f, mode);
        assert_eq!(
            counted,
            spun,
            "{name} attach {} of {ATTACHES} to a {} loop: the tracer counted {counted} calls of \
             the second stretch, the loop made {spun}",
            i + 1,
            mode.arg()
        );
    }
    f.send("quit");
    assert_nothing_left_loaded();
}

#[test]
fn report_counts_every_lookup_however_it_attaches() {
    attach_ten_times(Mode::Lookup, "report", report_once);
}

#[test]
fn report_counts_every_ssl_read_however_it_attaches() {
    attach_ten_times(Mode::SslRead, "report", report_once);
}

#[test]
fn report_counts_every_connect_however_it_attaches() {
    attach_ten_times(Mode::Connect, "report", report_once);
}

#[test]
fn top_counts_every_lookup_however_it_attaches() {
    attach_ten_times(Mode::Lookup, "top", top_once);
}

#[test]
fn top_counts_every_ssl_read_however_it_attaches() {
    attach_ten_times(Mode::SslRead, "top", top_once);
}

#[test]
fn top_counts_every_connect_however_it_attaches() {
    attach_ten_times(Mode::Connect, "top", top_once);
}

#[test]
fn serve_counts_every_lookup_however_it_attaches() {
    attach_ten_times(Mode::Lookup, "serve", serve_once);
}

#[test]
fn serve_counts_every_ssl_read_however_it_attaches() {
    attach_ten_times(Mode::SslRead, "serve", serve_once);
}

#[test]
fn serve_counts_every_connect_however_it_attaches() {
    attach_ten_times(Mode::Connect, "serve", serve_once);
}
