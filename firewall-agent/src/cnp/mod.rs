//! The ClusterNetworkPolicy front end (`policy.networking.k8s.io/v1alpha2`, network-policy-api
//! v0.2.0): each object converts into a [`TieredPolicy`](crate::policy::TieredPolicy) or is
//! refused whole, every problem named by its JSON path, with a fail-closed stand-in
//! (docs/design.md#standard-apis).
mod fail_closed;
mod to_policy;
mod types;

#[cfg(test)]
mod tests;

pub use fail_closed::stand_in;
pub use to_policy::{KIND, origin, validate};
pub use types::{
    ClusterNetworkPolicy, EgressPeer, EgressRule, IngressPeer, IngressRule, NamespacedPod, Port,
    PortRange, Protocol, ProtocolPort, Spec, Subject,
};

use serde_json::Value;

use crate::{
    crd::{errors_message, refusal, source_rejections, written},
    model::ClusterModel,
    policy::{PolicyInput, StandIn},
};

/// The policy of a model's ClusterNetworkPolicies (only `tiered` and `refused` are filled);
/// invalid ones, and those the source could not deserialize, are refused, each standing in
/// with its restrictions.
pub fn policy_input(model: &ClusterModel) -> PolicyInput {
    let tiered = |o, spec: &Value| StandIn::Tiered(stand_in(o, spec));
    let mut input = PolicyInput {
        refused: source_rejections(model, KIND, |r| origin(r.name.clone()), tiered).collect(),
        ..PolicyInput::default()
    };
    for o in &model.cluster_network_policies {
        match validate(o) {
            Ok(p) => input.tiered.push(p),
            Err(errors) => {
                let spec = written(&o.spec);
                let name = o.metadata.name.clone().unwrap_or_default();
                let message = errors_message(&errors);
                let refused = refusal(origin(name), "InvalidSpec", message, |o| tiered(o, &spec));
                input.refused.push(refused);
            }
        }
    }
    input
}
