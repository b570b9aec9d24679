//! The kernel state the tests look at: our programs and maps, cgroups.

use std::{
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Names of the eBPF programs `tracer` loads, as the kernel shows them
/// (truncated to 15 characters), or their beginnings (`tls_entry`: one
/// program per OpenSSL function).
pub const OUR_PROGRAMS: &[&str] = &[
    "sys_enter",
    "sys_exit",
    "inet_sock_set_s",
    "task_newtask",
    "sched_process_e",
    "getaddrinfo_ent",
    "gethostbyname_e",
    "gethostbyname2_",
    "gethostbyname_r",
    "lookup_return",
    "tls_entry",
    "tls_return",
];

/// Our programs the kernel still has loaded, from `bpftool prog show`.
pub fn our_programs_loaded() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("bpftool (installed by cargo xtask setup)");
    assert!(out.status.success(), "bpftool failed: {out:?}");
    let progs: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    progs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .filter(|n| OUR_PROGRAMS.iter().any(|p| n.starts_with(p)))
        .map(str::to_string)
        .collect()
}

/// Fails unless none of our programs is loaded. They disappear once the
/// tracer's file descriptors are closed, freed by the kernel after an RCU
/// grace period: allow a moment.
pub fn assert_nothing_left_loaded() {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = our_programs_loaded();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still loaded: {left:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// How many entries a kernel map of ours holds now (bpftool).
pub fn kernel_map_entries(name: &str) -> usize {
    let out = Command::new("bpftool")
        .args(["map", "dump", "name", name, "--json"])
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool map dump {name}: {out:?}");
    let dump: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    dump.as_array().map_or(0, Vec::len)
}

/// A cgroup v2 directory of a test's own, under wherever cgroup2 is mounted
/// (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid machine).
pub struct Cgroup {
    pub path: PathBuf,
    root: PathBuf,
}

impl Cgroup {
    pub fn new(tag: &str) -> Self {
        Self::named(&format!("tracer-{tag}-{}", std::process::id()))
    }

    /// One with exactly this name (to look like a container runtime's).
    pub fn named(name: &str) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = mountinfo
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                (right.split_whitespace().next()? == "cgroup2")
                    .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
            })
            .expect("a cgroup v2 hierarchy (node mode scopes by cgroup v2)");
        let path = root.join(name);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self { path, root }
    }

    /// Moves a process into it.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.path.display()));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A cgroup with processes cannot be removed: move any left out.
        let procs = std::fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// What kernel-checks runs, for the guest's initramfs (`kernel-checks
/// --files`): `file PATH` and `tree DIR` lines, and the Python to run.
pub fn print_guest_files() {
    let bin = crate::tracer_bin();
    let dir = bin.parent().unwrap().to_path_buf();
    for name in ["tracer", "kernel-checks", "netfixture", "dnsfixture"] {
        println!("file {}", dir.join(name).display());
    }
    for path in [env!("RESOLVE_BIN"), env!("TLS_CLIENT_BIN")] {
        println!("file {path}");
    }
    println!(
        "file {}",
        crate::go::go_fixture(23, crate::go::GoBuild::PureStripped).display()
    );
    for name in ["callsites.py", "tls_server.py", "slow_server.py"] {
        println!("file {}", crate::fixture_file(name).display());
    }
    let python = crate::python();
    println!("file {}", python.display());
    let stdlib = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('stdlib'))",
        ])
        .output()
        .expect("python");
    println!("tree {}", String::from_utf8_lossy(&stdlib.stdout).trim());
    for tool in ["openssl", "bpftool"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .expect("sh");
        println!("file {}", String::from_utf8_lossy(&found.stdout).trim());
    }
    // openssl req reads its configuration.
    println!("file /etc/ssl/openssl.cnf");
    println!("file /usr/lib/ssl/openssl.cnf");
    // localhost, and glibc's order of resolvers (files, then DNS).
    println!("file /etc/hosts");
    println!("file /etc/nsswitch.conf");
    println!("python {}", python.display());
}
