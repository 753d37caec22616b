//! Runs `scripts/bootstrap.sh` before `demo` and `test` when something it installs is missing, so
//! the README's two commands work on a fresh machine. The check (`bootstrap.sh --check`) costs well
//! under a second and the script keeps the one list of what is needed; xtask itself builds without
//! any of it (it does not depend on firewall-agent, whose build.rs needs bpf-linker).
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::util::workspace_root;

/// Bootstraps the machine unless `bootstrap.sh --check` finds everything in place.
pub fn ensure() -> anyhow::Result<()> {
    if script(Some("--check"))?.success() {
        return Ok(());
    }
    eprintln!("==> bootstrap: scripts/bootstrap.sh (something it installs is missing)");
    let status = script(None)?;
    if !status.success() {
        bail!("scripts/bootstrap.sh failed ({status})");
    }
    Ok(())
}

fn script(arg: Option<&str>) -> anyhow::Result<std::process::ExitStatus> {
    let root = workspace_root();
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/bootstrap.sh"))
        .args(arg)
        .current_dir(&root);
    cmd.status().context("running scripts/bootstrap.sh")
}
