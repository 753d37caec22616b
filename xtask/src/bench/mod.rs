//! `cargo xtask bench`: performance figures for Bulkhead on a simulated node (root; not part of
//! the test suite).
//!
//! One testbed (subnet 40, scenario `bench`: a client pod, a server pod and an intruder pod in
//! three namespaces), then the stages asked for, each reporting medians over repeated runs with
//! its baseline measured in the same run, setups interleaved per repeat:
//! 1. `throughput`: iperf3 pod -> pod, no agent / agent monitor / agent enforce.
//! 2. `latency`: request/response on new connections and on one connection (p50/p99).
//! 3. `progcost`: ns per program run from `kernel.bpf_stats_enabled` at 10..10,000 rules.
//! 4. `iptables`: the same rules as an iptables chain on the bridge path, vs Bulkhead.
//! 5. `compile`: start-to-ready, one policy change (compile + apply), RSS at 10k pods.
//! 6. `storm`: denied-connection storms: events delivered, lines printed, events lost.
//! 7. `kube`: `--source kube` at 10k pods against the API server emulator: start to ready,
//!    API change to applied (p50/p99), RSS.
//! 8. `identities`: standard policies at 10k pods (none / by namespace only / pod selectors):
//!    identities, policy entries, compile + apply time, RSS, as ratios to Bulkhead's alone.
//! 9. `floor`: Bulkhead's programs against an empty cgroup_skb program (and one doing a single
//!    hash lookup) on the same hooks and workloads (bulk, connect-each, ping-pong; IPv4/IPv6;
//!    TCP/UDP): ns above the floor and ratio to it. The summary table leads with it.
//! 10. `paths`: each datapath path alone (TCP SYN, established TCP ACK and UDP in both
//!     directions; IPv4/IPv6; egress/ingress) with `BPF_PROG_TEST_RUN`, against the empty program
//!     on the same frame: ns per run, ns above the empty program, ratio.
//!
//! Everything it creates (testbed, iptables chain, sysctls) is removed or restored on the way
//! out, including on error and on Ctrl-C.
mod agent;
mod compile;
mod floor;
mod floorprog;
mod identities;
mod interrupt;
mod iptables;
mod kube;
mod latency;
mod paths;
mod pieces;
mod progcost;
mod report;
mod setup;
mod source;
mod stats;
mod storm;
mod throughput;

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::util::is_root;

/// The stages of `cargo xtask bench`, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// 1. TCP throughput (iperf3): no agent vs monitor vs enforce.
    Throughput,
    /// 2. Request/response latency: new connection per request, and ping-pong.
    Latency,
    /// 3. Per-packet program cost (kernel bpf_stats) at 10..10,000 rules, 10,000 pods.
    Progcost,
    /// 4. The same rules as iptables: throughput and connection rate vs Bulkhead.
    Iptables,
    /// 5. Compile + apply time and agent RSS at 10,000 pods / 1,000 namespaces / 1,000 policies.
    Compile,
    /// 6. A storm of denied connections: events delivered, lines printed, events lost.
    Storm,
    /// 7. The Kubernetes source at 10,000 pods through the API server emulator.
    Kube,
    /// 8. Identities, policy entries, compile time and RSS at 10,000 pods with standard policies.
    Identities,
    /// 9. Program cost above an empty program's (the floor), IPv4/IPv6, TCP/UDP.
    Floor,
    /// 10. Each datapath path alone (BPF_PROG_TEST_RUN) against the empty program.
    Paths,
}

impl Stage {
    const ALL: [Stage; 10] = [
        Stage::Throughput,
        Stage::Latency,
        Stage::Progcost,
        Stage::Iptables,
        Stage::Compile,
        Stage::Storm,
        Stage::Kube,
        Stage::Identities,
        Stage::Floor,
        Stage::Paths,
    ];

    fn name(self) -> &'static str {
        match self {
            Stage::Throughput => "throughput",
            Stage::Latency => "latency",
            Stage::Progcost => "progcost",
            Stage::Iptables => "iptables",
            Stage::Compile => "compile",
            Stage::Storm => "storm",
            Stage::Kube => "kube",
            Stage::Identities => "identities",
            Stage::Floor => "floor",
            Stage::Paths => "paths",
        }
    }
}

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Fewer repeats and shorter runs: a smoke run, not figures to quote.
    #[arg(long)]
    quick: bool,
    /// Also write the raw results (every repeat) as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run only these stages (repeatable; default: all).
    #[arg(long, value_enum)]
    only: Vec<Stage>,
    /// Override the number of repeats per measurement.
    #[arg(long)]
    repeats: Option<usize>,
    /// Measure nothing: print the summary table of an earlier `--out` file.
    #[arg(long, value_name = "RESULTS_JSON")]
    table_from: Option<PathBuf>,
}

/// How long and how often to measure.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Repeats per measurement (medians are over these).
    pub repeats: usize,
    /// iperf3 duration in seconds (after one omitted second).
    pub iperf_secs: u32,
    /// Requests per connect-each run.
    pub connects: u64,
    /// Round trips per ping-pong run.
    pub pingpongs: u64,
    /// Rule counts for stages 3 and 4.
    pub rule_counts: &'static [usize],
    /// Policy changes timed in stage 5.
    pub changes: usize,
    /// Attempts per storm in stage 6.
    pub storm_attempts: u64,
    /// Whether this is a `--quick` run.
    pub quick: bool,
}

impl Plan {
    fn new(quick: bool, repeats: Option<usize>) -> Plan {
        let mut p = if quick {
            Plan {
                repeats: 2,
                iperf_secs: 1,
                connects: 500,
                pingpongs: 2000,
                rule_counts: &[10, 10_000],
                changes: 5,
                storm_attempts: 5_000,
                quick,
            }
        } else {
            Plan {
                repeats: 5,
                iperf_secs: 3,
                connects: 2000,
                pingpongs: 10_000,
                rule_counts: &[10, 100, 1_000, 10_000],
                changes: 20,
                storm_attempts: 200_000,
                quick,
            }
        };
        if let Some(r) = repeats {
            p.repeats = r.max(1);
        }
        p
    }
}

/// Runs the benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.table_from {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let all: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        println!("{}", report::table(&all));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "the benchmark loads eBPF programs, creates network namespaces and iptables rules: run it as root"
        );
    }
    interrupt::install();
    let plan = Plan::new(args.quick, args.repeats);
    let stages: Vec<Stage> = if args.only.is_empty() {
        Stage::ALL.to_vec()
    } else {
        Stage::ALL
            .into_iter()
            .filter(|s| args.only.contains(s))
            .collect()
    };
    setup::ensure_tools()?;
    let bins = setup::build()?;
    let machine = setup::machine();
    report::progress(&format!(
        "machine: {} ({} CPUs), kernel {}",
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["cpus"],
        machine["kernel"].as_str().unwrap_or("?")
    ));
    let env = setup::Env::up(&bins)?;
    let mut results = serde_json::Map::new();
    let mut failed = Vec::new();
    for stage in stages {
        if interrupt::requested() {
            break;
        }
        report::stage(stage.name());
        let r = match stage {
            Stage::Throughput => throughput::run(&env, &plan),
            Stage::Latency => latency::run(&env, &plan),
            Stage::Progcost => progcost::run(&env, &plan),
            Stage::Iptables => iptables::run(&env, &plan),
            Stage::Compile => compile::run(&env, &plan),
            Stage::Storm => storm::run(&env, &plan),
            Stage::Kube => kube::run(&env, &plan),
            Stage::Identities => identities::run(&env, &plan),
            Stage::Floor => floor::run(&env, &plan),
            Stage::Paths => paths::run(&env, &plan),
        };
        match r {
            Ok(v) => {
                results.insert(stage.name().to_owned(), v);
            }
            Err(e) => {
                report::progress(&format!("stage {} FAILED: {e:#}", stage.name()));
                results.insert(stage.name().to_owned(), json!({"error": format!("{e:#}")}));
                failed.push(stage.name());
            }
        }
    }
    let env_info = env.info();
    let down = env.down();
    let all = json!({
        "machine": machine,
        "plan": {
            "quick": plan.quick, "repeats": plan.repeats, "iperf_secs": plan.iperf_secs,
            "connects": plan.connects, "pingpongs": plan.pingpongs,
            "rule_counts": plan.rule_counts, "changes": plan.changes,
            "storm_attempts": plan.storm_attempts,
        },
        "testbed": env_info,
        "results": Value::Object(results),
    });
    println!("{}", report::table(&all));
    if let Some(path) = &args.out {
        let text = serde_json::to_string_pretty(&all)?;
        std::fs::write(path, text + "\n")?;
        report::progress(&format!("raw results written to {}", path.display()));
    }
    down?;
    if interrupt::requested() {
        bail!("interrupted (everything the benchmark created was removed)");
    }
    if !failed.is_empty() {
        bail!("stages failed: {}", failed.join(", "));
    }
    Ok(())
}
