//! 3. Capacity: the call rates tracer takes with nothing lost.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::{Env, Report, Result, harness::*};

impl Loop {
    pub(crate) fn library_of(pid: u32, name: &str) -> Result<String> {
        let maps =
            std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| e.to_string())?;
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.rsplit('/').next().is_some_and(|b| b.starts_with(name)))
            .map(str::to_string)
            .ok_or_else(|| format!("{name} is not mapped by PID {pid}"))
    }
}

/// Runs `calls` calls of `mode` under `tracer report --json` until the
/// loop exits; returns (ns per call, the report, the loop's answer).
pub(crate) fn traced_run(env: &Env, mode: &str, calls: u64) -> Result<(f64, Value, Value)> {
    let mut lp = Loop::start(env, mode)?;
    let json_path = env.out.join(format!("capacity-{mode}.json"));
    let mut tracer = attach_report(env, lp.pid, &json_path)?;
    let (ns, answer) = lp.run_answer(calls)?;
    lp.quit();
    let _ = tracer.wait();
    let text = std::fs::read_to_string(&json_path).map_err(|e| e.to_string())?;
    let report = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok((ns, report, answer))
}

pub(crate) fn lost_total(report: &Value) -> u64 {
    report["lost"]
        .as_object()
        .map_or(0, |o| o.values().filter_map(Value::as_u64).sum())
}

pub(crate) fn capacity(env: &Env, report: &mut Report) -> Result<()> {
    eprintln!("bench: capacity");
    let _ = writeln!(
        report.md,
        "\n## Capacity\n\nAs fast as the loop goes, tracer attached (with call sites); its \
         counts against the calls made (1000 warm-up calls included).\n\n\
         | calls | rate | made | counted by tracer | lost |\n|---|---|---|---|---|"
    );
    // getppid: aggregated in the kernel.
    let n = 5_000_000;
    let (ns, r, _) = traced_run(env, "getppid", n)?;
    let counted: u64 = r["syscalls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["syscall"] == "getppid")
        .filter_map(|s| s["count"].as_u64())
        .sum();
    let _ = writeln!(
        report.md,
        "| getppid | {:.0}/s | {} | {counted} | {} |",
        1e9 / ns,
        n + 1000,
        lost_total(&r)
    );
    report.json["capacity"]["getppid"] = json!({"rate_per_s": 1e9 / ns, "made": n + 1000, "counted": counted, "lost": lost_total(&r)});
    // connect: one event each (and a stack, and a close).
    let n = 30_000;
    let (ns, r, _) = traced_run(env, "connect", n)?;
    let counted = r["connects_total"].as_u64().unwrap_or(0);
    let _ = writeln!(
        report.md,
        "| connect (3 ring-buffer records each) | {:.0}/s | {} | {counted} | {} |",
        1e9 / ns,
        n + 1000,
        lost_total(&r)
    );
    report.json["capacity"]["connect"] = json!({"rate_per_s": 1e9 / ns, "made": n + 1000, "counted": counted, "lost": lost_total(&r)});
    // SSL_read_ex: one event each, the busiest stream. Made: every call
    // the loop made, the reads that found its pipe empty (one per 1000
    // records, which makes its server write more) with the rest.
    let n = 500_000;
    let (ns, r, answer) = traced_run(env, "ssl_read", n)?;
    let made = answer["ssl_calls"]
        .as_u64()
        .ok_or("bench-loop: no ssl_calls")?;
    let counted: u64 = r["tls_peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["reads"].as_u64())
        .sum();
    let _ = writeln!(
        report.md,
        "| SSL_read_ex (1 record each) | {:.0}/s | {made} | {counted} | {} |",
        1e9 / ns,
        lost_total(&r)
    );
    report.json["capacity"]["ssl_read"] =
        json!({"rate_per_s": 1e9 / ns, "made": made, "counted": counted, "lost": lost_total(&r)});
    Ok(())
}
