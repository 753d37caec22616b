//! Evaluation (docs/design.md#evaluation-order) of one side of a connection, as a list of candidate rules in precedence
//! order ([`Plan`]), decided at one (protocol, port) or as a whole function of them.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use firewall_common::{SIDE_EGRESS, VERDICT_ALLOW, VERDICT_DENY};
use ipnet::IpNet;

use super::policy_set::{NamespaceRules, PolicySet, RULE_DEFAULT};
use crate::crd::{
    Action,
    valid::{Destinations, PORT_PROTOCOLS, Ports, ValidIngressRule},
};

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

/// A verdict and the rule-table index that decided it (the kernel's `PolicyValue`, minus padding).
pub type Val = (u8, u32);

/// One side's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// `VERDICT_ALLOW` or `VERDICT_DENY`, and the rule index.
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

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Act {
    Allow,
    Deny,
    Delegate,
}

struct Candidate<'p> {
    ports: &'p Ports,
    act: Act,
    rule: u32,
    step: Step,
}

/// Identifies a [`Plan`]'s candidates (by rule, port set and outcome) and fallback.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PlanSignature {
    cands: Vec<(u32, usize, Act, Step)>,
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
    /// Per `PORT_PROTOCOLS` entry: (first port, last port, value); empty when every port of the
    /// protocol has the value `other` (the common case, without allocation).
    pub protos: [Vec<(u16, u16, Val)>; 3],
}

impl<'p> Plan<'p> {
    /// Builds the plan of `side` for a connection from namespace `src` to `dst`.
    pub fn new(set: &'p PolicySet, side: u8, src: Src<'p>, dst: &Dst<'p>) -> Self {
        let Src {
            name: src,
            labels: src_labels,
            rules: src_rules,
        } = src;
        let mut cands = Vec::new();
        for (rule, r) in &set.cluster_rules {
            if r.from.matches(src, src_labels) && dest_matches(&r.to, dst) {
                let act = match r.action {
                    Action::Allow => Act::Allow,
                    Action::Deny => Act::Deny,
                    Action::Delegate => Act::Delegate,
                };
                cands.push(Candidate {
                    ports: &r.ports,
                    act,
                    rule: *rule,
                    step: Step::ClusterRule,
                });
            }
        }
        let dst_rules = match dst {
            Dst::Namespace { rules, .. } => *rules,
            Dst::Outside(_) => None,
        };
        let egress_of_src = src_rules.and_then(|n| n.egress.as_ref());
        let ingress_of_dst = dst_rules.and_then(|n| n.ingress.as_ref());
        let ingress_matches = |r: &ValidIngressRule| {
            r.from.matches(src, src_labels)
                && (r.services.is_empty()
                    || matches!(dst, Dst::Namespace { services, .. } if r.services.iter().any(|s| services.contains(s))))
        };
        let (own_egress, own_ingress) = if side == SIDE_EGRESS {
            (egress_of_src, None)
        } else {
            (None, ingress_of_dst)
        };
        let default = Decision {
            value: match dst {
                Dst::Namespace { .. } if !set.cross_namespace_allow => (VERDICT_DENY, RULE_DEFAULT),
                _ => (VERDICT_ALLOW, RULE_DEFAULT),
            },
            step: Step::Default,
        };
        let fallback = if let Some(own) = own_egress {
            for (rule, r) in &own.rules {
                if dest_matches(&r.to, dst) {
                    cands.push(Candidate {
                        ports: &r.ports,
                        act: Act::Allow,
                        rule: *rule,
                        step: Step::NamespaceRule,
                    });
                }
            }
            Decision {
                value: (VERDICT_DENY, own.no_match),
                step: Step::NoMatch,
            }
        } else if let Some(own) = own_ingress {
            for (rule, r) in &own.rules {
                if ingress_matches(r) {
                    cands.push(Candidate {
                        ports: &r.ports,
                        act: Act::Allow,
                        rule: *rule,
                        step: Step::NamespaceRule,
                    });
                }
            }
            Decision {
                value: (VERDICT_DENY, own.no_match),
                step: Step::NoMatch,
            }
        } else {
            if side == SIDE_EGRESS {
                for (rule, r) in ingress_of_dst.iter().flat_map(|d| d.rules.iter()) {
                    if ingress_matches(r) {
                        cands.push(Candidate {
                            ports: &r.ports,
                            act: Act::Allow,
                            rule: *rule,
                            step: Step::OtherSide,
                        });
                    }
                }
            } else {
                for (rule, r) in egress_of_src.iter().flat_map(|d| d.rules.iter()) {
                    if dest_matches(&r.to, dst) {
                        cands.push(Candidate {
                            ports: &r.ports,
                            act: Act::Allow,
                            rule: *rule,
                            step: Step::OtherSide,
                        });
                    }
                }
            }
            default
        };
        Plan { cands, fallback }
    }

    /// What the plan's outcome depends on: equal signatures give equal decisions everywhere,
    /// so the (costly) whole-function evaluation can be shared between pairs.
    pub fn signature(&self) -> PlanSignature {
        let cands = self
            .cands
            .iter()
            .map(|c| (c.rule, std::ptr::from_ref(c.ports) as usize, c.act, c.step))
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
            match c.act {
                Act::Delegate => delegated = true,
                Act::Allow => {
                    return Decision {
                        value: (VERDICT_ALLOW, c.rule),
                        step: c.step,
                    };
                }
                Act::Deny => {
                    return Decision {
                        value: (VERDICT_DENY, c.rule),
                        step: c.step,
                    };
                }
            }
        }
        self.fallback
    }

    /// The decision as a function of protocol and port.
    pub fn pair_value(&self) -> PairValue {
        // Any protocol without ports (ICMP = 1) stands for all of them.
        let other = self.decide(1, 0).value;
        if self.cands.iter().all(|c| c.ports.0.is_none()) {
            return PairValue {
                other,
                protos: Default::default(),
            };
        }
        let protos = PORT_PROTOCOLS.map(|proto| {
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
