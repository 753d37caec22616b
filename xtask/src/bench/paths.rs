//! Stage 10, `paths`: the cost of each datapath path alone, above the empty program.
//!
//! The `floor` stage times whole workloads, so a connection's first packet can only be derived
//! from them. This stage runs firewall-agent's `pathcost` example (it loads the real datapath
//! in-process and times one crafted frame per path with `BPF_PROG_TEST_RUN` and `repeat`, against
//! the `bench-floor` object's empty program on the same frame and hook, interleaved round by
//! round): TCP SYN on egress and ingress (a SYN never passes on conntrack, so every run takes the
//! new-connection path), established TCP ACK and UDP in the opener's and the reply direction
//! (conntrack hits; the test-run socket is a dummy, so the socket cache never hits), IPv4 and
//! IPv6. `pathcost` is an example of firewall-agent because it also needs bulkhead-tests, which
//! must not depend on firewall-agent; xtask does not depend on firewall-agent either.
//!
//! The same runs time the pieces of the SYN path, one `bench-floor` program per operation
//! (`super::pieces`), and compare their sum with the SYN path measured.
//!
//! `kernel.bpf_stats_enabled` is held at 0 meanwhile: the kernel's per-run accounting would add
//! its own cost to both programs. Each bench repeat is one `pathcost` run (its own medians over
//! `ROUNDS` interleaved rounds); the stage reports medians over the repeats.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{
    Plan, interrupt, pieces,
    report::progress,
    setup::{Env, Sysctl},
    stats::median,
};
use crate::util::{cargo, workspace_root};

/// Interleaved rounds per `pathcost` run, and runs per `BPF_PROG_TEST_RUN` (`--quick`: fewer).
fn sizes(plan: &Plan) -> (usize, u32) {
    if plan.quick {
        (7, 20_000)
    } else {
        (21, 100_000)
    }
}

/// Runs the stage.
pub fn run(env: &Env, plan: &Plan) -> anyhow::Result<Value> {
    let exe = build()?;
    let _stats = Sysctl::set("kernel.bpf_stats_enabled", "0")?;
    let (rounds, repeat) = sizes(plan);
    let mut runs = Vec::new();
    for r in 0..plan.repeats {
        if interrupt::requested() {
            bail!("interrupted");
        }
        progress(&format!(
            "paths: repeat {}/{}: {rounds} rounds x {repeat} runs per path",
            r + 1,
            plan.repeats
        ));
        runs.push(pathcost(&exe, &env.floor_obj, rounds, repeat)?);
    }
    let paths = summarize(&runs);
    let pieces = pieces::summarize(&runs);
    Ok(json!({
        "rounds": rounds, "repeat": repeat,
        "piece_sums": pieces::sums(&paths, &pieces),
        "paths": paths, "pieces": pieces,
        "runs": runs,
    }))
}

/// Builds the `pathcost` example (release) and returns its executable, as cargo names it.
fn build() -> anyhow::Result<PathBuf> {
    progress("building firewall-agent's pathcost example (release)");
    let out = cargo()
        .args(["build", "--release", "-p", "firewall-agent", "--example"])
        .args(["pathcost", "--message-format=json-render-diagnostics"])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("building the pathcost example failed ({})", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "pathcost")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo named no pathcost executable")
}

/// One `pathcost` run, its JSON.
fn pathcost(exe: &Path, floor: &Path, rounds: usize, repeat: u32) -> anyhow::Result<Value> {
    let out = Command::new(exe)
        .arg("--floor-object")
        .arg(floor)
        .args([
            "--rounds",
            &rounds.to_string(),
            "--repeat",
            &repeat.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", exe.display(), out.status);
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("pathcost's JSON")?;
    if let Some(why) = v["skipped"].as_str() {
        bail!("pathcost skipped: {why}");
    }
    Ok(v)
}

/// Per path and hook, in `pathcost`'s order: medians over the runs of each run's medians.
fn summarize(runs: &[Value]) -> Vec<Value> {
    let mut by: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    let mut order = Vec::new();
    for p in runs
        .iter()
        .flat_map(|r| r["paths"].as_array().into_iter().flatten())
    {
        let key = (
            p["path"].as_str().unwrap_or("?").to_owned(),
            p["hook"].as_str().unwrap_or("?").to_owned(),
        );
        if !by.contains_key(&key) {
            order.push(key.clone());
        }
        by.entry(key).or_default().push(p);
    }
    order
        .into_iter()
        .filter_map(|key| {
            let ps = by.get(&key)?;
            let m = |field: &str| {
                median(
                    &ps.iter()
                        .filter_map(|p| p[field].as_f64())
                        .collect::<Vec<_>>(),
                )
            };
            let (b, e) = (m("bulkhead_ns_median"), m("empty_ns_median"));
            Some(json!({
                "path": key.0, "hook": key.1, "what": ps[0]["what"], "counter": ps[0]["counter"],
                "bulkhead_ns": b, "empty_ns": e, "above_empty_ns": b - e,
                "above_empty_ns_paired": m("above_empty_ns_paired"),
                "ratio_to_empty": if e > 0.0 { b / e } else { f64::NAN },
            }))
        })
        .collect()
}
