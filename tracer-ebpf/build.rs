//! Rebuild the eBPF object when bpf-linker changes (a new LLVM can change the
//! generated code), and say clearly when it is missing; export the global
//! functions.
fn main() {
    // Functions the verifier must check on their own (global BPF
    // functions): bpf-linker makes every symbol it does not export static.
    for f in [
        "tracer_py_thread_frame",
        "tracer_py_walk_frames",
        "tracer_dns_capture",
        "tracer_dns_question_end",
        "tracer_dns_scrub_after",
        "tracer_walk_addrinfo",
        "tracer_walk_hostent",
        "tracer_server_io",
        "tracer_tls_loop_wait",
    ] {
        println!("cargo:rustc-link-arg-bins=--export={f}");
    }
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => {
            println!("cargo:warning=bpf-linker not found on PATH: run `cargo xtask setup` first")
        }
    }
}
