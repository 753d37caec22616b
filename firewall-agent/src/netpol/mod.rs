//! The NetworkPolicy front end (`networking.k8s.io/v1`): each object converts into a
//! [`PodPolicy`] or is refused whole, every problem named by its JSON path, with a fail-closed
//! stand-in (docs/design.md#standard-apis). What the API server would already refuse is refused
//! here too, because a `file:` source has no API server in front of it.
use firewall_common::IpProto;
use ipnet::IpNet;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec},
    apimachinery::pkg::{apis::meta::v1 as meta, util::intstr::IntOrString},
};
use kube::ResourceExt as _;
use serde_json::Value;

use crate::{
    crd::{Checker, FieldError, LabelSelector, LabelSelectorRequirement, each},
    model::{ClusterModel, Rejection},
    policy::{
        ClusterAction, NamedPort, NamespaceSet, Origin, Peer, PeerRule, PodPolicy, PodSet,
        PolicyInput, PortRange, Ports, Refused, Selector, StandIn, StdPorts,
    },
};

/// The object kind, as origins and rejections name it.
pub const KIND: &str = "NetworkPolicy";

/// The policy of a model's NetworkPolicies; invalid ones (and those the source could not
/// deserialize) are refused, each isolating what it would have isolated with nothing allowed.
pub fn policy_input(model: &ClusterModel) -> PolicyInput {
    let mut input = PolicyInput::default();
    for r in model.rejected.iter().filter(|r| r.kind == KIND) {
        let origin = origin(r.namespace.clone().unwrap_or_default(), r.name.clone());
        let spec = r.spec.clone().unwrap_or(Value::Null);
        let mut refused = refused(origin, r.message.clone(), &spec);
        refused.rejection.spec = r.spec.clone();
        input.refused.push(refused);
    }
    for np in &model.network_policies {
        match validate(np) {
            Ok(p) => input.pod_policies.push(p),
            Err(errors) => {
                let message = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let spec = serde_json::to_value(&np.spec).unwrap_or(Value::Null);
                let o = origin(np.namespace().unwrap_or_default(), np.name_any());
                input.refused.push(refused(o, message, &spec));
            }
        }
    }
    input
}

fn origin(namespace: String, name: String) -> Origin {
    Origin {
        kind: KIND,
        namespace: Some(namespace),
        name,
    }
}

fn refused(origin: Origin, message: String, spec: &Value) -> Refused {
    Refused {
        rejection: Rejection {
            kind: KIND.to_owned(),
            namespace: origin.namespace.clone(),
            name: origin.name.clone(),
            reason: "InvalidSpec".to_owned(),
            message,
            ..Rejection::default()
        },
        stand_in: StandIn::Pod(stand_in(origin, spec)),
    }
}

/// Fail closed: the pods its `podSelector` selects (every pod of the namespace when it cannot
/// be read), isolated in the directions it names (both when they cannot be read), with nothing
/// allowed.
fn stand_in(origin: Origin, spec: &Value) -> PodPolicy {
    let namespace = origin.namespace.clone().unwrap_or_default();
    let mut c = Checker::new(&origin.to_string());
    let pods = spec
        .get("podSelector")
        .and_then(|v| serde_json::from_value::<LabelSelector>(v.clone()).ok())
        .map(|s| c.selector("spec.podSelector", &s))
        .filter(|_| c.is_clean());
    let types: Option<Vec<String>> = spec
        .get("policyTypes")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .filter(|t: &Vec<String>| t.iter().all(|t| t == "Ingress" || t == "Egress"));
    let egress_listed = spec
        .get("egress")
        .is_some_and(|e| e.as_array().is_none_or(|a| !a.is_empty()));
    let (ingress, egress) = match &types {
        Some(t) if !t.is_empty() => (
            t.iter().any(|t| t == "Ingress"),
            t.iter().any(|t| t == "Egress"),
        ),
        Some(_) => (true, egress_listed),
        None if spec.get("policyTypes").is_none() && spec.is_object() => (true, egress_listed),
        None => (true, true),
    };
    PodPolicy {
        subject: own_pods(&namespace, pods),
        ingress: ingress.then(Vec::new),
        egress: egress.then(Vec::new),
        origin,
    }
}

fn own_pods(namespace: &str, pods: Option<Selector>) -> PodSet {
    PodSet {
        namespaces: NamespaceSet {
            names: [namespace.to_owned()].into(),
            ..NamespaceSet::default()
        },
        pods,
    }
}

/// The crate's selector checks take the CRDs' selector type, which has the same shape.
pub(crate) fn selector(c: &mut Checker, path: &str, s: &meta::LabelSelector) -> Selector {
    let ours = LabelSelector {
        match_labels: s.match_labels.clone(),
        match_expressions: s.match_expressions.as_ref().map(|v| {
            v.iter()
                .map(|e| LabelSelectorRequirement {
                    key: e.key.clone(),
                    operator: e.operator.clone(),
                    values: e.values.clone(),
                })
                .collect()
        }),
    };
    c.selector(path, &ours)
}

/// Validates a NetworkPolicy: its policy, or every problem found.
pub fn validate(np: &NetworkPolicy) -> Result<PodPolicy, Vec<FieldError>> {
    let origin = origin(np.namespace().unwrap_or_default(), np.name_any());
    let namespace = origin.namespace.clone().unwrap_or_default();
    let mut c = Checker::new(&origin.to_string());
    let empty = NetworkPolicySpec::default();
    let spec = match &np.spec {
        Some(s) => s,
        None => {
            c.err("spec", "required");
            &empty
        }
    };
    // `podSelector` is required; `{}` selects every pod of the namespace.
    let pods = match &spec.pod_selector {
        Some(s) => selector(&mut c, "spec.podSelector", s),
        None => {
            c.err("spec.podSelector", "required");
            Selector::default()
        }
    };
    let (isolates_ingress, isolates_egress) = policy_types(&mut c, spec);
    let ingress = isolates_ingress.then(|| {
        let rules = spec.ingress.as_deref().unwrap_or_default();
        each(&mut c, "spec.ingress", rules, |c, p, r| {
            rule(
                c,
                p,
                "from",
                &namespace,
                r.from.as_deref(),
                r.ports.as_deref(),
            )
        })
    });
    let egress = isolates_egress.then(|| {
        let rules = spec.egress.as_deref().unwrap_or_default();
        each(&mut c, "spec.egress", rules, |c, p, r| {
            rule(c, p, "to", &namespace, r.to.as_deref(), r.ports.as_deref())
        })
    });
    c.finish(PodPolicy {
        subject: own_pods(&namespace, Some(pods)),
        ingress,
        egress,
        origin,
    })
}

/// Which directions the policy isolates: `policyTypes`, else Ingress, plus Egress when it has
/// egress rules (the API server's defaulting).
fn policy_types(c: &mut Checker, spec: &NetworkPolicySpec) -> (bool, bool) {
    match spec.policy_types.as_deref() {
        None | Some([]) => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
        Some(types) => {
            for (i, t) in types.iter().enumerate() {
                if t != "Ingress" && t != "Egress" {
                    c.err(
                        &format!("spec.policyTypes[{i}]"),
                        format_args!("unknown policy type {t:?} (expected Ingress or Egress)"),
                    );
                }
            }
            (
                types.iter().any(|t| t == "Ingress"),
                types.iter().any(|t| t == "Egress"),
            )
        }
    }
}

fn rule(
    c: &mut Checker,
    path: &str,
    field: &str,
    namespace: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
) -> PeerRule {
    // Absent or empty: every peer, inside the cluster or not.
    let peers = match peers {
        None | Some([]) => vec![Peer::Any],
        Some(list) => each(c, &format!("{path}.{field}"), list, |c, p, peer| {
            self::peer(c, p, namespace, peer)
        })
        .into_iter()
        .flatten()
        .collect(),
    };
    PeerRule {
        name: None,
        action: ClusterAction::Allow,
        peers,
        ports: self::ports(c, &format!("{path}.ports"), ports),
    }
}

fn peer(c: &mut Checker, path: &str, namespace: &str, peer: &NetworkPolicyPeer) -> Option<Peer> {
    if let Some(block) = &peer.ip_block {
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            c.err(
                path,
                "ipBlock may not be combined with podSelector or namespaceSelector",
            );
            return None;
        }
        return ip_block(
            c,
            &format!("{path}.ipBlock"),
            &block.cidr,
            block.except.as_deref(),
        );
    }
    let pods = peer
        .pod_selector
        .as_ref()
        .map(|s| selector(c, &format!("{path}.podSelector"), s));
    let namespaces = match &peer.namespace_selector {
        Some(s) => NamespaceSet {
            selector: Some(selector(c, &format!("{path}.namespaceSelector"), s)),
            ..NamespaceSet::default()
        },
        None if pods.is_some() => own_pods(namespace, None).namespaces,
        None => {
            c.err(
                path,
                "must specify one of podSelector, namespaceSelector or ipBlock",
            );
            return None;
        }
    };
    Some(Peer::Pods(PodSet { namespaces, pods }))
}

/// Like the API server, a CIDR with host bits set stands for its network.
pub(crate) fn block_cidr(c: &mut Checker, path: &str, s: &str) -> Option<IpNet> {
    match s.parse::<IpNet>() {
        Ok(net) => Some(net.trunc()),
        Err(_) => {
            c.err(path, format_args!("invalid CIDR {s:?}"));
            None
        }
    }
}

fn ip_block(c: &mut Checker, path: &str, cidr: &str, except: Option<&[String]>) -> Option<Peer> {
    let cidr = block_cidr(c, &format!("{path}.cidr"), cidr)?;
    let mut holes = Vec::new();
    for (i, s) in except.into_iter().flatten().enumerate() {
        let p = format!("{path}.except[{i}]");
        if let Some(net) = block_cidr(c, &p, s) {
            if cidr.contains(&net) && net.prefix_len() > cidr.prefix_len() {
                holes.push(net);
            } else {
                c.err(
                    &p,
                    format_args!("{s:?} must be a strict subset of cidr {cidr}"),
                );
            }
        }
    }
    Some(Peer::Network {
        cidr,
        except: holes,
    })
}

fn ports(c: &mut Checker, path: &str, ports: Option<&[NetworkPolicyPort]>) -> StdPorts {
    let Some(list) = ports.filter(|l| !l.is_empty()) else {
        return StdPorts::default();
    };
    let mut ranges = Vec::new();
    let mut named = Vec::new();
    for (i, spec) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let name = spec.protocol.as_deref().unwrap_or("TCP");
        let proto = match IpProto::from_name(name) {
            Some(pr) if IpProto::WITH_PORTS.contains(&pr) => pr as u8,
            _ => {
                c.err(
                    &format!("{p}.protocol"),
                    format_args!("unknown protocol {name:?} (expected TCP, UDP or SCTP)"),
                );
                continue;
            }
        };
        let end = spec
            .end_port
            .map(|v| c.port_number(&format!("{p}.endPort"), "endPort", v));
        match &spec.port {
            None if end.is_some() => c.err(&format!("{p}.endPort"), "endPort requires port"),
            None => ranges.push(PortRange {
                proto,
                lo: 0,
                hi: u16::MAX,
            }),
            Some(IntOrString::String(n)) if n.parse::<i32>().is_err() => {
                if end.is_some() {
                    c.err(
                        &format!("{p}.endPort"),
                        "endPort may not be set with a named port",
                    );
                } else if n.is_empty() || n.len() > 15 {
                    c.err(
                        &format!("{p}.port"),
                        format_args!("invalid port name {n:?}"),
                    );
                } else {
                    named.push(NamedPort {
                        proto,
                        name: n.clone(),
                    });
                }
            }
            Some(v) => {
                let n = match v {
                    IntOrString::Int(n) => *n,
                    IntOrString::String(s) => s.parse().unwrap_or(0),
                };
                let Some(lo) = c.port_number(&format!("{p}.port"), "port", n) else {
                    continue;
                };
                match end {
                    None => ranges.push(PortRange { proto, lo, hi: lo }),
                    Some(Some(hi)) if hi >= lo => ranges.push(PortRange { proto, lo, hi }),
                    Some(Some(hi)) => c.err(
                        &format!("{p}.endPort"),
                        format_args!("endPort {hi} is less than port {lo}"),
                    ),
                    Some(None) => {}
                }
            }
        }
    }
    StdPorts {
        ports: Ports(Some(ranges)),
        named,
    }
}

#[cfg(test)]
mod tests;
