//! Builds the C fixtures with gcc: `resolve` (dynamically linked, as most
//! programs are), `resolve-static` (static and stripped: no libc to find,
//! no symbols to probe) and `tls-client` (OpenSSL called directly).
use std::{env, path::PathBuf, process::Command};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    for (name, src, extra) in [
        ("resolve", "fixtures/resolve.c", &[][..]),
        (
            "resolve-static",
            "fixtures/resolve.c",
            &["-static", "-s"][..],
        ),
        (
            "tls-client",
            "fixtures/tls_client.c",
            &["-lssl", "-lcrypto"][..],
        ),
    ] {
        println!("cargo:rerun-if-changed={src}");
        let bin = out.join(name);
        // Libraries after the source, as the linker wants them.
        let status = Command::new("gcc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&bin)
            .arg(src)
            .args(extra)
            .status()
            .expect("gcc (the tests' C fixtures need it)");
        assert!(status.success(), "gcc failed for {name}");
        let var = name.to_uppercase().replace('-', "_");
        println!("cargo:rustc-env={var}_BIN={}", bin.display());
    }
}
