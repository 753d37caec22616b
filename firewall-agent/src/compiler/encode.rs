//! Encodes per-pair verdict functions into longest-prefix-match entries
//! (docs/design.md#policy-trie): local default, pair, protocol and port-prefix levels, each only where it differs
//! from the level above.
use std::collections::BTreeMap;

use firewall_common::{
    Identity, IpProto, NS_FIRST, PolicyPrefix, PolicyValue, Side, bulkhead_pair_exemption,
    pair_exemption,
};

use super::{
    evaluate::{Dst, Outside, PairValue, Plan, PlanSignature, Src, Val},
    identities::{Identities, IdentityKind},
    policy_set::{NamespaceRules, PolicySet},
    prefix::{port_prefix_count, port_prefixes},
    standard::NO_TRAITS,
};

fn value((verdict, rule): Val) -> PolicyValue {
    PolicyValue {
        verdict: verdict as u8,
        pad: [0; 3],
        rule,
    }
}

/// Namespace labels by name (empty for namespaces without a Namespace object).
pub type Labels<'a> = &'a BTreeMap<String, BTreeMap<String, String>>;

/// What the rules look at of a namespace.
#[derive(Clone, Copy)]
struct NsInfo<'p> {
    name: &'p str,
    labels: &'p BTreeMap<String, String>,
    rules: Option<&'p NamespaceRules>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// Pair evaluation shared by every pair with the same candidate rules.
struct Evaluations<'p> {
    set: &'p PolicySet,
    /// Namespace id -> what the rules look at (looked up once, not per pair; ids are dense).
    namespaces: Vec<Option<NsInfo<'p>>>,
    /// Signature -> index in `values` (foldhash: the memo is hashed once per pair, so a fast
    /// hash matters; its iteration order is never used, so the seed does not affect the output).
    index: foldhash::HashMap<PlanSignature, usize>,
    values: Vec<PairValue>,
}

impl<'p> Evaluations<'p> {
    fn src(&self, ns: u32, kind: &'p IdentityKind) -> Option<Src<'p>> {
        Some(match kind {
            IdentityKind::Namespace { traits, .. } => {
                let n = (*self.namespaces.get(ns as usize)?)?;
                Src {
                    name: n.name,
                    labels: n.labels,
                    rules: n.rules,
                    traits,
                    outside: None,
                }
            }
            IdentityKind::Outside { cidr, .. } => Src {
                name: "",
                labels: &NO_LABELS,
                rules: None,
                traits: &NO_TRAITS,
                outside: Some(Outside::Innermost(*cidr)),
            },
        })
    }

    fn dst(&self, ns: u32, kind: &'p IdentityKind) -> Option<Dst<'p>> {
        Some(match kind {
            IdentityKind::Namespace {
                services, traits, ..
            } => {
                let n = (*self.namespaces.get(ns as usize)?)?;
                Dst::Namespace {
                    name: n.name,
                    labels: n.labels,
                    services,
                    rules: n.rules,
                    traits,
                }
            }
            IdentityKind::Outside { cidr, .. } => Dst::Outside(Outside::Innermost(*cidr)),
        })
    }

    /// Index (in `values`) of the verdict function of `side` from `src` to `dst` (identities
    /// of namespaces `src_ns` and `dst_ns`).
    fn pair(
        &mut self,
        side: Side,
        (src_ns, src): (u32, &'p IdentityKind),
        (dst_ns, dst): (u32, &'p IdentityKind),
    ) -> Option<usize> {
        let (local_ns, peer_ns) = match side {
            Side::Egress => (src_ns, dst_ns),
            Side::Ingress => (dst_ns, src_ns),
        };
        let plan = Plan::new(
            self.set,
            side,
            self.src(src_ns, src)?,
            &self.dst(dst_ns, dst)?,
            bulkhead_pair_exemption(side, local_ns, peer_ns),
        );
        let sig = plan.signature();
        if let Some(i) = self.index.get(&sig) {
            return Some(*i);
        }
        let i = self.values.len();
        self.values.push(plan.pair_value());
        self.index.insert(sig, i);
        Some(i)
    }

    /// Egress: one row per local identity; without standard policies the value depends on the
    /// source namespace only, so rows of one namespace share one evaluation.
    fn egress_rows(&mut self, ids: &'p Identities, out: &mut BTreeMap<PolicyPrefix, PolicyValue>) {
        let per_identity = !self.set.standard.is_empty();
        let mut groups: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
        for id in &ids.local {
            if let Some((ns, _)) = ids.kinds.get(id) {
                let key = if per_identity { *id } else { *ns };
                groups.entry((*ns, key)).or_default().push(*id);
            }
        }
        for ((ns, key), locals) in &groups {
            let Some((_, kind)) = ids.kinds.get(key).or_else(|| ids.kinds.get(ns)) else {
                continue;
            };
            let me = identity(ids, *key, *ns);
            let row: Vec<(u32, usize)> = ids
                .kinds
                .iter()
                .filter(|(_, (pns, _))| pair_exemption(Side::Egress, &me, *pns).is_none())
                .filter_map(|(peer, (pns, pkind))| {
                    Some((*peer, self.pair(Side::Egress, (*ns, kind), (*pns, pkind))?))
                })
                .collect();
            for local in locals {
                emit_row(out, Side::Egress, *local, &row, &self.values);
            }
        }
    }

    /// Ingress: for local identities against every other namespace's identities, for the others
    /// against the local ones. Without standard policies the value depends on the source's
    /// namespace only (memo indexed by namespace id, reset after each row).
    fn ingress_rows(&mut self, ids: &'p Identities, out: &mut BTreeMap<PolicyPrefix, PolicyValue>) {
        let per_identity = !self.set.standard.is_empty();
        let all_peers: Vec<(u32, u32)> = ids.kinds.iter().map(|(id, (ns, _))| (*id, *ns)).collect();
        let local_peers: Vec<(u32, u32)> = all_peers
            .iter()
            .filter(|(id, _)| ids.local.contains(id))
            .copied()
            .collect();
        let mut by_src: Vec<Option<usize>> = vec![None; self.namespaces.len()];
        let mut touched: Vec<usize> = Vec::new();
        for (local, (lns, kind)) in ids.kinds.iter().filter(|(_, (ns, _))| *ns >= NS_FIRST) {
            let peers = if ids.local.contains(local) {
                &all_peers
            } else {
                &local_peers
            };
            let me = identity(ids, *local, *lns);
            let mut row: Vec<(u32, usize)> = Vec::with_capacity(peers.len());
            let judged = peers
                .iter()
                .filter(|(_, pns)| pair_exemption(Side::Ingress, &me, *pns).is_none());
            for (peer, pns) in judged {
                let Some((_, pkind)) = ids.kinds.get(peer) else {
                    continue;
                };
                if per_identity {
                    if let Some(i) = self.pair(Side::Ingress, (*pns, pkind), (*lns, kind)) {
                        row.push((*peer, i));
                    }
                    continue;
                }
                let slot = *pns as usize;
                let i = match by_src.get(slot).copied().flatten() {
                    Some(i) => i,
                    None => {
                        let Some(i) = self.pair(Side::Ingress, (*pns, pkind), (*lns, kind)) else {
                            continue;
                        };
                        if let Some(s) = by_src.get_mut(slot) {
                            *s = Some(i);
                            touched.push(slot);
                        }
                        i
                    }
                };
                row.push((*peer, i));
            }
            for slot in touched.drain(..) {
                by_src[slot] = None;
            }
            emit_row(out, Side::Ingress, *local, &row, &self.values);
        }
    }
}

/// An identity as the kernel holds it, for the exemption it gets.
fn identity(ids: &Identities, id: u32, ns: u32) -> Identity {
    Identity {
        id,
        ns,
        flags: ids.flags.get(&id).copied().unwrap_or_default(),
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

/// Emits one side of one local identity; `peers` index into `values`.
fn emit_row(
    out: &mut BTreeMap<PolicyPrefix, PolicyValue>,
    side: Side,
    local: u32,
    peers: &[(u32, usize)],
    values: &[PairValue],
) {
    let Some(default) = most_common(peers.iter().map(|(_, i)| &values[*i].other)) else {
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
    for (peer, i) in peers {
        let pv = &values[*i];
        let pair_key = PolicyPrefix {
            peer: Some(*peer),
            ..base
        };
        if pv.other != default {
            out.insert(pair_key, value(pv.other));
        }
        for (intervals, proto) in pv.protos.iter().zip(IpProto::WITH_PORTS) {
            if intervals.is_empty() {
                continue;
            }
            // The protocol's value: whichever needs the fewest entries.
            let cost = |v: Val| -> usize {
                usize::from(v != pv.other)
                    + intervals
                        .iter()
                        .filter(|iv| iv.2 != v)
                        .map(|iv| port_prefix_count(iv.0, iv.1))
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
                proto: Some(proto as u8),
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
/// ingress of local pods from any namespace, and ingress of any pod from local pods. Pairs an
/// exemption covers whatever the protocol ([`pair_exemption`]) get no entries: the kernel never
/// looks them up.
pub fn encode(
    set: &PolicySet,
    ids: &Identities,
    labels: Labels<'_>,
) -> BTreeMap<PolicyPrefix, PolicyValue> {
    let empty = BTreeMap::new();
    let mut namespaces = vec![None; ids.ns_ids.values().max().map_or(0, |m| *m as usize + 1)];
    for (name, id) in &ids.ns_ids {
        let labels = labels.get(name).unwrap_or(&empty);
        namespaces[*id as usize] = Some(NsInfo {
            name: name.as_str(),
            labels,
            rules: set.namespaces.get(name),
        });
    }
    let mut ev = Evaluations {
        set,
        namespaces,
        index: foldhash::HashMap::default(),
        values: Vec::new(),
    };
    let mut out = BTreeMap::new();
    ev.egress_rows(ids, &mut out);
    ev.ingress_rows(ids, &mut out);
    out
}
