//! ClusterNetworkPolicy -> [`TieredPolicy`], or every problem with its JSON path. What the
//! upstream CRD's schema refuses is refused here too, because a `file:` source has no API
//! server in front of it.
use firewall_common::IpProto;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::types::{
    ClusterNetworkPolicy, EgressPeer, EgressRule, IngressPeer, IngressRule, NamespacedPod, Port,
    PortRange as RangeSpec, Protocol, Subject,
};
use crate::{
    crd::{Checker, FieldError, each},
    netpol,
    policy::{
        ClusterAction, NamedPort, NamespaceSet, Origin, Peer, PeerRule, PodSet, PortRange, Ports,
        Selector, StdPorts, Tier, TieredPolicy,
    },
};

/// The object kind, as origins and rejections name it.
pub const KIND: &str = "ClusterNetworkPolicy";

/// The API's bound on rules per direction, peers per rule, CIDRs per peer and protocols per
/// rule (it keeps a policy's cost bounded; an object beyond it never reaches an API server).
const MAX_ITEMS: usize = 25;

/// The API's bound on a rule's `name`.
const MAX_NAME: usize = 100;

/// Where a policy of this name came from.
pub fn origin(name: String) -> Origin {
    Origin {
        kind: KIND,
        namespace: None,
        name,
    }
}

/// Validates a ClusterNetworkPolicy: its policy, or every problem found.
pub fn validate(o: &ClusterNetworkPolicy) -> Result<TieredPolicy, Vec<FieldError>> {
    let origin = origin(o.metadata.name.clone().unwrap_or_default());
    let mut c = Checker::new(&origin.to_string());
    let s = &o.spec;
    let tier = tier(&mut c, s.tier.as_deref()).unwrap_or(Tier::Admin);
    let priority = priority(&mut c, s.priority).unwrap_or(0);
    let subject = subject(&mut c, "spec.subject", s.subject.as_ref());
    let ingress = s.ingress.as_deref().unwrap_or_default();
    count(&mut c, "spec.ingress", ingress.len(), 0);
    let ingress = each(&mut c, "spec.ingress", ingress, rule::<IngressRule>);
    let egress = s.egress.as_deref().unwrap_or_default();
    count(&mut c, "spec.egress", egress.len(), 0);
    let egress = each(&mut c, "spec.egress", egress, rule::<EgressRule>);
    c.finish(TieredPolicy {
        origin,
        tier,
        priority,
        subject,
        ingress,
        egress,
    })
}

/// `spec.tier`.
pub(super) fn tier(c: &mut Checker, t: Option<&str>) -> Option<Tier> {
    match t {
        Some("Admin") => Some(Tier::Admin),
        Some("Baseline") => Some(Tier::Baseline),
        Some(other) => {
            c.err(
                "spec.tier",
                format_args!("unknown tier {other:?} (expected Admin or Baseline)"),
            );
            None
        }
        None => {
            c.err("spec.tier", "required (Admin or Baseline)");
            None
        }
    }
}

/// `spec.priority`.
pub(super) fn priority(c: &mut Checker, p: Option<i32>) -> Option<i32> {
    match p {
        Some(p) if (0..=1000).contains(&p) => Some(p),
        Some(p) => {
            c.err(
                "spec.priority",
                format_args!("priority {p} out of range 0..=1000"),
            );
            None
        }
        None => {
            c.err("spec.priority", "required (0..=1000)");
            None
        }
    }
}

/// A list's length against the API's bounds.
fn count(c: &mut Checker, path: &str, len: usize, min: usize) {
    if len < min {
        c.err(path, format_args!("must list at least {min} item"));
    }
    if len > MAX_ITEMS {
        c.err(
            path,
            format_args!("{len} items, more than the {MAX_ITEMS} allowed"),
        );
    }
}

/// Every pod of every namespace: what an unreadable subject widens to.
pub(super) fn every_pod() -> PodSet {
    PodSet {
        namespaces: NamespaceSet {
            all: true,
            ..NamespaceSet::default()
        },
        pods: None,
    }
}

/// `spec.subject`: exactly one of `namespaces` and `pods`.
pub(super) fn subject(c: &mut Checker, path: &str, s: Option<&Subject>) -> PodSet {
    let set = s.and_then(|s| pod_set(c, path, s.namespaces.as_ref(), s.pods.as_ref()));
    set.unwrap_or_else(|| {
        c.err(path, "required: one of namespaces and pods");
        every_pod()
    })
}

/// A subject or peer: exactly one of `namespaces` and `pods`; `None` when neither is set.
fn pod_set(
    c: &mut Checker,
    path: &str,
    namespaces: Option<&LabelSelector>,
    pods: Option<&NamespacedPod>,
) -> Option<PodSet> {
    match (namespaces, pods) {
        (Some(ns), None) => Some(namespace_pods(c, &format!("{path}.namespaces"), ns)),
        (None, Some(p)) => Some(selected_pods(c, &format!("{path}.pods"), p)),
        (Some(_), Some(_)) => {
            c.err(path, "exactly one of namespaces and pods may be set");
            Some(every_pod())
        }
        (None, None) => None,
    }
}

/// `None` for the empty selector (it selects everything), so that it splits no identity.
fn narrowing(s: Selector) -> Option<Selector> {
    (!s.labels.is_empty() || !s.requirements.is_empty()).then_some(s)
}

fn namespace_set(c: &mut Checker, path: &str, s: &LabelSelector) -> NamespaceSet {
    match narrowing(netpol::selector(c, path, s)) {
        Some(selector) => NamespaceSet {
            selector: Some(selector),
            ..NamespaceSet::default()
        },
        None => every_pod().namespaces,
    }
}

/// Every pod of the namespaces `s` selects.
fn namespace_pods(c: &mut Checker, path: &str, s: &LabelSelector) -> PodSet {
    PodSet {
        namespaces: namespace_set(c, path, s),
        pods: None,
    }
}

/// `pods`: a required `podSelector` in the namespaces an optional `namespaceSelector` selects.
fn selected_pods(c: &mut Checker, path: &str, p: &NamespacedPod) -> PodSet {
    let namespaces = match &p.namespace_selector {
        Some(s) => namespace_set(c, &format!("{path}.namespaceSelector"), s),
        None => every_pod().namespaces,
    };
    let path = format!("{path}.podSelector");
    let pods = match &p.pod_selector {
        Some(s) => narrowing(netpol::selector(c, &path, s)),
        None => {
            c.err(&path, "required ({} selects every pod)");
            None
        }
    };
    PodSet { namespaces, pods }
}

/// A rule's `action`.
pub(super) fn action(c: &mut Checker, path: &str, a: Option<&str>) -> Option<ClusterAction> {
    match a {
        Some("Accept") => Some(ClusterAction::Allow),
        Some("Deny") => Some(ClusterAction::Deny),
        Some("Pass") => Some(ClusterAction::Pass),
        Some(other) => {
            c.err(
                path,
                format_args!("unknown action {other:?} (expected Accept, Deny or Pass)"),
            );
            None
        }
        None => {
            c.err(path, "required (Accept, Deny or Pass)");
            None
        }
    }
}

/// What ingress and egress rules share; they differ in their peers' field and type.
pub(super) trait Rule {
    /// `IngressPeer` or `EgressPeer`.
    type Peer: serde::de::DeserializeOwned;
    /// `from` or `to`.
    const PEERS: &'static str;
    /// `name`, `action`, the peers and `protocols`, as written.
    fn parts(&self) -> RuleParts<'_, Self::Peer>;
    /// One peer converted: `None` when it sets no field this agent knows.
    fn peer(c: &mut Checker, path: &str, p: &Self::Peer) -> Option<Vec<Peer>>;
}

/// A rule's fields: `name`, `action`, the peers, `protocols`.
pub(super) type RuleParts<'r, P> = (
    Option<&'r String>,
    Option<&'r str>,
    Option<&'r [P]>,
    Option<&'r [Protocol]>,
);

impl Rule for IngressRule {
    type Peer = IngressPeer;
    const PEERS: &'static str = "from";
    fn parts(&self) -> RuleParts<'_, IngressPeer> {
        let (name, action) = (self.name.as_ref(), self.action.as_deref());
        (
            name,
            action,
            self.from.as_deref(),
            self.protocols.as_deref(),
        )
    }
    fn peer(c: &mut Checker, path: &str, p: &IngressPeer) -> Option<Vec<Peer>> {
        ingress_peer(c, path, p)
    }
}

impl Rule for EgressRule {
    type Peer = EgressPeer;
    const PEERS: &'static str = "to";
    fn parts(&self) -> RuleParts<'_, EgressPeer> {
        let (name, action) = (self.name.as_ref(), self.action.as_deref());
        (name, action, self.to.as_deref(), self.protocols.as_deref())
    }
    fn peer(c: &mut Checker, path: &str, p: &EgressPeer) -> Option<Vec<Peer>> {
        egress_peer(c, path, p)
    }
}

/// One rule of either direction.
pub(super) fn rule<R: Rule>(c: &mut Checker, path: &str, r: &R) -> PeerRule {
    let (name, action, peers, protocols) = r.parts();
    if let Some(n) = name.filter(|n| n.chars().count() > MAX_NAME) {
        let len = n.chars().count();
        c.err(
            &format!("{path}.name"),
            format_args!("{len} characters, more than the {MAX_NAME} allowed"),
        );
    }
    let action = self::action(c, &format!("{path}.action"), action).unwrap_or(ClusterAction::Deny);
    let peers_path = format!("{path}.{}", R::PEERS);
    let peers = peers.unwrap_or_default();
    count(c, &peers_path, peers.len(), 1);
    let read = each(c, &peers_path, peers, R::peer);
    // A peer with no known field is written for a newer CRD than this agent reads. The API's
    // fail-closed reading: it matches nothing in an Accept rule, and makes a Deny or Pass rule
    // deny every peer.
    let (action, peers) = if read.iter().any(Option::is_none) && action != ClusterAction::Allow {
        (ClusterAction::Deny, vec![Peer::Any])
    } else {
        (action, read.into_iter().flatten().flatten().collect())
    };
    PeerRule {
        name: name.filter(|n| !n.is_empty()).cloned(),
        action,
        peers,
        ports: self::protocols(c, &format!("{path}.protocols"), protocols),
    }
}

fn ingress_peer(c: &mut Checker, path: &str, p: &IngressPeer) -> Option<Vec<Peer>> {
    let set = pod_set(c, path, p.namespaces.as_ref(), p.pods.as_ref())?;
    Some(vec![Peer::Pods(set)])
}

fn egress_peer(c: &mut Checker, path: &str, p: &EgressPeer) -> Option<Vec<Peer>> {
    let Some(networks) = &p.networks else {
        return ingress_peer(c, path, &p.pods);
    };
    if p.pods.namespaces.is_some() || p.pods.pods.is_some() {
        c.err(
            path,
            "exactly one of namespaces, pods and networks may be set",
        );
        return Some(Vec::new());
    }
    let path = format!("{path}.networks");
    count(c, &path, networks.len(), 1);
    let cidrs = each(c, &path, networks, |c, p, s| netpol::block_cidr(c, p, s));
    let peers = cidrs.into_iter().flatten().map(|cidr| Peer::Network {
        cidr,
        except: Vec::new(),
    });
    Some(peers.collect())
}

/// `protocols`: absent, every protocol and port (ICMP included).
pub(super) fn protocols(c: &mut Checker, path: &str, list: Option<&[Protocol]>) -> StdPorts {
    let Some(list) = list else {
        return StdPorts::default();
    };
    count(c, path, list.len(), 1);
    let mut ranges = Vec::new();
    let mut named = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let numbered = [
            (IpProto::Tcp, "tcp", &p.tcp),
            (IpProto::Udp, "udp", &p.udp),
            (IpProto::Sctp, "sctp", &p.sctp),
        ];
        let set = numbered.iter().filter(|(.., v)| v.is_some()).count()
            + usize::from(p.destination_named_port.is_some());
        if set != 1 {
            c.err(
                &path,
                "exactly one of tcp, udp, sctp and destinationNamedPort must be set",
            );
            continue;
        }
        match &p.destination_named_port {
            Some(n) if n.is_empty() => {
                c.err(&format!("{path}.destinationNamedPort"), "must not be empty");
            }
            // No protocol is written: the name matches a container port of any protocol.
            Some(n) => {
                named.extend(IpProto::WITH_PORTS.map(|proto| NamedPort {
                    proto: proto as u8,
                    name: n.clone(),
                }));
            }
            None => {}
        }
        for (proto, field, spec) in numbered {
            let Some(spec) = spec else { continue };
            let path = format!("{path}.{field}.destinationPort");
            if let Some((lo, hi)) = port(c, &path, spec.destination_port.as_ref()) {
                let proto = proto as u8;
                ranges.push(PortRange { proto, lo, hi });
            }
        }
    }
    StdPorts {
        ports: Ports(Some(ranges)),
        named,
    }
}

/// `destinationPort`: exactly one of `number` and `range`.
fn port(c: &mut Checker, path: &str, p: Option<&Port>) -> Option<(u16, u16)> {
    match p.map(|p| (p.number, p.range.as_ref())) {
        None => {
            c.err(path, "required");
            None
        }
        Some((Some(n), None)) => c
            .port_number(&format!("{path}.number"), "port", n)
            .map(|n| (n, n)),
        Some((None, Some(r))) => range(c, &format!("{path}.range"), r),
        Some(_) => {
            c.err(path, "exactly one of number and range must be set");
            None
        }
    }
}

/// `range`: `start` < `end` (the API refuses a one-port range too).
fn range(c: &mut Checker, path: &str, r: &RangeSpec) -> Option<(u16, u16)> {
    let bound = |c: &mut Checker, field: &str, v: Option<i32>| {
        let path = format!("{path}.{field}");
        match v {
            Some(v) => c.port_number(&path, field, v),
            None => {
                c.err(&path, "required");
                None
            }
        }
    };
    let start = bound(c, "start", r.start);
    let end = bound(c, "end", r.end);
    let (start, end) = (start?, end?);
    if start >= end {
        c.err(
            &format!("{path}.end"),
            format_args!("start {start} must be less than end {end}"),
        );
        return None;
    }
    Some((start, end))
}
