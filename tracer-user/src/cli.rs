//! Command line: what a user types. `--help` is the manual.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::render::ShareOf;

#[derive(Debug, Parser)]
#[command(
    name = "tracer",
    version,
    about = "Where a program's wall time goes on the network edge (DNS lookups, TCP connects, \
             TLS reads and writes, slow syscalls) and which line of code made each call, \
             measured from outside with eBPF, no code change, no restart.",
    long_about = None,
    after_help = "Examples:\n  \
        tracer top --pid 4242                  live table of the slowest calls\n  \
        tracer report --pid 4242 --duration 30s\n  \
        tracer report -- curl -s http://127.0.0.1:8080/\n  \
        tracer serve --pid 4242                Prometheus metrics on 127.0.0.1:9464/metrics\n\n\
        Needs root (or CAP_BPF + CAP_PERFMON). Exit codes: 0 done (also when the target \
        exited), 1 tracing failed, 2 bad input (unknown PID, bad option)."
)]
pub struct Cli {
    /// Show diagnostics, including messages from the kernel programs (-vv: more)
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print only the report and errors: no status lines, no progress, no warnings
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Live table of the slowest calls, redrawn every interval; q or Ctrl-C to stop
    #[command(after_help = "Examples:\n  \
        tracer top --pid 4242                  the slowest targets by total time, every second\n  \
        tracer top --pid 4242 --sort p99 -n 20 the 20 worst by p99\n  \
        tracer top --pid 4242 | tee top.log    piped: plain snapshots, one after the other")]
    Top(TopArgs),
    /// Trace until the duration ends, Ctrl-C, or the target exits; then print the profile
    #[command(after_help = "Examples:\n  \
        tracer report --pid 4242 --duration 30s\n  \
        tracer report --pid 4242 --json before.json --flamegraph fg.svg\n  \
        tracer report --pid 4242 --baseline before.json        after a fix: what changed\n  \
        tracer report --pid 4242 --events slow.jsonl --min-latency 10ms\n  \
        tracer report -- python3 app.py                        start and trace a command")]
    Report(ReportArgs),
    /// Serve what is traced as Prometheus metrics on /metrics, until Ctrl-C or the target exits
    #[command(after_help = "Example:\n  \
        tracer serve --pid 4242 --listen 127.0.0.1:9464\n  \
        curl -s http://127.0.0.1:9464/metrics | grep tracer_call_duration_seconds_count\n  \
        tracer serve --all --listen 0.0.0.0:9464   # node agent: every process on the machine\n\n\
        Metrics: tracer_call_duration_seconds{kind,target,process} (histogram), \
        tracer_dns_queries_total{type,rcode,server}, tracer_tls_bytes_total{direction,peer}, \
        tracer_connects_total{peer,result}, tracer_events_lost_total{reason}, \
        tracer_thread_seconds_total{state}, tracer_traced_processes, tracer_build_info. \
        Prometheus configs, alert rules, Kubernetes manifests and a Grafana dashboard: deploy/ in the repository.")]
    Serve(ServeArgs),
    /// Benchmark only: attach empty programs to the same points, until Ctrl-C
    #[command(hide = true)]
    Floor(FloorArgs),
    /// Packaging: print the man page (roff) or a shell's completions
    #[command(hide = true)]
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to print
    #[arg(value_enum)]
    pub what: Generated,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Generated {
    /// The man page, tracer(1), in roff
    Man,
    /// Completions for bash
    Bash,
    /// Completions for zsh
    Zsh,
    /// Completions for fish
    Fish,
}

#[derive(Debug, Args)]
pub struct FloorArgs {
    /// Empty programs on the raw sys_enter and sys_exit tracepoints
    #[arg(long)]
    pub syscalls: bool,
    /// Empty uprobe and uretprobe on FILE:SYMBOL (repeatable)
    #[arg(long, value_name = "FILE:SYMBOL")]
    pub uprobe: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Process to trace (all its threads, and children it forks while traced);
    /// repeat or separate with commas for several
    #[arg(short, long = "pid", value_name = "PID", value_delimiter = ',',
          required_unless_present_any = ["command", "all", "cgroup", "container", "netns"], value_parser = parse_pid)]
    pub pids: Vec<u32>,

    /// Node mode: every process on the machine, each traced from its next
    /// syscall, as processes come and go (the tracer itself excepted)
    #[arg(long, conflicts_with_all = ["pids", "command"])]
    pub all: bool,

    /// Node mode for one cgroup v2 directory (e.g. a container's or a
    /// systemd service's): the processes in it and in the cgroups below it
    #[arg(long, value_name = "PATH", conflicts_with_all = ["pids", "command"])]
    pub cgroup: Option<std::path::PathBuf>,

    /// Node mode for one network namespace: its file, as `ip netns add`
    /// makes it (/run/netns/NAME) or /proc/PID/ns/net; with --cgroup or
    /// --container, only processes in both
    #[arg(long, value_name = "PATH", conflicts_with_all = ["pids", "command"])]
    pub netns: Option<std::path::PathBuf>,

    /// Node mode for one container (Docker, containerd, CRI-O): its id, or
    /// the first 12 or more hex digits of it, as `docker ps` or `crictl ps`
    /// show it
    #[arg(long, value_name = "ID", conflicts_with_all = ["pids", "command", "cgroup", "all"])]
    pub container: Option<String>,

    /// Start this command and trace it from its first syscall
    #[arg(last = true, value_name = "CMD", conflicts_with_all = ["pids", "all", "cgroup", "container", "netns"])]
    pub command: Vec<String>,

    /// Take no stacks: no call sites, a little less overhead per lookup,
    /// connect and SSL call (see the README's Performance section)
    #[arg(long)]
    pub no_call_sites: bool,

    /// Read no HTTP request lines: no "Requests by endpoint". By default
    /// the method and path of each request a traced server reads on a
    /// connection it accepted are read (never the query string, headers or
    /// body)
    #[arg(long)]
    pub no_http: bool,

    /// Read the request lines of TLS servers too: the first plaintext an
    /// SSL read returns for each request on a connection the server
    /// accepted (at most 256 bytes, looked at in the kernel; only the
    /// method and path leave it). Off by default: it reads decrypted bytes
    #[arg(long, conflicts_with = "no_http")]
    pub http_tls: bool,

    /// Keep at most N HTTP routes (method and path, with ids as `:id`);
    /// requests to the others are counted under `other`
    #[arg(long, value_name = "N", default_value_t = crate::http::DEFAULT_MAX_ROUTES,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=10000), usize::from))]
    pub max_routes: usize,

    /// Size of the kernel-to-tracer event ring buffer (a power of two from
    /// 4KiB to 1GiB; default 4MiB for named processes, 16MiB in node mode).
    /// Events that find it full are counted as lost and reported;
    /// in-kernel syscall counts stay exact either way
    #[arg(long, value_name = "SIZE", value_parser = parse_ring_size)]
    pub ring_size: Option<u32>,
}

impl TargetArgs {
    /// The ring buffer's size: as asked, else 4 MiB for named processes
    /// (the kernel maps it twice, so it is twice that in RSS; it need hold
    /// only what comes while the reader thread waits for a core, see
    /// `intake`) and 16 MiB in node mode, where every process on the node
    /// without unwind tables yet may send 1 MiB of stack copies at once.
    pub fn ring_bytes(&self, node_mode: bool) -> u32 {
        self.ring_size.unwrap_or(if node_mode {
            tracer_common::EVENT_RING_BYTES
        } else {
            4 << 20
        })
    }
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Redraw every INTERVAL (e.g. 1s, 500ms)
    #[arg(short, long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Rows per table
    #[arg(short = 'n', long = "rows", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub rows: u32,

    /// Sort the targets by this column
    #[arg(short, long, value_enum, default_value = "total")]
    pub sort: crate::render::top::SortBy,

    /// Stop after this long (default: until Ctrl-C or the target exits)
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// What shares are shares of: busy time (a server's: its requests' time,
    /// each from its first read to its response's last write; anything
    /// else's: its threads' time) or all the threads' wall time
    #[arg(long, value_enum, default_value = "busy")]
    pub share_of: ShareOf,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Stop after this long (e.g. 10s, 2m; default: until Ctrl-C or the target exits)
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Rows per table
    #[arg(short = 'n', long = "rows", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub rows: u32,

    /// Also write the report as JSON to FILE ("-" for standard output, instead of the tables)
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write a flame graph (SVG) of the time by call site to FILE
    #[arg(long, value_name = "FILE")]
    pub flamegraph: Option<PathBuf>,

    /// Write the same as folded stacks (`frame;frame;call value`, microseconds) to FILE,
    /// for flamegraph.pl, inferno or speedscope
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,

    /// Compare with an earlier run's JSON report (from --json): before and after, per call
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,

    /// Stream every lookup, connect, SSL call and read or write at least --min-latency slow
    /// to FILE as it happens, one JSON object a line (fields: start_ns, pid, tid, kind,
    /// target, latency_ns, result, call_site)
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,

    /// Hide targets and call sites whose slowest call is faster than this (e.g. 10ms);
    /// with --events, the threshold of the stream [default there: 1ms]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub min_latency: Option<Duration>,

    /// What shares are shares of: busy time (a server's: its requests' time,
    /// each from its first read to its response's last write; anything
    /// else's: its threads' time) or all the threads' wall time
    #[arg(long, value_enum, default_value = "busy")]
    pub share_of: ShareOf,

    /// Only these kinds of call, in the tree and the tables (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kind: Vec<crate::render::Kind>,

    /// Group the tree by target (kind, target, then call site), by call site, or by thread
    #[arg(long, value_enum, default_value = "target")]
    pub by: crate::render::By,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Address to serve /metrics and /healthz on (loopback by default: the
    /// metrics name hosts and peers of the traced process)
    #[arg(short, long, default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,

    /// Stop after this long (default: until Ctrl-C or the target exits)
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// At most this many targets (hosts, peers, syscalls) per kind of call;
    /// the rest add up under target="other"
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub max_targets: u32,

    /// At most this many process names per kind of call (node mode runs
    /// hundreds of programs); the rest add up under process="other"
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub max_processes: u32,

    /// Add these labels to every call series: the container id (12 digits)
    /// and the Kubernetes pod UID of the calling process (lookup, connect
    /// and TLS series are then split per process name and container too)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LABEL")]
    pub labels: Vec<crate::container::ExtraLabel>,
}

fn parse_pid(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("PID 0 is the kernel's idle task, not a process".into()),
        Ok(pid) if pid <= i32::MAX as u32 => Ok(pid),
        _ => Err(format!(
            "`{s}` is not a process id (a positive whole number)"
        )),
    }
}

/// A byte size: `65536`, `64KiB` (or `64K`), `16MiB` (or `16M`), `1GiB`.
/// The kernel wants a ring buffer a power of two of pages long.
fn parse_ring_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("`{s}`: give a size like 64KiB or 16MiB")),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_shl(shift).filter(|b| b >> shift == n))
        .ok_or_else(|| format!("`{s}`: give a size like 64KiB or 16MiB"))?;
    if !bytes.is_power_of_two() || !(4096..=1 << 30).contains(&bytes) {
        return Err(format!(
            "`{s}`: the ring buffer must be a power of two from 4KiB to 1GiB"
        ));
    }
    Ok(bytes as u32)
}

/// Durations as people write them: `10s`, `500ms`, `2m`, `1h30m`. A bare
/// number is seconds. Zero and more than a year are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!(
                "`{s}` is not a duration: give a positive number like 10s or 500ms"
            ));
        }
        Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())?
    } else {
        humantime::parse_duration(s)
            .map_err(|e| format!("`{s}` is not a duration ({e}): write it like 10s, 500ms or 2m"))?
    };
    if d.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    if d > Duration::from_secs(366 * 24 * 3600) {
        return Err(format!("`{s}` is longer than a year"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_people_write() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-3s").is_err());
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("100000000000s").is_err());
    }

    #[test]
    fn ring_sizes_people_write() {
        assert_eq!(
            parse_ring_size("16MiB"),
            Ok(tracer_common::EVENT_RING_BYTES)
        );
        assert_eq!(parse_ring_size("64K"), Ok(64 << 10));
        assert_eq!(parse_ring_size("4096"), Ok(4096));
        assert_eq!(parse_ring_size("1GiB"), Ok(1 << 30));
        for bad in [
            "3MiB",
            "2GiB",
            "1024",
            "0",
            "lots",
            "16XB",
            "99999999999999999999G",
        ] {
            assert!(parse_ring_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_ring_is_4mib_for_named_processes_16mib_in_node_mode_unless_asked() {
        use clap::Parser as _;
        let target = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Report(r) => r.target,
            other => panic!("{other:?}"),
        };
        let named = target(&["tracer", "report", "--pid", "1"]);
        assert_eq!(named.ring_bytes(false), 4 << 20);
        assert_eq!(named.ring_bytes(true), 16 << 20);
        let asked = target(&["tracer", "report", "--all", "--ring-size", "8MiB"]);
        assert_eq!(asked.ring_bytes(true), 8 << 20);
        assert_eq!(asked.ring_bytes(false), 8 << 20);
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
