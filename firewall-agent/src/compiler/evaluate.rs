//! The evaluation (docs/design.md#evaluation-order) of one side of a connection, as a list of
//! candidate rules in precedence order ([`Plan`]), decided at one (protocol, port) or as a whole
//! function of them.
use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use firewall_common::{DNS_PORT, Exemption, IpProto, PolicyVerdict, Side, is_dns};
use ipnet::IpNet;

use super::{
    policy_set::{DirectionRules, NamespaceRules, PolicySet, RULE_DEFAULT},
    standard::{End, Traits, resolve_ports},
};
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
    /// Step 1: a ClusterNetworkPolicy rule of the Admin tier.
    AdminTier,
    /// Step 2: a NetworkPolicy rule isolating the side's pod matched.
    NetworkPolicy,
    /// Step 2: NetworkPolicies isolate the side's pod and none of their rules matched.
    NetworkPolicyNoMatch,
    /// Step 3: a ClusterNetworkPolicy rule of the Baseline tier.
    BaselineTier,
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
    /// What the standard rules see of the source endpoint.
    pub traits: &'a Traits,
    /// Set when the source is outside every namespace (ingress judged by a standard policy).
    pub outside: Option<Outside>,
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
        /// What the standard rules see of it.
        traits: &'a Traits,
    },
    /// A world or host address.
    Outside(Outside),
}

impl<'a> Src<'a> {
    /// The source as a standard rule sees it.
    pub fn end(&self) -> End<'a> {
        match self.outside {
            Some(o) => End::Outside(o),
            None => End::Namespace {
                name: self.name,
                labels: self.labels,
                traits: self.traits,
            },
        }
    }
}

impl<'a> Dst<'a> {
    /// The destination as a standard rule sees it.
    pub fn end(&self) -> End<'a> {
        match self {
            Dst::Namespace {
                name,
                labels,
                traits,
                ..
            } => End::Namespace {
                name,
                labels,
                traits,
            },
            Dst::Outside(o) => End::Outside(*o),
        }
    }
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
    bulkhead: bool,
    src: &Src<'_>,
    dst: &Dst<'_>,
) -> u32 {
    cands.extend(
        list.rules
            .iter()
            .filter(|(_, r)| r.matches(src, dst))
            .map(|(rule, r)| Candidate {
                ports: Cow::Borrowed(r.ports()),
                action: ClusterAction::Allow,
                rule: *rule,
                step,
                group: Group::Namespace,
                bulkhead,
            }),
    );
    list.no_match
}

/// The evaluation's steps that a `Pass` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Group {
    /// ClusterFirewall rules and the Admin tier.
    First,
    /// The namespace's own rules (NetworkPolicy, NamespaceFirewall).
    Namespace,
    /// The Baseline tier.
    Baseline,
}

struct Candidate<'p> {
    ports: Cow<'p, Ports>,
    /// Namespace rules allow (or deny when none matched); `Pass` ends the candidate's group.
    action: ClusterAction,
    rule: u32,
    step: Step,
    group: Group,
    /// A Bulkhead rule: never judges what Bulkhead's exemptions cover.
    bulkhead: bool,
}

/// How a candidate's ports take part in a signature: borrowed ones by address, resolved
/// named ports by value.
#[derive(Clone, PartialEq, Eq, Hash)]
enum PortsKey {
    At(usize),
    Resolved(Option<Vec<crate::policy::PortRange>>),
}

/// Identifies a [`Plan`]'s candidates (by rule, port set and outcome) and fallback.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PlanSignature {
    cands: Vec<(u32, PortsKey, ClusterAction, Step, Group, bool)>,
    fallback: Decision,
    exempt: Option<Exemption>,
    dns: bool,
}

/// The rules that can decide one side for one (source, destination), in order.
pub struct Plan<'p> {
    cands: Vec<Candidate<'p>>,
    fallback: Decision,
    /// Bulkhead's exemption for every port of this pair.
    exempt: Option<Exemption>,
    /// The destination is the DNS Service's: Bulkhead exempts TCP and UDP port 53.
    dns: bool,
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
    /// Builds the plan of `side` for a connection from `src` to `dst`
    /// (docs/design.md#evaluation-order). `exempt` is Bulkhead's exemption for every port of
    /// the pair ([`firewall_common::bulkhead_pair_exemption`] of the two ends' namespace ids).
    pub fn new(
        set: &'p PolicySet,
        side: Side,
        src: Src<'p>,
        dst: &Dst<'p>,
        exempt: Option<Exemption>,
    ) -> Self {
        let (src_end, dst_end) = (src.end(), dst.end());
        let (local, peer) = match side {
            Side::Egress => (src_end, dst_end),
            Side::Ingress => (dst_end, src_end),
        };
        let dns = matches!(dst, Dst::Namespace { traits, .. } if traits.dns);
        let std = &set.standard;
        // Step 1: ClusterFirewall rules and the Admin tier, merged by their place.
        let mut first: Vec<(u32, Candidate<'p>)> = Vec::new();
        if src.outside.is_none() {
            first.extend(
                set.cluster_rules
                    .iter()
                    .filter(|(_, r, _)| {
                        r.from.matches(src.name, src.labels) && dest_matches(&r.to, dst)
                    })
                    .map(|(rule, r, at)| {
                        let c = Candidate {
                            ports: Cow::Borrowed(&r.ports),
                            action: r.action,
                            rule: *rule,
                            step: Step::ClusterRule,
                            group: Group::First,
                            bulkhead: true,
                        };
                        (*at, c)
                    }),
            );
        }
        first.extend(tier_candidates(
            std,
            &std.admin,
            side,
            &local,
            &peer,
            &dst_end,
            Group::First,
        ));
        first.sort_by_key(|(at, _)| *at);
        let mut cands: Vec<Candidate<'p>> = first.into_iter().map(|(_, c)| c).collect();
        // Step 2: the side's own rules.
        let fallback = own_rules(set, side, &src, dst, &local, &peer, &mut cands);
        // Step 3: the Baseline tier.
        cands.extend(
            tier_candidates(
                std,
                &std.baseline,
                side,
                &local,
                &peer,
                &dst_end,
                Group::Baseline,
            )
            .map(|(_, c)| c),
        );
        Plan {
            cands,
            fallback,
            exempt,
            dns,
        }
    }

    /// What the plan's outcome depends on: equal signatures give equal decisions everywhere,
    /// so the (costly) whole-function evaluation can be shared between pairs.
    pub fn signature(&self) -> PlanSignature {
        let cands = self
            .cands
            .iter()
            .map(|c| {
                let ports = match &c.ports {
                    Cow::Borrowed(p) => PortsKey::At(std::ptr::from_ref(*p) as usize),
                    Cow::Owned(p) => PortsKey::Resolved(p.0.clone()),
                };
                (c.rule, ports, c.action, c.step, c.group, c.bulkhead)
            })
            .collect();
        PlanSignature {
            cands,
            fallback: self.fallback,
            exempt: self.exempt,
            dns: self.dns,
        }
    }

    /// Bulkhead's exemption at one protocol and port.
    fn exemption_at(&self, proto: u8, port: u16) -> Option<Exemption> {
        self.exempt
            .or((self.dns && is_dns(proto, port)).then_some(Exemption::Dns))
    }

    /// The decision for one protocol and destination port.
    pub fn decide(&self, proto: u8, port: u16) -> Decision {
        let exempt = self.exemption_at(proto, port);
        let mut passed: Option<Group> = None;
        for c in &self.cands {
            if (c.bulkhead && exempt.is_some()) || passed == Some(c.group) {
                continue;
            }
            if !c.ports.contains(proto, port) {
                continue;
            }
            let verdict = match c.action {
                ClusterAction::Pass => {
                    passed = Some(c.group);
                    continue;
                }
                ClusterAction::Allow => PolicyVerdict::Allow,
                ClusterAction::Deny => PolicyVerdict::Deny,
            };
            return Decision {
                value: (verdict, c.rule),
                step: c.step,
            };
        }
        match exempt {
            Some(e) => Decision {
                value: (PolicyVerdict::Allow, RULE_DEFAULT),
                step: e.into(),
            },
            None => self.fallback,
        }
    }

    /// The decision as a function of protocol and port.
    pub fn pair_value(&self) -> PairValue {
        // Any protocol without ports stands for all of them.
        let other = self.decide(IpProto::Icmp as u8, 0).value;
        if !self.dns && self.cands.iter().all(|c| c.ports.0.is_none()) {
            return PairValue {
                other,
                protos: Default::default(),
            };
        }
        let protos = IpProto::WITH_PORTS.map(|proto| {
            let proto = proto as u8;
            let mut cuts: Vec<u32> = vec![0];
            if self.dns {
                cuts.extend([u32::from(DNS_PORT), u32::from(DNS_PORT) + 1]);
            }
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

/// The Admin or Baseline tier's rules for this side whose subject is `local` and whose peers
/// match `peer`, with their place; named ports resolve against the destination.
fn tier_candidates<'p>(
    std: &'p super::standard::StandardRules,
    rules: &'p [super::standard::TierRule],
    side: Side,
    local: &End<'_>,
    peer: &End<'_>,
    destination: &End<'_>,
    group: Group,
) -> impl Iterator<Item = (u32, Candidate<'p>)> {
    let step = if group == Group::First {
        Step::AdminTier
    } else {
        Step::BaselineTier
    };
    rules
        .iter()
        .filter(|r| {
            r.side == side
                && std.holds(&r.subject, local)
                && r.rule.peers.iter().any(|p| std.peer_matches(p, peer))
        })
        .map(|r| {
            let c = Candidate {
                ports: resolve_ports(&r.rule.ports, destination),
                action: r.rule.action,
                rule: r.idx,
                step,
                group,
                bulkhead: false,
            };
            (r.order, c)
        })
        .collect::<Vec<_>>()
        .into_iter()
}

/// Step 2 (and, for Bulkhead's rules, step 3): the candidates of the side's own rules, and the
/// decision when nothing decides: a denial when the side's own rules exist and none matched,
/// else the default (step 4).
fn own_rules<'p>(
    set: &'p PolicySet,
    side: Side,
    src: &Src<'p>,
    dst: &Dst<'p>,
    local: &End<'_>,
    peer: &End<'_>,
    cands: &mut Vec<Candidate<'p>>,
) -> Decision {
    let std = &set.standard;
    let dst_rules = match dst {
        Dst::Namespace { rules, .. } => *rules,
        Dst::Outside(_) => None,
    };
    let egress_of_src = src.rules.and_then(|n| n.egress.as_ref());
    let ingress_of_dst = dst_rules.and_then(|n| n.ingress.as_ref());
    let isolating: Vec<&super::standard::NetPol> = std.isolating(side, local).collect();
    let isolated = !isolating.is_empty();
    if isolated {
        // NetworkPolicy isolates this pod: the union of its policies' rules and the
        // namespace's own NamespaceFirewall rules for this direction, whatever Bulkhead exempts.
        let destination = dst.end();
        for np in &isolating {
            for r in np.rules(side).into_iter().flatten() {
                if r.peers.iter().any(|p| std.peer_matches(p, peer)) {
                    cands.push(Candidate {
                        ports: resolve_ports(&r.ports, &destination),
                        action: ClusterAction::Allow,
                        rule: np.idx,
                        step: Step::NetworkPolicy,
                        group: Group::Namespace,
                        bulkhead: false,
                    });
                }
            }
        }
    }
    let own_no_match = match side {
        Side::Egress => {
            egress_of_src.map(|d| allows(cands, d, Step::NamespaceRule, !isolated, src, dst))
        }
        Side::Ingress => {
            ingress_of_dst.map(|d| allows(cands, d, Step::NamespaceRule, !isolated, src, dst))
        }
    };
    if isolated {
        let mut names: Vec<String> = isolating.iter().map(|n| n.name.clone()).collect();
        let firewalls = own_no_match.and_then(|i| set.rules.borrow().get(i as usize).cloned());
        names.extend(firewalls);
        // Ends the namespace's group before the Baseline tier: NetworkPolicy decided.
        cands.push(Candidate {
            ports: Cow::Owned(Ports(None)),
            action: ClusterAction::Deny,
            rule: set.intern(names.join(",")),
            step: Step::NetworkPolicyNoMatch,
            group: Group::Namespace,
            bulkhead: false,
        });
    } else if let Some(no_match) = own_no_match {
        // A "no match" denial, unless an exemption covers the connection.
        cands.push(Candidate {
            ports: Cow::Owned(Ports(None)),
            action: ClusterAction::Deny,
            rule: no_match,
            step: Step::NoMatch,
            group: Group::Namespace,
            bulkhead: true,
        });
    } else {
        // Step 3: the other side's rules.
        match (side, egress_of_src, ingress_of_dst) {
            (Side::Egress, _, Some(d)) => {
                allows(cands, d, Step::OtherSide, true, src, dst);
            }
            (Side::Ingress, Some(d), _) => {
                allows(cands, d, Step::OtherSide, true, src, dst);
            }
            _ => {}
        }
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
