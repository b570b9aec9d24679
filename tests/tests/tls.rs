//! TLS: SSL calls counted and timed from outside, per connection and peer,
//! against real TLS servers and clients (C with libssl, Python requests,
//! curl, Node.js with OpenSSL inside its executable).

use std::{process::Command, time::Duration};

use tracer_tests::*;

const LONG: Duration = Duration::from_secs(60);
/// The server's answer: 200 records of 100 bytes, 2 ms apart.
const RECORDS: u32 = 200;
const RECORD_BYTES: u32 = 100;
const DELAY_MS: u32 = 2;

/// Traces `client` while `drive` runs, until it exits.
fn trace(name: &str, client: Fixture, drive: impl FnOnce(&mut Fixture)) -> (Value, String) {
    let traced = trace_until_exit(name, client, drive);
    (traced.report, traced.stderr)
}

fn peer(report: &Value, port: u16) -> &Value {
    let want = format!("127.0.0.1:{port}");
    let found = rows(report, "tls_peers", |p| p["peer"] == want.as_str());
    assert_eq!(
        found.len(),
        1,
        "one TLS row for {want}: {:#}",
        report["tls_peers"]
    );
    found[0]
}

fn waiting_share(p: &Value) -> f64 {
    p["read_waiting_ns"].as_f64().unwrap() / p["read_ns"].as_f64().unwrap()
}

#[test]
fn c_client_ssl_read_counts_and_bytes_are_exact() {
    let mut server = TlsServer::start(RECORDS, RECORD_BYTES, DELAY_MS);
    let client = Fixture::start_command(Command::new(env!("TLS_CLIENT_BIN")));
    let mut truth = Value::Null;
    let (report, _) = trace("tls-c", client, |c| {
        truth = c.run(&format!("get {} 100", server.port), LONG);
    });
    assert_eq!(truth["handshake"], 1, "{truth}");
    assert_eq!(server.served(), u64::from(RECORDS * RECORD_BYTES));
    let p = peer(&report, server.port);
    // Every SSL_read call the client made, and the bytes they returned.
    assert_eq!(p["reads"], truth["reads"], "{p:#}");
    assert_eq!(p["reads_with_data"], truth["data_reads"]);
    assert_eq!(p["read_bytes"], truth["bytes"]);
    assert_eq!(p["writes"], 1);
    assert_eq!(p["write_bytes"], truth["written"]);
    // SSL_connect calls SSL_do_handshake inside: one handshake, not two.
    assert_eq!(p["handshakes"], 1);
    assert_eq!(p["connections"], 1);
    assert_eq!(p["responses"], 1);
    // The server sleeps between records: the reads wait on the network.
    assert!(waiting_share(p) > 0.8, "waiting share {}", waiting_share(p));
    let f = p["findings"][0].as_str().unwrap();
    assert!(
        f.starts_with(&format!("{} reads from", truth["reads"])),
        "{f}"
    );
    assert!(
        f.contains("99 bytes per read") || f.contains("100 bytes per read"),
        "{f}"
    );
    assert!(
        report["tls_libraries"][0]
            .as_str()
            .unwrap()
            .contains("libssl")
    );
}

#[test]
fn python_requests_loading_ssl_late_is_traced_from_its_first_handshake() {
    let mut server = TlsServer::start(RECORDS, RECORD_BYTES, DELAY_MS);
    let mut cmd = Command::new(venv_python());
    cmd.arg(fixture_file("tls_client.py"));
    let client = Fixture::start_command(cmd);
    let mut truth = Value::Null;
    let (report, stderr) = trace("tls-python", client, |c| {
        truth = c.run(
            &format!("requests https://127.0.0.1:{}/", server.port),
            LONG,
        );
    });
    let body = server.served();
    assert_eq!(truth["body"], body, "{truth}");
    // The system's libssl was probed ahead of its loading, so the first
    // handshake right after `import ssl` is seen.
    let _ = stderr;
    let p = peer(&report, server.port);
    assert_eq!(p["handshakes"], 1, "{p:#}");
    // CPython >= 3.10 reads with SSL_read_ex.
    assert!(p["functions"]["SSL_read_ex"].as_u64().unwrap() > 0, "{p:#}");
    assert!(p["functions"]["SSL_read"].is_null(), "{p:#}");
    // The body and the response head, nothing more.
    let read = p["read_bytes"].as_u64().unwrap();
    assert!(
        read >= body && read < body + 512,
        "read {read} for a {body}-byte body"
    );
    assert!(p["writes"].as_u64().unwrap() >= 1);
    assert!(waiting_share(p) > 0.8, "waiting share {}", waiting_share(p));
}

#[test]
fn curl_started_by_the_tracer_is_traced() {
    require_root();
    let mut server = TlsServer::start(RECORDS, RECORD_BYTES, DELAY_MS);
    let json = scratch("tls-curl");
    let url = format!("https://127.0.0.1:{}/", server.port);
    let done = run_tracer(
        &[
            "report",
            "--json",
            json.to_str().unwrap(),
            "--",
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}\\n",
            &url,
        ],
        LONG,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let body = server.served();
    assert!(done.stdout.contains(&body.to_string()), "{}", done.stdout);
    let report = read_report(&json);
    let p = peer(&report, server.port);
    // curl's socket is non-blocking: SSL_connect is called once per round
    // trip, but it is one handshake.
    assert_eq!(p["handshakes"], 1, "{p:#}");
    assert!(p["handshake_calls"].as_u64().unwrap() >= 1);
    let read = p["read_bytes"].as_u64().unwrap();
    assert!(
        read >= body && read < body + 512,
        "read {read} for a {body}-byte body"
    );
}

#[test]
fn node_with_openssl_inside_its_executable_is_traced() {
    let mut server = TlsServer::start(RECORDS, RECORD_BYTES, DELAY_MS);
    let mut cmd = Command::new("node");
    cmd.arg(fixture_file("tls_get.js"));
    let client = Fixture::start_command(cmd);
    let mut truth = Value::Null;
    let (report, _) = trace("tls-node", client, |c| {
        truth = c.run(&format!("get {}", server.port), LONG);
    });
    let body = server.served();
    assert_eq!(truth["body"], body, "{truth}");
    let libs = report["tls_libraries"].as_array().unwrap();
    assert!(libs.iter().any(|l| l == "/usr/bin/node"), "{libs:?}");
    let p = peer(&report, server.port);
    let read = p["read_bytes"].as_u64().unwrap();
    assert!(
        read >= body && read < body + 512,
        "read {read} for a {body}-byte body"
    );
    assert_eq!(p["connections"], 1);
    // Node never calls SSL_do_handshake: it drives the handshake inside
    // SSL_read (memory BIOs). The probe on OpenSSL's state machine tells
    // those calls apart: one handshake, within the request's own time.
    assert!(p["functions"]["SSL_read"].as_u64().unwrap() > 0, "{p:#}");
    assert!(p["functions"].get("SSL_do_handshake").is_none(), "{p:#}");
    assert_eq!(p["handshakes"], 1, "{p:#}");
    let handshake_ns = p["handshake_ns"].as_u64().unwrap();
    let request_ns = truth["micros"].as_u64().unwrap() * 1000;
    assert!(
        handshake_ns > 0 && handshake_ns < request_ns,
        "handshake {handshake_ns} ns in a {request_ns} ns request: {p:#}"
    );
}

#[test]
fn a_process_without_tls_gets_a_clear_note() {
    let open = OpenListener::start();
    let (report, _) = trace("tls-none", Fixture::start(), |f| {
        f.run(&format!("connect-ok {} 1", open.port), LONG);
    });
    assert_eq!(report["tls_libraries"], serde_json::json!([]));
    assert_eq!(report["tls_calls_total"], 0);
}
