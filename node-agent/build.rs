//! Builds the kernel programs (node-agent-ebpf) for the BPF target with
//! aya-build and puts the object in OUT_DIR, where `datapath.rs` embeds it.
//!
//! `AYA_BUILD_SKIP=1` (for clippy and `cargo check`) writes an empty
//! placeholder instead; an agent built that way refuses to start.

use std::{env, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest.join("../node-agent-ebpf");
    let ebpf_dir = ebpf_dir.canonicalize().unwrap_or(ebpf_dir);
    // A stale object would mean a silent struct-layout mismatch with the
    // shared types, so any change under the eBPF crate rebuilds it.
    println!("cargo:rerun-if-changed={}", ebpf_dir.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_dir.join("Cargo.toml").display()
    );
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join("webb-datapath");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        std::fs::write(&object, b"")?;
        return Ok(());
    }

    // scripts/setup.sh caches bpf-linker here; use it without asking every
    // developer to edit PATH.
    if let Some(home) = env::var_os("HOME") {
        let cache = env::var_os("WEBB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(home).join(".cache/webb"));
        let bin = cache.join("bin");
        if bin.join("bpf-linker").exists() {
            let path = env::var_os("PATH").unwrap_or_default();
            let mut paths = vec![bin];
            paths.extend(env::split_paths(&path));
            // SAFETY: build scripts are single-threaded at this point.
            unsafe { env::set_var("PATH", env::join_paths(paths)?) };
        }
    }
    let has_linker = env::var_os("PATH")
        .is_some_and(|p| env::split_paths(&p).any(|d| d.join("bpf-linker").exists()));
    if !has_linker {
        anyhow::bail!(
            "bpf-linker is not installed: run `bash scripts/setup.sh` once (it builds \
             bpf-linker into ~/.cache/webb), or set AYA_BUILD_SKIP=1 to check without the \
             kernel programs"
        );
    }
    let ebpf_dir_str = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "node-agent-ebpf",
            root_dir: ebpf_dir_str,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )?;
    Ok(())
}
