//! `tracer serve`: a real Prometheus (Debian's, started here on loopback
//! with a generated config) scrapes the exposition while a fixture makes
//! connects we count ourselves; PromQL through Prometheus's HTTP API must
//! return those counts, and `promtool check metrics` must accept the text.
//! The same for an HTTP server's requests by route.

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

/// A plain HTTP server, one request at a time: GET /items/ID looks up
/// localhost and takes 20 ms more; anything else answers at once.
const ITEMS_SERVER: &str = r#"
import http.server, socket, sys, time
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/items/"):
            socket.getaddrinfo("localhost", 80)
            time.sleep(0.02)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("ready", flush=True)
server.serve_forever()
"#;

#[test]
fn prometheus_scrapes_each_route_s_requests_and_the_lookup_time_in_them() {
    require_root();
    let app_port = closed_port();
    let mut app = Command::new(python())
        .args(["-c", ITEMS_SERVER, &app_port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut ready = Lines::new_from(app.stdout.take().unwrap());
    ready.wait_for("ready", LONG);
    let port = closed_port();
    let listen = format!("127.0.0.1:{port}");
    let pid = app.id().to_string();
    let tracer = Tracer::attached(&["serve", "--pid", &pid, "--listen", &listen]);
    for i in 0..7 {
        assert_eq!(http_get(app_port, &format!("/items/{}", 100 + i)).0, 200);
    }
    for _ in 0..3 {
        assert_eq!(http_get(app_port, "/health?verbose=1").0, 200);
    }
    let items = ["method=\"GET\"", "route=\"/items/:id\""];
    let text = wait_for_metric(
        port,
        "tracer_http_request_duration_seconds_count",
        &items,
        7.0,
    );
    let health = ["route=\"/health\""];
    assert_eq!(
        metric_sum(&text, "tracer_http_request_duration_seconds_count", &health),
        3.0,
        "{text}"
    );
    // Each /items request took its 20 ms: none in the 10 ms bucket.
    let fast = ["route=\"/items/:id\"", "le=\"0.01\""];
    assert_eq!(
        metric_sum(&text, "tracer_http_request_duration_seconds_bucket", &fast),
        0.0,
        "{text}"
    );
    // The lookups were made in /items requests, none in /health's.
    let lookups = ["route=\"/items/:id\"", "kind=\"dns\""];
    let in_lookups = metric_sum(&text, "tracer_http_request_call_seconds_total", &lookups);
    let items_sum = metric_sum(&text, "tracer_http_request_duration_seconds_sum", &items);
    assert!(
        in_lookups > 0.0 && in_lookups < items_sum,
        "lookup time {in_lookups} s in {items_sum} s of requests:\n{text}"
    );
    assert_eq!(
        metric_sum(&text, "tracer_http_request_call_seconds_total", &health),
        0.0,
        "{text}"
    );

    // A real Prometheus scrapes them; PromQL returns the counts.
    let prometheus = Prometheus::start(&[(port, "")]);
    prometheus.query_until(
        "sum(tracer_http_request_duration_seconds_count{method=\"GET\",route=\"/items/:id\"})",
        7.0,
    );
    prometheus.query_until(
        "sum(tracer_http_request_duration_seconds_bucket{route=\"/health\",le=\"+Inf\"})",
        3.0,
    );
    prometheus.query_until(
        "count(tracer_http_request_call_seconds_total{route=\"/items/:id\",kind=\"dns\"} > 0)",
        1.0,
    );

    tracer.interrupt();
    let done = tracer.finish(LONG);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let _ = app.kill();
    let _ = app.wait();
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
