//! 5. Node mode: `tracer serve --all` idle, then busy.

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tracer_tests::prometheus::{metric_sum, try_http_get};

use crate::{Env, Report, Result, footprint::cpu_and_peak_rss, harness::*};

/// How long each node-mode window lasts: long enough for an idle tracer's
/// few milliseconds of CPU to be more than noise.
pub(crate) const NODE_WINDOW: Duration = Duration::from_secs(20);

/// The untraced windows: before the busy one, between it and the floor's,
/// and after that.
pub(crate) const NODE_BASELINE: Duration = Duration::from_secs(5);

/// The window with the floor's empty programs attached, on the same load.
pub(crate) const NODE_FLOOR_WINDOW: Duration = Duration::from_secs(10);

/// Calls per round in node mode: the per-call section's sizes.
pub(crate) const GETPPID_ROUND: u64 = 2_000_000;

pub(crate) const CONNECT_ROUND: u64 = 10_000;

/// `tracer serve --all` on a free loopback port; interrupted when dropped.
pub(crate) struct NodeTracer {
    tracer: Guard,
    port: u16,
}

impl NodeTracer {
    /// Returns once /metrics answers: /healthz answers as soon as the port
    /// is bound, before the probes are attached, while /metrics is
    /// answered by the collector's loop, which runs only once they are.
    fn start(env: &Env) -> Result<Self> {
        let port = tracer_tests::closed_port();
        let mut child = Command::new(&env.tracer)
            .args(["serve", "--all", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("tracer serve --all: {e}"))?;
        let rx = lines(child.stderr.take().expect("piped"));
        let mut tracer = Guard(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = try_http_get(port, "/metrics") {
                break;
            }
            if let Ok(Some(status)) = tracer.0.try_wait() {
                let said: Vec<String> = rx.iter().collect();
                return Err(format!(
                    "tracer serve --all exited ({status}): {}",
                    said.join("; ")
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("tracer serve --all: no /metrics on port {port}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
        // Keep draining its output so that it never blocks on a full pipe.
        thread::spawn(move || while rx.recv().is_ok() {});
        Ok(Self { tracer, port })
    }

    fn pid(&self) -> u32 {
        self.tracer.0.id()
    }

    /// (processes traced now, events lost so far, the reasons of those
    /// lost), from its /metrics.
    fn scrape(&self) -> Result<(f64, f64, String)> {
        let (code, body) = try_http_get(self.port, "/metrics")
            .map_err(|e| format!("tracer serve --all /metrics: {e}"))?;
        if code != 200 {
            return Err(format!("tracer serve --all /metrics: HTTP {code}"));
        }
        // `tracer_events_lost_total{reason="ring_buffer_full"} 12`: which
        // reason says where to look (the ring, or one of the maps).
        let reasons: Vec<String> = body
            .lines()
            .filter_map(|l| l.strip_prefix("tracer_events_lost_total{reason=\""))
            .filter_map(|l| {
                let (reason, rest) = l.split_once('"')?;
                let n = rest.rsplit(' ').next()?.parse::<f64>().ok()?;
                (n > 0.0).then(|| format!("{reason} {n:.0}"))
            })
            .collect();
        Ok((
            metric_sum(&body, "tracer_traced_processes", &[]),
            metric_sum(&body, "tracer_events_lost_total", &[]),
            reasons.join(", "),
        ))
    }

    fn stop(self) {
        drop(self);
    }
}

/// User-space processes running now (kernel threads have an empty command
/// line): what `serve --all` could trace.
pub(crate) fn user_processes() -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| !c.is_empty()))
        .count()
}

/// The getppid and the connect loop at full speed, each driven from its own
/// thread, until `until`, when `at_until` runs with both still busy. Returns
/// the ns per call of the rounds of each that ended before `until`: a round
/// ending after it ran partly with the other loop stopped, or with the
/// tracer being stopped.
pub(crate) fn side_by_side<T>(
    getppid: &mut Loop,
    connect: &mut Loop,
    until: Instant,
    at_until: impl FnOnce() -> T,
) -> Result<(Vec<f64>, Vec<f64>, T)> {
    let rounds = |lp: &mut Loop, calls: u64| -> Result<Vec<f64>> {
        let mut ns = Vec::new();
        loop {
            let round = lp.run(calls)?;
            if Instant::now() > until {
                return Ok(ns);
            }
            ns.push(round);
        }
    };
    thread::scope(|s| {
        let g = s.spawn(|| rounds(getppid, GETPPID_ROUND));
        let c = s.spawn(|| rounds(connect, CONNECT_ROUND));
        thread::sleep(until.saturating_duration_since(Instant::now()));
        let seen = at_until();
        let g = g.join().map_err(|_| "the getppid loop's thread panicked")?;
        let c = c.join().map_err(|_| "the connect loop's thread panicked")?;
        Ok((g?, c?, seen))
    })
}

/// The two loops side by side for `window` from now, nothing else done
/// meanwhile: their rounds' ns per call.
fn both_for(
    getppid: &mut Loop,
    connect: &mut Loop,
    window: Duration,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (g, c, ()) = side_by_side(getppid, connect, Instant::now() + window, || {})?;
    Ok((g, c))
}

/// Tasks (processes and threads) created on the machine since boot, from
/// /proc/stat.
pub(crate) fn tasks_created() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("processes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The start or end of a node-mode window: tracer's CPU time and the
/// machine's task count, read together.
#[derive(Clone, Copy)]
pub(crate) struct Mark {
    at: Instant,
    cpu_ns: u64,
    tasks: u64,
}

impl Mark {
    fn now(tracer: &NodeTracer) -> Self {
        Self {
            at: Instant::now(),
            cpu_ns: cpu_and_peak_rss(tracer.pid()).0,
            tasks: tasks_created(),
        }
    }
}

/// One node-mode window's figures.
pub(crate) struct NodeWindow {
    seconds: f64,
    cpu_percent: f64,
    peak_rss_kib: u64,
    traced: f64,
    processes: usize,
    /// Whatever starts on the node is traced, and a new program can cost
    /// tracer far more than a running one (its files probed, its stacks
    /// unwound): this tells a quiet window from a busy one.
    tasks_started: u64,
    lost: f64,
    /// By reason, those not zero.
    lost_reasons: String,
}

impl NodeWindow {
    /// Between two marks; the rest read now.
    fn read(tracer: &NodeTracer, start: Mark, end: Mark) -> Result<Self> {
        let seconds = (end.at - start.at).as_secs_f64();
        let (_, peak_rss_kib) = cpu_and_peak_rss(tracer.pid());
        let (traced, lost, lost_reasons) = tracer.scrape()?;
        Ok(Self {
            seconds,
            cpu_percent: end.cpu_ns.saturating_sub(start.cpu_ns) as f64 / 1e9 / seconds * 100.0,
            peak_rss_kib,
            traced,
            processes: user_processes(),
            tasks_started: end.tasks.saturating_sub(start.tasks),
            lost,
            lost_reasons,
        })
    }

    fn row(&self, node: &str) -> String {
        format!(
            "| {node} | {:.2}% of a core | {:.1} MiB | {:.0} of {} | {} | {:.0}{} |",
            self.cpu_percent,
            self.peak_rss_kib as f64 / 1024.0,
            self.traced,
            self.processes,
            self.tasks_started,
            self.lost,
            if self.lost_reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.lost_reasons)
            }
        )
    }

    fn json(&self) -> Value {
        json!({"seconds": self.seconds, "cpu_percent": self.cpu_percent,
               "peak_rss_kib": self.peak_rss_kib, "traced_processes": self.traced,
               "user_processes": self.processes, "tasks_started": self.tasks_started,
               "events_lost": self.lost, "events_lost_reasons": self.lost_reasons})
    }
}

/// `tracer serve --all` on this machine: idle, then under two loops at full
/// speed, with the loops' cost per call against their untraced rounds.
pub(crate) fn node_mode(env: &Env, report: &mut Report) -> Result<()> {
    let window = NODE_WINDOW.as_secs();
    eprintln!("bench: node mode, idle ({window} s)");
    let tracer = NodeTracer::start(env)?;
    let start = Mark::now(&tracer);
    thread::sleep(NODE_WINDOW);
    let idle = NodeWindow::read(&tracer, start, Mark::now(&tracer))?;
    tracer.stop();

    eprintln!(
        "bench: node mode, busy ({window} s, the floor {} s, untraced rounds around them)",
        NODE_FLOOR_WINDOW.as_secs()
    );
    let mut getppid = Loop::start(env, "getppid")?;
    let mut connect = Loop::start(env, "connect")?;
    let (mut g_base, mut c_base) = both_for(&mut getppid, &mut connect, NODE_BASELINE)?;
    let tracer = NodeTracer::start(env)?;
    let start = Mark::now(&tracer);
    let (g_traced, c_traced, end) =
        side_by_side(&mut getppid, &mut connect, start.at + NODE_WINDOW, || {
            Mark::now(&tracer)
        })?;
    let busy = NodeWindow::read(&tracer, start, end)?;
    tracer.stop();
    let (g_after, c_after) = both_for(&mut getppid, &mut connect, NODE_BASELINE)?;
    // The floor under the same load: the empty programs on the same
    // tracepoints, which run for every process as serve --all's do (issue
    // 20's target for a syscall holds for serve --all too).
    let floor = Attached::start(env, Tool::Floor, &Point::Syscall, &getppid)?;
    let (g_floor, c_floor) = both_for(&mut getppid, &mut connect, NODE_FLOOR_WINDOW)?;
    drop(floor);
    let (g_last, c_last) = both_for(&mut getppid, &mut connect, NODE_BASELINE)?;
    getppid.quit();
    connect.quit();
    g_base.extend(g_after);
    g_base.extend(g_last);
    c_base.extend(c_after);
    c_base.extend(c_last);

    let base_secs = NODE_BASELINE.as_secs();
    let floor_secs = NODE_FLOOR_WINDOW.as_secs();
    let _ = writeln!(
        report.md,
        "\n## Node mode\n\n`tracer serve --all` (every process on the machine, each from its \
         next syscall), /metrics on loopback, for {window} s: idle (nothing started by the \
         bench), then busy (a getppid loop and a connect loop at full speed, each its own \
         process). CPU is tracer's user + system time over the window; processes traced is \
         its `tracer_traced_processes` at the end of the window, of the user-space processes \
         running then; tasks started are the processes and threads created on the machine \
         in the window (/proc/stat), the bench's included: tracer traces them all, so the \
         figures hold for this machine's activity during the run.\n\n\
         | node | tracer CPU | tracer peak RSS | processes traced | tasks started | events lost |\n\
         |---|---|---|---|---|---|\n{}\n{}\n\n\
         Per call on the busy node: each loop's rounds in the {window} s under `serve --all` \
         and in {floor_secs} s with the floor's empty programs on the same tracepoints, \
         against its untraced rounds in {base_secs} s before, between and after, both \
         loops running throughout; medians of the rounds that ended within each window \
         (range: the traced rounds' spread).\n\n\
         | call | rounds untraced / floor / traced | untraced | floor adds | under serve --all \
         | added | ratio | added / floor's |\n\
         |---|---|---|---|---|---|---|---|",
        idle.row("idle"),
        busy.row("busy: getppid + connect loops"),
    );
    let mut calls = Vec::new();
    let mut added = Vec::new();
    let mut against_floor = Vec::new();
    for (name, base, floor, traced) in [
        ("getppid (syscall)", &g_base, &g_floor, &g_traced),
        (
            "connect to loopback (+socket, close)",
            &c_base,
            &c_floor,
            &c_traced,
        ),
    ] {
        if base.is_empty() || floor.is_empty() || traced.is_empty() {
            return Err(format!(
                "node mode: no round of {name} ended within a window"
            ));
        }
        let (base_med, floor_med, med) = (median(base), median(floor), median(traced));
        let (lo, hi) = extremes(traced);
        let (lo, hi) = (lo - base_med, hi - base_med);
        let (floor_added, tracer_added) = (floor_med - base_med, med - base_med);
        let against =
            times(tracer_added, floor_added).map_or("-".to_string(), |r| format!("{r:.2}x"));
        let _ = writeln!(
            report.md,
            "| {name} | {} / {} / {} | {base_med:.0} ns | {floor_added:+.0} ns | {med:.0} ns \
             | {tracer_added:+.0} ns ({lo:+.0}..{hi:+.0}) | {:.2}x | {} |",
            base.len(),
            floor.len(),
            traced.len(),
            med / base_med,
            against
        );
        let short = name.split_whitespace().next().unwrap_or(name);
        added.push(format!(
            "{short} {tracer_added:+.0} ns ({:.2}x)",
            med / base_med
        ));
        against_floor.push((name, versus(tracer_added, floor_added, "the floor's cost")));
        calls.push(json!({
            "call": name, "untraced_rounds": base, "floor_rounds": floor,
            "traced_rounds": traced, "untraced_ns": base_med, "floor_added_ns": floor_added,
            "traced_ns": med, "added_ns": tracer_added, "ratio": med / base_med,
        }));
    }
    report.notes.push(format!(
        "node mode (serve --all): idle {:.2}% of a core, peak RSS {:.1} MiB, {:.0} processes \
         traced; busy {:.2}% of a core, {:.1} MiB; per call {}",
        idle.cpu_percent,
        idle.peak_rss_kib as f64 / 1024.0,
        idle.traced,
        busy.cpu_percent,
        busy.peak_rss_kib as f64 / 1024.0,
        added.join(", ")
    ));
    // Issue 20's syscall target (the connect's is against bpftrace, which
    // node mode has no counterpart of).
    if let Some((name, ratio)) = against_floor.first() {
        report.notes.push(format!(
            "{name}, under serve --all on the busy node: tracer adds {ratio} (target: at \
             most 1.5x)"
        ));
    }
    report.json["node_mode"] = json!({
        "window_s": window, "baseline_window_s": base_secs,
        "idle": idle.json(), "busy": busy.json(), "per_call": calls,
    });
    Ok(())
}
