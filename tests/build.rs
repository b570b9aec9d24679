//! Builds the C fixtures with gcc:
//! - `resolve` (dynamically linked, as most programs are) and
//!   `resolve-static` (static and stripped: no libc to find, no symbols);
//! - `tls-client` (OpenSSL called directly);
//! - `deep-pie`, `deep-nopie`, `deep-stripped` with `libdeep.so`: a call
//!   five frames deep through the program and a library, without frame
//!   pointers;
//! - `bench-loop`: the benchmark's workload (`cargo xtask bench`).
use std::{env, path::PathBuf, process::Command};

fn gcc(args: &[&str]) {
    let status = Command::new("gcc")
        .args(args)
        .status()
        .expect("gcc (the tests' C fixtures need it)");
    assert!(status.success(), "gcc {args:?} failed");
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let o = |name: &str| out.join(name).to_str().expect("utf-8 path").to_string();
    for src in [
        "fixtures/resolve.c",
        "fixtures/tls_client.c",
        "fixtures/deep.c",
        "fixtures/libdeep.c",
        "fixtures/bench_loop.c",
    ] {
        println!("cargo:rerun-if-changed={src}");
    }
    // Libraries after the sources, as the linker wants them.
    gcc(&["-O2", "-Wall", "-o", &o("resolve"), "fixtures/resolve.c"]);
    gcc(&[
        "-O2",
        "-Wall",
        "-static",
        "-s",
        "-o",
        &o("resolve-static"),
        "fixtures/resolve.c",
    ]);
    // Static with its symbols: getaddrinfo is in the executable itself.
    gcc(&[
        "-O2",
        "-Wall",
        "-static",
        "-o",
        &o("resolve-static-syms"),
        "fixtures/resolve.c",
    ]);
    gcc(&[
        "-O2",
        "-Wall",
        "-o",
        &o("tls-client"),
        "fixtures/tls_client.c",
        "-lssl",
        "-lcrypto",
    ]);
    let nofp = [
        "-O2",
        "-g",
        "-Wall",
        "-fomit-frame-pointer",
        "-fno-optimize-sibling-calls",
    ];
    let libdeep = o("libdeep.so");
    let mut lib = nofp.to_vec();
    lib.extend(["-shared", "-fPIC", "-o", &libdeep, "fixtures/libdeep.c"]);
    gcc(&lib);
    let rpath = format!("-Wl,-rpath,{}", out.display());
    let libdir = format!("-L{}", out.display());
    for (name, extra) in [
        ("deep-pie", vec!["-fPIE", "-pie"]),
        ("deep-nopie", vec!["-fno-PIE", "-no-pie"]),
        ("deep-stripped", vec!["-fPIE", "-pie", "-s"]),
    ] {
        let bin = o(name);
        let mut args = nofp.to_vec();
        args.extend(extra);
        args.extend(["-o", &bin, "fixtures/deep.c", &libdir, "-ldeep", &rpath]);
        gcc(&args);
    }
    gcc(&[
        "-O2",
        "-Wall",
        "-o",
        &o("bench-loop"),
        "fixtures/bench_loop.c",
        "-lssl",
        "-lcrypto",
        "-lpthread",
    ]);
    for name in [
        "bench-loop",
        "resolve",
        "resolve-static",
        "resolve-static-syms",
        "tls-client",
        "deep-pie",
        "deep-nopie",
        "deep-stripped",
    ] {
        let var = name.to_uppercase().replace('-', "_");
        println!("cargo:rustc-env={var}_BIN={}", o(name));
    }
}
