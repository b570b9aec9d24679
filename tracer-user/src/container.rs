//! Which container and Kubernetes pod a process runs in, from its cgroup
//! path (/proc/PID/cgroup): the forms Docker, containerd and CRI-O give,
//! under systemd's cgroup driver (`...-<id>.scope`, `...pod<uid>.slice`) or
//! cgroupfs (`/docker/<id>`, `/kubepods/<qos>/pod<uid>/<id>`).

use std::path::{Path, PathBuf};

/// A process's container, as far as its cgroup tells.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerInfo {
    /// The container id (64 hex digits).
    pub id: Option<String>,
    /// The Kubernetes pod UID, with dashes.
    pub pod_uid: Option<String>,
}

impl ContainerInfo {
    /// The id as `docker ps` and `crictl ps` show it: 12 digits.
    pub fn short_id(&self) -> Option<&str> {
        self.id.as_deref().map(|id| &id[..12])
    }
}

/// Labels a person may add to the metrics: they multiply the series by the
/// number of containers, so they are off unless asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExtraLabel {
    Container,
    Pod,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads a cgroup path (the part after `0::` in /proc/PID/cgroup).
pub fn from_cgroup_path(path: &str) -> ContainerInfo {
    let mut info = ContainerInfo::default();
    for part in path.split('/') {
        let stem = part
            .strip_suffix(".scope")
            .or_else(|| part.strip_suffix(".slice"))
            .unwrap_or(part);
        // docker-<id>, cri-containerd-<id>, crio-<id>, or the bare id.
        let last = stem.rsplit('-').next().unwrap_or(stem);
        if is_container_id(last) {
            info.id = Some(last.to_ascii_lowercase());
        }
        // kubepods-besteffort-pod<uid_with_underscores>, or pod<uid>.
        if let Some(at) = stem.rfind("pod") {
            let uid = stem[at + 3..].replace('_', "-");
            if uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
                info.pod_uid = Some(uid);
            }
        }
    }
    info
}

/// The cgroup v2 path of a process (`0::PATH` in /proc/PID/cgroup).
pub fn cgroup_path_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// A process's container and its cgroup v2 id (the cgroup directory's
/// inode number, as the kernel's `bpf_get_current_cgroup_id` gives it; 0
/// if unknown), from one read of /proc/PID/cgroup.
pub fn of_process_with_id(pid: u32) -> (ContainerInfo, u64) {
    use std::os::unix::fs::MetadataExt as _;
    static ROOT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let Some(path) = cgroup_path_of(pid) else {
        return Default::default();
    };
    let id = ROOT
        .get_or_init(crate::target::cgroup2_root)
        .as_ref()
        .and_then(|root| std::fs::metadata(root.join(path.trim_start_matches('/'))).ok())
        .map_or(0, |m| m.ino());
    (from_cgroup_path(&path), id)
}

/// The container of the cgroup v2 directory whose id (inode number) is
/// `cgroup_id`, found by walking the hierarchy under `cgroup2_root`: for
/// a cgroup that no process known here was seen in (node mode's row of a
/// process that moved on, or exited, before it was looked at). None when
/// no directory has that id (the cgroup is gone).
pub fn of_cgroup_id(cgroup2_root: &Path, cgroup_id: u64) -> Option<ContainerInfo> {
    use std::os::unix::fs::MetadataExt as _;
    let mut dirs = vec![cgroup2_root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // Not followed: cgroupfs has no links, and a test's tree could.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            let path = entry.path();
            if meta.ino() == cgroup_id {
                let relative = path.strip_prefix(cgroup2_root).ok()?;
                return Some(from_cgroup_path(&format!("/{}", relative.display())));
            }
            dirs.push(path);
        }
    }
    None
}

/// `--container ID`: the cgroup v2 directory of the container whose id
/// starts with `id` (at least 12 hex digits), found from a process in it.
pub fn cgroup_dir_of_container(id: &str, cgroup2_root: &Path) -> Result<PathBuf, String> {
    let want = id.to_ascii_lowercase();
    if want.len() < 12 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "--container {id}: give the container id, at least 12 hex digits (docker ps, crictl ps)"
        ));
    }
    let mut found: Option<String> = None;
    for entry in std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(path) = cgroup_path_of(pid) else {
            continue;
        };
        if from_cgroup_path(&path)
            .id
            .is_some_and(|cid| cid.starts_with(&want))
        {
            found = Some(path);
            break;
        }
    }
    let path = found.ok_or_else(|| {
        format!("--container {id}: no running process is in a container with that id")
    })?;
    Ok(cgroup2_root.join(path.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_is_found_by_its_directory_s_inode_number() {
        use std::os::unix::fs::MetadataExt as _;
        let root = std::env::temp_dir().join(format!("tracer-cgroup-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let inner = root.join(format!("system.slice/docker-{ID}.scope"));
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::create_dir_all(root.join("user.slice/user-0.slice")).unwrap();
        let ino = std::fs::metadata(&inner).unwrap().ino();
        let found = of_cgroup_id(&root, ino);
        let outer = std::fs::metadata(root.join("user.slice")).unwrap().ino();
        let plain = of_cgroup_id(&root, outer);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found.and_then(|c| c.id).as_deref(), Some(ID));
        assert_eq!(plain, Some(ContainerInfo::default()));
        assert_eq!(of_cgroup_id(&root, ino), None, "gone with its tree");
    }

    const ID: &str = "3f4e1b2c9d8a7f6e5d4c3b2a19081726354a5b6c7d8e9f0a1b2c3d4e5f607182";
    const UID: &str = "8d2f1c3e-4b5a-6789-0abc-def012345678";

    #[test]
    fn reads_the_container_and_pod_of_each_runtime() {
        let uid_ = UID.replace('-', "_");
        for (path, pod) in [
            (format!("/system.slice/docker-{ID}.scope"), false),
            (format!("/docker/{ID}"), false),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{ID}.scope"
                ),
                true,
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/crio-{ID}.scope"
                ),
                true,
            ),
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), true),
        ] {
            let info = from_cgroup_path(&path);
            assert_eq!(info.id.as_deref(), Some(ID), "{path}");
            assert_eq!(info.short_id(), Some(&ID[..12]));
            assert_eq!(info.pod_uid.as_deref(), pod.then_some(UID), "{path}");
        }
    }

    #[test]
    fn a_process_outside_containers_has_none() {
        for path in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/sshd.service",
        ] {
            assert_eq!(from_cgroup_path(path), ContainerInfo::default(), "{path}");
        }
    }
}
