//! `cargo xtask demo`: the SaaS company of the seed articles on a simulated node.
//!
//! frontend/web may reach payments' API (8443, only the pods behind `payments-api`), payments may
//! reach db on 5432, nothing else crosses. First in monitor mode (everything connects, the
//! violations are logged as AUDIT), then in enforce mode (the same flows fail, logged as DENIED).
//! Everything is torn down at the end and the demo checks nothing is left behind.
use std::{path::Path, process::Command, thread, time::Duration};

use anyhow::{Context as _, bail};
use bulkhead_tests::{
    Options, Scenario, Testbed,
    agent::{AgentProcess, Pinning, agent_command, file_source},
    policy::{baseline, ingress_from, web_to_api},
};

use crate::util::{build_bins, is_root, workspace_root};

/// How long the agent gets to start and to apply a change.
const AGENT_TIMEOUT: Duration = Duration::from_secs(20);

fn policies(mode: &str) -> anyhow::Result<Vec<serde_yaml::Value>> {
    let db = ingress_from("default", "db", &["payments"], &[], &[("TCP", 5432)]);
    [baseline("Deny", mode), web_to_api(), db]
        .iter()
        .map(|d| serde_yaml::from_str(d).context("demo policy YAML"))
        .collect()
}

fn banner(s: &str) {
    println!("\n\x1b[1m=== {s} ===\x1b[0m");
}

/// Runs the demo.
pub fn run() -> anyhow::Result<()> {
    if !is_root() {
        bail!("the demo loads eBPF programs and creates network namespaces: run it as root");
    }
    banner("building firewall-agent and the testbed's pod binary");
    let bin = build_bins(false)?;
    let scenario = Scenario::load(&workspace_root().join("tests/scenarios/saas.yaml"))?;
    banner(
        "simulated node: namespaces frontend, payments, db, kube-system as netns + kubelet cgroups",
    );
    let tb = Testbed::up(
        &scenario,
        &Options {
            pod_binary: bin.join("bulkhead-pod"),
        },
    )?;
    for p in tb.pods() {
        println!("  pod {:<24} uid {}", p.key, p.uid);
    }
    let dir = std::env::temp_dir().join(format!("bulkhead-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let source = dir.join("cluster.yaml");
    tb.write_source(&source, &policies("Monitor")?)?;

    let result = with_agent(&bin.join("firewall-agent"), &tb, &source);
    banner("tearing down");
    let _ = std::fs::remove_dir_all(&dir);
    tear_down(tb, &scenario.name)?;
    result
}

/// Removes the testbed and fails if any of its network namespaces, its bridge or its cgroup root
/// is still there.
fn tear_down(tb: Testbed, scenario: &str) -> anyhow::Result<()> {
    let root = tb.cgroup_root().to_owned();
    let bridge = tb.bridge();
    tb.down()?;
    let netns =
        String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output()?.stdout)
            .into_owned();
    let leftover_ns = netns
        .lines()
        .filter(|l| l.starts_with(&format!("bh-{scenario}-")))
        .count();
    let bridge_left = Path::new("/sys/class/net").join(&bridge).exists();
    println!(
        "  left behind: {} netns, bridge {}, cgroup root {}",
        leftover_ns,
        if bridge_left { "present" } else { "gone" },
        if root.exists() { "present" } else { "gone" }
    );
    if leftover_ns > 0 || bridge_left || root.exists() {
        bail!("the demo left resources behind");
    }
    Ok(())
}

/// The two phases with the agent running; stops it at the end.
fn with_agent(agent: &Path, tb: &Testbed, source: &Path) -> anyhow::Result<()> {
    let source_arg = file_source(source);
    let mut cmd = agent_command(
        &[],
        agent,
        "node-1",
        &["--source", &source_arg],
        tb.cgroup_root(),
        // A demo leaves nothing attached: stopping the agent detaches everything.
        Pinning::Off,
    );
    cmd.args(["--poll-ms", "100"]);
    let agent = AgentProcess::spawn(cmd, None)?;
    agent.wait_message("ready", 1, AGENT_TIMEOUT)?;
    let mut seen = 0;
    banner("MONITOR mode: every connection works; forbidden ones are logged as AUDIT");
    println!("{}", tb.matrix(Duration::from_millis(1000))?);
    banner("violation log (stdout of firewall-agent)");
    print_new(&agent, &mut seen);

    banner("switching the ClusterFirewall default to Enforce (the agent re-reads its source)");
    tb.write_source(source, &policies("Enforce")?)?;
    agent.wait_message("policy applied", 2, AGENT_TIMEOUT)?;
    banner("ENFORCE mode: forbidden connections fail at once (connect() gets EPERM)");
    println!("{}", tb.matrix(Duration::from_millis(1000))?);
    banner("violation log");
    print_new(&agent, &mut seen);
    agent.terminate()?;
    Ok(())
}

/// Prints the violation lines after the first `from`, once the agent had time to log them.
fn print_new(agent: &AgentProcess, from: &mut usize) {
    thread::sleep(Duration::from_millis(1500));
    let v = agent.stdout_lines();
    for l in &v[*from..] {
        println!("  {l}");
    }
    if v.len() == *from {
        println!("  (no violations)");
    }
    *from = v.len();
}
