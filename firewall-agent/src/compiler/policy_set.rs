//! The accepted policy of a model: policies in evaluation order, the rule table the log resolves
//! `PolicyValue::rule` with, cluster defaults and rejections.
use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
};

use firewall_common::{Mode, PolicyVerdict};

use crate::{
    model::{ClusterModel, Rejection},
    policy::{
        ClusterPolicy, ClusterRule, Destinations, EgressRule, IngressRule, LastAccepted,
        NamespacePolicy, PolicyApis, PolicyInput, Settled, Tier, TieredPolicy,
    },
};

use super::standard::StandardRules;

/// Index of `"default"` in the rule table.
pub const RULE_DEFAULT: u32 = 0;

/// One namespace's rules for one direction (the union of its policies).
#[derive(Clone, Debug)]
pub struct DirectionRules<R> {
    /// (rule-table index of the holding policy, rule).
    pub rules: Vec<(u32, R)>,
    /// Rule-table index naming the policies, for "no rule matched" denials.
    pub no_match: u32,
}

impl<R> Default for DirectionRules<R> {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            no_match: RULE_DEFAULT,
        }
    }
}

/// A namespace's own rules.
#[derive(Clone, Debug, Default)]
pub struct NamespaceRules {
    /// `None` when no policy of the namespace restricts ingress.
    pub ingress: Option<DirectionRules<IngressRule>>,
    /// `None` when no policy of the namespace restricts egress.
    pub egress: Option<DirectionRules<EgressRule>>,
}

/// The accepted policy.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    /// Cluster rules by (priority, object name, index), with their rule-table index and their
    /// place among them and the Admin tier's rules.
    pub cluster_rules: Vec<(u32, ClusterRule, u32)>,
    /// NetworkPolicies and ClusterNetworkPolicies.
    pub standard: StandardRules,
    /// Namespace rules by namespace.
    pub namespaces: BTreeMap<String, NamespaceRules>,
    /// Verdict of cross-namespace pairs no rule decides (allow unless the defaults say deny).
    pub cross_namespace_allow: bool,
    /// Default mode of the policy that sets the defaults.
    pub default_mode: Option<Mode>,
    /// Services named by some rule: (namespace, name).
    pub referenced_services: BTreeSet<(String, String)>,
    /// Prefixes named in any `cidrs`/`except`.
    pub named_cidrs: BTreeSet<ipnet::IpNet>,
    /// Rule table: `PolicyValue::rule` -> the log's `policy` string; `[0]` is `"default"`.
    /// Grows while encoding: a NetworkPolicy denial names the policies isolating that endpoint.
    pub rules: RefCell<Vec<String>>,
    /// Objects not applied.
    pub rejected: Vec<Rejection>,
    index: RefCell<BTreeMap<String, u32>>,
}

impl PolicySet {
    /// The rule-table index of a `policy` string.
    pub fn intern(&self, s: String) -> u32 {
        if let Some(i) = self.index.borrow().get(&s) {
            return *i;
        }
        let mut rules = self.rules.borrow_mut();
        let i = rules.len() as u32;
        self.index.borrow_mut().insert(s.clone(), i);
        rules.push(s);
        i
    }

    /// The policy in force for a model: its objects through their front end, each refused
    /// one replaced by what `last` says stands in for it.
    pub fn in_force(model: &ClusterModel, apis: PolicyApis, last: &mut LastAccepted) -> Self {
        let mut input = if apis.bulkhead {
            crate::crd::policy_input(model)
        } else {
            PolicyInput::default()
        };
        input.resolve_defaults();
        if apis.network_policy {
            let standard = crate::netpol::policy_input(model);
            input.pod_policies = standard.pod_policies;
            input.refused.extend(standard.refused);
        }
        if apis.cluster_network_policy {
            let tiered = crate::cnp::policy_input(model);
            input.tiered = tiered.tiered;
            input.refused.extend(tiered.refused);
        }
        Self::build(last.settle(input))
    }

    /// Orders the policies in force.
    fn build(input: Settled) -> Self {
        let mut set = PolicySet {
            cross_namespace_allow: true,
            rules: RefCell::new(vec!["default".to_owned()]),
            rejected: input.rejected,
            index: RefCell::new(BTreeMap::from([("default".to_owned(), RULE_DEFAULT)])),
            ..Default::default()
        };
        set.add_cluster(input.cluster, input.tiered);
        set.add_namespaces(input.namespaces);
        let mut standard = std::mem::take(&mut set.standard);
        standard.add_netpols(input.pod_policies, |s| set.intern(s));
        set.standard = standard;
        set.named_cidrs.extend(set.standard.cidrs.iter().copied());
        // Not logged here: the agent reports each rejection once, when it first appears.
        set
    }

    /// ClusterFirewalls and the Admin tier run as one list by (priority, object name), a
    /// ClusterNetworkPolicy first where both tie; the Baseline tier by (priority, name).
    fn add_cluster(&mut self, mut policies: Vec<ClusterPolicy>, tiered: Vec<TieredPolicy>) {
        policies.sort_by(|a, b| (a.priority, &a.origin.name).cmp(&(b.priority, &b.origin.name)));
        let mut order: Vec<(i32, String, u8, Option<usize>)> = policies
            .iter()
            .map(|c| (c.priority, c.origin.name.clone(), 1, None))
            .collect();
        let (mut tiers, mut baseline): (Vec<_>, Vec<_>) =
            tiered.into_iter().partition(|t| t.tier == Tier::Admin);
        order.extend(
            tiers
                .iter()
                .enumerate()
                .map(|(i, t)| (t.priority, t.origin.name.clone(), 0, Some(i))),
        );
        order.sort();
        let place = |name: &str, admin: Option<usize>| {
            order
                .iter()
                .position(|(_, n, _, a)| *a == admin && (admin.is_some() || n == name))
                .unwrap_or_default() as u32
        };
        let mut standard = std::mem::take(&mut self.standard);
        for (i, t) in tiers.drain(..).enumerate() {
            let at = place("", Some(i));
            standard.add_tiered(t, at, |s| self.intern(s));
        }
        baseline.sort_by(|a, b| (a.priority, &a.origin.name).cmp(&(b.priority, &b.origin.name)));
        for (i, t) in baseline.into_iter().enumerate() {
            standard.add_tiered(t, i as u32, |s| self.intern(s));
        }
        self.standard = standard;
        let orders: Vec<u32> = policies
            .iter()
            .map(|c| place(&c.origin.name, None))
            .collect();
        // Conflicts were refused before (`PolicyInput::resolve_defaults`); only stand-ins, when
        // no accepted object sets defaults, can still disagree: the first by name decides.
        let winner = policies
            .iter()
            .filter(|c| c.defaults.is_some())
            .map(|c| c.origin.clone())
            .min_by(|a, b| a.name.cmp(&b.name));
        for (c, at) in policies.into_iter().zip(orders) {
            if let Some(d) = c.defaults.filter(|_| Some(&c.origin) == winner.as_ref()) {
                self.cross_namespace_allow = d.cross_namespace != Some(PolicyVerdict::Deny);
                self.default_mode = d.mode;
            }
            for (i, rule) in c.rules.into_iter().enumerate() {
                let idx = self.intern(format!("{}:rules[{i}]", c.origin));
                self.note_destinations(&rule.to);
                self.cluster_rules.push((idx, rule, at));
            }
        }
    }

    fn add_namespaces(&mut self, mut policies: Vec<NamespacePolicy>) {
        policies.sort_by(|a, b| (&a.namespace, &a.origin).cmp(&(&b.namespace, &b.origin)));
        let mut ingress_names: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut egress_names: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in policies {
            let label = p.origin.to_string();
            let idx = self.intern(label.clone());
            let ns = p.namespace;
            if let Some(rules) = p.ingress {
                ingress_names
                    .entry(ns.clone())
                    .or_default()
                    .push(label.clone());
                for s in rules.iter().flat_map(|r| &r.services) {
                    self.referenced_services.insert((ns.clone(), s.clone()));
                }
                let entry = self.namespaces.entry(ns.clone()).or_default();
                extend(&mut entry.ingress, idx, rules);
            }
            if let Some(rules) = p.egress {
                egress_names.entry(ns.clone()).or_default().push(label);
                for r in &rules {
                    self.note_destinations(&r.to);
                }
                extend(
                    &mut self.namespaces.entry(ns).or_default().egress,
                    idx,
                    rules,
                );
            }
        }
        self.name_no_match(ingress_names, |n| {
            n.ingress.as_mut().map(|d| &mut d.no_match)
        });
        self.name_no_match(egress_names, |n| n.egress.as_mut().map(|d| &mut d.no_match));
    }

    /// Names each namespace's "no rule matched" denials after the policies holding its list.
    fn name_no_match(
        &mut self,
        names: BTreeMap<String, Vec<String>>,
        no_match: fn(&mut NamespaceRules) -> Option<&mut u32>,
    ) {
        for (ns, names) in names {
            let i = self.intern(names.join(","));
            if let Some(d) = self.namespaces.get_mut(&ns).and_then(no_match) {
                *d = i;
            }
        }
    }

    fn note_destinations(&mut self, to: &Destinations) {
        self.referenced_services.extend(to.services.iter().cloned());
        self.named_cidrs.extend(to.cidrs.iter().copied());
        self.named_cidrs.extend(to.except.iter().copied());
    }
}

fn extend<R>(list: &mut Option<DirectionRules<R>>, idx: u32, rules: Vec<R>) {
    let list = list.get_or_insert_with(Default::default);
    list.rules.extend(rules.into_iter().map(|r| (idx, r)));
}
