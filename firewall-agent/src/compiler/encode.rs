//! Encodes per-pair verdict functions into longest-prefix-match entries
//! (docs/design.md#policy-trie): local default, pair, protocol and port-prefix levels, each only where it differs
//! from the level above.
use std::collections::BTreeMap;

use firewall_common::{IpProto, NS_FIRST, PolicyPrefix, PolicyValue, Side, pair_exemption};

use super::{
    evaluate::{Dst, Outside, PairValue, Plan, PlanSignature, Src, Val},
    identities::{Identities, IdentityKind},
    policy_set::PolicySet,
    prefix::{port_prefix_count, port_prefixes},
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

/// Pair evaluation shared by every pair with the same candidate rules.
struct Evaluations<'p> {
    set: &'p PolicySet,
    /// Namespace id -> what the rules look at (looked up once, not per pair; ids are dense).
    namespaces: Vec<Option<Src<'p>>>,
    /// Signature -> index in `values` (foldhash: the memo is hashed once per pair, so a fast
    /// hash matters; its iteration order is never used, so the seed does not affect the output).
    index: foldhash::HashMap<PlanSignature, usize>,
    values: Vec<PairValue>,
}

impl<'p> Evaluations<'p> {
    /// Index (in `values`) of the verdict function of `side` from namespace `src` to `dst`
    /// (an identity of namespace `dst_ns`).
    fn pair(&mut self, side: Side, src: u32, dst_ns: u32, dst: &'p IdentityKind) -> Option<usize> {
        let src = (*self.namespaces.get(src as usize)?)?;
        let plan = match dst {
            IdentityKind::Namespace { services, .. } => {
                let n = self.namespaces.get(dst_ns as usize)?.as_ref()?;
                let d = Dst::Namespace {
                    name: n.name,
                    labels: n.labels,
                    services,
                    rules: n.rules,
                };
                Plan::new(self.set, side, src, &d)
            }
            IdentityKind::Outside { cidr, .. } => Plan::new(
                self.set,
                side,
                src,
                &Dst::Outside(Outside::Innermost(*cidr)),
            ),
        };
        let sig = plan.signature();
        if let Some(i) = self.index.get(&sig) {
            return Some(*i);
        }
        let i = self.values.len();
        self.values.push(plan.pair_value());
        self.index.insert(sig, i);
        Some(i)
    }

    /// Egress: one row per source namespace, shared by its local identities.
    fn egress_rows(&mut self, ids: &'p Identities, out: &mut BTreeMap<PolicyPrefix, PolicyValue>) {
        let mut by_ns: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for id in &ids.local {
            if let Some((ns, _)) = ids.kinds.get(id) {
                by_ns.entry(*ns).or_default().push(*id);
            }
        }
        for (ns, locals) in &by_ns {
            let row: Vec<(u32, usize)> = ids
                .kinds
                .iter()
                .filter(|(_, (pns, _))| pair_exemption(Side::Egress, *ns, *pns).is_none())
                .filter_map(|(peer, (pns, kind))| {
                    Some((*peer, self.pair(Side::Egress, *ns, *pns, kind)?))
                })
                .collect();
            for local in locals {
                emit_row(out, Side::Egress, *local, &row, &self.values);
            }
        }
    }

    /// Ingress: for local identities against every other namespace's identities, for the others
    /// against the local ones. The value depends on the source's namespace only (memo indexed
    /// by namespace id, reset after each row).
    fn ingress_rows(&mut self, ids: &'p Identities, out: &mut BTreeMap<PolicyPrefix, PolicyValue>) {
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
            let mut row: Vec<(u32, usize)> = Vec::with_capacity(peers.len());
            let judged = peers
                .iter()
                .filter(|(_, pns)| pair_exemption(Side::Ingress, *lns, *pns).is_none());
            for (peer, pns) in judged {
                let slot = *pns as usize;
                let i = match by_src.get(slot).copied().flatten() {
                    Some(i) => i,
                    None => {
                        let Some(i) = self.pair(Side::Ingress, *pns, *lns, kind) else {
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
        namespaces[*id as usize] = Some(Src {
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
