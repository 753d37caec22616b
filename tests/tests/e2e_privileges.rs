//! Least privilege, proved: the real agent runs with exactly the capabilities the DaemonSet
//! grants (read from deploy/daemonset.yaml, everything else dropped with `setpriv`) and enforces;
//! with any one of them taken away it refuses to start and names the missing capability.
//! Needs root (to hand out the capabilities); skips loudly otherwise.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
mod common;

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use bulkhead_tests::{policy::baseline, skip_unless_root};
use common::{
    agent::{Agent, agent_bin},
    node::Node,
};

const PODS: &str = r#"
namespaces:
  - {name: a}
  - {name: b}
pods:
  - {name: client, namespace: a, serve: [{protocol: TCP, port: 80}]}
  - {name: server, namespace: b, serve: [{protocol: TCP, port: 80}]}
"#;

/// `securityContext.capabilities.add` of the agent container in deploy/daemonset.yaml.
fn daemonset_capabilities() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/daemonset.yaml");
    let ds: serde_yaml::Value = serde_yaml::from_str(&text).expect("DaemonSet YAML");
    let add =
        &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"];
    let caps: Vec<String> = add
        .as_sequence()
        .expect("capabilities.add")
        .iter()
        .map(|c| c.as_str().expect("capability name").to_owned())
        .collect();
    assert!(!caps.is_empty());
    caps
}

/// `setpriv` keeping only `caps` (bounding, inheritable and ambient sets) for the exec'd agent.
fn setpriv(caps: &[String]) -> Vec<String> {
    let list = caps
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect::<Vec<_>>()
        .join(",");
    let sets = format!("-all,{list}");
    vec![
        "setpriv".into(),
        format!("--bounding-set={sets}"),
        format!("--inh-caps={sets}"),
        format!("--ambient-caps={sets}"),
        "--".into(),
    ]
}

/// The DaemonSet's capabilities, and a node whose baseline denies across namespaces and enforces
/// (so a working agent shows as `a/client -> b/server` denied).
fn capabilities_and_enforcing_node(name: &str, subnet: u8) -> (Vec<String>, Node) {
    let caps = daemonset_capabilities();
    (
        caps,
        Node::up(name, subnet, PODS, &[&baseline("Deny", "Enforce")]),
    )
}

/// Bit numbers of capability names (the ones this test deals with).
fn bit(name: &str) -> u32 {
    match name {
        "NET_ADMIN" => 12,
        "SYS_ADMIN" => 21,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("unexpected capability {other} in the DaemonSet"),
    }
}

#[test]
fn the_agent_enforces_with_only_the_daemonsets_capabilities() {
    skip_unless_root!("the_agent_enforces_with_only_the_daemonsets_capabilities");
    let (caps, node) = capabilities_and_enforcing_node("caps", 24);
    let agent = Agent::start_wrapped(
        &setpriv(&caps),
        node.source(),
        node.testbed().cgroup_root(),
        "node-1",
        &[],
    );
    // It really runs with exactly those capabilities...
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).expect("status");
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("CapEff");
    let want = caps.iter().fold(0u64, |acc, c| acc | (1 << bit(c)));
    assert_eq!(
        eff, want,
        "effective capabilities {eff:#x}, expected {want:#x} ({caps:?})"
    );
    // ...and enforces.
    assert_eq!(node.tcp("a/client", "b/server", 80).result, "denied");
    drop(agent);
}

#[test]
fn each_missing_capability_is_named() {
    skip_unless_root!("each_missing_capability_is_named");
    let (caps, node) = capabilities_and_enforcing_node("nocap", 25);
    let source = format!("file:{}", node.source().display());
    for missing in &caps {
        let kept: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let wrapper = setpriv(&kept);
        let out = Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .arg(agent_bin())
            .args([
                "run",
                "--node-name",
                "node-1",
                "--source",
                &source,
                "--no-pin",
                "--cgroup-root",
            ])
            .arg(node.testbed().cgroup_root())
            .stdin(Stdio::null())
            .output()
            .expect("run the agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "ran without CAP_{missing}:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("missing capability CAP_{missing}")),
            "without CAP_{missing} the error does not name it:\n{stderr}"
        );
    }
}
