//! `cargo xtask test`: the whole test suite, as CI runs it.
//!
//! Formatting and lints first (cheap), then unit tests, the offline manifest checks
//! (`cargo xtask manifests`), the fuzz targets for 30 s each (`cargo xtask fuzz`), then (as root)
//! the agent image (`cargo xtask image`) and the kernel-level end-to-end tests, which need root.
//! In CI (`CI=true`) a missing root is an error, never a silent skip.
use std::process::Command;

use anyhow::bail;
use bulkhead_tests::root::in_ci;

use crate::util::{build_bins_command, cargo, is_root, target_dir};

/// Runs every check; fails on the first failing step.
pub fn run() -> anyhow::Result<()> {
    step("format", cargo().args(["fmt", "--all", "--", "--check"]))?;
    step(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step("build", &mut build_bins_command(false))?;
    let ci = in_ci();
    if !is_root() {
        if ci {
            bail!("CI must run as root: the end-to-end tests load eBPF programs");
        }
        eprintln!(
            "\n!!!!! not root: the end-to-end tests will print SKIPPED and check nothing !!!!!\n"
        );
    }
    let agent = target_dir()?.join("debug").join("firewall-agent");
    step(
        "unit tests",
        cargo()
            .args(["test", "--workspace", "--exclude", "bulkhead-tests"])
            .env("BULKHEAD_AGENT_BIN", &agent),
    )?;
    eprintln!("==> manifests (deploy/, offline)");
    crate::manifests::run()?;
    // Bounded: a regression net (the seeds replay every crash ever fixed), not a campaign.
    crate::fuzz::run(crate::fuzz::Args {
        seconds: 30,
        target: None,
    })?;
    // The agent image for tests/tests/e2e_container.rs (podman, offline). Root only, as that
    // test is; without podman outside CI that test skips loudly, in CI this step fails.
    let podman = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if is_root() && (podman || ci) {
        crate::image::run()?;
    } else if is_root() {
        eprintln!(
            "\n!!!!! podman is missing: no agent image, e2e_container will be SKIPPED !!!!!\n"
        );
    }
    // One test at a time: each builds a simulated node and measures real connection outcomes.
    step(
        "end-to-end tests",
        cargo()
            .args(["test", "-p", "bulkhead-tests", "--", "--test-threads=1"])
            .env("BULKHEAD_AGENT_BIN", &agent),
    )?;
    Ok(())
}

fn step(name: &str, cmd: &mut Command) -> anyhow::Result<()> {
    crate::util::step(name, cmd, true)
}
