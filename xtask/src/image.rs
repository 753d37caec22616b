//! `cargo xtask image`: the agent's container image, built offline with podman.
//!
//! The binary is a static musl release build (`static-pie`, no shared library at all), so the
//! final image is `FROM scratch` plus that one file (deploy/image/Containerfile): nothing is
//! pulled, and the layout (`/usr/local/bin/firewall-agent`, same entrypoint) is the root
//! Dockerfile's. Static rather than glibc plus libraries copied in from `ldd`: one file to ship,
//! no loader path baked into the image, and nothing that depends on the build host's glibc.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::util::{cargo, target_dir, workspace_root};

/// The tag `deploy/daemonset.yaml` names (`image:`), under podman's local prefix.
pub const TAG: &str = "localhost/bulkhead/firewall-agent:0.1.0";
const TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds the static release binary and the image; prints the image's size.
pub fn run() -> anyhow::Result<()> {
    let bin = build_binary()?;
    let context = target_dir()?.join("image-context");
    std::fs::create_dir_all(&context).context("image build context")?;
    std::fs::copy(&bin, context.join("firewall-agent")).context("copy the agent binary")?;
    let containerfile = workspace_root().join("deploy/image/Containerfile");
    let status = Command::new("podman")
        .args(["build", "--pull=never", "--tag", TAG, "--file"])
        .arg(&containerfile)
        .arg(&context)
        .status()
        .context("podman build (is podman installed? scripts/bootstrap.sh installs it)")?;
    if !status.success() {
        bail!("podman build failed ({status})");
    }
    let out = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Size}}", TAG])
        .output()
        .context("podman image inspect")?;
    let size = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    eprintln!("image {TAG}: {size} bytes");
    Ok(())
}

fn build_binary() -> anyhow::Result<PathBuf> {
    let status = cargo()
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "firewall-agent",
            "--target",
            TARGET,
        ])
        .current_dir(workspace_root())
        .status()
        .context("cargo build")?;
    if !status.success() {
        bail!("static build failed ({status}); the target needs `rustup target add {TARGET}`");
    }
    Ok(target_dir()?
        .join(TARGET)
        .join("release")
        .join("firewall-agent"))
}
