//! A root file system of the tests' own: the TLS client and every library
//! it loads, copied (new inodes). Used as a chroot, a pivot_root's new
//! root (roots.rs) and a container image's contents (container.rs).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::scratch;

/// A root file system of our own: the TLS client and every library it
/// loads, copied (new inodes), with /etc/hosts and an nsswitch.conf.
pub struct Root {
    pub dir: PathBuf,
}

impl Root {
    pub fn build(tag: &str) -> Self {
        let dir = scratch(&format!("fsroot-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        let client = Path::new(env!("TLS_CLIENT_BIN"));
        let ldd = Command::new("ldd").arg(client).output().expect("ldd");
        let libs: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let path = l.split_once("=>").map_or(l, |(_, r)| r.trim());
                let path = path.split_whitespace().next()?;
                path.starts_with('/').then(|| path.to_string())
            })
            .collect();
        assert!(libs.iter().any(|l| l.contains("libssl")), "{libs:?}");
        for lib in &libs {
            copy_into(&dir, Path::new(lib), Path::new(lib));
        }
        copy_into(&dir, client, Path::new("/bin/tls-client"));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(dir.join("etc/nsswitch.conf"), "hosts: files\n").unwrap();
        // pivot_root's place for the old root.
        std::fs::create_dir_all(dir.join("old")).unwrap();
        Self { dir }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies `from` (following links) to `at` inside `root`.
fn copy_into(root: &Path, from: &Path, at: &Path) {
    let to = root.join(at.strip_prefix("/").unwrap());
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}
