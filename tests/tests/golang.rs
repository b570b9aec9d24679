//! Go programs: the Go resolver's lookups timed at Go's own functions (by
//! goroutine, with return probes on its return instructions), their DNS
//! messages decoded from the connected socket's reads and writes, and
//! their call sites named from the function table of a stripped binary;
//! on each Go that `cargo xtask setup` installs, against a real DNS
//! server in a network namespace and the fixture's own timings.

use std::time::Duration;

use tracer_tests::*;

const LONG: Duration = Duration::from_secs(60);

/// The fixture's line that calls `needle`, for call-site checks.
fn fixture_line(needle: &str) -> u64 {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/go/gofixture.go"
    ))
    .unwrap();
    src.lines().position(|l| l.contains(needle)).expect(needle) as u64 + 1
}

fn go_client(ns: &NetNs, minor: u32, build: GoBuild, env: &[(&str, &str)]) -> Fixture {
    let mut cmd = ns.command(go_fixture(minor, build));
    cmd.envs(env.iter().copied());
    Fixture::start_command(cmd)
}

fn within(tracer_ns: u64, client_us: u64, tolerance: f64, what: &str) {
    let client_ns = client_us as f64 * 1e3;
    let err = (tracer_ns as f64 - client_ns).abs() / client_ns;
    assert!(
        err < tolerance,
        "{what}: tracer {tracer_ns} ns vs the client's {client_ns} ns"
    );
}

/// Whether a call site's frames hold the fixture's `function` at `line`.
fn has_frame(site: &Value, function: &str, line: u64) -> bool {
    site["frames"].as_array().is_some_and(|frames| {
        frames.iter().any(|f| {
            f["function"] == function
                && f["file"]
                    .as_str()
                    .is_some_and(|s| s.ends_with("gofixture.go"))
                && f["line"] == line
        })
    })
}

/// What one traced run of the fixture showed about its lookups.
fn check_lookups(minor: u32, build: GoBuild, resolv: &str, env: &[(&str, &str)]) {
    let ctx = format!("Go 1.{minor} {build:?} {env:?}");
    let ns = NetNs::new(&format!("go{minor}"), resolv);
    let mut server = DnsServer::start(&ns, &["--delay-ms", "100"]);
    let mut truth = Vec::new();
    let mut host_truth = Value::Null;
    let traced = trace_until_exit(
        &format!("go-lookups-go1{minor}-{build:?}"),
        go_client(&ns, minor, build, env),
        |c| {
            for _ in 0..2 {
                truth.push(c.run("lookup api.example.com", LONG));
            }
            host_truth = c.run("lookuphost db.example.com", LONG);
        },
    );
    let report = &traced.report;
    for t in truth.iter().chain([&host_truth]) {
        assert_eq!(t["err"], "", "{ctx}: {t}");
    }
    let warnings = traced.warnings();
    assert!(warnings.is_empty(), "{ctx}: {warnings:?}");

    // Counted once each (a cgo lookup is Go's, not also libc's), with
    // Go's function, the client's addresses and its latency.
    let api = lookups_of(report, "api.example.com");
    assert_eq!(api.len(), 2, "{ctx}: {:#}", report["slowest_lookups"]);
    assert_eq!(report["dns_lookups_total"], 3, "{ctx}");
    let mut client_us: Vec<u64> = truth
        .iter()
        .map(|t| t["micros"].as_u64().unwrap())
        .collect();
    client_us.sort_unstable();
    for (lookup, us) in api.iter().zip(client_us.iter().rev()) {
        assert_eq!(lookup["function"], "net.(*Resolver).lookupIPAddr", "{ctx}");
        assert_eq!(lookup["result"], "ok", "{ctx}");
        assert_eq!(
            lookup["addresses"],
            serde_json::json!(["10.1.2.3", "fd00::1"]),
            "{ctx}"
        );
        within(lookup["duration_ns"].as_u64().unwrap(), *us, 0.05, &ctx);
    }
    let db = lookups_of(report, "db.example.com");
    assert_eq!(db.len(), 1, "{ctx}");
    assert_eq!(db[0]["function"], "net.(*Resolver).lookupHost", "{ctx}");
    within(
        db[0]["duration_ns"].as_u64().unwrap(),
        host_truth["micros"].as_u64().unwrap(),
        0.05,
        &ctx,
    );

    // A Go program's busy time is the time it was traced, not its
    // threads' (which park in futex and epoll): the lookups are most of it.
    let busy = report["busy_ns"].as_u64().unwrap();
    let lookups_ns: u64 = api
        .iter()
        .chain(&db)
        .map(|l| l["duration_ns"].as_u64().unwrap())
        .sum();
    assert_eq!(report["processes"][0]["go"], true, "{ctx}");
    assert!(
        busy <= report["traced_ns"].as_u64().unwrap() && busy >= lookups_ns,
        "{ctx}: busy {busy} ns, traced {}, lookups {lookups_ns}",
        report["traced_ns"]
    );

    // Every query the server received is in one of the lookups, and each
    // lookup has its A and its AAAA, answered.
    let received = server.queries();
    let mut seen: Vec<(String, String, u64)> = api
        .iter()
        .chain(&db)
        .flat_map(|l| l["queries"].as_array().unwrap().iter())
        .map(|q| {
            assert!(
                q["latency_ns"].as_u64().unwrap() >= 100_000_000,
                "{ctx}: {q}"
            );
            (
                q["name"].as_str().unwrap().to_string(),
                q["qtype"].as_str().unwrap().to_string(),
                q["id"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut sent: Vec<(String, String, u64)> = received
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["type"].as_str().unwrap().to_string(),
                r["id"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    sent.sort();
    assert_eq!(seen, sent, "{ctx}");
    assert_eq!(sent.len(), 6, "{ctx}: A and AAAA per lookup: {received:#?}");
    let transport = if resolv.contains("use-vc") {
        "tcp"
    } else {
        "udp"
    };
    assert!(
        received.iter().all(|r| r["transport"] == transport),
        "{ctx}: all over {transport}: {received:#?}"
    );

    // The code that asked: the fixture's lines, named from the function
    // table even when the binary is stripped.
    let ip_line = fixture_line("net.DefaultResolver.LookupIPAddr(");
    let host_line = fixture_line("net.LookupHost(");
    let sites = |target: &str| {
        rows(report, "call_sites", |c| {
            c["kind"] == "dns" && c["target"] == target
        })
    };
    assert!(
        sites("api.example.com")
            .iter()
            .any(|s| has_frame(s, "main.lookup", ip_line)),
        "{ctx}: main.lookup at gofixture.go:{ip_line}: {:#}",
        report["call_sites"]
    );
    assert!(
        sites("db.example.com")
            .iter()
            .any(|s| has_frame(s, "main.lookup", host_line)),
        "{ctx}: main.lookup at gofixture.go:{host_line}: {:#}",
        report["call_sites"]
    );
}

#[test]
fn go_resolver_lookups_are_timed_with_their_queries_and_code_on_every_go() {
    for minor in GO_MINORS {
        check_lookups(minor, GoBuild::PureStripped, "nameserver 127.0.0.1\n", &[]);
    }
}

#[test]
fn go_lookups_through_libc_count_once_as_go_lookups_on_every_go() {
    for minor in GO_MINORS {
        check_lookups(
            minor,
            GoBuild::Cgo,
            "nameserver 127.0.0.1\n",
            &[("GODEBUG", "netdns=cgo")],
        );
    }
}

#[test]
fn dns_over_tcp_is_decoded_from_its_length_prefixed_messages() {
    check_lookups(
        23,
        GoBuild::PureStripped,
        "nameserver 127.0.0.1\noptions use-vc\n",
        &[],
    );
}

/// The server's answer: 100 records of 1000 bytes, 2 ms apart.
const RECORDS: u32 = 100;
const RECORD_BYTES: u32 = 1000;

#[test]
fn go_crypto_tls_calls_and_bytes_are_exact_on_every_go() {
    let read_line = fixture_line("n, err := c.Conn.Read(b)");
    for minor in GO_MINORS {
        let ctx = format!("Go 1.{minor}");
        let mut server = TlsServer::start(RECORDS, RECORD_BYTES, 2);
        let client = Fixture::start_command(std::process::Command::new(go_fixture(
            minor,
            GoBuild::PureStripped,
        )));
        let mut truth = Value::Null;
        let traced = trace_until_exit(&format!("go-tls-go1{minor}"), client, |c| {
            truth = c.run(&format!("get https://127.0.0.1:{}/", server.port), LONG);
        });
        assert_eq!(truth["err"], "", "{ctx}: {truth}");
        assert_eq!(truth["body"], RECORDS * RECORD_BYTES, "{ctx}: {truth}");
        assert_eq!(server.served(), u64::from(RECORDS * RECORD_BYTES));
        let report = &traced.report;
        let want = format!("127.0.0.1:{}", server.port);
        let peers = rows(report, "tls_peers", |p| p["peer"] == want.as_str());
        assert_eq!(peers.len(), 1, "{ctx}: {:#}", report["tls_peers"]);
        let p = peers[0];
        // Every Read and Write crypto/tls made, and their bytes.
        assert_eq!(p["reads"], truth["tls_reads"], "{ctx}: {p:#} vs {truth}");
        assert_eq!(p["read_bytes"], truth["tls_read"], "{ctx}: {p:#}");
        assert_eq!(p["writes"], truth["tls_writes"], "{ctx}: {p:#}");
        assert_eq!(p["write_bytes"], truth["tls_written"], "{ctx}: {p:#}");
        assert_eq!(p["handshakes"], 1, "{ctx}: {p:#}");
        assert_eq!(p["connections"], 1, "{ctx}: {p:#}");
        // The server sleeps between records: the reads wait for the socket.
        let waiting = p["read_waiting_ns"].as_f64().unwrap() / p["read_ns"].as_f64().unwrap();
        assert!(waiting > 0.8, "{ctx}: waiting share {waiting}: {p:#}");
        assert!(
            report["tls_libraries"][0]
                .as_str()
                .unwrap()
                .contains("gofixture"),
            "{ctx}: {:#}",
            report["tls_libraries"]
        );
        // The code that read: the fixture's wrapper, named from the
        // stripped binary's function table.
        let sites = rows(report, "call_sites", |c| c["kind"] == "tls read");
        assert!(
            sites
                .iter()
                .any(|s| has_frame(s, "main.countingConn.Read", read_line)),
            "{ctx}: main.countingConn.Read at gofixture.go:{read_line}: {:#}",
            report["call_sites"]
        );
    }
}

/// A copy of the fixture that says it is Go 1.93 (its version rewritten
/// in place, in .go.buildinfo and wherever else it is): a layout the
/// tracer does not know.
fn future_go_fixture() -> std::path::PathBuf {
    let built = go_fixture(23, GoBuild::PureStripped);
    let mut bytes = std::fs::read(&built).unwrap();
    let mut patched = 0;
    for at in 0..bytes.len() - 7 {
        if &bytes[at..at + 7] == b"go1.23." {
            bytes[at + 4] = b'9';
            patched += 1;
        }
    }
    assert!(patched > 0, "no Go version in the fixture");
    let out = built.with_file_name("gofixture-future");
    std::fs::write(&out, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    out
}

#[test]
fn an_unknown_go_gets_one_warning_and_its_dns_traffic_is_still_decoded() {
    let ns = NetNs::new("gofuture", "nameserver 127.0.0.1\n");
    let mut server = DnsServer::start(&ns, &[]);
    let client = Fixture::start_command(ns.command(future_go_fixture()));
    let traced = trace_until_exit("go-future", client, |c| {
        let r = c.run("lookup api.example.com", LONG);
        assert_eq!(r["err"], "", "{r}");
    });
    let warnings = traced.warnings();
    assert_eq!(warnings.len(), 1, "{}", traced.stderr);
    assert!(
        warnings[0].contains("go1.93") && warnings[0].contains("DNS traffic still is"),
        "{}",
        warnings[0]
    );
    let report = &traced.report;
    assert_eq!(
        report["dns_lookups_total"], 0,
        "no Go probe: no lookup timed"
    );
    let received = server.queries().len() as u64;
    assert_eq!(received, 2, "A and AAAA");
    let decoded: u64 = rows(report, "dns_queries", |q| q["name"] == "api.example.com")
        .iter()
        .map(|q| q["count"].as_u64().unwrap())
        .sum();
    assert_eq!(decoded, received, "{:#}", report["dns_queries"]);
}

/// One request to the Go server's /work in the namespace, by curl there:
/// what the handler measured.
fn request_work(ns: &NetNs, port: u64, tls_port: u16) -> Value {
    let url = format!(
        "http://127.0.0.1:{port}/work?host=svc.example.com&url=https://127.0.0.1:{tls_port}/"
    );
    let out = ns
        .command("curl")
        .args(["-sS", "--max-time", "30", &url])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn a_go_server_that_calls_out_is_seen_per_request_on_every_go() {
    let lookup_line = fixture_line("\"lookup\": lookup(");
    for minor in GO_MINORS {
        let ctx = format!("Go 1.{minor}");
        let ns = NetNs::new(&format!("gosrv{minor}"), "nameserver 127.0.0.1\n");
        let _dns = DnsServer::start(&ns, &["--delay-ms", "50"]);
        let mut tls = TlsServer::start_in(&ns, 20, 500, 1);
        let server = Fixture::start_command(ns.command(go_fixture(minor, GoBuild::PureStripped)));
        let mut truth = Vec::new();
        let traced = trace_until_exit(&format!("go-server-go1{minor}"), server, |s| {
            let port = s.run("serve", LONG)["port"].as_u64().unwrap();
            for _ in 0..3 {
                truth.push(request_work(&ns, port, tls.port));
            }
        });
        for _ in 0..3 {
            assert_eq!(tls.served(), 10_000, "{ctx}");
        }
        let report = &traced.report;
        for t in &truth {
            assert_eq!(t["lookup"]["err"], "", "{ctx}: {t}");
            assert_eq!(t["get"]["err"], "", "{ctx}: {t}");
        }
        // Each request's lookup, timed as the handler timed it.
        let lookups = lookups_of(report, "svc.example.com");
        assert_eq!(lookups.len(), 3, "{ctx}: {:#}", report["slowest_lookups"]);
        let mut tracer_ns: Vec<u64> = lookups
            .iter()
            .map(|l| l["duration_ns"].as_u64().unwrap())
            .collect();
        let mut client_us: Vec<u64> = truth
            .iter()
            .map(|t| t["lookup"]["micros"].as_u64().unwrap())
            .collect();
        tracer_ns.sort_unstable();
        client_us.sort_unstable();
        for (t, c) in tracer_ns.iter().zip(&client_us) {
            within(*t, *c, 0.05, &ctx);
        }
        // Every TLS call of the three requests, and their bytes.
        let sum = |field: &str| -> u64 {
            truth
                .iter()
                .map(|t| t["get"][field].as_u64().unwrap())
                .sum()
        };
        let want = format!("127.0.0.1:{}", tls.port);
        let peers = rows(report, "tls_peers", |p| p["peer"] == want.as_str());
        assert_eq!(peers.len(), 1, "{ctx}: {:#}", report["tls_peers"]);
        let p = peers[0];
        assert_eq!(p["reads"], sum("tls_reads"), "{ctx}: {p:#}");
        assert_eq!(p["read_bytes"], sum("tls_read"), "{ctx}: {p:#}");
        assert_eq!(p["write_bytes"], sum("tls_written"), "{ctx}: {p:#}");
        assert_eq!(p["handshakes"], 3, "{ctx}: {p:#}");
        // The handler's line, in the request's goroutine.
        let sites = rows(report, "call_sites", |c| {
            c["kind"] == "dns" && c["target"] == "svc.example.com"
        });
        assert!(
            sites.iter().any(|s| has_frame(s, "main.work", lookup_line)),
            "{ctx}: main.work at gofixture.go:{lookup_line}: {:#}",
            report["call_sites"]
        );
    }
}

#[test]
fn a_go_lookup_whose_aaaa_is_dropped_shows_the_timeouts_and_the_retry() {
    let ns = NetNs::new(
        "goaaaa",
        "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n",
    );
    let mut server = DnsServer::start(&ns, &["--drop-type", "AAAA"]);
    let client = go_client(&ns, 23, GoBuild::PureStripped, &[]);
    let mut truth = Value::Null;
    let traced = trace_until_exit("go-aaaa", client, |c| {
        truth = c.run("lookup api.example.com", LONG);
    });
    let report = &traced.report;
    let micros = truth["micros"].as_u64().unwrap();
    assert!(
        micros > 1_900_000,
        "the client waited for two timeouts: {truth}"
    );
    let lookups = lookups_of(report, "api.example.com");
    assert_eq!(lookups.len(), 1, "{:#}", report["slowest_lookups"]);
    within(
        lookups[0]["duration_ns"].as_u64().unwrap(),
        micros,
        0.05,
        "lookup",
    );
    let received = server.queries();
    let queries = lookups[0]["queries"].as_array().unwrap();
    assert_eq!(
        queries.len(),
        received.len(),
        "{queries:#?} vs {received:#?}"
    );
    let unanswered = received.iter().filter(|r| r["dropped"] == true).count();
    assert!(unanswered >= 2, "{received:#?}");
    let h = rows(report, "dns_hosts", |h| h["host"] == "api.example.com")[0];
    assert_eq!(h["timeouts"], unanswered, "{h:#}");
    assert!(h["retries"].as_u64().unwrap() >= 1, "{h:#}");
    let findings: String = h["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        findings.contains("AAAA queries got no answer"),
        "{findings}"
    );
}

#[test]
fn a_go_lookup_still_open_when_tracing_stops_is_reported_in_progress() {
    // The AAAA query is never answered: the lookup waits out a 1 s
    // timeout, retries, and ends after 2 s; the trace stops after 1 s.
    let ns = NetNs::new(
        "goopen",
        "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n",
    );
    let mut server = DnsServer::start(&ns, &["--drop-type", "AAAA"]);
    let mut client = go_client(&ns, 23, GoBuild::PureStripped, &[]);
    let json_path = scratch("go-open-lookup");
    let pid = client.pid.to_string();
    let tracer = Tracer::attached(&[
        "report",
        "--pid",
        &pid,
        "--json",
        json_path.to_str().unwrap(),
        "--duration",
        "1s",
    ]);
    let sent = std::time::Instant::now();
    client.send("lookup api.example.com");
    let done = tracer.finish(LONG);
    let traced_for = sent.elapsed();
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let truth = json(&client.out.wait_for("\"cmd\":\"lookup\"", LONG));
    client.exit();
    let report = read_report(&json_path);
    let micros = truth["micros"].as_u64().unwrap();
    assert!(micros > 1_900_000, "the lookup outlived the trace: {truth}");

    let lookups = lookups_of(&report, "api.example.com");
    assert_eq!(lookups.len(), 1, "{:#}", report["slowest_lookups"]);
    let open = lookups[0];
    assert_eq!(open["result"], "in progress", "{open:#}");
    assert_eq!(open["function"], "net.(*Resolver).lookupIPAddr", "{open:#}");
    // Timed to the trace's end: less than the whole lookup, no more than
    // the time from the command to the tracer's exit.
    let ns_so_far = open["duration_ns"].as_u64().unwrap();
    assert!(
        ns_so_far < micros * 1000 && ns_so_far <= traced_for.as_nanos() as u64,
        "{ns_so_far} ns so far; the lookup took {micros} µs, the trace {traced_for:?}"
    );
    assert_eq!(report["dns_lookups_total"], 1);
    // Its queries so far: the A answered, the AAAA waiting, counted in the
    // lookup and nowhere else.
    let queries = open["queries"].as_array().unwrap();
    let answered = |t: &str, yes: bool| {
        queries
            .iter()
            .any(|q| q["qtype"] == t && q["latency_ns"].is_u64() == yes)
    };
    assert!(
        answered("A", true) && answered("AAAA", false),
        "{queries:#?}"
    );
    let received = server.queries();
    assert!(
        queries.len() <= received.len(),
        "{queries:#?} vs {received:#?}"
    );
    assert_eq!(report["dns_queries"], serde_json::json!([]), "{report:#}");
    // Its call site, as for a lookup that ended.
    let line = fixture_line("net.DefaultResolver.LookupIPAddr(");
    let sites = rows(&report, "call_sites", |c| {
        c["kind"] == "dns" && c["target"] == "api.example.com"
    });
    assert!(
        sites.iter().any(|s| has_frame(s, "main.lookup", line)),
        "main.lookup at gofixture.go:{line}: {:#}",
        report["call_sites"]
    );
}

#[test]
fn go_read_loops_idle_waits_are_not_read_time_and_wrapped_sockets_are_named() {
    // The fixture serves HTTPS and calls itself over one kept-alive
    // connection, as Prometheus scrapes: 5 GETs of a page that takes
    // 50 ms, 400 ms apart, each end of the connection wrapped as
    // connection trackers do.
    const GETS: u64 = 5;
    const PAUSE_MS: u64 = 400;
    for minor in GO_MINORS {
        let ctx = format!("Go 1.{minor}");
        let (cert, key) = self_signed_cert();
        let client = Fixture::start_command(std::process::Command::new(go_fixture(
            minor,
            GoBuild::PureStripped,
        )));
        let mut truth = Value::Null;
        let mut port = 0;
        let traced = trace_until_exit(&format!("go-keepalive-go1{minor}"), client, |c| {
            let served = c.run(
                &format!("servetls {} {}", cert.display(), key.display()),
                LONG,
            );
            port = served["port"].as_u64().expect("servetls port");
            truth = c.run(
                &format!("keepalive https://127.0.0.1:{port}/slow?ms=50 {GETS} {PAUSE_MS}"),
                LONG,
            );
        });
        assert_eq!(truth["err"], "", "{ctx}: {truth}");
        assert_eq!(truth["handshakes"], 1, "{ctx}: {truth}");
        let report = &traced.report;
        let peers = report["tls_peers"].as_array().unwrap();
        assert!(
            peers
                .iter()
                .all(|p| !p["peer"].as_str().unwrap().contains("unknown")),
            "{ctx}: every socket named: {peers:#?}"
        );

        // The client's end: every call and byte, and read time that is
        // the GETs' waits, not the pauses between them.
        let want = format!("127.0.0.1:{port}");
        let client_end = rows(report, "tls_peers", |p| p["peer"] == want.as_str());
        assert_eq!(client_end.len(), 1, "{ctx}: {peers:#?}");
        let c = client_end[0];
        assert_eq!(c["reads"], truth["tls_reads"], "{ctx}: {c:#} vs {truth}");
        assert_eq!(c["read_bytes"], truth["tls_read"], "{ctx}: {c:#}");
        assert_eq!(c["write_bytes"], truth["tls_written"], "{ctx}: {c:#}");
        let read_ns = c["read_ns"].as_u64().unwrap();
        let gets_ns = truth["micros"].as_u64().unwrap() * 1000;
        assert!(
            read_ns <= gets_ns && read_ns >= GETS * 50_000_000,
            "{ctx}: read time {read_ns} ns, the GETs took {gets_ns} ns: {c:#}"
        );
        let idle_ns = c["read_idle_ns"].as_u64().unwrap();
        assert!(
            idle_ns >= (GETS - 1) * PAUSE_MS * 900_000,
            "{ctx}: the pauses are the idle waits: {idle_ns} ns: {c:#}"
        );

        // The server's end (the client's port): its waits for the next
        // request are idle, and so is the read net/http keeps pending
        // while the handler runs; what is left is reading the requests.
        let server_end = rows(report, "tls_peers", |p| {
            p["peer"].as_str().unwrap().starts_with("127.0.0.1:") && p["peer"] != want.as_str()
        });
        assert_eq!(server_end.len(), 1, "{ctx}: {peers:#?}");
        let s = server_end[0];
        assert_eq!(s["write_bytes"], truth["tls_read"], "{ctx}: {s:#}");
        assert!(
            s["read_ns"].as_u64().unwrap() < GETS * 5_000_000,
            "{ctx}: {s:#}"
        );
        assert!(
            s["read_idle_ns"].as_u64().unwrap() >= (GETS - 1) * PAUSE_MS * 900_000,
            "{ctx}: {s:#}"
        );
    }
}
