//! Stage 9, `floor`: Bulkhead's per-run program cost against the floor of the same run.
//!
//! An absolute ns/run from `kernel.bpf_stats_enabled` is mostly bpf_stats' own timing on a VM (an
//! empty program reads ~85 ns here, ../shared/notes/datapath-cost.md), so a cost means something
//! only against an empty program measured the same way. Each repeat runs three setups, in an
//! order rotated per repeat: `empty` (cgroup_skb `return 1`), `lookup` (one LRU hash lookup on
//! the 5-tuple + one per-CPU increment: what the cheapest stateful firewall pays) and `bulkhead`
//! (the agent in enforce mode, the measured flow allowed), each attached alone at the testbed
//! cgroup root, under the same workloads: bulk stream, connect-each and ping-pong, over IPv4 and
//! IPv6, TCP and UDP (UDP has no connect-each). Reported per workload and hook: ns/run of each
//! program, and the lookup's and Bulkhead's ns above the floor and ratio to it (medians over
//! repeats, and paired per repeat); plus Bulkhead's connect4/connect6 costs.
use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{
    Plan,
    agent::Agent,
    floorprog::{self, Variant},
    interrupt,
    progcost::{delta, programs, short, snapshot},
    report::progress,
    setup::{Env, SERVER, Sysctl},
    source::{self, Spec},
    stats::{median, rotated},
    throughput::check_enforcing,
};

/// The setups, in the order of the first repeat.
pub const SETUPS: [&str; 3] = ["empty", "lookup", "bulkhead"];

/// The hooks whose cost is reported against the floor (the floor programs are cgroup_skb only).
pub const HOOKS: [&str; 2] = ["egress", "ingress"];

/// What a workload does on one connection or flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// iperf3 for `plan.iperf_secs`: almost every packet of an established flow.
    Bulk,
    /// A new TCP connection per request: first packets, and the connect4/6 hook.
    ConnectEach,
    /// Round trips on one connection (or one connected UDP socket): small established packets.
    Pingpong,
}

/// One workload: a kind, a transport and an address family.
#[derive(Clone, Copy, Debug)]
struct Workload {
    kind: Kind,
    udp: bool,
    v6: bool,
}

impl Workload {
    /// `tcp4-bulk`, `udp6-pingpong`, `tcp4-connect-each`...
    fn name(self) -> String {
        let kind = match self.kind {
            Kind::Bulk => "bulk",
            Kind::ConnectEach => "connect-each",
            Kind::Pingpong => "pingpong",
        };
        format!(
            "{}{}-{kind}",
            if self.udp { "udp" } else { "tcp" },
            if self.v6 { 6 } else { 4 }
        )
    }
}

/// Every workload, IPv4 first: TCP bulk, UDP bulk, connect-each, TCP ping-pong, UDP ping-pong.
fn workloads() -> Vec<Workload> {
    let per_family = [
        (Kind::Bulk, false),
        (Kind::Bulk, true),
        (Kind::ConnectEach, false),
        (Kind::Pingpong, false),
        (Kind::Pingpong, true),
    ];
    [false, true]
        .into_iter()
        .flat_map(|v6| {
            per_family
                .into_iter()
                .map(move |(kind, udp)| Workload { kind, udp, v6 })
        })
        .collect()
}

/// Runs one workload; returns what it measured (Gbit/s or p50 µs) and a short text.
fn run_workload(env: &Env, plan: &Plan, w: Workload) -> anyhow::Result<(f64, String)> {
    let server = if w.v6 {
        IpAddr::V6(env.tb.pod_ipv6(SERVER)?)
    } else {
        IpAddr::V4(env.ip(SERVER)?)
    };
    let proto = if w.udp { "udp" } else { "tcp" };
    Ok(match w.kind {
        Kind::Bulk => {
            let g = env.iperf_to(server, w.udp, plan.iperf_secs)?;
            (g, format!("{g:.2} Gbit/s"))
        }
        Kind::ConnectEach | Kind::Pingpong => {
            let (mode, n) = if w.kind == Kind::ConnectEach {
                ("connect-each", plan.connects)
            } else {
                ("pingpong", plan.pingpongs)
            };
            let v = env.rr_to(server, proto, mode, n)?;
            let p50 = v["p50_us"].as_f64().unwrap_or(f64::NAN);
            (p50, format!("p50 {p50:.1} us"))
        }
    })
}

/// What a setup has attached at the testbed root while it is measured; dropping it detaches.
enum Setup {
    Floor(floorprog::Attached),
    Bulkhead(Agent),
}

impl Setup {
    fn start(env: &Env, src: &std::path::Path, name: &str) -> anyhow::Result<Setup> {
        let root = env.tb.cgroup_root();
        Ok(match name {
            "empty" => Setup::Floor(floorprog::attach(&env.floor_obj, Variant::Empty, root)?),
            "lookup" => Setup::Floor(floorprog::attach(&env.floor_obj, Variant::Lookup, root)?),
            _ => Setup::Bulkhead(Agent::start(
                env,
                src,
                "enforce",
                &[],
                Duration::from_secs(30),
            )?),
        })
    }

    fn stop(self) -> anyhow::Result<()> {
        match self {
            Setup::Floor(attached) => drop(attached),
            Setup::Bulkhead(agent) => drop(agent.stop()?),
        }
        Ok(())
    }
}

/// `cgroup_inet_egress` -> `egress`, `cgroup_inet4_connect` -> `connect4`.
fn hook_name(attach_type: &str) -> String {
    match short(attach_type) {
        "inet4_connect" => "connect4".to_owned(),
        "inet6_connect" => "connect6".to_owned(),
        other => other.to_owned(),
    }
}

/// Per (workload, setup, hook): ns/run per repeat (NaN where the hook did not run), and runs.
type Samples = BTreeMap<(String, &'static str, String), (Vec<f64>, u64)>;

/// Runs stage 9.
pub fn run(env: &Env, plan: &Plan) -> anyhow::Result<Value> {
    let _stats = Sysctl::set("kernel.bpf_stats_enabled", "1")?;
    let src = env.dir.join("floor.yaml");
    source::write(
        env,
        &src,
        &Spec {
            udp: true,
            ..Spec::default()
        },
    )?;
    let all = workloads();
    let mut samples = Samples::new();
    let mut measured: BTreeMap<(String, &'static str), Vec<f64>> = BTreeMap::new();
    let mut checked = false;
    for r in 0..plan.repeats {
        for setup in rotated(&SETUPS, r) {
            interrupt::check()?;
            let attached = Setup::start(env, &src, setup)?;
            if setup == "bulkhead" && !checked {
                check_enforcing(env)?;
                checked = true;
            }
            let progs = programs(env)?;
            for &w in &all {
                let s0 = snapshot()?;
                let (value, text) = run_workload(env, plan, w)
                    .with_context(|| format!("{} with {setup}", w.name()))?;
                let s1 = snapshot()?;
                let mut costs = Vec::new();
                for (t, (ns, runs)) in delta(&progs, &s0, &s1) {
                    let hook = hook_name(&t);
                    if runs > 0 {
                        costs.push(format!("{hook} {ns:.0}"));
                    }
                    let e = samples
                        .entry((w.name(), setup, hook))
                        .or_insert_with(|| (vec![f64::NAN; plan.repeats], 0));
                    if runs > 0 {
                        e.0[r] = ns;
                        e.1 += runs;
                    }
                }
                measured.entry((w.name(), setup)).or_default().push(value);
                progress(&format!(
                    "  floor repeat {}/{} {setup:<8} {:<18} {} ns/run ({text})",
                    r + 1,
                    plan.repeats,
                    w.name(),
                    costs.join(", ")
                ));
            }
            attached.stop()?;
        }
    }
    Ok(summarise(plan, &all, &samples, &measured))
}

/// One program's figures: median ns/run, every repeat's, total runs.
fn program(samples: &Samples, w: &str, setup: &'static str, hook: &str) -> Option<(f64, Value)> {
    let (v, runs) = samples.get(&(w.to_owned(), setup, hook.to_owned()))?;
    let m = median(v);
    let finite: Vec<Value> = v
        .iter()
        .map(|x| if x.is_finite() { json!(x) } else { Value::Null })
        .collect();
    Some((
        m,
        json!({"ns_per_run_median": m, "ns_per_run": finite, "runs": runs}),
    ))
}

/// Median over repeats of `f(program[r], floor[r])`: each setup against the floor of its own
/// repeat, so a drift of the machine between repeats cancels out.
fn paired(
    samples: &Samples,
    w: &str,
    setup: &'static str,
    hook: &str,
    f: fn(f64, f64) -> f64,
) -> f64 {
    let get = |s| samples.get(&(w.to_owned(), s, hook.to_owned()));
    let (Some((a, _)), Some((b, _))) = (get(setup), get("empty")) else {
        return f64::NAN;
    };
    let v: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(a, b)| a.is_finite() && b.is_finite() && **b > 0.0)
        .map(|(a, b)| f(*a, *b))
        .collect();
    if v.is_empty() { f64::NAN } else { median(&v) }
}

/// The JSON of the stage: per workload and hook, each program and its distance to the floor.
fn summarise(
    plan: &Plan,
    all: &[Workload],
    samples: &Samples,
    measured: &BTreeMap<(String, &'static str), Vec<f64>>,
) -> Value {
    let num = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
    let mut by = serde_json::Map::new();
    for w in all.iter().map(|w| w.name()) {
        let mut hooks = serde_json::Map::new();
        for hook in HOOKS {
            let Some((floor, empty)) = program(samples, &w, "empty", hook) else {
                continue;
            };
            let mut h = serde_json::Map::new();
            h.insert("empty".into(), empty);
            for setup in ["lookup", "bulkhead"] {
                let Some((m, v)) = program(samples, &w, setup, hook) else {
                    continue;
                };
                h.insert(setup.into(), v);
                h.insert(format!("{setup}_above_floor_ns"), num(m - floor));
                h.insert(format!("{setup}_ratio_to_floor"), num(m / floor));
                h.insert(
                    format!("{setup}_above_floor_ns_paired"),
                    num(paired(samples, &w, setup, hook, |a, b| a - b)),
                );
                h.insert(
                    format!("{setup}_ratio_to_floor_paired"),
                    num(paired(samples, &w, setup, hook, |a, b| a / b)),
                );
            }
            hooks.insert(hook.into(), Value::Object(h));
        }
        // Bulkhead's connect4/connect6 programs (the floor has no sock_addr counterpart).
        for hook in ["connect4", "connect6"] {
            if let Some((_, v)) = program(samples, &w, "bulkhead", hook)
                && v["runs"].as_u64().unwrap_or(0) > 0
            {
                hooks.insert(hook.into(), json!({"bulkhead": v}));
            }
        }
        let results: serde_json::Map<String, Value> = SETUPS
            .iter()
            .map(|s| {
                let v = measured.get(&(w.clone(), *s)).cloned().unwrap_or_default();
                let unit = if w.ends_with("-bulk") {
                    "Gbit/s"
                } else {
                    "p50_us"
                };
                (
                    (*s).to_owned(),
                    json!({"median": median(&v), "runs": v, "unit": unit}),
                )
            })
            .collect();
        hooks.insert("workload_result".into(), Value::Object(results));
        by.insert(w, Value::Object(hooks));
    }
    json!({
        "setups": SETUPS,
        "workloads": all.iter().map(|w| w.name()).collect::<Vec<_>>(),
        "iperf_secs": plan.iperf_secs, "connects": plan.connects, "pingpongs": plan.pingpongs,
        "udp_bulk": "iperf3 -u -b 0 -l 1200",
        "by_workload": by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_workloads_named_as_reported() {
        let names: Vec<String> = workloads().into_iter().map(Workload::name).collect();
        assert_eq!(
            names,
            [
                "tcp4-bulk",
                "udp4-bulk",
                "tcp4-connect-each",
                "tcp4-pingpong",
                "udp4-pingpong",
                "tcp6-bulk",
                "udp6-bulk",
                "tcp6-connect-each",
                "tcp6-pingpong",
                "udp6-pingpong",
            ]
        );
        assert_eq!(hook_name("cgroup_inet6_connect"), "connect6");
        assert_eq!(hook_name("cgroup_inet_ingress"), "ingress");
    }

    #[test]
    fn above_the_floor_per_repeat_and_of_medians() {
        let mut s = Samples::new();
        let key = |setup| ("tcp4-bulk".to_owned(), setup, "egress".to_owned());
        s.insert(key("empty"), (vec![100.0, 80.0, f64::NAN], 10));
        s.insert(key("bulkhead"), (vec![900.0, 880.0, 700.0], 10));
        // Repeat 3 has no floor figure: it is left out of the paired figures.
        assert_eq!(
            paired(&s, "tcp4-bulk", "bulkhead", "egress", |a, b| a - b),
            800.0
        );
        assert_eq!(
            paired(&s, "tcp4-bulk", "bulkhead", "egress", |a, b| a / b),
            10.0
        );
        let v = summarise(
            &Plan::new(true, Some(3)),
            &workloads()[..1],
            &s,
            &BTreeMap::new(),
        );
        let h = &v["by_workload"]["tcp4-bulk"]["egress"];
        assert_eq!(h["bulkhead_above_floor_ns"], 790.0);
        assert_eq!(h["empty"]["ns_per_run"][2], Value::Null);
    }
}
