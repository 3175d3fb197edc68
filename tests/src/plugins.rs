//! The test plugins in `tests/plugins/`, built from source for wasm32-wasip2 the first time a
//! test needs them (no `.wasm` is committed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A rollout-order plugin that always answers `wait` with the `reason` of its config.
pub const WAIT_ROLLOUT: &str = "wait-rollout";
/// A rollout-order plugin that fails every call: `{"mode": "error"|"trap", "message": ...}`.
pub const FAILING_ROLLOUT: &str = "failing-rollout";

fn built_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = here.join("../target/wasm-e2e");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(here.join("plugins/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("run cargo for the e2e plugins");
        assert!(status.success(), "building the e2e plugins failed");
        target.join("wasm32-wasip2/release")
    })
}

/// The absolute path of the built plugin `name` (a crate of `tests/plugins`, without `e2e-`).
pub fn wasm(name: &str) -> PathBuf {
    let path = built_dir().join(format!("e2e_{}.wasm", name.replace('-', "_")));
    std::path::absolute(&path).expect("absolute plugin path")
}
