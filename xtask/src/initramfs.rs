//! An initramfs (a "newc" cpio archive) holding files of this machine at
//! the same paths: a guest kernel then runs our binaries as they were
//! built, with the libraries they link, and nothing else.
//!
//! Paths are mirrored as the host resolves them: every symbolic link met
//! on the way to a file (Debian's /lib -> usr/lib, python3 -> python3.11)
//! is a link in the archive too, and the file's content sits at its real
//! path. Directories come before what they hold, as the kernel's unpacker
//! wants.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufWriter, Write as _},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Component, Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

enum Entry {
    Dir,
    /// A copy of this host file, with its permissions.
    File(PathBuf),
    Symlink(PathBuf),
    CharDevice {
        major: u32,
        minor: u32,
    },
}

#[derive(Default)]
pub struct Initramfs {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Initramfs {
    pub fn new() -> Self {
        let mut me = Self::default();
        for dir in ["/dev", "/proc", "/sys", "/tmp", "/run", "/etc"] {
            me.dir(Path::new(dir));
        }
        // The kernel opens it for init's stdin, stdout and stderr.
        me.entries.insert(
            "/dev/console".into(),
            Entry::CharDevice { major: 5, minor: 1 },
        );
        me
    }

    fn dir(&mut self, path: &Path) {
        for a in path.ancestors() {
            if a == Path::new("/") {
                break;
            }
            self.entries.entry(a.to_path_buf()).or_insert(Entry::Dir);
        }
    }

    /// Adds `path` as the host resolves it, and for an executable or shared
    /// library the libraries it loads (as `ldd` lists them).
    pub fn add_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let real = self.add_links_to(path)?;
        if self.entries.contains_key(&real) {
            return Ok(());
        }
        if let Some(parent) = real.parent() {
            self.dir(parent);
        }
        self.entries.insert(real.clone(), Entry::File(real.clone()));
        if is_elf(&real) {
            for lib in linked_libraries(&real)? {
                self.add_file(&lib)?;
            }
        }
        Ok(())
    }

    /// Adds every file under `dir`, except directories named in `skip` and
    /// Python's optimized byte code.
    pub fn add_tree(&mut self, dir: &Path, skip: &[&str]) -> anyhow::Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if !skip
                    .iter()
                    .any(|s| name == *s || name.starts_with(&format!("{s}-")))
                {
                    self.add_tree(&path, skip)?;
                }
            } else if !(name.contains(".opt-1.") || name.contains(".opt-2.")) {
                self.add_file(&path)?;
            }
        }
        Ok(())
    }

    /// Walks `path` component by component as the kernel would, recording
    /// each symbolic link met; returns the real path.
    fn add_links_to(&mut self, path: &Path) -> anyhow::Result<PathBuf> {
        let mut resolved = PathBuf::from("/");
        let mut rest: Vec<_> = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .map(|c| c.as_os_str().to_owned())
            .collect();
        rest.reverse();
        let mut hops = 0;
        while let Some(part) = rest.pop() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            let next = resolved.join(&part);
            let meta = fs::symlink_metadata(&next)
                .with_context(|| format!("{} (for {})", next.display(), path.display()))?;
            if !meta.file_type().is_symlink() {
                resolved = next;
                continue;
            }
            hops += 1;
            if hops > 40 {
                bail!("too many symbolic links in {}", path.display());
            }
            let target = fs::read_link(&next)?;
            self.dir(&resolved);
            self.entries
                .insert(next.clone(), Entry::Symlink(target.clone()));
            if target.is_absolute() {
                resolved = PathBuf::from("/");
            }
            let mut parts: Vec<_> = target
                .components()
                .filter_map(|c| match c {
                    Component::Normal(p) => Some(p.to_owned()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                })
                .collect();
            parts.reverse();
            rest.extend(parts);
        }
        Ok(resolved)
    }

    /// Writes the archive; returns its size in bytes.
    pub fn write(&self, out: &Path) -> anyhow::Result<u64> {
        let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = BufWriter::new(file);
        let mut written = 0u64;
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let name = path.strip_prefix("/").unwrap_or(path);
            let (mode, data, rdev): (u32, Vec<u8>, (u32, u32)) = match entry {
                Entry::Dir => (0o040_755, Vec::new(), (0, 0)),
                Entry::Symlink(target) => (
                    0o120_777,
                    target.as_os_str().as_encoded_bytes().to_vec(),
                    (0, 0),
                ),
                Entry::File(src) => {
                    let perm = fs::metadata(src)?.permissions().mode() & 0o7777;
                    let data =
                        fs::read(src).with_context(|| format!("reading {}", src.display()))?;
                    (0o100_000 | perm, data, (0, 0))
                }
                Entry::CharDevice { major, minor } => (0o020_600, Vec::new(), (*major, *minor)),
            };
            written += write_entry(&mut w, ino as u32 + 1, name, mode, &data, rdev)?;
        }
        written += write_entry(&mut w, 0, Path::new("TRAILER!!!"), 0, &[], (0, 0))?;
        w.flush()?;
        Ok(written)
    }
}

fn write_entry(
    w: &mut impl std::io::Write,
    ino: u32,
    name: &Path,
    mode: u32,
    data: &[u8],
    rdev: (u32, u32),
) -> anyhow::Result<u64> {
    let name = name.as_os_str().as_encoded_bytes();
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    let mut header = String::from("070701");
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    w.write_all(header.as_bytes())?;
    w.write_all(name)?;
    w.write_all(&[0])?;
    let mut n = 110 + name.len() as u64 + 1;
    let pad = |n: u64| (4 - n % 4) % 4;
    w.write_all(&vec![0; pad(n) as usize])?;
    n += pad(n);
    w.write_all(data)?;
    n += data.len() as u64;
    w.write_all(&vec![0; pad(n) as usize])?;
    n += pad(n);
    Ok(n)
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
        && fs::metadata(path).is_ok_and(|m| m.size() > 64)
}

/// The libraries `ldd` says `path` loads (none for a static executable).
fn linked_libraries(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(path)
        .output()
        .context("running ldd")?;
    // A static executable: ldd says so and exits 1.
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.trim(),
                None => l,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_padded_to_four_bytes_with_its_name_and_data() {
        let mut out = Vec::new();
        let n = write_entry(&mut out, 1, Path::new("ab"), 0o100_644, b"xyz", (0, 0)).unwrap();
        assert_eq!(n as usize, out.len());
        // 110-byte header + "ab\0" = 113, padded to 116; 3 bytes of data, to 120.
        assert_eq!(out.len(), 120);
        assert!(out.starts_with(b"070701"));
        assert_eq!(&out[110..113], b"ab\0");
        assert_eq!(&out[116..119], b"xyz");
    }

    #[test]
    fn links_on_the_way_to_a_file_are_kept() {
        let dir = std::env::temp_dir().join(format!("xtask-initramfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("usr/lib")).unwrap();
        fs::write(dir.join("usr/lib/libx.so.1.2"), b"x").unwrap();
        // As Debian's merged /usr, and a library's version link.
        std::os::unix::fs::symlink("usr/lib", dir.join("lib")).unwrap();
        std::os::unix::fs::symlink("libx.so.1.2", dir.join("usr/lib/libx.so.1")).unwrap();
        let mut archive = Initramfs::new();
        let real = archive.add_links_to(&dir.join("lib/libx.so.1")).unwrap();
        assert_eq!(real, dir.join("usr/lib/libx.so.1.2"));
        assert!(
            matches!(archive.entries.get(&dir.join("lib")), Some(Entry::Symlink(t)) if t == Path::new("usr/lib"))
        );
        assert!(matches!(
            archive.entries.get(&dir.join("usr/lib/libx.so.1")),
            Some(Entry::Symlink(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
