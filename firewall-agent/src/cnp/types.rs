//! `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy as network-policy-api v0.2.0
//! defines it (`apis/v1alpha2/clusternetworkpolicy_types.go`).
//!
//! Unlike Bulkhead's CRDs these types tolerate unknown fields: an API server with the upstream
//! CRD prunes them anyway, and a peer whose only field is unknown (a newer CRD's `nodes` or
//! `domainNames`) is the spec's own fail-closed case, which conversion handles. Enumerations
//! are read as strings so that a bad value is reported by validation with its path instead of
//! failing the whole object.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

/// A cluster-scoped policy of the Admin or Baseline tier.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterNetworkPolicy {
    /// Name and identity.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Required: without it nothing can be read.
    pub spec: Spec,
}

/// `spec`. Required fields are `Option` so that their absence is a field error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// `Admin` or `Baseline`.
    pub tier: Option<String>,
    /// 0..=1000, lower first within the tier.
    pub priority: Option<i32>,
    /// The pods the rules apply to.
    pub subject: Option<Subject>,
    /// At most 25, in order.
    pub ingress: Option<Vec<IngressRule>>,
    /// At most 25, in order.
    pub egress: Option<Vec<EgressRule>>,
}

/// Exactly one of `namespaces` (every pod of the selected namespaces) and `pods`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// Namespaces by label.
    pub namespaces: Option<LabelSelector>,
    /// Pods by namespace and pod label.
    pub pods: Option<NamespacedPod>,
}

/// Pods selected by their labels in namespaces selected by theirs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    /// Optional; absent or empty: every namespace.
    pub namespace_selector: Option<LabelSelector>,
    /// Required; empty: every pod.
    pub pod_selector: Option<LabelSelector>,
}

/// One ingress rule: traffic `from` its peers into the subject.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    /// At most 100 characters; the log names the rule by it.
    pub name: Option<String>,
    /// `Accept`, `Deny` or `Pass`.
    pub action: Option<String>,
    /// 1 to 25 peers (a union).
    pub from: Option<Vec<IngressPeer>>,
    /// Absent: every protocol and port; else 1 to 25 entries.
    pub protocols: Option<Vec<Protocol>>,
}

/// One egress rule: traffic from the subject `to` its peers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// At most 100 characters.
    pub name: Option<String>,
    /// `Accept`, `Deny` or `Pass`.
    pub action: Option<String>,
    /// 1 to 25 peers (a union).
    pub to: Option<Vec<EgressPeer>>,
    /// Absent: every protocol and port; else 1 to 25 entries.
    pub protocols: Option<Vec<Protocol>>,
}

/// An ingress peer: exactly one field set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressPeer {
    /// Every pod of the selected namespaces.
    pub namespaces: Option<LabelSelector>,
    /// Selected pods of selected namespaces.
    pub pods: Option<NamespacedPod>,
}

/// An egress peer: exactly one field set. The experimental channel's `nodes` and
/// `domainNames` are not read: a peer of them alone is one with no known field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressPeer {
    /// `namespaces` or `pods`, as for ingress.
    #[serde(flatten)]
    pub pods: IngressPeer,
    /// 1 to 25 CIDRs, matched whatever owns the address (pods included).
    pub networks: Option<Vec<String>>,
}

/// Exactly one of `tcp`, `udp`, `sctp` and `destinationNamedPort`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protocol {
    /// TCP to a port or range.
    pub tcp: Option<ProtocolPort>,
    /// UDP to a port or range.
    pub udp: Option<ProtocolPort>,
    /// SCTP to a port or range.
    pub sctp: Option<ProtocolPort>,
    /// A container port of the destination pod by name (whatever its protocol).
    pub destination_named_port: Option<String>,
}

/// `tcp`/`udp`/`sctp`: `destinationPort` is required (the API's `MinProperties=1`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolPort {
    /// The destination port or range.
    pub destination_port: Option<Port>,
}

/// Exactly one of `number` and `range`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// 1..=65535.
    pub number: Option<i32>,
    /// An inclusive range.
    pub range: Option<PortRange>,
}

/// `start` < `end`, both 1..=65535 (the API's own rule: a one-port range is refused).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    /// First port.
    pub start: Option<i32>,
    /// Last port.
    pub end: Option<i32>,
}
