//! `tracer serve`: a real Prometheus (Debian's, started here on loopback
//! with a generated config) scrapes the exposition while a fixture makes
//! connects we count ourselves; PromQL through Prometheus's HTTP API must
//! return those counts, and `promtool check metrics` must accept the text.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use tracer_tests::*;

const LONG: Duration = Duration::from_secs(60);

/// GET over plain HTTP/1.0: (status code, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn free_port() -> u16 {
    closed_port()
}

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server scraping one target every second.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(target_port: u16) -> Self {
        let dir = scratch("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: tracer\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package `prometheus`, installed by cargo xtask setup)");
        let p = Self { child, port };
        let deadline = Instant::now() + LONG;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "prometheus did not start");
            thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// The value of an instant query with one series, once Prometheus has it.
    fn query_until(&self, promql: &str, want: f64) -> f64 {
        let deadline = Instant::now() + LONG;
        let mut last = Value::Null;
        loop {
            let (code, body) = http_get(
                self.port,
                &format!("/api/v1/query?query={}", encode(promql)),
            );
            if code == 200 {
                last = json(&body);
                let result = &last["data"]["result"];
                if let Some(v) = result[0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    && result.as_array().map_or(0, Vec::len) == 1
                    && v == want
                {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: wanted {want}, Prometheus says {last:#}"
            );
            thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_serve_and_promql_returns_the_connects_we_made() {
    require_root();
    let open = OpenListener::start();
    let closed = closed_port();
    let mut fixture = Fixture::start();
    let port = free_port();
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
    let prometheus = Prometheus::start(port);
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
                .join("../contrib/grafana-dashboard.json"),
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
