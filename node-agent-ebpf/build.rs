//! Link options for the kernel programs. bpf-linker does the final code
//! generation for the BPF target, so how memory is copied and loaded is
//! decided here, not by rustc's flags (which aya-build sets itself).
//!
//! - `--disable-memory-builtins`: without it bpf-linker exports `memset`
//!   and `memcpy`, and LLVM then calls them (aya-ebpf's byte loops) for
//!   every struct or array it zeroes or copies, even ten bytes: 5
//!   instructions a byte on every packet. Without the export LLVM expands
//!   them into a few word stores, and a copy it cannot expand fails the
//!   build instead of slowing the datapath.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("bpf") {
        println!("cargo:rustc-link-arg-bins=--disable-memory-builtins");
        println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
    }
}
