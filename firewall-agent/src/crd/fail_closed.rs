//! What stands in for a Bulkhead object that was never accepted (docs/design.md#invalid-objects):
//! it is enforced fail closed for what it restricts, read from whatever parts of it can be read.
//!
//! - A NamespaceFirewall restricts the directions it names: each one admits nothing across
//!   namespaces until the object is fixed (an empty allow list joins the namespace's union, so
//!   the namespace's other valid objects still allow what they allow). A spec that cannot be
//!   read at all restricts both directions.
//! - A ClusterFirewall restricts with its `Deny` and `Delegate` rules: each one stands as
//!   written where it reads and validates; a part that does not (`from`, `to`, `ports`, the
//!   action) widens the rule to every namespace, every destination or every port, and the rule
//!   then denies. `Allow` rules open nothing and stand matching no source. Its defaults apply
//!   only where they restrict (`crossNamespace: Deny`, `mode: Enforce`), and only when no
//!   accepted object sets the defaults.
use firewall_common::{Mode, PolicyVerdict};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    Action, ClusterDefaults, ClusterFirewallSpec, DefaultAction, DefaultMode,
    common::{DestPeer, Peer, PortSpec},
    to_policy::{Checker, every_namespace},
};
use crate::policy::{
    ClusterAction, ClusterPolicy, ClusterRule, Defaults, Destinations, NamespacePolicy,
    NamespaceSet, Origin, Ports, StandIn,
};

/// The stand-in for `origin`, from its `spec` as written.
pub fn stand_in(origin: Origin, spec: &Value) -> StandIn {
    if origin.kind == "ClusterFirewall" {
        StandIn::Cluster(cluster(origin, spec))
    } else {
        StandIn::Namespace(namespace(origin, spec))
    }
}

fn namespace(origin: Origin, spec: &Value) -> NamespacePolicy {
    let names = |direction: &str| !spec.is_object() || spec.get(direction).is_some();
    NamespacePolicy {
        namespace: origin
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        ingress: names("ingress").then(Vec::new),
        egress: names("egress").then(Vec::new),
        origin,
    }
}

fn cluster(origin: Origin, spec: &Value) -> ClusterPolicy {
    let object = origin.to_string();
    // A priority that cannot be read runs first: the stand-in decides before anything it
    // might have been meant to come after.
    let priority = match spec.get("priority") {
        None | Some(Value::Null) => ClusterFirewallSpec::default().priority,
        Some(v) => v
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(i32::MIN),
    };
    let rules = match spec.get("rules") {
        None | Some(Value::Null) if spec.is_object() => Vec::new(),
        Some(Value::Array(rules)) => rules.iter().map(|r| rule(&object, r)).collect(),
        _ => vec![deny_everything()],
    };
    let priority = if spec.is_object() { priority } else { i32::MIN };
    ClusterPolicy {
        origin,
        priority,
        rules,
        defaults: spec.get("defaults").and_then(restrictive_defaults),
    }
}

fn rule(object: &str, r: &Value) -> ClusterRule {
    let action = r
        .get("action")
        .and_then(|a| serde_json::from_value(a.clone()).ok());
    let from = part(object, r.get("from"), every_namespace(), |c, p: &Peer| {
        c.peer("from", p)
    });
    let to = part(
        object,
        r.get("to"),
        Destinations {
            namespaces: every_namespace(),
            ..Destinations::default()
        },
        |c, p: &DestPeer| c.dest_peer("to", p),
    );
    let ports = part(
        object,
        r.get("ports"),
        Ports(None),
        |c, p: &Vec<PortSpec>| c.ports("ports", Some(p)),
    );
    let action = match (action, &from, &to, &ports) {
        (Some(Action::Allow), ..) => {
            return ClusterRule {
                action: ClusterAction::Allow,
                from: NamespaceSet::default(),
                to: to.unwrap_or_default(),
                ports: ports.unwrap_or_default(),
            };
        }
        (Some(Action::Delegate), Some(_), Some(_), Some(_)) => ClusterAction::Pass,
        _ => ClusterAction::Deny,
    };
    ClusterRule {
        action,
        from: from.unwrap_or_else(every_namespace),
        to: to.unwrap_or_else(everywhere),
        ports: ports.unwrap_or(Ports(None)),
    }
}

/// A part of a rule converted, `absent` when it is not written, `None` when it does not read
/// or does not validate.
pub(crate) fn part<T: DeserializeOwned, R>(
    object: &str,
    value: Option<&Value>,
    absent: R,
    convert: impl FnOnce(&mut Checker, &T) -> R,
) -> Option<R> {
    let Some(v) = value.filter(|v| !v.is_null()) else {
        return Some(absent);
    };
    let written: T = serde_json::from_value(v.clone()).ok()?;
    let mut c = Checker::new(object);
    let converted = convert(&mut c, &written);
    c.is_clean().then_some(converted)
}

/// Every namespace and every address.
fn everywhere() -> Destinations {
    Destinations {
        namespaces: every_namespace(),
        cidrs: vec![
            ipnet::IpNet::V4(ipnet::Ipv4Net::default()),
            ipnet::IpNet::V6(ipnet::Ipv6Net::default()),
        ],
        ..Destinations::default()
    }
}

fn deny_everything() -> ClusterRule {
    ClusterRule {
        action: ClusterAction::Deny,
        from: every_namespace(),
        to: everywhere(),
        ports: Ports(None),
    }
}

fn restrictive_defaults(v: &Value) -> Option<Defaults> {
    let d: ClusterDefaults = serde_json::from_value(v.clone()).ok()?;
    let d = Defaults {
        cross_namespace: (d.cross_namespace == Some(DefaultAction::Deny))
            .then_some(PolicyVerdict::Deny),
        mode: (d.mode == Some(DefaultMode::Enforce)).then_some(Mode::Enforce),
    };
    (d.cross_namespace.is_some() || d.mode.is_some()).then_some(d)
}
