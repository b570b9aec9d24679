//! 4. Collector footprint: tracer's CPU share and peak RSS at fixed rates.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::{Env, Report, Result, capacity::lost_total, harness::*};

/// (utime + stime) in clock ticks, and peak RSS in KiB, of a process.
pub(crate) fn cpu_and_peak_rss(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, hwm)
}

pub(crate) fn footprint(env: &Env, report: &mut Report) -> Result<()> {
    eprintln!("bench: collector footprint");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let _ = writeln!(
        report.md,
        "\n## Collector footprint\n\ngetaddrinfo(\"localhost\") paced at a fixed rate for 5 s, \
         tracer attached with call sites: each call is 3 ring-buffer records (start, end, \
         stack). CPU is tracer's user + system time over the window.\n\n\
         | calls/s asked | calls/s made | tracer CPU | tracer peak RSS | lost |\n|---|---|---|---|---|"
    );
    for rate in [1_000u64, 10_000, 100_000] {
        let mut lp = Loop::start(env, "getaddrinfo")?;
        let json_path = env.out.join(format!("footprint-{rate}.json"));
        let mut tracer = attach_report(env, lp.pid, &json_path)?;
        let (cpu0, _) = cpu_and_peak_rss(tracer.id());
        let answer = lp.ask(&format!("rate {rate} 5"))?;
        let (cpu1, rss) = cpu_and_peak_rss(tracer.id());
        lp.quit();
        let _ = tracer.wait();
        let r: Value =
            serde_json::from_str(&std::fs::read_to_string(&json_path).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let secs = answer["seconds"].as_f64().unwrap_or(5.0);
        let made = answer["calls"].as_u64().unwrap_or(0) as f64 / secs;
        let cpu = (cpu1 - cpu0) as f64 / hz / secs * 100.0;
        let _ = writeln!(
            report.md,
            "| {rate} | {made:.0} | {cpu:.1}% of a core | {:.1} MiB | {} |",
            rss as f64 / 1024.0,
            lost_total(&r)
        );
        report.json["footprint"]
            .as_array_mut()
            .expect("array")
            .push(json!({"rate": rate, "made_per_s": made, "cpu_percent": cpu,
                         "peak_rss_kib": rss, "lost": lost_total(&r)}));
        if rate == 10_000 {
            report.notes.push(format!(
                "collector at 10k calls/s (30k events/s): {cpu:.1}% of a core (target: under \
                 2% at 10k events/s), peak RSS {:.1} MiB (target: under 64 MB)",
                rss as f64 / 1024.0
            ));
        }
    }
    Ok(())
}
