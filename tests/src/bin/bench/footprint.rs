//! 4. Collector footprint: tracer's CPU share and peak RSS at fixed rates.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::{Env, Report, Result, capacity::lost_total, harness::*};

/// CPU time in nanoseconds (the scheduler's run time of each of its
/// threads: clock ticks, 10 ms each, were too coarse for 1% of a core over
/// 5 s), and peak RSS in KiB, of a process.
pub(crate) fn cpu_and_peak_rss(pid: u32) -> (u64, u64) {
    let ns = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ns, hwm)
}

/// Resident KiB of a process's BPF map mappings (the event ring buffer:
/// its data pages are mapped twice, so a 16 MiB ring is 32 MiB resident).
fn bpf_map_rss(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_map = false;
    let mut kib = 0;
    for line in smaps.lines() {
        // A mapping's first line starts with its range, START-END in hex.
        let range = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = range.split_once('-')
            && u64::from_str_radix(a, 16).is_ok()
            && u64::from_str_radix(b, 16).is_ok()
        {
            in_map = line.ends_with("anon_inode:bpf-map");
        } else if in_map && let Some(v) = line.strip_prefix("Rss:") {
            kib += v
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    kib
}

pub(crate) fn footprint(env: &Env, report: &mut Report) -> Result<()> {
    eprintln!("bench: collector footprint");
    let _ = writeln!(
        report.md,
        "\n## Collector footprint\n\ngetaddrinfo(\"localhost\") paced at a fixed rate, tracer \
         attached with call sites: each call is 2 ring-buffer records (its stack, which also \
         marks its start, and its end). \
         CPU is the run time of tracer's threads (the scheduler's, \
         /proc/PID/task/*/schedstat): to attach (loading the probes, the unwind tables, and \
         libc's names and DWARF, read before the process is traced), over the first second \
         at the rate, where it names the first stacks, and over the 5 s after it, the cost of \
         the rate itself. Peak RSS is over all three.\n\n\
         | calls/s asked | calls/s made | tracer CPU to attach | tracer CPU, first second \
         | tracer CPU, next 5 s | tracer peak RSS | of which BPF maps | lost |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for rate in [1_000u64, 10_000, 100_000] {
        let mut lp = Loop::start(env, "getaddrinfo")?;
        let json_path = env.out.join(format!("footprint-{rate}.json"));
        let mut tracer = attach_report(env, lp.pid, &json_path)?;
        // CPU over a window of the loop's, in percent of a core.
        let share = |ns0: u64, ns1: u64, answer: &Value, asked: f64| {
            let secs = answer["seconds"].as_f64().unwrap_or(asked);
            ns1.saturating_sub(ns0) as f64 / 1e9 / secs * 100.0
        };
        let (cpu0, _) = cpu_and_peak_rss(tracer.id());
        let first = lp.ask(&format!("rate {rate} 1"))?;
        let (cpu1, _) = cpu_and_peak_rss(tracer.id());
        let answer = lp.ask(&format!("rate {rate} 5"))?;
        let (cpu2, rss) = cpu_and_peak_rss(tracer.id());
        let maps_rss = bpf_map_rss(tracer.id());
        lp.quit();
        let _ = tracer.wait();
        let r: Value =
            serde_json::from_str(&std::fs::read_to_string(&json_path).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let secs = answer["seconds"].as_f64().unwrap_or(5.0);
        let made = answer["calls"].as_u64().unwrap_or(0) as f64 / secs;
        let (cpu_first, cpu) = (
            share(cpu0, cpu1, &first, 1.0),
            share(cpu1, cpu2, &answer, 5.0),
        );
        let _ = writeln!(
            report.md,
            "| {rate} | {made:.0} | {:.0} ms | {cpu_first:.1}% of a core | {cpu:.2}% of a core \
             | {:.1} MiB | {:.1} MiB | {} |",
            cpu0 as f64 / 1e6,
            rss as f64 / 1024.0,
            maps_rss as f64 / 1024.0,
            lost_total(&r)
        );
        report.json["footprint"]
            .as_array_mut()
            .expect("array")
            .push(json!({"rate": rate, "made_per_s": made, "cpu_percent": cpu,
                         "cpu_percent_first_second": cpu_first,
                         "cpu_ms_to_attach": cpu0 as f64 / 1e6,
                         "peak_rss_kib": rss, "bpf_maps_rss_kib": maps_rss,
                         "lost": lost_total(&r)}));
        if rate == 10_000 {
            report.notes.push(format!(
                "collector at 10k lookups/s: {cpu:.2}% of a core over 5 s (target: at most 1%), \
                 {cpu_first:.1}% in the first second (naming the first stacks); peak RSS {:.1} \
                 MiB (target: at most 48 MiB), {:.1} MiB of it the BPF maps' mappings",
                rss as f64 / 1024.0,
                maps_rss as f64 / 1024.0
            ));
        }
    }
    Ok(())
}
