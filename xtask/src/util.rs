//! Small helpers shared by the xtask subcommands.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};
pub use bulkhead_tests::is_root;

/// `cargo`, as invoked by this xtask (respects `$CARGO`).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

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

/// `cargo build [--release] -p firewall-agent -p bulkhead-tests --bins`: the agent and the
/// testbed's binaries (bulkhead-pod, bulkhead-apiserver).
pub fn build_bins_command(release: bool) -> Command {
    let mut cmd = cargo();
    cmd.arg("build");
    if release {
        cmd.arg("--release");
    }
    cmd.args(["-p", "firewall-agent", "-p", "bulkhead-tests", "--bins"])
        .current_dir(workspace_root());
    cmd
}

/// Runs [`build_bins_command`]; returns the profile's output directory.
pub fn build_bins(release: bool) -> anyhow::Result<PathBuf> {
    let status = build_bins_command(release)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("build failed ({status})");
    }
    Ok(target_dir()?.join(if release { "release" } else { "debug" }))
}

/// Runs one named step of a check, failing with its name; `show` also prints the command line.
pub fn step(name: &str, cmd: &mut Command, show: bool) -> anyhow::Result<()> {
    if show {
        eprintln!("==> {name}: {cmd:?}");
    } else {
        eprintln!("==> {name}");
    }
    let status = cmd.status().with_context(|| format!("running {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}
