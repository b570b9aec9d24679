//! `tracer`: where a process's wall time goes on the network edge, measured
//! from outside with eBPF.
//!
//! Data flows one way through the modules: `attach` (load and hook the
//! probes) -> `collect` (ring buffer and maps) -> `aggregate` (each kind's
//! state: `dns`, `connect`, `tls`, `slow_io`; one `account` for all) ->
//! `render` (tables, JSON, top) and `export` (metrics). `session` runs one
//! trace. ARCHITECTURE.md has the layers and the rules.

mod aggregate;
mod attach;
mod attribute;
mod btf;
mod cli;
mod collect;
mod connect;
mod container;
mod decode;
mod dns;
mod elf;
mod error;
mod export;
#[cfg(test)]
mod fuzz;
mod golang;
mod http;
mod intake;
mod kernel;
mod kind;
mod mapped;
mod peer;
mod probing;
mod python;
mod render;
mod session;
mod slow_io;
mod status;
mod syscall_names;
mod target;
mod tls;
mod units;
mod unwind;
mod unwind_table;

use std::{path::PathBuf, time::Duration};

use clap::Parser as _;

use crate::{
    cli::{Cli, Command},
    error::{EXIT_OK, UsageError, exit_code},
    session::{Output, Targets},
};

/// The static (musl) build's allocator: musl's own made the collector
/// three times as costly per event as with glibc's (`bench --only
/// footprint`, 10,000 lookups/s: 4.8% and 5.4% of a core against 1.6% and
/// 1.8%).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() {
    // One heap for every thread: records decoded by the ring buffer's
    // reader thread and freed by the collector's gave glibc's reader arena
    // 12 MiB more at its peak (`bench --only node`, busy: 86.4 against
    // 74.5 MiB; 75.2 with one arena), at no cost in CPU that the bench
    // could tell. (The reader decodes nothing now, but the buffers it
    // fills still pass to the collector's thread, which shrinks them.)
    #[cfg(target_env = "gnu")]
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let cli = Cli::try_parse().unwrap_or_else(|err| exit_with_usage(err));
    status::set_quiet(cli.quiet);
    let level = match cli.verbose {
        _ if cli.quiet => log::LevelFilter::Error,
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    // As tracer's other messages: `tracer: warning: ...`.
    env_logger::Builder::new()
        .filter_level(level)
        .format(|out, record| {
            use std::io::Write as _;
            let level = match record.level() {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                log::Level::Info => "",
                log::Level::Debug => "debug: ",
                log::Level::Trace => "trace: ",
            };
            writeln!(out, "tracer: {level}{}", record.args())
        })
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

/// Help and version go to stdout as clap writes them; a usage error becomes
/// one line on stderr (what is wrong, and the hint clap had), exit code 2.
fn exit_with_usage(err: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    eprintln!("{}", one_line(&err.render().to_string()));
    std::process::exit(error::EXIT_USAGE);
}

/// clap's multi-line message as one line: blank lines, the usage line and
/// "For more information" dropped, the rest joined.
fn one_line(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
        .collect();
    let text = parts.join("; ");
    format!(
        "tracer: {}; see tracer --help",
        text.strip_prefix("error: ").unwrap_or(&text)
    )
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // The signals are ours before we say we are attached.
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        eprintln!("tracer: floor attached");
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(ebpf);
    Ok(())
}

/// An output file is checked before tracing, not after: a typo in a path
/// must not cost the user the trace. Opening for append creates the file
/// (written at the end) and leaves an existing one as it is until then.
fn writable(path: Option<PathBuf>, what: &str) -> anyhow::Result<Option<PathBuf>> {
    if let Some(p) = &path
        && p.as_os_str() != "-"
    {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .map_err(|e| UsageError(format!("cannot write {what} to {}: {e}", p.display())))?;
    }
    Ok(path)
}

/// Prints the man page or a shell's completions, made from the command
/// line's own definition (for `cargo xtask dist`'s package).
fn generate(what: crate::cli::Generated) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    use clap_complete::Shell;

    use crate::cli::Generated;
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    let shell = match what {
        Generated::Man => {
            clap_mangen::Man::new(cmd).render(&mut out)?;
            return Ok(());
        }
        Generated::Bash => Shell::Bash,
        Generated::Zsh => Shell::Zsh,
        Generated::Fish => Shell::Fish,
    };
    cmd.set_bin_name("tracer");
    cmd.build();
    // try_: a closed pipe is an error to report, not a panic.
    clap_complete::Generator::try_generate(&shell, &cmd, &mut out)?;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Floor(a) => return floor(a),
        Command::Generate(a) => return generate(a.what),
        _ => {}
    }
    raise_open_file_limit();
    let (target, duration, output) = match cli.command {
        Command::Floor(_) | Command::Generate(_) => unreachable!("handled above"),
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
                caps: export::SeriesCaps {
                    targets: a.max_targets as usize,
                    processes: a.max_processes as usize,
                },
                labels: a.labels,
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
                json: writable(a.json, "the JSON report")?,
                flamegraph: writable(a.flamegraph, "the flame graph")?,
                folded: writable(a.folded, "the folded stacks")?,
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
    let cgroup = match &target.container {
        Some(id) => {
            let root = target::cgroup2_root().ok_or_else(|| {
                UsageError("--container: no cgroup v2 hierarchy is mounted".into())
            })?;
            Some(container::cgroup_dir_of_container(id, &root).map_err(UsageError)?)
        }
        None => target.cgroup.clone(),
    };
    let mut node = match (&cgroup, target.all || target.netns.is_some()) {
        (Some(path), _) => Some((
            target::cgroup_scope(path)?,
            match &target.container {
                Some(id) => format!("every process in container {id}"),
                None => format!("every process in cgroup {}", path.display()),
            },
        )),
        (None, true) => Some((
            target::NodeScope {
                cgroup_id: 0,
                cgroup_level: 0,
                netns: 0,
            },
            "every process".to_string(),
        )),
        (None, false) => None,
    };
    if let (Some(path), Some((scope, what))) = (&target.netns, node.as_mut()) {
        scope.netns = target::netns_scope(path)?;
        what.push_str(&format!(" in network namespace {}", path.display()));
    }
    let probe_options = attach::ProbeOptions {
        call_sites: !target.no_call_sites,
        http: !target.no_http,
        http_tls: target.http_tls,
        max_routes: target.max_routes,
        ring_bytes: target.ring_bytes(node.is_some()),
        node: node.as_ref().map(|(scope, _)| *scope),
    };
    let targets = Targets::resolve(&target.pids, &target.command, node.map(|(_, what)| what))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(session::run(targets, duration, output, probe_options))
}

/// Raises the soft limit on open files to the hard one, as bcc and
/// bpftrace do: every probe, map and traced program file holds a
/// descriptor, and node mode meets every program on the machine.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                log::debug!("could not raise the open-file limit");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_usage_error_is_one_line_with_its_hint() {
        let rendered = "error: unexpected argument '-1' found\n\n  tip: to pass '-1' as a value, use '-- -1'\n\nUsage: tracer top [OPTIONS] [-- <CMD>...]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            super::one_line(rendered),
            "tracer: unexpected argument '-1' found; tip: to pass '-1' as a value, use '-- -1'; see tracer --help"
        );
    }
}
