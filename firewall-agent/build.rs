//! Builds the eBPF object with the pinned nightly (scripts/toolchains.toml) through aya-build and
//! places it in OUT_DIR for `include_bytes!`. With `AYA_BUILD_SKIP=1` (user-space-only work such
//! as policy unit tests) an empty object is written instead; loading it then fails with a clear error.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn ebpf_toolchain(root: &std::path::Path) -> anyhow::Result<String> {
    let pins = fs::read_to_string(root.join("scripts/toolchains.toml"))
        .context("reading scripts/toolchains.toml")?;
    pins.lines()
        .find_map(|l| l.strip_prefix("ebpf-toolchain"))
        .and_then(|rest| rest.split('"').nth(1))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("scripts/toolchains.toml has no ebpf-toolchain"))
}

/// The commit the agent is built from, for `--version` and `bulkhead_build_info`:
/// `BULKHEAD_COMMIT` when set (image builds without `.git`), else `git rev-parse`, else `unknown`.
fn commit(root: &std::path::Path) -> String {
    println!("cargo::rerun-if-env-changed=BULKHEAD_COMMIT");
    if let Ok(c) = env::var("BULKHEAD_COMMIT") {
        return c;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    // Rebuilt when HEAD moves: HEAD itself, and the branch it points to.
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo::rerun-if-changed={}", root.join(p).display());
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &branch])
    {
        println!("cargo::rerun-if-changed={}", root.join(p).display());
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
}

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?;
    println!("cargo::rustc-env=BULKHEAD_COMMIT={}", commit(root));
    let out = PathBuf::from(env::var("OUT_DIR")?);
    println!(
        "cargo::rerun-if-changed={}",
        root.join("scripts/toolchains.toml").display()
    );
    println!(
        "cargo::rerun-if-changed={}",
        root.join("firewall-common/src").display()
    );
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(out.join("firewall"), b"")?;
        fs::write(out.join("bench-floor"), b"")?;
        println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let toolchain = ebpf_toolchain(root)?;
    let ebpf_dir = root.join("firewall-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "firewall-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
