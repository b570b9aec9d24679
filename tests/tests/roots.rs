//! Processes whose root is not the tracer's: in a chroot, in a mount
//! namespace of their own (pivot_root into another root, as a container
//! runtime does) and in a PID namespace (the tracer is given the host PID).
//! Their libraries are copies, other files than the host's, so a tracer
//! that opened a mapped file by its path as shown in /proc/PID/maps would
//! probe the wrong file or none. In each, every lookup, connect and SSL
//! read must be counted.

use std::{process::Command, time::Duration};

use tracer_tests::*;

const LONG: Duration = Duration::from_secs(60);
const LOOKUPS: u64 = 3;

/// Starts `cmd` (a TLS client somewhere), finds its PID as the host sees
/// it, traces it by that PID while it looks up, connects and reads over
/// TLS, and checks every call was counted.
fn counts_everything(name: &str, cmd: Command, host_pid: impl FnOnce(&Fixture) -> u32) {
    let mut server = TlsServer::start(20, 100, 1);
    let mut client = Fixture::start_command(cmd);
    client.pid = host_pid(&client);
    let mut lookups = Vec::new();
    let mut truth = Value::Null;
    let traced = trace_until_exit(name, client, |c| {
        for _ in 0..LOOKUPS {
            lookups.push(c.run("lookup localhost", LONG));
        }
        truth = c.run(&format!("get {} 100", server.port), LONG);
    });
    let report = &traced.report;
    assert!(
        !traced.stderr.contains("no getaddrinfo"),
        "its libc is found: {}",
        traced.stderr
    );
    assert!(lookups.iter().all(|l| l["ret"] == 0), "{lookups:?}");
    let hosts = rows(report, "dns_hosts", |h| h["host"] == "localhost");
    assert_eq!(hosts.len(), 1, "{:#}", report["dns_hosts"]);
    assert_eq!(hosts[0]["count"], LOOKUPS, "{:#}", hosts[0]);
    // Named after the lookups before it: "localhost:PORT (127.0.0.1)".
    let port = format!(":{} ", server.port);
    let is_server = |r: &Value| {
        let peer = format!("{} ", r["peer"].as_str().unwrap_or(""));
        peer.contains(&port) && peer.contains("127.0.0.1")
    };
    let connects = rows(report, "connect_peers", is_server);
    assert_eq!(connects.len(), 1, "{:#}", report["connect_peers"]);
    assert_eq!(connects[0]["count"], 1);
    assert_eq!(truth["handshake"], 1, "{truth}");
    assert_eq!(server.served(), 2000);
    let tls = rows(report, "tls_peers", is_server);
    assert_eq!(tls.len(), 1, "{:#}", report["tls_peers"]);
    assert_eq!(tls[0]["reads"], truth["reads"], "{:#}", tls[0]);
    assert_eq!(tls[0]["read_bytes"], truth["bytes"], "{:#}", tls[0]);
    assert_eq!(tls[0]["handshakes"], 1, "{:#}", tls[0]);
}

#[test]
fn a_process_in_a_chroot_is_traced() {
    let root = Root::build("chroot");
    let mut cmd = Command::new("chroot");
    cmd.arg(&root.dir).arg("/bin/tls-client");
    counts_everything("root-chroot", cmd, |f| f.pid);
}

#[test]
fn a_process_in_a_mount_namespace_of_its_own_is_traced() {
    let root = Root::build("mntns");
    // As a container runtime: a private mount namespace whose root is
    // another file system tree (pivot_root). /proc/PID/maps then shows
    // /lib/x86_64-linux-gnu/libc.so.6, which to the tracer is the host's.
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("mount --bind \"$0\" \"$0\" && cd \"$0\" && pivot_root . old && exec /bin/tls-client")
        .arg(&root.dir);
    counts_everything("root-mntns", cmd, |f| f.pid);
}

#[test]
fn a_process_in_a_pid_namespace_is_traced_by_its_host_pid() {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--"])
        .arg(env!("TLS_CLIENT_BIN"));
    counts_everything("root-pidns", cmd, |f| {
        // The client says it is PID 1; the host knows it as unshare's child.
        assert_eq!(f.pid, 1, "the client runs in a PID namespace");
        let unshare = f.spawned_pid();
        let children =
            std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap();
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unshare {unshare} has no child"))
    });
}
