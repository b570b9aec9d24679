//! The seed's categories of time (lookups, SSL reads, the MySQL query...),
//! from tracer's JSON report and from the app's own profile files, and the
//! two side by side.

use std::{fmt::Write as _, process::Command, thread, time::Duration};

use serde_json::Value;

use super::{Compared, Paths, Result};

/// Calls and time in one of the seed's categories.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Category {
    pub calls: u64,
    pub seconds: f64,
    /// Of the run's time: tracer's busy time, or cProfile's profiled time.
    pub share: f64,
}

/// The seed's categories: what its author's call graph showed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Categories {
    pub lookups: Category,
    pub ssl_reads: Category,
    pub handshakes: Category,
    pub mysql_query: Category,
    pub mysql_connect: Category,
    /// The denominator of the shares, in seconds.
    pub total_seconds: f64,
}

fn sum(rows: &Value, pick: impl Fn(&Value) -> Option<(u64, u64)>) -> (u64, u64) {
    rows.as_array()
        .into_iter()
        .flatten()
        .filter_map(pick)
        .fold((0, 0), |(c, t), (c2, t2)| (c + c2, t + t2))
}

/// The categories in a tracer JSON report.
pub fn tracer_categories(report: &Value) -> Categories {
    let busy_ns = report["busy_ns"].as_u64().unwrap_or(0);
    let cat = |(calls, ns): (u64, u64)| Category {
        calls,
        seconds: ns as f64 / 1e9,
        share: if busy_ns > 0 {
            ns as f64 / busy_ns as f64
        } else {
            0.0
        },
    };
    let mysql = |r: &Value| {
        r["peer"]
            .as_str()
            .or(r["target"].as_str())
            .is_some_and(|p| p.ends_with(":3306"))
    };
    Categories {
        lookups: cat(sum(&report["dns_hosts"], |h| {
            Some((h["count"].as_u64()?, h["total_ns"].as_u64()?))
        })),
        ssl_reads: cat(sum(&report["tls_peers"], |p| {
            Some((p["reads"].as_u64()?, p["read_ns"].as_u64()?))
        })),
        handshakes: cat(sum(&report["tls_peers"], |p| {
            Some((p["handshakes"].as_u64()?, p["handshake_ns"].as_u64()?))
        })),
        // The slow reads on the MySQL socket from the line that sends the
        // query (the busiest call site); the connect's greeting can be
        // over the threshold too, from another line.
        mysql_query: cat(sum(&report["breakdown"], |r| {
            (r["kind"] == "io" && mysql(r)).then(|| {
                let top = &r["sites"][0];
                (top[1].as_u64().unwrap_or(0), top[2].as_u64().unwrap_or(0))
            })
        })),
        mysql_connect: cat(sum(&report["connect_peers"], |p| {
            mysql(p).then(|| {
                (
                    p["count"].as_u64().unwrap_or(0),
                    p["total_ns"].as_u64().unwrap_or(0),
                )
            })
        })),
        total_seconds: busy_ns as f64 / 1e9,
    }
}

/// Runs scenario/profile_stats.py on the cProfile files of `requests`
/// requests (the middleware writes a request's file after its response is
/// sent: the last may come a moment after the driver is done).
pub fn profiler_categories(paths: &Paths, requests: u32) -> Result<Categories> {
    let count = || {
        std::fs::read_dir(paths.profiles())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        e.path()
                            .extension()
                            .is_some_and(|x| x == "prof" || x == "json")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    for _ in 0..100 {
        if count() >= requests as usize {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    if count() != requests as usize {
        return Err(format!(
            "{} cProfile files in {}, not one per request ({requests})",
            count(),
            paths.profiles().display()
        ));
    }
    let out = Command::new(&paths.python)
        .arg(paths.scenario.join("profile_stats.py"))
        .arg(paths.profiles())
        .output()
        .map_err(|e| format!("running scenario/profile_stats.py: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scenario/profile_stats.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("scenario/profile_stats.py printed no JSON: {e}"))?;
    let cat = |k: &str| Category {
        calls: v[k]["calls"].as_u64().unwrap_or(0),
        seconds: v[k]["seconds"].as_f64().unwrap_or(0.0),
        share: v[k]["share"].as_f64().unwrap_or(0.0),
    };
    Ok(Categories {
        lookups: cat("lookups"),
        ssl_reads: cat("ssl_reads"),
        handshakes: cat("handshakes"),
        mysql_query: cat("mysql_query"),
        mysql_connect: cat("mysql_connect"),
        total_seconds: v["total_seconds"].as_f64().unwrap_or(0.0),
    })
}

/// Per request of one endpoint, tracer's (from its "Requests by endpoint")
/// and the profiler's (its time and lookups over its request count): mean
/// request seconds and lookups per request, or `None` when tracer has no
/// such endpoint.
pub fn per_request(
    report: &Value,
    endpoint: &str,
    profiler: &Categories,
    requests: u32,
) -> Option<((f64, f64), (f64, f64))> {
    let e = report["http_requests"]["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["endpoint"] == endpoint)?;
    let count = e["latency"]["count"].as_f64()?.max(1.0);
    let lookups: u64 = e["calls"]
        .as_array()?
        .iter()
        .filter(|c| c["kind"] == "dns")
        .filter_map(|c| c["calls"].as_u64())
        .sum();
    let n = f64::from(requests.max(1));
    Some((
        (
            e["latency"]["total_ns"].as_f64()? / 1e9 / count,
            lookups as f64 / count,
        ),
        (
            profiler.total_seconds / n,
            profiler.lookups.calls as f64 / n,
        ),
    ))
}

/// The two side by side, as a table.
pub fn side_by_side(tracer: &Categories, profiler: &Categories) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<15} {:>7} {:>8} {:>7}   {:>8} {:>8} {:>7}",
        "", "TRACER", "TIME", "SHARE", "CPROFILE", "TIME", "SHARE"
    );
    for (name, t, p) in [
        ("lookups", tracer.lookups, profiler.lookups),
        ("SSL reads", tracer.ssl_reads, profiler.ssl_reads),
        ("MySQL query", tracer.mysql_query, profiler.mysql_query),
        (
            "MySQL connect",
            tracer.mysql_connect,
            profiler.mysql_connect,
        ),
        ("TLS handshakes", tracer.handshakes, profiler.handshakes),
    ] {
        let _ = writeln!(
            out,
            "{name:<15} {:>7} {:>7.3}s {:>6.1}%   {:>8} {:>7.3}s {:>6.1}%",
            t.calls,
            t.seconds,
            t.share * 100.0,
            p.calls,
            p.seconds,
            p.share * 100.0
        );
    }
    let _ = writeln!(
        out,
        "(calls, time and share. tracer: of the app's busy time, {:.2}s; cProfile: of the profiled \
         request time, {:.2}s. tracer counts a MySQL query by the reads over 1 ms of its line, a \
         connect by connect().)",
        tracer.total_seconds, profiler.total_seconds
    );
    out
}

/// Where tracer and the profiler disagree on `requests` requests of the
/// seed app, one line each; empty when the shares of lookups, SSL reads and
/// the MySQL query are within `points` of each other, the lookup and
/// handshake counts equal, the SSL read count within 2% and one slow query
/// read counted per request.
/// `compared` leaves out what the app's timing cannot say.
pub fn disagreements(
    t: &Categories,
    p: &Categories,
    requests: u32,
    points: f64,
    compared: Compared,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut shares = vec![
        ("lookups", t.lookups, p.lookups),
        ("SSL reads", t.ssl_reads, p.ssl_reads),
    ];
    if compared.mysql {
        shares.push(("MySQL query", t.mysql_query, p.mysql_query));
    }
    for (what, a, b) in shares {
        let diff = (a.share - b.share).abs() * 100.0;
        if diff > points {
            out.push(format!(
                "{what}: tracer {:.1}% vs cProfile {:.1}% ({diff:.1} points apart, at most \
                 {points})",
                a.share * 100.0,
                b.share * 100.0
            ));
        }
    }
    let mut counts = vec![
        ("getaddrinfo calls", t.lookups.calls, p.lookups.calls),
        ("TLS handshakes", t.handshakes.calls, p.handshakes.calls),
    ];
    if compared.mysql {
        counts.push(("slow query reads", t.mysql_query.calls, u64::from(requests)));
    }
    for (what, a, b) in counts {
        if a != b {
            out.push(format!("{what}: tracer {a}, expected {b}"));
        }
    }
    let (reads, profiled) = (t.ssl_reads.calls as f64, p.ssl_reads.calls as f64);
    if compared.ssl_read_calls && (reads - profiled).abs() > profiled * 0.02 {
        out.push(format!("SSL reads: tracer {reads}, cProfile {profiled}"));
    }
    out
}
