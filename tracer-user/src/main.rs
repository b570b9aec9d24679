//! `tracer`: where a process's wall time goes on the network edge, measured
//! from outside with eBPF.
//!
//! Data flows one way through the modules: `attach` (load and hook the
//! probes) -> `collect` (ring buffer and maps) -> `aggregate` (per process,
//! syscall, peer) -> `render` (tables, JSON, top). `session` runs one trace.

mod aggregate;
mod attach;
mod attribute;
mod btf;
mod cli;
mod collect;
mod dns;
mod elf;
mod error;
mod export;
mod python;
mod render;
mod session;
mod status;
mod syscall_names;
mod target;
mod tls;
mod unwind;

use std::time::Duration;

use clap::Parser as _;

use crate::{
    cli::{Cli, Command},
    error::{EXIT_OK, UsageError, exit_code},
    session::{Output, Targets},
};

fn main() {
    let cli = Cli::parse();
    status::set_quiet(cli.quiet);
    let level = match cli.verbose {
        _ if cli.quiet => log::LevelFilter::Error,
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format_target(false)
        .format_timestamp(None)
        .init();

    let code = match run(cli) {
        Ok(()) => EXIT_OK,
        Err(err) => {
            // One line a person can act on; the chain of causes after it.
            let mut msg = format!("tracer: {err}");
            for cause in err.chain().skip(1) {
                msg.push_str(&format!(": {cause}"));
            }
            eprintln!("{msg}");
            exit_code(&err)
        }
    };
    std::process::exit(code);
}

/// `tracer floor`: empty programs attached until SIGINT or SIGTERM.
fn floor(a: &cli::FloorArgs) -> anyhow::Result<()> {
    let uprobes = a
        .uprobe
        .iter()
        .map(|u| {
            u.rsplit_once(':')
                .map(|(f, s)| (f.to_string(), s.to_string()))
                .ok_or_else(|| UsageError(format!("--uprobe {u}: write FILE:SYMBOL")).into())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ebpf = attach::attach_floor(a.syscalls, &uprobes)?;
    eprintln!("tracer: floor attached");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(ebpf);
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Floor(a) = &cli.command {
        return floor(a);
    }
    let (target, duration, output) = match cli.command {
        Command::Floor(_) => unreachable!("handled above"),
        Command::Top(a) => (
            a.target,
            a.duration,
            Output::Top {
                interval: a.interval,
                sort: a.sort,
                rows: a.rows as usize,
                share_of: a.share_of,
            },
        ),
        Command::Serve(a) => (
            a.target,
            a.duration,
            Output::Serve {
                listen: a.listen,
                max_targets: a.max_targets as usize,
            },
        ),
        Command::Report(a) => (
            a.target,
            a.duration,
            Output::Report {
                text: render::TextOptions {
                    rows: a.rows as usize,
                    by: a.by,
                    kinds: (!a.kind.is_empty()).then_some(a.kind),
                    min_latency_ns: a.min_latency.map(|d| d.as_nanos() as u64),
                },
                json: a.json,
                flamegraph: a.flamegraph,
                folded: a.folded,
                events: a
                    .events
                    .map(|path| (path, a.min_latency.unwrap_or(Duration::from_millis(1)))),
                baseline: match &a.baseline {
                    // Read now: a bad file is bad input, found before tracing.
                    Some(path) => Some((
                        path.clone(),
                        render::compare::load(path).map_err(|e| UsageError(format!("{e:#}")))?,
                    )),
                    None => None,
                },
                share_of: a.share_of,
            },
        ),
    };
    // Before the runtime starts: a command is started with fork().
    let call_sites = !target.no_call_sites;
    let targets = Targets::resolve(&target.pids, &target.command)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(session::run(targets, duration, output, call_sites))
}
