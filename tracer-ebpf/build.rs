//! Rebuild the eBPF object when bpf-linker changes (a new LLVM can change the
//! generated code), and say clearly when it is missing.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => {
            println!("cargo:warning=bpf-linker not found on PATH: run `cargo xtask setup` first")
        }
    }
}
