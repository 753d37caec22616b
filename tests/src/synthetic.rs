//! A synthetic cluster around a testbed: 1,000 namespaces, 10,000 pods (one in 100 on this node,
//! with no process and no cgroup), and optionally one NamespaceFirewall per namespace, so that the
//! agent's identity and policy maps hold production-sized contents while measured flows stay
//! between real testbed pods. Deterministic: the same objects on every run.
pub mod standard;

use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// Synthetic namespaces `syn-0000`...
pub const SYN_NAMESPACES: usize = 1000;
/// Synthetic pods, spread evenly over the synthetic namespaces.
pub const SYN_PODS: usize = 10_000;
/// One synthetic pod in this many is scheduled on this node: 100 local pods, a typical node's
/// count.
pub const LOCAL_EVERY: usize = 100;

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

/// The name of synthetic namespace `i`.
pub fn ns_name(i: usize) -> String {
    format!("syn-{i:04}")
}

/// The whole synthetic cluster: a second node, the namespaces, their pods and, with
/// `policy_objects`, one NamespaceFirewall per namespace.
pub fn cluster(policy_objects: bool) -> Vec<Value> {
    let mut out = vec![json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-2"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.63.0.2"}]},
    })];
    for i in 0..SYN_NAMESPACES {
        let name = ns_name(i);
        out.push(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, "team": format!("t{}", i % 10)}},
            "status": {"phase": "Active"},
        }));
        out.extend(pods(i));
        if policy_objects {
            out.push(namespace_policy(i));
        }
    }
    out
}

/// What a synthetic pod runs: its `app` and `tier` labels and its named container port. Bulkhead's
/// own policies never read them; the standard policies of [`standard`] select by them.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// The `app` label.
    pub app: &'static str,
    /// The `tier` label.
    pub tier: &'static str,
    /// A named TCP container port: (name, number).
    pub port: Option<(&'static str, u16)>,
}

/// The workloads, a small vocabulary: each namespace runs all of them.
pub const WORKLOADS: [Workload; 4] = [
    Workload {
        app: "web",
        tier: "frontend",
        port: Some(("http", 8080)),
    },
    Workload {
        app: "api",
        tier: "backend",
        port: Some(("http", 8080)),
    },
    Workload {
        app: "worker",
        tier: "backend",
        port: None,
    },
    Workload {
        app: "db",
        tier: "data",
        port: Some(("postgres", 5432)),
    },
];

/// The pods of synthetic namespace `i`: labelled `app` and `tier` from [`WORKLOADS`] and with a
/// per-pod `pod-template-hash` no selector uses.
fn pods(i: usize) -> impl Iterator<Item = Value> {
    let per_ns = SYN_PODS / SYN_NAMESPACES;
    let net = ns_net(i).octets();
    let name = ns_name(i);
    (0..per_ns).map(move |j| {
        let n = i * per_ns + j;
        let ip = Ipv4Addr::new(net[0], net[1], net[2], 10 + j as u8).to_string();
        let node = if n.is_multiple_of(LOCAL_EVERY) {
            "node-1"
        } else {
            "node-2"
        };
        // Offset per block of LOCAL_EVERY pods, so that this node's pods (the first of each
        // block) run every workload, and each namespace still runs all of them.
        let w = WORKLOADS[(n / LOCAL_EVERY + j) % WORKLOADS.len()];
        let ports: Vec<Value> = w
            .port
            .map(|(name, port)| json!({"name": name, "containerPort": port, "protocol": "TCP"}))
            .into_iter()
            .collect();
        let labels = json!({"app": w.app, "tier": w.tier, "pod-template-hash": format!("h{j}")});
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p{j}"), "namespace": name, "uid": format!("00000000-0000-4000-8000-{n:012x}"), "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "x", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
        })
    })
}

/// Synthetic namespace `i`'s NamespaceFirewall: two ingress rules (named peers, a team selector)
/// and one egress rule.
fn namespace_policy(i: usize) -> Value {
    let peer = |d: usize| ns_name((i + d) % SYN_NAMESPACES);
    json!({
        "apiVersion": "bulkhead.dev/v1alpha1", "kind": "NamespaceFirewall",
        "metadata": {"name": "default", "namespace": ns_name(i)},
        "spec": {
            "ingress": [
                {"from": {"namespaces": [peer(1), peer(7)]}, "ports": [{"protocol": "TCP", "port": 8080}]},
                {"from": {"namespaceSelector": {"matchLabels": {"team": format!("t{}", (i + 3) % 10)}}}, "ports": [{"protocol": "TCP", "port": 9090}]},
            ],
            "egress": [
                {"to": {"namespaces": [peer(3)]}, "ports": [{"protocol": "TCP", "port": 5432}]},
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_local_pods() {
        let all = cluster(true);
        let count = |kind: &str| all.iter().filter(|o| o["kind"] == kind).count();
        assert_eq!(count("Namespace"), SYN_NAMESPACES);
        assert_eq!(count("Pod"), SYN_PODS);
        assert_eq!(count("NamespaceFirewall"), SYN_NAMESPACES);
        let local = all
            .iter()
            .filter(|o| o["spec"]["nodeName"] == "node-1")
            .count();
        assert_eq!(local, SYN_PODS / LOCAL_EVERY);
        assert_eq!(cluster(false).len(), 1 + SYN_NAMESPACES + SYN_PODS);
        // This node's pods run every workload, 25 each.
        for Workload { app, .. } in WORKLOADS {
            let here = all
                .iter()
                .filter(|o| {
                    o["spec"]["nodeName"] == "node-1" && o["metadata"]["labels"]["app"] == app
                })
                .count();
            assert_eq!(here, SYN_PODS / LOCAL_EVERY / WORKLOADS.len(), "{app}");
        }
    }
}
