//! `cargo xtask fuzz`: runs every cargo-fuzz target (fuzz/fuzz_targets) for a bounded time with
//! libFuzzer and AddressSanitizer, on the pinned nightly of scripts/toolchains.toml (cargo-fuzz
//! needs nightly). Seeds come from fuzz/seeds/<target>; the growing corpus lives outside the
//! repository (`<target dir>/fuzz-corpus/<target>`). Crashes fail the run; their inputs are in
//! fuzz/artifacts/<target>/ and belong in fuzz/seeds/<target>/ once fixed, so every later run
//! replays them (regression cases).
use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::util::{target_dir, workspace_root};

/// The fuzz targets.
pub const TARGETS: [&str; 2] = ["source", "policy"];

/// Arguments of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only this target.
    #[arg(long)]
    pub target: Option<String>,
}

fn ebpf_toolchain(root: &Path) -> anyhow::Result<String> {
    let pins = std::fs::read_to_string(root.join("scripts/toolchains.toml"))
        .context("reading scripts/toolchains.toml")?;
    pins.lines()
        .find_map(|l| l.strip_prefix("ebpf-toolchain"))
        .and_then(|rest| rest.split('"').nth(1))
        .map(str::to_owned)
        .context("scripts/toolchains.toml has no ebpf-toolchain")
}

/// Builds and runs the targets.
pub fn run(args: Args) -> anyhow::Result<()> {
    let root = workspace_root();
    let toolchain = ebpf_toolchain(&root)?;
    let fuzz_target_dir = target_dir()?.join("fuzz");
    let corpus_root = target_dir()?.join("fuzz-corpus");
    let cargo_fuzz = |sub: &str| {
        let mut c = Command::new("cargo");
        c.arg(format!("+{toolchain}"))
            .args(["fuzz", sub, "-O"])
            .current_dir(root.join("fuzz"))
            // The fuzzers exercise user-space code only: no eBPF object needed.
            .env("AYA_BUILD_SKIP", "1")
            .env("CARGO_TARGET_DIR", &fuzz_target_dir)
            .env_remove("RUSTUP_TOOLCHAIN");
        c
    };
    eprintln!("==> fuzz: building the targets with {toolchain} (AddressSanitizer)");
    let status = cargo_fuzz("build")
        .status()
        .context("running cargo fuzz (installed by scripts/bootstrap.sh)")?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!("no fuzz target {t:?}; targets: {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    for t in targets {
        let corpus = corpus_root.join(t);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        eprintln!("==> fuzz {t}: {} s", args.seconds);
        let status = cargo_fuzz("run")
            .arg(t)
            .arg(&corpus)
            .arg(root.join("fuzz/seeds").join(t))
            .args([
                "--",
                &format!("-max_total_time={}", args.seconds),
                "-rss_limit_mb=4096",
                "-print_final_stats=1",
            ])
            .status()
            .with_context(|| format!("running fuzz target {t}"))?;
        if !status.success() {
            bail!(
                "fuzz target {t} found a failure ({status}): the input is in fuzz/artifacts/{t}/; fix it and add the input to fuzz/seeds/{t}/"
            );
        }
    }
    Ok(())
}
