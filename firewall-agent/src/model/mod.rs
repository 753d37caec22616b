//! The cluster model: the part of the cluster state the policy compiler needs, whatever the
//! source (Kubernetes API or a file). Plain data, so the compiler stays a pure function.
pub mod convert;

use std::{collections::BTreeMap, fmt, net::IpAddr};

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::{
    cnp::ClusterNetworkPolicy,
    crd::{ClusterFirewall, NamespaceFirewall},
    policy::PolicyApis,
};
use convert::PolicyKind;

/// Everything the compiler reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterModel {
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// All pods of the cluster (remote pods are identified by IP).
    pub pods: Vec<Pod>,
    /// Services (their selectors narrow identities; their cluster IPs are endpoints).
    pub services: Vec<Service>,
    /// Nodes (their addresses are the `host` identity).
    pub nodes: Vec<Node>,
    /// NamespaceFirewall objects, not yet validated.
    pub namespace_firewalls: Vec<NamespaceFirewall>,
    /// ClusterFirewall objects, not yet validated.
    pub cluster_firewalls: Vec<ClusterFirewall>,
    /// NetworkPolicy objects, not yet validated (empty unless `--policy-apis` names them).
    pub network_policies: Vec<NetworkPolicy>,
    /// ClusterNetworkPolicy objects, not yet validated (empty unless `--policy-apis` names
    /// them).
    pub cluster_network_policies: Vec<ClusterNetworkPolicy>,
    /// Policy objects that failed to even deserialize (reported, never applied).
    pub rejected: Vec<Rejection>,
}

/// A namespace: its labels feed `namespaceSelector` and the mode label.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A pod: an endpoint by IP everywhere, and by cgroup on its own node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    /// `metadata.uid` (finds its cgroup).
    pub uid: String,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `spec.hostNetwork`: the pod's addresses are the host's.
    pub host_network: bool,
    /// `status.podIPs`.
    pub ips: Vec<IpAddr>,
    /// Labels (Service selectors, pod selectors).
    pub labels: BTreeMap<String, String>,
    /// Named container ports (`spec.containers[].ports[]`): name -> (IP protocol, port), which
    /// a standard policy's named port resolves to.
    pub named_ports: BTreeMap<String, (u8, u16)>,
    /// Phase `Succeeded` or `Failed`: no longer an endpoint (its IP may be reused).
    pub terminal: bool,
    /// cgroup v2 ids of the pod's containers, filled by the agent's cgroup discovery.
    pub cgroup_ids: Vec<u64>,
}

/// A Service: referenced Services split their namespace's identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `spec.selector`; `None` or empty selects no pods.
    pub selector: Option<BTreeMap<String, String>>,
    /// `spec.clusterIPs` (none for headless Services).
    pub cluster_ips: Vec<IpAddr>,
}

/// A node: its addresses are the `host` identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// InternalIP and ExternalIP addresses.
    pub addresses: Vec<IpAddr>,
}

/// A policy object that is not applied as written, and why (logged and reported in its status
/// and by the agent's `/status`, which `firewall-agent status` reads back).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// The object's kind (`NamespaceFirewall`, `ClusterNetworkPolicy`, ...): each front end
    /// takes the rejections of its own kinds.
    pub kind: String,
    /// Set for namespaced kinds only.
    pub namespace: Option<String>,
    pub name: String,
    /// CamelCase cause (`InvalidSpec`, `DefaultsConflict`).
    pub reason: String,
    pub message: String,
    /// What enforces the object's part of the policy meanwhile (set by the compiler).
    pub in_force: InForce,
    /// `spec` as written, when the object did not deserialize: its fail-closed stand-in is
    /// read from what can be read of it.
    #[serde(skip)]
    pub spec: Option<serde_json::Value>,
}

/// What stands in for a rejected object (docs/design.md#invalid-objects): a rejection never
/// loosens enforcement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InForce {
    /// The object was never accepted: what it restricts is enforced fail closed.
    #[default]
    FailClosed,
    /// The last version of the object that was accepted stays in force.
    LastAccepted,
}

impl InForce {
    /// The status condition's reason: which of the two applies.
    pub fn reason(self) -> &'static str {
        match self {
            Self::FailClosed => "FailClosed",
            Self::LastAccepted => "LastAcceptedInForce",
        }
    }

    /// What the log and the status message say is enforced meanwhile.
    pub fn describe(self) -> &'static str {
        match self {
            Self::FailClosed => {
                "never accepted: what it restricts is enforced fail closed until it is fixed"
            }
            Self::LastAccepted => "its last accepted version stays in force until it is fixed",
        }
    }
}

/// `Kind/namespace/name: reason: message`, as the log and `validate` name a rejected object.
impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/", self.kind)?;
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        write!(f, "{}: {}: {}", self.name, self.reason, self.message)
    }
}

impl ClusterModel {
    /// Adds addresses to node `name` (a Node object for it if there is none): what the agent
    /// learns of its own node that the API does not say.
    pub fn add_node_addresses(&mut self, name: &str, addresses: &[IpAddr]) {
        let node = match self.nodes.iter().position(|n| n.name == name) {
            Some(i) => &mut self.nodes[i],
            None => {
                self.nodes.push(Node {
                    name: name.to_owned(),
                    addresses: Vec::new(),
                });
                let last = self.nodes.len() - 1;
                &mut self.nodes[last]
            }
        };
        for ip in addresses {
            if !node.addresses.contains(ip) {
                node.addresses.push(*ip);
            }
        }
    }

    /// Drops the policy objects, and the rejections, of the kinds `apis` does not read (a
    /// source reads only what `--policy-apis` names); returns the kinds that had any.
    pub fn retain_apis(&mut self, apis: PolicyApis) -> Vec<&'static str> {
        let mut dropped = Vec::new();
        for kind in PolicyKind::ALL.into_iter().filter(|k| !apis.reads(*k)) {
            let had = match kind {
                PolicyKind::NamespaceFirewall => take(&mut self.namespace_firewalls),
                PolicyKind::ClusterFirewall => take(&mut self.cluster_firewalls),
                PolicyKind::NetworkPolicy => take(&mut self.network_policies),
                PolicyKind::ClusterNetworkPolicy => take(&mut self.cluster_network_policies),
            };
            let before = self.rejected.len();
            self.rejected.retain(|r| r.kind != kind.name());
            if had || self.rejected.len() != before {
                dropped.push(kind.name());
            }
        }
        dropped
    }
}

/// Empties `v`; whether it held anything.
fn take<T>(v: &mut Vec<T>) -> bool {
    !std::mem::take(v).is_empty()
}

impl Service {
    /// Whether the Service selects a pod (same namespace, non-empty selector, all labels match).
    pub fn selects(&self, pod: &Pod) -> bool {
        self.namespace == pod.namespace
            && self.selector.as_ref().is_some_and(|s| {
                !s.is_empty() && s.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
            })
    }
}

impl Pod {
    /// Whether the pod is a policy endpoint with its own addresses (running, not hostNetwork).
    pub fn is_endpoint(&self) -> bool {
        !self.terminal && !self.host_network
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_keeps_only_the_kinds_policy_apis_names() {
        let mut m = ClusterModel::default();
        m.network_policies.push(NetworkPolicy::default());
        m.cluster_network_policies
            .push(ClusterNetworkPolicy::default());
        for kind in ["ClusterNetworkPolicy", "NamespaceFirewall"] {
            m.rejected.push(Rejection {
                kind: kind.to_owned(),
                ..Rejection::default()
            });
        }
        let apis: PolicyApis = "bulkhead,clusternetworkpolicy".parse().expect("valid");
        assert_eq!(m.clone().retain_apis(PolicyApis::ALL), Vec::<&str>::new());
        assert_eq!(m.retain_apis(apis), ["NetworkPolicy"]);
        assert!(m.network_policies.is_empty());
        assert_eq!(m.cluster_network_policies.len(), 1);
        assert_eq!(m.rejected.len(), 2);
        assert_eq!(
            m.retain_apis(PolicyApis::BULKHEAD),
            ["ClusterNetworkPolicy"]
        );
        assert_eq!(m.rejected.len(), 1);
    }
}
