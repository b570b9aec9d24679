//! What only user space can find or choose, told to the eBPF programs
//! through the `KERNEL_LAYOUT` map.

use anyhow::{Context as _, anyhow, bail};
use aya::Ebpf;
use tracer_common::KernelLayout;

use super::ProbeOptions;
use crate::{btf, kernel};

/// Tells the programs what only user space can find or choose: kernel
/// struct offsets from BTF (a Python thread state is found by its thread's
/// fs base; node mode's scopes; what stands in for what this kernel lacks,
/// see `kernel`), and whether to take stacks at all.
pub(super) fn set_kernel_layout(
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
                } | if options.http {
                    0
                } else {
                    tracer_common::LAYOUT_NO_HTTP
                } | if options.http_tls {
                    tracer_common::LAYOUT_HTTP_TLS
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
