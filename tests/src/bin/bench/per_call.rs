//! 1. Per-call cost of each tool on the same probes.

use std::fmt::Write as _;

use serde_json::json;

use crate::{Env, Report, Result, harness::*};

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
    let _ = writeln!(
        report.md,
        "## Per-call cost\n\nFor each tool, one process runs the calls untraced, traced, and \
         untraced again; the added cost is the median of {} traced rounds minus the median of \
         the untraced ones around them (range: the traced rounds' spread).\n",
        env.rounds
    );
    let _ = writeln!(
        report.md,
        "| call | untraced | floor | bpftrace hist | bpftrace + ustack | tracer --no-call-sites | tracer |\n|---|---|---|---|---|---|---|"
    );
    for w in &workloads {
        eprintln!("bench: {}", w.name);
        let mut figures = Vec::new();
        let mut bases = Vec::new();
        let mut cells = String::new();
        let mut added = std::collections::BTreeMap::new();
        for tool in [
            Tool::Floor,
            Tool::Bpftrace,
            Tool::BpftraceUstack,
            Tool::TracerNoSites,
            Tool::Tracer,
        ] {
            if tool == Tool::BpftraceUstack && matches!(w.point, Point::Syscall) {
                cells.push_str(" - |");
                continue;
            }
            let (base, traced) = measure(env, w, tool)?;
            let base_med = median(&base);
            let med = median(&traced);
            let lo = traced.iter().copied().fold(f64::MAX, f64::min) - base_med;
            let hi = traced.iter().copied().fold(f64::MIN, f64::max) - base_med;
            let _ = write!(cells, " +{:.0} ns ({lo:+.0}..{hi:+.0}) |", med - base_med);
            added.insert(tool.name(), med - base_med);
            bases.push(base_med);
            figures.push(json!({"tool": tool.name(), "untraced_rounds": base,
                                "traced_rounds": traced, "added_ns": med - base_med}));
        }
        let untraced = median(&bases);
        let _ = writeln!(report.md, "| {} | {untraced:.0} ns |{cells}", w.name);
        let spread = bases.iter().copied().fold(f64::MIN, f64::max)
            - bases.iter().copied().fold(f64::MAX, f64::min);
        report.notes.push(format!(
            "{}: untraced {untraced:.0} ns per call (its medians across the runs spread over \
             {spread:.0} ns)",
            w.name
        ));
        let get = |t: Tool| added.get(t.name()).copied().unwrap_or(f64::NAN);
        let ratio = match w.point {
            Point::Syscall => format!(
                "{}: tracer adds {:.2}x the floor's cost (target: at most 1.5x)",
                w.name,
                get(Tool::Tracer) / get(Tool::Floor)
            ),
            Point::Function(..) => format!(
                "{}: tracer --no-call-sites adds {:.2}x bpftrace's histogram (target: at most 1x); \
                 tracer with call sites {:.2}x bpftrace with ustack (target: at most 1.5x)",
                w.name,
                get(Tool::TracerNoSites) / get(Tool::Bpftrace),
                get(Tool::Tracer) / get(Tool::BpftraceUstack)
            ),
        };
        report.notes.push(ratio);
        report.json["per_call"]
            .as_array_mut()
            .expect("array")
            .push(json!({"call": w.name, "untraced_ns": untraced, "figures": figures}));
    }
    Ok(())
}
