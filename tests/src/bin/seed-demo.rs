//! The demo `cargo xtask demo` runs: the seed's slow Flask app, rebuilt
//! (scenario/), started without tracer, then traced from outside by PID
//! while requests come in; tracer's findings next to the app's own cProfile
//! numbers; then the fix (a DNS answer without the delay), traced again and
//! compared with the first run.
//!
//!   seed-demo [--requests N] [--dns-delay-ms MS]

use std::process::ExitCode;

use tracer_tests::seed::{self, Paths, Seed};

struct Options {
    requests: u32,
    dns_delay_ms: u32,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        requests: 10,
        dns_delay_ms: 150,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> Result<u32, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} takes a whole number"))
        };
        match a.as_str() {
            "--requests" => o.requests = number("--requests")?.max(1),
            "--dns-delay-ms" => o.dns_delay_ms = number("--dns-delay-ms")?,
            "-h" | "--help" => {
                println!("seed-demo [--requests N (10)] [--dns-delay-ms MS (150)]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(o)
}

/// The paragraphs of a text report whose first line starts with one of `titles`.
fn sections(text: &str, titles: &[&str]) -> String {
    text.split("\n\n")
        .filter(|p| titles.iter().any(|t| p.trim_start().starts_with(t)))
        .map(|p| p.trim_matches('\n'))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn run(o: &Options) -> Result<(), String> {
    let paths = Paths::for_this_program("demo")?;
    let workdir = paths.workdir.clone();
    let before = workdir.join("before.json");
    let after = workdir.join("after.json");
    let flamegraph = workdir.join("flamegraph.svg");

    eprintln!(
        "demo: starting the seed scenario in a network namespace of its own: a DNS server that \
         answers after {} ms, an identity API and a code-hosting API over HTTPS, MariaDB with \
         300,000 bugs, and the Flask app (under cProfile, as the seed's author ran it)...",
        o.dns_delay_ms
    );
    let mut scenario = Seed::start(&paths, o.dns_delay_ms)?;
    eprintln!(
        "demo: the app runs as PID {} (namespace {}), with no tracer. Attaching: \
         tracer report --pid {} --flamegraph {}\n",
        scenario.app_pid,
        scenario.netns,
        scenario.app_pid,
        flamegraph.display()
    );
    let flame = flamegraph.to_string_lossy().to_string();
    let first = seed::trace_requests(
        &paths,
        &mut scenario,
        o.requests,
        &before,
        &["--flamegraph", &flame],
        true,
    )?;
    let profiled = seed::profiler_categories(&paths, o.requests)?;
    println!(
        "\nThe same {} requests, as tracer (from outside) and cProfile (inside the app) saw them:",
        o.requests
    );
    print!(
        "{}",
        seed::side_by_side(&seed::tracer_categories(&first.report), &profiled)
    );
    if let Some(((t_secs, t_lookups), (p_secs, p_lookups))) =
        seed::per_request(&first.report, "GET /overview", &profiled, o.requests)
    {
        println!(
            "Per request of GET /overview: tracer {:.1} ms and {t_lookups:.1} lookups (first read \
             to last write); cProfile {:.1} ms and {p_lookups:.1} lookups (inside the app)",
            t_secs * 1e3,
            p_secs * 1e3
        );
    }

    println!(
        "\nThe fix the seed's author wanted: no wait for the name. The DNS server now answers at \
         once; the same app, same PID, traced again and compared with the first run:\n"
    );
    scenario.set_dns_delay(0)?;
    scenario.clear_profiles()?;
    let before_arg = before.to_string_lossy().to_string();
    let second = seed::trace_requests(
        &paths,
        &mut scenario,
        o.requests,
        &after,
        &["--baseline", &before_arg],
        false,
    )?;
    println!(
        "{}",
        sections(&second.text, &["Where the", "Compared with the baseline"])
    );
    let profiled = seed::profiler_categories(&paths, o.requests)?;
    println!("\ntracer and cProfile after the fix:");
    print!(
        "{}",
        seed::side_by_side(&seed::tracer_categories(&second.report), &profiled)
    );
    scenario.down();
    println!(
        "\nFiles: {} (flame graph of the first run), {} and {} (JSON reports), {} (cProfile files \
         of the second run). Everything the demo started is stopped, its namespace deleted.",
        flamegraph.display(),
        before.display(),
        after.display(),
        paths.profiles().display(),
    );
    Ok(())
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|o| run(&o));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}
