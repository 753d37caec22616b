//! Stage 2: request/response latency client -> server (TCP echo): a new connection per request
//! (`connect-each`, closed with RST) and one long connection (`pingpong`); p50/p99 per run, medians
//! over repeats, for the three setups of stage 1.
use serde_json::{Value, json};

use super::{
    Plan,
    setup::Env,
    stats::{median, paired_ratio, ratio},
    throughput::per_setup,
};

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

/// Runs stage 2.
pub fn run(env: &Env, plan: &Plan) -> anyhow::Result<Value> {
    let runs = per_setup(env, plan, "rr", |env| {
        let c = env.rr("connect-each", plan.connects)?;
        let p = env.rr("pingpong", plan.pingpongs)?;
        let text = format!(
            "connect-each p50 {:.0} us p99 {:.0} us ({:.0}/s); pingpong p50 {:.1} us p99 {:.1} us",
            f(&c, "p50_us"),
            f(&c, "p99_us"),
            f(&c, "rate_per_s"),
            f(&p, "p50_us"),
            f(&p, "p99_us")
        );
        Ok(((c, p), text))
    })?;
    let summary = |runs: &[(Value, Value)], pick: fn(&(Value, Value)) -> &Value| {
        let col = |k: &str| median(&runs.iter().map(|r| f(pick(r), k)).collect::<Vec<_>>());
        json!({"p50_us": col("p50_us"), "p99_us": col("p99_us"), "rate_per_s": col("rate_per_s")})
    };
    let mut setups = serde_json::Map::new();
    let none = runs.get("none").cloned().unwrap_or_default();
    let base_c = summary(&none, |r| &r.0);
    let base_p = summary(&none, |r| &r.1);
    for (setup, v) in &runs {
        let c = summary(v, |r| &r.0);
        let p = summary(v, |r| &r.1);
        let ratios = json!({
            "connect_each_p50": ratio(f(&c, "p50_us"), f(&base_c, "p50_us")),
            "connect_each_p99": ratio(f(&c, "p99_us"), f(&base_c, "p99_us")),
            "pingpong_p50": ratio(f(&p, "p50_us"), f(&base_p, "p50_us")),
            "pingpong_p99": ratio(f(&p, "p99_us"), f(&base_p, "p99_us")),
        });
        let col = |runs: &[(Value, Value)], which: usize, k: &str| -> Vec<f64> {
            runs.iter()
                .map(|r| f(if which == 0 { &r.0 } else { &r.1 }, k))
                .collect()
        };
        let paired = json!({
            "connect_each_p50": paired_ratio(&col(v, 0, "p50_us"), &col(&none, 0, "p50_us")),
            "connect_each_p99": paired_ratio(&col(v, 0, "p99_us"), &col(&none, 0, "p99_us")),
            "pingpong_p50": paired_ratio(&col(v, 1, "p50_us"), &col(&none, 1, "p50_us")),
            "pingpong_p99": paired_ratio(&col(v, 1, "p99_us"), &col(&none, 1, "p99_us")),
        });
        setups.insert(
            (*setup).to_owned(),
            json!({
                "connect_each": c, "pingpong": p, "ratio_to_none": ratios,
                "paired_ratio_to_none": paired,
                "runs": v.iter().map(|(c, p)| json!({"connect_each": c, "pingpong": p})).collect::<Vec<_>>(),
            }),
        );
    }
    Ok(json!({"connects": plan.connects, "pingpongs": plan.pingpongs, "setups": setups}))
}
