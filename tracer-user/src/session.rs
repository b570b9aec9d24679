//! One tracing run: pick the targets, attach, collect until the duration
//! ends, Ctrl-C, or the targets exit, then report and detach.

use std::{
    collections::HashSet,
    fs::File,
    io::{BufWriter, IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use log::{error, info, warn};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use tracer_common::ThreadEntry;

use crate::{
    aggregate::Aggregate,
    attach::{self, Probes},
    collect::{Collector, monotonic_ns},
    error::UsageError,
    export,
    probing::{apply_notes, probe_libraries},
    render::{EndReason, Report, ShareOf},
    status::{Progress, status},
    target::{self, LaunchedCommand, ProcessInfo},
};

/// What the user asked to trace, checked before anything is attached.
pub enum Targets {
    Pids(Vec<ProcessInfo>),
    Command(LaunchedCommand, Vec<String>),
    /// Node mode: processes are adopted by the kernel as they make syscalls.
    Node(String),
}

impl Targets {
    /// Validates PIDs, or starts the command (held before exec). Runs before
    /// the async runtime exists, because starting a command forks.
    pub fn resolve(
        pids: &[u32],
        command: &[String],
        node: Option<String>,
    ) -> Result<Self, anyhow::Error> {
        if let Some(what) = node {
            attach::preflight::check_privileges()?;
            return Ok(Targets::Node(what));
        }
        if !command.is_empty() {
            // Refuse early, before the command exists, if we cannot trace it.
            attach::preflight::check_privileges()?;
            let launched = LaunchedCommand::spawn(command)?;
            return Ok(Targets::Command(launched, command.to_vec()));
        }
        let mut seen = HashSet::new();
        let mut infos = Vec::new();
        for &pid in pids {
            if pid == std::process::id() {
                return Err(UsageError(format!("PID {pid} is this tracer itself")).into());
            }
            if seen.insert(pid) {
                infos.push(target::inspect(pid)?);
            }
        }
        if infos.is_empty() {
            return Err(UsageError("give --pid PID or a command after `--`".into()).into());
        }
        Ok(Targets::Pids(infos))
    }
}

pub enum Output {
    Top {
        interval: Duration,
        sort: crate::render::top::SortBy,
        rows: usize,
        share_of: ShareOf,
    },
    Report {
        text: crate::render::TextOptions,
        json: Option<PathBuf>,
        flamegraph: Option<PathBuf>,
        folded: Option<PathBuf>,
        /// `--events FILE` and its threshold.
        events: Option<(PathBuf, Duration)>,
        baseline: Option<(PathBuf, crate::render::compare::Baseline)>,
        share_of: ShareOf,
    },
    Serve {
        listen: std::net::SocketAddr,
        caps: crate::export::SeriesCaps,
        /// `--labels`: container and pod labels on every call series.
        labels: Vec<crate::container::ExtraLabel>,
    },
}

impl Output {
    fn share_of(&self) -> ShareOf {
        match self {
            Output::Top { share_of, .. } | Output::Report { share_of, .. } => *share_of,
            Output::Serve { .. } => ShareOf::Busy,
        }
    }
}

pub async fn run(
    targets: Targets,
    duration: Option<Duration>,
    output: Output,
    probe_options: crate::attach::ProbeOptions,
) -> anyhow::Result<()> {
    let node_mode = match &targets {
        Targets::Node(what) => Some(what.clone()),
        _ => None,
    };
    let (mut launched, infos) = match targets {
        Targets::Pids(infos) => (None, infos),
        Targets::Node(_) => (None, Vec::new()),
        Targets::Command(cmd, argv) => {
            let info = ProcessInfo {
                pid: cmd.pid,
                comm: argv[0].rsplit('/').next().unwrap_or(&argv[0]).to_string(),
            };
            (Some(cmd), vec![info])
        }
    };

    // The port first: one in use is bad input, found before any probe.
    let mut scrapes = serve_scrapes(&output).await?;
    let events_out = open_event_stream(&output)?;
    let mut t = Tracing::start(probe_options, &output, events_out, node_mode.is_some())?;
    t.add_targets(
        &infos,
        launched.as_ref().map(|c| c.pid),
        node_mode.is_some(),
    )?;
    // Ctrl-C is ours from before we say we are tracing: one that came
    // between the two killed the tracer with its report (fresh19).
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    announce(&infos, node_mode.as_deref(), duration, &output);
    if let Some(cmd) = launched.as_mut() {
        cmd.release().context("starting the command")?;
    }
    let tick_every = match &output {
        Output::Top { interval, .. } => *interval,
        Output::Report { .. } | Output::Serve { .. } => Duration::from_millis(200),
    };
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let started = std::time::Instant::now();
    // `q` quits top, as in top(1).
    let mut keys = match &output {
        Output::Top { .. } => crate::status::Keys::start(),
        _ => None,
    };
    let progress = match &output {
        Output::Report { .. } => Progress::start(duration),
        _ => Progress::none(),
    };

    // Woken when unwind tables compiled apart are ready to be written.
    let tables_ready = t.probes.unwind_tables_ready();
    let ended = loop {
        tokio::select! {
            _ = notified(tables_ready.as_deref()) => t.write_compiled_tables(),
            _ = t.collector.readable() => {
                t.drain();
                if t.targets_gone() {
                    break EndReason::TargetExited;
                }
            }
            _ = tick.tick() => {
                // The kernel wakes us only for urgent records or a filling
                // ring: the rest is collected here.
                t.drain();
                progress.update(started.elapsed(), t.collector.events_seen(), t.collector.lost().total());
                t.look_around();
                if t.targets_gone() {
                    break EndReason::TargetExited;
                }
                if let Output::Top { rows, interval, sort, .. } = &output {
                    t.draw_top(*rows, *interval, *sort, output.share_of());
                }
            }
            Ok(mut guard) = async {
                match t.kernel_log.as_mut() {
                    Some(l) => l.readable_mut().await,
                    None => std::future::pending().await,
                }
            } => {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            Some(reply) = scrapes.recv() => {
                if let Output::Serve { caps, labels, .. } = &output {
                    let report = t.snapshot(EndReason::Running, monotonic_ns(), ShareOf::Busy);
                    let lost = t.collector.lost();
                    let _ = reply.send(export::exposition(&t.agg, &report, &lost, *caps, labels));
                }
            }
            Some(key) = async {
                match keys.as_mut() {
                    Some(k) => k.rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if key == b'q' || key == b'Q' {
                    break EndReason::Interrupted;
                }
            }
            _ = &mut deadline => break EndReason::Duration,
            _ = sigint.recv() => break EndReason::Interrupted,
            _ = sigterm.recv() => break EndReason::Interrupted,
        }
    };

    progress.finish();
    drop(keys);
    // The trace ends now: the kernel's aggregates are read first, then the
    // probes detach (which can take a while with many uprobes: what happens
    // meanwhile is after the end and not counted).
    let report = t.snapshot(ended, monotonic_ns(), output.share_of());
    write_events(&mut t.agg, t.events_out.as_mut());
    if let Some(out) = t.events_out.as_mut() {
        let _ = out.flush();
    }
    if let Some(cmd) = &launched {
        match cmd.try_wait() {
            Some(status) => info!("command exited: {}", target::describe_wait_status(status)),
            None if ended != EndReason::TargetExited => {
                warn!("the command (PID {}) is still running, untraced", cmd.pid)
            }
            None => {}
        }
    }
    deliver(output, report, ended)?;
    if ended == EndReason::TargetExited {
        status!("tracer: the traced process exited; report complete");
    }
    // Detach after the report is out: each uprobe takes the kernel about a
    // tenth of a second to remove.
    let t0 = std::time::Instant::now();
    drop(t);
    log::debug!("detached in {:.0?}", t0.elapsed());
    Ok(())
}

/// With `serve`, listens on its port; the scrapes come through the
/// returned channel (closed at once otherwise).
async fn serve_scrapes(
    output: &Output,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<export::http::ScrapeRequest>> {
    let (scrape_tx, scrapes) = tokio::sync::mpsc::channel(16);
    if let Output::Serve { listen, .. } = output {
        let listener = export::http::bind(*listen).await?;
        export::http::spawn(listener, scrape_tx);
    }
    Ok(scrapes)
}

/// `--events FILE`, opened before anything is attached: a path we cannot
/// write is bad input.
fn open_event_stream(output: &Output) -> anyhow::Result<Option<BufWriter<File>>> {
    let Output::Report {
        events: Some((path, _)),
        ..
    } = output
    else {
        return Ok(None);
    };
    let file = File::create(path).map_err(|e| {
        UsageError(format!(
            "cannot write the event stream to {}: {e}",
            path.display()
        ))
    })?;
    Ok(Some(BufWriter::new(file)))
}

/// Says what is traced, for how long, and where the metrics are.
fn announce(
    infos: &[ProcessInfo],
    node_mode: Option<&str>,
    duration: Option<Duration>,
    output: &Output,
) {
    let names: Vec<String> = infos
        .iter()
        .map(|i| format!("{} ({})", i.pid, i.comm))
        .collect();
    let until = match duration {
        Some(d) => format!("for {}", humantime::format_duration(d)),
        None if node_mode.is_some() => "until Ctrl-C".to_string(),
        None => "until Ctrl-C or exit".to_string(),
    };
    match node_mode {
        Some(what) => status!("tracer: tracing {what}, each from its next syscall, {until}"),
        None => status!("tracer: tracing PID {} {until}", names.join(", ")),
    }
    if let Output::Serve { listen, .. } = output {
        status!("tracer: serving metrics on http://{listen}/metrics");
    }
}

/// A run while it traces: the probes, what collects from them, and what
/// the collected events add up to.
struct Tracing {
    // Dropped in this order: the logger and the collector hold the probes'
    // maps.
    kernel_log: Option<AsyncFd<aya_log::EbpfLogger<&'static dyn log::Log>>>,
    collector: Collector,
    probes: Probes,
    agg: Aggregate,
    events_out: Option<BufWriter<File>>,
    node_mode: bool,
    last_scan_ns: u64,
}

impl Tracing {
    /// Loads and attaches the probes, and sets up what the output needs.
    fn start(
        probe_options: crate::attach::ProbeOptions,
        output: &Output,
        events_out: Option<BufWriter<File>>,
        node_mode: bool,
    ) -> anyhow::Result<Self> {
        let max_routes = probe_options.max_routes;
        let mut probes = Probes::load_and_attach(probe_options)?;
        let collector = Collector::new(&mut probes)?;
        // Messages of the kernel programs (aya-log), shown with -v.
        let kernel_log = match aya_log::EbpfLogger::init(&mut probes.ebpf) {
            // SAFETY: the logger owns its ring buffer fd for as long as it
            // lives inside the AsyncFd.
            Ok(logger) => {
                unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
                    .ok()
            }
            Err(e) => {
                log::debug!("no kernel log: {e}");
                None
            }
        };
        let mut agg = Aggregate::new(monotonic_ns());
        agg.set_max_routes(max_routes);
        if let Output::Serve { labels, .. } = output
            && !labels.is_empty()
        {
            agg.keep_owner_series();
        }
        if let Output::Report {
            events: Some((_, min)),
            ..
        } = output
        {
            agg.keep_slow_calls(min.as_nanos() as u64);
        }
        Ok(Self {
            kernel_log,
            collector,
            probes,
            agg,
            events_out,
            node_mode,
            last_scan_ns: monotonic_ns(),
        })
    }

    /// Starts tracing a process the user named.
    /// The named processes (`launched`: the command tracer starts, probed
    /// ahead of what it will load); in node mode, the libraries the tracer
    /// maps (libc), which are the system's: probed for every process now,
    /// so short-lived processes are covered from their first call.
    fn add_targets(
        &mut self,
        infos: &[ProcessInfo],
        launched: Option<u32>,
        node_mode: bool,
    ) -> anyhow::Result<()> {
        if let Some(pid) = launched {
            self.probes.expect_command(pid);
        }
        for info in infos {
            self.add_target(info.pid, &info.comm)?;
        }
        if node_mode {
            let own = std::process::id();
            // The system's libc, named once for every process mapping it.
            if self.probes.call_sites() {
                self.agg.sites_mut().warm_up(own);
                self.agg.sites_mut().forget_process(own);
            }
            probe_libraries(&mut self.probes, &mut self.agg, own, false);
        }
        Ok(())
    }

    fn add_target(&mut self, pid: u32, comm: &str) -> anyhow::Result<()> {
        // Before its calls come: naming the first stack held the
        // collector 40 to 100 ms while the ring filled.
        if self.probes.call_sites() {
            self.agg.sites_mut().warm_up(pid);
        }
        self.probes.trace_process(pid)?;
        self.collector
            .seed_blocked_threads(pid, self.agg.start_ns());
        self.collector.seed_accepted_connections(pid);
        // Listed after the PID is in the kernel's set: a thread created from
        // here on is reported by the kernel, one created before is listed.
        self.agg
            .add_target(pid, comm.to_string(), &target::threads_of(pid));
        probe_libraries(&mut self.probes, &mut self.agg, pid, false);
        Ok(())
    }

    /// Writes the unwind tables compiled since the last call.
    fn write_compiled_tables(&mut self) {
        let notes = self.probes.poll_unwind_tables();
        apply_notes(self.probes.node_mode(), &mut self.agg, notes);
    }

    fn drain(&mut self) {
        drain(
            &mut self.collector,
            &mut self.agg,
            &mut self.probes,
            self.events_out.as_mut(),
        );
    }

    /// Whether every process named (and its children) has exited; never in
    /// node mode.
    fn targets_gone(&self) -> bool {
        !self.node_mode && self.agg.live_pids().is_empty()
    }

    /// New children, libraries loaded since the last look (at most once a
    /// second), and processes that exited unseen.
    fn look_around(&mut self) {
        let now = monotonic_ns();
        let rescan = now.saturating_sub(self.last_scan_ns) >= 1_000_000_000;
        if rescan {
            self.last_scan_ns = now;
            self.collector.forget_exited(&self.agg.live_pids());
            self.collector.retire(&self.agg.exited_pids());
            let folded = self.agg.fold_exited_processes();
            self.collector.fold(&folded);
            for pid in folded.keys() {
                self.probes.forget_process(*pid);
            }
        }
        for pid in self.agg.live_pids() {
            // Node mode learns of new code from the kernel's mmap records
            // only: rescanning every process would cost with their number.
            if rescan && !self.node_mode {
                probe_libraries(&mut self.probes, &mut self.agg, pid, true);
            }
            if !target::is_alive(pid) {
                // Drain first: the exit event carries the exact time.
                let agg = &mut self.agg;
                self.collector.drain(|batch| agg.apply_batch(batch));
                self.agg.mark_exited(pid, now);
            }
        }
    }

    /// Redraws `top`.
    fn draw_top(
        &mut self,
        rows: usize,
        interval: Duration,
        sort: crate::render::top::SortBy,
        share_of: ShareOf,
    ) {
        let report = self.snapshot(EndReason::Running, monotonic_ns(), share_of);
        let screen = report.to_top(
            rows,
            &humantime::format_duration(interval).to_string(),
            sort,
        );
        let mut stdout = std::io::stdout().lock();
        if stdout.is_terminal() {
            // Home and clear: redraw in place, like top.
            let _ = write!(stdout, "\x1b[H\x1b[2J{screen}");
        } else {
            let _ = writeln!(stdout, "{screen}");
        }
        let _ = stdout.flush();
    }

    fn snapshot(&mut self, ended: EndReason, now: u64, share_of: ShareOf) -> Report {
        snapshot(
            &mut self.agg,
            &mut self.collector,
            ended,
            now,
            &self.probes.tls_files,
            share_of,
        )
    }
}

/// Prints or writes the final report the output asks for.
fn deliver(output: Output, report: Report, ended: EndReason) -> anyhow::Result<()> {
    match output {
        Output::Serve { .. } => {
            let lost = report.lost.total();
            status!(
                "tracer: stopped serving metrics ({}; events lost: {lost})",
                match ended {
                    EndReason::Duration => "duration reached",
                    EndReason::TargetExited => "the target exited",
                    _ => "interrupted",
                }
            );
        }
        Output::Top { rows, sort, .. } => {
            if ended == EndReason::TargetExited {
                println!("{}", report.to_top(rows, "-", sort));
            }
        }
        Output::Report {
            text,
            json,
            flamegraph,
            folded,
            baseline,
            ..
        } => {
            let mut report = report;
            if let Some((path, baseline)) = &baseline {
                report.comparison = Some(crate::render::compare::compare(&report, baseline, path));
            }
            write_flame_graphs(&report, flamegraph.as_deref(), folded.as_deref());
            let to_stdout = json.as_deref().is_some_and(|p| p.as_os_str() == "-");
            if let Some(path) = &json {
                let text = serde_json::to_string_pretty(&report)?;
                if to_stdout {
                    println!("{text}");
                } else {
                    std::fs::write(path, text + "\n").with_context(|| {
                        format!("writing the JSON report to {}", path.display())
                    })?;
                }
            }
            if !to_stdout {
                print!("{}", report.to_text(&text));
            }
        }
    }
    Ok(())
}

/// Takes what the ring buffer holds; probes libraries mapped just now
/// before they are used; streams slow calls.
fn drain(
    collector: &mut Collector,
    agg: &mut Aggregate,
    probes: &mut Probes,
    events_out: Option<&mut std::io::BufWriter<std::fs::File>>,
) {
    collector.drain(|batch| agg.apply_batch(batch));
    write_events(agg, events_out);
    // Node mode: processes the kernel adopted, with the threads they had.
    for (pid, comm) in agg.take_adopted() {
        collector.seed_blocked_threads(pid, crate::collect::monotonic_ns());
        collector.seed_accepted_connections(pid);
        agg.add_target(pid, comm, &target::threads_of(pid));
        agg.note_new_code(pid);
    }
    for pid in agg.take_execed() {
        probes.process_execed(pid);
    }
    for pid in agg.take_new_code() {
        probe_libraries(probes, agg, pid, true);
    }
}

/// Writes the slow calls seen since the last time, one JSON line each.
fn write_events(agg: &mut Aggregate, out: Option<&mut std::io::BufWriter<std::fs::File>>) {
    let Some(out) = out else { return };
    let calls = agg.take_slow_calls();
    let requests = agg.take_request_spans();
    if calls.is_empty() && requests.is_empty() {
        return;
    }
    for call in &calls {
        if let Ok(line) = serde_json::to_string(call) {
            let _ = writeln!(out, "{line}");
        }
    }
    for span in &requests {
        let _ = writeln!(out, "{span}");
    }
    // Flushed per batch: the stream is for watching as it happens.
    if let Err(e) = out.flush() {
        warn!("writing the event stream: {e}");
    }
}

/// Writes the folded stacks and the SVG flame graph asked for. A failure
/// is reported, and costs nothing else: the report is still printed.
fn write_flame_graphs(report: &Report, svg: Option<&Path>, folded: Option<&Path>) {
    if svg.is_none() && folded.is_none() {
        return;
    }
    let lines = crate::render::flame::folded(report);
    if let Some(path) = folded {
        match std::fs::write(path, &lines) {
            Ok(()) => status!("tracer: folded stacks written to {}", path.display()),
            Err(e) => error!("writing the folded stacks to {}: {e}", path.display()),
        }
    }
    if let Some(path) = svg {
        let title = format!(
            "tracer: time by call site, PID {}",
            report
                .processes
                .iter()
                .filter(|p| p.parent.is_none() && crate::aggregate::is_process(p.pid))
                .map(|p| p.pid.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        match crate::render::flame::write_svg(&lines, path, &title) {
            Ok(()) => status!("tracer: flame graph written to {}", path.display()),
            Err(e) => error!("{e:#}"),
        }
    }
}

/// Waits for `n`, or forever without one.
async fn notified(n: Option<&tokio::sync::Notify>) {
    match n {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Copies the kernel's aggregates into `agg` and builds a report from it.
fn snapshot(
    agg: &mut Aggregate,
    collector: &mut Collector,
    ended: EndReason,
    now: u64,
    tls_files: &[String],
    share_of: ShareOf,
) -> Report {
    let stats = collector.syscall_stats();
    let mut in_flight = collector.in_flight();
    let open_lookups = collector.open_lookups();
    // Events after the maps: a process counted in them was created before,
    // so its creation record is already in the ring buffer.
    collector.drain(|batch| agg.apply_batch(batch));
    agg.refresh_names();
    // Threads with no entry in the kernel map have made no syscall since we
    // attached; one blocked in a syscall has been in it since before.
    let seen = collector.threads_seen();
    for (&pid, p) in agg.processes() {
        if p.exited_ns.is_some() {
            continue;
        }
        for (&tid, span) in &p.threads {
            if span.end_ns.is_none()
                && !seen.contains(&tid)
                && let Some((nr, args)) = target::blocked_syscall(pid, tid)
            {
                let since_start = ThreadEntry {
                    start_ns: agg.start_ns(),
                    nr,
                    args,
                    last_io_fd: -1,
                    ..Default::default()
                };
                in_flight.push((tid, since_start));
            }
        }
    }
    agg.add_name_rows(stats.keys(), |key| collector.row_name(key));
    agg.set_syscalls(stats, &in_flight, now, target::read_memory);
    agg.set_idle(collector.idle_ns(), &in_flight, now);
    agg.set_requests(collector.requests(now).into_iter().collect());
    let open = open_lookups.resolve(now, &agg.thread_owners());
    agg.set_open_lookups(&open, now);
    if ended != EndReason::Running {
        agg.finish(now);
    }
    Report::build(agg, now, ended, collector.lost(), tls_files, share_of)
}
