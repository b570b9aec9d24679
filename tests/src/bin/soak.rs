//! The soak run (`cargo xtask soak`): the seed scenario under continuous
//! load with `tracer serve` attached for a long time (30 minutes unless
//! told). Every minute: the tracer's resident memory and its lost-event
//! counters. At the end: the tracer's counters against the requests the
//! driver made (each request makes two lookups of the identity host, two
//! handshakes with it, one MySQL connect). Prints a Markdown table and
//! writes target/soak/results.md; exits 1 when a check fails.
//!
//!   soak [--minutes N] [--dns-delay-ms MS]

use std::{
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use tracer_tests::{
    proc_status_kib,
    prometheus::{metric_sum, try_http_get},
    seed::{Paths, Seed},
};

type Result<T> = std::result::Result<T, String>;

fn scrape(port: u16) -> Result<String> {
    try_http_get(port, "/metrics")
        .map(|(_, body)| body)
        .map_err(|e| format!("scrape: {e}"))
}

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS").unwrap_or(0)
}

fn run(minutes: u64, dns_delay_ms: u32) -> Result<bool> {
    let paths = Paths::for_this_program("soak")?;
    let workdir = paths.workdir.clone();
    // No profiler: it would write a file per request for half an hour.
    let mut seed = Seed::start_unprofiled(&paths, dns_delay_ms)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut tracer = Command::new(&paths.tracer)
        .args(["serve", "--pid", &seed.app_pid.to_string(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting tracer: {e}"))?;
    let t0 = Instant::now();
    while scrape(port).is_err() {
        if t0.elapsed() > Duration::from_secs(30) {
            return Err("tracer serve did not come up".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "soak: app PID {}, tracer serve PID {} on 127.0.0.1:{port}, {minutes} min",
        seed.app_pid,
        tracer.id()
    );
    let start = Instant::now();
    let end = start + Duration::from_secs(minutes * 60);
    let mut requests = 0u64;
    let mut samples: Vec<(u64, u64, u64, f64)> = Vec::new(); // minute, requests, RSS KiB, lost
    let mut next_sample = start;
    while Instant::now() < end {
        if Instant::now() >= next_sample {
            let body = scrape(port)?;
            let minute = start.elapsed().as_secs() / 60;
            let sample = (
                minute,
                requests,
                rss_kib(tracer.id()),
                metric_sum(&body, "tracer_events_lost_total", &[]),
            );
            eprintln!(
                "soak: minute {:>3}: {} requests, tracer RSS {} KiB, lost {}",
                sample.0, sample.1, sample.2, sample.3
            );
            samples.push(sample);
            next_sample += Duration::from_secs(60);
        }
        seed.drive(10)?;
        requests += 10;
    }
    let body = scrape(port)?;
    samples.push((
        minutes,
        requests,
        rss_kib(tracer.id()),
        metric_sum(&body, "tracer_events_lost_total", &[]),
    ));
    let seconds = start.elapsed().as_secs_f64();

    let count = |kind: &str, target: &str| {
        metric_sum(
            &body,
            "tracer_call_duration_seconds_count",
            &[&format!("kind=\"{kind}\""), target],
        ) as u64
    };
    let lookups = count("dns", "target=\"identity.stormpath.test\"");
    let handshakes = count("tls_handshake", "identity.stormpath.test");
    let mysql = count("connect", ":3306");
    let lost = samples.last().map_or(0.0, |s| s.3);
    // RSS flat: the last sample within 10% of the one after warm-up (the
    // first minute fills caches: symbols, code objects, names).
    let warm = samples.get(1).or(samples.first()).map_or(0, |s| s.2);
    let last = samples.last().map_or(0, |s| s.2);
    let peak = samples.iter().map(|s| s.2).max().unwrap_or(0);
    let growth = (last as f64 - warm as f64) / warm.max(1) as f64;
    let checks = [
        (
            "identity lookups = 2 x requests",
            lookups == 2 * requests,
            format!("{lookups} vs {}", 2 * requests),
        ),
        (
            "identity handshakes = 2 x requests",
            handshakes == 2 * requests,
            format!("{handshakes} vs {}", 2 * requests),
        ),
        (
            "MySQL connects = requests",
            mysql == requests,
            format!("{mysql} vs {requests}"),
        ),
        ("no event lost", lost == 0.0, format!("{lost}")),
        (
            "RSS within 10% of minute 1",
            growth.abs() <= 0.10,
            format!("{warm} KiB -> {last} KiB ({:+.1}%)", growth * 100.0),
        ),
    ];

    let mut md = format!(
        "# Soak: {minutes} min of the seed scenario with tracer serve attached\n\n\
         {requests} requests in {seconds:.0} s ({:.1}/s), DNS delay {dns_delay_ms} ms. \
         Tracer peak RSS {peak} KiB.\n\n| minute | requests | tracer RSS KiB | lost |\n|---:|---:|---:|---:|\n",
        requests as f64 / seconds
    );
    for (m, r, kib, l) in &samples {
        md.push_str(&format!("| {m} | {r} | {kib} | {l} |\n"));
    }
    md.push_str("\n| check | result | measured |\n|---|---|---|\n");
    let mut all = true;
    for (what, ok, measured) in &checks {
        all &= ok;
        md.push_str(&format!(
            "| {what} | {} | {measured} |\n",
            if *ok { "pass" } else { "FAIL" }
        ));
    }
    print!("{md}");
    std::fs::create_dir_all(&workdir).map_err(|e| e.to_string())?;
    std::fs::write(workdir.join("results.md"), &md).map_err(|e| e.to_string())?;
    // SAFETY: kill(2) on our own child: SIGINT, the way a person stops it.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let status = tracer.wait().map_err(|e| e.to_string())?;
    seed.down();
    if !status.success() {
        eprintln!("soak: tracer ended with {status}");
        all = false;
    }
    Ok(all)
}

fn main() -> ExitCode {
    let mut minutes = 30;
    let mut dns_delay_ms = 20;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), value) {
            ("--minutes", Some(v)) if v > 0 => minutes = v,
            ("--dns-delay-ms", Some(v)) => dns_delay_ms = v as u32,
            _ => {
                eprintln!("soak [--minutes N (30)] [--dns-delay-ms MS (20)]");
                return ExitCode::from(2);
            }
        }
    }
    match run(minutes, dns_delay_ms) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}
