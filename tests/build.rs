//! Builds the C fixtures with gcc: `resolve` (dynamically linked, as most
//! programs are) and `resolve-static` (static and stripped: no libc to find,
//! no symbols to probe).
use std::{env, path::PathBuf, process::Command};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src = "fixtures/resolve.c";
    println!("cargo:rerun-if-changed={src}");
    for (name, extra) in [
        ("resolve", &[][..]),
        ("resolve-static", &["-static", "-s"][..]),
    ] {
        let bin = out.join(name);
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
