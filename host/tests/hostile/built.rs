//! Builds the hostile plugin crates in this folder (once per test binary) for `wasm32-wasip2`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds the hostile workspace once per test binary; returns the directory of the `.wasm`s.
pub fn hostile_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = root.join("target/wasm-hostile");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root.join("host/tests/hostile/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("run cargo for the hostile plugins");
        assert!(status.success(), "building the hostile plugins failed");
        target.join("wasm32-wasip2/release")
    })
}

/// The component built from the crate `hostile-{crate_name}`.
pub fn wasm_path(crate_name: &str) -> PathBuf {
    hostile_dir().join(format!("hostile_{}.wasm", crate_name.replace('-', "_")))
}
