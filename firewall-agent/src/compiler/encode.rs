//! Encodes per-pair verdict functions into longest-prefix-match entries (docs/compiler.md
//! "Policy trie"): local default, pair, protocol and port-prefix levels, each only where it differs
//! from the level above.
use std::collections::{BTreeMap, HashMap};

use firewall_common::{NS_FIRST, PolicyValue, SIDE_EGRESS, SIDE_INGRESS};

use super::{
    evaluate::{Dst, PairValue, Plan, Val},
    identities::{Identities, IdentityKind},
    policy_set::PolicySet,
    prefix::{PolicyPrefix, port_prefixes},
};
use crate::crd::valid::PORT_PROTOCOLS;

fn value((verdict, rule): Val) -> PolicyValue {
    PolicyValue {
        verdict,
        pad: [0; 3],
        rule,
    }
}

/// Namespace labels by name (empty for namespaces without a Namespace object).
pub type Labels<'a> = &'a BTreeMap<String, BTreeMap<String, String>>;

fn labels_of<'a>(
    labels: Labels<'a>,
    ns: &str,
    empty: &'a BTreeMap<String, String>,
) -> &'a BTreeMap<String, String> {
    labels.get(ns).unwrap_or(empty)
}

/// Evaluates one pair for every protocol and port.
fn pair(set: &PolicySet, labels: Labels<'_>, side: u8, src: &str, dst: &IdentityKind) -> PairValue {
    let empty = BTreeMap::new();
    let src_labels = labels_of(labels, src, &empty);
    match dst {
        IdentityKind::Namespace { name, services } => {
            let d = Dst::Namespace {
                name,
                labels: labels_of(labels, name, &empty),
                services,
            };
            Plan::new(set, side, src, src_labels, &d).pair_value()
        }
        IdentityKind::Outside { cidr, .. } => {
            let inside = |n: &ipnet::IpNet| cidr.is_some_and(|c| n.contains(&c));
            Plan::new(
                set,
                side,
                src,
                src_labels,
                &Dst::Outside { inside: &inside },
            )
            .pair_value()
        }
    }
}

fn most_common<'a>(values: impl Iterator<Item = &'a Val>) -> Option<Val> {
    let mut counts: BTreeMap<Val, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(*v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(v, _)| v)
}

/// Emits one side of one local identity.
fn emit_row(
    out: &mut BTreeMap<PolicyPrefix, PolicyValue>,
    side: u8,
    local: u32,
    peers: &[(u32, &PairValue)],
) {
    let Some(default) = most_common(peers.iter().map(|(_, p)| &p.other)) else {
        return;
    };
    let base = PolicyPrefix {
        side,
        local,
        peer: None,
        proto: None,
        port: None,
    };
    out.insert(base, value(default));
    for (peer, pv) in peers {
        let pair_key = PolicyPrefix {
            peer: Some(*peer),
            ..base
        };
        if pv.other != default {
            out.insert(pair_key, value(pv.other));
        }
        for (i, proto) in PORT_PROTOCOLS.iter().enumerate() {
            let intervals = &pv.protos[i];
            // The protocol's value: whichever needs the fewest entries.
            let cost = |v: Val| -> usize {
                usize::from(v != pv.other)
                    + intervals
                        .iter()
                        .filter(|iv| iv.2 != v)
                        .map(|iv| port_prefixes(iv.0, iv.1).len())
                        .sum::<usize>()
            };
            let mut best = (cost(pv.other), pv.other);
            for iv in intervals {
                let c = cost(iv.2);
                if c < best.0 {
                    best = (c, iv.2);
                }
            }
            let proto_value = best.1;
            let proto_key = PolicyPrefix {
                proto: Some(*proto),
                ..pair_key
            };
            if proto_value != pv.other {
                out.insert(proto_key, value(proto_value));
            }
            for iv in intervals.iter().filter(|iv| iv.2 != proto_value) {
                for p in port_prefixes(iv.0, iv.1) {
                    out.insert(
                        PolicyPrefix {
                            port: Some(p),
                            ..proto_key
                        },
                        value(iv.2),
                    );
                }
            }
        }
    }
}

/// The policy trie for every lookup the kernel of this node can make: egress of local pods,
/// ingress of local pods from any namespace, and ingress of any pod from local pods.
pub fn encode(
    set: &PolicySet,
    ids: &Identities,
    labels: Labels<'_>,
) -> BTreeMap<PolicyPrefix, PolicyValue> {
    let mut out = BTreeMap::new();
    let ns_name = |ns: u32| -> Option<&str> {
        match ids.kinds.get(&ns) {
            Some((_, IdentityKind::Namespace { name, .. })) => Some(name.as_str()),
            _ => None,
        }
    };
    let ns_identities: Vec<(u32, u32)> = ids
        .kinds
        .iter()
        .filter(|(_, (ns, _))| *ns >= NS_FIRST)
        .map(|(id, (ns, _))| (*id, *ns))
        .collect();

    // Egress: one row per source namespace, shared by its local identities.
    let mut by_ns: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for id in &ids.local {
        if let Some((ns, _)) = ids.kinds.get(id) {
            by_ns.entry(*ns).or_default().push(*id);
        }
    }
    for (ns, locals) in &by_ns {
        let Some(src) = ns_name(*ns) else { continue };
        let values: Vec<(u32, PairValue)> = ids
            .kinds
            .iter()
            .filter(|(_, (pns, _))| pns != ns)
            .map(|(peer, (_, kind))| (*peer, pair(set, labels, SIDE_EGRESS, src, kind)))
            .collect();
        let refs: Vec<(u32, &PairValue)> = values.iter().map(|(p, v)| (*p, v)).collect();
        for local in locals {
            emit_row(&mut out, SIDE_EGRESS, *local, &refs);
        }
    }

    // Ingress: the value depends on the source's namespace only.
    let local_peers: Vec<(u32, u32)> = ns_identities
        .iter()
        .filter(|(id, _)| ids.local.contains(id))
        .copied()
        .collect();
    for (local, (lns, kind)) in ids.kinds.iter().filter(|(_, (ns, _))| *ns >= NS_FIRST) {
        let peers = if ids.local.contains(local) {
            &ns_identities
        } else {
            &local_peers
        };
        let mut cache: HashMap<u32, PairValue> = HashMap::new();
        let mut values: Vec<(u32, u32)> = Vec::new();
        for (peer, pns) in peers.iter().filter(|(_, pns)| pns != lns) {
            if !cache.contains_key(pns) {
                let Some(src) = ns_name(*pns) else { continue };
                cache.insert(*pns, pair(set, labels, SIDE_INGRESS, src, kind));
            }
            values.push((*peer, *pns));
        }
        let refs: Vec<(u32, &PairValue)> = values
            .iter()
            .filter_map(|(p, ns)| cache.get(ns).map(|v| (*p, v)))
            .collect();
        emit_row(&mut out, SIDE_INGRESS, *local, &refs);
    }
    out
}
