//! Records the compiler and target for `webb version`.

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().nth(1).map(|n| format!("rustc{n}")))
        .unwrap_or_else(|| "rustc".into());
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    println!("cargo:rustc-env=WEBB_RUSTC_VERSION={version}");
    println!("cargo:rustc-env=WEBB_TARGET={os}/{arch}");
    println!("cargo:rerun-if-changed=build.rs");
}
