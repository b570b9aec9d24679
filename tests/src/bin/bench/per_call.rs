//! 1. Per-call cost of each tool on the same probes, flat out and paced.

use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::json;

use crate::{Env, Report, Result, harness::*};

const TOOLS: [Tool; 5] = [
    Tool::Floor,
    Tool::Bpftrace,
    Tool::BpftraceUstack,
    Tool::TracerNoSites,
    Tool::Tracer,
];

pub(crate) fn per_call(env: &Env, report: &mut Report) -> Result<()> {
    let workloads = [
        Workload {
            name: "getppid (syscall)",
            mode: "getppid",
            calls: 2_000_000,
            point: Point::Syscall,
        },
        Workload {
            // A read or write pays for the DNS and slow-I/O checks at exit.
            name: "write of 1 byte to /dev/null (syscall)",
            mode: "write",
            calls: 2_000_000,
            point: Point::Syscall,
        },
        Workload {
            name: "getaddrinfo(\"localhost\")",
            mode: "getaddrinfo",
            calls: 50_000,
            point: Point::Function("libc.so", "getaddrinfo"),
        },
        Workload {
            name: "connect to loopback (+socket, close)",
            mode: "connect",
            calls: 10_000,
            point: Point::Syscall,
        },
        Workload {
            name: "SSL_read_ex of a 64-byte record",
            mode: "ssl_read",
            calls: 100_000,
            point: Point::Function("libssl.so", "SSL_read_ex"),
        },
    ];
    // Every workload under every tool first, then the two tables: the
    // paced rounds ran in turn with the flat-out ones, under one attach.
    let mut measured: Vec<Vec<(Tool, Measured)>> = Vec::new();
    for w in &workloads {
        eprintln!("bench: {}", w.name);
        let mut by_tool = Vec::new();
        for tool in TOOLS {
            if tool == Tool::BpftraceUstack && matches!(w.point, Point::Syscall) {
                continue;
            }
            by_tool.push((tool, measure(env, w, tool)?));
        }
        measured.push(by_tool);
    }
    let rows = |pick: fn(&Measured) -> &Rounds| -> Vec<Vec<(Tool, &Rounds)>> {
        measured
            .iter()
            .map(|t| t.iter().map(|(tool, m)| (*tool, pick(m))).collect())
            .collect()
    };
    let (flat, paced) = (rows(|m| &m.flat), rows(|m| &m.paced));
    let _ = writeln!(
        report.md,
        "## Per-call cost\n\nFor each tool, one process runs the calls untraced, traced, and \
         untraced again; the added cost is the median of {} traced rounds minus the median of \
         the untraced ones around them (range: the traced rounds' spread).\n\n### Flat out\n\n\
         Each round: the calls back to back, ns per call over the round.\n",
        env.rounds
    );
    table(report, &workloads, &flat, "flat out", "per_call");
    let _ = writeln!(
        report.md,
        "\n### Paced\n\nEach round: {PACED_CALLS} calls at {PACED_RATE} a second, the loop \
         asleep between them (caches cold, as in a program that makes such a call now and \
         then), each call timed alone: the round's median. Taken in turn with the flat-out \
         rounds, under the same attach.\n"
    );
    table(report, &workloads, &paced, "paced", "per_call_paced");
    Ok(())
}

/// One table of added cost per workload and tool, its notes against the
/// targets, and its JSON under `key`.
fn table(
    report: &mut Report,
    workloads: &[Workload],
    rows: &[Vec<(Tool, &Rounds)>],
    pace: &str,
    key: &str,
) {
    let _ = writeln!(
        report.md,
        "| call | untraced | floor | bpftrace hist | bpftrace + ustack | tracer --no-call-sites | tracer |\n|---|---|---|---|---|---|---|"
    );
    let mut json_rows = Vec::new();
    for (w, by_tool) in workloads.iter().zip(rows) {
        let mut figures = Vec::new();
        let mut bases = Vec::new();
        let mut cells = String::new();
        let mut added = BTreeMap::new();
        for tool in TOOLS {
            let Some((_, r)) = by_tool.iter().find(|(t, _)| *t == tool) else {
                cells.push_str(" - |");
                continue;
            };
            let base_med = median(&r.base);
            let med = median(&r.traced);
            let (lo, hi) = extremes(&r.traced);
            let (lo, hi) = (lo - base_med, hi - base_med);
            let _ = write!(cells, " {:+.0} ns ({lo:+.0}..{hi:+.0}) |", med - base_med);
            added.insert(tool.name(), med - base_med);
            bases.push(base_med);
            figures.push(json!({"tool": tool.name(), "untraced_rounds": r.base,
                                "traced_rounds": r.traced, "added_ns": med - base_med}));
        }
        let untraced = median(&bases);
        let _ = writeln!(report.md, "| {} | {untraced:.0} ns |{cells}", w.name);
        let spread = {
            let (lo, hi) = extremes(&bases);
            hi - lo
        };
        report.notes.push(format!(
            "{}, {pace}: untraced {untraced:.0} ns per call (its medians across the runs \
             spread over {spread:.0} ns)",
            w.name
        ));
        let get = |t: Tool| added.get(t.name()).copied().unwrap_or(f64::NAN);
        let ratio = match w.point {
            // Issue 20's target for a connect is bpftrace's cost on the same
            // tracepoints, not the floor's.
            Point::Syscall if w.mode == "connect" => format!(
                "{}, {pace}: tracer adds {} (target: at most 1.5x)",
                w.name,
                versus(
                    get(Tool::Tracer),
                    get(Tool::Bpftrace),
                    "bpftrace's histogram"
                )
            ),
            Point::Syscall => format!(
                "{}, {pace}: tracer adds {} (target: at most 1.5x)",
                w.name,
                versus(get(Tool::Tracer), get(Tool::Floor), "the floor's cost")
            ),
            Point::Function(..) => format!(
                "{}, {pace}: tracer --no-call-sites adds {} (target: at most 1x); tracer with \
                 call sites {} (target: at most 1.5x)",
                w.name,
                versus(
                    get(Tool::TracerNoSites),
                    get(Tool::Bpftrace),
                    "bpftrace's histogram"
                ),
                versus(
                    get(Tool::Tracer),
                    get(Tool::BpftraceUstack),
                    "bpftrace with ustack"
                )
            ),
        };
        report.notes.push(ratio);
        json_rows.push(json!({"call": w.name, "untraced_ns": untraced, "figures": figures}));
    }
    report.json[key] = json!(json_rows);
}
