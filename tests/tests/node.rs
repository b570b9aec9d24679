//! Node mode (`tracer serve --all`, `--cgroup`, `--container`, `--netns`):
//! processes are traced as they come, without naming them; and a fleet of
//! three simulated nodes, each a network namespace with its own workload
//! and its own `tracer serve --netns`, scraped by one real Prometheus.

use std::time::Duration;

use tracer_tests::{prometheus::*, *};

const LONG: Duration = Duration::from_secs(60);

/// `tracer serve ARGS --listen 127.0.0.1:PORT` on a free port, once it
/// serves; and the port.
fn serve(args: &[&str]) -> (Tracer, u16) {
    let port = closed_port();
    let listen = format!("127.0.0.1:{port}");
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    all.extend(["--listen", &listen]);
    let mut tracer = Tracer::start(&all);
    tracer.stderr.wait_for("serving metrics", LONG);
    (tracer, port)
}

#[test]
fn a_cgroup_is_traced_whole_and_nothing_outside_it() {
    require_root();
    let (inside_port, outside_port) = (OpenListener::start(), OpenListener::start());
    let cgroup = Cgroup::new("node");
    // One process in the cgroup before the tracer starts, one after; one
    // outside it all along.
    let mut early = Fixture::start();
    cgroup.add(early.pid);
    let mut outside = Fixture::start();
    let (tracer, port) = serve(&["--cgroup", cgroup.path.to_str().unwrap()]);
    let mut late = Fixture::start();
    cgroup.add(late.pid);

    early.run(&format!("connect-ok {} 7", inside_port.port), LONG);
    early.run(&format!("fork-connect {} 3", inside_port.port), LONG);
    late.run(&format!("connect-ok {} 4", inside_port.port), LONG);
    outside.run(&format!("connect-ok {} 5", outside_port.port), LONG);

    let inside = format!("peer=\"127.0.0.1:{}\"", inside_port.port);
    let body = wait_for_metric(
        port,
        "tracer_connects_total",
        &[&inside, "result=\"ok\""],
        14.0,
    );
    let away = format!("peer=\"127.0.0.1:{}\"", outside_port.port);
    assert_eq!(
        metric_sum(&body, "tracer_connects_total", &[&away]),
        0.0,
        "a process outside the cgroup is not traced:\n{body}"
    );
    assert!(
        metric_sum(&body, "tracer_traced_processes", &[]) >= 2.0,
        "{body}"
    );
    tracer.interrupt();
    let done = tracer.finish(LONG);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    for f in [early, late, outside] {
        f.exit();
    }
    assert_nothing_left_loaded();
}

#[test]
fn all_traces_processes_it_was_never_told_about() {
    require_root();
    let open = OpenListener::start();
    let json_path = scratch("all");
    let mut tracer = Tracer::start(&[
        "report",
        "--all",
        "--duration",
        "6s",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    tracer.stderr.wait_for("tracing every process", LONG);
    std::thread::sleep(Duration::from_millis(500));
    // Started after the tracer, never named to it.
    let mut fixture = Fixture::start();
    fixture.run(&format!("connect-ok {} 6", open.port), LONG);
    let pid = fixture.pid;
    fixture.exit();
    let tracer_pid = tracer.child.id();
    let done = tracer.finish(LONG);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let report = read_report(&json_path);
    let peer = format!("127.0.0.1:{}", open.port);
    let seen: u64 = rows(&report, "connect_peers", |r| r["peer"] == peer.as_str())
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(seen, 6);
    let me = rows(&report, "processes", |p| p["pid"] == pid);
    assert_eq!(me.len(), 1, "the fixture is listed");
    let itself = rows(&report, "processes", |p| p["pid"] == tracer_pid);
    assert!(itself.is_empty(), "the tracer does not trace itself");
    // It did trace others it was not told about: this test, for one.
    let harness = rows(&report, "processes", |p| p["pid"] == std::process::id());
    assert_eq!(harness.len(), 1);
}

#[test]
fn a_container_is_found_by_its_id_and_labelled() {
    require_root();
    let open = OpenListener::start();
    // A cgroup named as Docker's systemd driver names a container's.
    let id = format!("{:016x}{:048x}", std::process::id(), 0xc0ffee_u64);
    let cgroup = Cgroup::named(&format!("docker-{id}.scope"));
    let mut fixture = Fixture::start();
    cgroup.add(fixture.pid);
    let port = closed_port();
    let mut tracer = Tracer::start(&[
        "serve",
        "--container",
        &id[..12],
        "--labels",
        "container",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    let said = tracer
        .stderr
        .wait_for("tracing every process in container", LONG);
    assert!(said.contains(&id[..12]), "{said}");
    fixture.run(&format!("connect-ok {} 3", open.port), LONG);
    let container = format!("container=\"{}\"", &id[..12]);
    wait_for_metric(
        port,
        "tracer_call_duration_seconds_count",
        &["kind=\"syscall\"", "target=\"connect\"", &container],
        3.0,
    );
    tracer.interrupt();
    assert_eq!(tracer.finish(LONG).code, Some(0));
    fixture.exit();
}

#[test]
fn connects_of_two_containers_to_one_peer_are_two_series() {
    require_root();
    let open = OpenListener::start();
    let peer = format!("target=\"127.0.0.1:{}\"", open.port);
    let mut containers: Vec<(String, Cgroup, Fixture)> = [0xa_u64, 0xb]
        .into_iter()
        .map(|n| {
            // Distinct in the 12 digits labels show.
            let id = format!("{n:012x}{:052x}", std::process::id());
            let cgroup = Cgroup::named(&format!("docker-{id}.scope"));
            let fixture = Fixture::start();
            cgroup.add(fixture.pid);
            (id, cgroup, fixture)
        })
        .collect();
    let (tracer, port) = serve(&["--all", "--labels", "container"]);
    // 3 connects from the first container, 5 from the second, to one peer.
    for ((_, _, fixture), n) in containers.iter_mut().zip([3, 5]) {
        fixture.run(&format!("connect-ok {} {n}", open.port), LONG);
    }
    for ((id, _, _), n) in containers.iter().zip([3.0, 5.0]) {
        let container = format!("container=\"{}\"", &id[..12]);
        wait_for_metric(
            port,
            "tracer_call_duration_seconds_count",
            &["kind=\"connect\"", &peer, &container],
            n,
        );
    }
    // Each series is one process name's, not the node's names together.
    let (_, body) = http_get(port, "/metrics");
    let connect_series: Vec<&str> = body
        .lines()
        .filter(|l| {
            l.starts_with("tracer_call_duration_seconds_count{")
                && l.contains("kind=\"connect\"")
                && l.contains(&peer)
        })
        .collect();
    assert_eq!(connect_series.len(), 2, "{connect_series:#?}");
    assert!(
        connect_series
            .iter()
            .all(|l| l.contains("process=\"netfixture\"")),
        "{connect_series:#?}"
    );
    tracer.interrupt();
    assert_eq!(tracer.finish(LONG).code, Some(0));
    for (_, _, fixture) in containers {
        fixture.exit();
    }
}

#[test]
fn node_mode_keeps_syscall_stats_per_program_not_per_process() {
    require_root();
    let open = OpenListener::start();
    let cgroup = Cgroup::new("rows");
    let mut fixture = Fixture::start();
    cgroup.add(fixture.pid);
    let (tracer, port) = serve(&["--cgroup", cgroup.path.to_str().unwrap()]);
    // 301 live processes of one program in one cgroup, each of them having
    // made syscalls: kept per process, that is two or more kernel entries
    // each; per program and cgroup, one per syscall.
    let held = fixture.run(&format!("fork-hold 300 {}", open.port), LONG);
    assert_eq!(held["connected"], 300, "{held}");
    wait_for_metric(
        port,
        "tracer_call_duration_seconds_count",
        &[
            "kind=\"syscall\"",
            "target=\"connect\"",
            "process=\"netfixture\"",
        ],
        300.0,
    );
    let entries = kernel_map_entries("SYSCALL_STATS");
    eprintln!("{entries} kernel syscall entries for 301 live processes of one program");
    assert!(
        entries < 100,
        "{entries} kernel entries for 301 live processes of one program"
    );
    fixture.run("release", LONG);
    tracer.interrupt();
    assert_eq!(tracer.finish(LONG).code, Some(0));
    fixture.exit();
}

#[test]
fn a_process_renamed_or_moved_while_traced_counts_under_its_new_row_from_its_next_call() {
    require_root();
    // Two cgroups named as Docker's systemd driver names a container's, so
    // that each series says which one.
    let ids = [0xc_u64, 0xd].map(|n| format!("{n:012x}{:052x}", std::process::id()));
    let cgroups = ids
        .clone()
        .map(|id| Cgroup::named(&format!("docker-{id}.scope")));
    let mut fixture = Fixture::start();
    cgroups[0].add(fixture.pid);
    // Every program on the machine makes syscalls: room for all their
    // names and syscalls, so that the fixture's are not folded into
    // `other`.
    let (tracer, port) = serve(&[
        "--all",
        "--labels",
        "container",
        "--max-processes",
        "10000",
        "--max-targets",
        "10000",
    ]);
    // Node mode keeps each thread's row (name and cgroup) between its
    // syscalls: a rename and a cgroup move must each start a new one.
    fixture.run("getppid 1000", LONG);
    let renamed = fixture.run("rename renamedfixture", LONG);
    assert_eq!(renamed["rc"], 0, "{renamed}");
    fixture.run("getppid 2000", LONG);
    cgroups[1].add(fixture.pid);
    fixture.run("getppid 3000", LONG);
    for (name, id, n) in [
        ("netfixture", &ids[0], 1000.0),
        ("renamedfixture", &ids[0], 2000.0),
        ("renamedfixture", &ids[1], 3000.0),
    ] {
        let process = format!("process=\"{name}\"");
        let container = format!("container=\"{}\"", &id[..12]);
        wait_for_metric(
            port,
            "tracer_call_duration_seconds_count",
            &[
                "kind=\"syscall\"",
                "target=\"getppid\"",
                &process,
                &container,
            ],
            n,
        );
    }
    tracer.interrupt();
    assert_eq!(tracer.finish(LONG).code, Some(0));
    fixture.exit();
}

#[test]
fn a_process_that_execs_a_static_program_is_probed_in_it() {
    require_root();
    let cgroup = Cgroup::new("exec");
    let mut fixture = Fixture::start();
    cgroup.add(fixture.pid);
    let (mut tracer, port) = serve(&[
        "-v",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--labels",
        "container",
    ]);
    // Traced from its syscalls; then it becomes a static program, whose
    // getaddrinfo is in its own executable: no library is mapped to say so.
    fixture.run("sleep 1 3", LONG);
    let program = env!("RESOLVE_STATIC_SYMS_BIN");
    fixture.send(&format!("exec {program}"));
    let ready = json(&fixture.out.wait_for("ready", LONG));
    assert_eq!(ready["ready"], fixture.pid, "exec keeps the PID");
    // The exec is reported to user space, which attaches the probes: a
    // lookup made in the milliseconds before that is not seen (the traced
    // process is never held), so the lookups start once it is done.
    let said = tracer.stderr.wait_for("probing name lookups in", LONG);
    assert!(said.contains(program), "{said}");
    for _ in 0..4 {
        fixture.run("getaddrinfo localhost", LONG);
    }
    // Counted under the new program's name (15 characters, as the kernel
    // keeps it), not the one it had before the exec.
    wait_for_metric(
        port,
        "tracer_call_duration_seconds_count",
        &[
            "kind=\"dns\"",
            "target=\"localhost\"",
            "process=\"resolve-static-\"",
        ],
        4.0,
    );
    tracer.interrupt();
    assert_eq!(tracer.finish(LONG).code, Some(0));
    fixture.exit();
}

/// One simulated node: a network namespace with its own DNS server, a
/// resolving client in it, and `tracer serve` for the namespace.
struct Node {
    name: &'static str,
    _ns: NetNs,
    _dns: DnsServer,
    client: Fixture,
    tracer: Tracer,
    port: u16,
}

impl Node {
    fn start(name: &'static str, dns_delay_ms: u32) -> Self {
        let ns = NetNs::new(name, "nameserver 127.0.0.1\noptions attempts:1 timeout:2\n");
        let delay = dns_delay_ms.to_string();
        let dns = DnsServer::start(&ns, &["--delay-ms", &delay]);
        let (tracer, port) = serve(&["--netns", &format!("/run/netns/{}", ns.name)]);
        let client = Fixture::start_command(ns.command(env!("RESOLVE_BIN")));
        Self {
            name,
            _ns: ns,
            _dns: dns,
            client,
            tracer,
            port,
        }
    }
}

#[test]
fn a_fleet_of_three_nodes_names_the_node_and_host_with_slow_dns() {
    require_root();
    let mut nodes: Vec<Node> = [("node-a", 0), ("node-b", 120), ("node-c", 0)]
        .into_iter()
        .map(|(name, delay)| Node::start(name, delay))
        .collect();
    let targets: Vec<(u16, &str)> = nodes.iter().map(|n| (n.port, n.name)).collect();
    let prometheus = Prometheus::start(&targets);
    for node in &mut nodes {
        for host in ["api.shop.test", "cache.shop.test"] {
            for _ in 0..5 {
                let r = node.client.run(&format!("getaddrinfo {host}"), LONG);
                assert_eq!(r["ret"], 0, "{}: {r}", node.name);
            }
        }
    }
    // Each node's tracer saw its own 10 lookups and none of the other
    // nodes' (they would make its counts 15): wait until Prometheus has
    // scraped them all.
    prometheus.query_until(
        "count(tracer_call_duration_seconds_count{kind=\"dns\"} == 5)",
        6.0,
    );
    let query = "topk(1, sum by (node, target) (tracer_call_duration_seconds_sum{kind=\"dns\"}) \
                 / sum by (node, target) (tracer_call_duration_seconds_count{kind=\"dns\"}))";
    let answer = prometheus.query(query);
    let _ = std::fs::write(scratch("fleet-promql"), format!("{query}\n{answer:#}\n"));
    let top = &answer[0];
    assert_eq!(top["metric"]["node"], "node-b", "{answer:#}");
    assert!(
        ["api.shop.test", "cache.shop.test"]
            .contains(&top["metric"]["target"].as_str().unwrap_or("")),
        "{answer:#}"
    );
    let mean: f64 = top["value"][1].as_str().unwrap().parse().unwrap();
    assert!(mean >= 0.120, "the slow node's mean lookup {mean} s");
    for node in nodes {
        node.client.exit();
        node.tracer.interrupt();
        let done = node.tracer.finish(LONG);
        assert_eq!(done.code, Some(0), "{}: {}", node.name, done.stderr);
    }
}
