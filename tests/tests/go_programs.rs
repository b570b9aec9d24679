//! Go programs not written here, traced as a user would: what the report
//! says of them, against what they were made to do.

use std::time::Duration;

use tracer_tests::*;

const LONG: Duration = Duration::from_secs(60);

/// Debian's Prometheus (Go 1.19, cgo, stripped), a Go program not written
/// here, scraping itself over HTTPS by two names and finding a third by
/// DNS service discovery (github.com/miekg/dns on a connected UDP socket).
#[test]
fn prometheus_a_go_program_written_elsewhere_is_seen_whole() {
    let ns = NetNs::new(
        "goprom",
        "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n",
    );
    let mut server = DnsServer::start(
        &ns,
        &[
            "--delay-ms",
            "100",
            "--answer-a",
            "127.0.0.1",
            "--empty-aaaa",
        ],
    );
    let dir = scratch("go-prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed_cert();
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let tls = "    scheme: https\n    tls_config:\n      insecure_skip_verify: true\n";
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n\
             \x20 - job_name: self\n{tls}    static_configs:\n\
             \x20     - targets: ['prom1.example.com:9090', 'prom2.example.com:9090']\n\
             \x20 - job_name: sd\n{tls}    dns_sd_configs:\n\
             \x20     - names: ['sd.example.com']\n        type: A\n        port: 9090\n\
             \x20       refresh_interval: 1s\n"
        ),
    )
    .unwrap();
    let json_path = dir.join("report");
    let (config, web, data) = (
        format!("--config.file={}", config.display()),
        format!("--web.config.file={}", web.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
    );
    let done = run_tracer(
        &[
            "report",
            "--duration",
            "8s",
            "--json",
            json_path.to_str().unwrap(),
            "--",
            "ip",
            "netns",
            "exec",
            &ns.name,
            "prometheus",
            &config,
            &web,
            &data,
            "--web.listen-address=127.0.0.1:9090",
            "--log.level=error",
        ],
        LONG,
    );
    let report = read_report(&json_path);
    // The command outlives the trace: stop it.
    if let Some(pid) = report["processes"][0]["pid"].as_i64() {
        // SAFETY: kill(2) on the process the tracer started for us.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    assert_eq!(done.code, Some(0), "{}", done.stderr);

    // One lookup per name, as slow as the DNS server, named by the code
    // that dialed (a dependency of Prometheus's, not Go's net package).
    for host in ["prom1.example.com", "prom2.example.com"] {
        let lookups = lookups_of(&report, host);
        assert_eq!(lookups.len(), 1, "{host}: {:#}", report["slowest_lookups"]);
        let ns_taken = lookups[0]["duration_ns"].as_u64().unwrap();
        assert!(
            (100_000_000..1_000_000_000).contains(&ns_taken),
            "{host}: {ns_taken}"
        );
        assert_eq!(lookups[0]["queries"].as_array().unwrap().len(), 2, "{host}");
        let sites = rows(&report, "call_sites", |c| {
            c["kind"] == "dns" && c["target"] == host
        });
        assert!(
            sites.iter().any(
                |s| s["frames"].as_array().unwrap().iter().any(|f| f["function"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("github.com/")))
            ),
            "{host}: the dialing code: {sites:#?}"
        );
    }
    // miekg/dns's queries, on a connected UDP socket of its own.
    let received = server.queries();
    let sd_sent = received
        .iter()
        .filter(|q| q["name"] == "sd.example.com")
        .count();
    let sd = rows(&report, "dns_queries", |q| q["name"] == "sd.example.com");
    assert_eq!(sd.len(), 1, "{:#}", report["dns_queries"]);
    assert!(sd_sent >= 3, "{received:#?}");

    // Every TLS socket named (the connections are wrapped), and the read
    // loops' waits between scrapes not counted as reads.
    let peers = report["tls_peers"].as_array().unwrap();
    assert!(
        peers
            .iter()
            .all(|p| !p["peer"].as_str().unwrap().contains("unknown")),
        "{peers:#?}"
    );
    // The three targets share 127.0.0.1:9090: each connection is named by
    // the lookup its goroutine made before dialing (the SD target is
    // dialed by number).
    for target in [
        "prom1.example.com:9090 (",
        "prom2.example.com:9090 (",
        "127.0.0.1:9090",
    ] {
        assert!(
            peers
                .iter()
                .any(|p| p["peer"].as_str().unwrap().starts_with(target)),
            "{target}: {peers:#?}"
        );
    }
    // Six connections (three scraped, three serving) each idle for most
    // of the trace: their reads are a few ms a scrape.
    let read_ns: u64 = peers.iter().map(|p| p["read_ns"].as_u64().unwrap()).sum();
    let traced = report["traced_ns"].as_u64().unwrap();
    assert!(
        read_ns < traced / 10,
        "reads {read_ns} ns, traced {traced} ns: {peers:#?}"
    );
}
