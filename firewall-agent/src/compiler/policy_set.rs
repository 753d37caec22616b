//! The accepted policy of a model: validated objects in evaluation order, the rule table the log
//! resolves `PolicyValue::rule` with, cluster defaults and rejections.
use std::collections::{BTreeMap, BTreeSet};

use firewall_common::Mode;
use kube::ResourceExt as _;

use crate::{
    crd::{
        DefaultAction, DefaultMode,
        valid::{ValidClusterRule, ValidEgressRule, ValidIngressRule},
        validate_cluster_firewall, validate_namespace_firewall,
    },
    model::{ClusterModel, Rejection},
};

/// Index of `"default"` in the rule table.
pub const RULE_DEFAULT: u32 = 0;

/// One namespace's NamespaceFirewall rules for one direction (the union of its objects).
#[derive(Clone, Debug)]
pub struct DirectionRules<R> {
    /// (rule-table index of the holding object, rule).
    pub rules: Vec<(u32, R)>,
    /// Rule-table index naming the objects, for "no rule matched" denials.
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
    /// `None` when no object of the namespace restricts ingress.
    pub ingress: Option<DirectionRules<ValidIngressRule>>,
    /// `None` when no object of the namespace restricts egress.
    pub egress: Option<DirectionRules<ValidEgressRule>>,
}

/// The accepted policy.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    /// ClusterFirewall rules by (priority, object name, index), with their rule-table index.
    pub cluster_rules: Vec<(u32, ValidClusterRule)>,
    /// NamespaceFirewall rules by namespace.
    pub namespaces: BTreeMap<String, NamespaceRules>,
    /// `defaults.crossNamespace` (Allow when unset).
    pub cross_namespace_allow: bool,
    /// `defaults.mode` of the winning ClusterFirewall.
    pub default_mode: Option<Mode>,
    /// Services named by some rule: (namespace, name).
    pub referenced_services: BTreeSet<(String, String)>,
    /// Prefixes named in any `cidrs`/`except`.
    pub named_cidrs: BTreeSet<ipnet::IpNet>,
    /// Rule table: `PolicyValue::rule` -> the log's `policy` string; `[0]` is `"default"`.
    pub rules: Vec<String>,
    /// Objects not applied.
    pub rejected: Vec<Rejection>,
}

impl PolicySet {
    fn intern(&mut self, s: String, index: &mut BTreeMap<String, u32>) -> u32 {
        if let Some(i) = index.get(&s) {
            return *i;
        }
        let i = self.rules.len() as u32;
        index.insert(s.clone(), i);
        self.rules.push(s);
        i
    }

    /// Validates the model's policy objects; invalid ones become rejections.
    pub fn build(model: &ClusterModel) -> Self {
        let mut set = PolicySet {
            cross_namespace_allow: true,
            rules: vec!["default".to_owned()],
            rejected: model.rejected.clone(),
            ..Default::default()
        };
        let mut index = BTreeMap::from([("default".to_owned(), RULE_DEFAULT)]);

        let mut cfws = Vec::new();
        for obj in &model.cluster_firewalls {
            match validate_cluster_firewall(obj) {
                Ok(v) => cfws.push(v),
                Err(errors) => {
                    set.rejected
                        .push(invalid("ClusterFirewall", None, obj.name_any(), &errors));
                }
            }
        }
        cfws.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        // Defaults: the object whose name sorts first wins; any other setting them is rejected.
        let mut with_defaults: Vec<&str> = cfws
            .iter()
            .filter(|c| c.defaults.is_some())
            .map(|c| c.name.as_str())
            .collect();
        with_defaults.sort();
        let winner = with_defaults.first().map(|s| (*s).to_owned());
        let mut kept = Vec::new();
        for c in cfws {
            if c.defaults.is_some() && Some(&c.name) != winner.as_ref() {
                let w = winner.clone().unwrap_or_default();
                set.rejected.push(Rejection {
                    kind: "ClusterFirewall".to_owned(),
                    namespace: None,
                    name: c.name.clone(),
                    reason: "DefaultsConflict".to_owned(),
                    message: format!(
                        "spec.defaults: ClusterFirewall/{w} already sets the cluster defaults"
                    ),
                });
                continue;
            }
            if let Some(d) = c.defaults {
                set.cross_namespace_allow = d.cross_namespace != Some(DefaultAction::Deny);
                set.default_mode = d.mode.map(|m| match m {
                    DefaultMode::Monitor => Mode::Monitor,
                    DefaultMode::Enforce => Mode::Enforce,
                    DefaultMode::Off => Mode::Off,
                });
            }
            kept.push(c);
        }
        for c in kept {
            for (i, rule) in c.rules.into_iter().enumerate() {
                let idx = set.intern(format!("ClusterFirewall/{}:rules[{i}]", c.name), &mut index);
                set.note_destinations(&rule.to);
                set.cluster_rules.push((idx, rule));
            }
        }

        let mut nsfws = Vec::new();
        for obj in &model.namespace_firewalls {
            match validate_namespace_firewall(obj) {
                Ok(v) => nsfws.push(v),
                Err(errors) => set.rejected.push(invalid(
                    "NamespaceFirewall",
                    obj.namespace(),
                    obj.name_any(),
                    &errors,
                )),
            }
        }
        nsfws.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut ingress_names: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut egress_names: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for o in nsfws {
            let label = format!("NamespaceFirewall/{}/{}", o.namespace, o.name);
            let idx = set.intern(label.clone(), &mut index);
            let ns = o.namespace.clone();
            if let Some(rules) = o.ingress {
                ingress_names
                    .entry(ns.clone())
                    .or_default()
                    .push(label.clone());
                for r in &rules {
                    for s in &r.services {
                        set.referenced_services.insert((ns.clone(), s.clone()));
                    }
                }
                let entry = set.namespaces.entry(ns.clone()).or_default();
                entry
                    .ingress
                    .get_or_insert_with(Default::default)
                    .rules
                    .extend(rules.into_iter().map(|r| (idx, r)));
            }
            if let Some(rules) = o.egress {
                egress_names.entry(ns.clone()).or_default().push(label);
                for r in &rules {
                    set.note_destinations(&r.to);
                }
                let entry = set.namespaces.entry(ns).or_default();
                entry
                    .egress
                    .get_or_insert_with(Default::default)
                    .rules
                    .extend(rules.into_iter().map(|r| (idx, r)));
            }
        }
        for (ns, names) in ingress_names {
            let i = set.intern(names.join(","), &mut index);
            if let Some(d) = set.namespaces.get_mut(&ns).and_then(|n| n.ingress.as_mut()) {
                d.no_match = i;
            }
        }
        for (ns, names) in egress_names {
            let i = set.intern(names.join(","), &mut index);
            if let Some(d) = set.namespaces.get_mut(&ns).and_then(|n| n.egress.as_mut()) {
                d.no_match = i;
            }
        }
        // Not logged here: the agent reports each rejection once, when it first appears.
        set
    }

    fn note_destinations(&mut self, to: &crate::crd::valid::Destinations) {
        self.referenced_services.extend(to.services.iter().cloned());
        self.named_cidrs.extend(to.cidrs.iter().copied());
        self.named_cidrs.extend(to.except.iter().copied());
    }
}

fn invalid(
    kind: &str,
    namespace: Option<String>,
    name: String,
    errors: &[crate::crd::FieldError],
) -> Rejection {
    Rejection {
        kind: kind.to_owned(),
        namespace,
        name,
        reason: "InvalidSpec".to_owned(),
        message: errors
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect::<Vec<_>>()
            .join("; "),
    }
}
