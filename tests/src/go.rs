//! The Go fixture (fixtures/go/gofixture.go), built by the tests with each
//! Debian Go toolchain that `cargo xtask setup` installs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The lookups of `host` in a report, slowest first.
pub fn lookups_of<'a>(report: &'a serde_json::Value, host: &str) -> Vec<&'a serde_json::Value> {
    super::rows(report, "slowest_lookups", |l| l["host"] == host)
}

/// The Go versions the tracer supports, by minor: Debian 12's own Go and
/// the later ones of its backports.
pub const GO_MINORS: [u32; 4] = [19, 21, 22, 23];

/// How the fixture is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoBuild {
    /// `CGO_ENABLED=0`, stripped (`-ldflags='-s -w'`): a static binary
    /// with no symbol table, whose resolver is Go's own.
    PureStripped,
    /// With cgo, unstripped: it can resolve through libc's getaddrinfo
    /// (`GODEBUG=netdns=cgo`).
    Cgo,
}

/// Builds the fixture with Go 1.`minor` (once per source change) and
/// returns the executable.
pub fn go_fixture(minor: u32, build: GoBuild) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/go/gofixture.go");
    let dir = super::bin_dir().join("go-fixtures");
    let out = dir.join(format!("gofixture-1.{minor}-{build:?}"));
    // Built already, and not older than its source (a kernel matrix guest
    // has the binary and neither the source nor Go).
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&out).is_some() && modified(&out) >= modified(&src) {
        return out;
    }
    let go = format!("/usr/lib/go-1.{minor}/bin/go");
    assert!(
        Path::new(&go).exists(),
        "{go} missing: `cargo xtask setup` installs Debian's golang-1.{minor}-go"
    );
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(&go);
    cmd.arg("build").arg("-o").arg(&out);
    match build {
        GoBuild::PureStripped => {
            cmd.arg("-ldflags=-s -w").env("CGO_ENABLED", "0");
        }
        GoBuild::Cgo => {
            cmd.env("CGO_ENABLED", "1");
        }
    }
    let status = cmd
        .arg(&src)
        .env("GOCACHE", dir.join(format!("cache-1.{minor}")))
        .env("GOPATH", dir.join("gopath"))
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .status()
        .unwrap_or_else(|e| panic!("{go}: {e}"));
    assert!(status.success(), "{go} build of {} failed", src.display());
    out
}
