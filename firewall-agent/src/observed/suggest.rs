//! Which rules the observed flows need (`firewall-agent suggest`, docs/design.md#agent-cli).
//!
//! A need is one (namespace, side, peer, protocol, port) that must be allowed:
//! - a violation line needs a rule on each side that denied it (its `sides`, else its
//!   `direction`): the ingress side in the destination namespace, the egress side in the source
//!   namespace;
//! - a flow line (ALLOWED, logged with discovery on) needs both: the point of discovery is to
//!   write the rules before anything is enforced;
//! - against the policy in force (`--against`), the compiler's evaluation decides instead: every
//!   side of every observed flow that the policy plus the suggestion would deny needs a rule.
//!   The evaluation is repeated with the suggestion added until nothing more is needed, because a
//!   namespace's first egress rule turns its other egress from "allowed by the other side's rule"
//!   into "denied unless listed".
//!
//! What a NamespaceFirewall cannot allow is reported as a note, never widened into a rule: a flow
//! without ports (ICMP: `ports` absent would allow every protocol), a protocol other than TCP,
//! UDP or SCTP, and a side a ClusterFirewall rule denies (it runs before every NamespaceFirewall).
use std::collections::{BTreeMap, BTreeSet};

use firewall_common::{IpProto, PolicyVerdict, Side};
use ipnet::IpNet;

use super::{
    flows::{Dest, FlowKey, FlowStats, Flows, Seen},
    rules::{self, Objects, RuleOptions},
};
use crate::{
    compiler::{CompileOptions, Destination, Evaluator, Step},
    model::ClusterModel,
};

/// The other end of a rule, as a NamespaceFirewall names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peer {
    Namespace(String),
    Cidr(IpNet),
}

/// One thing to allow: in `owner`'s rules for `side`, `peer` on `protocol`/`port`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Need {
    pub owner: String,
    pub side: Side,
    pub peer: Peer,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub port: u16,
}

/// The lines behind a need, and the destination pods they named (for `services:`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    pub seen: Seen,
    pub dst_pods: BTreeSet<String>,
}

/// Settings of a suggestion.
#[derive(Clone, Debug)]
pub struct SuggestOptions {
    /// Only objects for this namespace.
    pub namespace: Option<String>,
    /// How rules are written.
    pub rules: RuleOptions,
    /// The cluster DNS Service (for the evaluation against a policy).
    pub compile: CompileOptions,
}

/// What was suggested: the objects, and what could not be.
#[derive(Clone, Debug, Default)]
pub struct Suggestion {
    pub objects: Objects,
    /// One line per flow or side left out, and why.
    pub notes: Vec<String>,
}

/// Suggests the NamespaceFirewall objects the flows need. `cluster` (namespaces, pods,
/// Services) narrows ingress rules to a Service; `against` is the policy in force, whose
/// allowed flows need nothing.
pub fn suggest(
    flows: &Flows,
    opts: &SuggestOptions,
    cluster: Option<&ClusterModel>,
    against: Option<&ClusterModel>,
) -> Suggestion {
    let mut notes = Notes::new();
    let wanted = |ns: &str| opts.namespace.as_deref().is_none_or(|n| n == ns);
    let mut expressible = Vec::new();
    for (key, stats) in &flows.flows {
        match port_protocol(key) {
            Ok(port) => expressible.push((key, stats, port)),
            Err(why) => {
                let text = format!("{}: {why}", describe(key, &stats.total()));
                for owner in [Some(key.src.as_str()), dst_namespace(key)]
                    .into_iter()
                    .flatten()
                {
                    if wanted(owner) {
                        notes
                            .entry(text.clone())
                            .or_default()
                            .insert(owner.to_owned());
                    }
                }
            }
        }
    }
    let needs = match against {
        None => from_lines(&expressible, &mut notes),
        Some(policy) => {
            let model = evaluation_model(policy, cluster);
            against_policy(&expressible, &model, opts, cluster, &mut notes)
        }
    };
    let needs = needs
        .into_iter()
        .filter(|(n, _)| wanted(&n.owner))
        .collect();
    let mut objects = rules::objects(&needs, &opts.rules, cluster, against);
    // Each note also goes, as a comment, into the first object of each namespace it concerns.
    let mut seen = BTreeSet::new();
    for o in &mut objects {
        let ns = o.object.metadata.namespace.clone().unwrap_or_default();
        if seen.insert(ns.clone()) {
            o.notes = notes
                .iter()
                .filter(|(_, owners)| owners.contains(&ns))
                .map(|(text, _)| text.clone())
                .collect();
        }
    }
    Suggestion {
        objects,
        notes: notes.into_keys().collect(),
    }
}

/// Notes, each with the namespaces it concerns.
type Notes = BTreeMap<String, BTreeSet<String>>;

/// The destination port of a flow a rule can name, or why none can.
fn port_protocol(key: &FlowKey) -> Result<u16, String> {
    let with_ports =
        IpProto::from_name(&key.protocol).is_some_and(|p| IpProto::WITH_PORTS.contains(&p));
    match (with_ports, key.port) {
        (true, Some(port)) => Ok(port),
        (true, None) => Err("no destination port in the log; a rule without ports would allow every protocol and port, so none is suggested".to_owned()),
        (false, _) => Err(format!(
            "a NamespaceFirewall matches {} only with a rule without ports, which would allow every protocol and port; none is suggested (allow it by hand if that is wanted)",
            key.protocol
        )),
    }
}

fn dst_namespace(key: &FlowKey) -> Option<&str> {
    match &key.dst {
        Dest::Namespace(n) => Some(n),
        Dest::World(_) => None,
    }
}

/// `TCP web -> db:5432 (3 connections)`, for notes.
fn describe(key: &FlowKey, seen: &Seen) -> String {
    let dst = match &key.dst {
        Dest::Namespace(n) => n.clone(),
        Dest::World(ip) => ip.to_string(),
    };
    let port = key.port.map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{} {} -> {dst}{port} ({} connection(s))",
        key.protocol, key.src, seen.count
    )
}

/// The sides of a flow: egress always, ingress when the destination is a namespace's.
fn sides(key: &FlowKey) -> &'static [Side] {
    match key.dst {
        Dest::Namespace(_) => &[Side::Egress, Side::Ingress],
        Dest::World(_) => &[Side::Egress],
    }
}

/// The need of one side of a flow.
fn need(key: &FlowKey, side: Side, port: u16) -> Need {
    let (owner, peer) = match (side, &key.dst) {
        (Side::Ingress, Dest::Namespace(dst)) => (dst.clone(), Peer::Namespace(key.src.clone())),
        (_, Dest::Namespace(dst)) => (key.src.clone(), Peer::Namespace(dst.clone())),
        (_, Dest::World(ip)) => (key.src.clone(), Peer::Cidr(IpNet::from(*ip))),
    };
    Need {
        owner,
        side,
        peer,
        protocol: key.protocol.clone(),
        port,
    }
}

fn add(needs: &mut BTreeMap<Need, Evidence>, n: Need, seen: &Seen, stats: &FlowStats) {
    let e = needs.entry(n).or_default();
    e.seen.merge(seen);
    e.dst_pods.extend(stats.dst_pods.iter().cloned());
}

/// Needs as the lines state them (no policy to evaluate against).
fn from_lines(
    flows: &[(&FlowKey, &FlowStats, u16)],
    notes: &mut Notes,
) -> BTreeMap<Need, Evidence> {
    let mut needs = BTreeMap::new();
    for (key, stats, port) in flows {
        for &side in sides(key) {
            let mut seen = Seen::default();
            if let Some(d) = stats.denied.get(&side) {
                if let Some(rule) = &d.cluster_rule {
                    let owner = need(key, side, *port).owner;
                    let text = cluster_denied(key, side, &d.seen, rule);
                    notes.entry(text).or_default().insert(owner);
                    continue;
                }
                seen.merge(&d.seen);
            }
            if let Some(a) = stats.verdicts.get(&super::lines::Verdict::Allowed) {
                seen.merge(a);
            }
            if seen.count > 0 || !seen.first.is_empty() {
                add(&mut needs, need(key, side, *port), &seen, stats);
            }
        }
    }
    needs
}

fn cluster_denied(key: &FlowKey, side: Side, seen: &Seen, rule: &str) -> String {
    format!(
        "{}: the {side} side is denied by {rule}, which runs before every NamespaceFirewall; none is suggested",
        describe(key, seen)
    )
}

/// The cluster to evaluate in: the policy objects in force, with the namespaces, pods and
/// Services of `cluster` when it is given (else those of the policy's own source).
fn evaluation_model(policy: &ClusterModel, cluster: Option<&ClusterModel>) -> ClusterModel {
    match cluster {
        Some(c) => ClusterModel {
            namespace_firewalls: policy.namespace_firewalls.clone(),
            cluster_firewalls: policy.cluster_firewalls.clone(),
            rejected: policy.rejected.clone(),
            ..c.clone()
        },
        None => policy.clone(),
    }
}

/// The Services selecting a destination, one set per distinct destination of the flow, as the
/// evaluation needs them (Services that no rule names change nothing there).
fn destinations(key: &FlowKey, stats: &FlowStats, model: &ClusterModel) -> Vec<Destination> {
    let ns = match &key.dst {
        Dest::World(ip) => return vec![Destination::Address(*ip)],
        Dest::Namespace(ns) => ns,
    };
    let by_pod = stats.dst_pods.iter().filter_map(|name| {
        model
            .pods
            .iter()
            .find(|p| p.namespace == *ns && p.name == *name)
    });
    let by_ip = stats.dst_ips.iter().filter_map(|ip| {
        model
            .pods
            .iter()
            .find(|p| p.is_endpoint() && p.ips.contains(ip))
    });
    let mut sets: BTreeSet<Vec<String>> = by_pod
        .chain(by_ip)
        .map(|p| {
            model
                .services
                .iter()
                .filter(|s| s.selects(p))
                .map(|s| s.name.clone())
                .collect()
        })
        .collect();
    sets.extend(stats.dst_ips.iter().filter_map(|ip| {
        model
            .services
            .iter()
            .find(|s| s.namespace == *ns && s.cluster_ips.contains(ip))
            .map(|s| vec![s.name.clone()])
    }));
    if sets.is_empty() {
        sets.insert(Vec::new());
    }
    sets.into_iter()
        .map(|services| Destination::Namespace {
            name: ns.clone(),
            services,
        })
        .collect()
}

/// Needs by evaluation against `model` plus the suggestion itself, to a fixed point: each round
/// only adds, and there are at most as many needs as observed sides.
fn against_policy(
    flows: &[(&FlowKey, &FlowStats, u16)],
    model: &ClusterModel,
    opts: &SuggestOptions,
    cluster: Option<&ClusterModel>,
    notes: &mut Notes,
) -> BTreeMap<Need, Evidence> {
    let mut needs: BTreeMap<Need, Evidence> = BTreeMap::new();
    let dests: Vec<Vec<Destination>> = flows
        .iter()
        .map(|(k, s, _)| destinations(k, s, model))
        .collect();
    loop {
        let mut round = model.clone();
        let objects = rules::objects(&needs, &opts.rules, cluster, Some(model));
        round
            .namespace_firewalls
            .extend(objects.into_iter().map(|o| o.object));
        let ev = Evaluator::new(&round, &opts.compile);
        let mut added = false;
        for ((key, stats, port), dests) in flows.iter().zip(&dests) {
            let Some(proto) = IpProto::from_name(&key.protocol) else {
                continue;
            };
            for &side in sides(key) {
                let n = need(key, side, *port);
                // Only the objects that will be printed may count as applied, so a
                // `--namespace` suggestion converges by itself.
                let printed = opts.namespace.as_deref().is_none_or(|ns| ns == n.owner);
                if !printed || needs.contains_key(&n) {
                    continue;
                }
                let denial = dests.iter().find_map(|d| {
                    let e = ev.explain(&key.src, d, proto as u8, *port);
                    let d = match side {
                        Side::Egress => Some(e.egress),
                        Side::Ingress => e.ingress,
                    }?;
                    (d.verdict == PolicyVerdict::Deny).then_some(d)
                });
                match denial {
                    None => {}
                    Some(d) if d.step == Step::ClusterRule => {
                        let text = cluster_denied(key, side, &stats.total(), &d.policy);
                        notes.entry(text).or_default().insert(n.owner.clone());
                    }
                    Some(_) => {
                        add(&mut needs, n, &stats.total(), stats);
                        added = true;
                    }
                }
            }
        }
        if !added {
            return needs;
        }
    }
}
