//! Attach: check the machine can run us, load the eBPF object embedded at
//! build time, and hook it to the kernel. Dropping [`Probes`] detaches
//! everything: aya holds programs and links by file descriptor, so even a
//! SIGKILLed tracer leaves nothing loaded.
//!
//! `preflight` checks the machine, `layout` tells the programs what user
//! space knows, `library` attaches the uprobes of each kind's table.

mod go;
mod layout;
mod library;
pub mod preflight;
mod unwind_tables;

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    fs,
    path::Path,
};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap},
    programs::{RawTracePoint, TracePoint, UProbe, uprobe::UProbeScope},
};
use log::debug;
use tracer_common::PyProcess;

use self::library::{FileId, ProbeSet};
use crate::{
    elf, kernel,
    mapped::{Mapping, executable_mappings, is_dynamic_loader, is_libc},
    python::{self, Interpreter},
};

/// How the probes are set up, from the command line.
#[derive(Clone, Copy, Debug)]
pub struct ProbeOptions {
    /// Take stacks for call sites (`--no-call-sites` turns it off).
    pub call_sites: bool,
    /// Read HTTP request lines (`--no-http` turns it off).
    pub http: bool,
    /// And those of TLS servers, from SSL reads (`--http-tls`).
    pub http_tls: bool,
    /// HTTP routes kept (`--max-routes`): not the kernel's, carried to the
    /// session with the rest.
    pub max_routes: usize,
    /// Byte size of the event ring buffer (`--ring-size`).
    pub ring_bytes: u32,
    /// Node mode (`--all`, `--cgroup`): which processes the kernel adopts.
    pub node: Option<crate::target::NodeScope>,
}

/// The loaded and attached programs and their maps.
pub struct Probes {
    pub ebpf: Ebpf,
    /// Files (probe set, device, inode) whose functions are probed, and
    /// for which process (None: every process that maps the file). Probes
    /// are scoped to the traced processes: a uprobe hit costs the process
    /// that hits it a trap (and a single-step when the first instruction
    /// cannot be emulated: about 10 µs on SSL_read_ex here), so a probe
    /// on every process would slow every TLS user on the machine.
    probed_files: HashSet<(ProbeSet, FileId, Option<u32>)>,
    /// How many processes each file is probed for, one by one: past
    /// `MAX_PROCESSES_PROBED_APART`, one probe for every process replaces
    /// new per-process probes (many children: fewer probes to attach and
    /// detach, at the cost above for untraced processes).
    probed_processes: StdHashMap<(ProbeSet, FileId), usize>,
    /// Files found to have nothing to probe: not read again.
    unprobeable: HashSet<(ProbeSet, FileId)>,
    /// Processes already told they have no libc to probe.
    warned: HashSet<u32>,
    /// Take stacks for call sites.
    call_sites: bool,
    /// The kernel's unwind tables.
    unwind: unwind_tables::UnwindTables,
    /// The interpreter file of each CPython process.
    python_modules: StdHashMap<u32, (u64, u64)>,
    /// Go programs (their busy time is not their threads', and they
    /// resolve names themselves: no libc warning).
    go_pids: HashSet<u32>,
    /// Node mode: every file is probed for every process at once (one
    /// attach per library file), since every process is traced.
    node_mode: bool,
    /// Files probed for TLS that a traced process maps, for the report.
    pub tls_files: Vec<String>,
    /// Processes found to run CPython.
    python_pids: HashSet<u32>,
    /// Commands tracer starts (probed ahead of their exec).
    launched_pids: HashSet<u32>,
    /// Roots (containers) whose libssl files were probed ahead of use, per
    /// process.
    preprobed_roots: HashSet<(u64, u64, u32)>,
    /// Processes whose interpreter was looked for already, with the
    /// executable they ran then (an exec makes it a new question).
    python_checked: StdHashMap<u32, (u64, u64)>,
}

/// What probing a process's files did, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeNote {
    /// A file probed (shown with -v).
    Probed(String),
    /// A file loaded after tracing began, probed now (always shown).
    ProbedLate(String),
    /// Something the user should know (always shown).
    Warning(String),
    /// A CPython process: its frames are read at every call site.
    Python(u32, Interpreter),
    /// A Go program.
    Go(u32),
    /// What the process maps now (for unwinding its stacks later).
    Maps(u32, Vec<Mapping>),
    /// The kernel's unwind tables had no room for the process: its stacks
    /// are copied and unwound in user space.
    UnwindTablesFull(u32),
}

/// The embedded eBPF object.
fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"))
}

/// For the benchmark: only the empty programs (tracer-ebpf's `floor`), on
/// the raw syscall tracepoints and on `uprobes` (file, symbol) entry and
/// return. Detached when the returned object is dropped.
pub fn attach_floor(syscalls: bool, uprobes: &[(String, String)]) -> anyhow::Result<Ebpf> {
    preflight::check_privileges()?;
    preflight::ensure_tracefs()?;
    let mut ebpf = aya::EbpfLoader::new()
        .load(object())
        .context("loading the eBPF programs into the kernel")?;
    if syscalls {
        for (name, tracepoint) in [
            ("floor_sys_enter", "sys_enter"),
            ("floor_sys_exit", "sys_exit"),
        ] {
            let prog: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
                .try_into()?;
            prog.load()?;
            prog.attach(tracepoint)?;
        }
    }
    for name in ["floor_uprobe", "floor_uretprobe"] {
        let prog: &mut UProbe = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
            .try_into()?;
        prog.load()?;
        for (path, symbol) in uprobes {
            // SYMBOL or SYMBOL+OFFSET (bytes into the function).
            let (symbol, extra) = match symbol.split_once('+') {
                Some((s, off)) => (s, off.parse::<u64>().context("offset after +")?),
                None => (symbol.as_str(), 0),
            };
            let offsets = elf::function_offsets(Path::new(path), &[symbol])?;
            let offset = offsets
                .get(symbol)
                .ok_or_else(|| anyhow!("no {symbol} in {path}"))?
                + extra;
            prog.attach(offset, path, UProbeScope::AllProcesses)
                .with_context(|| format!("{symbol} in {path}"))?;
        }
    }
    Ok(ebpf)
}

impl Probes {
    /// Loads the embedded object and attaches every program. Processes to
    /// trace are added with [`Probes::trace_process`].
    pub fn load_and_attach(options: ProbeOptions) -> anyhow::Result<Self> {
        kernel::check_minimum()?;
        preflight::check_privileges()?;
        let tracefs = preflight::ensure_tracefs()?;
        preflight::check_tracepoint_layouts(tracefs)?;

        // The kernel programs log (aya-log) only at the level asked for
        // with -v: nothing is formatted in the kernel otherwise.
        let kernel_log_level: u8 = match log::max_level() {
            log::LevelFilter::Off => 0,
            log::LevelFilter::Error => 1,
            log::LevelFilter::Warn => 2,
            log::LevelFilter::Info => 3,
            log::LevelFilter::Debug => 4,
            log::LevelFilter::Trace => 5,
        };
        let has_ancestor_helper = kernel::has_ancestor_cgroup_helper();
        let mut ebpf = aya::EbpfLoader::new()
            .override_global(aya_log::LEVEL, &kernel_log_level, true)
            .override_global(
                "TRACER_HAS_ANCESTOR_CGROUP_ID",
                &u8::from(has_ancestor_helper),
                true,
            )
            .map_max_entries("EVENTS", options.ring_bytes)
            .load(object())
            .context("loading the eBPF programs into the kernel")?;

        // Node mode keeps each thread's row (its process's name and cgroup)
        // until a rename or a cgroup move, which these tell: attached before
        // the syscall programs, so that no row is kept past one unseen.
        let name_programs: &[(&str, &str)] = if options.node.is_some() {
            &[
                ("task_rename", "task_rename"),
                ("cgroup_attach_task", "cgroup_attach_task"),
            ]
        } else {
            &[]
        };
        for &(name, tracepoint) in name_programs
            .iter()
            .chain(&[("sys_enter", "sys_enter"), ("sys_exit", "sys_exit")])
        {
            let prog: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the kernel refused program {name}"))?;
            prog.attach(tracepoint)
                .with_context(|| format!("attaching to raw tracepoint {tracepoint}"))?;
            debug!("attached raw tracepoint {tracepoint}");
        }
        for (name, category, event) in [
            ("inet_sock_set_state", "sock", "inet_sock_set_state"),
            ("task_newtask", "task", "task_newtask"),
            ("sched_process_exit", "sched", "sched_process_exit"),
            ("sched_process_exec", "sched", "sched_process_exec"),
        ] {
            let prog: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the kernel refused program {name}"))?;
            prog.attach(category, event)
                .with_context(|| format!("attaching to tracepoint {category}:{event}"))?;
            debug!("attached tracepoint {category}:{event}");
        }
        let library_programs = library::TABLES.iter().flat_map(|t| {
            t.functions
                .iter()
                .map(|(_, entry)| *entry)
                .chain([t.return_program])
        });
        let mut go_programs: Vec<&str> = go::GO_TABLES
            .iter()
            .flat_map(|t| t.functions.iter().flat_map(|(_, e, r)| [*e, *r]))
            .collect();
        go_programs.sort_unstable();
        go_programs.dedup();
        for name in library_programs.chain(go_programs) {
            let prog: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
                .try_into()?;
            // All of them now, before any is attached: loaded when first
            // needed, a program's verification (50 ms or so here) held the
            // collector back while the probes attached before it filled
            // the ring (tried at 89295bb: 58,012 records lost in 3 s of a
            // getaddrinfo loop).
            let t0 = std::time::Instant::now();
            prog.load()
                .with_context(|| format!("the kernel refused program {name}"))?;
            debug!("loaded program {name} in {:?}", t0.elapsed());
        }
        layout::set_kernel_layout(&mut ebpf, options, tracefs, has_ancestor_helper)?;
        give_back_freed_heap();
        Ok(Self {
            ebpf,
            probed_files: HashSet::new(),
            probed_processes: StdHashMap::new(),
            unprobeable: HashSet::new(),
            warned: HashSet::new(),
            call_sites: options.call_sites,
            unwind: unwind_tables::UnwindTables::default(),
            python_modules: StdHashMap::new(),
            go_pids: HashSet::new(),
            node_mode: options.node.is_some(),
            tls_files: Vec::new(),
            preprobed_roots: HashSet::new(),
            python_pids: HashSet::new(),
            launched_pids: HashSet::new(),
            python_checked: StdHashMap::new(),
        })
    }

    /// Probes what `pid` maps that is not probed yet: name lookups in its
    /// libc, TLS in its libssl or its executable (static OpenSSL). Files are
    /// opened through /proc/PID/root, so a process in a container works.
    /// `late`: the process was already traced, so a new file is one it
    /// loaded since (say so).
    pub fn probe_process(&mut self, pid: u32, late: bool) -> Vec<ProbeNote> {
        let maps = executable_mappings(pid);
        if maps.is_empty() {
            return Vec::new(); // gone, or a kernel thread
        }
        let mut notes = self.probe_go(pid, &maps);
        notes.extend(self.probe_lookups(pid, &maps));
        notes.extend(self.probe_python(pid, &maps));
        notes.extend(self.probe_tls(pid, &maps, late));
        // A command held before its exec maps tracer itself: its tables
        // would be thrown away at the exec (and tracer's are large).
        let about_to_exec = !late && self.launched_pids.contains(&pid);
        if self.call_sites && !about_to_exec {
            // Compiled apart from this path (see `unwind_tables`); waited
            // for at attach only, before the process is said to be traced.
            let interpreter = self.python_modules.get(&pid).copied();
            notes.extend(self.write_unwind_tables(pid, &maps, interpreter, !late));
        }
        notes.push(ProbeNote::Maps(pid, maps));
        notes
    }

    /// Finds the CPython interpreter of `pid`, if it runs one, and tells the
    /// kernel where its frames are. Once per process (an exec makes a new
    /// one: its first scan finds no libpython yet, so it is looked at again
    /// until the loader is done).
    fn probe_python(&mut self, pid: u32, maps: &[Mapping]) -> Option<ProbeNote> {
        use std::os::unix::fs::MetadataExt as _;
        let exe = fs::metadata(format!("/proc/{pid}/exe")).ok()?;
        let exe = (
            (u64::from(libc::major(exe.dev())) << 20) | u64::from(libc::minor(exe.dev())),
            exe.ino(),
        );
        if self.python_checked.get(&pid) == Some(&exe) {
            return None;
        }
        // Wait for the dynamic loader to finish mapping libraries.
        if maps.iter().any(|m| is_dynamic_loader(&m.path)) && !maps.iter().any(|m| is_libc(&m.path))
        {
            return None;
        }
        self.python_checked.insert(pid, exe);
        match python::detect(pid, maps) {
            python::Detected::NotPython => None,
            python::Detected::Unsupported(msg) => Some(ProbeNote::Warning(msg)),
            python::Detected::Python(interp) => {
                let map = self.ebpf.map_mut("PY_PROCS")?;
                let mut procs: HashMap<_, u32, PyProcess> = HashMap::try_from(map).ok()?;
                if let Err(e) = procs.insert(pid, interp.kernel_config(), 0) {
                    return Some(ProbeNote::Warning(format!(
                        "PID {pid}: cannot register its Python interpreter ({e}): native stacks only"
                    )));
                }
                self.python_pids.insert(pid);
                self.python_modules.insert(pid, interp.module);
                Some(ProbeNote::Python(pid, interp))
            }
        }
    }

    /// A process ran execve, and the kernel dropped its unwind tables and
    /// its interpreter (`sched_process_exec`): what was found of the
    /// program it ran before is looked for again in the new one when it
    /// is probed, even if it is the same executable.
    pub fn process_execed(&mut self, pid: u32) {
        self.unwind_tables_dropped(pid);
        self.python_checked.remove(&pid);
        self.python_pids.remove(&pid);
        self.python_modules.remove(&pid);
    }

    /// Forgets a process that exited and was folded into its name's row:
    /// what is kept per PID here would otherwise grow with every process a
    /// node starts (the kernel drops its interpreter entry at exit).
    pub fn forget_process(&mut self, pid: u32) {
        self.warned.remove(&pid);
        self.go_pids.remove(&pid);
        self.python_pids.remove(&pid);
        self.launched_pids.remove(&pid);
        self.python_checked.remove(&pid);
        self.python_modules.remove(&pid);
        self.forget_unwind_tables(pid);
        self.preprobed_roots.retain(|&(_, _, owner)| owner != pid);
    }

    /// Whether stacks are taken (not `--no-call-sites`).
    pub fn call_sites(&self) -> bool {
        self.call_sites
    }

    /// Node mode: files are probed for every process.
    pub fn node_mode(&self) -> bool {
        self.node_mode
    }

    /// A command tracer starts, held before its exec: what it may load
    /// is probed ahead (see `probe_tls`). Before it is traced.
    pub fn expect_command(&mut self, pid: u32) {
        self.launched_pids.insert(pid);
    }

    /// Starts tracing a process (all its threads).
    pub fn trace_process(&mut self, pid: u32) -> anyhow::Result<()> {
        let mut traced: HashMap<_, u32, u8> = HashMap::try_from(
            self.ebpf
                .map_mut("TRACED_PROCESSES")
                .ok_or_else(|| anyhow!("map TRACED_PROCESSES missing"))?,
        )?;
        traced
            .insert(pid, 1, 0)
            .with_context(|| format!("adding PID {pid} to the traced set"))?;
        // After the insert: each CPU's cached answer for this PID (see
        // TRACED_CACHE in the kernel side) is looked up again.
        let mut generations: Array<_, u64> = Array::try_from(
            self.ebpf
                .map_mut("TRACED_GEN")
                .ok_or_else(|| anyhow!("map TRACED_GEN missing"))?,
        )?;
        let user_gen = generations.get(&1, 0)?;
        generations
            .set(1, user_gen.wrapping_add(1), 0)
            .context("telling the kernel side the traced set changed")?;
        Ok(())
    }
}

/// Returns the heap's free pages to the kernel. Loading parses the kernel's
/// BTF and the eBPF object (some 18 MiB of heap at the peak, freed once the
/// programs are loaded); glibc keeps freed pages below its top resident,
/// where they would stay for the whole run (`cargo xtask bench`, footprint).
fn give_back_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
