//! The standard APIs' policies (`networking.k8s.io/v1` NetworkPolicy,
//! `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy) as the compiler consumes them
//! (docs/design.md#standard-apis). Unlike Bulkhead's own rules they select pods, match
//! addresses by CIDR whatever owns them (pods included), and are never shielded by Bulkhead's
//! own exemptions (same namespace, DNS, ingress from the world).
use ipnet::IpNet;

use super::{ClusterAction, NamespaceSet, Origin, Ports, Selector};

/// Pods of some namespaces: those `pods` selects, or every pod when `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSet {
    /// Which namespaces.
    pub namespaces: NamespaceSet,
    /// Which of their pods (`None`: all of them).
    pub pods: Option<Selector>,
}

/// One peer of a standard rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Pods (by their addresses, and a Service cluster IP when every backend of it is one).
    Pods(PodSet),
    /// Every address in `cidr` and in none of `except`, pods and nodes included.
    Network {
        /// The block.
        cidr: IpNet,
        /// Holes in it.
        except: Vec<IpNet>,
    },
    /// Every endpoint and address: NetworkPolicy's absent or empty `from`/`to`, and the
    /// fail-closed reading of a peer nothing known is set in (Deny and Pass rules only).
    Any,
}

/// A port by name: whatever port the destination pod's container calls `name` for `proto`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    /// IP protocol number.
    pub proto: u8,
    /// `containerPort` name.
    pub name: String,
}

/// Which (protocol, port) a standard rule matches: `ports` (`None` = every one, ICMP
/// included), plus the named ports when `ports` is `Some`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StdPorts {
    /// Numbered ports and ranges.
    pub ports: Ports,
    /// Named ports, resolved against the destination pod.
    pub named: Vec<NamedPort>,
}

/// One rule: the peers (a union; empty matches nothing) and the ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRule {
    /// The log's name for the rule (ClusterNetworkPolicy `name`), if set.
    pub name: Option<String>,
    /// What a match does (NetworkPolicy rules only `Allow`).
    pub action: ClusterAction,
    /// Who is on the other end.
    pub peers: Vec<Peer>,
    /// Which ports of the destination.
    pub ports: StdPorts,
}

/// A NetworkPolicy: it isolates its pods in the directions it names, and its rules are what
/// they may still do (the union with every other policy isolating them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPolicy {
    /// Where it came from.
    pub origin: Origin,
    /// The pods it isolates (`namespaces` names one namespace).
    pub subject: PodSet,
    /// `None`: ingress is not isolated by this policy; `Some([])`: nothing may come in.
    pub ingress: Option<Vec<PeerRule>>,
    /// `None`: egress is not isolated by this policy.
    pub egress: Option<Vec<PeerRule>>,
}

/// A ClusterNetworkPolicy tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Before NetworkPolicy and NamespaceFirewall (with ClusterFirewall's rules).
    Admin,
    /// After them (with ClusterFirewall's defaults).
    Baseline,
}

/// A ClusterNetworkPolicy: ordered rules for its subjects' ingress and egress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TieredPolicy {
    /// Where it came from.
    pub origin: Origin,
    /// Its tier.
    pub tier: Tier,
    /// 0..=1000, lower first.
    pub priority: i32,
    /// The pods its rules apply to.
    pub subject: PodSet,
    /// In order; the first match decides (or passes the rest of the tier).
    pub ingress: Vec<PeerRule>,
    /// In order.
    pub egress: Vec<PeerRule>,
}

impl PodPolicy {
    /// Fail closed: the pods it isolates, isolated in the same directions with nothing allowed.
    #[must_use]
    pub fn restrictions(mut self) -> Self {
        for dir in [&mut self.ingress, &mut self.egress].into_iter().flatten() {
            dir.clear();
        }
        self
    }
}

impl TieredPolicy {
    /// What it restricts and nothing it opens: its Accept rules stay in place (so every rule
    /// keeps its index) and match no peer.
    #[must_use]
    pub fn restrictions(mut self) -> Self {
        for r in self.ingress.iter_mut().chain(self.egress.iter_mut()) {
            if r.action == ClusterAction::Allow {
                r.peers.clear();
            }
        }
        self
    }
}
