//! Requests by endpoint: the seed app with two routes (GET /overview: two
//! lookups, three pages over TLS, a MySQL query; POST /repos/ID: the same
//! two lookups and one page, no database) under real servers, traced from
//! outside. Each route's request count is exact, its request time agrees
//! with the client's own timing, each request's lookups, TLS reads and
//! MySQL wait are its own, and no byte past the request's path (query
//! string, headers, body) ever comes out of the kernel.

use std::path::Path;

use serde_json::Value;
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

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn requests_by_endpoint_under(server: Server) {
    require_root();
    let paths = paths();
    let mut scenario = Seed::start_under(&paths, 100, server).expect("scenario up");
    let (n, m) = (4u64, 3u64);
    let json = paths.workdir.join("report.json");
    let dump = paths.workdir.join("records.bin");
    let events = paths.workdir.join("events.jsonl");
    let run = seed::trace_driven(
        &paths,
        &mut scenario,
        &json,
        (
            &["--events", events.to_str().unwrap()],
            &[("TRACER_DUMP_RECORDS", dump.as_path())],
        ),
        false,
        |s| s.drive_routes(n as u32, m as u32),
    )
    .expect("traced run");
    scenario.down();
    let report = &run.report;
    let name = server.name();
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
        let client: Vec<f64> = run.driven["timings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["route"] == route)
            .map(|t| t["seconds"].as_f64().unwrap())
            .collect();
        assert_eq!(client.len() as u64, count);
        let sum: f64 = client.iter().sum();
        let max = client.iter().copied().fold(0.0, f64::max);
        let traced_sum = e["latency"]["total_ns"].as_f64().unwrap() / 1e9;
        let traced_max = e["latency"]["max_ns"].as_f64().unwrap() / 1e9;
        for (what, traced, own) in [("total", traced_sum, sum), ("max", traced_max, max)] {
            assert!(
                traced <= own && traced >= own * 0.95,
                "{name}: {route} {what} {traced:.4}s traced vs the client's {own:.4}s"
            );
        }
        // Per request: the user loader's two lookups of the identity host.
        let (lookups, _) = calls(e, "dns", |t| t == "identity.stormpath.test");
        assert_eq!(lookups, 2 * count, "{name}: {route} lookups");
    }
    // Every SSL read of the run was made for a request, and is counted
    // under exactly one.
    let ssl_reads: u64 = report["tls_peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["reads"].as_u64().unwrap())
        .sum();
    let read_by_requests =
        calls(overview, "tls read", |_| true).0 + calls(repos, "tls read", |_| true).0;
    assert_eq!(read_by_requests, ssl_reads, "{name}: SSL reads by request");
    assert!(
        calls(repos, "tls read", |_| true).0 >= m,
        "{name}: a page each"
    );
    // The MySQL wait is /overview's, never /repos's.
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
    assert!(
        run.text
            .contains("GET /overview: 2 lookups of identity.stormpath.test per request"),
        "{name}: the endpoint's finding:\n{}",
        run.text
    );

    check_spans(name, &events, &run.driven, n + m);
    check_privacy(name, &dump, &run.driven);
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
    // Request by request, in the order sent (one at a time): the span's
    // time within 5% of, and not over, the client's own.
    let client = driven["timings"].as_array().unwrap();
    for (s, c) in spans.iter().zip(client) {
        assert_eq!(s["name"], c["route"], "{name}: requests in order");
        let traced = (s["end_ns"].as_u64().unwrap() - s["start_ns"].as_u64().unwrap()) as f64 / 1e9;
        let own = c["seconds"].as_f64().unwrap();
        assert!(
            traced <= own && traced >= own * 0.95,
            "{name}: {} {traced:.4}s traced vs the client's {own:.4}s",
            c["route"]
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
        assert_eq!(identity, 2, "{name}: lookups under {s}");
        for c in children {
            assert_eq!(c["parent_span_id"], s["span_id"]);
            assert!(c["start_ns"].as_u64() >= s["start_ns"].as_u64());
            assert!(
                c["end_ns"].as_u64() <= s["end_ns"].as_u64(),
                "{name}: {c} ends in {s}"
            );
        }
    }
}

/// What came out of the kernel: the paths, never the query string, a
/// header or the body.
fn check_privacy(name: &str, dump: &Path, driven: &Value) {
    let records = std::fs::read(dump).expect("the record dump");
    assert!(contains(&records, "GET /overview"), "{name}: request line");
    assert!(contains(&records, "POST /repos/10"), "{name}: request line");
    for (what, canary) in driven["canaries"].as_object().unwrap() {
        let canary = canary.as_str().unwrap();
        assert!(
            !contains(&records, canary),
            "{name}: the {what} canary {canary} left the kernel"
        );
    }
    for never in ["HTTP/1.1", "X-Canary", "Content-Type", "?q="] {
        assert!(
            !contains(&records, never),
            "{name}: {never:?} left the kernel"
        );
    }
}

#[test]
fn under_werkzeug_each_endpoint_s_requests_are_counted_timed_and_own_their_calls() {
    requests_by_endpoint_under(Server::Werkzeug);
}

#[test]
fn under_gunicorn_each_endpoint_s_requests_are_counted_timed_and_own_their_calls() {
    requests_by_endpoint_under(Server::GunicornSync);
}
