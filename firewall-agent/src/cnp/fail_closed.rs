//! What stands in for a ClusterNetworkPolicy that was never accepted
//! (docs/design.md#invalid-objects): its restrictions, read from whatever parts of it can be
//! read.
//!
//! Each Deny and Pass rule stands as written where it reads and validates; a part that does not
//! (a peer, the peer list, `protocols`, the action) widens the rule to every peer or every port,
//! and the rule then denies (as the API's own fail-closed reading turns a Pass rule it cannot
//! fully read into a deny). Accept rules open nothing: they stay in place matching no peer, so
//! every rule keeps its index in the log. An unreadable tier is Admin and an unreadable
//! priority 0, so the stand-in decides before anything it might have been meant to come after;
//! an unreadable subject is every pod.
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    to_policy::{Rule, action, every_pod, protocols, rule, subject},
    types::{EgressRule, IngressRule, Protocol, Subject},
};
use crate::{
    crd::{Checker, part},
    policy::{ClusterAction, Origin, Peer, PeerRule, StdPorts, Tier, TieredPolicy},
};

/// The stand-in for `origin`, from its `spec` as written.
pub fn stand_in(origin: Origin, spec: &Value) -> TieredPolicy {
    let object = origin.to_string();
    let tier = match spec.get("tier").and_then(Value::as_str) {
        Some("Baseline") => Tier::Baseline,
        _ => Tier::Admin,
    };
    let priority = spec
        .get("priority")
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| (0..=1000).contains(p))
        .unwrap_or(0);
    let subject = part(
        &object,
        spec.get("subject"),
        every_pod(),
        |c, s: &Subject| subject(c, "spec.subject", Some(s)),
    )
    .unwrap_or_else(every_pod);
    TieredPolicy {
        ingress: rules::<IngressRule>(&object, spec, "ingress"),
        egress: rules::<EgressRule>(&object, spec, "egress"),
        origin,
        tier,
        priority,
        subject,
    }
    .restrictions()
}

/// A direction's rules: each as written when it reads and validates, else widened; a list that
/// cannot be read denies everything.
fn rules<R: Rule + DeserializeOwned>(object: &str, spec: &Value, field: &str) -> Vec<PeerRule> {
    match spec.get(field) {
        None | Some(Value::Null) if spec.is_object() => Vec::new(),
        Some(Value::Array(rules)) => rules
            .iter()
            .map(|r| {
                part(object, Some(r), deny_all(), |c, r: &R| rule(c, "", r))
                    .unwrap_or_else(|| widened::<R>(object, r))
            })
            .collect(),
        _ => vec![deny_all()],
    }
}

/// A rule that does not read or validate as a whole, from its parts.
fn widened<R: Rule>(object: &str, r: &Value) -> PeerRule {
    let mut quiet = Checker::new(object);
    let action = action(&mut quiet, "", r.get("action").and_then(Value::as_str));
    let name = r.get("name").and_then(Value::as_str).map(str::to_owned);
    let ports = part(
        object,
        r.get("protocols"),
        StdPorts::default(),
        |c, p: &Vec<Protocol>| protocols(c, "", Some(p)),
    )
    .unwrap_or_default();
    if action == Some(ClusterAction::Allow) {
        return PeerRule {
            name,
            action: ClusterAction::Allow,
            peers: Vec::new(),
            ports,
        };
    }
    let peers = match r.get(R::PEERS) {
        Some(Value::Array(peers)) => peers
            .iter()
            .flat_map(|p| {
                part(object, Some(p), None, |c, p: &R::Peer| R::peer(c, "", p))
                    .flatten()
                    .unwrap_or_else(|| vec![Peer::Any])
            })
            .collect(),
        _ => vec![Peer::Any],
    };
    PeerRule {
        name,
        action: ClusterAction::Deny,
        peers,
        ports,
    }
}

/// Denies every peer on every port.
fn deny_all() -> PeerRule {
    PeerRule {
        name: None,
        action: ClusterAction::Deny,
        peers: vec![Peer::Any],
        ports: StdPorts::default(),
    }
}
