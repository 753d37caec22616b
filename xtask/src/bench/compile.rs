//! Stage 5: policy compile + apply time and agent memory at 10,000 pods / 1,000 namespaces / 1,000
//! policy objects, with the real agent and a `file:` source: start-to-ready, then one policy change
//! at a time (the measured rule gains a different extra port, so the local map contents change).
//! Reported: the agent's own `total_ms` of "policy applied" (compile + diff + map writes), its
//! `compile_ms`, and the wall time from the file's rename to that log line (adds file polling,
//! reading and parsing the 10,000-pod file). RSS from /proc/PID/status.
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    Plan,
    agent::{Agent, num},
    progcost::applied_fields,
    report::progress,
    setup::Env,
    source::{self, SYN_NAMESPACES, SYN_PODS, Spec},
    stats::{median, quantile},
};

/// `--poll-ms` for this stage (the wall times include up to this much polling delay).
const POLL_MS: u64 = 20;

/// The stage-5 cluster (10,000 pods, 1,000 policy objects) with the measured rule's extra port.
pub fn spec(extra_port: Option<u16>) -> Spec {
    Spec {
        synthetic: true,
        pair_rules: 0,
        policy_objects: true,
        extra_port,
    }
}

/// What a freshly started agent shows once ready.
pub struct Ready {
    /// From spawn to the "ready" line.
    pub start_to_ready_ms: f64,
    /// The first "policy applied" line's fields.
    pub first: Value,
    /// VmRSS, KiB.
    pub rss0: u64,
    /// VmHWM, KiB.
    pub hwm0: u64,
}

/// Start-to-ready, the first apply and memory of `agent` (already ready), printed as progress.
pub fn ready(agent: &mut Agent) -> anyhow::Result<Ready> {
    let (ready_at, _) = agent.wait_message("ready", 1, Duration::from_secs(1))?;
    let start_to_ready_ms = (ready_at - agent.started).as_secs_f64() * 1e3;
    let first = applied_fields(agent)?;
    let (rss0, hwm0) = agent.rss_kib()?;
    progress(&format!(
        "  start-to-ready {start_to_ready_ms:.0} ms (first apply: compile {} ms, total {} ms; {} addresses, {} policy entries); RSS {} MiB",
        first["compile_ms"],
        first["total_ms"],
        first["addresses"],
        first["policy_entries"],
        rss0 / 1024
    ));
    Ok(Ready {
        start_to_ready_ms,
        first,
        rss0,
        hwm0,
    })
}

/// Runs stage 5.
pub fn run(env: &Env, plan: &Plan) -> anyhow::Result<Value> {
    let src = env.dir.join("compile.yaml");
    source::write(env, &src, &spec(None))?;
    let size = std::fs::metadata(&src).map(|m| m.len()).unwrap_or(0);
    let poll = POLL_MS.to_string();
    let mut agent = Agent::start(
        env,
        &src,
        "enforce",
        &["--poll-ms", &poll],
        Duration::from_secs(120),
    )?;
    let Ready {
        start_to_ready_ms,
        first,
        rss0,
        hwm0,
    } = ready(&mut agent)?;
    let mut total = Vec::new();
    let mut compile = Vec::new();
    let mut wall = Vec::new();
    for i in 0..plan.changes {
        let before = agent.messages("policy applied").len();
        source::write(env, &src, &spec(Some(7100 + i as u16)))?;
        let t0 = Instant::now();
        let (t1, v) = agent.wait_message("policy applied", before + 1, Duration::from_secs(30))?;
        let g = |k: &str| {
            num(&v[k])
                .or_else(|| num(&v["fields"][k]))
                .unwrap_or(f64::NAN)
        };
        let w = (t1.saturating_duration_since(t0)).as_secs_f64() * 1e3;
        progress(&format!(
            "  change {}/{}: compile+apply {:.1} ms (compile {:.1} ms), file -> applied {w:.0} ms",
            i + 1,
            plan.changes,
            g("total_ms"),
            g("compile_ms")
        ));
        total.push(g("total_ms"));
        compile.push(g("compile_ms"));
        wall.push(w);
    }
    let (rss, hwm) = agent.rss_kib()?;
    agent.stop()?;
    let dist = |v: &[f64]| json!({"p50": median(v), "p99": quantile(v, 0.99), "max": quantile(v, 1.0), "runs": v});
    Ok(json!({
        "cluster": {"pods": SYN_PODS + 3, "namespaces": SYN_NAMESPACES + 3, "policy_objects": SYN_NAMESPACES + 2,
                    "local_pods": SYN_PODS / source::LOCAL_EVERY + 3, "source_bytes": size},
        "poll_ms": POLL_MS,
        "start_to_ready_ms": start_to_ready_ms,
        "first_apply": first,
        "change_total_ms": dist(&total),
        "change_compile_ms": dist(&compile),
        "change_file_to_applied_ms": dist(&wall),
        "rss_kib_after_ready": rss0, "hwm_kib_after_ready": hwm0,
        "rss_kib_end": rss, "hwm_kib_end": hwm,
    }))
}
