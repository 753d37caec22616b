//! Stage 1: TCP throughput (iperf3) client -> server across namespaces on an allowed flow, with no
//! agent, the agent in monitor mode and in enforce mode; setups interleaved per repeat.
use std::{collections::BTreeMap, time::Duration};

use anyhow::bail;
use bulkhead_tests::{Outcome, Protocol};
use serde_json::{Value, json};

use super::{
    Plan,
    agent::Agent,
    report::progress,
    setup::{ECHO_PORT, Env, INTRUDER, SERVER},
    source::{self, Spec},
    stats::{median, paired_ratio, ratio, rotated},
};

/// The setups of stages 1 and 2: no agent, the agent in monitor and in enforce mode, and in
/// monitor mode with `--flow-log all` (every measured connection crosses namespaces and is
/// allowed, so each one is a flow record: the flow log's per-connection cost).
pub const SETUPS: [&str; 4] = ["none", "monitor", "enforce", "flows"];

/// Runs `f` once per setup per repeat (setups rotated each repeat), with the agent running in that
/// mode on the base policy (or no agent for `none`); returns what `f` returned, per setup.
pub fn per_setup<T>(
    env: &Env,
    plan: &Plan,
    what: &str,
    mut f: impl FnMut(&Env) -> anyhow::Result<(T, String)>,
) -> anyhow::Result<BTreeMap<&'static str, Vec<T>>> {
    let src = env.dir.join("base.yaml");
    source::write(env, &src, &Spec::default())?;
    let mut out: BTreeMap<&'static str, Vec<T>> = BTreeMap::new();
    let mut checked = false;
    for r in 0..plan.repeats {
        for setup in rotated(&SETUPS, r) {
            let agent = match setup {
                "none" => None,
                "flows" => Some(Agent::start(
                    env,
                    &src,
                    "monitor",
                    &["--flow-log", "all"],
                    Duration::from_secs(30),
                )?),
                mode => Some(Agent::start(env, &src, mode, &[], Duration::from_secs(30))?),
            };
            if setup == "enforce" && !checked {
                check_enforcing(env)?;
                checked = true;
            }
            let (v, text) = f(env)?;
            progress(&format!(
                "  {what} repeat {}/{} {setup:<8} {text}",
                r + 1,
                plan.repeats
            ));
            out.entry(setup).or_default().push(v);
            if let Some(a) = agent {
                a.stop()?;
            }
        }
    }
    Ok(out)
}

/// The agent really enforces: the intruder is denied, the measured flow allowed.
pub fn check_enforcing(env: &Env) -> anyhow::Result<()> {
    let t = env.tb.target(SERVER, Protocol::Tcp, ECHO_PORT)?;
    let bad = env.tb.probe_one(INTRUDER, t, Duration::from_secs(1))?;
    let good = env
        .tb
        .probe_one(super::setup::CLIENT, t, Duration::from_secs(1))?;
    if bad.result != Outcome::Denied || good.result != Outcome::Ok {
        bail!(
            "the agent is not enforcing the bench policy: intruder -> server {:?}, client -> server {:?}",
            bad.result,
            good.result
        );
    }
    Ok(())
}

/// Runs stage 1.
pub fn run(env: &Env, plan: &Plan) -> anyhow::Result<Value> {
    let runs = per_setup(env, plan, "iperf3", |env| {
        let g = env.iperf(plan.iperf_secs)?;
        Ok((g, format!("{g:.2} Gbit/s")))
    })?;
    let none = runs.get("none").cloned().unwrap_or_default();
    let base = median(&none);
    let mut setups = serde_json::Map::new();
    for (setup, v) in &runs {
        let m = median(v);
        setups.insert(
            (*setup).to_owned(),
            json!({"gbit_s_runs": v, "gbit_s_median": m, "ratio_to_none": ratio(m, base),
                   "paired_ratio_to_none": paired_ratio(v, &none)}),
        );
    }
    Ok(json!({"iperf_secs": plan.iperf_secs, "setups": setups}))
}
