//! Builds the default policy plugins (`plugins/components`, a workspace of its own) for
//! `wasm32-wasip2` with a nested cargo, and copies the three components to `OUT_DIR`, where
//! `src/policy/builtin.rs` embeds them as `builtin:NAME`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

const TARGET: &str = "wasm32-wasip2";

/// The plugin crates: the folder (and builtin name) and the artifact cargo produces.
const PLUGINS: &[(&str, &str)] = &[
    ("most-caught-up", "most_caught_up.wasm"),
    ("stagger", "stagger.wasm"),
    ("replicas-first", "replicas_first.wasm"),
];

/// Variables cargo sets for this build script (or a user sets for the outer build) that would
/// leak into the nested build: host rustflags, the outer target and target directory, wrappers
/// such as clippy-driver, and this package's own build-script metadata.
const DROPPED_ENV: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
    "RUSTDOC",
];
const DROPPED_ENV_PREFIXES: &[&str] = &["CARGO_FEATURE_", "CARGO_CFG_", "CARGO_PKG_", "DEP_"];

fn main() {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().unwrap_or(&manifest_dir).to_path_buf();
    let components = root.join("plugins/components");
    let out_dir = PathBuf::from(env_var("OUT_DIR"));

    rerun_if_changed(&root);
    check_target_installed();

    let target_dir = root.join("target/wasm-plugins");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(components.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&components);
    // CARGO_MAKEFLAGS stays: the nested cargo then shares this build's jobserver instead of
    // starting as many jobs again.
    for name in DROPPED_ENV {
        build.env_remove(name);
    }
    for (name, _) in env::vars_os() {
        let name = name.to_string_lossy();
        if DROPPED_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) {
            build.env_remove(name.as_ref());
        }
    }
    let output = match build.output() {
        Ok(output) => output,
        Err(e) => fail(
            &format!("could not run cargo to build the default plugins: {e}"),
            None,
        ),
    };
    if !output.status.success() {
        fail(
            &format!(
                "building the default plugins in {} for {TARGET} failed ({})",
                components.display(),
                output.status
            ),
            Some(&String::from_utf8_lossy(&output.stderr)),
        );
    }

    let artifacts = target_dir.join(TARGET).join("release");
    for (name, file) in PLUGINS {
        let from = artifacts.join(file);
        let to = out_dir.join(format!("{name}.wasm"));
        if let Err(e) = fs::copy(&from, &to) {
            fail(
                &format!("could not copy {} to {}: {e}", from.display(), to.display()),
                None,
            );
        }
    }
}

/// Everything the components are built from.
fn rerun_if_changed(root: &Path) {
    let components = root.join("plugins/components");
    let mut paths = vec![
        root.join("wit"),
        components.join("Cargo.toml"),
        components.join("Cargo.lock"),
        components.join(".cargo/config.toml"),
        root.join("plugins/sdk/src"),
        root.join("plugins/sdk/Cargo.toml"),
    ];
    for (name, _) in PLUGINS {
        paths.push(components.join(name).join("Cargo.toml"));
        paths.push(components.join(name).join("src"));
    }
    for path in paths {
        println!("cargo::rerun-if-changed={}", path.display());
    }
}

/// Stop with a clear message when the standard library for the wasm target is missing.
fn check_target_installed() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let Some(sysroot) = sysroot else {
        fail(&format!("could not run `{rustc} --print sysroot`"), None);
    };
    if !sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        fail(
            &format!(
                "the {TARGET} target is missing: run `rustup target add {TARGET}` \
                 (the default policy plugins are built for it and embedded in kvpilot)"
            ),
            None,
        );
    }
}

fn env_var(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| fail(&format!("cargo did not set {name}"), None))
}

/// Fail the build: the message as a cargo error, the nested build's output on stderr.
fn fail(message: &str, details: Option<&str>) -> ! {
    println!("cargo::error={message}");
    if let Some(details) = details {
        eprintln!("{details}");
    }
    exit(1)
}
