//! Before loading: the privileges, tracefs, and the tracepoint layouts
//! the eBPF programs were compiled against.

use std::{fs, io, path::Path};

use anyhow::{Context as _, bail};
use log::info;

use crate::kernel;

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
pub(super) fn check_tracepoint_layouts(tracefs: &str) -> anyhow::Result<()> {
    for (category, name, fields) in TRACEPOINT_LAYOUTS {
        let path = format!("{tracefs}/events/{category}/{name}/format");
        let format = fs::read_to_string(&path)
            .with_context(|| format!("this kernel has no tracepoint {category}:{name} ({path})"))?;
        for (field, offset) in *fields {
            let found = kernel::field_offset(&format, field);
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
