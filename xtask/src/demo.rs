//! `cargo xtask demo`: the SaaS company of the seed articles on a simulated node.
//!
//! frontend/web may reach payments' API (8443, only the pods behind `payments-api`), payments may
//! reach db on 5432, nothing else crosses. First in monitor mode (everything connects, the
//! violations are logged as AUDIT), then in enforce mode (the same flows fail, logged as DENIED).
//! Everything is torn down at the end and the demo checks nothing is left behind.
use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bulkhead_tests::{Options, Scenario, Testbed};

use crate::util::{cargo, is_root, target_dir, workspace_root};

const POLICIES: &str = r#"
apiVersion: bulkhead.dev/v1alpha1
kind: ClusterFirewall
metadata: {name: baseline}
spec:
  priority: 100
  rules: []
  defaults: {crossNamespace: Deny, mode: MODE}
---
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: web-to-api, namespace: payments}
spec:
  ingress:
    - from: {namespaces: [frontend]}
      services: [payments-api]
      ports: [{protocol: TCP, port: 8443}]
---
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: default, namespace: db}
spec:
  ingress:
    - from: {namespaces: [payments]}
      ports: [{protocol: TCP, port: 5432}]
"#;

fn policies(mode: &str) -> anyhow::Result<Vec<serde_yaml::Value>> {
    POLICIES
        .replace("MODE", mode)
        .split("\n---\n")
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
    let status = cargo()
        .args([
            "build",
            "-p",
            "firewall-agent",
            "-p",
            "bulkhead-tests",
            "--bins",
        ])
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        bail!("build failed ({status})");
    }
    let bin = target_dir()?.join("debug");
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

    let result = with_agent(&bin.join("firewall-agent"), &tb, &source, &dir);
    banner("tearing down");
    let root = tb.cgroup_root().to_owned();
    let bridge = tb.bridge();
    tb.down()?;
    let _ = std::fs::remove_dir_all(&dir);
    let netns =
        String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output()?.stdout)
            .into_owned();
    let leftover_ns = netns
        .lines()
        .filter(|l| l.starts_with(&format!("bh-{}-", scenario.name)))
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
    result
}

fn with_agent(agent: &Path, tb: &Testbed, source: &Path, dir: &Path) -> anyhow::Result<()> {
    let stderr_log = dir.join("agent.log");
    let mut child = Command::new(agent)
        .args([
            "run",
            "--node-name",
            "node-1",
            "--poll-ms",
            "100",
            "--source",
        ])
        .arg(format!("file:{}", source.display()))
        .arg("--cgroup-root")
        .arg(tb.cgroup_root())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_log)?)
        .spawn()
        .context("starting firewall-agent")?;
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let out = child.stdout.take().context("agent stdout")?;
    thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(mut v) = sink.lock() {
                v.push(l);
            }
        }
    });
    let r = phases(&mut child, tb, source, &stderr_log, &lines);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    r
}

fn wait_log(log: &Path, needle: &str, n: usize, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= n {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("firewall-agent exited ({status}):\n{text}");
        }
        if Instant::now() > deadline {
            bail!("firewall-agent did not log {needle:?} in time:\n{text}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn print_new(lines: &Mutex<Vec<String>>, from: &mut usize) {
    thread::sleep(Duration::from_millis(1500));
    let v = lines.lock().map(|v| v.clone()).unwrap_or_default();
    for l in &v[*from..] {
        println!("  {l}");
    }
    if v.len() == *from {
        println!("  (no violations)");
    }
    *from = v.len();
}

fn phases(
    child: &mut Child,
    tb: &Testbed,
    source: &Path,
    log: &Path,
    lines: &Mutex<Vec<String>>,
) -> anyhow::Result<()> {
    wait_log(log, "ready", 1, child)?;
    let mut seen = 0;
    banner("MONITOR mode: every connection works; forbidden ones are logged as AUDIT");
    println!("{}", tb.matrix(Duration::from_millis(1000))?);
    banner("violation log (stdout of firewall-agent)");
    print_new(lines, &mut seen);

    banner("switching the ClusterFirewall default to Enforce (the agent re-reads its source)");
    tb.write_source(source, &policies("Enforce")?)?;
    wait_log(log, "policy applied", 2, child)?;
    banner("ENFORCE mode: forbidden connections fail at once (connect() gets EPERM)");
    println!("{}", tb.matrix(Duration::from_millis(1000))?);
    banner("violation log");
    print_new(lines, &mut seen);
    Ok(())
}
