//! What this kernel has that the eBPF programs use, and what stands in for
//! what it lacks. Every warning about a missing piece names the kernel
//! (`Linux 5.10.0-32-cloud-amd64: ...`), so that a user, and the kernel
//! matrix, can tell a degraded feature from a broken one.

use std::fs;

use anyhow::{Context as _, anyhow, bail};
use aya::{
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported},
};

use crate::btf;

/// The oldest kernel the tracer runs on: the one the kernel matrix proves
/// (`cargo xtask kernels`). It has everything the programs need: the BPF
/// ring buffer (5.8), BTF in /sys/kernel/btf/vmlinux, global BPF functions,
/// bpf_probe_read_user/kernel (5.5).
pub const MINIMUM: (u32, u32) = (5, 10);

/// Fails, with one line, on a kernel older than `MINIMUM`.
pub fn check_minimum() -> anyhow::Result<()> {
    let release = uname_release();
    match version_of(&release) {
        Some(v) if v < MINIMUM => bail!(
            "Linux {release} is older than {}.{}, the oldest kernel tracer runs on (it needs \
             the BPF ring buffer, kernel BTF and global BPF functions): run it on a newer kernel",
            MINIMUM.0,
            MINIMUM.1
        ),
        _ => Ok(()),
    }
}

/// The release as uname(2) gives it (a process's personality can change
/// it, as `setarch --uname-2.6` does).
fn uname_release() -> String {
    // SAFETY: uname(2) fills the zeroed struct; release is NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// (major, minor) of a release such as `5.10.0-32-cloud-amd64`.
fn version_of(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether tracing programs (raw tracepoints, uprobes) may call
/// `bpf_get_current_ancestor_cgroup_id`: 5.10 lets only cgroup programs.
pub fn has_ancestor_cgroup_helper() -> bool {
    let has = [ProgramType::RawTracePoint, ProgramType::KProbe]
        .into_iter()
        .all(|t| {
            is_helper_supported(t, BpfHelper::BPF_FUNC_get_current_ancestor_cgroup_id)
                .unwrap_or(false)
        });
    if !has {
        log::info!(
            "{}: tracing programs cannot call bpf_get_current_ancestor_cgroup_id: --cgroup \
             reads a task's cgroup ancestors at offsets from BTF",
            release()
        );
    }
    has
}

/// How the exit tracepoint tells a process's last thread (see
/// `KernelLayout::exit_group_dead`): its `group_dead` field where the
/// kernel has one (6.18 has it, 6.12 not), else the process's count of live
/// threads, found through BTF.
pub fn process_exit_layout(tracefs: &str, btf: Option<&btf::Btf>) -> (u32, u32, u32) {
    let format = fs::read_to_string(format!("{tracefs}/events/sched/sched_process_exit/format"))
        .unwrap_or_default();
    if let Some(off) = field_offset(&format, "group_dead") {
        return (off as u32, 0, 0);
    }
    let live = btf.map(|b| {
        Ok::<_, anyhow::Error>((
            b.offset_of("task_struct.signal")?,
            b.offset_of("signal_struct.live")?,
        ))
    });
    match live {
        Some(Ok((signal, live))) => {
            log::info!(
                "{}: sched_process_exit has no group_dead field: a process's exit is told by \
                 its count of live threads",
                release()
            );
            (0, signal, live)
        }
        Some(Err(e)) => {
            log::warn!(
                "{}: {e:#}: a process counts as exited when its main thread exits",
                release()
            );
            (0, 0, 0)
        }
        None => {
            log::warn!(
                "{}: no kernel BTF: a process counts as exited when its main thread exits",
                release()
            );
            (0, 0, 0)
        }
    }
}

/// Where a task's cgroup ancestors are, for a kernel whose tracing
/// programs cannot ask the helper (see `KernelLayout::task_cgroups`).
pub fn cgroup_ancestor_layout(btf: Option<&btf::Btf>) -> anyhow::Result<[u32; 4]> {
    let release = release();
    let btf = btf.ok_or_else(|| {
        anyhow!(
            "--cgroup: {release} lets no tracing program ask for a task's cgroup ancestors \
             (bpf_get_current_ancestor_cgroup_id), and has no BTF to find them: scope by \
             --netns, or trace every process"
        )
    })?;
    let mut offsets = [0; 4];
    for (slot, path) in offsets.iter_mut().zip([
        "task_struct.cgroups",
        "css_set.dfl_cgrp",
        "cgroup.level",
        "cgroup.ancestor_ids",
    ]) {
        *slot = btf.offset_of(path).with_context(|| {
            format!(
                "--cgroup: {release} lets no tracing program ask for a task's cgroup \
                 ancestors (bpf_get_current_ancestor_cgroup_id), and its BTF has no {path}"
            )
        })?;
    }
    Ok(offsets)
}

/// `Linux 5.10.0-32-cloud-amd64`: names the kernel in a warning about
/// what it lacks.
pub fn release() -> String {
    format!("Linux {}", uname_release())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_major_and_minor_of_a_release() {
        assert_eq!(version_of("5.10.0-32-cloud-amd64"), Some((5, 10)));
        assert_eq!(version_of("6.12.74+deb12-cloud-amd64"), Some((6, 12)));
        assert_eq!(version_of("2.6.78"), Some((2, 6)));
        assert_eq!(version_of("4.19"), Some((4, 19)));
        assert_eq!(version_of("garbage"), None);
        assert!(version_of("5.4.0").unwrap() < MINIMUM);
        assert!(version_of("5.10.0").unwrap() >= MINIMUM);
    }

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
