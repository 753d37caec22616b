//! Stage 8 (issue: pod-level identities only where a selector needs them): what standard
//! policies cost at 10,000 pods / 1,000 namespaces. Three clusters, the stage-5 cluster each
//! (its 1,000 NamespaceFirewalls and the bench policy) plus:
//! - `bulkhead`: nothing (the baseline);
//! - `namespace-only`: NetworkPolicies and a ClusterNetworkPolicy selecting only by namespace;
//! - `selectors`: NetworkPolicies and ClusterNetworkPolicies selecting pods by app/tier labels,
//!   with named ports and CIDRs ([`bulkhead_tests::synthetic::standard`]).
//!
//! The agent (every policy API enabled, enforce) is started afresh per cluster per repeat,
//! clusters rotated each repeat. Per run: identities, addresses and policy entries from the first
//! "policy applied" line, its compile and compile + apply times, then a few policy changes (as in
//! stage 5: the measured rule gains a port) for the steady-state compile + apply time, then RSS.
//! Reported per cluster with ratios to `bulkhead`: of medians, and paired per repeat.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use bulkhead_tests::synthetic::standard::{Flavour, policies};
use firewall_common::capacity;
use serde_json::{Map, Value, json};

use super::{
    Plan,
    agent::{Agent, num},
    compile::{cluster_summary, measure_change, ready, spec},
    report::progress,
    setup::Env,
    source::{self, Spec},
    stats::{median, paired_ratio, ratio, rotated},
};

/// The clusters, the baseline first.
const CLUSTERS: [(&str, Flavour); 3] = [
    ("bulkhead", Flavour::None),
    ("namespace-only", Flavour::NamespaceOnly),
    ("selectors", Flavour::Selectors),
];

/// Policy changes per run (the steady-state compile + apply time is their median).
const CHANGES: usize = 3;

/// Every policy API, so the clusters differ only in their objects.
const POLICY_APIS: &str = "bulkhead,networkpolicy,clusternetworkpolicy";

/// The policy map's capacity in this stage (both slots): the agent's default, which the results
/// check each cluster's changes against (the writer needs room for the active slot's entries and
/// the new ones).
const POLICY_ENTRIES: u32 = capacity::POLICY;

/// The figures of one run; each is reported as the median over repeats.
const FIGURES: [&str; 10] = [
    "identities",
    "addresses",
    "policy_entries",
    "start_to_ready_ms",
    "first_compile_ms",
    "first_total_ms",
    "change_compile_ms",
    "change_total_ms",
    "rss_kib_end",
    "hwm_kib_end",
];

fn cluster_spec(flavour: Flavour, extra_port: Option<u16>) -> Spec {
    Spec {
        standard: flavour,
        ..spec(extra_port)
    }
}

/// One agent on one cluster: the figures of [`FIGURES`].
fn run_one(env: &Env, name: &str, flavour: Flavour) -> anyhow::Result<Map<String, Value>> {
    let src = env.dir.join(format!("identities-{name}.yaml"));
    source::write(env, &src, &cluster_spec(flavour, None))?;
    let cap = POLICY_ENTRIES.to_string();
    let args = [
        "--poll-ms",
        "20",
        "--policy-apis",
        POLICY_APIS,
        "--policy-entries",
        &cap,
    ];
    let agent = Agent::start(env, &src, "enforce", &args, Duration::from_secs(170))?;
    let r = ready(&agent)?;
    let (mut compile, mut total) = (Vec::new(), Vec::new());
    for i in 0..CHANGES {
        let c = measure_change(&agent, || {
            source::write(env, &src, &cluster_spec(flavour, Some(7100 + i as u16)))?;
            Ok(Instant::now())
        })?;
        compile.push(c.compile_ms);
        total.push(c.total_ms);
    }
    let (rss, hwm) = agent.rss_kib()?;
    agent.stop()?;
    let first = |k: &str| json!(num(&r.first[k]));
    let out = json!({
        "identities": first("identities"), "addresses": first("addresses"),
        "policy_entries": first("policy_entries"),
        "start_to_ready_ms": r.start_to_ready_ms,
        "first_compile_ms": first("compile_ms"), "first_total_ms": first("total_ms"),
        "change_compile_ms": median(&compile), "change_total_ms": median(&total),
        "rss_kib_end": rss, "hwm_kib_end": hwm,
    });
    let g = |k: &str| num(&out[k]).unwrap_or(f64::NAN);
    progress(&format!(
        "  {name}: {:.0} identities, {:.0} policy entries; first compile {:.1} ms; change compile+apply {:.1} ms (compile {:.1} ms); RSS {} MiB",
        g("identities"),
        g("policy_entries"),
        g("first_compile_ms"),
        g("change_total_ms"),
        g("change_compile_ms"),
        rss / 1024
    ));
    Ok(out.as_object().cloned().unwrap_or_default())
}

/// Every figure of every run, by cluster and figure.
type Runs = Map<String, Value>;

fn samples(runs: &Runs, cluster: &str, figure: &str) -> Vec<f64> {
    runs[cluster][figure]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(num)
        .collect()
}

/// Per cluster: the median of every figure, its ratio to the baseline's median, and the median
/// over repeats of its ratio to the baseline of the same repeat.
fn summarise(runs: &Runs) -> Value {
    let base = CLUSTERS[0].0;
    let mut out = Map::new();
    for (name, _) in CLUSTERS {
        let (mut medians, mut ratios, mut paired) = (Map::new(), Map::new(), Map::new());
        for f in FIGURES {
            let (v, b) = (samples(runs, name, f), samples(runs, base, f));
            medians.insert(f.into(), json!(median(&v)));
            ratios.insert(f.into(), json!(ratio(median(&v), median(&b))));
            paired.insert(f.into(), json!(paired_ratio(&v, &b)));
        }
        // The writer needs room for the active slot's entries and the new ones.
        let entries = median(&samples(runs, name, "policy_entries"));
        let fits = 2.0 * entries <= f64::from(capacity::POLICY);
        out.insert(
            name.into(),
            json!({"median": medians, "ratio_to_bulkhead": ratios,
                "changes_fit_default_policy_capacity": fits,
                "paired_ratio_to_bulkhead": paired, "runs": runs[name]}),
        );
    }
    Value::Object(out)
}

/// The standard policy objects each cluster adds, by kind.
fn added() -> Value {
    let mut out = Map::new();
    for (name, flavour) in CLUSTERS {
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for o in policies(flavour) {
            *kinds
                .entry(o["kind"].as_str().unwrap_or("?").into())
                .or_default() += 1;
        }
        out.insert(name.into(), json!(kinds));
    }
    Value::Object(out)
}

/// Runs stage 8.
pub fn run(env: &Env, plan: &Plan) -> anyhow::Result<Value> {
    let mut runs = Runs::new();
    for (name, _) in CLUSTERS {
        let empty: Map<String, Value> =
            FIGURES.iter().map(|f| (f.to_string(), json!([]))).collect();
        runs.insert(name.into(), Value::Object(empty));
    }
    for r in 0..plan.repeats {
        progress(&format!("  repeat {}/{}", r + 1, plan.repeats));
        for (name, flavour) in rotated(&CLUSTERS, r) {
            for (f, v) in run_one(env, name, flavour)? {
                let figure = runs.get_mut(name).and_then(|c| c.get_mut(&f));
                if let Some(a) = figure.and_then(Value::as_array_mut) {
                    a.push(v);
                }
            }
        }
    }
    Ok(json!({
        "cluster": cluster_summary("changes_per_run", CHANGES as u64),
        "policy_map_capacity": POLICY_ENTRIES,
        "default_policy_map_capacity": capacity::POLICY,
        "policy_objects_added": added(),
        "clusters": summarise(&runs),
    }))
}
