//! `cargo xtask setup`: make this machine able to build and test tracer.
//! Each step checks first and installs only what is missing, so a second
//! run takes seconds and installs nothing. One line per step.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{is_root, show};

/// What a command needs installed: the demo only what it builds and runs
/// (a fresh machine's first report sooner: issue 21), the rest everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Demo,
    Everything,
}

/// Debian packages the demo needs: LLVM 22 to build bpf-linker against;
/// gcc, libc6-dev and libssl-dev (the tests crate's C fixtures, built with
/// the demo's programs); the seed scenario's network namespace (iproute2),
/// certificates (openssl) and database (it starts its own MariaDB).
const DEMO_APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "gcc",
    "libc6-dev",
    "libssl-dev",
    "openssl",
    "iproute2",
    "mariadb-server",
    "mariadb-client",
];

/// Debian packages the tests, benchmarks and packaging need besides:
/// bpftool ("nothing left loaded" checks), util-linux (setpriv), curl.
const TEST_APT_PACKAGES: &[&str] = &[
    "bpftool",
    "util-linux",
    "curl",
    // `cargo xtask dist`: checks the executable is static, packs the man page.
    "file",
    "gzip",
    // A real Prometheus (and promtool) scrapes `tracer serve` in the tests.
    "prometheus",
    // The container test runs the DaemonSet's image (crun, podman's
    // default runtime, refuses this machine's hybrid cgroups).
    "podman",
    "runc",
    // The kernel matrix boots other kernels under software emulation.
    "qemu-system-x86",
    // `cargo xtask bench` measures bpftrace's probes beside ours.
    "bpftrace",
    // The Go tests build their fixture with each Go the tracer supports:
    // 1.19 is Debian 12's own, the later ones are in its backports.
    "golang-1.19-go",
    "golang-1.21-go",
    "golang-1.22-go",
    "golang-1.23-go",
];

/// Packages of `TEST_APT_PACKAGES` found only in bookworm-backports.
const BACKPORTS_PACKAGES: &[&str] = &["golang-1.21-go", "golang-1.22-go", "golang-1.23-go"];

/// Where setup adds Debian's backports, when a package needs them.
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/tracer-backports.sources";
const BACKPORTS_DEB822: &str = "Types: deb\nURIs: http://deb.debian.org/debian\n\
    Suites: bookworm-backports\nComponents: main\n\
    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

/// Python packages of the seed scenario (the demo's), in a venv under
/// target/ (PyPI).
const DEMO_PIP_PACKAGES: &[&str] = &[
    "requests>=2.31,<3",
    "flask>=3.0,<4",
    "flask-login>=0.6.3,<0.7",
    "pymysql>=1.1,<2",
];

/// Python packages the tests need besides the demo's.
const TEST_PIP_PACKAGES: &[&str] = &[
    // the seed app under the servers people deploy it with
    "gunicorn>=23,<24",
    "waitress>=3,<4",
    "uvicorn>=0.30,<1",
    // validates deploy/kubernetes against the Kubernetes schemas
    "kubernetes-validate>=1.31,<2",
];

/// Pinned: later releases may need a newer rustc (see PLATFORM.md).
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn run(needs: Needs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    disk_space(needs);
    let mut todo_as_root: Vec<String> = Vec::new();
    apt_packages(needs, &mut todo_as_root)?;
    rust_src()?;
    if needs == Needs::Everything {
        musl_target()?;
    }
    python_venv(needs)?;
    if todo_as_root.is_empty() {
        bpf_linker()?;
    } else {
        todo_as_root.push(bpf_linker_command_line());
    }
    if !todo_as_root.is_empty() {
        bail!(
            "setup needs root for some steps; run these, then `cargo xtask setup` again:\n  {}",
            todo_as_root.join("\n  ")
        );
    }
    eprintln!("setup: done in {:.1?}", t0.elapsed());
    Ok(())
}

/// What `target/` grows to from a fresh clone, in GiB, measured: by the
/// end-to-end stage of `cargo xtask test` (fresh65, with full debug
/// info; line tables only since), and after `cargo xtask demo`.
const TARGET_GIB_TEST: f64 = 5.5;
const TARGET_GIB_DEMO: f64 = 1.1;

/// Says how much room the disk has for `target/`, and warns when a fresh
/// build would not fit: a machine whose disk filled mid-build failed with
/// rustc's "No space left on device" and nothing else (stop 41's CI).
/// Only a warning: a `target/` built before needs much less.
fn disk_space(needs: Needs) {
    let dir = crate::root();
    let Some(free) = free_gib(&dir) else {
        line("disk", "free space unknown");
        return;
    };
    let need = match needs {
        Needs::Demo => TARGET_GIB_DEMO,
        Needs::Everything => TARGET_GIB_TEST,
    };
    line(
        "disk",
        &format!("{free:.1} GiB free under {}", dir.display()),
    );
    if free < need {
        eprintln!(
            "setup: warning: a build from scratch fills target/ with about {need:.1} GiB; \
             with {free:.1} GiB free it may stop with \"No space left on device\": free some space first"
        );
    }
}

/// The space `df` calls available (`f_bavail`; root may also use the
/// blocks kept for it, so this errs low).
fn free_gib(dir: &std::path::Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data, valid as all zeroes.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a live out-parameter.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as f64 * st.f_frsize as f64 / (1u64 << 30) as f64)
}

fn line(step: &str, what: &str) {
    eprintln!("setup: {step:<22} {what}");
}

pub fn is_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", pkg])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"installed")
}

/// The packages (Debian's, or PyPI's) a command needs.
fn needed<'a>(needs: Needs, demo: &'a [&'a str], test: &'a [&'a str]) -> Vec<&'a str> {
    match needs {
        Needs::Demo => demo.to_vec(),
        Needs::Everything => demo.iter().chain(test).copied().collect(),
    }
}

fn apt_packages(needs: Needs, todo_as_root: &mut Vec<String>) -> anyhow::Result<()> {
    let missing: Vec<&str> = needed(needs, DEMO_APT_PACKAGES, TEST_APT_PACKAGES)
        .into_iter()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        line("Debian packages", "present");
        return Ok(());
    }
    if !is_root() {
        line(
            "Debian packages",
            &format!("missing: {}", missing.join(" ")),
        );
        if missing.iter().any(|p| BACKPORTS_PACKAGES.contains(p)) {
            todo_as_root.push(format!(
                "printf '{}' | sudo tee {BACKPORTS_SOURCE}",
                BACKPORTS_DEB822.replace('\n', "\\n")
            ));
        }
        todo_as_root.push("sudo apt-get update".into());
        todo_as_root.push(format!("sudo apt-get install -y {}", missing.join(" ")));
        return Ok(());
    }
    let t0 = Instant::now();
    // qemu's packages must all come from one release: a machine with
    // backports' qemu-utils (10.x) cannot take bookworm's qemu-system-x86
    // (7.2; "qemu-utils: Breaks: qemu-system-common (< 1:8.0)").
    let qemu_from_backports = missing.contains(&"qemu-system-x86")
        && Command::new("dpkg-query")
            .args(["-W", "-f=${Version}", "qemu-utils"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("~bpo"));
    if (qemu_from_backports || missing.iter().any(|p| BACKPORTS_PACKAGES.contains(p)))
        && !std::path::Path::new(BACKPORTS_SOURCE).exists()
    {
        std::fs::write(BACKPORTS_SOURCE, BACKPORTS_DEB822)
            .with_context(|| format!("write {BACKPORTS_SOURCE}"))?;
        line("Debian backports", &format!("added {BACKPORTS_SOURCE}"));
    }
    // The package lists may be absent or stale on a fresh machine.
    quiet(Command::new("apt-get").arg("update"))?;
    let install = |packages: &[&str], release: Option<&str>| {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "--no-install-recommends",
        ]);
        if let Some(release) = release {
            cmd.args(["-t", release]);
        }
        quiet(cmd.args(packages))
    };
    let (qemu, rest): (Vec<&str>, Vec<&str>) = missing
        .iter()
        .partition(|&&p| qemu_from_backports && p == "qemu-system-x86");
    if !rest.is_empty() {
        install(&rest, None)?;
    }
    if !qemu.is_empty() {
        install(&qemu, Some("bookworm-backports"))?;
    }
    line(
        "Debian packages",
        &format!("installed {} in {:.0?}", missing.join(" "), t0.elapsed()),
    );
    Ok(())
}

fn rust_src() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("rustup not found: install Rust with rustup (nightly is needed for eBPF)")?;
    if !out.status.success() {
        bail!(
            "no nightly toolchain: run `rustup toolchain install nightly` ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        line("nightly rust-src", "present");
        return Ok(());
    }
    let t0 = Instant::now();
    quiet(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    line(
        "nightly rust-src",
        &format!("installed in {:.0?}", t0.elapsed()),
    );
    Ok(())
}

/// The target of the static executable that `cargo xtask dist` builds.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// The standard library for static executables (`cargo xtask dist`).
fn musl_target() -> anyhow::Result<()> {
    let target = MUSL_TARGET;
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(crate::root())
        .output()
        .context("rustup not found")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        line("musl target", "present");
        return Ok(());
    }
    let t0 = Instant::now();
    quiet(
        Command::new("rustup")
            .args(["target", "add", target])
            .current_dir(crate::root()),
    )?;
    line("musl target", &format!("installed in {:.0?}", t0.elapsed()));
    Ok(())
}

/// The venv the tests' Python clients run in.
pub fn venv_python() -> PathBuf {
    crate::root().join("target/venv/bin/python")
}

fn python_venv(needs: Needs) -> anyhow::Result<()> {
    let python = venv_python();
    let imports = match needs {
        Needs::Demo => "import requests, flask, flask_login, pymysql",
        Needs::Everything => {
            "import requests, flask, flask_login, pymysql, kubernetes_validate, gunicorn, \
             waitress, uvicorn"
        }
    };
    let packages = needed(needs, DEMO_PIP_PACKAGES, TEST_PIP_PACKAGES);
    let have = Command::new(&python)
        .args(["-c", imports])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if have {
        line("Python venv", "present (target/venv)");
        return Ok(());
    }
    let t0 = Instant::now();
    let venv = crate::root().join("target/venv");
    // The interpreter behind `python3` (pyenv's is a shim), so the venv
    // links the same libpython as the real thing.
    quiet(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    quiet(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(&packages),
    )?;
    line(
        "Python venv",
        &format!(
            "created target/venv with {} in {:.0?}",
            packages.join(" "),
            t0.elapsed()
        ),
    );
    Ok(())
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn bpf_linker_version() -> Option<String> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.split_whitespace().nth(1)?.to_string())
}

fn bpf_linker_install() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![PathBuf::from(LLVM_PREFIX).join("bin")];
    paths.extend(std::env::split_paths(&path));
    cmd.env("LLVM_PREFIX", LLVM_PREFIX)
        .env("PATH", std::env::join_paths(paths).expect("PATH"))
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ]);
    cmd
}

fn bpf_linker_command_line() -> String {
    format!(
        "LLVM_PREFIX={LLVM_PREFIX} PATH={LLVM_PREFIX}/bin:$PATH cargo install bpf-linker \
         --version {BPF_LINKER_VERSION} --locked --no-default-features --features llvm-22"
    )
}

fn bpf_linker() -> anyhow::Result<()> {
    match bpf_linker_version() {
        Some(v) if v == BPF_LINKER_VERSION => {
            line("bpf-linker", &format!("present ({v})"));
            return Ok(());
        }
        Some(v) => line(
            "bpf-linker",
            &format!("{v} found, installing {BPF_LINKER_VERSION}"),
        ),
        None => {}
    }
    let t0 = Instant::now();
    quiet(&mut bpf_linker_install())?;
    // tracer-user/build.rs finds bpf-linker on PATH.
    if bpf_linker_version().as_deref() != Some(BPF_LINKER_VERSION) {
        bail!(
            "bpf-linker was installed into {} but that directory is not on PATH; add it",
            cargo_bin_dir().display()
        );
    }
    line(
        "bpf-linker",
        &format!("installed {BPF_LINKER_VERSION} in {:.0?}", t0.elapsed()),
    );
    Ok(())
}

/// Runs a command with its output captured; shows the output only on failure.
pub fn quiet(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}{}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
