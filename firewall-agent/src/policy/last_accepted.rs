//! A rejected object never loosens enforcement (docs/design.md#invalid-objects): while it is
//! rejected, the last version of it that was accepted stays in force; an object never accepted
//! is enforced by its fail-closed stand-in.
//!
//! This is the one piece of the policy computation with memory. It lives apart from the
//! compiler so the compiler stays a function of its input, and is keyed by the object
//! (`Kind/namespace/name`): a deleted object is forgotten at the next settle.
use std::collections::BTreeMap;

use super::{
    ClusterPolicy, NamespacePolicy, Origin, PodPolicy, PolicyInput, StandIn, TieredPolicy,
};
use crate::model::{InForce, Rejection};

/// The policies accepted last, by object.
#[derive(Clone, Debug, Default)]
pub struct LastAccepted {
    cluster: BTreeMap<Origin, ClusterPolicy>,
    namespaces: BTreeMap<Origin, NamespacePolicy>,
    pod_policies: BTreeMap<Origin, PodPolicy>,
    tiered: BTreeMap<Origin, TieredPolicy>,
}

/// The policy in force: the accepted policies plus what stands in for each refused one.
#[derive(Clone, Debug, Default)]
pub struct Settled {
    /// Cluster policies, in any order.
    pub cluster: Vec<ClusterPolicy>,
    /// Namespace policies, in any order.
    pub namespaces: Vec<NamespacePolicy>,
    /// NetworkPolicies, in any order.
    pub pod_policies: Vec<PodPolicy>,
    /// ClusterNetworkPolicies, in any order.
    pub tiered: Vec<TieredPolicy>,
    /// Every refused object, with what stands in for it ([`Rejection::in_force`]).
    pub rejected: Vec<Rejection>,
}

impl LastAccepted {
    /// Remembers what `input` accepts and puts, in place of each refused object, its last
    /// accepted version or its stand-in. Nothing is remembered for a tool that judges one
    /// input alone (`check`, `validate`): it starts from `LastAccepted::default()`, so every
    /// refusal is shown fail closed.
    pub fn settle(&mut self, input: PolicyInput) -> Settled {
        let mut next = Self::default();
        for c in &input.cluster {
            next.cluster.insert(c.origin.clone(), c.clone());
        }
        for n in &input.namespaces {
            next.namespaces.insert(n.origin.clone(), n.clone());
        }
        for p in &input.pod_policies {
            next.pod_policies.insert(p.origin.clone(), p.clone());
        }
        for t in &input.tiered {
            next.tiered.insert(t.origin.clone(), t.clone());
        }
        // Defaults belong to an accepted object when one sets them; a stand-in never takes
        // them over (its own may be the very conflict it was refused for).
        let defaults_held = input.cluster.iter().any(|c| c.defaults.is_some());
        let mut out = Settled {
            cluster: input.cluster,
            namespaces: input.namespaces,
            pod_policies: input.pod_policies,
            tiered: input.tiered,
            rejected: Vec::with_capacity(input.refused.len()),
        };
        for refused in input.refused {
            let mut rejection = refused.rejection;
            match refused.stand_in {
                StandIn::Cluster(stand_in) => {
                    let mut p =
                        in_force(&self.cluster, &mut next.cluster, stand_in, &mut rejection);
                    if defaults_held {
                        p.defaults = None;
                    }
                    out.cluster.push(p);
                }
                StandIn::Namespace(stand_in) => {
                    let p = in_force(
                        &self.namespaces,
                        &mut next.namespaces,
                        stand_in,
                        &mut rejection,
                    );
                    out.namespaces.push(p);
                }
                StandIn::Pod(stand_in) => {
                    let p = in_force(
                        &self.pod_policies,
                        &mut next.pod_policies,
                        stand_in,
                        &mut rejection,
                    );
                    out.pod_policies.push(p);
                }
                StandIn::Tiered(stand_in) => {
                    let p = in_force(&self.tiered, &mut next.tiered, stand_in, &mut rejection);
                    out.tiered.push(p);
                }
            }
            out.rejected.push(rejection);
        }
        *self = next;
        out
    }
}

/// The object's last accepted version (kept for the next settle) or else its stand-in.
fn in_force<P: Clone + HasOrigin>(
    last: &BTreeMap<Origin, P>,
    next: &mut BTreeMap<Origin, P>,
    stand_in: P,
    rejection: &mut Rejection,
) -> P {
    match last.get(stand_in.origin()) {
        Some(p) => {
            rejection.in_force = InForce::LastAccepted;
            next.insert(stand_in.origin().clone(), p.clone());
            p.clone()
        }
        None => {
            rejection.in_force = InForce::FailClosed;
            stand_in
        }
    }
}

/// Policies know the object they came from.
trait HasOrigin {
    fn origin(&self) -> &Origin;
}

impl HasOrigin for ClusterPolicy {
    fn origin(&self) -> &Origin {
        &self.origin
    }
}

impl HasOrigin for NamespacePolicy {
    fn origin(&self) -> &Origin {
        &self.origin
    }
}

impl HasOrigin for PodPolicy {
    fn origin(&self) -> &Origin {
        &self.origin
    }
}

impl HasOrigin for TieredPolicy {
    fn origin(&self) -> &Origin {
        &self.origin
    }
}
