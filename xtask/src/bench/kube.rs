//! Stage 7 (issue: Kubernetes sync at scale): the real agent with `--source kube` against the API
//! server emulator holding 10,000 pods / 1,000 namespaces / 1,000 policy objects (the same objects
//! as stage 5). Measured: start to ready (list of every kind + first compile + map writes), then
//! one policy change at a time through the API (a PUT of `bench-b`'s NamespaceFirewall) to the
//! agent's "policy applied" line: watch delivery + 100 ms debounce + model rebuild + compile +
//! map writes. RSS from /proc.
use std::time::{Duration, Instant};

use bulkhead_tests::apiserver::ApiServer;
use serde_json::{Value, json};

use super::{
    Plan,
    agent::{Agent, num},
    compile::{Ready, ready, spec},
    report::progress,
    setup::Env,
    source::{self, SYN_NAMESPACES, SYN_PODS},
    stats::{median, quantile},
};

/// Runs the stage.
pub fn run(env: &Env, plan: &Plan) -> anyhow::Result<Value> {
    let api = ApiServer::start()?;
    let objects = source::objects(env, &spec(None))?;
    let count = objects.len();
    let seeded = Instant::now();
    api.apply_all(objects)?;
    progress(&format!(
        "  API server emulator at {} holds {count} objects (seeded in {:.0} ms)",
        api.url(),
        seeded.elapsed().as_secs_f64() * 1e3
    ));
    let kubeconfig = env.dir.join("kubeconfig.yaml");
    api.write_kubeconfig(&kubeconfig)?;
    let kc = kubeconfig.display().to_string();
    let mut agent = Agent::start_with(
        env,
        &[
            "--source",
            "kube",
            "--kubeconfig",
            &kc,
            "--lease-namespace",
            "bench-b",
        ],
        "enforce",
        &[],
        Duration::from_secs(120),
    )?;
    let Ready {
        start_to_ready_ms,
        first,
        rss0,
        hwm0,
    } = ready(&mut agent)?;
    // The object the changes rewrite.
    let changed = |port: u16| -> anyhow::Result<Value> {
        source::policy(&spec(Some(port)))
            .into_iter()
            .find(|o| o["kind"] == "NamespaceFirewall")
            .ok_or_else(|| anyhow::anyhow!("no NamespaceFirewall in the bench policy"))
    };
    let mut total = Vec::new();
    let mut wall = Vec::new();
    for i in 0..plan.changes {
        let before = agent.messages("policy applied").len();
        let obj = changed(7100 + i as u16)?;
        let t0 = Instant::now();
        api.apply(obj)?;
        let (t1, v) = agent.wait_message("policy applied", before + 1, Duration::from_secs(30))?;
        let g = |k: &str| {
            num(&v[k])
                .or_else(|| num(&v["fields"][k]))
                .unwrap_or(f64::NAN)
        };
        let w = t1.saturating_duration_since(t0).as_secs_f64() * 1e3;
        progress(&format!(
            "  change {}/{}: API write -> applied {w:.0} ms (compile + apply {:.1} ms)",
            i + 1,
            plan.changes,
            g("total_ms"),
        ));
        total.push(g("total_ms"));
        wall.push(w);
    }
    let (rss, hwm) = agent.rss_kib()?;
    let requests = api.requests().len();
    agent.stop()?;
    let dist = |v: &[f64]| json!({"p50": median(v), "p99": quantile(v, 0.99), "max": quantile(v, 1.0), "runs": v});
    Ok(json!({
        "cluster": {"pods": SYN_PODS + 3, "namespaces": SYN_NAMESPACES + 3, "policy_objects": SYN_NAMESPACES + 2,
                    "local_pods": SYN_PODS / source::LOCAL_EVERY + 3, "objects": count},
        "start_to_ready_ms": start_to_ready_ms,
        "first_apply": first,
        "change_api_to_applied_ms": dist(&wall),
        "change_total_ms": dist(&total),
        "rss_kib_after_ready": rss0, "hwm_kib_after_ready": hwm0,
        "rss_kib_end": rss, "hwm_kib_end": hwm,
        "api_requests": requests,
    }))
}
