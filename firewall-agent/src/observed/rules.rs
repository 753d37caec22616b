//! Needs written as NamespaceFirewall rules, never wider than the needs (docs/design.md#agent-cli):
//! - ingress: one rule per (source namespace, protocol, Service), listing the observed ports;
//!   `services: [S]` when the `cluster` shows every observed destination pod of that port is a
//!   backend of S (the Service with the fewest backends when several are; name order breaks
//!   ties), else the whole namespace (a NamespaceFirewall cannot name pods);
//! - egress to namespaces: one rule per (destination namespace, protocol) with the ports;
//! - egress to addresses: addresses as /32 or /128 (or truncated to `cidr_prefix_v4` /
//!   `cidr_prefix_v6`), one rule per (protocol, set of ports) with the prefixes that were seen on
//!   exactly those ports, so no address gets a port it was not seen on;
//! - ports are listed one by one; `merge_gap` joins ports at most that far apart into a range
//!   (1: consecutive ports only, which allows nothing more).
//!
//! The schema's bounds are kept by splitting, never by dropping: at most 32 ports or cidrs per
//! rule, 64 rules per direction per object; more make more rules and objects (`NAME-2`, ...).
//! A name already taken in the namespace by the policy in force is skipped, so applying the
//! output never replaces an object.
use std::collections::{BTreeMap, BTreeSet};

use firewall_common::Side;
use ipnet::IpNet;
use kube::api::ObjectMeta;

use super::{
    flows::Seen,
    suggest::{Evidence, Need, Peer},
};
use crate::{
    crd::{
        EgressPeer, EgressRule, IngressRule, NamespaceFirewall, NamespaceFirewallSpec, PortSpec,
    },
    model::ClusterModel,
};

/// Schema bounds (crd/common.rs): entries per list, rules per direction.
const LIST_MAX: usize = 32;
const RULES_MAX: usize = 64;

/// How rules are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleOptions {
    /// `metadata.name` of the objects.
    pub name: String,
    /// IPv4 destinations are truncated to this prefix length (32: exact).
    pub cidr_prefix_v4: u8,
    /// IPv6 destinations are truncated to this prefix length (128: exact).
    pub cidr_prefix_v6: u8,
    /// Ports at most this far apart are one range; `None`: every port on its own.
    pub merge_gap: Option<u16>,
}

impl Default for RuleOptions {
    fn default() -> Self {
        Self {
            name: "suggested".to_owned(),
            cidr_prefix_v4: 32,
            cidr_prefix_v6: 128,
            merge_gap: None,
        }
    }
}

/// One suggested object, with the lines behind each of its rules (for the comments).
#[derive(Clone, Debug, PartialEq)]
pub struct Suggested {
    pub object: NamespaceFirewall,
    /// Per ingress rule, in order.
    pub ingress: Vec<Seen>,
    /// Per egress rule, in order.
    pub egress: Vec<Seen>,
    /// What was observed in this namespace but cannot be allowed by a rule (a comment each).
    pub notes: Vec<String>,
}

/// The suggested objects, by namespace then name.
pub type Objects = Vec<Suggested>;

/// Ports and the lines behind them, for one rule key.
#[derive(Default)]
struct Group<T> {
    items: BTreeSet<T>,
    seen: Seen,
}

impl<T: Ord> Group<T> {
    fn add(&mut self, item: T, seen: &Seen) {
        self.items.insert(item);
        self.seen.merge(seen);
    }
}

/// Rules of one namespace, before they are split into objects.
#[derive(Default)]
struct Owner {
    ingress: Vec<(IngressRule, Seen)>,
    egress: Vec<(EgressRule, Seen)>,
}

/// Builds the objects for `needs`.
pub fn objects(
    needs: &BTreeMap<Need, Evidence>,
    opts: &RuleOptions,
    cluster: Option<&ClusterModel>,
    against: Option<&ClusterModel>,
) -> Objects {
    type Key = (String, String, Option<String>);
    let mut ingress: BTreeMap<String, BTreeMap<Key, Group<u16>>> = BTreeMap::new();
    let mut egress_ns: BTreeMap<String, BTreeMap<(String, String), Group<u16>>> = BTreeMap::new();
    let mut egress_cidr: BTreeMap<String, BTreeMap<(String, IpNet), Group<u16>>> = BTreeMap::new();
    for (n, e) in needs {
        match (&n.peer, n.side) {
            (Peer::Namespace(peer), Side::Ingress) => {
                let service = cluster.and_then(|c| narrowest_service(c, &n.owner, &e.dst_pods));
                let key = (peer.clone(), n.protocol.clone(), service);
                let owner = ingress.entry(n.owner.clone()).or_default();
                owner.entry(key).or_default().add(n.port, &e.seen);
            }
            (Peer::Namespace(peer), Side::Egress) => {
                let key = (peer.clone(), n.protocol.clone());
                let owner = egress_ns.entry(n.owner.clone()).or_default();
                owner.entry(key).or_default().add(n.port, &e.seen);
            }
            (Peer::Cidr(net), _) => {
                let key = (n.protocol.clone(), truncate(*net, opts));
                let owner = egress_cidr.entry(n.owner.clone()).or_default();
                owner.entry(key).or_default().add(n.port, &e.seen);
            }
        }
    }
    let mut owners: BTreeMap<String, Owner> = BTreeMap::new();
    for (ns, groups) in ingress {
        let o = owners.entry(ns).or_default();
        for ((peer, proto, service), g) in groups {
            for ports in port_specs(&proto, &g.items, opts.merge_gap).chunks(LIST_MAX) {
                let rule = IngressRule {
                    from: crate::crd::Peer {
                        namespaces: Some(vec![peer.clone()]),
                        namespace_selector: None,
                    },
                    services: service.clone().map(|s| vec![s]),
                    ports: Some(ports.to_vec()),
                };
                o.ingress.push((rule, g.seen.clone()));
            }
        }
    }
    for (ns, groups) in egress_ns {
        let o = owners.entry(ns).or_default();
        for ((peer, proto), g) in groups {
            let to = EgressPeer {
                namespaces: Some(vec![peer]),
                ..EgressPeer::default()
            };
            o.egress.extend(egress_rules(to, &proto, &g, opts));
        }
    }
    for (ns, by_net) in egress_cidr {
        let o = owners.entry(ns).or_default();
        for ((proto, ports), nets) in by_port_set(by_net) {
            for chunk in nets.items.iter().collect::<Vec<_>>().chunks(LIST_MAX) {
                let to = EgressPeer {
                    cidrs: Some(chunk.iter().map(|n| n.to_string()).collect()),
                    ..EgressPeer::default()
                };
                let g = Group {
                    items: ports.iter().copied().collect(),
                    seen: nets.seen.clone(),
                };
                o.egress.extend(egress_rules(to, &proto, &g, opts));
            }
        }
    }
    owners
        .into_iter()
        .flat_map(|(ns, o)| split(&ns, o, opts, against))
        .collect()
}

/// One egress rule per chunk of ports.
fn egress_rules(
    to: EgressPeer,
    proto: &str,
    g: &Group<u16>,
    opts: &RuleOptions,
) -> Vec<(EgressRule, Seen)> {
    port_specs(proto, &g.items, opts.merge_gap)
        .chunks(LIST_MAX)
        .map(|ports| {
            let rule = EgressRule {
                to: to.clone(),
                ports: Some(ports.to_vec()),
            };
            (rule, g.seen.clone())
        })
        .collect()
}

/// Address groups keyed by (protocol, their exact port set).
fn by_port_set(
    by_net: BTreeMap<(String, IpNet), Group<u16>>,
) -> BTreeMap<(String, Vec<u16>), Group<IpNet>> {
    let mut out: BTreeMap<(String, Vec<u16>), Group<IpNet>> = BTreeMap::new();
    for ((proto, net), g) in by_net {
        let key = (proto, g.items.into_iter().collect());
        out.entry(key).or_default().add(net, &g.seen);
    }
    out
}

fn truncate(net: IpNet, opts: &RuleOptions) -> IpNet {
    let len = match net {
        IpNet::V4(_) => opts.cidr_prefix_v4.min(32),
        IpNet::V6(_) => opts.cidr_prefix_v6.min(128),
    };
    IpNet::new(net.addr(), len).map_or(net, |n| n.trunc())
}

/// The ports as `PortSpec`s: one each, or runs whose neighbours are at most `gap` apart.
fn port_specs(proto: &str, ports: &BTreeSet<u16>, gap: Option<u16>) -> Vec<PortSpec> {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &p in ports {
        match (runs.last_mut(), gap) {
            (Some((_, end)), Some(gap)) if p - *end <= gap => *end = p,
            _ => runs.push((p, p)),
        }
    }
    runs.into_iter()
        .map(|(start, end)| PortSpec {
            protocol: proto.to_owned(),
            port: Some(i32::from(start)),
            end_port: (end > start).then_some(i32::from(end)),
        })
        .collect()
}

/// The Service of `ns` with the fewest backends among those whose backends include every pod
/// in `pods` (name order breaks ties); `None` when no Service does or no pod was named.
pub fn narrowest_service(
    cluster: &ClusterModel,
    ns: &str,
    pods: &BTreeSet<String>,
) -> Option<String> {
    if pods.is_empty() {
        return None;
    }
    cluster
        .services
        .iter()
        .filter(|s| s.namespace == ns)
        .filter_map(|s| {
            let backends: BTreeSet<&str> = cluster
                .pods
                .iter()
                .filter(|p| p.is_endpoint() && s.selects(p))
                .map(|p| p.name.as_str())
                .collect();
            pods.iter()
                .all(|p| backends.contains(p.as_str()))
                .then(|| (backends.len(), s.name.clone()))
        })
        .min()
        .map(|(_, name)| name)
}

/// One namespace's rules as objects of at most [`RULES_MAX`] rules per direction.
fn split(ns: &str, o: Owner, opts: &RuleOptions, against: Option<&ClusterModel>) -> Objects {
    let taken: BTreeSet<&str> = against
        .map(|m| {
            m.namespace_firewalls
                .iter()
                .filter(|f| f.metadata.namespace.as_deref() == Some(ns))
                .filter_map(|f| f.metadata.name.as_deref())
                .collect()
        })
        .unwrap_or_default();
    let mut names = (1..).map(|i| match i {
        1 => opts.name.clone(),
        i => format!("{}-{i}", opts.name),
    });
    let mut ingress = o.ingress.into_iter().peekable();
    let mut egress = o.egress.into_iter().peekable();
    let mut out = Vec::new();
    while ingress.peek().is_some() || egress.peek().is_some() {
        let (i_rules, i_seen): (Vec<_>, Vec<_>) = ingress.by_ref().take(RULES_MAX).unzip();
        let (e_rules, e_seen): (Vec<_>, Vec<_>) = egress.by_ref().take(RULES_MAX).unzip();
        let Some(name) = names.find(|n| !taken.contains(n.as_str())) else {
            break;
        };
        let spec = NamespaceFirewallSpec {
            // Absent, never `[]`: an empty list would deny the whole direction.
            ingress: (!i_rules.is_empty()).then_some(i_rules),
            egress: (!e_rules.is_empty()).then_some(e_rules),
        };
        let mut object = NamespaceFirewall::new(&name, spec);
        object.metadata = ObjectMeta {
            name: Some(name),
            namespace: Some(ns.to_owned()),
            ..ObjectMeta::default()
        };
        out.push(Suggested {
            object,
            ingress: i_seen,
            egress: e_seen,
            notes: Vec::new(),
        });
    }
    out
}
