//! Stage 5: policy compile + apply time and agent memory at 10,000 pods / 1,000 namespaces / 1,000
//! policy objects, with the real agent and a `file:` source: start-to-ready, then one policy change
//! at a time (the measured rule gains a different extra port, so the local map contents change).
//! Reported: the agent's own `total_ms` of "policy applied" (compile + diff + map writes), its
//! `compile_ms`, and the wall time from the file's rename to that log line (adds file polling,
//! reading and parsing the 10,000-pod file). RSS from /proc/PID/status.
use std::time::{Duration, Instant};

use bulkhead_tests::synthetic::{LOCAL_EVERY, SYN_NAMESPACES, SYN_PODS, standard::Flavour};
use serde_json::{Value, json};

use super::{
    Plan,
    agent::{Agent, num},
    progcost::applied_fields,
    report::progress,
    setup::Env,
    source::{self, Spec},
    stats::dist,
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
        standard: Flavour::None,
        udp: false,
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
pub fn ready(agent: &Agent) -> anyhow::Result<Ready> {
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

/// One policy change, measured: the wall time from the change to the agent's next "policy
/// applied" line, and that line's own `total_ms` (compile + diff + map writes) and `compile_ms`.
pub struct Change {
    /// From the instant `change` returned to the log line.
    pub wall_ms: f64,
    /// The agent's `total_ms`.
    pub total_ms: f64,
    /// The agent's `compile_ms`.
    pub compile_ms: f64,
}

/// Makes a change (`change` returns the instant the measured wall time starts) and waits for
/// the agent to apply it.
pub fn measure_change(
    agent: &Agent,
    change: impl FnOnce() -> anyhow::Result<Instant>,
) -> anyhow::Result<Change> {
    let before = agent.messages("policy applied").len();
    let t0 = change()?;
    let (t1, v) = agent.wait_message("policy applied", before + 1, Duration::from_secs(30))?;
    let g = |k: &str| {
        num(&v[k])
            .or_else(|| num(&v["fields"][k]))
            .unwrap_or(f64::NAN)
    };
    Ok(Change {
        wall_ms: t1.saturating_duration_since(t0).as_secs_f64() * 1e3,
        total_ms: g("total_ms"),
        compile_ms: g("compile_ms"),
    })
}

/// The synthetic cluster's size as reported, plus one stage-specific field.
pub fn cluster_summary(key: &str, value: u64) -> Value {
    let mut v = json!({"pods": SYN_PODS + 3, "namespaces": SYN_NAMESPACES + 3,
        "policy_objects": SYN_NAMESPACES + 2, "local_pods": SYN_PODS / LOCAL_EVERY + 3});
    v[key] = json!(value);
    v
}

/// Runs stage 5.
pub fn run(env: &Env, plan: &Plan) -> anyhow::Result<Value> {
    let src = env.dir.join("compile.yaml");
    source::write(env, &src, &spec(None))?;
    let size = std::fs::metadata(&src).map(|m| m.len()).unwrap_or(0);
    let poll = POLL_MS.to_string();
    let agent = Agent::start(
        env,
        &src,
        "enforce",
        &["--poll-ms", &poll],
        Duration::from_secs(120),
    )?;
    let ready = ready(&agent)?;
    let (mut total, mut compile, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..plan.changes {
        let c = measure_change(&agent, || {
            source::write(env, &src, &spec(Some(7100 + i as u16)))?;
            Ok(Instant::now())
        })?;
        progress(&format!(
            "  change {}/{}: compile+apply {:.1} ms (compile {:.1} ms), file -> applied {:.0} ms",
            i + 1,
            plan.changes,
            c.total_ms,
            c.compile_ms,
            c.wall_ms
        ));
        total.push(c.total_ms);
        compile.push(c.compile_ms);
        wall.push(c.wall_ms);
    }
    let (rss, hwm) = agent.rss_kib()?;
    agent.stop()?;
    Ok(json!({
        "cluster": cluster_summary("source_bytes", size),
        "poll_ms": POLL_MS,
        "start_to_ready_ms": ready.start_to_ready_ms,
        "first_apply": ready.first,
        "change_total_ms": dist(&total),
        "change_compile_ms": dist(&compile),
        "change_file_to_applied_ms": dist(&wall),
        "rss_kib_after_ready": ready.rss0, "hwm_kib_after_ready": ready.hwm0,
        "rss_kib_end": rss, "hwm_kib_end": hwm,
    }))
}
