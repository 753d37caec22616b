//! Stage 6: storms of denied connections (enforce mode, refused at connect()): one flow hammered
//! (folding: a line per flow per second) and many distinct flows (one event each: ring buffer and
//! printing throughput). Reported from the agent's own counters (printed when it stops) and its
//! stdout: events delivered per second, lines printed, events lost, and whether the `count`s add up
//! to the attempts.
use std::{collections::BTreeMap, process::Stdio, time::Duration};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{
    Plan,
    agent::{Agent, num},
    interrupt,
    report::progress,
    setup::{ECHO_PORT, Env, INTRUDER, SERVER},
    source::{self, Spec},
};

/// Runs stage 6.
pub fn run(env: &Env, plan: &Plan) -> anyhow::Result<Value> {
    let src = env.dir.join("base.yaml");
    source::write(env, &src, &Spec::default())?;
    let server = env.ip(SERVER)?;
    // (name, processes, first port, ports per process): one flow is folded to a line per second;
    // distinct flows (a new destination port each attempt, from two processes at once, one per CPU)
    // make one event each and push the ring buffer and the printer: 2 x 10,000 ports (x 2 sides)
    // stay within the kernel's fold map (65,536 flows), 2 x 25,000 ports (100,000 flow-sides) do not.
    let variants: [(&str, usize, u16, u16); 3] = [
        ("one-flow", 1, ECHO_PORT, 1),
        ("20k-flows", 2, 10_000, 10_000),
        ("50k-flows", 2, 10_000, 25_000),
    ];
    let mut out = serde_json::Map::new();
    for (name, procs, port_from, ports) in variants {
        let agent = Agent::start(env, &src, "enforce", &[], Duration::from_secs(30))?;
        let r = flood(env, server, procs, port_from, ports, plan.storm_attempts)?;
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
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
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
            "attempts": r["attempts"], "processes": procs, "results": r["results"], "storm_ms": r["ms"],
            "attempts_per_s": per_s(r["attempts"].as_f64().unwrap_or(0.0)),
            "events_sent": c("events_sent"), "events_per_s": per_s(c("events_sent")),
            "events_folded": c("events_folded"), "events_lost": c("events_lost"),
            "events_lost_reported": lost_reported,
            "connect_denied": c("connect_denied"),
            "lines_printed": violation_lines, "lines_per_s": per_s(violation_lines as f64),
            "counts_by_direction": counts,
            // Each denied attempt is one count: one record per connection, both sides in it.
            "counts_expected": denied,
            "counts_total": counts.values().sum::<u64>(),
            // `events_lost` lines count the violations that are in no line, so lines +
            // events_lost must make up the total.
            "counts_missing": denied.saturating_sub(counts.values().sum::<u64>() + lost_reported),
            "counts_add_up": counts.values().sum::<u64>() == denied,
        });
        progress(&format!(
            "  {name}: {} attempts ({} denied) in {:.1} s; {:.0} events/s delivered, {} lost ({} reported); {} lines; counts {} of {} ({} missing)",
            r["attempts"],
            denied,
            secs,
            per_s(c("events_sent")),
            c("events_lost"),
            lost_reported,
            violation_lines,
            res["counts_total"],
            res["counts_expected"],
            res["counts_missing"]
        ));
        out.insert(name.to_owned(), res);
    }
    Ok(Value::Object(out))
}

/// `procs` concurrent `bulkhead-pod flood` processes in the intruder pod, `attempts` in total,
/// each over its own `ports` destination ports; merged report (duration: the slowest process).
fn flood(
    env: &Env,
    server: std::net::Ipv4Addr,
    procs: usize,
    port_from: u16,
    ports: u16,
    attempts: u64,
) -> anyhow::Result<Value> {
    interrupt::check()?;
    let each = attempts / procs as u64;
    let mut children = Vec::new();
    for p in 0..procs {
        let first = port_from.saturating_add(ports.saturating_mul(p as u16));
        let child = env
            .tb
            .pod_command(INTRUDER, &env.pod_bin)?
            .args(["flood", "--ip", &server.to_string()])
            .args(["--port-from", &first.to_string()])
            .args(["--ports", &ports.to_string()])
            .args(["--count", &each.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting bulkhead-pod flood in the intruder pod")?;
        children.push(child);
    }
    let mut total = 0u64;
    let mut ms = 0f64;
    let mut results: BTreeMap<String, u64> = BTreeMap::new();
    for c in children {
        let out = c.wait_with_output().context("waiting for flood")?;
        if !out.status.success() {
            bail!(
                "flood failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout).context("flood output")?;
        total += v["attempts"].as_u64().unwrap_or(0);
        ms = ms.max(v["ms"].as_f64().unwrap_or(0.0));
        for (k, n) in v["results"].as_object().into_iter().flatten() {
            *results.entry(k.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
    }
    Ok(json!({"attempts": total, "ms": ms, "results": results, "processes": procs}))
}
