//! The agent's `file:` sources: the testbed's own objects plus the bench policy, optionally with a
//! synthetic cluster around them (1,000 namespaces, 10,000 pods, N namespace-pair rules, 1,000
//! policy objects) so that the identity and policy maps hold production-sized contents while the
//! measured flow stays between two real testbed pods.
use std::{io::Write as _, net::Ipv4Addr, path::Path};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::setup::{ECHO_PORT, Env, IPERF_PORT};

/// Synthetic namespaces `syn-0000`...
pub const SYN_NAMESPACES: usize = 1000;
/// Synthetic pods, spread evenly over the synthetic namespaces.
pub const SYN_PODS: usize = 10_000;
/// One synthetic pod in this many is scheduled on this node (no process, no cgroup): 100 local
/// pods, a typical node's count.
pub const LOCAL_EVERY: usize = 100;

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
}

/// The `/24` of synthetic namespace `i`: 10.(64 + i / 256).(i % 256).0.
pub fn ns_net(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 64 + (i / 256) as u8, (i % 256) as u8, 0)
}

/// Pair rule `k`: (source synthetic namespace, destination TCP port). Distinct for k < 64,000.
pub fn pair(k: usize) -> (usize, u16) {
    let ns = k % SYN_NAMESPACES;
    let port = 20_000 + (k / SYN_NAMESPACES) as u16;
    (ns, port)
}

fn syn_ns_name(i: usize) -> String {
    format!("syn-{i:04}")
}

/// The bench policy: a cross-namespace deny baseline and `bench-b`'s NamespaceFirewall.
pub fn policy(spec: &Spec) -> Vec<Value> {
    let mut ingress: Vec<Value> = (0..spec.pair_rules)
        .map(|k| {
            let (ns, port) = pair(k);
            json!({"from": {"namespaces": [syn_ns_name(ns)]}, "ports": [{"protocol": "TCP", "port": port}]})
        })
        .collect();
    let mut ports = vec![
        json!({"protocol": "TCP", "port": ECHO_PORT}),
        json!({"protocol": "TCP", "port": IPERF_PORT}),
    ];
    if let Some(p) = spec.extra_port {
        ports.push(json!({"protocol": "TCP", "port": p}));
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

fn synthetic(spec: &Spec, out: &mut Vec<Value>) {
    let per_ns = SYN_PODS / SYN_NAMESPACES;
    let mut doc = |v: Value| out.push(v);
    doc(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-2"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.63.0.2"}]},
    }));
    for i in 0..SYN_NAMESPACES {
        let name = syn_ns_name(i);
        doc(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, "team": format!("t{}", i % 10)}},
            "status": {"phase": "Active"},
        }));
        let net = ns_net(i).octets();
        for j in 0..per_ns {
            let n = i * per_ns + j;
            let ip = Ipv4Addr::new(net[0], net[1], net[2], 10 + j as u8).to_string();
            let node = if n.is_multiple_of(LOCAL_EVERY) {
                "node-1"
            } else {
                "node-2"
            };
            doc(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{j}"), "namespace": name, "uid": format!("00000000-0000-4000-8000-{n:012x}"), "labels": {"app": format!("a{}", j % 3)}},
                "spec": {"nodeName": node, "containers": [{"name": "main", "image": "x"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
            }));
        }
        if spec.policy_objects {
            let peer = |d: usize| syn_ns_name((i + d) % SYN_NAMESPACES);
            doc(json!({
                "apiVersion": "bulkhead.dev/v1alpha1", "kind": "NamespaceFirewall",
                "metadata": {"name": "default", "namespace": name},
                "spec": {
                    "ingress": [
                        {"from": {"namespaces": [peer(1), peer(7)]}, "ports": [{"protocol": "TCP", "port": 8080}]},
                        {"from": {"namespaceSelector": {"matchLabels": {"team": format!("t{}", (i + 3) % 10)}}}, "ports": [{"protocol": "TCP", "port": 9090}]},
                    ],
                    "egress": [
                        {"to": {"namespaces": [peer(3)]}, "ports": [{"protocol": "TCP", "port": 5432}]},
                    ],
                },
            }));
        }
    }
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
        synthetic(spec, &mut out);
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
