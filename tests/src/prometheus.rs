//! A real Prometheus (Debian's), started on loopback with a generated
//! config, and plain HTTP to it and to `tracer serve`.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{Value, closed_port, json, scratch};

const LONG: Duration = Duration::from_secs(60);

/// GET over plain HTTP/1.0: (status code, body); fails on a connection
/// refused or no whole answer within 10 s.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    try_http_get(port, path).unwrap_or_else(|e| panic!("GET 127.0.0.1:{port}{path}: {e}"))
}

/// The same, for callers that wait for a server to come up.
pub fn try_http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    // One write, as HTTP clients send a request's head: `write!` on the
    // stream would send "GET ", the path and the rest as three segments,
    // and a server whose first read returns only "GET " has read no
    // request line (the tracer names a request from its first read).
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(request.as_bytes())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// The sum of the samples of `name` in an exposition whose line contains
/// every one of `parts` (label pairs such as `result="ok"`).
pub fn metric_sum(body: &str, name: &str, parts: &[&str]) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Scrapes until `name{parts}` sums to `want` (the tracer drains its ring
/// buffer on a timer), or fails with what it last saw.
pub fn wait_for_metric(port: u16, name: &str, parts: &[&str], want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http_get(port, "/metrics");
        let got = metric_sum(&body, name, parts);
        if got == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {parts:?} = {got}, want {want}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Percent-encodes a PromQL query for a URL.
pub fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server scraping its targets every second.
pub struct Prometheus {
    child: Child,
    pub port: u16,
}

impl Prometheus {
    /// Scrapes 127.0.0.1:`port` for each target, with `node` as its `node`
    /// label when not empty.
    pub fn start(targets: &[(u16, &str)]) -> Self {
        let dir = scratch("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        let mut text = "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                        scrape_configs:\n  - job_name: tracer\n    static_configs:\n"
            .to_string();
        for (port, node) in targets {
            text.push_str(&format!("      - targets: ['127.0.0.1:{port}']\n"));
            if !node.is_empty() {
                text.push_str(&format!("        labels: {{node: '{node}'}}\n"));
            }
        }
        std::fs::write(&config, text).unwrap();
        let port = closed_port();
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

    /// The `data.result` of an instant query (null on an error answer).
    pub fn query(&self, promql: &str) -> Value {
        let (code, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", encode(promql)),
        );
        if code != 200 {
            return Value::Null;
        }
        json(&body)["data"]["result"].clone()
    }

    /// The value of an instant query with one series, once Prometheus has it.
    pub fn query_until(&self, promql: &str, want: f64) -> f64 {
        let deadline = Instant::now() + LONG;
        loop {
            let result = self.query(promql);
            if let Some(v) = result[0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                && result.as_array().map_or(0, Vec::len) == 1
                && v == want
            {
                // The answer, kept for a person to read.
                let _ = std::fs::write(scratch("promql-answer"), format!("{promql}\n{result:#}\n"));
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: wanted {want}, Prometheus says {result:#}"
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
