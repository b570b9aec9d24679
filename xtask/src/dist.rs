//! `cargo xtask dist`: what a user installs without a Rust toolchain.
//!
//! - `target/dist/tracer`: one static executable (musl), the eBPF object
//!   embedded as in every build. musl rather than static glibc: glibc's
//!   static libc still loads NSS modules at run time (and warns at link
//!   time), and tracer's dependencies are all Rust, so musl's target
//!   links with no C toolchain for it.
//! - `target/dist/tracer_<version>_amd64.deb`: the executable as
//!   /usr/bin/tracer, its man page and bash, zsh and fish completions
//!   (printed by the executable itself, from its command line's
//!   definition), and a systemd unit for `tracer serve --all`, installed
//!   but not enabled.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::setup::MUSL_TARGET;
use crate::{cargo, root, run};

/// The unit: a node agent serving metrics on the loopback, as the
/// DaemonSet does on the pod's address.
const SYSTEMD_UNIT: &str = "[Unit]
Description=tracer: network-edge latency of every process, as Prometheus metrics
Documentation=man:tracer(1)
After=network.target

[Service]
ExecStart=/usr/bin/tracer serve --all --listen 127.0.0.1:9464
Restart=on-failure
# eBPF needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE to read other
# processes' memory and maps).
User=root

[Install]
WantedBy=multi-user.target
";

/// What `dist` made.
pub struct Dist {
    pub binary: PathBuf,
    pub deb: PathBuf,
}

pub fn run_dist() -> anyhow::Result<Dist> {
    let t0 = Instant::now();
    let dir = root().join("target/dist");
    fs::create_dir_all(&dir)?;
    run(cargo().args([
        "build",
        "--release",
        "--locked",
        "--target",
        MUSL_TARGET,
        "-p",
        "tracer-user",
        "--bin",
        "tracer",
    ]))?;
    let built = root().join(format!("target/{MUSL_TARGET}/release/tracer"));
    let binary = dir.join("tracer");
    fs::copy(&built, &binary).with_context(|| format!("copying {}", built.display()))?;
    check_static(&binary)?;
    let deb = build_deb(&binary, &dir)?;
    eprintln!(
        "dist: {} ({:.1} MiB) and {} ({:.1} MiB) in {:.0?}",
        binary.display(),
        size_mib(&binary),
        deb.display(),
        size_mib(&deb),
        t0.elapsed()
    );
    Ok(Dist { binary, deb })
}

fn size_mib(path: &Path) -> f64 {
    fs::metadata(path).map_or(0.0, |m| m.len() as f64 / (1024.0 * 1024.0))
}

/// A static executable asks for no dynamic loader (no PT_INTERP): checked
/// by `file`'s words, which say "statically linked" or "static-pie linked".
fn check_static(binary: &Path) -> anyhow::Result<()> {
    let out = Command::new("file")
        .arg(binary)
        .output()
        .context("running file(1) (the `file` package)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !(text.contains("statically linked") || text.contains("static-pie linked")) {
        bail!("{} is not static: {text}", binary.display());
    }
    Ok(())
}

/// The version the package is named by: tracer's own, as it prints it.
fn version(binary: &Path) -> anyhow::Result<String> {
    let out = Command::new(binary).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("no version in {text:?}"))
}

/// What the executable prints for `tracer generate WHAT`.
fn generated(binary: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(binary)
        .args(["generate", what])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!("`tracer generate {what}` failed ({})", out.status);
    }
    Ok(out.stdout)
}

fn build_deb(binary: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let version = version(binary)?;
    let tree = dir.join("deb");
    if tree.exists() {
        fs::remove_dir_all(&tree)?;
    }
    let put = |path: &str, bytes: &[u8], mode: u32| -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let p = tree.join(path);
        fs::create_dir_all(p.parent().expect("a file in a directory"))?;
        fs::write(&p, bytes)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    put("usr/bin/tracer", &fs::read(binary)?, 0o755)?;
    put(
        "usr/share/man/man1/tracer.1.gz",
        &gzip(&generated(binary, "man")?)?,
        0o644,
    )?;
    put(
        "usr/share/bash-completion/completions/tracer",
        &generated(binary, "bash")?,
        0o644,
    )?;
    put(
        "usr/share/zsh/vendor-completions/_tracer",
        &generated(binary, "zsh")?,
        0o644,
    )?;
    put(
        "usr/share/fish/vendor_completions.d/tracer.fish",
        &generated(binary, "fish")?,
        0o644,
    )?;
    put(
        "lib/systemd/system/tracer.service",
        SYSTEMD_UNIT.as_bytes(),
        0o644,
    )?;
    put(
        "usr/share/doc/tracer/copyright",
        format!("tracer {version}\nLicense: {}\n", env!("CARGO_PKG_LICENSE")).as_bytes(),
        0o644,
    )?;
    let installed_kib = dir_size(&tree)?.div_ceil(1024);
    let control = format!(
        "Package: tracer\nVersion: {version}\nArchitecture: amd64\nMaintainer: tracer developers \
         <tracer@localhost>\nInstalled-Size: {installed_kib}\nSection: utils\nPriority: optional\n\
         Description: where a program's wall time goes on the network edge\n \
         DNS lookups, TCP connects, TLS reads and writes and slow syscalls of a running\n \
         process, and the line of code behind each, measured from outside with eBPF.\n"
    );
    put("DEBIAN/control", control.as_bytes(), 0o644)?;
    let deb = dir.join(format!("tracer_{version}_amd64.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&tree)
        .arg(&deb))?;
    Ok(deb)
}

fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    // -n: no name or time stamp, so the same page makes the same file.
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running gzip")?;
    child.stdin.take().expect("piped").write_all(bytes)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed ({})", out.status);
    }
    Ok(out.stdout)
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The package as a user meets it: `dpkg -i` installs it, `tracer
/// --version` and `man tracer` work, the unit is there and not enabled,
/// and `dpkg -r` leaves none of its files behind. Refuses to touch a
/// machine where a tracer package is installed already.
pub fn check_deb(dist: &Dist) -> anyhow::Result<()> {
    if crate::setup::is_installed("tracer") {
        bail!("a tracer package is installed already: not checking ours over it (dpkg -r tracer)");
    }
    let files = package_files(&dist.deb)?;
    run(Command::new("dpkg").arg("-i").arg(&dist.deb))?;
    let checked = check_installed(&dist.binary);
    // Removed whatever the checks said.
    run(Command::new("dpkg").args(["-r", "tracer"]))?;
    checked?;
    let left: Vec<&String> = files
        .iter()
        .filter(|f| Path::new(f.as_str()).exists())
        .collect();
    if !left.is_empty() {
        bail!("dpkg -r left files of the package behind: {left:?}");
    }
    eprintln!(
        "dist: the package installed, ran, showed its man page and left nothing behind ({} files)",
        files.len()
    );
    Ok(())
}

fn check_installed(binary: &Path) -> anyhow::Result<()> {
    let want = version(binary)?;
    let have = version(Path::new("/usr/bin/tracer"))?;
    if have != want {
        bail!("/usr/bin/tracer --version says {have}, the package is {want}");
    }
    let page = Command::new("man")
        .arg("tracer")
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .context("running man")?;
    let text = String::from_utf8_lossy(&page.stdout);
    if !page.status.success() || !text.contains("SYNOPSIS") || !text.contains("tracer") {
        bail!(
            "`man tracer` did not show the page ({}): {text:.300}",
            page.status
        );
    }
    let unit = Path::new("/lib/systemd/system/tracer.service");
    if !unit.exists() {
        bail!("{} is not installed", unit.display());
    }
    let enabled = Path::new("/etc/systemd/system/multi-user.target.wants/tracer.service");
    if enabled.exists() {
        bail!("the package enabled {}; it must not", unit.display());
    }
    Ok(())
}

/// The files (not directories) a package holds, as installed paths.
fn package_files(deb: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("dpkg-deb").arg("-c").arg(deb).output()?;
    if !out.status.success() {
        bail!("dpkg-deb -c {} failed", deb.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .collect())
}

/// podman as this machine runs it (PLATFORM.md, "Containers"): the vfs
/// storage driver, runc (crun refuses hybrid cgroups), cgroupfs.
pub fn podman() -> Command {
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

/// `localhost/tracer:<version>`: deploy/container/Containerfile around the
/// static executable, `FROM scratch`.
pub fn build_image(dist: &Dist) -> anyhow::Result<String> {
    let tag = format!("localhost/tracer:{}", version(&dist.binary)?);
    let context = dist.binary.parent().expect("target/dist");
    run(podman()
        .args(["build", "-t", &tag, "-f"])
        .arg(root().join("deploy/container/Containerfile"))
        .arg(context))?;
    let size = podman()
        .args(["image", "inspect", "--format", "{{.Size}}", &tag])
        .output()?;
    let bytes: f64 = String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0);
    eprintln!(
        "image: {tag} ({:.1} MiB); push it with `podman push {tag} REGISTRY/tracer:VERSION`",
        bytes / (1024.0 * 1024.0)
    );
    Ok(tag)
}
