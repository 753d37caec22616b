//! `cargo xtask image`: builds the agent image offline with podman (`deploy/image/Containerfile`,
//! `FROM scratch`), tagged with the image name `deploy/daemonset.yaml` runs.
//!
//! The binary is the release build for the musl target: statically linked, so the image needs no
//! libc and no base image (nothing is pulled; there is no registry here). `ring`'s C and assembly
//! are compiled with Debian's `musl-gcc` (`musl-tools`); aya, kube and rustls build for musl
//! unchanged. The symbols are stripped (the eBPF object embedded in the binary keeps its BTF).
//! Before building, the final stage of the users' multi-stage `Dockerfile` is checked to be the
//! same as the Containerfile (COPY sources aside), so both images have one layout.
use std::{path::Path, process::Command};

use anyhow::{Context as _, ensure};

use crate::util::{cargo, target_dir, workspace_root};

fn step(name: &str, cmd: &mut Command) -> anyhow::Result<()> {
    crate::util::step(name, cmd, false)
}

/// The Rust target of the image's binary: this machine's architecture, musl.
pub fn rust_target() -> String {
    format!("{}-unknown-linux-musl", std::env::consts::ARCH)
}

/// Builds the image; returns its name.
pub fn run() -> anyhow::Result<String> {
    let root = workspace_root();
    let containerfile = root.join("deploy/image/Containerfile");
    same_final_stage(&root.join("Dockerfile"), &containerfile)?;
    let target = rust_target();
    let mut build = cargo();
    build
        .args(["build", "--release", "--locked", "-p", "firewall-agent"])
        .args(["--target", &target])
        .env(format!("CC_{}", target.replace('-', "_")), "musl-gcc");
    step("release build (static, musl)", &mut build)?;
    let binary = target_dir()?
        .join(&target)
        .join("release")
        .join("firewall-agent");
    let context = target_dir()?.join("image");
    std::fs::create_dir_all(&context).with_context(|| format!("creating {}", context.display()))?;
    let mut strip = Command::new("strip");
    strip
        .arg("-o")
        .arg(context.join("firewall-agent"))
        .arg(&binary);
    step("strip", &mut strip)?;
    let name = image_name(&root)?;
    let mut podman = Command::new("podman");
    podman
        .args(["--runtime", "runc", "build", "--quiet", "--tag", &name])
        .arg("--file")
        .arg(&containerfile)
        .arg(&context);
    step(&format!("podman build {name}"), &mut podman)?;
    let size = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Size}}", &name])
        .output()
        .context("podman image inspect")?;
    let size = String::from_utf8_lossy(&size.stdout).trim().to_owned();
    eprintln!("==> image {name}: {size} bytes");
    Ok(name)
}

/// The agent container's `image` in deploy/daemonset.yaml.
fn image_name(root: &Path) -> anyhow::Result<String> {
    let path = root.join("deploy/daemonset.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let ds: serde_yaml::Value = serde_yaml::from_str(&text).context("parsing the DaemonSet")?;
    ds["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .map(str::to_owned)
        .context("deploy/daemonset.yaml: no container image")
}

/// The instructions after the last `FROM`, comments dropped and each `COPY` reduced to its
/// destination (the sources differ: a build stage there, the prepared context here).
fn final_stage(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .unwrap_or(0);
    lines[start..]
        .iter()
        .map(|l| match l.strip_prefix("COPY ") {
            Some(rest) => format!(
                "COPY {}",
                rest.split_whitespace().last().unwrap_or_default()
            ),
            None => (*l).to_owned(),
        })
        .collect()
}

fn same_final_stage(dockerfile: &Path, containerfile: &Path) -> anyhow::Result<()> {
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let (users, ours) = (
        final_stage(&read(dockerfile)?),
        final_stage(&read(containerfile)?),
    );
    ensure!(
        users == ours,
        "the final stage of {} differs from {}:\n{users:#?}\nvs\n{ours:#?}",
        dockerfile.display(),
        containerfile.display()
    );
    Ok(())
}
