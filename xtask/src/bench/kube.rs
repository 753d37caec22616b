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
    agent::Agent,
    compile::{cluster_summary, measure_change, ready, spec},
    report::progress,
    setup::Env,
    source,
    stats::dist,
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
    let agent = Agent::start_with(
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
    let ready = ready(&agent)?;
    // The object the changes rewrite.
    let changed = |port: u16| -> anyhow::Result<Value> {
        source::policy(&spec(Some(port)))
            .into_iter()
            .find(|o| o["kind"] == "NamespaceFirewall")
            .ok_or_else(|| anyhow::anyhow!("no NamespaceFirewall in the bench policy"))
    };
    let (mut total, mut wall) = (Vec::new(), Vec::new());
    for i in 0..plan.changes {
        let obj = changed(7100 + i as u16)?;
        let c = measure_change(&agent, || {
            let t0 = Instant::now();
            api.apply(obj)?;
            Ok(t0)
        })?;
        progress(&format!(
            "  change {}/{}: API write -> applied {:.0} ms (compile + apply {:.1} ms)",
            i + 1,
            plan.changes,
            c.wall_ms,
            c.total_ms,
        ));
        total.push(c.total_ms);
        wall.push(c.wall_ms);
    }
    let (rss, hwm) = agent.rss_kib()?;
    let requests = api.requests().len();
    agent.stop()?;
    Ok(json!({
        "cluster": cluster_summary("objects", count as u64),
        "start_to_ready_ms": ready.start_to_ready_ms,
        "first_apply": ready.first,
        "change_api_to_applied_ms": dist(&wall),
        "change_total_ms": dist(&total),
        "rss_kib_after_ready": ready.rss0, "hwm_kib_after_ready": ready.hwm0,
        "rss_kib_end": rss, "hwm_kib_end": hwm,
        "api_requests": requests,
    }))
}
