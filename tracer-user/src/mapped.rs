//! The files a process maps, from /proc/PID/maps, and how to open the very
//! file a process mapped.
//!
//! The path /proc/PID/maps shows is written for the reader: a process in a
//! chroot shows `/srv/root/lib/...`, one in another mount namespace a path
//! of its own root, and a path may since have been replaced or deleted. So
//! a mapped file is opened by its identity: /proc/PID/map_files/START-END
//! is the mapping itself (given CAP_SYS_ADMIN); else a path is used only if
//! it leads to the same device and inode that maps names.

use std::{collections::HashMap, fs, os::unix::fs::MetadataExt as _, path::PathBuf};

use anyhow::bail;

use crate::elf;

/// A file mapped executable by a process, from /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub path: String,
    pub dev: u64,
    pub inode: u64,
    /// Where the start of the file (offset 0) is mapped, if it is.
    pub base: Option<u64>,
    /// The executable ranges: (start, end, file offset of start).
    pub exec: Vec<(u64, u64, u64)>,
}

impl Mapping {
    /// Whether `addr` is in one of its executable ranges.
    pub fn contains(&self, addr: u64) -> bool {
        self.exec.iter().any(|&(s, e, _)| addr >= s && addr < e)
    }

    /// A path that opens this very file in process `pid` (see the module's
    /// note): the mapping itself, else the path through the process's root
    /// or as we see it, whichever is the same file; else, for a file system
    /// that shows another device through a path than in maps (overlayfs),
    /// the path through the process's root.
    pub fn file_path(&self, pid: u32) -> anyhow::Result<PathBuf> {
        if let Some(&(start, end, _)) = self.exec.first() {
            let mapped = PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"));
            if fs::metadata(&mapped).is_ok() {
                return Ok(mapped);
            }
        }
        let through_root = PathBuf::from(format!("/proc/{pid}/root{}", self.path));
        let plain = PathBuf::from(&self.path);
        for candidate in [&through_root, &plain] {
            if fs::metadata(candidate)
                .is_ok_and(|m| device_number(&m) == self.dev && m.ino() == self.inode)
            {
                return Ok(candidate.clone());
            }
        }
        if fs::metadata(&through_root).is_ok_and(|m| m.is_file()) {
            return Ok(through_root);
        }
        bail!(
            "cannot open {} as PID {pid} mapped it (device {:x}, inode {})",
            self.path,
            self.dev,
            self.inode
        )
    }

    /// The file opened, with the path it was opened by.
    pub fn open(&self, pid: u32) -> anyhow::Result<(PathBuf, fs::File)> {
        let path = self.file_path(pid)?;
        let file = fs::File::open(&path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        Ok((path, file))
    }
}

/// A file's device as /proc/PID/maps writes it (the kernel's major << 20 |
/// minor).
pub fn device_number(meta: &fs::Metadata) -> u64 {
    (u64::from(libc::major(meta.dev())) << 20) | u64::from(libc::minor(meta.dev()))
}

/// What to add to an address in the file (its ELF virtual address) to get
/// the address in the process: where offset 0 is mapped, minus the virtual
/// address the first loadable segment asks for.
pub fn load_bias(pid: u32, m: &Mapping) -> Option<u64> {
    m.base?;
    bias_of(m, elf::first_load_vaddr(&m.file_path(pid).ok()?).ok()?)
}

/// `load_bias`, given the file's first loadable segment address.
pub fn bias_of(m: &Mapping, first_vaddr: u64) -> Option<u64> {
    Some(m.base?.wrapping_sub(first_vaddr))
}

/// The executable file mappings of a process.
pub fn executable_mappings(pid: u32) -> Vec<Mapping> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    parse_maps(&text)
}

fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut files: HashMap<(u64, u64), Mapping> = HashMap::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(off), Some(dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path: Vec<&str> = f.collect();
        if path.is_empty() || !path[0].starts_with('/') {
            continue;
        }
        let (Some((start, end)), Some((major, minor))) =
            (range.split_once('-'), dev.split_once(':'))
        else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(off), Ok(major), Ok(minor), Ok(inode)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(off, 16),
            u64::from_str_radix(major, 16),
            u64::from_str_radix(minor, 16),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        let m = files
            .entry((major << 20 | minor, inode))
            .or_insert_with(|| Mapping {
                path: path.join(" "),
                dev: major << 20 | minor,
                inode,
                base: None,
                exec: Vec::new(),
            });
        if off == 0 && m.base.is_none_or(|b| start < b) {
            m.base = Some(start);
        }
        if perms.contains('x') {
            m.exec.push((start, end, off));
        }
    }
    let mut out: Vec<Mapping> = files.into_values().filter(|m| !m.exec.is_empty()).collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// glibc's dynamic loader (musl's is its libc, found by `is_libc`).
pub fn is_dynamic_loader(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with("ld-linux")
}

/// glibc's libc.so.6 (or libc-2.x.so), or musl's loader, which is its libc.
pub fn is_libc(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with("libc.so")
        || (base.starts_with("libc-") && base.ends_with(".so"))
        || base.starts_with("ld-musl-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_file_opens_as_the_file_mapped() {
        let pid = std::process::id();
        let maps = executable_mappings(pid);
        let me = std::fs::canonicalize("/proc/self/exe").unwrap();
        let exe = maps
            .iter()
            .find(|m| std::path::Path::new(&m.path) == me)
            .unwrap_or_else(|| panic!("{} not in {maps:?}", me.display()));
        let path = exe.file_path(pid).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((device_number(&meta), meta.ino()), (exe.dev, exe.inode));
    }

    #[test]
    fn finds_executable_file_mappings_and_libc() {
        let maps = "\
55d0c0a00000-55d0c0a28000 r--p 00000000 fe:01 393231  /usr/bin/python3.11
55d0c0a28000-55d0c0d00000 r-xp 00028000 fe:01 393231  /usr/bin/python3.11
7f1c2e400000-7f1c2e428000 r--p 00000000 fe:01 264070  /usr/lib/x86_64-linux-gnu/libc.so.6
7f1c2e428000-7f1c2e59d000 r-xp 00028000 fe:01 264070  /usr/lib/x86_64-linux-gnu/libc.so.6
7f1c2e800000-7f1c2e801000 r-xp 00000000 00:00 0       [vdso]
7f1c2e900000-7f1c2e901000 r-xp 00000000 00:1f 77      /tmp/with space/lib.so (deleted)
";
        let m = parse_maps(maps);
        assert_eq!(m.len(), 3, "{m:?}");
        let libc = m.iter().find(|m| is_libc(&m.path)).unwrap();
        assert_eq!((libc.dev, libc.inode), ((0xfe << 20) | 1, 264070));
        assert_eq!(libc.base, Some(0x7f1c2e400000));
        assert_eq!(libc.exec, vec![(0x7f1c2e428000, 0x7f1c2e59d000, 0x28000)]);
        assert!(
            m.iter()
                .any(|m| m.path == "/tmp/with space/lib.so (deleted)")
        );
        assert!(is_libc("/lib/ld-musl-x86_64.so.1"));
        assert!(is_libc("/lib/x86_64-linux-gnu/libc-2.31.so"));
        assert!(!is_libc("/usr/lib/libcrypto.so.3"));
        assert!(is_dynamic_loader(
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
        ));
    }
}
