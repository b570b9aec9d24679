//! The acceptance test: the seed's slow Flask app (scenario/), rebuilt with
//! a slow DNS server, HTTPS APIs and MariaDB in a network namespace, traced
//! live from outside; tracer's numbers set against the app's own cProfile
//! of the same requests (Werkzeug's ProfilerMiddleware, as the seed's author
//! ran it). Then the fix (no DNS delay), traced again against the first run.

use std::path::Path;

use tracer_tests::{
    seed::{self, Categories, Paths, Seed},
    *,
};

const REQUESTS: u32 = 10;
/// The code-hosting API's page: 370 records of body (scenario/seed.py's
/// CODE_PAGE), plus the record of the response's headers.
const RECORDS_PER_RESPONSE: f64 = 371.0;

fn paths() -> Paths {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bins = tracer_bin();
    Paths::new(repo, bins.parent().unwrap(), &repo.join("target/seed-test"))
}

/// The breakdown row of `kind` whose target passes `target`, and its
/// busiest call site.
fn row_and_site<'a>(
    report: &'a Value,
    kind: &str,
    target: impl Fn(&str) -> bool,
) -> (&'a Value, String) {
    let found = rows(report, "breakdown", |r| {
        r["kind"] == kind && target(r["target"].as_str().unwrap_or(""))
    });
    assert_eq!(found.len(), 1, "one {kind} row: {:#}", report["breakdown"]);
    let site = found[0]["sites"][0][0].as_str().unwrap_or("").to_string();
    (found[0], site)
}

fn check_against_profiler(t: &Categories, p: &Categories) {
    eprintln!("{}", seed::side_by_side(t, p));
    let wrong = seed::disagreements(t, p, REQUESTS, 5.0, seed::Server::Werkzeug.compared());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn seed_app_traced_live_agrees_with_its_profiler_and_the_fix_shows() {
    require_root();
    let paths = paths();
    let mut scenario = Seed::start(&paths, 150).expect("scenario up");
    let before = paths.workdir.join("before.json");
    let first = seed::trace_requests(&paths, &mut scenario, REQUESTS, &before, &[], false)
        .expect("first run");
    let report = &first.report;
    for (counter, n) in report["lost"].as_object().unwrap() {
        assert_eq!(n, 0, "{counter} lost: {:#}", report["lost"]);
    }
    let traced = seed::tracer_categories(report);
    let profiled = seed::profiler_categories(&paths, REQUESTS).expect("cProfile numbers");
    check_against_profiler(&traced, &profiled);
    // Lookups dominate, as in the seed.
    assert!(traced.lookups.share > 0.3, "{traced:?}");
    // Per request of the endpoint, as the profiler saw each request: its
    // time (tracer's runs from the request's read to the response's last
    // write, so it is the longer) and its lookups.
    let ((t_secs, t_lookups), (p_secs, p_lookups)) =
        seed::per_request(report, "GET /overview", &profiled, REQUESTS)
            .expect("GET /overview in Requests by endpoint");
    eprintln!(
        "per request: tracer {t_secs:.4}s {t_lookups} lookups, cProfile {p_secs:.4}s {p_lookups} lookups"
    );
    assert_eq!(t_lookups, p_lookups, "lookups per request");
    assert!(
        t_secs >= p_secs && t_secs <= p_secs * 1.05,
        "a request: tracer {t_secs:.4}s, cProfile {p_secs:.4}s"
    );

    // Where, in the user's terms.
    let (dns, site) = row_and_site(report, "dns", |t| t == "identity.stormpath.test");
    assert!(site.contains("load_user"), "lookups from {site}");
    let (tls, site) = row_and_site(report, "tls read", |t| t.contains(":9443"));
    assert!(
        site.contains("get_repositories_data"),
        "SSL reads from {site}"
    );
    let (query, site) = row_and_site(report, "io", |t| t.ends_with(":3306"));
    assert!(site.contains("get_total_bug_count"), "query from {site}");
    let (_, site) = row_and_site(report, "handshake", |t| t.contains(":8443"));
    assert!(site.contains("load_user"), "handshakes from {site}");
    let connects = rows(report, "call_sites", |r| {
        r["kind"] == "connect" && r["target"].as_str().unwrap_or("").ends_with(":3306")
    });
    assert!(
        connects.iter().any(|r| r["summary"]
            .as_str()
            .unwrap_or("")
            .contains("get_total_bug_count")),
        "the MySQL connect by its call site: {connects:#?}"
    );
    for (row, what) in [(dns, "lookups"), (tls, "reads"), (query, "query")] {
        assert!(
            row["share"].as_f64().unwrap() > 0.05,
            "{what} is a large share: {row:#}"
        );
    }

    // More than the profiler could say: why the lookups were slow, how many
    // reads one response cost, which peer was slow.
    assert!(
        first.text.contains("the DNS server 127.0.0.1:53 is slow"),
        "{}",
        first.text
    );
    assert!(first.text.contains("does not cache the answer"));
    let peer = rows(report, "tls_peers", |p| {
        p["peer"].as_str().unwrap_or("").contains(":9443")
    })[0];
    let per_response =
        peer["reads_with_data"].as_f64().unwrap() / peer["responses"].as_f64().unwrap();
    assert!(
        (per_response - RECORDS_PER_RESPONSE).abs() <= 2.0,
        "reads per response {per_response}, the server sent {RECORDS_PER_RESPONSE} records"
    );
    assert!(
        seed_share(peer, "read_waiting_ns", "read_ns") > 0.5,
        "the reads wait on the peer: {peer:#}"
    );

    // The fix: the DNS server answers at once; the same process, traced
    // again against the first run.
    scenario.set_dns_delay(0).unwrap();
    scenario.clear_profiles().unwrap();
    let after = paths.workdir.join("after.json");
    let baseline = before.to_string_lossy().to_string();
    let second = seed::trace_requests(
        &paths,
        &mut scenario,
        REQUESTS,
        &after,
        &["--baseline", &baseline],
        false,
    )
    .expect("second run");
    let fixed = seed::tracer_categories(&second.report);
    let profiled = seed::profiler_categories(&paths, REQUESTS).unwrap();
    eprintln!("after the fix:\n{}", seed::side_by_side(&fixed, &profiled));
    assert!(fixed.lookups.share < 0.03, "{fixed:?}");
    assert!(
        profiled.lookups.share < 0.03,
        "the profiler agrees: {profiled:?}"
    );
    let comparison = rows(&second.report["comparison"], "rows", |r| {
        r["what"] == "DNS lookups of identity.stormpath.test"
    });
    assert_eq!(comparison.len(), 1, "{:#}", second.report["comparison"]);
    assert!(comparison[0]["before_share"].as_f64().unwrap() > 0.3);
    assert!(comparison[0]["after_share"].as_f64().unwrap() < 0.03);
    assert!(
        second
            .text
            .contains("DNS lookups of identity.stormpath.test: ")
            && second.text.contains("(fixed: most of it is gone)"),
        "{}",
        second.text
    );
    scenario.down();
}

fn seed_share(row: &Value, part: &str, whole: &str) -> f64 {
    row[part].as_f64().unwrap() / row[whole].as_f64().unwrap()
}
