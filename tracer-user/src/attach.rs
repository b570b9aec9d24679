//! Attach: check the machine can run us, load the eBPF object embedded at
//! build time, and hook it to the kernel. Dropping [`Probes`] detaches
//! everything: aya holds programs and links by file descriptor, so even a
//! SIGKILLed tracer leaves nothing loaded.

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    fs, io,
    path::Path,
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf,
    maps::HashMap,
    programs::{
        RawTracePoint, TracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use log::{debug, info};
use tracer_common::{KernelLayout, PyProcess, TlsFn};

use crate::{
    btf, elf, kernel,
    mapped::{Mapping, executable_mappings, is_dynamic_loader, is_libc},
    python::{self, Interpreter},
};

/// Name-lookup functions probed in libc: (symbol, entry program). One
/// return program serves them all.
const LOOKUP_PROBES: &[(&str, &str)] = &[
    ("getaddrinfo", "getaddrinfo_entry"),
    ("gethostbyname", "gethostbyname_entry"),
    ("gethostbyname2", "gethostbyname2_entry"),
    ("gethostbyname_r", "gethostbyname_r_entry"),
];
const LOOKUP_RETURN: &str = "lookup_return";
/// The TLS return program, for every OpenSSL function (each has an entry
/// program of its own, `TlsFn::entry_program`).
const TLS_RETURN: &str = "tls_return";

/// Tells the programs what only user space can find or choose: kernel
/// struct offsets from BTF (a Python thread state is found by its thread's
/// fs base; node mode's scopes; what stands in for what this kernel lacks,
/// see `kernel`), and whether to take stacks at all.
fn set_kernel_layout(
    ebpf: &mut Ebpf,
    options: ProbeOptions,
    tracefs: &str,
    has_ancestor_helper: bool,
) -> anyhow::Result<()> {
    let call_sites = options.call_sites;
    let btf = btf::Btf::from_sys();
    let exit = kernel::process_exit_layout(tracefs, btf.as_ref().ok());
    let scoped_by_cgroup = options.node.is_some_and(|n| n.cgroup_id != 0);
    let ancestors = if scoped_by_cgroup && !has_ancestor_helper {
        kernel::cgroup_ancestor_layout(btf.as_ref().ok())?
    } else {
        [0; 4]
    };
    let fsbase = btf
        .as_ref()
        .map_err(|e| anyhow!("{e:#}"))
        .and_then(|b| b.offset_of("task_struct.thread.fsbase"));
    let scope_netns = options.node.map_or(0, |n| n.netns);
    // A network namespace scope needs the path from a task to its
    // namespace: without it, no process could be told in or out.
    let netns_path = if scope_netns == 0 {
        [0; 3]
    } else {
        let btf = btf.as_ref().map_err(|e| {
            anyhow!(
                "--netns needs the kernel's BTF to find a task's namespace, and {} has none: {e:#}",
                kernel::release()
            )
        })?;
        let mut offsets = [0; 3];
        for (slot, path) in
            offsets
                .iter_mut()
                .zip(["task_struct.nsproxy", "nsproxy.net_ns", "net.ns.inum"])
        {
            *slot = btf
                .offset_of(path)
                .with_context(|| format!("--netns: {path} not found in the kernel's BTF"))?;
        }
        offsets
    };
    let task_fsbase = match fsbase {
        Ok(off) => off,
        Err(e) => {
            if call_sites {
                log::warn!(
                    "{}: no kernel BTF ({e:#}): Python call sites are not available",
                    kernel::release()
                );
            }
            0
        }
    };
    // Node mode keys syscall stats by process name and cgroup; without BTF,
    // by process (the kernel map then grows with the live processes).
    let name_rows = match (&btf, options.node.is_some()) {
        (Ok(btf), true) => btf
            .offset_of("task_struct.group_leader")
            .and_then(|leader| Ok((leader, btf.offset_of("task_struct.comm")?)))
            .map_err(|e| {
                log::warn!(
                    "{}: {e:#}: node mode keeps syscall stats per process",
                    kernel::release()
                )
            })
            .unwrap_or((0, 0)),
        _ => (0, 0),
    };
    let Some(map) = ebpf.map_mut("KERNEL_LAYOUT") else {
        bail!("map KERNEL_LAYOUT missing from the eBPF object");
    };
    if let Ok(mut layout) = aya::maps::Array::<_, KernelLayout>::try_from(map) {
        let _ = layout.set(
            0,
            KernelLayout {
                task_fsbase,
                flags: if call_sites {
                    0
                } else {
                    tracer_common::LAYOUT_NO_STACKS
                } | if options.node.is_some() {
                    tracer_common::LAYOUT_ALL
                } else {
                    0
                },
                slow_io_ns: tracer_common::SLOW_IO_NS,
                wakeup_bytes: u64::from(options.ring_bytes / 8),
                scope_cgroup: options.node.map_or(0, |n| n.cgroup_id),
                scope_level: options.node.map_or(0, |n| n.cgroup_level),
                self_tgid: std::process::id(),
                scope_netns,
                task_nsproxy: netns_path[0],
                nsproxy_net_ns: netns_path[1],
                net_inum: netns_path[2],
                task_group_leader: name_rows.0,
                task_comm: name_rows.1,
                exit_group_dead: exit.0,
                task_signal: exit.1,
                signal_live: exit.2,
                task_cgroups: ancestors[0],
                css_set_dfl_cgrp: ancestors[1],
                cgroup_level: ancestors[2],
                cgroup_ancestor_ids: ancestors[3],
                _pad: 0,
            },
            0,
        );
    }
    Ok(())
}

/// How the probes are set up, from the command line.
#[derive(Clone, Copy, Debug)]
pub struct ProbeOptions {
    /// Take stacks for call sites (`--no-call-sites` turns it off).
    pub call_sites: bool,
    /// Byte size of the event ring buffer (`--ring-size`).
    pub ring_bytes: u32,
    /// Node mode (`--all`, `--cgroup`): which processes the kernel adopts.
    pub node: Option<NodeScope>,
}

/// Node mode's scope: every process, or those in one cgroup v2 and below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeScope {
    /// The cgroup's id (its directory's inode number); 0 for every process.
    pub cgroup_id: u64,
    /// Its depth below the cgroup v2 root.
    pub cgroup_level: u32,
    /// The network namespace's inode number; 0 for any.
    pub netns: u32,
}

/// A tracepoint whose fields the eBPF programs read at fixed offsets:
/// (category, name, [(field, offset)]).
type TracepointLayout = (&'static str, &'static str, &'static [(&'static str, usize)]);

/// The eBPF side has the same numbers; this table is checked against the
/// kernel's format files so a layout change is an error, not garbage.
const TRACEPOINT_LAYOUTS: &[TracepointLayout] = &[
    (
        "sock",
        "inet_sock_set_state",
        &[
            ("skaddr", 8),
            ("oldstate", 16),
            ("newstate", 20),
            ("protocol", 30),
        ],
    ),
    ("task", "task_newtask", &[("pid", 8), ("clone_flags", 32)]),
];

const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Fails with a message naming what is missing when we lack the rights to
/// load and attach eBPF programs.
pub fn check_privileges() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_PERFMON: u64 = 38;
    const CAP_BPF: u64 = 39;
    let has = |c: u64| cap_eff & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!(
        "tracer needs root, or the capabilities CAP_BPF and CAP_PERFMON (plus CAP_SYS_ADMIN \
         to mount tracefs), to load eBPF programs: run it with sudo"
    )
}

/// Makes sure tracefs is mounted (tracepoint ids live there), mounting it
/// ourselves where it is missing. Returns the path in use.
pub fn ensure_tracefs() -> anyhow::Result<&'static str> {
    if let Some(p) = TRACEFS_PATHS
        .iter()
        .find(|p| Path::new(p).join("events").is_dir())
    {
        return Ok(p);
    }
    let target = TRACEFS_PATHS[0];
    let c_target = std::ffi::CString::new(target).expect("no NUL");
    // SAFETY: mount(2) with static, NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c_target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        bail!(
            "tracefs is not mounted and mounting it at {target} failed ({err}); \
             mount it as root: mount -t tracefs tracefs {target}"
        );
    }
    info!("mounted tracefs at {target} (it was not mounted)");
    Ok(target)
}

/// Checks the kernel's tracepoint layouts against the offsets compiled into
/// the eBPF programs.
fn check_tracepoint_layouts(tracefs: &str) -> anyhow::Result<()> {
    for (category, name, fields) in TRACEPOINT_LAYOUTS {
        let path = format!("{tracefs}/events/{category}/{name}/format");
        let format = fs::read_to_string(&path)
            .with_context(|| format!("this kernel has no tracepoint {category}:{name} ({path})"))?;
        for (field, offset) in *fields {
            let found = field_offset(&format, field);
            if found != Some(*offset) {
                bail!(
                    "tracepoint {category}:{name} field `{field}` is at offset {found:?} on \
                     this kernel, the tracer expects {offset}: this kernel is not supported yet"
                );
            }
        }
    }
    Ok(())
}

/// Offset of `field` in a tracepoint format file, e.g. from
/// `field:int oldstate;<TAB>offset:16;<TAB>size:4;<TAB>signed:1;`.
pub fn field_offset(format: &str, field: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let ident = decl.split_whitespace().last()?;
        let ident = ident.split('[').next()?;
        if ident != field {
            return None;
        }
        rest.split(';')
            .find_map(|kv| kv.trim().strip_prefix("offset:"))
            .and_then(|v| v.trim().parse().ok())
    })
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
    probed_files: HashSet<(ProbeSet, u64, u64, Option<u32>)>,
    /// How many processes each file is probed for, one by one: past
    /// `MAX_PROCESSES_PROBED_APART`, one probe for every process replaces
    /// new per-process probes (many children: fewer probes to attach and
    /// detach, at the cost above for untraced processes).
    probed_processes: StdHashMap<(ProbeSet, u64, u64), usize>,
    /// Files found to have nothing to probe: not read again.
    unprobeable: HashSet<(ProbeSet, u64, u64)>,
    /// Processes already told they have no libc to probe.
    warned: HashSet<u32>,
    /// Node mode: every file is probed for every process at once (one
    /// attach per library file), since every process is traced.
    node_mode: bool,
    /// Files probed for TLS that a traced process maps, for the report.
    pub tls_files: Vec<String>,
    /// Processes found to run CPython.
    python_pids: HashSet<u32>,
    /// Roots (containers) whose libssl files were probed ahead of use, per
    /// process.
    preprobed_roots: HashSet<(u64, u64, u32)>,
    /// Processes whose interpreter was looked for already, with the
    /// executable they ran then (an exec makes it a new question).
    python_checked: StdHashMap<u32, (u64, u64)>,
}

/// Which functions a file is probed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ProbeSet {
    Lookups,
    Tls,
}

/// A probe for one process, or (None) for every process.
fn scope(pid: Option<u32>) -> UProbeScope {
    match pid.and_then(std::num::NonZeroU32::new) {
        Some(pid) => UProbeScope::OneProcess(pid),
        None => UProbeScope::AllProcesses,
    }
}

/// Processes a file is probed for one by one, at most (see `Probes`).
const MAX_PROCESSES_PROBED_APART: usize = 16;

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
    /// What the process maps now (for unwinding its stacks later).
    Maps(u32, Vec<Mapping>),
}

/// The embedded eBPF object.
fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"))
}

/// For the benchmark: only the empty programs (tracer-ebpf's `floor`), on
/// the raw syscall tracepoints and on `uprobes` (file, symbol) entry and
/// return. Detached when the returned object is dropped.
pub fn attach_floor(syscalls: bool, uprobes: &[(String, String)]) -> anyhow::Result<Ebpf> {
    check_privileges()?;
    ensure_tracefs()?;
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
        check_privileges()?;
        let tracefs = ensure_tracefs()?;
        check_tracepoint_layouts(tracefs)?;

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

        for (name, tracepoint) in [("sys_enter", "sys_enter"), ("sys_exit", "sys_exit")] {
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
        for name in LOOKUP_PROBES
            .iter()
            .map(|(_, prog)| *prog)
            .chain(TlsFn::ALL.map(TlsFn::entry_program))
            .chain([LOOKUP_RETURN, TLS_RETURN])
        {
            let prog: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the kernel refused program {name}"))?;
        }
        set_kernel_layout(&mut ebpf, options, tracefs, has_ancestor_helper)?;
        Ok(Self {
            ebpf,
            probed_files: HashSet::new(),
            probed_processes: StdHashMap::new(),
            unprobeable: HashSet::new(),
            warned: HashSet::new(),
            node_mode: options.node.is_some(),
            tls_files: Vec::new(),
            preprobed_roots: HashSet::new(),
            python_pids: HashSet::new(),
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
        let mut notes = Vec::new();
        notes.extend(self.probe_lookups(pid, &maps));
        notes.extend(self.probe_python(pid, &maps));
        notes.extend(self.probe_tls(pid, &maps, late));
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
                Some(ProbeNote::Python(pid, interp))
            }
        }
    }

    /// Forgets a process that exited and was folded into its name's row:
    /// what is kept per PID here would otherwise grow with every process a
    /// node starts (the kernel drops its interpreter entry at exit).
    pub fn forget_process(&mut self, pid: u32) {
        self.warned.remove(&pid);
        self.python_pids.remove(&pid);
        self.python_checked.remove(&pid);
        self.preprobed_roots.retain(|&(_, _, owner)| owner != pid);
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
                let dev =
                    (u64::from(libc::major(meta.dev())) << 20) | u64::from(libc::minor(meta.dev()));
                let file = (ProbeSet::Tls, dev, meta.ino());
                if self.covers(ProbeSet::Tls, dev, meta.ino(), pid)
                    || self.unprobeable.contains(&file)
                {
                    continue;
                }
                let path = entry.path().to_string_lossy().into_owned();
                let scope = self.scope_for(ProbeSet::Tls, dev, meta.ino(), pid);
                match self.attach_tls_probes(&path, scope) {
                    Ok(n) => {
                        self.mark_probed(ProbeSet::Tls, dev, meta.ino(), scope);
                        notes.push(ProbeNote::Probed(format!(
                            "probing TLS in {dir}/{name} ({n} functions), ahead of its loading"
                        )));
                    }
                    Err(e) => {
                        debug!("no TLS probes in {path}: {e:#}");
                        self.unprobeable.insert(file);
                    }
                }
            }
        }
        notes
    }

    fn probe_tls(&mut self, pid: u32, maps: &[Mapping], late: bool) -> Vec<ProbeNote> {
        let exe = fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        // Python loads libssl late (`import ssl`): probe it ahead. Other
        // programs link it, or are probed on mapping it.
        let mut notes = if self.python_pids.contains(&pid) {
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
            let file = (ProbeSet::Tls, m.dev, m.inode);
            if self.covers(ProbeSet::Tls, m.dev, m.inode, pid) {
                // Probed ahead of its loading: now it is in use.
                if !self.tls_files.contains(&m.path) {
                    self.tls_files.push(m.path.clone());
                    if late {
                        notes.push(ProbeNote::Probed(format!("PID {pid} loaded {}", m.path)));
                    }
                }
                continue;
            }
            if self.unprobeable.contains(&file) {
                continue;
            }
            let scope = self.scope_for(ProbeSet::Tls, m.dev, m.inode, pid);
            let attached = m
                .file_path(pid)
                .and_then(|path| self.attach_tls_probes(&path.to_string_lossy(), scope));
            match attached {
                Ok(n) => {
                    self.mark_probed(ProbeSet::Tls, m.dev, m.inode, scope);
                    if !self.tls_files.contains(&m.path) {
                        self.tls_files.push(m.path.clone());
                    }
                    let text = format!("probing TLS in {} ({n} functions)", m.path);
                    notes.push(if late {
                        ProbeNote::ProbedLate(format!("PID {pid} loaded {}: {text}", m.path))
                    } else {
                        ProbeNote::Probed(text)
                    });
                }
                Err(e) => {
                    debug!("no TLS probes in {}: {e:#}", m.path);
                    self.unprobeable.insert(file);
                }
            }
        }
        notes
    }

    /// Attaches the TLS entry and return programs to every OpenSSL function
    /// `path` defines. Fails if it has no SSL_read.
    fn attach_tls_probes(&mut self, path: &str, pid: Option<u32>) -> anyhow::Result<usize> {
        let symbols: Vec<&str> = TlsFn::ALL.iter().map(|f| f.symbol()).collect();
        let offsets = elf::function_offsets(Path::new(path), &symbols)?;
        if !offsets.contains_key("SSL_read") {
            bail!("no SSL_read in {path}");
        }
        let mut attached = 0;
        for func in TlsFn::ALL {
            let Some(&offset) = offsets.get(func.symbol()) else {
                continue;
            };
            // The return program first, as for lookups.
            for name in [TLS_RETURN, func.entry_program()] {
                let point = UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(offset),
                    cookie: None,
                };
                self.uprobe(name)?
                    .attach(point, path, scope(pid))
                    .with_context(|| format!("{} in {path}", func.symbol()))?;
            }
            attached += 1;
        }
        Ok(attached)
    }

    /// Node mode: files are probed for every process.
    pub fn node_mode(&self) -> bool {
        self.node_mode
    }

    /// Whether `file` is probed for `pid` already.
    fn covers(&self, set: ProbeSet, dev: u64, ino: u64, pid: u32) -> bool {
        self.probed_files.contains(&(set, dev, ino, Some(pid)))
            || self.probed_files.contains(&(set, dev, ino, None))
    }

    /// The scope to probe `file` with for `pid`: that process, or every
    /// process once many were probed apart.
    fn scope_for(&self, set: ProbeSet, dev: u64, ino: u64, pid: u32) -> Option<u32> {
        if self.node_mode {
            return None;
        }
        let apart = self
            .probed_processes
            .get(&(set, dev, ino))
            .copied()
            .unwrap_or(0);
        (apart < MAX_PROCESSES_PROBED_APART).then_some(pid)
    }

    /// Records that `file` is probed with `scope`.
    fn mark_probed(&mut self, set: ProbeSet, dev: u64, ino: u64, scope: Option<u32>) {
        self.probed_files.insert((set, dev, ino, scope));
        if scope.is_some() {
            *self.probed_processes.entry((set, dev, ino)).or_default() += 1;
        }
    }

    fn uprobe(&mut self, name: &str) -> anyhow::Result<&mut UProbe> {
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
            .try_into()?)
    }

    fn probe_lookups(&mut self, pid: u32, maps: &[Mapping]) -> Option<ProbeNote> {
        let libc = maps.iter().find(|m| is_libc(&m.path));
        let candidates: Vec<&Mapping> = match libc {
            Some(l) => vec![l],
            // The dynamic loader is there but libc is not mapped yet (a
            // process just exec'd): look again when it is.
            None if maps.iter().any(|m| is_dynamic_loader(&m.path)) => return None,
            // No libc: a static binary may carry getaddrinfo itself.
            None => maps.iter().collect(),
        };
        for m in candidates {
            let file = (ProbeSet::Lookups, m.dev, m.inode);
            if self.covers(ProbeSet::Lookups, m.dev, m.inode, pid) {
                return None;
            }
            if self.unprobeable.contains(&file) {
                continue;
            }
            let scope = self.scope_for(ProbeSet::Lookups, m.dev, m.inode, pid);
            let attached = m
                .file_path(pid)
                .and_then(|path| self.attach_lookup_probes(&path.to_string_lossy(), scope));
            match attached {
                Ok(n) => {
                    self.mark_probed(ProbeSet::Lookups, m.dev, m.inode, scope);
                    return Some(ProbeNote::Probed(format!(
                        "probing name lookups in {} ({n} functions)",
                        m.path
                    )));
                }
                Err(e) => {
                    debug!("no lookup probes in {}: {e:#}", m.path);
                    self.unprobeable.insert(file);
                }
            }
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

    /// Attaches entry and return probes on every lookup function `path`
    /// defines; returns how many. Fails if it has no getaddrinfo.
    fn attach_lookup_probes(&mut self, path: &str, pid: Option<u32>) -> anyhow::Result<usize> {
        let symbols: Vec<&str> = LOOKUP_PROBES.iter().map(|(s, _)| *s).collect();
        let offsets = elf::function_offsets(Path::new(path), &symbols)?;
        if !offsets.contains_key("getaddrinfo") {
            bail!("no getaddrinfo in {path}");
        }
        let mut attached = 0;
        for (symbol, entry) in LOOKUP_PROBES {
            let Some(&offset) = offsets.get(*symbol) else {
                continue;
            };
            // The return program first: a call whose entry is seen then has
            // its return seen too (a uretprobe takes hold at the call's
            // entry); one entered between two attaches would leave its
            // thread's lookup open.
            for name in [LOOKUP_RETURN, *entry] {
                self.uprobe(name)?
                    .attach(offset, path, scope(pid))
                    .with_context(|| format!("{symbol} in {path}"))?;
            }
            attached += 1;
        }
        Ok(attached)
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: &str = "name: inet_sock_set_state\nID: 2287\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;\n";

    #[test]
    fn reads_field_offsets_from_format_files() {
        assert_eq!(field_offset(FORMAT, "skaddr"), Some(8));
        assert_eq!(field_offset(FORMAT, "oldstate"), Some(16));
        assert_eq!(field_offset(FORMAT, "saddr"), Some(32));
        assert_eq!(field_offset(FORMAT, "newstate"), None);
    }
}
