//! The evaluation (docs/design.md#evaluation-order) of one side of a connection, as a list of
//! candidate rules in precedence order ([`Plan`]), decided at one (protocol, port) or as a whole
//! function of them.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use firewall_common::{Exemption, IpProto, PolicyVerdict, Side};
use ipnet::IpNet;

use super::policy_set::{DirectionRules, NamespaceRules, PolicySet, RULE_DEFAULT};
use crate::policy::{ClusterAction, Destinations, EgressRule, IngressRule, Ports};

/// Which evaluation step decided a side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Always allowed: both ends in one namespace.
    SameNamespace,
    /// Always allowed: DNS to the cluster DNS Service.
    Dns,
    /// Always allowed: ingress from world or host.
    Unrestricted,
    /// Step 1: a ClusterFirewall rule.
    ClusterRule,
    /// Step 2: a rule of the side's own namespace matched.
    NamespaceRule,
    /// Step 2: the side's namespace has rules for this direction and none matched.
    NoMatch,
    /// Step 3: a rule of the other side's namespace matched.
    OtherSide,
    /// Step 4: the cluster default (namespaces) or allow (world and host).
    Default,
}

impl From<Exemption> for Step {
    fn from(e: Exemption) -> Self {
        match e {
            Exemption::SameNamespace => Step::SameNamespace,
            Exemption::Dns => Step::Dns,
            Exemption::Unrestricted => Step::Unrestricted,
        }
    }
}

/// A verdict and the rule-table index that decided it (the kernel's `PolicyValue`, minus padding).
pub type Val = (PolicyVerdict, u32);

/// One side's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Allow or deny, and the rule index.
    pub value: Val,
    /// The step that decided.
    pub step: Step,
}

/// A world or host address, as the rules see it.
#[derive(Clone, Copy, Debug)]
pub enum Outside {
    /// A concrete address (explanations).
    Address(IpAddr),
    /// An identity: addresses whose innermost named prefix is this (or none).
    Innermost(Option<IpNet>),
}

impl Outside {
    /// Whether the address (every address of the identity) lies in `net`.
    pub fn inside(&self, net: &IpNet) -> bool {
        match self {
            Outside::Address(a) => net.contains(a),
            Outside::Innermost(p) => p.is_some_and(|p| net.contains(&p)),
        }
    }
}

/// The source namespace of a connection, with what the rules look at.
#[derive(Clone, Copy)]
pub struct Src<'a> {
    /// Namespace name.
    pub name: &'a str,
    /// Namespace labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The namespace's own NamespaceFirewall rules.
    pub rules: Option<&'a NamespaceRules>,
}

/// The other end of a side, as the rules see it.
pub enum Dst<'a> {
    /// An endpoint (pod or cluster IP) of a namespace, selected by these Services.
    Namespace {
        /// Namespace name.
        name: &'a str,
        /// Namespace labels.
        labels: &'a BTreeMap<String, String>,
        /// Names of the (referenced) Services selecting the endpoint.
        services: &'a BTreeSet<String>,
        /// The namespace's own NamespaceFirewall rules.
        rules: Option<&'a NamespaceRules>,
    },
    /// A world or host address.
    Outside(Outside),
}

fn dest_matches(to: &Destinations, dst: &Dst<'_>) -> bool {
    match dst {
        Dst::Namespace {
            name,
            labels,
            services,
            ..
        } => {
            to.namespaces.matches(name, labels)
                && (to.services.is_empty()
                    || to
                        .services
                        .iter()
                        .any(|(n, s)| n == name && services.contains(s)))
        }
        Dst::Outside(o) => to.matches_address(|net| o.inside(net)),
    }
}

/// A namespace allow-list entry, as the evaluation sees it.
trait AllowRule {
    fn ports(&self) -> &Ports;
    fn matches(&self, src: &Src<'_>, dst: &Dst<'_>) -> bool;
}

impl AllowRule for EgressRule {
    fn ports(&self) -> &Ports {
        &self.ports
    }

    fn matches(&self, _src: &Src<'_>, dst: &Dst<'_>) -> bool {
        dest_matches(&self.to, dst)
    }
}

impl AllowRule for IngressRule {
    fn ports(&self) -> &Ports {
        &self.ports
    }

    fn matches(&self, src: &Src<'_>, dst: &Dst<'_>) -> bool {
        self.from.matches(src.name, src.labels)
            && (self.services.is_empty()
                || matches!(dst, Dst::Namespace { services, .. } if self.services.iter().any(|s| services.contains(s))))
    }
}

/// Adds the entries of `list` matching the connection as allow candidates of `step`; returns
/// the rule index naming the list (for a no-match denial).
fn allows<'p, R: AllowRule>(
    cands: &mut Vec<Candidate<'p>>,
    list: &'p DirectionRules<R>,
    step: Step,
    src: &Src<'_>,
    dst: &Dst<'_>,
) -> u32 {
    cands.extend(
        list.rules
            .iter()
            .filter(|(_, r)| r.matches(src, dst))
            .map(|(rule, r)| Candidate {
                ports: r.ports(),
                action: ClusterAction::Allow,
                rule: *rule,
                step,
            }),
    );
    list.no_match
}

struct Candidate<'p> {
    ports: &'p Ports,
    /// Namespace rules only allow; `Pass` stops the cluster rules.
    action: ClusterAction,
    rule: u32,
    step: Step,
}

/// Identifies a [`Plan`]'s candidates (by rule, port set and outcome) and fallback.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PlanSignature {
    cands: Vec<(u32, usize, ClusterAction, Step)>,
    fallback: Decision,
}

/// The rules that can decide one side for one (source namespace, destination), in order.
pub struct Plan<'p> {
    cands: Vec<Candidate<'p>>,
    fallback: Decision,
}

/// The whole verdict function of a pair: over non-port protocols, and per port protocol as
/// ascending, merged, gap-free port intervals covering 0..=65535.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PairValue {
    /// Value for protocols without ports (ICMP, ...).
    pub other: Val,
    /// Per [`IpProto::WITH_PORTS`] entry: (first port, last port, value); empty when every port of the
    /// protocol has the value `other` (the common case, without allocation).
    pub protos: [Vec<(u16, u16, Val)>; 3],
}

impl<'p> Plan<'p> {
    /// Builds the plan of `side` for a connection from namespace `src` to `dst`.
    pub fn new(set: &'p PolicySet, side: Side, src: Src<'p>, dst: &Dst<'p>) -> Self {
        let mut cands: Vec<Candidate<'p>> = set
            .cluster_rules
            .iter()
            .filter(|(_, r)| r.from.matches(src.name, src.labels) && dest_matches(&r.to, dst))
            .map(|(rule, r)| Candidate {
                ports: &r.ports,
                action: r.action,
                rule: *rule,
                step: Step::ClusterRule,
            })
            .collect();
        let dst_rules = match dst {
            Dst::Namespace { rules, .. } => *rules,
            Dst::Outside(_) => None,
        };
        let egress_of_src = src.rules.and_then(|n| n.egress.as_ref());
        let ingress_of_dst = dst_rules.and_then(|n| n.ingress.as_ref());
        // Step 2: the side's own namespace rules, when it has some for this direction.
        let own = match side {
            Side::Egress => {
                egress_of_src.map(|d| allows(&mut cands, d, Step::NamespaceRule, &src, dst))
            }
            Side::Ingress => {
                ingress_of_dst.map(|d| allows(&mut cands, d, Step::NamespaceRule, &src, dst))
            }
        };
        let fallback = match own {
            Some(no_match) => Decision {
                value: (PolicyVerdict::Deny, no_match),
                step: Step::NoMatch,
            },
            None => {
                // Step 3: the other side's rules; step 4: the default.
                match (side, egress_of_src, ingress_of_dst) {
                    (Side::Egress, _, Some(d)) => {
                        allows(&mut cands, d, Step::OtherSide, &src, dst);
                    }
                    (Side::Ingress, Some(d), _) => {
                        allows(&mut cands, d, Step::OtherSide, &src, dst);
                    }
                    _ => {}
                }
                let verdict = match dst {
                    Dst::Namespace { .. } if !set.cross_namespace_allow => PolicyVerdict::Deny,
                    _ => PolicyVerdict::Allow,
                };
                Decision {
                    value: (verdict, RULE_DEFAULT),
                    step: Step::Default,
                }
            }
        };
        Plan { cands, fallback }
    }

    /// What the plan's outcome depends on: equal signatures give equal decisions everywhere,
    /// so the (costly) whole-function evaluation can be shared between pairs.
    pub fn signature(&self) -> PlanSignature {
        let cands = self
            .cands
            .iter()
            .map(|c| {
                (
                    c.rule,
                    std::ptr::from_ref(c.ports) as usize,
                    c.action,
                    c.step,
                )
            })
            .collect();
        PlanSignature {
            cands,
            fallback: self.fallback,
        }
    }

    /// The decision for one protocol and destination port.
    pub fn decide(&self, proto: u8, port: u16) -> Decision {
        let mut delegated = false;
        for c in &self.cands {
            if delegated && c.step == Step::ClusterRule {
                continue;
            }
            if !c.ports.contains(proto, port) {
                continue;
            }
            match c.action {
                ClusterAction::Pass => delegated = true,
                ClusterAction::Allow => {
                    return Decision {
                        value: (PolicyVerdict::Allow, c.rule),
                        step: c.step,
                    };
                }
                ClusterAction::Deny => {
                    return Decision {
                        value: (PolicyVerdict::Deny, c.rule),
                        step: c.step,
                    };
                }
            }
        }
        self.fallback
    }

    /// The decision as a function of protocol and port.
    pub fn pair_value(&self) -> PairValue {
        // Any protocol without ports stands for all of them.
        let other = self.decide(IpProto::Icmp as u8, 0).value;
        if self.cands.iter().all(|c| c.ports.0.is_none()) {
            return PairValue {
                other,
                protos: Default::default(),
            };
        }
        let protos = IpProto::WITH_PORTS.map(|proto| {
            let proto = proto as u8;
            let mut cuts: Vec<u32> = vec![0];
            for c in &self.cands {
                for r in c.ports.0.iter().flatten().filter(|r| r.proto == proto) {
                    cuts.push(u32::from(r.lo));
                    cuts.push(u32::from(r.hi) + 1);
                }
            }
            cuts.retain(|c| *c <= 0xffff);
            cuts.sort_unstable();
            cuts.dedup();
            let mut out: Vec<(u16, u16, Val)> = Vec::new();
            for (i, &start) in cuts.iter().enumerate() {
                let end = cuts.get(i + 1).map_or(0xffff, |n| n - 1);
                let v = self.decide(proto, start as u16).value;
                match out.last_mut() {
                    Some(last) if last.2 == v => last.1 = end as u16,
                    _ => out.push((start as u16, end as u16, v)),
                }
            }
            if matches!(out.as_slice(), [(_, _, v)] if *v == other) {
                out.clear();
            }
            out
        });
        PairValue { other, protos }
    }
}
