//! `cargo xtask kernels`: the kernel matrix. Each kernel in `KERNELS` is
//! Debian's own cloud kernel, downloaded once into target/kernels/ and
//! booted under qemu (software emulation: this machine has no usable KVM)
//! with an initramfs that holds the release tracer, the tests' fixtures and
//! `kernel-checks` as its init. The same checks run on the host's kernel.
//! The table of kernel × check is printed and written to
//! target/kernels/results.md; any failed cell fails the command.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::BufReader,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{initramfs::Initramfs, is_root, release_bins, root, setup::quiet, show};

/// A kernel of the matrix: Debian's package and the suite that has it.
pub struct Kernel {
    pub package: &'static str,
    pub suite: &'static str,
}

/// The kernels production machines run (see PLATFORM.md, "Other kernels"):
/// Debian 11 and Amazon Linux 2 (5.10), Debian 12 and Amazon Linux 2023
/// (6.1), Debian 12 backports and recent distributions (6.12).
pub const KERNELS: &[Kernel] = &[
    Kernel {
        package: "linux-image-5.10.0-32-cloud-amd64",
        suite: "bullseye",
    },
    Kernel {
        package: "linux-image-6.1.0-50-cloud-amd64-unsigned",
        suite: "bookworm",
    },
    Kernel {
        package: "linux-image-6.12.74+deb12-cloud-amd64",
        suite: "bookworm-backports",
    },
];

/// The checks, in the order `kernel-checks` runs them (the table's
/// columns).
const CHECKS: &[&str] = &[
    "syscalls",
    "connect",
    "dns",
    "tls",
    "go",
    "python",
    "server",
    "tls-server",
    "node",
    "cgroup",
    "netns",
    "detach",
];

/// How long one guest may take, boot to power-off: a watchdog for a hung
/// guest, not a measured bound. Without KVM (qemu emulating the CPU) each
/// check takes 40 to 75 s, most of it the verifier at attach: on one such
/// machine the 5.10 and 6.1 guests took 455 and 434 s one day and ran past
/// 600 s, two checks short, another.
const GUEST_TIMEOUT: Duration = Duration::from_secs(900);

/// What kernel-checks printed for one kernel.
struct Row {
    kernel: String,
    /// check -> (status, detail)
    cells: BTreeMap<String, (String, String)>,
    took: Duration,
    /// Why the run ended before reporting every check, if it did.
    cut_short: Option<String>,
}

fn dir() -> PathBuf {
    root().join("target/kernels")
}

pub fn run() -> anyhow::Result<()> {
    if !is_root() {
        bail!("the kernel matrix loads eBPF programs: run `cargo xtask kernels` as root");
    }
    let t0 = Instant::now();
    let kernels = fetch_kernels()?;
    release_bins()?;
    let checks_bin = root().join("target/release/kernel-checks");
    let (initrd, python) = build_initramfs(&checks_bin)?;

    // The host first, alone: its checks time real handshakes and lookups.
    eprintln!("kernels: host kernel");
    let host = run_host(&checks_bin)?;
    // Then the guests, two at a time on this two-core machine.
    let (tx, rx) = mpsc::channel();
    let mut rows = vec![host];
    for pair in kernels.chunks(2) {
        thread::scope(|s| {
            for (i, (name, vmlinuz)) in pair.iter().enumerate() {
                let tx = tx.clone();
                let (initrd, python) = (&initrd, &python);
                s.spawn(move || {
                    eprintln!("kernels: booting {name} under qemu");
                    let row = run_guest(name, vmlinuz, initrd, python);
                    tx.send(row.map(|r| (i, r))).expect("channel");
                });
            }
        });
        let mut done = Vec::new();
        for _ in pair {
            done.push(rx.recv().expect("a row per guest")?);
        }
        // In the order of KERNELS, whichever guest finished first.
        done.sort_by_key(|(i, _)| *i);
        rows.extend(done.into_iter().map(|(_, row)| row));
    }
    let table = render(&rows, t0.elapsed());
    print!("{table}");
    std::fs::write(dir().join("results.md"), &table)?;
    eprintln!("kernels: wrote target/kernels/results.md");
    let failed: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            let missing = CHECKS
                .iter()
                .filter(|c| !r.cells.contains_key(**c))
                .map(|c| format!("{} {c}: not run", r.kernel));
            r.cells
                .iter()
                .filter(|(_, (status, _))| status == "failed")
                .map(|(c, (_, d))| format!("{} {c}: {d}", r.kernel))
                .chain(missing)
                .collect::<Vec<_>>()
        })
        .collect();
    if !failed.is_empty() {
        bail!("the kernel matrix failed:\n  {}", failed.join("\n  "));
    }
    Ok(())
}

/// Downloads each kernel's package once (a source list of our own under
/// target/, not the machine's) and unpacks its vmlinuz. Returns (name,
/// vmlinuz path) per kernel.
fn fetch_kernels() -> anyhow::Result<Vec<(String, PathBuf)>> {
    let apt = dir().join("apt");
    let debs = dir().join("debs");
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for k in KERNELS {
        match vmlinuz_of(k)? {
            Some(path) => found.push((k, path)),
            None => missing.push(k),
        }
    }
    if !missing.is_empty() {
        let t0 = Instant::now();
        for d in [
            apt.join("lists/partial"),
            apt.join("cache/archives/partial"),
            debs.clone(),
        ] {
            std::fs::create_dir_all(&d)?;
        }
        let mirror = debian_mirror();
        let mut suites: Vec<&str> = missing.iter().map(|k| k.suite).collect();
        suites.dedup();
        let list: String = suites
            .iter()
            .map(|s| {
                format!(
                    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} {s} main\n"
                )
            })
            .collect();
        std::fs::write(apt.join("sources.list"), list)?;
        let apt_get = |args: &[&str]| {
            let mut c = Command::new("apt-get");
            c.arg("-q")
                .arg("-o")
                .arg(format!(
                    "Dir::Etc::sourcelist={}",
                    apt.join("sources.list").display()
                ))
                .args(["-o", "Dir::Etc::sourceparts=-"])
                .arg("-o")
                .arg(format!("Dir::State::Lists={}", apt.join("lists").display()))
                .arg("-o")
                .arg(format!("Dir::Cache={}", apt.join("cache").display()))
                .args(["-o", "APT::Sandbox::User=root"])
                .args(args)
                .current_dir(&debs);
            c
        };
        quiet(&mut apt_get(&["update"]))?;
        let packages: Vec<&str> = missing.iter().map(|k| k.package).collect();
        quiet(apt_get(&["download"]).args(&packages))?;
        for k in missing {
            let deb = std::fs::read_dir(&debs)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.file_name().is_some_and(|n| {
                        n.to_string_lossy().starts_with(&format!("{}_", k.package))
                    })
                })
                .with_context(|| format!("{} not downloaded", k.package))?;
            unpack_vmlinuz(&deb, &kernel_dir(k))?;
            // The kernel is what is kept; the package is 20 to 35 MB.
            std::fs::remove_file(&deb)?;
            let path =
                vmlinuz_of(k)?.with_context(|| format!("no vmlinuz in {}", deb.display()))?;
            found.push((k, path));
        }
        eprintln!(
            "kernels: downloaded {} in {:.0?}",
            packages.join(" "),
            t0.elapsed()
        );
    }
    // In the order of KERNELS.
    found.sort_by_key(|(k, _)| KERNELS.iter().position(|x| std::ptr::eq(x, *k)));
    Ok(found
        .into_iter()
        .map(|(k, path)| {
            let name = path
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .trim_start_matches("vmlinuz-")
                        .to_string()
                })
                .unwrap_or_else(|| k.package.to_string());
            (name, path)
        })
        .collect())
}

fn kernel_dir(k: &Kernel) -> PathBuf {
    dir().join(k.package)
}

fn vmlinuz_of(k: &Kernel) -> anyhow::Result<Option<PathBuf>> {
    let boot = kernel_dir(k).join("boot");
    if !boot.is_dir() {
        return Ok(None);
    }
    Ok(std::fs::read_dir(boot)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        }))
}

/// The mirror the machine's own Debian sources use.
fn debian_mirror() -> String {
    std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("URIs:"))
                .and_then(|u| u.split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_string())
}

/// Only ./boot of the package: its modules are not needed (the guest loads
/// none).
fn unpack_vmlinuz(deb: &Path, into: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(into)?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("dpkg-deb")?;
    let status = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .args(["--wildcards", "./boot/vmlinuz-*"])
        .stdin(dpkg.stdout.take().expect("piped"))
        .status()
        .context("tar")?;
    let dpkg_status = dpkg.wait()?;
    if !status.success() || !dpkg_status.success() {
        bail!("unpacking {} failed", deb.display());
    }
    Ok(())
}

/// The initramfs every guest boots: what `kernel-checks --files` names.
/// Returns its path and the Python interpreter the checks run.
fn build_initramfs(checks_bin: &Path) -> anyhow::Result<(PathBuf, String)> {
    let t0 = Instant::now();
    let out = Command::new(checks_bin)
        .arg("--files")
        .output()
        .with_context(|| format!("running {}", checks_bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} --files failed: {}",
            checks_bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut archive = Initramfs::new();
    let mut python = String::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        match line.split_once(' ') {
            Some(("file", path)) => archive.add_file(Path::new(path))?,
            // Python's library, without what no check imports.
            Some(("tree", path)) => archive.add_tree(
                Path::new(path),
                &[
                    "test",
                    "tests",
                    "site-packages",
                    "idlelib",
                    "tkinter",
                    "turtledemo",
                    "ensurepip",
                    "lib2to3",
                    "pydoc_data",
                    "config",
                ],
            )?,
            Some(("python", path)) => python = path.to_string(),
            _ => bail!("unexpected line from kernel-checks --files: {line}"),
        }
    }
    let path = dir().join("initramfs.cpio");
    std::fs::create_dir_all(dir())?;
    let bytes = archive.write(&path)?;
    eprintln!(
        "kernels: initramfs of {} MiB in {:.1?}",
        bytes / (1 << 20),
        t0.elapsed()
    );
    Ok((path, python))
}

fn run_host(checks_bin: &Path) -> anyhow::Result<Row> {
    let t0 = Instant::now();
    let mut child = Command::new(checks_bin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", checks_bin.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let mut row = read_rows(BufReader::new(stdout), "host", None)?;
    let _ = child.wait();
    row.kernel = format!("{} (host)", row.kernel);
    row.took = t0.elapsed();
    Ok(row)
}

fn run_guest(name: &str, vmlinuz: &Path, initrd: &Path, python: &str) -> anyhow::Result<Row> {
    let t0 = Instant::now();
    let log_path = dir().join(format!("{name}.log"));
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-m", "2048", "-smp", "1", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet rdinit={} TRACER_TEST_PYTHON={python}",
            root().join("target/release/kernel-checks").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{} (the qemu-system-x86 package)", show(&cmd)))?;
    let stdout = child.stdout.take().expect("piped");
    // The guest may hang: a watchdog kills qemu past the timeout.
    let pid = child.id();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if done_rx.recv_timeout(GUEST_TIMEOUT).is_err() {
            // SAFETY: kill(2) on qemu, our child, not yet reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            return true;
        }
        false
    });
    let log = std::fs::File::create(&log_path)?;
    let mut row = read_rows(BufReader::new(stdout), name, Some(log))?;
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let _ = child.wait();
    row.took = t0.elapsed();
    if timed_out {
        row.cut_short = Some(format!("the guest ran past {GUEST_TIMEOUT:?}"));
    }
    if row.cut_short.is_some() || row.cells.len() < CHECKS.len() {
        let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(15).collect();
        eprintln!(
            "kernels: {name} ended early; the console's last lines (all in {}):",
            log_path.display()
        );
        for l in tail.iter().rev() {
            eprintln!("  | {l}");
        }
    }
    Ok(row)
}

/// Reads `tracer-check` lines (copying everything to `log`).
fn read_rows(
    out: impl std::io::BufRead,
    name: &str,
    mut log: Option<std::fs::File>,
) -> anyhow::Result<Row> {
    let mut row = Row {
        kernel: name.to_string(),
        cells: BTreeMap::new(),
        took: Duration::ZERO,
        cut_short: Some("no `done` line".into()),
    };
    for line in out.split(b'\n') {
        let line = String::from_utf8_lossy(&line?)
            .trim_end_matches('\r')
            .to_string();
        if let Some(f) = log.as_mut() {
            use std::io::Write as _;
            let _ = writeln!(f, "{line}");
        }
        let Some(rest) = line.split_once("tracer-check ").map(|(_, r)| r) else {
            continue;
        };
        let mut words = rest.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("kernel"), Some(release), _) => row.kernel = release.to_string(),
            (Some("done"), _, _) => row.cut_short = None,
            (Some(check), Some(status), detail) => {
                eprintln!("kernels: {name}: {check} {status}");
                row.cells.insert(
                    check.to_string(),
                    (status.to_string(), detail.unwrap_or("").to_string()),
                );
            }
            _ => {}
        }
    }
    Ok(row)
}

fn render(rows: &[Row], took: Duration) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "# Kernel matrix\n");
    let _ = writeln!(
        t,
        "`cargo xtask kernels`, {}; {:.0} s in all. Each guest booted Debian's kernel under qemu \
         without KVM, with the release tracer and the checks in an initramfs.\n",
        today(),
        took.as_secs_f64()
    );
    let _ = write!(t, "| kernel |");
    for c in CHECKS {
        let _ = write!(t, " {c} |");
    }
    let _ = writeln!(t, " took |");
    let _ = write!(t, "|---|");
    for _ in CHECKS {
        let _ = write!(t, "---|");
    }
    let _ = writeln!(t, "---|");
    for r in rows {
        let _ = write!(t, "| {} |", r.kernel);
        for c in CHECKS {
            let cell = r.cells.get(*c).map_or("not run", |(s, _)| s.as_str());
            let _ = write!(t, " {cell} |");
        }
        let _ = writeln!(t, " {:.0} s |", r.took.as_secs_f64());
    }
    let _ = writeln!(t, "\nWhat each check saw:\n");
    for r in rows {
        let _ = writeln!(t, "- **{}**", r.kernel);
        if let Some(why) = &r.cut_short {
            let _ = writeln!(t, "  - ended early: {why}");
        }
        for c in CHECKS {
            if let Some((status, detail)) = r.cells.get(*c) {
                let _ = writeln!(t, "  - {c}: {status}: {detail}");
            }
        }
    }
    t
}

/// Today's date (UTC), for the table's header.
fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
