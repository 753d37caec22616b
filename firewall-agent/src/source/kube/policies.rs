//! The policy objects as listed, for their status: the stores the status writer reads, and what
//! the agent tells it after each apply.
use kube::{
    ResourceExt as _,
    api::{ApiResource, DynamicObject},
    runtime::reflector::Store,
};

use crate::{
    compiler::InvalidModeLabel,
    model::{Rejection, convert::PolicyKind},
};

/// `NamespaceFirewall` as an untyped resource: an object that does not match the Rust types must
/// still be listed (and rejected by itself), never fail the whole list.
pub fn namespace_firewall_resource() -> ApiResource {
    policy_resource(
        PolicyKind::NamespaceFirewall,
        BULKHEAD,
        "namespacefirewalls",
    )
}

/// `ClusterFirewall` as an untyped resource (see [`namespace_firewall_resource`]).
pub fn cluster_firewall_resource() -> ApiResource {
    policy_resource(PolicyKind::ClusterFirewall, BULKHEAD, "clusterfirewalls")
}

/// `NetworkPolicy` as an untyped resource: the API server validates it, but an object the
/// Rust types cannot read (a newer field's type) must still be rejected by itself.
pub fn network_policy_resource() -> ApiResource {
    let group = ("networking.k8s.io", "v1");
    policy_resource(PolicyKind::NetworkPolicy, group, "networkpolicies")
}

/// `ClusterNetworkPolicy` (network-policy-api v0.2.0's CRD) as an untyped resource.
pub fn cluster_network_policy_resource() -> ApiResource {
    let group = ("policy.networking.k8s.io", "v1alpha2");
    policy_resource(
        PolicyKind::ClusterNetworkPolicy,
        group,
        "clusternetworkpolicies",
    )
}

const BULKHEAD: (&str, &str) = ("bulkhead.dev", "v1alpha1");

fn policy_resource(kind: PolicyKind, (group, version): (&str, &str), plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.name().into(),
        plural: plural.into(),
    }
}

/// A policy object as listed, for its status: which object, which generation, what it says now.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyObject {
    /// `NamespaceFirewall` or `ClusterFirewall`.
    pub kind: String,
    /// NamespaceFirewall only.
    pub namespace: Option<String>,
    pub name: String,
    /// `metadata.uid` (an Event names the object it is about by it).
    pub uid: Option<String>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `status`, as stored.
    pub status: Option<serde_json::Value>,
}

impl PolicyObject {
    /// Identity: kind, namespace, name.
    pub fn key(&self) -> (&str, Option<&str>, &str) {
        (&self.kind, self.namespace.as_deref(), &self.name)
    }
}

/// What the agent last applied, for the status writer: the policy objects it compiled (with
/// their generation) and which of them were rejected.
#[derive(Clone, Debug, Default)]
pub struct Verdicts {
    /// Objects the applied policy was compiled from.
    pub objects: Vec<PolicyObject>,
    /// Objects rejected, each with what stands in for it.
    pub rejected: Vec<Rejection>,
    /// Namespaces whose mode label is no mode.
    pub invalid_mode_labels: Vec<InvalidModeLabel>,
}

/// The policy objects' stores, shared with the status writer. A kind `--policy-apis` leaves
/// out has a store no watcher fills.
#[derive(Clone)]
pub struct PolicyStores {
    pub(super) namespace_firewalls: Store<DynamicObject>,
    pub(super) cluster_firewalls: Store<DynamicObject>,
    /// Read into the model; their status is not written (NetworkPolicy has none the agent
    /// could own, and upstream's implementations write ClusterNetworkPolicy's conditions).
    pub(super) network_policies: Store<DynamicObject>,
    pub(super) cluster_network_policies: Store<DynamicObject>,
}

impl PolicyStores {
    /// The kinds whose status the agent writes.
    pub(super) fn by_kind(&self) -> [(&Store<DynamicObject>, PolicyKind); 2] {
        [
            (&self.namespace_firewalls, PolicyKind::NamespaceFirewall),
            (&self.cluster_firewalls, PolicyKind::ClusterFirewall),
        ]
    }

    /// Every policy kind, for the model.
    pub(super) fn every_kind(&self) -> [(&Store<DynamicObject>, PolicyKind); 4] {
        let [nsfw, cfw] = self.by_kind();
        [
            nsfw,
            cfw,
            (&self.network_policies, PolicyKind::NetworkPolicy),
            (
                &self.cluster_network_policies,
                PolicyKind::ClusterNetworkPolicy,
            ),
        ]
    }

    /// Every policy object whose status the agent writes, as stored now, sorted by kind,
    /// namespace and name.
    pub fn objects(&self) -> Vec<PolicyObject> {
        let mut out = Vec::new();
        for (store, kind) in self.by_kind() {
            for o in store.state() {
                out.push(PolicyObject {
                    kind: kind.name().to_owned(),
                    namespace: o.namespace(),
                    name: o.name_any(),
                    uid: o.metadata.uid.clone(),
                    generation: o.metadata.generation,
                    status: o.data.get("status").cloned(),
                });
            }
        }
        out.sort_by(|a, b| a.key().cmp(&b.key()));
        out
    }
}
