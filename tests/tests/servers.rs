//! The seed app under each kind of server people deploy, traced from
//! outside and timed from inside in the same run: the shares agree whatever
//! the server does around the requests (a listener polling, a pool of idle
//! workers, a supervisor process, an event loop waiting), at 3 requests,
//! where the denominator shows most, and at 30.
//!
//! The WSGI servers (Werkzeug, gunicorn, waitress) run scenario/app.py
//! under Werkzeug's ProfilerMiddleware (cProfile per request). The event
//! loops run apps of the same shape that time what they await by hand
//! (cProfile cannot follow coroutines): scenario/async_app.py under
//! uvicorn, scenario/node_app.js under Node.js's http server.

use std::path::Path;

use tracer_tests::{
    seed::{self, Paths, Seed, Server},
    *,
};

/// The seed test's working directory: its MariaDB data is seeded once.
fn paths() -> Paths {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bins = tracer_bin();
    Paths::new(repo, bins.parent().unwrap(), &repo.join("target/seed-test"))
}

fn agrees_with_the_profiler_under(server: Server) {
    require_root();
    let paths = paths();
    let mut scenario = Seed::start_under(&paths, 100, server).expect("scenario up");
    let mut wrong = Vec::new();
    for requests in [3, 30] {
        scenario.clear_profiles().unwrap();
        let json = paths.workdir.join(format!("report-{requests}.json"));
        let run = seed::trace_requests(&paths, &mut scenario, requests, &json, &[], false)
            .expect("traced run");
        let report = &run.report;
        for (counter, n) in report["lost"].as_object().unwrap() {
            assert_eq!(n, 0, "{counter} lost: {:#}", report["lost"]);
        }
        assert_eq!(
            report["requests"],
            requests,
            "{}: requests served, as the driver sent them",
            server.name()
        );
        let traced = seed::tracer_categories(report);
        let profiled = seed::profiler_categories(&paths, requests).expect("cProfile numbers");
        eprintln!(
            "{} requests under {}:\n{}",
            requests,
            server.name(),
            seed::side_by_side(&traced, &profiled)
        );
        wrong.extend(
            seed::disagreements(&traced, &profiled, requests, 5.0, server.compared())
                .into_iter()
                .map(|w| format!("{} requests: {w}", requests)),
        );
    }
    scenario.down();
    assert!(wrong.is_empty(), "{}: {}", server.name(), wrong.join("\n"));
}

#[test]
fn under_werkzeug_threaded_the_shares_agree_with_cprofile() {
    agrees_with_the_profiler_under(Server::Werkzeug);
}

#[test]
fn under_gunicorn_sync_workers_the_pools_shares_agree_with_cprofile() {
    agrees_with_the_profiler_under(Server::GunicornSync);
}

#[test]
fn under_gunicorn_gthread_workers_the_pools_shares_agree_with_cprofile() {
    agrees_with_the_profiler_under(Server::GunicornGthread);
}

#[test]
fn under_waitress_the_shares_agree_with_cprofile() {
    agrees_with_the_profiler_under(Server::Waitress);
}

#[test]
fn under_uvicorn_the_event_loops_shares_agree_with_the_apps_own_timing() {
    agrees_with_the_profiler_under(Server::Uvicorn);
}

#[test]
fn under_node_the_event_loops_shares_agree_with_the_apps_own_timing() {
    agrees_with_the_profiler_under(Server::Node);
}
