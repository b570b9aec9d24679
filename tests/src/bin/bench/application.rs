//! 2. Application cost: requests per second of the seed's Flask app.

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::json;
use tracer_tests::seed::{Paths, Seed};

use crate::{Env, Report, Result, harness::*};

/// The seed's Flask app, no profiler, no DNS delay: requests per second.
pub(crate) fn application(env: &Env, report: &mut Report) -> Result<()> {
    eprintln!("bench: the seed's Flask app");
    let bins = env.tracer.parent().expect("bin dir");
    let paths = Paths::new(&env.repo, bins, &env.repo.join("target/bench/seed"));
    let mut scenario = Seed::start_unprofiled(&paths, 0)?;
    const REQUESTS: u32 = 30;
    let rps = |scenario: &mut Seed, tool: &str| -> Result<f64> {
        let pid = scenario.app_pid.to_string();
        let child = match tool {
            "tracer" => {
                let mut c = Command::new(&env.tracer)
                    .args(["report", "--pid", &pid, "--json", "/dev/null"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| e.to_string())?;
                let rx = lines(c.stderr.take().expect("piped"));
                let c = Guard(c);
                wait_line(&rx, "tracing PID", "tracer")?;
                Some(c)
            }
            "bpftrace" => {
                let libc = Loop::library_of(scenario.app_pid, "libc.so")?;
                let libssl = Loop::library_of(scenario.app_pid, "libssl.so")?;
                let script = format!(
                    "uprobe:{libc}:getaddrinfo,uprobe:{libssl}:SSL_read_ex /pid == {pid}/ \
                     {{ @s[tid] = nsecs; }} \
                     uretprobe:{libc}:getaddrinfo,uretprobe:{libssl}:SSL_read_ex /@s[tid]/ \
                     {{ @h[probe] = hist(nsecs - @s[tid]); delete(@s[tid]); }} \
                     tracepoint:raw_syscalls:sys_enter /pid == {pid}/ {{ @e[tid] = nsecs; }} \
                     tracepoint:raw_syscalls:sys_exit /@e[tid]/ {{ @sys[args->id] = \
                     hist(nsecs - @e[tid]); delete(@e[tid]); }}"
                );
                let mut c = Command::new("bpftrace")
                    .arg("-e")
                    .arg(script)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| e.to_string())?;
                let rx = lines(c.stdout.take().expect("piped"));
                let c = Guard(c);
                wait_line(&rx, "Attaching", "bpftrace")?;
                thread::sleep(Duration::from_secs(1));
                thread::spawn(move || while rx.recv().is_ok() {});
                Some(c)
            }
            _ => None,
        };
        let driven = scenario.drive(REQUESTS);
        drop(child);
        let driven = driven?;
        let secs = driven["seconds"].as_f64().ok_or("no seconds")?;
        Ok(f64::from(REQUESTS) / secs)
    };
    // Warm the app up (first connections, imports) before measuring.
    scenario.drive(5)?;
    let mut runs: Vec<(&str, f64)> = Vec::new();
    for tool in [
        "untraced", "tracer", "bpftrace", "untraced", "tracer", "bpftrace",
    ] {
        runs.push((tool, rps(&mut scenario, tool)?));
    }
    scenario.down();
    let mean = |t: &str| {
        let v: Vec<f64> = runs.iter().filter(|r| r.0 == t).map(|r| r.1).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let base = mean("untraced");
    let _ = writeln!(
        report.md,
        "\n## Application cost\n\nThe seed's Flask app (no profiler, DNS answered at once), \
         {REQUESTS} requests one after the other, twice per setting, in turns.\n\n\
         | setting | requests/s | of untraced |\n|---|---|---|"
    );
    for t in ["untraced", "tracer", "bpftrace"] {
        let _ = writeln!(
            report.md,
            "| {t} | {:.2} | {:.1}% |",
            mean(t),
            mean(t) / base * 100.0
        );
    }
    report.notes.push(format!(
        "Flask app: {:.1}% of its untraced throughput with tracer (target: at least 98%)",
        mean("tracer") / base * 100.0
    ));
    report.json["application"] = json!(
        runs.iter()
            .map(|(t, r)| json!({"setting": t, "requests_per_s": r}))
            .collect::<Vec<_>>()
    );
    Ok(())
}
