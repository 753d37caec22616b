//! What a rule matches: namespaces (by name or label), Services, addresses and ports.
use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

/// One protocol and an inclusive port interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// IP protocol number.
    pub proto: u8,
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

/// A rule's `ports`: `None` matches every protocol and port (ICMP included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ports(pub Option<Vec<PortRange>>);

impl Ports {
    /// Whether (proto, port) is matched.
    pub fn contains(&self, proto: u8, port: u16) -> bool {
        match &self.0 {
            None => true,
            Some(v) => v
                .iter()
                .any(|r| r.proto == proto && r.lo <= port && port <= r.hi),
        }
    }
}

/// One set-based selector requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// The label is present with one of the values.
    In(String, BTreeSet<String>),
    /// The label is absent or has none of the values.
    NotIn(String, BTreeSet<String>),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    DoesNotExist(String),
}

/// A label selector; the empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// `matchLabels`.
    pub labels: BTreeMap<String, String>,
    /// `matchExpressions`.
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Whether a label set is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| match r {
                Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

/// A set of namespaces: by name, by selector (union), or all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceSet {
    /// Every namespace (a peer without any selecting field).
    pub all: bool,
    /// Named namespaces.
    pub names: BTreeSet<String>,
    /// Namespaces selected by labels.
    pub selector: Option<Selector>,
}

impl NamespaceSet {
    /// Whether the namespace `name` with `labels` belongs to the set.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.all
            || self.names.contains(name)
            || self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// A rule's destinations: namespace endpoints (optionally narrowed to Services) and addresses
/// outside every namespace (`cidrs` minus `except`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destinations {
    /// Namespaces whose endpoints match.
    pub namespaces: NamespaceSet,
    /// When non-empty, only endpoints of these Services (namespace, name) match.
    pub services: Vec<(String, String)>,
    /// Address prefixes (world and host addresses only).
    pub cidrs: Vec<IpNet>,
    /// Prefixes removed from `cidrs`.
    pub except: Vec<IpNet>,
}

impl Destinations {
    /// Whether an address outside every namespace matches, given a containment test (an
    /// address, or the innermost named prefix of an identity).
    pub fn matches_address(&self, inside: impl Fn(&IpNet) -> bool) -> bool {
        self.cidrs.iter().any(&inside) && !self.except.iter().any(&inside)
    }
}
