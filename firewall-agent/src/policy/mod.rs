//! The policy the compiler consumes, independent of the objects it was written in
//! (docs/design.md#policy-semantics).
//!
//! A front end turns its objects into these types and reports the ones it cannot (today the
//! Bulkhead CRDs, `crate::crd`; NetworkPolicy and ClusterNetworkPolicy can convert beside them):
//! cluster policies whose ordered rules allow, deny or pass before any namespace's own rules,
//! each namespace's ingress and egress allow lists, and the cluster defaults. Every string has
//! been parsed by then (CIDRs, protocols, ports, selectors), so compiling cannot fail.
mod apis;
mod last_accepted;
mod matching;
mod standard;

use std::fmt;

use firewall_common::{Mode, PolicyVerdict};

pub use apis::{PolicyApis, UnknownApi};
pub use last_accepted::{LastAccepted, Settled};
pub use matching::{Destinations, NamespaceSet, PortRange, Ports, Requirement, Selector};
pub use standard::{NamedPort, Peer, PeerRule, PodPolicy, PodSet, StdPorts, Tier, TieredPolicy};

use crate::model::Rejection;

/// The object a policy came from, as the log and the status name it (`Kind/namespace/name` or
/// `Kind/name`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    /// Object kind.
    pub kind: &'static str,
    /// Namespace of a namespaced object.
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{ns}/{}", self.kind, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// What a matching cluster rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClusterAction {
    /// The connection is allowed on this side.
    Allow,
    /// The connection is denied on this side.
    Deny,
    /// The cluster rules stop here; the namespaces' own rules decide.
    Pass,
}

/// One ordered cluster rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRule {
    /// What a match does.
    pub action: ClusterAction,
    /// Source namespaces.
    pub from: NamespaceSet,
    /// Destinations.
    pub to: Destinations,
    /// Protocols and ports.
    pub ports: Ports,
}

/// Cluster defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    /// Verdict for cross-namespace pairs no rule decides.
    pub cross_namespace: Option<PolicyVerdict>,
    /// Mode of namespaces without a mode label.
    pub mode: Option<Mode>,
}

/// Ordered cluster rules of one object; objects run by (priority, name), before any
/// namespace's own rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPolicy {
    /// Where it came from; its name orders objects of equal priority and picks the defaults.
    pub origin: Origin,
    /// Lower runs first.
    pub priority: i32,
    /// The first matching rule decides (or passes).
    pub rules: Vec<ClusterRule>,
    /// Defaults, if this object sets any (at most one object may).
    pub defaults: Option<Defaults>,
}

/// One entry of a namespace's ingress allow list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressRule {
    /// Source namespaces.
    pub from: NamespaceSet,
    /// When non-empty, only endpoints of these Services of the policy's namespace.
    pub services: Vec<String>,
    /// Protocols and ports.
    pub ports: Ports,
}

/// One entry of a namespace's egress allow list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressRule {
    /// Destinations.
    pub to: Destinations,
    /// Protocols and ports.
    pub ports: Ports,
}

/// A namespace's own allow lists; the lists of one namespace's policies are a union.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacePolicy {
    /// Where it came from.
    pub origin: Origin,
    /// The namespace its rules apply to.
    pub namespace: String,
    /// `None`: this policy does not restrict ingress.
    pub ingress: Option<Vec<IngressRule>>,
    /// `None`: this policy does not restrict egress.
    pub egress: Option<Vec<EgressRule>>,
}

impl ClusterPolicy {
    /// What the policy restricts, and nothing it opens: its `Deny` and `Pass` rules, no
    /// `Allow` rule and no defaults. Without an allow a later step decides, and that can only
    /// be stricter than the allow, so this never loosens anything. An allow stays in its place,
    /// matching no source, so every other rule keeps its index (the log names rules by index).
    #[must_use]
    pub fn restrictions(mut self) -> Self {
        for r in &mut self.rules {
            if r.action == ClusterAction::Allow {
                r.from = NamespaceSet::default();
            }
        }
        self.defaults = None;
        self
    }
}

/// What enforces a rejected object's part of the policy when no version of it was ever
/// accepted, built by its front end from what can be read of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StandIn {
    /// For a cluster policy.
    Cluster(ClusterPolicy),
    /// For a namespace policy.
    Namespace(NamespacePolicy),
    /// For a NetworkPolicy.
    Pod(PodPolicy),
    /// For a ClusterNetworkPolicy.
    Tiered(TieredPolicy),
}

/// A refused object and its fail-closed stand-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Why, for the log, `validate` and the object's status.
    pub rejection: Rejection,
    /// In force while no earlier version was accepted.
    pub stand_in: StandIn,
}

/// Everything the front ends accepted from one model, and what they refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyInput {
    /// Cluster policies, in any order.
    pub cluster: Vec<ClusterPolicy>,
    /// Namespace policies, in any order.
    pub namespaces: Vec<NamespacePolicy>,
    /// NetworkPolicies, in any order.
    pub pod_policies: Vec<PodPolicy>,
    /// ClusterNetworkPolicies, in any order.
    pub tiered: Vec<TieredPolicy>,
    /// Objects not applied as written (undeserializable, invalid, or conflicting).
    pub refused: Vec<Refused>,
}

impl PolicyInput {
    /// At most one cluster policy sets the defaults: the one whose name sorts first keeps them;
    /// every other one setting them is refused (`DefaultsConflict`) and stands in with its
    /// restrictions only.
    pub fn resolve_defaults(&mut self) {
        let Some(winner) = self
            .cluster
            .iter()
            .filter(|c| c.defaults.is_some())
            .map(|c| c.origin.clone())
            .min_by(|a, b| a.name.cmp(&b.name))
        else {
            return;
        };
        let (losers, kept) = std::mem::take(&mut self.cluster)
            .into_iter()
            .partition(|c| c.defaults.is_some() && c.origin != winner);
        self.cluster = kept;
        for c in losers {
            self.refused.push(Refused {
                rejection: Rejection {
                    kind: c.origin.kind.to_owned(),
                    namespace: None,
                    name: c.origin.name.clone(),
                    reason: "DefaultsConflict".to_owned(),
                    message: format!("spec.defaults: {winner} already sets the cluster defaults"),
                    ..Rejection::default()
                },
                stand_in: StandIn::Cluster(c.restrictions()),
            });
        }
    }
}
