//! The image the DaemonSet runs (deploy/container/Containerfile around
//! `cargo xtask dist`'s static tracer), under podman with the DaemonSet's
//! own settings: the host's PID namespace, its capabilities (BPF, PERFMON,
//! SYS_PTRACE, SYS_ADMIN, all others dropped), a read-only root, and the
//! tracefs, BTF and cgroup mounts. The tracer is then in a mount namespace
//! of its own and must still see a host process's lookups, connects and
//! TLS reads, and those of a process in another container (its libraries
//! its image's copies, other inodes), labelled with that container's id.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tracer_tests::{prometheus::*, *};

const LONG: Duration = Duration::from_secs(60);
const LOOKUPS: u32 = 3;

/// podman as this machine runs it (PLATFORM.md, "Containers"): the vfs
/// driver, runc (crun refuses hybrid cgroups), cgroupfs.
fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args([
        "--storage-driver",
        "vfs",
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
    ]);
    cmd
}

/// The ulimits podman would set by default are refused here.
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build_image(tag: &str, containerfile: &Path, context: &Path) {
    let out = podman()
        .args(["build", "-q", "-t", tag, "-f"])
        .arg(containerfile)
        .arg(context)
        .output()
        .expect("podman (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "podman build {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sum of `tracer_call_duration_seconds_count{parts}` once two
/// scrapes a second apart agree (the tracer drains on a timer).
fn settled_count(port: u16, parts: &[&str]) -> f64 {
    let count = || {
        let (_, body) = http_get(port, "/metrics");
        metric_sum(&body, CALLS, parts)
    };
    let mut last = count();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
}

const CALLS: &str = "tracer_call_duration_seconds_count";

/// Looks `localhost` up until the tracer counts the client's lookups (a
/// process started after the tracer has its libraries probed when the
/// kernel reports them, a moment after it starts), then `LOOKUPS` more,
/// which must all be counted; then the TLS request. The client's own
/// counts of that request.
fn lookups_and_a_request(client: &mut Fixture, metrics: &[&str], port: u16, tls: u16) -> Value {
    let dns: Vec<&str> = [r#"kind="dns""#, r#"target="localhost""#]
        .into_iter()
        .chain(metrics.iter().copied())
        .collect();
    let deadline = Instant::now() + LONG;
    loop {
        let r = client.run("lookup localhost", LONG);
        assert_eq!(r["ret"], 0, "{r}");
        std::thread::sleep(Duration::from_millis(300));
        let (_, body) = http_get(port, "/metrics");
        if metric_sum(&body, CALLS, &dns) >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no lookup of {metrics:?} counted:\n{body}"
        );
    }
    let before = settled_count(port, &dns);
    for _ in 0..LOOKUPS {
        let r = client.run("lookup localhost", LONG);
        assert_eq!(r["ret"], 0, "{r}");
    }
    wait_for_metric(port, CALLS, &dns, before + f64::from(LOOKUPS));
    let truth = client.run(&format!("get {tls} 100"), LONG);
    assert_eq!(truth["handshake"], 1, "{truth}");
    truth
}

/// Removes the containers and images on every way out: a tracer container
/// left behind would go on tracing every process on the machine.
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = podman().args(["rm", "-f", "-t", "60", c]).output();
        }
        for i in &self.images {
            let _ = podman().args(["rmi", "-f", i]).output();
        }
    }
}

#[test]
fn the_daemonsets_image_sees_the_host_and_another_container() {
    require_root();
    let dist = repo().join("target/dist");
    assert!(
        dist.join("tracer").exists(),
        "no {}/tracer: `cargo xtask dist` builds it (`cargo xtask test` does, first)",
        dist.display()
    );
    let image = format!("localhost/tracer:e2e-{}", std::process::id());
    let client_image = format!("localhost/tracer-e2e-client:{}", std::process::id());
    let name = format!("tracer-e2e-{}", std::process::id());
    let _cleanup = Cleanup {
        containers: vec![name.clone()],
        images: vec![image.clone(), client_image.clone()],
    };
    build_image(
        &image,
        &repo().join("deploy/container/Containerfile"),
        &dist,
    );
    // The other container: the TLS client and its libraries, alone.
    let root = Root::build("container");
    let containerfile = scratch("client-containerfile");
    std::fs::write(&containerfile, "FROM scratch\nCOPY . /\n").unwrap();
    build_image(&client_image, &containerfile, &root.dir);

    let mut server = TlsServer::start(20, 100, 1);
    let port = closed_port();
    let mut tracer = podman()
        .args(["run", "--rm", "--name", &name])
        .args(["--pid=host", "--network=host", "--read-only"])
        .args([
            "--cap-drop=ALL",
            "--cap-add=BPF,PERFMON,SYS_PTRACE,SYS_ADMIN",
        ])
        // Kubernetes runs a pod without a seccomp profile unless told to.
        .args(["--security-opt", "seccomp=unconfined"])
        .args(["-v", "/sys/kernel/tracing:/sys/kernel/tracing"])
        .args(["-v", "/sys/kernel/btf:/sys/kernel/btf:ro"])
        .args(["-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro"])
        .args(ULIMITS)
        .arg(&image)
        .args(["serve", "--all", "--labels", "container", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("podman run");
    let mut stderr = Lines::new_from(tracer.stderr.take().unwrap());
    stderr.wait_for("serving metrics", LONG);

    // A host process: no container label.
    let mut host = Fixture::start_command(Command::new(env!("TLS_CLIENT_BIN")));
    let host_labels = [r#"process="tls-client""#, r#"container="""#];
    let host_truth = lookups_and_a_request(&mut host, &host_labels, port, server.port);
    // A process in another container: labelled with its id.
    let cidfile = scratch("client-cid");
    let mut cmd = podman();
    cmd.args(["run", "-i", "--rm", "--network=host", "--cidfile"])
        .arg(&cidfile)
        .args(ULIMITS)
        .arg(&client_image)
        .arg("/bin/tls-client");
    let mut inner = Fixture::start_command(cmd);
    let id = std::fs::read_to_string(&cidfile).expect("podman's --cidfile");
    let container = format!("container=\"{}\"", &id.trim()[..12]);
    let inner_labels = [r#"process="tls-client""#, container.as_str()];
    let inner_truth = lookups_and_a_request(&mut inner, &inner_labels, port, server.port);

    // Its connect and every SSL_read, each process's under its labels. The
    // peer is named after the lookups before it ("localhost:PORT
    // (127.0.0.1)").
    let peer = format!(":{}", server.port);
    for (labels, truth) in [(&host_labels, &host_truth), (&inner_labels, &inner_truth)] {
        let with = |kind: &'static str| -> Vec<&str> {
            [kind, peer.as_str(), labels[0], labels[1]].to_vec()
        };
        wait_for_metric(port, CALLS, &with(r#"kind="connect""#), 1.0);
        let reads = truth["reads"].as_f64().unwrap();
        wait_for_metric(port, CALLS, &with(r#"kind="tls_read""#), reads);
    }
    let bytes = host_truth["bytes"].as_f64().unwrap() + inner_truth["bytes"].as_f64().unwrap();
    wait_for_metric(
        port,
        "tracer_tls_bytes_total",
        &[r#"direction="read""#, &peer],
        bytes,
    );
    server.served();

    inner.exit();
    host.exit();
    // SIGTERM to the tracer: it detaches and exits 0.
    let stopped = podman().args(["stop", "-t", "60", &name]).output().unwrap();
    assert!(stopped.status.success(), "podman stop");
    let status = tracer.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", stderr.seen.join("\n"));
}
