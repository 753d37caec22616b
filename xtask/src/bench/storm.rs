//! Stage 6: storms of denied connections (enforce mode, refused at connect()): one flow hammered
//! (folding: a line per flow per second) and many distinct flows (one event each: ring buffer and
//! printing throughput). Reported from the agent's own counters (printed when it stops) and its
//! stdout: events delivered per second, lines printed, events lost, and whether the `count`s add up
//! to the attempts.
use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Plan,
    agent::{Agent, num},
    report::progress,
    setup::{ECHO_PORT, Env, INTRUDER, SERVER},
    source::{self, Spec},
};

/// Runs stage 6.
pub fn run(env: &Env, plan: &Plan) -> anyhow::Result<Value> {
    let src = env.dir.join("base.yaml");
    source::write(env, &src, &Spec::default())?;
    let server = env.ip(SERVER)?;
    let n = plan.storm_attempts.to_string();
    let variants: [(&str, Vec<String>); 2] = [
        (
            "one-flow",
            vec![
                "flood".into(),
                "--ip".into(),
                server.to_string(),
                "--port-from".into(),
                ECHO_PORT.to_string(),
                "--ports".into(),
                "1".into(),
                "--count".into(),
                n.clone(),
            ],
        ),
        (
            "distinct-flows",
            vec![
                "flood".into(),
                "--ip".into(),
                server.to_string(),
                "--port-from".into(),
                "10000".into(),
                "--ports".into(),
                "50000".into(),
                "--count".into(),
                n.clone(),
            ],
        ),
    ];
    let mut out = serde_json::Map::new();
    for (name, args) in variants {
        let agent = Agent::start(env, &src, "enforce", &[], Duration::from_secs(30))?;
        let r = env.pod_json(INTRUDER, &args)?;
        // Let the agent's periodic sweep run once before stopping it (it also flushes on exit).
        std::thread::sleep(Duration::from_millis(1500));
        let (counters, lines) = agent.stop()?;
        let c = |k: &str| {
            num(&counters[k])
                .or_else(|| num(&counters["fields"][k]))
                .unwrap_or(0.0)
        };
        let secs = r["ms"].as_f64().unwrap_or(0.0) / 1e3;
        let denied = r["results"]["denied"].as_u64().unwrap_or(0);
        let mut violation_lines = 0u64;
        let mut lost_reported = 0u64;
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for l in &lines {
            let Ok(v) = serde_json::from_str::<Value>(l) else {
                continue;
            };
            match v["type"].as_str() {
                Some("violation") => {
                    violation_lines += 1;
                    let dir = v["direction"].as_str().unwrap_or("?").to_owned();
                    *counts.entry(dir).or_default() += v["count"].as_u64().unwrap_or(0);
                }
                Some("events_lost") => lost_reported += v["count"].as_u64().unwrap_or(0),
                _ => {}
            }
        }
        let per_s = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
        let res = json!({
            "attempts": r["attempts"], "results": r["results"], "storm_ms": r["ms"],
            "attempts_per_s": per_s(r["attempts"].as_f64().unwrap_or(0.0)),
            "events_sent": c("events_sent"), "events_per_s": per_s(c("events_sent")),
            "events_folded": c("events_folded"), "events_lost": c("events_lost"),
            "events_lost_reported": lost_reported,
            "connect_denied": c("connect_denied"),
            "lines_printed": violation_lines, "lines_per_s": per_s(violation_lines as f64),
            "counts_by_direction": counts,
            "counts_add_up": counts.values().all(|&v| v == denied) && !counts.is_empty(),
        });
        progress(&format!(
            "  {name}: {} attempts ({} denied) in {:.1} s; {:.0} events/s delivered, {} lost; {} lines; counts by side {:?} (add up: {})",
            r["attempts"],
            denied,
            secs,
            per_s(c("events_sent")),
            c("events_lost"),
            violation_lines,
            res["counts_by_direction"],
            res["counts_add_up"]
        ));
        out.insert(name.to_owned(), res);
    }
    Ok(Value::Object(out))
}
