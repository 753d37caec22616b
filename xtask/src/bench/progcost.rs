//! Stage 3: per-packet program cost from the kernel's own accounting (`kernel.bpf_stats_enabled`:
//! run_time_ns / run_cnt per program), with 10..10,000 namespace-pair rules and 10,000 pods in the
//! identity maps, under two workloads: new connections (connect-each: every first packet takes the
//! policy lookups) and bulk transfer (iperf3: conntrack hits).
use std::{collections::BTreeMap, process::Command, time::Duration};

use anyhow::{Context as _, bail};
use bulkhead_tests::synthetic::SYN_PODS;
use serde_json::{Value, json};

use super::{
    Plan,
    agent::{Agent, num},
    interrupt,
    report::progress,
    setup::{Env, Sysctl},
    source::{self, Spec},
    stats::median,
};

/// Extra agent flags with the 10,000-pod sources of stages 3 and 4: the `file:` source re-reads and
/// hashes the whole (3 MB) file every poll, a cost the `kube` source does not have; polling once a
/// second keeps it out of the measured path.
pub const SCALE_AGENT_ARGS: &[&str] = &["--poll-ms", "1000"];

/// Attach type (as bpftool names it) -> program id, for the programs at the testbed's cgroup root.
pub fn programs(env: &Env) -> anyhow::Result<BTreeMap<String, u64>> {
    let out = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(env.tb.cgroup_root())
        .arg("-j")
        .output()
        .context("running bpftool cgroup show")?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "bpftool cgroup show output: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let mut progs = BTreeMap::new();
    for p in v.as_array().into_iter().flatten() {
        if let (Some(id), Some(t)) = (p["id"].as_u64(), p["attach_type"].as_str()) {
            progs.insert(t.to_owned(), id);
        }
    }
    if progs.is_empty() {
        bail!("no programs attached at {}", env.tb.cgroup_root().display());
    }
    Ok(progs)
}

/// Program id -> (run_time_ns, run_cnt).
pub fn snapshot() -> anyhow::Result<BTreeMap<u64, (u64, u64)>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .context("running bpftool prog show")?;
    let v: Value = serde_json::from_slice(&out.stdout).context("bpftool prog show output")?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["id"].as_u64()?,
                (
                    p["run_time_ns"].as_u64().unwrap_or(0),
                    p["run_cnt"].as_u64().unwrap_or(0),
                ),
            ))
        })
        .collect())
}

/// Per attach type: (ns per run, runs) between two snapshots.
pub fn delta(
    progs: &BTreeMap<String, u64>,
    a: &BTreeMap<u64, (u64, u64)>,
    b: &BTreeMap<u64, (u64, u64)>,
) -> BTreeMap<String, (f64, u64)> {
    progs
        .iter()
        .map(|(t, id)| {
            let (t0, c0) = a.get(id).copied().unwrap_or((0, 0));
            let (t1, c1) = b.get(id).copied().unwrap_or((0, 0));
            let runs = c1.saturating_sub(c0);
            let ns = if runs == 0 {
                f64::NAN
            } else {
                t1.saturating_sub(t0) as f64 / runs as f64
            };
            (t.clone(), (ns, runs))
        })
        .collect()
}

/// The "policy applied" line's numbers (what the agent wrote into the maps).
pub fn applied_fields(agent: &Agent) -> anyhow::Result<Value> {
    let (_, v) = agent
        .messages("policy applied")
        .pop()
        .context("the agent logged no \"policy applied\"")?;
    let g = |k: &str| num(&v[k]).or_else(|| num(&v["fields"][k]));
    Ok(json!({
        "pods": g("pods"), "addresses": g("addresses"), "policy_entries": g("policy_entries"),
        "identities": g("identities"), "compile_ms": g("compile_ms"), "total_ms": g("total_ms"),
    }))
}

/// Runs stage 3.
pub fn run(env: &Env, plan: &Plan) -> anyhow::Result<Value> {
    let _stats = Sysctl::set("kernel.bpf_stats_enabled", "1")?;
    // First a small baseline (the testbed's 3 pods, the base policy), then each rule count with
    // the 10,000-pod cluster: separates the cost of map sizes from the program's fixed cost.
    let baseline = measure(env, plan, None)?;
    let mut by_rules = serde_json::Map::new();
    for &n in plan.rule_counts {
        by_rules.insert(n.to_string(), measure(env, plan, Some(n))?);
    }
    Ok(json!({"pods": SYN_PODS, "baseline_3_pods": baseline, "by_rules": by_rules}))
}

/// Program costs with `rules` pair rules and the synthetic cluster, or (None) the base source.
fn measure(env: &Env, plan: &Plan, rules: Option<usize>) -> anyhow::Result<Value> {
    interrupt::check()?;
    let label = match rules {
        Some(n) => format!("{n} rules"),
        None => "baseline (3 pods, base policy)".to_owned(),
    };
    let src = env
        .dir
        .join(format!("rules-{}.yaml", rules.map_or(-1, |n| n as i64)));
    source::write(
        env,
        &src,
        &Spec {
            synthetic: rules.is_some(),
            pair_rules: rules.unwrap_or(0),
            ..Spec::default()
        },
    )?;
    let agent = Agent::start(
        env,
        &src,
        "enforce",
        SCALE_AGENT_ARGS,
        Duration::from_secs(120),
    )?;
    let applied = applied_fields(&agent)?;
    let addresses = applied["addresses"].as_f64().unwrap_or(0.0);
    if rules.is_some() && addresses < SYN_PODS as f64 {
        bail!("only {addresses} addresses in the identity maps, expected >= {SYN_PODS}");
    }
    progress(&format!(
        "  {label}: agent loaded {} addresses, {} policy entries, {} local cgroups",
        applied["addresses"], applied["policy_entries"], applied["pods"]
    ));
    let progs = programs(env)?;
    let mut samples: BTreeMap<(String, &str), Vec<f64>> = BTreeMap::new();
    let mut runs_seen: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for r in 0..plan.repeats {
        let s0 = snapshot()?;
        env.rr("connect-each", plan.connects)?;
        let s1 = snapshot()?;
        env.iperf(plan.iperf_secs)?;
        let s2 = snapshot()?;
        let mut text = Vec::new();
        for (workload, d) in [
            ("connect", delta(&progs, &s0, &s1)),
            ("bulk", delta(&progs, &s1, &s2)),
        ] {
            for (t, (ns, runs)) in d {
                if runs == 0 {
                    continue;
                }
                text.push(format!("{workload}/{}: {ns:.0} ns", short(&t)));
                samples.entry((t.clone(), workload)).or_default().push(ns);
                *runs_seen.entry((t, workload)).or_default() += runs;
            }
        }
        progress(&format!(
            "  {label} repeat {}/{}: {}",
            r + 1,
            plan.repeats,
            text.join(", ")
        ));
    }
    agent.stop()?;
    let mut table = serde_json::Map::new();
    for ((t, workload), v) in &samples {
        let e = table
            .entry(t.clone())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .context("json")?;
        e.insert(
            (*workload).to_owned(),
            json!({
                "ns_per_run_median": median(v), "ns_per_run": v,
                "runs": runs_seen.get(&(t.clone(), *workload)),
            }),
        );
    }
    Ok(json!({"maps": applied, "programs": table}))
}

/// `cgroup_inet_egress` -> `egress`.
pub fn short(t: &str) -> &str {
    t.strip_prefix("cgroup_inet_")
        .or_else(|| t.strip_prefix("cgroup_"))
        .unwrap_or(t)
}
