//! The standard APIs in the compiled policy (docs/design.md#standard-apis): their rules in
//! evaluation order, the pod selectors and CIDRs that split identities, and how a rule matches
//! an end of a connection.
use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
};

use firewall_common::Side;
use ipnet::IpNet;

use super::evaluate::Outside;
use crate::policy::{
    Peer, PeerRule, PodPolicy, PodSet, PortRange, Ports, Selector, StdPorts, Tier, TieredPolicy,
};

/// What the standard rules see of a namespace endpoint besides its namespace: the referenced
/// pod selectors it matches, the referenced CIDRs its address lies in, its named ports, and
/// whether it is the DNS Service's. Endpoints with equal traits share an identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Traits {
    /// Indices into [`StandardRules::selectors`].
    pub groups: BTreeSet<u32>,
    /// Referenced standard CIDRs (blocks and their holes) containing the address.
    pub cidrs: BTreeSet<IpNet>,
    /// Referenced named ports: name -> (protocol, port).
    pub named: BTreeMap<String, (u8, u16)>,
    /// An endpoint of the cluster DNS Service.
    pub dns: bool,
}

/// The traits of an endpoint no standard rule tells apart.
pub static NO_TRAITS: Traits = Traits {
    groups: BTreeSet::new(),
    cidrs: BTreeSet::new(),
    named: BTreeMap::new(),
    dns: false,
};

/// One end of a connection as a standard rule sees it.
#[derive(Clone, Copy)]
pub enum End<'a> {
    /// A pod or cluster IP.
    Namespace {
        /// Namespace name.
        name: &'a str,
        /// Namespace labels.
        labels: &'a BTreeMap<String, String>,
        /// Its traits.
        traits: &'a Traits,
    },
    /// Outside every namespace.
    Outside(Outside),
}

/// One ClusterNetworkPolicy rule, for one side.
#[derive(Clone, Debug)]
pub struct TierRule {
    /// Rule-table index (the log's `policy`).
    pub idx: u32,
    /// Position among the Admin tier's rules and ClusterFirewall's (lower first), or among the
    /// Baseline tier's.
    pub order: u32,
    /// The side it judges: ingress rules at their subject's ingress, egress at its egress.
    pub side: Side,
    /// Who it applies to.
    pub subject: PodSet,
    /// What it matches and does.
    pub rule: PeerRule,
}

/// One NetworkPolicy.
#[derive(Clone, Debug)]
pub struct NetPol {
    /// Rule-table index of the object.
    pub idx: u32,
    /// The object's name, for the comma-separated names of a "no rule matched" denial.
    pub name: String,
    /// The pods it isolates.
    pub subject: PodSet,
    /// Ingress rules, when it isolates ingress.
    pub ingress: Option<Vec<PeerRule>>,
    /// Egress rules, when it isolates egress.
    pub egress: Option<Vec<PeerRule>>,
}

impl NetPol {
    /// Its rules for `side`, when it isolates that side.
    pub fn rules(&self, side: Side) -> Option<&Vec<PeerRule>> {
        match side {
            Side::Ingress => self.ingress.as_ref(),
            Side::Egress => self.egress.as_ref(),
        }
    }
}

/// The standard policies in force.
#[derive(Clone, Debug, Default)]
pub struct StandardRules {
    /// Admin tier rules (merged with ClusterFirewall rules by `order`).
    pub admin: Vec<TierRule>,
    /// Baseline tier rules, in order.
    pub baseline: Vec<TierRule>,
    /// NetworkPolicies by namespace.
    pub netpols: BTreeMap<String, Vec<NetPol>>,
    /// Distinct non-empty pod selectors that subjects and peers use.
    pub selectors: Vec<Selector>,
    /// Blocks and holes of `Network` peers.
    pub cidrs: BTreeSet<IpNet>,
    /// Port names that rules use.
    pub named_ports: BTreeSet<String>,
}

impl StandardRules {
    /// Whether no standard policy is in force (then identities split as before and Bulkhead's
    /// exemptions hold everywhere).
    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.baseline.is_empty() && self.netpols.is_empty()
    }

    fn note_pods(&mut self, set: &PodSet) {
        if let Some(s) = set.pods.as_ref().filter(|s| !is_everything(s))
            && !self.selectors.contains(s)
        {
            self.selectors.push(s.clone());
        }
    }

    fn note_rule(&mut self, rule: &PeerRule) {
        for p in &rule.peers {
            match p {
                Peer::Pods(set) => self.note_pods(set),
                Peer::Network { cidr, except } => {
                    self.cidrs.insert(*cidr);
                    self.cidrs.extend(except.iter().copied());
                }
                Peer::Any => {}
            }
        }
        self.named_ports
            .extend(rule.ports.named.iter().map(|n| n.name.clone()));
    }

    /// Adds the NetworkPolicies, each named by `intern`.
    pub fn add_netpols(
        &mut self,
        mut policies: Vec<PodPolicy>,
        mut intern: impl FnMut(String) -> u32,
    ) {
        policies.sort_by(|a, b| a.origin.cmp(&b.origin));
        for p in policies {
            self.note_pods(&p.subject);
            for r in p.ingress.iter().chain(p.egress.iter()).flatten() {
                self.note_rule(r);
            }
            let name = p.origin.to_string();
            let ns = p.origin.namespace.clone().unwrap_or_default();
            self.netpols.entry(ns).or_default().push(NetPol {
                idx: intern(name.clone()),
                name,
                subject: p.subject,
                ingress: p.ingress,
                egress: p.egress,
            });
        }
    }

    /// Adds a ClusterNetworkPolicy's rules, each named by `intern`, at `order` (its place among
    /// the rules of its tier).
    pub fn add_tiered(
        &mut self,
        p: TieredPolicy,
        order: u32,
        mut intern: impl FnMut(String) -> u32,
    ) {
        self.note_pods(&p.subject);
        for (side, rules) in [(Side::Ingress, &p.ingress), (Side::Egress, &p.egress)] {
            for (i, rule) in rules.iter().enumerate() {
                self.note_rule(rule);
                let dir = if side == Side::Ingress {
                    "ingress"
                } else {
                    "egress"
                };
                let name = match &rule.name {
                    Some(n) => format!("{}:{dir}[{i}]({n})", p.origin),
                    None => format!("{}:{dir}[{i}]", p.origin),
                };
                let r = TierRule {
                    idx: intern(name),
                    order,
                    side,
                    subject: p.subject.clone(),
                    rule: rule.clone(),
                };
                match p.tier {
                    Tier::Admin => self.admin.push(r),
                    Tier::Baseline => self.baseline.push(r),
                }
            }
        }
    }

    /// The group of a selector, if it splits identities.
    fn group(&self, s: &Selector) -> Option<u32> {
        self.selectors.iter().position(|x| x == s).map(|i| i as u32)
    }

    /// Whether a pod set holds an end.
    pub fn holds(&self, set: &PodSet, end: &End<'_>) -> bool {
        let End::Namespace {
            name,
            labels,
            traits,
        } = end
        else {
            return false;
        };
        set.namespaces.matches(name, labels)
            && match set.pods.as_ref().filter(|s| !is_everything(s)) {
                None => true,
                Some(s) => self.group(s).is_some_and(|g| traits.groups.contains(&g)),
            }
    }

    /// Whether a peer matches an end.
    pub fn peer_matches(&self, peer: &Peer, end: &End<'_>) -> bool {
        match peer {
            Peer::Any => true,
            Peer::Pods(set) => self.holds(set, end),
            Peer::Network { cidr, except } => match end {
                End::Namespace { traits, .. } => {
                    traits.cidrs.contains(cidr) && !except.iter().any(|e| traits.cidrs.contains(e))
                }
                End::Outside(o) => o.inside(cidr) && !except.iter().any(|e| o.inside(e)),
            },
        }
    }

    /// The NetworkPolicies isolating `local`'s `side`.
    pub fn isolating<'s, 'e>(
        &'s self,
        side: Side,
        local: &'e End<'e>,
    ) -> impl Iterator<Item = &'s NetPol> + use<'s, 'e> {
        let ns = match local {
            End::Namespace { name, .. } => Some(*name),
            End::Outside(_) => None,
        };
        ns.and_then(|n| self.netpols.get(n))
            .into_iter()
            .flatten()
            .filter(move |p| p.rules(side).is_some() && self.holds(&p.subject, local))
    }

    /// Whether a standard policy judges `local`'s `side` (the identity flag).
    pub fn judges(&self, side: Side, local: &End<'_>) -> bool {
        self.isolating(side, local).next().is_some()
            || self
                .admin
                .iter()
                .chain(&self.baseline)
                .any(|r| r.side == side && self.holds(&r.subject, local))
    }

    /// The endpoint's groups among the referenced selectors.
    pub fn groups_of(&self, labels: &BTreeMap<String, String>) -> BTreeSet<u32> {
        (0..self.selectors.len() as u32)
            .filter(|g| self.selectors[*g as usize].matches(labels))
            .collect()
    }
}

/// `{}` selects everything, so it splits nothing.
fn is_everything(s: &Selector) -> bool {
    s.labels.is_empty() && s.requirements.is_empty()
}

/// A rule's ports for a destination: its numbered ports plus its named ports as the
/// destination names them (a destination outside the cluster names none).
pub fn resolve_ports<'p>(ports: &'p StdPorts, destination: &End<'_>) -> Cow<'p, Ports> {
    if ports.named.is_empty() {
        return Cow::Borrowed(&ports.ports);
    }
    let mut ranges = ports.ports.0.clone().unwrap_or_default();
    if let End::Namespace { traits, .. } = destination {
        for n in &ports.named {
            if let Some((proto, port)) = traits.named.get(&n.name)
                && *proto == n.proto
            {
                ranges.push(PortRange {
                    proto: *proto,
                    lo: *port,
                    hi: *port,
                });
            }
        }
    }
    Cow::Owned(Ports(Some(ranges)))
}
