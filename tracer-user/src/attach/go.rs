//! Probes on a Go executable's own functions: its resolver, found in the
//! function table that stripping keeps. Each function gets its entry
//! program at its entry and the table's return program at each of its
//! return instructions (see `golang`: no uretprobes in Go code).

use anyhow::Context as _;
use log::debug;
use tracer_common::TlsFn;

use super::{
    ProbeNote, Probes,
    library::{FileId, ProbeSet, scope},
};
use crate::{golang::GoBinary, mapped::Mapping};

/// The probes of one kind of call in Go's standard library.
pub(super) struct GoProbes {
    pub set: ProbeSet,
    /// What they time, for messages.
    pub what: &'static str,
    /// (function, entry program, program put on each of its return
    /// instructions): a binary without the first is not probed with this
    /// table.
    pub functions: &'static [(&'static str, &'static str, &'static str)],
}

/// Go's resolver: `LookupIPAddr`, `LookupIP`, `Dial` and net/http go
/// through `lookupIPAddr`; `LookupHost` through `lookupHost`.
pub(super) const GO_LOOKUPS: GoProbes = GoProbes {
    set: ProbeSet::GoLookups,
    what: "Go name lookups",
    functions: &[
        (
            "net.(*Resolver).lookupIPAddr",
            "go_lookup_ip_addr_entry",
            "go_lookup_return",
        ),
        (
            "net.(*Resolver).lookupHost",
            "go_lookup_host_entry",
            "go_lookup_return",
        ),
    ],
};

/// crypto/tls's reads, writes and handshakes, and the goroutine's waits
/// for its socket inside them.
pub(super) const GO_TLS: GoProbes = GoProbes {
    set: ProbeSet::GoTls,
    what: "Go TLS",
    functions: &[
        (
            TlsFn::GoRead.symbol(),
            TlsFn::GoRead.entry_program(),
            "go_tls_return",
        ),
        (
            TlsFn::GoWrite.symbol(),
            TlsFn::GoWrite.entry_program(),
            "go_tls_return",
        ),
        (
            TlsFn::GoHandshake.symbol(),
            TlsFn::GoHandshake.entry_program(),
            "go_tls_return",
        ),
        (
            "internal/poll.runtime_pollWait",
            "go_poll_wait_entry",
            "go_poll_wait_return",
        ),
    ],
};

/// Every Go table, for loading their programs.
pub(super) const GO_TABLES: [&GoProbes; 2] = [&GO_LOOKUPS, &GO_TLS];

/// The binary has not the table's first function: it does not use that
/// package.
#[derive(Debug)]
struct NotLinked(&'static str);

impl std::fmt::Display for NotLinked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no {}", self.0)
    }
}

impl std::error::Error for NotLinked {}

impl Probes {
    /// Probes the Go functions of `pid`'s executable, if it is a Go
    /// program: once per file; one warning when its Go is not one whose
    /// layout the probes know.
    pub(super) fn probe_go(&mut self, pid: u32, maps: &[Mapping]) -> Vec<ProbeNote> {
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            return Vec::new();
        };
        let exe = exe.to_string_lossy();
        let Some(m) = maps.iter().find(|m| m.path == exe) else {
            return Vec::new();
        };
        let file = FileId {
            dev: m.dev,
            ino: m.inode,
        };
        let mut notes = Vec::new();
        // The executable as a Go binary and its path, once read: None
        // inside when it is not one.
        let mut go_file: Option<Option<(GoBinary, String)>> = None;
        for probes in GO_TABLES {
            if self.covers(probes.set, file, pid) {
                if self.go_pids.insert(pid) {
                    notes.push(ProbeNote::Go(pid));
                }
                continue;
            }
            if self.unprobeable.contains(&(probes.set, file)) {
                continue;
            }
            // Read once for every table, through the process (its root, its
            // mapping): the same path for reading and for attaching.
            if go_file.is_none() {
                let read = m.file_path(pid).and_then(|p| Ok((GoBinary::open(&p)?, p)));
                go_file = Some(match read {
                    Ok((Some(go), p)) => Some((go, p.to_string_lossy().into_owned())),
                    Ok((None, _)) => None,
                    Err(e) => {
                        debug!("PID {pid}: reading {exe} as a Go binary: {e:#}");
                        None
                    }
                });
            }
            let Some(Some((go, path))) = &go_file else {
                self.unprobeable.insert((probes.set, file));
                continue;
            };
            if self.go_pids.insert(pid) {
                notes.push(ProbeNote::Go(pid));
            }
            if let Some(why) = go.unknown_layout() {
                self.unprobeable.insert((probes.set, file));
                if self.warned.insert(pid) {
                    notes.push(ProbeNote::Warning(format!(
                        "PID {pid} runs Go ({why}): its {} are not timed; its DNS traffic still is",
                        probes.what
                    )));
                }
                continue;
            }
            let scope = self.scope_for(probes.set, file, pid);
            match self.attach_go(probes, go, path, scope) {
                Ok(text) => {
                    self.mark_probed(probes.set, file, scope);
                    if probes.set == ProbeSet::GoTls && !self.tls_files.iter().any(|f| *f == exe) {
                        self.tls_files.push(exe.to_string());
                    }
                    notes.push(ProbeNote::Probed(format!(
                        "probing {} in {exe} ({}, {text})",
                        probes.what,
                        go.version.as_deref().unwrap_or("Go")
                    )));
                }
                // A program that does not use the package: nothing to say.
                Err(e) if e.is::<NotLinked>() => {
                    debug!("PID {pid}: no {} in {exe}: {e:#}", probes.what);
                    self.unprobeable.insert((probes.set, file));
                }
                Err(e) => {
                    self.unprobeable.insert((probes.set, file));
                    notes.push(ProbeNote::Warning(format!(
                        "PID {pid}: cannot probe {} in {exe}: {e:#}",
                        probes.what
                    )));
                }
            }
        }
        notes
    }

    /// Attaches a Go table to the executable at `path`: for each function,
    /// the return program on its return instructions first (a call whose
    /// entry is seen then has its return seen too), then the entry.
    fn attach_go(
        &mut self,
        probes: &GoProbes,
        go: &GoBinary,
        path: &str,
        pid: Option<u32>,
    ) -> anyhow::Result<String> {
        let names: Vec<&str> = probes.functions.iter().map(|(f, _, _)| *f).collect();
        let found = go.functions(&names)?;
        if !found.iter().any(|f| f.name == names[0]) {
            return Err(NotLinked(names[0]).into());
        }
        let (mut functions, mut returns) = (0, 0);
        for (name, entry, return_program) in probes.functions {
            let Some(f) = found.iter().find(|f| f.name == *name) else {
                continue;
            };
            let rets = go.return_offsets(f)?;
            let entry_offset = go
                .file_offset(f.entry)
                .with_context(|| format!("{name} is in no segment"))?;
            for offset in &rets {
                self.uprobe(return_program)?
                    .attach(*offset, path, scope(pid))
                    .with_context(|| format!("a return of {name} in {path}"))?;
            }
            self.uprobe(entry)?
                .attach(entry_offset, path, scope(pid))
                .with_context(|| format!("{name} in {path}"))?;
            functions += 1;
            returns += rets.len();
        }
        Ok(format!(
            "{functions} functions, {returns} return instructions"
        ))
    }
}
