//! Probes on library functions (uprobes). Each kind of call that lives in
//! a library has a table: the functions, the entry program of each, the
//! one return program they share, and the symbol that makes a file that
//! library. One attacher attaches any table to any file, for one process
//! or for all, and remembers what it probed and what had nothing to probe.

use std::{fs, path::Path};

use anyhow::{Context as _, anyhow, bail};
use aya::programs::{UProbe, uprobe::UProbeScope};
use log::debug;
use tracer_common::TlsFn;

use super::{ProbeNote, Probes};
use crate::{
    elf,
    mapped::{Mapping, is_dynamic_loader, is_libc},
};

/// The probes of one kind of call in its library.
pub(super) struct LibraryProbes {
    pub set: ProbeSet,
    /// What they time, for messages: "name lookups".
    pub what: &'static str,
    /// A file without this symbol is not the library: nothing is attached.
    pub required: &'static str,
    /// (symbol, entry program), for every symbol the file defines.
    pub functions: &'static [(&'static str, &'static str)],
    /// The return program, one for all the functions.
    pub return_program: &'static str,
}

/// Name lookups in libc (or in a static binary).
pub(super) const LOOKUPS: LibraryProbes = LibraryProbes {
    set: ProbeSet::Lookups,
    what: "name lookups",
    required: "getaddrinfo",
    functions: &[
        ("getaddrinfo", "getaddrinfo_entry"),
        ("gethostbyname", "gethostbyname_entry"),
        ("gethostbyname2", "gethostbyname2_entry"),
        ("gethostbyname_r", "gethostbyname_r_entry"),
    ],
    return_program: "lookup_return",
};

/// OpenSSL's reads, writes and handshakes, in libssl or linked into an
/// executable (Node.js).
pub(super) const OPENSSL: LibraryProbes = LibraryProbes {
    set: ProbeSet::Tls,
    what: "TLS",
    required: "SSL_read",
    functions: &OPENSSL_FUNCTIONS,
    return_program: "tls_return",
};

/// Every table, for loading their programs.
pub(super) const TABLES: [&LibraryProbes; 2] = [&LOOKUPS, &OPENSSL];

const OPENSSL_FUNCTIONS: [(&str, &str); TlsFn::ALL.len()] = {
    let mut out = [("", ""); TlsFn::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = (TlsFn::ALL[i].symbol(), TlsFn::ALL[i].entry_program());
        i += 1;
    }
    out
};

/// Which table a file is probed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ProbeSet {
    Lookups,
    Tls,
    GoLookups,
    GoTls,
}

/// A file, by device and inode: the same library in two containers (or
/// under two paths) is one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// Processes a file is probed for one by one, at most (see `Probes`).
const MAX_PROCESSES_PROBED_APART: usize = 16;

/// What `probe_file` did.
enum Probed {
    /// Probed for this process already.
    Already,
    /// Known to have nothing to probe.
    Nothing,
    /// Attached this many functions now.
    Now(usize),
    /// The process exited while its probes were attached: nothing is
    /// known of the file.
    Gone,
}

/// A probe for one process, or (None) for every process.
pub(super) fn scope(pid: Option<u32>) -> UProbeScope {
    match pid.and_then(std::num::NonZeroU32::new) {
        Some(pid) => UProbeScope::OneProcess(pid),
        None => UProbeScope::AllProcesses,
    }
}

impl Probes {
    /// Probes one file with `probes` for `pid`, unless that is done or the
    /// file has nothing to probe (found once, not looked at again).
    fn probe_file(
        &mut self,
        probes: &LibraryProbes,
        file: FileId,
        path: impl FnOnce() -> anyhow::Result<String>,
        pid: u32,
    ) -> Probed {
        if self.covers(probes.set, file, pid) {
            return Probed::Already;
        }
        if self.unprobeable.contains(&(probes.set, file)) {
            return Probed::Nothing;
        }
        let scope = self.scope_for(probes.set, file, pid);
        match path().and_then(|path| self.attach_library(probes, &path, scope)) {
            Ok(n) => {
                self.mark_probed(probes.set, file, scope);
                Probed::Now(n)
            }
            Err(e) => {
                debug!("no {} probes in a file of PID {pid}: {e:#}", probes.what);
                // A probe scoped to a process that just exited fails (ESRCH,
                // or ENOENT for its /proc/PID/map_files path): that says
                // nothing of the file, which the next process to map it
                // needs probed. Seen with a shell's short-lived children:
                // their libc was then taken for one without getaddrinfo,
                // for every process after.
                let exited = e.chain().any(|c| {
                    c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                        matches!(io.raw_os_error(), Some(libc::ESRCH | libc::ENOENT))
                    })
                });
                if exited || !crate::target::is_alive(pid) {
                    return Probed::Gone;
                }
                self.unprobeable.insert((probes.set, file));
                Probed::Nothing
            }
        }
    }

    /// Attaches the return and entry programs of `probes` to every function
    /// of the table that `path` defines; returns how many. Fails if it has
    /// not the table's required symbol.
    fn attach_library(
        &mut self,
        probes: &LibraryProbes,
        path: &str,
        pid: Option<u32>,
    ) -> anyhow::Result<usize> {
        let symbols: Vec<&str> = probes.functions.iter().map(|(s, _)| *s).collect();
        let offsets = elf::function_offsets(Path::new(path), &symbols)?;
        if !offsets.contains_key(probes.required) {
            bail!("no {} in {path}", probes.required);
        }
        let mut attached = 0;
        for (symbol, entry) in probes.functions {
            let Some(&offset) = offsets.get(*symbol) else {
                continue;
            };
            // The return program first: a call whose entry is seen then has
            // its return seen too (a uretprobe takes hold at the call's
            // entry); one entered between two attaches would leave its
            // thread's call open.
            for name in [probes.return_program, *entry] {
                self.uprobe(name)?
                    .attach(offset, path, scope(pid))
                    .with_context(|| format!("{symbol} in {path}"))?;
            }
            attached += 1;
        }
        Ok(attached)
    }

    /// Probes libc's lookup functions for a process.
    pub(super) fn probe_lookups(&mut self, pid: u32, maps: &[Mapping]) -> Option<ProbeNote> {
        let libc = maps.iter().find(|m| is_libc(&m.path));
        let candidates: Vec<&Mapping> = match libc {
            Some(l) => vec![l],
            // The dynamic loader is there but libc is not mapped yet (a
            // process just exec'd): look again when it is.
            None if maps.iter().any(|m| is_dynamic_loader(&m.path)) => return None,
            // Nor the loader yet: the kernel is still mapping the program
            // (a pass woken by its exec's first mapping).
            None if maps.iter().any(|m| {
                m.file_path(pid)
                    .is_ok_and(|p| crate::elf::asks_for_loader(&p).unwrap_or(false))
            }) =>
            {
                return None;
            }
            // No libc: a static binary may carry getaddrinfo itself.
            None => maps.iter().collect(),
        };
        for m in candidates {
            let file = FileId {
                dev: m.dev,
                ino: m.inode,
            };
            let path = || Ok(m.file_path(pid)?.to_string_lossy().into_owned());
            match self.probe_file(&LOOKUPS, file, path, pid) {
                Probed::Already | Probed::Gone => return None,
                Probed::Nothing => continue,
                Probed::Now(n) => {
                    return Some(ProbeNote::Probed(format!(
                        "probing {} in {} ({n} functions)",
                        LOOKUPS.what, m.path
                    )));
                }
            }
        }
        // A Go program resolves names itself.
        if self.go_pids.contains(&pid) {
            return None;
        }
        if self.warned.insert(pid) {
            let what = if libc.is_some() {
                "its libc has no getaddrinfo to probe"
            } else {
                "it maps no libc (a static binary?) and has no getaddrinfo symbol"
            };
            return Some(ProbeNote::Warning(format!(
                "PID {pid}: {what}: its name lookups are not timed, its DNS traffic still is"
            )));
        }
        None
    }

    /// Probes OpenSSL for a process: its libssl, or its executable.
    pub(super) fn probe_tls(&mut self, pid: u32, maps: &[Mapping], late: bool) -> Vec<ProbeNote> {
        let exe = fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        // Python loads libssl late (`import ssl`), and a command tracer
        // starts maps it a moment after its exec and may use it at once:
        // probe it ahead. Other programs link it, or are probed on mapping
        // it. (Attaching libssl's 7 functions took 83 ms here, in which
        // curl had made its handshake: fresh31.)
        let mut notes = if self.python_pids.contains(&pid) || self.launched_pids.contains(&pid) {
            self.preprobe_tls(pid)
        } else {
            Vec::new()
        };
        for m in maps {
            let base = m.path.rsplit('/').next().unwrap_or(&m.path);
            let is_exe = exe.as_deref() == Some(m.path.as_str());
            if !(base.starts_with("libssl.so") || is_exe) {
                continue;
            }
            let file = FileId {
                dev: m.dev,
                ino: m.inode,
            };
            let path = || Ok(m.file_path(pid)?.to_string_lossy().into_owned());
            let newly_used = !self.tls_files.contains(&m.path);
            match self.probe_file(&OPENSSL, file, path, pid) {
                Probed::Nothing => continue,
                Probed::Gone => break,
                // Probed ahead of its loading: now it is in use.
                Probed::Already if newly_used && late => {
                    notes.push(ProbeNote::Probed(format!("PID {pid} loaded {}", m.path)));
                }
                Probed::Already => {}
                Probed::Now(n) => {
                    let text = format!("probing {} in {} ({n} functions)", OPENSSL.what, m.path);
                    notes.push(if late {
                        ProbeNote::ProbedLate(format!("PID {pid} loaded {}: {text}", m.path))
                    } else {
                        ProbeNote::Probed(text)
                    });
                }
            }
            if newly_used {
                self.tls_files.push(m.path.clone());
            }
        }
        notes
    }

    /// Probes the libssl files of a process's file system before the
    /// process loads one: Python loads libssl on `import ssl` and may start
    /// a handshake a millisecond later, sooner than a probe attached on
    /// seeing the mapping. Once per root (container) the process lives in.
    fn preprobe_tls(&mut self, pid: u32) -> Vec<ProbeNote> {
        use std::os::unix::fs::MetadataExt as _;
        const LIB_DIRS: [&str; 5] = [
            "/usr/lib/x86_64-linux-gnu",
            "/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/lib64",
            "/usr/lib",
        ];
        let Ok(root) = fs::metadata(format!("/proc/{pid}/root/")) else {
            return Vec::new();
        };
        if !self.preprobed_roots.insert((root.dev(), root.ino(), pid)) {
            return Vec::new();
        }
        let mut notes = Vec::new();
        for dir in LIB_DIRS {
            let Ok(entries) = fs::read_dir(format!("/proc/{pid}/root{dir}")) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with("libssl.so.") {
                    continue;
                }
                // Follows symlinks: the file a loader would map.
                let Ok(meta) = fs::metadata(entry.path()) else {
                    continue;
                };
                let file = FileId {
                    dev: (u64::from(libc::major(meta.dev())) << 20)
                        | u64::from(libc::minor(meta.dev())),
                    ino: meta.ino(),
                };
                let path = || Ok(entry.path().to_string_lossy().into_owned());
                if let Probed::Now(n) = self.probe_file(&OPENSSL, file, path, pid) {
                    notes.push(ProbeNote::Probed(format!(
                        "probing {} in {dir}/{name} ({n} functions), ahead of its loading",
                        OPENSSL.what
                    )));
                }
            }
        }
        notes
    }

    /// Whether `file` is probed for `pid` already.
    pub(super) fn covers(&self, set: ProbeSet, file: FileId, pid: u32) -> bool {
        self.probed_files.contains(&(set, file, Some(pid)))
            || self.probed_files.contains(&(set, file, None))
    }

    /// The scope to probe `file` with for `pid`: that process, or every
    /// process once many were probed apart.
    pub(super) fn scope_for(&self, set: ProbeSet, file: FileId, pid: u32) -> Option<u32> {
        if self.node_mode {
            return None;
        }
        let apart = self
            .probed_processes
            .get(&(set, file))
            .copied()
            .unwrap_or(0);
        (apart < MAX_PROCESSES_PROBED_APART).then_some(pid)
    }

    /// Records that `file` is probed with `scope`.
    pub(super) fn mark_probed(&mut self, set: ProbeSet, file: FileId, scope: Option<u32>) {
        self.probed_files.insert((set, file, scope));
        if scope.is_some() {
            *self.probed_processes.entry((set, file)).or_default() += 1;
        }
    }

    pub(super) fn uprobe(&mut self, name: &str) -> anyhow::Result<&mut UProbe> {
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
            .try_into()?)
    }
}
