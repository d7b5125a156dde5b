//! webb's kernel programs. Built for the BPF target by node-agent's build.rs
//! (aya-build); on the host this binary is empty.
//!
//! One program per file under `programs/`; the maps and the per-packet flow
//! logic they share live in `programs.rs`.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// Inline assembly for misaligned packet loads (see `read_packet`); the
// kernel programs are built with the nightly toolchain anyway.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
// Map keys are passed by reference on purpose: by value, each 40-byte flow
// key would be copied onto the 512-byte BPF stack again.
#![allow(clippy::needless_borrows_for_generic_args)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program whose panic path is reachable.
    unsafe { core::hint::unreachable_unchecked() }
}

/// GPL-compatible, as bpf_probe_read_kernel and the tracepoint need.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
