//! `tracer serve`: a real Prometheus (Debian's, started here on loopback
//! with a generated config) scrapes the exposition while a fixture makes
//! connects we count ourselves; PromQL through Prometheus's HTTP API must
//! return those counts, and `promtool check metrics` must accept the text.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use tracer_tests::{prometheus::*, *};

const LONG: Duration = Duration::from_secs(60);

#[test]
fn prometheus_scrapes_serve_and_promql_returns_the_connects_we_made() {
    require_root();
    let open = OpenListener::start();
    let closed = closed_port();
    let mut fixture = Fixture::start();
    let port = closed_port();
    let listen = format!("127.0.0.1:{port}");
    let pid = fixture.pid.to_string();
    let tracer = Tracer::attached(&["serve", "--pid", &pid, "--listen", &listen]);
    fixture.run(&format!("connect-ok {} 20", open.port), LONG);
    fixture.run(&format!("connect-refused {closed} 10"), LONG);

    let (code, health) = http_get(port, "/healthz");
    assert_eq!((code, health.trim()), (200, "ok"));
    let (code, text) = http_get(port, "/metrics");
    assert_eq!(code, 200, "{text}");
    // Exact counts in the exposition itself.
    let ok = format!(
        "tracer_connects_total{{peer=\"127.0.0.1:{}\",result=\"ok\"}} 20",
        open.port
    );
    let refused =
        format!("tracer_connects_total{{peer=\"127.0.0.1:{closed}\",result=\"ECONNREFUSED\"}} 10");
    assert!(text.contains(&ok), "{ok} in:\n{text}");
    assert!(text.contains(&refused), "{refused} in:\n{text}");
    assert!(text.contains("tracer_build_info{version=\""), "{text}");
    // promtool, the reference linter of the format, accepts it.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A real Prometheus scrapes it; PromQL returns what the fixture did.
    let prometheus = Prometheus::start(&[(port, "")]);
    prometheus.query_until(
        &format!(
            "tracer_connects_total{{result=\"ok\",peer=\"127.0.0.1:{}\"}}",
            open.port
        ),
        20.0,
    );
    prometheus.query_until(
        "sum(tracer_call_duration_seconds_count{kind=\"connect\"})",
        30.0,
    );
    prometheus.query_until(
        &format!(
            "sum(tracer_call_duration_seconds_bucket{{kind=\"connect\",target=\"127.0.0.1:{closed}\",le=\"+Inf\"}})"
        ),
        10.0,
    );
    // More connects show up in the next scrapes: the metrics are live.
    fixture.run(&format!("connect-ok {} 5", open.port), LONG);
    let v = prometheus.query_until(
        &format!(
            "tracer_connects_total{{result=\"ok\",peer=\"127.0.0.1:{}\"}}",
            open.port
        ),
        25.0,
    );
    eprintln!("PromQL tracer_connects_total{{result=\"ok\"}} = {v}");
    // Every query of the shipped Grafana dashboard is valid PromQL.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        let expr = panel["targets"][0]["expr"].as_str().unwrap();
        let expr = expr.replace("$__rate_interval", "1m");
        let (code, body) = http_get(
            prometheus.port,
            &format!("/api/v1/query?query={}", encode(&expr)),
        );
        assert_eq!(code, 200, "{expr}: {body}");
        assert_eq!(json(&body)["status"], "success", "{expr}: {body}");
    }

    tracer.interrupt();
    let done = tracer.finish(LONG);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(
        done.stderr.contains("stopped serving metrics"),
        "{}",
        done.stderr
    );
    fixture.exit();
}

#[test]
fn serve_refuses_a_port_in_use_before_attaching() {
    require_root();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let fixture = Fixture::start();
    let pid = fixture.pid.to_string();
    let done = run_tracer(
        &[
            "serve",
            "--pid",
            &pid,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        LONG,
    );
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("--listen"), "{}", done.stderr);
    assert!(!done.stderr.contains("tracing PID"), "{}", done.stderr);
    fixture.exit();
}
