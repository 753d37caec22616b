//! The agent's `file:` sources: the testbed's own objects plus the bench policy (N namespace-pair
//! rules before the measured one), optionally with the synthetic cluster
//! ([`bulkhead_tests::synthetic`]) around them.
use std::{io::Write as _, path::Path};

use anyhow::Context as _;
use bulkhead_tests::synthetic::{self, standard::Flavour};
use serde_json::{Value, json};

use super::setup::{ECHO_PORT, Env, IPERF_PORT};

/// What to put in a source besides the testbed's objects.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spec {
    /// Add the synthetic namespaces and pods.
    pub synthetic: bool,
    /// Namespace-pair rules (synthetic namespace -> bench-b, one TCP port each) before the rule
    /// that allows the measured flow.
    pub pair_rules: usize,
    /// One NamespaceFirewall per synthetic namespace (1,000 policy objects).
    pub policy_objects: bool,
    /// An extra allowed port on the measured rule (stage 5 changes it to make a policy change).
    pub extra_port: Option<u16>,
    /// Standard policies (NetworkPolicy, ClusterNetworkPolicy) for the synthetic namespaces.
    pub standard: Flavour,
    /// The measured rule also allows UDP on the echo and iperf3 ports (the `floor` stage's UDP
    /// workloads; the other stages keep the TCP-only rule their iptables chain mirrors).
    pub udp: bool,
}

/// The bench policy: a cross-namespace deny baseline and `bench-b`'s NamespaceFirewall.
pub fn policy(spec: &Spec) -> Vec<Value> {
    let mut ingress: Vec<Value> = (0..spec.pair_rules)
        .map(|k| {
            let (ns, port) = synthetic::pair(k);
            json!({"from": {"namespaces": [synthetic::ns_name(ns)]}, "ports": [{"protocol": "TCP", "port": port}]})
        })
        .collect();
    let mut ports = vec![
        json!({"protocol": "TCP", "port": ECHO_PORT}),
        json!({"protocol": "TCP", "port": IPERF_PORT}),
    ];
    if let Some(p) = spec.extra_port {
        ports.push(json!({"protocol": "TCP", "port": p}));
    }
    if spec.udp {
        ports.push(json!({"protocol": "UDP", "port": ECHO_PORT}));
        ports.push(json!({"protocol": "UDP", "port": IPERF_PORT}));
    }
    // The measured flow's rule comes last, as in the iptables chain.
    ingress.push(json!({"from": {"namespaces": ["bench-a"]}, "ports": ports}));
    vec![
        json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": "ClusterFirewall",
            "metadata": {"name": "bench-baseline"},
            "spec": {"priority": 100, "rules": [], "defaults": {"crossNamespace": "Deny"}},
        }),
        json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": "NamespaceFirewall",
            "metadata": {"name": "bench-allow", "namespace": "bench-b"},
            "spec": {"ingress": ingress},
        }),
    ]
}

/// Every object of the source for `spec`: the testbed's, the bench policy, and the synthetic
/// cluster when asked (the `file:` and `kube` stages serve exactly the same objects).
pub fn objects(env: &Env, spec: &Spec) -> anyhow::Result<Vec<Value>> {
    let mut out: Vec<Value> = env
        .tb
        .source_objects(&[])?
        .into_iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()
        .context("converting the testbed's objects")?;
    out.extend(policy(spec));
    if spec.synthetic {
        out.extend(synthetic::cluster(spec.policy_objects));
        out.extend(synthetic::standard::policies(spec.standard));
    }
    Ok(out)
}

/// Writes the source for `spec` to `path` atomically (the agent never reads half a file).
pub fn write(env: &Env, path: &Path, spec: &Spec) -> anyhow::Result<()> {
    let mut text = String::new();
    for o in objects(env, spec)? {
        text.push_str("---\n");
        text.push_str(&serde_json::to_string(&o).context("serializing an object")?);
        text.push('\n');
    }
    let tmp = path.with_extension("tmp-bench");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all().ok();
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
