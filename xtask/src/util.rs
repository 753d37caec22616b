//! Small helpers shared by the xtask subcommands.
use std::{path::PathBuf, process::Command};

use anyhow::Context as _;

/// `cargo`, as invoked by this xtask (respects `$CARGO`).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub use bulkhead_tests::is_root;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The cargo target directory (respects `$CARGO_TARGET_DIR`).
pub fn target_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(d));
    }
    let root = workspace_root();
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(&root)
        .output()
        .context("cargo metadata")?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata output")?;
    Ok(v["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target")))
}
