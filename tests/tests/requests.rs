//! Requests by endpoint: the seed app with two routes (GET /overview: two
//! lookups, three pages over TLS, a MySQL query; POST /repos/ID: the same
//! two lookups and one page, no database) under real servers (Werkzeug,
//! gunicorn sync and gthread, waitress, uvicorn, Node.js; gunicorn, uvicorn
//! and Node.js over TLS too, traced with `--http-tls`), traced from
//! outside. Each route's request count is exact, its request time agrees
//! with the client's own timing, each request's lookups, TLS reads and
//! MySQL wait are its own, and no byte past the request's path (query
//! string, headers, body) ever comes out of the kernel.

use std::path::Path;

use serde_json::Value;
use tracer_common::{EventKind, framed_records};
use tracer_tests::{
    seed::{self, Paths, Seed, Server},
    *,
};

fn paths() -> Paths {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bins = tracer_bin();
    Paths::new(repo, bins.parent().unwrap(), &repo.join("target/seed-test"))
}

fn endpoint<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["http_requests"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == name)
        .unwrap_or_else(|| panic!("no endpoint {name}: {:#}", report["http_requests"]))
}

/// (calls, ns) of the calls of `kind` made for an endpoint's requests to
/// targets `pick` takes.
fn calls(e: &Value, kind: &str, pick: impl Fn(&str) -> bool) -> (u64, u64) {
    e["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == kind && pick(c["target"].as_str().unwrap_or("")))
        .fold((0, 0), |(n, ns), c| {
            (
                n + c["calls"].as_u64().unwrap(),
                ns + c["total_ns"].as_u64().unwrap(),
            )
        })
}

/// (call site, calls) of an endpoint's calls of `kind` to `target`.
fn call_sites(e: &Value, kind: &str, target: &str) -> Vec<(String, u64)> {
    e["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == kind && c["target"] == target)
        .flat_map(|c| c["call_sites"].as_array().unwrap().iter())
        .map(|s| {
            (
                s["call_site"].as_str().unwrap().to_string(),
                s["calls"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The records `TRACER_DUMP_RECORDS` wrote (`framed_records`), in the
/// kernel's order.
struct Dump(Vec<u8>);

impl Dump {
    fn read(path: &Path) -> Self {
        Self(std::fs::read(path).expect("the record dump"))
    }

    fn records(&self) -> impl Iterator<Item = (Option<EventKind>, &[u8])> {
        framed_records(&self.0).map(|record| {
            let kind = record
                .first_chunk::<4>()
                .and_then(|k| EventKind::from_u32(u32::from_ne_bytes(*k)));
            (kind, record)
        })
    }

    /// The kinds of the records that hold `needle`, a stack copy's
    /// (`EventKind::Stack`) apart: a stack copy is raw stack memory, taken
    /// only until the process's unwind tables are loaded, and may hold
    /// anything the program left on its stack (the README says so). Every
    /// other record is built by our probes from what they chose to read.
    fn kinds_holding(&self, needle: &str) -> Vec<Option<EventKind>> {
        let copies = self
            .records()
            .filter(|(k, r)| *k == Some(EventKind::Stack) && contains(r, needle))
            .count();
        if copies > 0 {
            eprintln!("{needle:?} in {copies} stack copies (raw stack memory, not checked)");
        }
        self.records()
            .filter(|(k, r)| *k != Some(EventKind::Stack) && contains(r, needle))
            .map(|(k, _)| k)
            .collect()
    }

    /// Whether a request line record holds `needle`.
    fn request_line_holds(&self, needle: &str) -> bool {
        self.records()
            .any(|(k, r)| k == Some(EventKind::RequestLine) && contains(r, needle))
    }
}

/// The scenario under `server`, over TLS with `tls` (traced with
/// `--http-tls`), driven with `n` requests to /overview and `m` to
/// /repos/ID.
fn requests_by_endpoint_under(server: Server, tls: bool) {
    require_root();
    let paths = paths();
    let mut scenario = if tls {
        Seed::start_over_tls(&paths, 100, server)
    } else {
        Seed::start_under(&paths, 100, server)
    }
    .expect("scenario up");
    let (n, m) = (4u64, 3u64);
    let json = paths.workdir.join("report.json");
    let dump = paths.workdir.join("records.bin");
    let events = paths.workdir.join("events.jsonl");
    if tls {
        tls_lines_only_when_asked(&paths, &mut scenario, &dump);
    }
    let mut args = vec!["--events", events.to_str().unwrap()];
    if tls {
        args.push("--http-tls");
    }
    let run = seed::trace_driven(
        &paths,
        &mut scenario,
        &json,
        (&args, &[("TRACER_DUMP_RECORDS", dump.as_path())]),
        false,
        |s| s.drive_routes(n as u32, m as u32),
    )
    .expect("traced run");
    scenario.down();
    let name = format!("{}{}", server.name(), if tls { " over TLS" } else { "" });
    let name = name.as_str();
    let report = &run.report;
    let http = &report["http_requests"];
    eprintln!("{name}:\n{}", run.text);
    assert_eq!(http["total"], n + m, "{name}: requests, as sent");
    assert_eq!(http["unanswered"], 0, "{name}");
    assert_eq!(http["in_progress"], 0, "{name}");
    assert_eq!(http["calls_unowned"], 0, "{name}: one request at a time");

    let overview = endpoint(report, "GET /overview");
    let repos = endpoint(report, "POST /repos/:id");
    for (e, count, route) in [
        (overview, n, "GET /overview"),
        (repos, m, "POST /repos/:id"),
    ] {
        assert_eq!(e["latency"]["count"], count, "{name}: {route} requests");
        // The client's own time of each request, against the server's
        // first read to last write: the client's side adds its connect and
        // its parse of the response, well under 5% of a 300 ms request.
        // Not held under the time to the last byte: the server's last
        // write can return after the client has read what it sent (its
        // thread preempted between the two; CI at 1e5dc58 saw a span end
        // 0.5 ms after it). The server's close comes after that return.
        let client: Vec<(f64, f64)> = run.driven["timings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["route"] == route)
            .map(|t| (t["seconds"].as_f64().unwrap(), until_closed(t)))
            .collect();
        assert_eq!(client.len() as u64, count);
        let sum = client
            .iter()
            .fold((0.0, 0.0), |(a, b), (s, c)| (a + s, b + c));
        let max = client.iter().fold((0.0, 0.0), |(a, b), &(s, c)| {
            (f64::max(a, s), f64::max(b, c))
        });
        let traced_sum = e["latency"]["total_ns"].as_f64().unwrap() / 1e9;
        let traced_max = e["latency"]["max_ns"].as_f64().unwrap() / 1e9;
        for (what, traced, (own, closed)) in [("total", traced_sum, sum), ("max", traced_max, max)]
        {
            assert!(
                traced <= closed && traced >= own * 0.95,
                "{name}: {route} {what} {traced:.4}s traced vs the client's {own:.4}s \
                 ({closed:.4}s until the server closed)"
            );
        }
        // Per request: the user loader's two lookups of the identity host.
        let (lookups, _) = calls(e, "dns", |t| t == "identity.stormpath.test");
        assert_eq!(lookups, 2 * count, "{name}: {route} lookups");
        // ... each from its call site in the app's code (Python's frames):
        // the user loader; under uvicorn, asyncio's resolver thread, in
        // the app's wrapper that times getaddrinfo as cProfile would.
        let site = match server {
            Server::Node => None,
            Server::Uvicorn => Some("timed_getaddrinfo"),
            _ => Some("load_user"),
        };
        if let Some(site) = site {
            let sites = call_sites(e, "dns", "identity.stormpath.test");
            let from_it: u64 = sites
                .iter()
                .filter(|(s, _)| s.contains(site))
                .map(|(_, n)| n)
                .sum();
            assert_eq!(from_it, 2 * count, "{name}: {route} lookups from {sites:?}");
        }
    }
    check_backend_reads(name, server, report, [overview, repos], m);
    // The MySQL wait is /overview's, never /repos's.
    if server.compared().mysql {
        let mysql = |t: &str| t.ends_with(":3306");
        assert!(
            calls(overview, "io", mysql).0 >= n,
            "{name}: a MySQL wait in each /overview request: {overview:#}"
        );
        assert_eq!(
            calls(repos, "io", mysql).0,
            0,
            "{name}: /repos has no query"
        );
    }
    // Each endpoint's finding names its largest part. /repos's is its two
    // lookups. /overview's MySQL query can take as long as its lookups
    // (206 ms against 207 ms per request on one machine): its finding
    // names whichever the endpoint's table puts first.
    assert!(
        run.text
            .contains("POST /repos/:id: 2 lookups of identity.stormpath.test per request"),
        "{name}: the endpoint's finding:\n{}",
        run.text
    );
    let first = &overview["calls"][0];
    let finding = run
        .text
        .lines()
        .find(|l| l.contains(". GET /overview: "))
        .unwrap_or_else(|| panic!("{name}: no finding for /overview:\n{}", run.text));
    assert!(
        finding.contains(first["target"].as_str().unwrap()),
        "{name}: /overview's finding {finding:?} names its largest part, {first:#}"
    );

    check_spans(name, &events, &run.driven, n + m);
    check_privacy(name, &dump, &run.driven);
}

/// Every SSL read of the run to the two APIs was made for a request, and
/// is counted under exactly one; each /repos request read a page; no
/// request has a row per client port.
fn check_backend_reads(name: &str, server: Server, report: &Value, routes: [&Value; 2], m: u64) {
    let [overview, repos] = routes;
    // Every SSL read of the run to the two APIs was made for a request,
    // and is counted under exactly one (a TLS server's reads of its
    // clients are its own, under "the client"). Node.js tries one more
    // read of a connection that brought data once the handler it woke
    // has run (and answered): that read finds nothing, and is no
    // request's.
    let backend = |t: &str| t.contains(":8443") || t.contains(":9443");
    let (ssl_reads, with_data) = report["tls_peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| backend(p["peer"].as_str().unwrap()))
        .fold((0, 0), |(n, d), p| {
            (
                n + p["reads"].as_u64().unwrap(),
                d + p["reads_with_data"].as_u64().unwrap(),
            )
        });
    let read_by_requests =
        calls(overview, "tls read", backend).0 + calls(repos, "tls read", backend).0;
    if server == Server::Node {
        assert!(
            read_by_requests <= ssl_reads && ssl_reads - read_by_requests <= ssl_reads - with_data,
            "{name}: SSL reads by request: {read_by_requests} of {ssl_reads}, {with_data} with data"
        );
    } else {
        assert_eq!(read_by_requests, ssl_reads, "{name}: SSL reads by request");
    }
    assert!(
        calls(repos, "tls read", backend).0 >= m,
        "{name}: a page each"
    );
    for e in [overview, repos] {
        let strays: Vec<&str> = e["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["target"].as_str().unwrap())
            // The clients' ports are ephemeral (32768 and up); the
            // backends' and DNS's are not.
            .filter(|t| {
                t.strip_prefix("127.0.0.1:")
                    .and_then(|p| p.parse::<u16>().ok())
                    .is_some_and(|p| p >= 32768)
            })
            .collect();
        assert!(
            strays.is_empty(),
            "{name}: calls to clients by port: {strays:?}"
        );
    }
}

/// A request's client time from before its connect to the server's close
/// of the connection, in seconds.
fn until_closed(timing: &Value) -> f64 {
    let [began, closed] = ["start_ns", "closed_ns"].map(|k| timing[k].as_u64().unwrap());
    (closed - began) as f64 / 1e9
}

/// The event stream: one span tree per request, its calls as children
/// inside it, ids unique, each request's time against the client's.
fn check_spans(name: &str, events: &Path, driven: &Value, requests: u64) {
    let spans: Vec<Value> = std::fs::read_to_string(events)
        .expect("the event stream")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "http_request")
        .collect();
    assert_eq!(spans.len() as u64, requests, "{name}: a span per request");
    // Request by request, in the order sent (one at a time): the span lies
    // within the client's own time, from before its connect to the
    // server's close of the connection (not its last byte: the server's
    // last write can return after the client read it), in tracer's clock
    // and the client's, both CLOCK_MONOTONIC; and it holds at least 95% of
    // the client's time on the connection (from the end of its connect
    // and TLS handshake on to the last byte). Held to 95% of the whole, it
    // had the handshake's 3 to 11 ms in the 5% (fresh65 failed at 26 ms
    // apart of 0.43 s over TLS). Not held under the time on the
    // connection: gunicorn's TLS socket ends the handshake in its first
    // read, up to 3 ms after the client's handshake returned.
    let client = driven["timings"].as_array().unwrap();
    for (s, c) in spans.iter().zip(client) {
        assert_eq!(s["name"], c["route"], "{name}: requests in order");
        let [start, end] = ["start_ns", "end_ns"].map(|k| s[k].as_u64().unwrap());
        let [began, closed] = ["start_ns", "closed_ns"].map(|k| c[k].as_u64().unwrap());
        let traced = (end - start) as f64 / 1e9;
        let on_connection = c["on_connection"].as_f64().unwrap();
        assert!(
            began <= start && end <= closed && traced >= on_connection * 0.95,
            "{name}: {} traced from {:+.4}s to {:+.4}s of the client's connect, \
             which had the last byte at {:+.4}s ({on_connection:.4}s after its connect) \
             and the server's close at {:+.4}s",
            c["route"],
            start as f64 / 1e9 - began as f64 / 1e9,
            end as f64 / 1e9 - began as f64 / 1e9,
            c["seconds"].as_f64().unwrap(),
            (closed - began) as f64 / 1e9,
        );
    }
    let mut trace_ids: Vec<&str> = spans
        .iter()
        .map(|s| s["trace_id"].as_str().unwrap())
        .collect();
    trace_ids.sort_unstable();
    trace_ids.dedup();
    assert_eq!(trace_ids.len() as u64, requests, "{name}: trace ids unique");
    for s in &spans {
        let children = s["children"].as_array().unwrap();
        let identity = children
            .iter()
            .filter(|c| c["attributes"]["tracer.target"] == "identity.stormpath.test")
            .count();
        assert_eq!(identity, 2, "{name}: lookups under {}", s["name"]);
        for c in children {
            assert_eq!(c["parent_span_id"], s["span_id"]);
            assert!(c["start_ns"].as_u64() >= s["start_ns"].as_u64());
            assert!(
                c["end_ns"].as_u64() <= s["end_ns"].as_u64(),
                "{name}: {} ends after its request {}",
                c["name"],
                s["name"]
            );
        }
    }
}

/// What came out of the kernel: the paths, never the query string, a
/// header or the body.
fn check_privacy(name: &str, dump: &Path, driven: &Value) {
    let dump = Dump::read(dump);
    assert!(
        dump.request_line_holds("GET /overview"),
        "{name}: request line"
    );
    assert!(
        dump.request_line_holds("POST /repos/10"),
        "{name}: request line"
    );
    for (what, canary) in driven["canaries"].as_object().unwrap() {
        let canary = canary.as_str().unwrap();
        let kinds = dump.kinds_holding(canary);
        assert!(
            kinds.is_empty(),
            "{name}: the {what} canary {canary} left the kernel in {kinds:?}"
        );
    }
    // Each at least 8 bytes: the records are mostly binary (times,
    // pointers, sizes), and a waitress run of CI found the 3 bytes "?q="
    // among them without the canary after it. One run's records held
    // 34,308 distinct 3-byte strings, 0.2% of all: by chance, any given
    // 3 bytes are in one run of 500.
    for never in ["HTTP/1.1", "X-Canary", "Content-Type", "/overview?q="] {
        let kinds = dump.kinds_holding(never);
        assert!(
            kinds.is_empty(),
            "{name}: {never:?} left the kernel in {kinds:?}"
        );
    }
}

/// Over TLS, without `--http-tls`: the requests are served and traced,
/// and no request line comes out of the kernel.
fn tls_lines_only_when_asked(paths: &Paths, scenario: &mut Seed, dump: &Path) {
    let json = paths.workdir.join("report-no-http-tls.json");
    let run = seed::trace_driven(
        paths,
        scenario,
        &json,
        (&[], &[("TRACER_DUMP_RECORDS", dump)]),
        false,
        |s| s.drive_routes(1, 1),
    )
    .expect("traced run without --http-tls");
    assert_eq!(run.report["http_requests"]["total"], 0, "no --http-tls");
    let dump = Dump::read(dump);
    for line in ["GET /overview", "POST /repos"] {
        let kinds = dump.kinds_holding(line);
        assert!(kinds.is_empty(), "no --http-tls: {line:?} in {kinds:?}");
    }
    let lookups: u64 = run.report["dns_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["host"] == "identity.stormpath.test")
        .map(|h| h["count"].as_u64().unwrap())
        .sum();
    assert_eq!(lookups, 4, "the requests were traced: {}", run.text);
}

#[test]
fn under_werkzeug_each_endpoint_s_requests_are_counted_timed_and_own_their_calls() {
    requests_by_endpoint_under(Server::Werkzeug, false);
}

#[test]
fn under_gunicorn_each_endpoint_s_requests_are_counted_timed_and_own_their_calls() {
    requests_by_endpoint_under(Server::GunicornSync, false);
}

#[test]
fn under_gunicorn_gthread_each_endpoint_s_requests_are_counted_timed_and_own_their_calls() {
    requests_by_endpoint_under(Server::GunicornGthread, false);
}

#[test]
fn under_waitress_the_io_thread_s_requests_own_their_workers_calls() {
    requests_by_endpoint_under(Server::Waitress, false);
}

#[test]
fn under_gunicorn_over_tls_request_lines_are_read_with_http_tls_only() {
    requests_by_endpoint_under(Server::GunicornSync, true);
}

#[test]
fn under_uvicorn_one_event_loop_s_requests_each_own_their_calls() {
    requests_by_endpoint_under(Server::Uvicorn, false);
}

#[test]
fn under_uvicorn_over_tls_request_lines_come_from_the_ssl_reads_of_the_loop() {
    requests_by_endpoint_under(Server::Uvicorn, true);
}

#[test]
fn under_node_one_event_loop_s_requests_each_own_their_calls() {
    requests_by_endpoint_under(Server::Node, false);
}

#[test]
fn under_node_over_tls_request_lines_come_from_the_ssl_reads_of_the_loop() {
    requests_by_endpoint_under(Server::Node, true);
}
