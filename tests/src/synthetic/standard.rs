//! Standard policies (NetworkPolicy, ClusterNetworkPolicy) for the synthetic cluster, in two
//! flavours: selecting only by namespace (which must not split identities), and a realistic use
//! of pod selectors, named ports and CIDRs (which splits each namespace's pods by workload).
//! Deterministic, like the cluster: the same objects on every run.
use serde_json::{Value, json};

use super::{SYN_NAMESPACES, ns_name};

/// Which standard policies to add.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavour {
    /// None.
    #[default]
    None,
    /// Per namespace: default-deny ingress, allow from the own namespace, allow one team's
    /// namespaces on TCP 8080 (3 NetworkPolicies); one Admin ClusterNetworkPolicy by namespace
    /// labels. No pod selector, CIDR or named port anywhere.
    NamespaceOnly,
    /// Per namespace: default-deny ingress, then `web` (from the own namespace and one team's,
    /// named port `http`), `api` (from frontends, and from another team's `api` pods, named port
    /// `http`) and `db` (ingress from backends on TCP 5432, egress only to other databases):
    /// 4 NetworkPolicies. Four ClusterNetworkPolicies: Admin by namespace labels, Admin by pods
    /// (frontends never reach databases), Admin egress deny of the metadata address (CIDR), and a
    /// Baseline accept from a pod-range CIDR on a port.
    Selectors,
}

/// Every standard policy object of `flavour`.
pub fn policies(flavour: Flavour) -> Vec<Value> {
    let per_ns: fn(usize) -> Vec<Value> = match flavour {
        Flavour::None => return Vec::new(),
        Flavour::NamespaceOnly => namespace_only,
        Flavour::Selectors => selectors,
    };
    let mut out: Vec<Value> = (0..SYN_NAMESPACES).flat_map(per_ns).collect();
    out.push(team_isolation());
    if flavour == Flavour::Selectors {
        out.extend(cluster_selectors());
    }
    out
}

/// The team label of synthetic namespace `i` (as [`super::cluster`] sets it).
fn team(i: usize) -> String {
    format!("t{}", i % 10)
}

fn netpol(ns: usize, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns_name(ns)},
        "spec": spec,
    })
}

fn cnp(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn default_deny(i: usize) -> Value {
    netpol(
        i,
        "default-deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )
}

fn namespace_only(i: usize) -> Vec<Value> {
    let partner = team(i + 3);
    vec![
        default_deny(i),
        netpol(
            i,
            "allow-same-namespace",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        ),
        netpol(
            i,
            "allow-partner-team",
            json!({"podSelector": {}, "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"team": partner}}}],
                "ports": [{"protocol": "TCP", "port": 8080}],
            }]}),
        ),
    ]
}

fn selectors(i: usize) -> Vec<Value> {
    let (partner, caller) = (team(i + 3), team(i + 1));
    let http = json!([{"protocol": "TCP", "port": "http"}]);
    vec![
        default_deny(i),
        netpol(
            i,
            "web",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{
                "from": [{"podSelector": {}}, {"namespaceSelector": {"matchLabels": {"team": partner}}}],
                "ports": http,
            }]}),
        ),
        netpol(
            i,
            "api",
            json!({"podSelector": {"matchLabels": {"app": "api"}}, "ingress": [{
                "from": [
                    {"podSelector": {"matchLabels": {"tier": "frontend"}}},
                    {"namespaceSelector": {"matchLabels": {"team": caller}}, "podSelector": {"matchLabels": {"app": "api"}}},
                ],
                "ports": http,
            }]}),
        ),
        netpol(
            i,
            "db",
            json!({
                "podSelector": {"matchLabels": {"tier": "data"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{
                    "from": [{"podSelector": {"matchLabels": {"tier": "backend"}}}],
                    "ports": [{"protocol": "TCP", "port": 5432}],
                }],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"tier": "data"}}}]}],
            }),
        ),
    ]
}

/// Admin tier, by namespace labels only: team t9 never reaches team t0.
fn team_isolation() -> Value {
    cnp(
        "isolate-t0-from-t9",
        json!({
            "tier": "Admin", "priority": 10,
            "subject": {"namespaces": {"matchLabels": {"team": "t0"}}},
            "ingress": [{"name": "no-t9", "action": "Deny", "from": [{"namespaces": {"matchLabels": {"team": "t9"}}}]}],
        }),
    )
}

/// The ClusterNetworkPolicies that select pods or networks.
fn cluster_selectors() -> Vec<Value> {
    vec![
        cnp(
            "databases-not-from-frontends",
            json!({
                "tier": "Admin", "priority": 20,
                "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"tier": "data"}}}},
                "ingress": [{"action": "Deny", "from": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"tier": "frontend"}}}}]}],
            }),
        ),
        cnp(
            "no-metadata",
            json!({
                "tier": "Admin", "priority": 30,
                "subject": {"namespaces": {}},
                "egress": [{"action": "Deny", "to": [{"networks": ["169.254.169.254/32"]}]}],
            }),
        ),
        cnp(
            "monitoring-scrapes",
            json!({
                "tier": "Baseline", "priority": 10,
                "subject": {"namespaces": {}},
                "ingress": [{"action": "Accept", "from": [{"networks": ["10.64.0.0/24"]}],
                    "protocols": [{"tcp": {"destinationPort": {"number": 9100}}}]}],
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_determinism() {
        let count = |f, kind: &str| policies(f).iter().filter(|o| o["kind"] == kind).count();
        assert!(policies(Flavour::None).is_empty());
        assert_eq!(
            count(Flavour::NamespaceOnly, "NetworkPolicy"),
            3 * SYN_NAMESPACES
        );
        assert_eq!(count(Flavour::NamespaceOnly, "ClusterNetworkPolicy"), 1);
        assert_eq!(
            count(Flavour::Selectors, "NetworkPolicy"),
            4 * SYN_NAMESPACES
        );
        assert_eq!(count(Flavour::Selectors, "ClusterNetworkPolicy"), 4);
        assert_eq!(policies(Flavour::Selectors), policies(Flavour::Selectors));
        let text = serde_json::to_string(&policies(Flavour::NamespaceOnly)).expect("json");
        for word in [
            "matchLabels\":{\"app",
            "matchLabels\":{\"tier",
            "networks",
            "\"http\"",
        ] {
            assert!(!text.contains(word), "namespace-only policies use {word}");
        }
    }
}
