//! The Bulkhead CRDs' front end: each object converts into the policy IR ([`crate::policy`]) or
//! is rejected whole, with every problem named by its JSON path (docs/design.md#invalid-objects:
//! invalid objects never half-apply).
use std::{collections::BTreeSet, fmt, net::IpAddr};

use firewall_common::{IpProto, Mode, PolicyVerdict};
use ipnet::IpNet;
use kube::ResourceExt as _;

use super::{
    Action, ClusterFirewall, DefaultAction, DefaultMode, NamespaceFirewall,
    common::{DestPeer, EgressPeer, LabelSelector, Peer, PortSpec},
    syntax,
};
use crate::{
    model::{ClusterModel, Rejection},
    policy::{
        ClusterAction, ClusterPolicy, ClusterRule, Defaults, Destinations, EgressRule, IngressRule,
        NamespacePolicy, NamespaceSet, Origin, PolicyInput, PortRange, Ports, Refused, Requirement,
        Selector, StandIn,
    },
};
use serde_json::Value;

/// One problem in a policy object, e.g.
/// `NamespaceFirewall/payments/default: spec.egress[1].to.cidrs[0]: invalid CIDR "10.0.0.0/33"`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {path}: {message}")]
pub struct FieldError {
    /// `Kind/namespace/name` or `Kind/name`.
    pub object: String,
    /// JSON path inside the object.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Collects the errors of one object.
pub(crate) struct Checker {
    object: String,
    errors: Vec<FieldError>,
}

impl Checker {
    pub(crate) fn new(object: &str) -> Self {
        Self {
            object: object.to_owned(),
            errors: Vec::new(),
        }
    }

    pub(crate) fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn err(&mut self, path: &str, message: impl fmt::Display) {
        self.errors.push(FieldError {
            object: self.object.clone(),
            path: path.to_owned(),
            message: message.to_string(),
        });
    }

    /// The names that pass `check`; each other one is an error naming it a `what` name.
    fn checked_names<C: FromIterator<String>>(
        &mut self,
        path: &str,
        names: Option<&Vec<String>>,
        what: &str,
        check: fn(&str) -> Option<&'static str>,
    ) -> C {
        let names = names.into_iter().flatten().enumerate();
        names
            .filter_map(|(i, n)| match check(n) {
                Some(why) => {
                    let p = format!("{path}[{i}]");
                    self.err(&p, format_args!("invalid {what} name {n:?}: {why}"));
                    None
                }
                None => Some(n.clone()),
            })
            .collect()
    }

    pub(crate) fn selector(&mut self, path: &str, sel: &LabelSelector) -> Selector {
        let mut out = Selector::default();
        for (k, v) in sel.match_labels.iter().flatten() {
            let p = format!("{path}.matchLabels[{k:?}]");
            if let Some(why) = syntax::label_key_error(k) {
                self.err(&p, format_args!("invalid label key {k:?}: {why}"));
            }
            if let Some(why) = syntax::label_value_error(v) {
                self.err(&p, format_args!("invalid label value {v:?}: {why}"));
            }
            out.labels.insert(k.clone(), v.clone());
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            if let Some(why) = syntax::label_key_error(&e.key) {
                self.err(
                    &format!("{p}.key"),
                    format_args!("invalid label key {:?}: {why}", e.key),
                );
            }
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            for (j, v) in e.values.iter().flatten().enumerate() {
                if let Some(why) = syntax::label_value_error(v) {
                    self.err(
                        &format!("{p}.values[{j}]"),
                        format_args!("invalid label value {v:?}: {why}"),
                    );
                }
            }
            let key = e.key.clone();
            let req = match e.operator.as_str() {
                "In" | "NotIn" => {
                    if values.is_empty() {
                        self.err(
                            &format!("{p}.values"),
                            format_args!("operator {} requires at least one value", e.operator),
                        );
                    }
                    if e.operator == "In" {
                        Requirement::In(key, values)
                    } else {
                        Requirement::NotIn(key, values)
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if !values.is_empty() {
                        self.err(
                            &format!("{p}.values"),
                            format_args!("operator {} takes no values", e.operator),
                        );
                    }
                    if e.operator == "Exists" {
                        Requirement::Exists(key)
                    } else {
                        Requirement::DoesNotExist(key)
                    }
                }
                other => {
                    self.err(
                        &format!("{p}.operator"),
                        format_args!("unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"),
                    );
                    continue;
                }
            };
            out.requirements.push(req);
        }
        out
    }

    fn namespace_set(
        &mut self,
        path: &str,
        names: Option<&Vec<String>>,
        selector: Option<&LabelSelector>,
        others_select: bool,
    ) -> NamespaceSet {
        let names: BTreeSet<String> = self.checked_names(
            &format!("{path}.namespaces"),
            names,
            "namespace",
            syntax::dns1123_label_error,
        );
        let selector = selector.map(|s| self.selector(&format!("{path}.namespaceSelector"), s));
        NamespaceSet {
            all: names.is_empty() && selector.is_none() && !others_select,
            names,
            selector,
        }
    }

    pub(super) fn peer(&mut self, path: &str, peer: &Peer) -> NamespaceSet {
        self.namespace_set(
            path,
            peer.namespaces.as_ref(),
            peer.namespace_selector.as_ref(),
            false,
        )
    }

    fn cidr(&mut self, path: &str, s: &str) -> Option<IpNet> {
        match s.parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                self.err(
                    path,
                    format_args!(
                        "invalid CIDR {s:?}: host bits set (did you mean \"{}\"?)",
                        net.trunc()
                    ),
                );
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                match s.parse::<IpAddr>() {
                    Ok(ip) => self.err(
                        path,
                        format_args!(
                            "invalid CIDR {s:?}: missing prefix length (did you mean \"{}\"?)",
                            IpNet::from(ip)
                        ),
                    ),
                    Err(_) => self.err(path, format_args!("invalid CIDR {s:?}")),
                }
                None
            }
        }
    }

    fn addresses(
        &mut self,
        path: &str,
        cidrs: Option<&Vec<String>>,
        except: Option<&Vec<String>>,
    ) -> (Vec<IpNet>, Vec<IpNet>) {
        let cidrs: Vec<IpNet> = cidrs
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, s)| self.cidr(&format!("{path}.cidrs[{i}]"), s))
            .collect();
        let mut excepts = Vec::new();
        for (i, s) in except.into_iter().flatten().enumerate() {
            let p = format!("{path}.except[{i}]");
            if let Some(net) = self.cidr(&p, s) {
                if cidrs.iter().any(|c| c.contains(&net)) {
                    excepts.push(net);
                } else {
                    self.err(&p, format_args!("{s:?} is not inside any of cidrs"));
                }
            }
        }
        (cidrs, excepts)
    }

    fn egress_peer(&mut self, path: &str, peer: &EgressPeer) -> Destinations {
        let (cidrs, except) = self.addresses(path, peer.cidrs.as_ref(), peer.except.as_ref());
        let namespaces = self.namespace_set(
            path,
            peer.namespaces.as_ref(),
            peer.namespace_selector.as_ref(),
            !cidrs.is_empty(),
        );
        Destinations {
            namespaces,
            services: Vec::new(),
            cidrs,
            except,
        }
    }

    pub(super) fn dest_peer(&mut self, path: &str, peer: &DestPeer) -> Destinations {
        let (cidrs, except) = self.addresses(path, peer.cidrs.as_ref(), peer.except.as_ref());
        let services = peer.services.iter().flatten().enumerate();
        let services: Vec<(String, String)> = services
            .filter_map(|(i, s)| self.service_ref(&format!("{path}.services[{i}]"), s))
            .collect();
        // Services select namespace endpoints by themselves; cidrs alone select no namespace.
        let others = !cidrs.is_empty() && services.is_empty();
        let namespaces = self.namespace_set(
            path,
            peer.namespaces.as_ref(),
            peer.namespace_selector.as_ref(),
            others,
        );
        Destinations {
            namespaces,
            services,
            cidrs,
            except,
        }
    }

    /// A `namespace/name` Service reference.
    fn service_ref(&mut self, path: &str, s: &str) -> Option<(String, String)> {
        let Some((ns, name)) = s.split_once('/') else {
            self.err(
                path,
                format_args!("invalid Service reference {s:?}: expected namespace/name"),
            );
            return None;
        };
        let mut ok = true;
        for (why, what, part) in [
            (syntax::dns1123_label_error(ns), "namespace", ns),
            (syntax::dns1035_label_error(name), "Service", name),
        ] {
            if let Some(why) = why {
                self.err(
                    path,
                    format_args!("invalid {what} name {part:?} in Service reference {s:?}: {why}"),
                );
                ok = false;
            }
        }
        ok.then(|| (ns.to_owned(), name.to_owned()))
    }

    pub(crate) fn port_number(&mut self, path: &str, field: &str, v: i32) -> Option<u16> {
        match u16::try_from(v) {
            Ok(p) if p >= 1 => Some(p),
            _ => {
                self.err(path, format_args!("{field} {v} out of range 1..=65535"));
                None
            }
        }
    }

    pub(super) fn ports(&mut self, path: &str, ports: Option<&Vec<PortSpec>>) -> Ports {
        // Absent or empty: every port and protocol (as NetworkPolicy's `ports`).
        let Some(list) = ports.filter(|l| !l.is_empty()) else {
            return Ports(None);
        };
        let mut out = Vec::new();
        for (i, spec) in list.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let proto = match IpProto::from_name(&spec.protocol) {
                Some(p) if IpProto::WITH_PORTS.contains(&p) => Some(p as u8),
                _ => {
                    let other = &spec.protocol;
                    self.err(
                        &format!("{p}.protocol"),
                        format_args!("unknown protocol {other:?} (expected TCP, UDP or SCTP)"),
                    );
                    None
                }
            };
            let lo = spec
                .port
                .map(|v| self.port_number(&format!("{p}.port"), "port", v));
            let hi = spec
                .end_port
                .map(|v| self.port_number(&format!("{p}.endPort"), "endPort", v));
            let range = match (lo, hi) {
                (None, None) => Some((0, u16::MAX)),
                (None, Some(_)) => {
                    self.err(&format!("{p}.endPort"), "endPort requires port");
                    None
                }
                (Some(Some(lo)), None) => Some((lo, lo)),
                (Some(Some(lo)), Some(Some(hi))) if hi < lo => {
                    self.err(
                        &format!("{p}.endPort"),
                        format_args!("endPort {hi} is less than port {lo}"),
                    );
                    None
                }
                (Some(Some(lo)), Some(Some(hi))) => Some((lo, hi)),
                _ => None,
            };
            if let (Some(proto), Some((lo, hi))) = (proto, range) {
                out.push(PortRange { proto, lo, hi });
            }
        }
        Ports(Some(out))
    }

    pub(crate) fn finish<T>(self, v: T) -> Result<T, Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(v)
        } else {
            Err(self.errors)
        }
    }
}

/// A list field's items converted one by one, each with its JSON path (`{path}[{i}]`).
pub(crate) fn each<T, R>(
    c: &mut Checker,
    path: &str,
    items: &[T],
    mut f: impl FnMut(&mut Checker, &str, &T) -> R,
) -> Vec<R> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| f(c, &format!("{path}[{i}]"), item))
        .collect()
}

impl TryFrom<&NamespaceFirewall> for NamespacePolicy {
    type Error = Vec<FieldError>;

    fn try_from(obj: &NamespaceFirewall) -> Result<Self, Vec<FieldError>> {
        let origin = Origin {
            kind: "NamespaceFirewall",
            namespace: Some(obj.namespace().unwrap_or_default()),
            name: obj.name_any(),
        };
        let namespace = origin.namespace.clone().unwrap_or_default();
        let mut c = Checker {
            object: origin.to_string(),
            errors: Vec::new(),
        };
        if let Some(why) = syntax::dns1123_label_error(&namespace) {
            c.err(
                "metadata.namespace",
                format_args!("invalid namespace name {namespace:?}: {why}"),
            );
        }
        let spec = &obj.spec;
        let ingress = spec.ingress.as_ref().map(|rules| {
            each(&mut c, "spec.ingress", rules, |c, p, r| IngressRule {
                from: c.peer(&format!("{p}.from"), &r.from),
                services: c.checked_names(
                    &format!("{p}.services"),
                    r.services.as_ref(),
                    "Service",
                    syntax::dns1035_label_error,
                ),
                ports: c.ports(&format!("{p}.ports"), r.ports.as_ref()),
            })
        });
        let egress = spec.egress.as_ref().map(|rules| {
            each(&mut c, "spec.egress", rules, |c, p, r| EgressRule {
                to: c.egress_peer(&format!("{p}.to"), &r.to),
                ports: c.ports(&format!("{p}.ports"), r.ports.as_ref()),
            })
        });
        c.finish(NamespacePolicy {
            origin,
            namespace,
            ingress,
            egress,
        })
    }
}

pub(super) fn every_namespace() -> NamespaceSet {
    NamespaceSet {
        all: true,
        ..Default::default()
    }
}

impl TryFrom<&ClusterFirewall> for ClusterPolicy {
    type Error = Vec<FieldError>;

    fn try_from(obj: &ClusterFirewall) -> Result<Self, Vec<FieldError>> {
        let origin = Origin {
            kind: "ClusterFirewall",
            namespace: None,
            name: obj.name_any(),
        };
        let mut c = Checker {
            object: origin.to_string(),
            errors: Vec::new(),
        };
        let rules = each(&mut c, "spec.rules", &obj.spec.rules, |c, p, r| {
            ClusterRule {
                action: match r.action {
                    Action::Allow => ClusterAction::Allow,
                    Action::Deny => ClusterAction::Deny,
                    Action::Delegate => ClusterAction::Pass,
                },
                from: r
                    .from
                    .as_ref()
                    .map_or_else(every_namespace, |f| c.peer(&format!("{p}.from"), f)),
                to: r.to.as_ref().map_or_else(
                    || Destinations {
                        namespaces: every_namespace(),
                        ..Default::default()
                    },
                    |t| c.dest_peer(&format!("{p}.to"), t),
                ),
                ports: c.ports(&format!("{p}.ports"), r.ports.as_ref()),
            }
        });
        let defaults = obj
            .spec
            .defaults
            .as_ref()
            .map(|d| Defaults {
                cross_namespace: d.cross_namespace.map(|a| match a {
                    DefaultAction::Allow => PolicyVerdict::Allow,
                    DefaultAction::Deny => PolicyVerdict::Deny,
                }),
                mode: d.mode.map(|m| match m {
                    DefaultMode::Monitor => Mode::Monitor,
                    DefaultMode::Enforce => Mode::Enforce,
                    DefaultMode::Off => Mode::Off,
                }),
            })
            .filter(|d| d.cross_namespace.is_some() || d.mode.is_some());
        c.finish(ClusterPolicy {
            origin,
            priority: obj.spec.priority,
            rules,
            defaults,
        })
    }
}

/// Validates a NamespaceFirewall: its policy, or every problem found.
pub fn validate_namespace_firewall(
    obj: &NamespaceFirewall,
) -> Result<NamespacePolicy, Vec<FieldError>> {
    obj.try_into()
}

/// Validates a ClusterFirewall: its policy, or every problem found.
pub fn validate_cluster_firewall(obj: &ClusterFirewall) -> Result<ClusterPolicy, Vec<FieldError>> {
    obj.try_into()
}

/// A refused object: its rejection and its fail-closed stand-in, read from `spec` as written.
fn refused(origin: Origin, reason: &str, message: String, spec: &Value) -> Refused {
    refusal(origin, reason, message, |o| {
        super::fail_closed::stand_in(o, spec)
    })
}

/// A refused object of any front end: its rejection, and the stand-in `stand_in` reads from
/// `spec` as written.
pub(crate) fn refusal(
    origin: Origin,
    reason: &str,
    message: String,
    stand_in: impl FnOnce(Origin) -> StandIn,
) -> Refused {
    Refused {
        rejection: Rejection {
            kind: origin.kind.to_owned(),
            namespace: origin.namespace.clone(),
            name: origin.name.clone(),
            reason: reason.to_owned(),
            message,
            ..Rejection::default()
        },
        stand_in: stand_in(origin),
    }
}

/// The model's rejections of `kind` (objects the source could not deserialize), each refused
/// with the stand-in `stand_in` reads from its spec as written.
pub(crate) fn source_rejections<'m>(
    model: &'m ClusterModel,
    kind: &'m str,
    origin: impl Fn(&Rejection) -> Origin + 'm,
    stand_in: impl Fn(Origin, &Value) -> StandIn + 'm,
) -> impl Iterator<Item = Refused> + 'm {
    let of_kind = model.rejected.iter().filter(move |r| r.kind == kind);
    of_kind.map(move |r| {
        let spec = r.spec.clone().unwrap_or(Value::Null);
        let mut refused = refusal(origin(r), &r.reason, r.message.clone(), |o| {
            stand_in(o, &spec)
        });
        refused.rejection.spec = r.spec.clone();
        refused
    })
}

/// Field errors as one rejection message: `path: message; path: message`.
pub(crate) fn errors_message(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A deserialized spec as written again, for its stand-in. Serializing cannot fail; `Null`
/// would stand in as "unreadable".
pub(crate) fn written<S: serde::Serialize>(spec: &S) -> Value {
    serde_json::to_value(spec).unwrap_or(Value::Null)
}

fn invalid<S: serde::Serialize>(origin: Origin, spec: &S, errors: &[FieldError]) -> Refused {
    refused(
        origin,
        "InvalidSpec",
        errors_message(errors),
        &written(spec),
    )
}

/// Converts each object into `accepted`, or a refusal naming `origin(object)`.
fn convert<O, S: serde::Serialize, P>(
    objects: &[O],
    origin: impl Fn(&O) -> Origin,
    spec: impl Fn(&O) -> &S,
    accepted: &mut Vec<P>,
    refused: &mut Vec<Refused>,
) where
    for<'o> P: TryFrom<&'o O, Error = Vec<FieldError>>,
{
    for obj in objects {
        match P::try_from(obj) {
            Ok(p) => accepted.push(p),
            Err(errors) => refused.push(invalid(origin(obj), spec(obj), &errors)),
        }
    }
}

/// The policy of a model's Bulkhead objects; invalid objects (and those the source could not
/// deserialize) are refused, each with its stand-in.
pub fn policy_input(model: &ClusterModel) -> PolicyInput {
    let mut input = PolicyInput {
        refused: model
            .rejected
            .iter()
            .filter(|r| r.kind == "ClusterFirewall" || r.kind == "NamespaceFirewall")
            .map(|r| {
                let origin = Origin {
                    kind: if r.kind == "ClusterFirewall" {
                        "ClusterFirewall"
                    } else {
                        "NamespaceFirewall"
                    },
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                };
                let spec = r.spec.clone().unwrap_or(Value::Null);
                let mut refused = refused(origin, &r.reason, r.message.clone(), &spec);
                refused.rejection.spec = r.spec.clone();
                refused
            })
            .collect(),
        ..Default::default()
    };
    convert(
        &model.cluster_firewalls,
        |o| Origin {
            kind: "ClusterFirewall",
            namespace: None,
            name: o.name_any(),
        },
        |o| &o.spec,
        &mut input.cluster,
        &mut input.refused,
    );
    convert(
        &model.namespace_firewalls,
        |o| Origin {
            kind: "NamespaceFirewall",
            namespace: o.namespace(),
            name: o.name_any(),
        },
        |o| &o.spec,
        &mut input.namespaces,
        &mut input.refused,
    );
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClusterFirewallSpec, NamespaceFirewallSpec};

    fn nsfw(spec: &str) -> NamespaceFirewall {
        let mut o = NamespaceFirewall::new(
            "default",
            serde_yaml::from_str::<NamespaceFirewallSpec>(spec).unwrap(),
        );
        o.metadata.namespace = Some("payments".into());
        o
    }

    fn cfw(spec: &str) -> ClusterFirewall {
        ClusterFirewall::new(
            "baseline",
            serde_yaml::from_str::<ClusterFirewallSpec>(spec).unwrap(),
        )
    }

    /// The errors of a validation that must fail, as their messages.
    fn messages<T: fmt::Debug>(validated: Result<T, Vec<FieldError>>) -> Vec<String> {
        validated
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn nsfw_errors(spec: &str) -> Vec<String> {
        messages(validate_namespace_firewall(&nsfw(spec)))
    }

    fn cfw_errors(spec: &str) -> Vec<String> {
        messages(validate_cluster_firewall(&cfw(spec)))
    }

    #[test]
    fn valid_objects_parse_fully() {
        let v = validate_namespace_firewall(&nsfw(
            r#"
ingress:
  - from: {namespaces: [frontend], namespaceSelector: {matchLabels: {tier: web}}}
    services: [payments-api]
    ports: [{protocol: TCP, port: 8443}, {protocol: UDP, port: 53, endPort: 60}]
egress:
  - to: {namespaces: [db]}
    ports: [{protocol: TCP, port: 5432}]
  - to: {cidrs: ["10.0.0.0/8", "fd00::/8"], except: ["10.1.0.0/16"]}
    ports: [{port: 443}, {protocol: SCTP}]
"#,
        ))
        .unwrap();
        let ingress = v.ingress.unwrap();
        assert_eq!(ingress[0].services, vec!["payments-api".to_owned()]);
        assert_eq!(
            ingress[0].ports.0.as_deref().unwrap(),
            &[
                PortRange {
                    proto: IpProto::Tcp as u8,
                    lo: 8443,
                    hi: 8443
                },
                PortRange {
                    proto: IpProto::Udp as u8,
                    lo: 53,
                    hi: 60
                }
            ]
        );
        let egress = v.egress.unwrap();
        assert!(!egress[1].to.namespaces.all);
        assert!(egress[0].to.namespaces.names.contains("db"));
        assert_eq!(
            egress[1].to.except,
            vec!["10.1.0.0/16".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            egress[1].ports.0.as_deref().unwrap()[1],
            PortRange {
                proto: IpProto::Sctp as u8,
                lo: 0,
                hi: 65535
            }
        );
        let c = validate_cluster_firewall(&cfw(
            "rules: [{action: Deny}, {action: Delegate, to: {services: [db/pg]}}]",
        ))
        .unwrap();
        assert_eq!(c.priority, 1000);
        assert!(
            c.rules[0].from.all && c.rules[0].to.namespaces.all && c.rules[0].ports.0.is_none()
        );
        assert_eq!(
            c.rules[1].to.services,
            vec![("db".to_owned(), "pg".to_owned())]
        );
    }

    #[test]
    fn cidr_syntax() {
        assert_eq!(
            nsfw_errors("egress: [{to: {namespaces: [a]}}, {to: {cidrs: [10.0.0.0/33]}}]"),
            [
                r#"NamespaceFirewall/payments/default: spec.egress[1].to.cidrs[0]: invalid CIDR "10.0.0.0/33""#
            ]
        );
    }

    #[test]
    fn cidr_host_bits() {
        assert_eq!(
            nsfw_errors("egress: [{to: {cidrs: [10.1.2.3/8]}}]"),
            [
                r#"NamespaceFirewall/payments/default: spec.egress[0].to.cidrs[0]: invalid CIDR "10.1.2.3/8": host bits set (did you mean "10.0.0.0/8"?)"#
            ]
        );
        assert_eq!(
            nsfw_errors("egress: [{to: {cidrs: [10.1.2.3]}}]"),
            [
                r#"NamespaceFirewall/payments/default: spec.egress[0].to.cidrs[0]: invalid CIDR "10.1.2.3": missing prefix length (did you mean "10.1.2.3/32"?)"#
            ]
        );
    }

    #[test]
    fn except_outside_cidrs() {
        assert_eq!(
            nsfw_errors(
                "egress: [{to: {cidrs: [10.0.0.0/8], except: [10.1.0.0/16, 11.0.0.0/16]}}]"
            ),
            [
                r#"NamespaceFirewall/payments/default: spec.egress[0].to.except[1]: "11.0.0.0/16" is not inside any of cidrs"#
            ]
        );
    }

    #[test]
    fn protocol() {
        assert_eq!(
            nsfw_errors("ingress: [{from: {}, ports: [{protocol: ICMP}]}]"),
            [
                r#"NamespaceFirewall/payments/default: spec.ingress[0].ports[0].protocol: unknown protocol "ICMP" (expected TCP, UDP or SCTP)"#
            ]
        );
    }

    #[test]
    fn port_range() {
        assert_eq!(
            nsfw_errors("ingress: [{from: {}, ports: [{port: 0}, {port: 65536}]}]"),
            [
                "NamespaceFirewall/payments/default: spec.ingress[0].ports[0].port: port 0 out of range 1..=65535",
                "NamespaceFirewall/payments/default: spec.ingress[0].ports[1].port: port 65536 out of range 1..=65535",
            ]
        );
    }

    #[test]
    fn end_port() {
        assert_eq!(
            nsfw_errors(
                "ingress: [{from: {}, ports: [{port: 20, endPort: 10}, {endPort: 10}, {port: 1, endPort: 70000}]}]"
            ),
            [
                "NamespaceFirewall/payments/default: spec.ingress[0].ports[0].endPort: endPort 10 is less than port 20",
                "NamespaceFirewall/payments/default: spec.ingress[0].ports[1].endPort: endPort requires port",
                "NamespaceFirewall/payments/default: spec.ingress[0].ports[2].endPort: endPort 70000 out of range 1..=65535",
            ]
        );
    }

    #[test]
    fn selector_keys_and_values() {
        assert_eq!(
            nsfw_errors(
                "ingress: [{from: {namespaceSelector: {matchLabels: {\"a b\": web, tier: \"-x\"}}}}]"
            ),
            [
                r#"NamespaceFirewall/payments/default: spec.ingress[0].from.namespaceSelector.matchLabels["a b"]: invalid label key "a b": must be an optional DNS subdomain prefix and '/' followed by a name of at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"#,
                r#"NamespaceFirewall/payments/default: spec.ingress[0].from.namespaceSelector.matchLabels["tier"]: invalid label value "-x": must be empty or at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"#,
            ]
        );
    }

    #[test]
    fn selector_operators() {
        assert_eq!(
            nsfw_errors(
                r#"ingress: [{from: {namespaceSelector: {matchExpressions: [
                    {key: tier, operator: In},
                    {key: tier, operator: Exists, values: [a]},
                    {key: tier, operator: Near, values: [a]}]}}}]"#
            ),
            [
                "NamespaceFirewall/payments/default: spec.ingress[0].from.namespaceSelector.matchExpressions[0].values: operator In requires at least one value",
                "NamespaceFirewall/payments/default: spec.ingress[0].from.namespaceSelector.matchExpressions[1].values: operator Exists takes no values",
                r#"NamespaceFirewall/payments/default: spec.ingress[0].from.namespaceSelector.matchExpressions[2].operator: unknown operator "Near" (expected In, NotIn, Exists or DoesNotExist)"#,
            ]
        );
    }

    #[test]
    fn service_names() {
        assert_eq!(
            nsfw_errors("ingress: [{from: {}, services: [Payments-API]}]"),
            [
                r#"NamespaceFirewall/payments/default: spec.ingress[0].services[0]: invalid Service name "Payments-API": must be a DNS-1035 label (at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit)"#
            ]
        );
        assert_eq!(
            cfw_errors("rules: [{action: Allow, to: {services: [api, db/9pg]}}]"),
            [
                r#"ClusterFirewall/baseline: spec.rules[0].to.services[0]: invalid Service reference "api": expected namespace/name"#,
                r#"ClusterFirewall/baseline: spec.rules[0].to.services[1]: invalid Service name "9pg" in Service reference "db/9pg": must be a DNS-1035 label (at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit)"#,
            ]
        );
    }

    #[test]
    fn namespace_names() {
        assert_eq!(
            cfw_errors("rules: [{action: Deny, from: {namespaces: [ok, Bad_NS]}}]"),
            [
                r#"ClusterFirewall/baseline: spec.rules[0].from.namespaces[1]: invalid namespace name "Bad_NS": must be a DNS-1123 label (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"#
            ]
        );
    }

    #[test]
    fn cluster_action_and_unknown_fields_fail_deserialization() {
        assert!(serde_yaml::from_str::<ClusterFirewallSpec>("rules: [{action: Reject}]").is_err());
        assert!(
            serde_yaml::from_str::<NamespaceFirewallSpec>("ingress: [{from: {namespace: [a]}}]")
                .is_err()
        );
    }

    #[test]
    fn every_error_is_reported_and_nothing_half_applies() {
        let errs = cfw_errors(
            "rules: [{action: Allow, to: {cidrs: [bad]}, ports: [{port: 0}]}, {action: Deny}]",
        );
        assert_eq!(errs.len(), 2);
    }
}
