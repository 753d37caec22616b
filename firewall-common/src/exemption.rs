//! The "always allowed" rules (docs/design.md#always-allowed), written once: the kernel applies
//! them before its policy lookup, the compiler emits no policy rows for the pairs they cover, and
//! `firewall-agent check` reports them, all through these functions.
use crate::{
    Counter, IDENTITY_F_DNS, IDENTITY_F_STD_EGRESS, IDENTITY_F_STD_INGRESS, Identity, IpProto,
    NS_FIRST, NS_HOST, Side,
};

/// Why a connection passes whatever the policy says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exemption {
    /// Both ends are in one namespace.
    SameNamespace,
    /// Ingress from world or host (kubelet probes): not restricted in v1alpha1.
    Unrestricted,
    /// DNS (UDP or TCP port 53) to the cluster DNS Service.
    Dns,
}

/// The DNS port.
pub const DNS_PORT: u16 = 53;

impl Exemption {
    /// The counter the kernel counts this exemption in.
    #[inline(always)]
    pub const fn counter(self) -> Counter {
        match self {
            Exemption::SameNamespace => Counter::SameNamespace,
            Exemption::Unrestricted => Counter::Unrestricted,
            Exemption::Dns => Counter::Dns,
        }
    }
}

/// Whether a standard policy judges `local`'s `side` (its flag), lifting Bulkhead's exemptions.
#[inline(always)]
pub const fn standard_judges(side: Side, local: &Identity) -> bool {
    let flag = match side {
        Side::Egress => IDENTITY_F_STD_EGRESS,
        Side::Ingress => IDENTITY_F_STD_INGRESS,
    };
    local.flags & flag != 0
}

/// The exemption that holds for every protocol and port between `local` and a peer in
/// `peer_ns`, seen from `side`, as the kernel applies it: where a standard policy judges the
/// side only the host's ingress (kubelet probes from the pod's own node) stays exempt.
#[inline(always)]
pub fn pair_exemption(side: Side, local: &Identity, peer_ns: u32) -> Option<Exemption> {
    if standard_judges(side, local) {
        return (matches!(side, Side::Ingress) && peer_ns == NS_HOST)
            .then_some(Exemption::Unrestricted);
    }
    bulkhead_pair_exemption(side, local.ns, peer_ns)
}

/// Bulkhead's own exemption for every protocol and port: what its own rules never judge.
#[inline(always)]
pub fn bulkhead_pair_exemption(side: Side, local_ns: u32, peer_ns: u32) -> Option<Exemption> {
    if peer_ns == local_ns {
        return Some(Exemption::SameNamespace);
    }
    if matches!(side, Side::Ingress) && peer_ns < NS_FIRST {
        return Some(Exemption::Unrestricted);
    }
    None
}

/// The exemption of a new connection between `local` (the end whose side decides) and `peer`,
/// to destination port `dport` over IP protocol `proto`, as the kernel applies it before its
/// policy lookup.
#[inline(always)]
pub fn exemption(
    side: Side,
    local: &Identity,
    peer: &Identity,
    proto: u8,
    dport: u16,
) -> Option<Exemption> {
    if standard_judges(side, local) {
        return pair_exemption(side, local, peer.ns);
    }
    bulkhead_exemption(side, local, peer, proto, dport)
}

/// Bulkhead's own exemption of a new connection (flags for standard policies ignored): what
/// ClusterFirewall, NamespaceFirewall and the defaults never judge.
#[inline(always)]
pub fn bulkhead_exemption(
    side: Side,
    local: &Identity,
    peer: &Identity,
    proto: u8,
    dport: u16,
) -> Option<Exemption> {
    if let Some(e) = bulkhead_pair_exemption(side, local.ns, peer.ns) {
        return Some(e);
    }
    // The DNS Service's identity carries the flag: the peer's on egress, ours on ingress.
    let destination = match side {
        Side::Egress => peer,
        Side::Ingress => local,
    };
    if destination.flags & IDENTITY_F_DNS != 0 && is_dns(proto, dport) {
        return Some(Exemption::Dns);
    }
    None
}

/// Whether the destination's ingress side judges a connection from `local` to `peer` that the
/// source looks up for it (docs/design.md#connections): the destination is a pod and none of its
/// own exemptions hold. The source's exemption never settles that side, because on this node
/// the destination's program then passes the connection on the source's conntrack entry.
#[inline(always)]
pub fn destination_judges(local: &Identity, peer: &Identity, proto: u8, dport: u16) -> bool {
    peer.ns >= NS_FIRST && exemption(Side::Ingress, peer, local, proto, dport).is_none()
}

/// Whether the replies of an exempt connection between `local` and `peer` could be judged as
/// new connections, so the connection must be tracked: across namespaces, or where a standard
/// policy judges either end (then same-namespace traffic is no longer exempt on that side).
#[inline(always)]
pub const fn replies_judged(local: &Identity, peer: &Identity) -> bool {
    let standard = IDENTITY_F_STD_INGRESS | IDENTITY_F_STD_EGRESS;
    peer.ns != local.ns || (local.flags | peer.flags) & standard != 0
}

/// Whether a connection to the cluster DNS Service is DNS, which Bulkhead exempts: UDP or TCP
/// to port 53.
#[inline(always)]
pub fn is_dns(proto: u8, dport: u16) -> bool {
    dport == DNS_PORT && (proto == IpProto::Udp as u8 || proto == IpProto::Tcp as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: u32, flags: u32) -> Identity {
        Identity { id: ns, ns, flags }
    }

    #[test]
    fn exemptions() {
        let (a, b, dns) = (id(2, 0), id(3, 0), id(4, IDENTITY_F_DNS));
        let tcp = IpProto::Tcp as u8;
        assert_eq!(
            exemption(Side::Egress, &a, &a, tcp, 80),
            Some(Exemption::SameNamespace)
        );
        assert_eq!(exemption(Side::Egress, &a, &b, tcp, 80), None);
        assert_eq!(
            exemption(Side::Ingress, &a, &id(1, 0), tcp, 80),
            Some(Exemption::Unrestricted)
        );
        assert_eq!(exemption(Side::Egress, &a, &id(0, 0), tcp, 80), None);
        assert_eq!(
            exemption(Side::Egress, &a, &dns, tcp, 53),
            Some(Exemption::Dns)
        );
        assert_eq!(
            exemption(Side::Ingress, &dns, &a, IpProto::Udp as u8, 53),
            Some(Exemption::Dns)
        );
        assert_eq!(
            exemption(Side::Egress, &a, &dns, IpProto::Sctp as u8, 53),
            None
        );
        assert_eq!(exemption(Side::Ingress, &a, &dns, tcp, 53), None);
    }

    #[test]
    fn a_standard_policy_lifts_every_exemption_but_the_hosts() {
        let tcp = IpProto::Tcp as u8;
        let (b, dns) = (id(3, 0), id(4, IDENTITY_F_DNS));
        let out = id(2, IDENTITY_F_STD_EGRESS);
        assert_eq!(exemption(Side::Egress, &out, &id(2, 0), tcp, 80), None);
        assert_eq!(exemption(Side::Egress, &out, &dns, tcp, 53), None);
        // Only its egress is judged by a standard policy.
        assert_eq!(
            exemption(Side::Ingress, &out, &id(2, 0), tcp, 80),
            Some(Exemption::SameNamespace)
        );
        let into = id(2, IDENTITY_F_STD_INGRESS);
        assert_eq!(exemption(Side::Ingress, &into, &id(0, 0), tcp, 80), None);
        assert_eq!(exemption(Side::Ingress, &into, &b, tcp, 80), None);
        assert_eq!(
            exemption(Side::Ingress, &into, &id(1, 0), tcp, 80),
            Some(Exemption::Unrestricted)
        );
        let dns_isolated = id(4, IDENTITY_F_DNS | IDENTITY_F_STD_INGRESS);
        assert_eq!(
            exemption(Side::Ingress, &dns_isolated, &b, IpProto::Udp as u8, 53),
            None
        );
        // Bulkhead's own rules still never judge what its exemptions cover.
        assert_eq!(
            bulkhead_exemption(Side::Ingress, &into, &id(0, 0), tcp, 80),
            Some(Exemption::Unrestricted)
        );
    }

    #[test]
    fn the_source_leaves_a_standard_destination_to_judge_and_tracks_what_it_may_judge() {
        let (udp, tcp) = (IpProto::Udp as u8, IpProto::Tcp as u8);
        let (a, b) = (id(2, 0), id(3, 0));
        let dns = id(4, IDENTITY_F_DNS);
        let dns_isolated = id(4, IDENTITY_F_DNS | IDENTITY_F_STD_INGRESS);
        // DNS is exempt at the source either way; only a standard policy on the DNS pods' ingress
        // leaves that side to judge.
        assert!(!destination_judges(&a, &dns, udp, 53));
        assert!(destination_judges(&a, &dns_isolated, udp, 53));
        // The host and the world never judge; a plain pod across namespaces always does.
        assert!(!destination_judges(&a, &id(1, 0), tcp, 80));
        assert!(!destination_judges(&a, &id(0, 0), tcp, 80));
        assert!(destination_judges(&a, &b, tcp, 80));
        // The same namespace: judged only where the destination is isolated.
        let a_isolated = id(2, IDENTITY_F_STD_INGRESS);
        assert!(!destination_judges(&a, &id(2, 0), tcp, 80));
        assert!(destination_judges(&a, &a_isolated, tcp, 80));
        // Replies of same-namespace traffic are exempt, unless a standard policy judges an end.
        assert!(!replies_judged(&a, &id(2, 0)));
        assert!(replies_judged(&a, &b));
        assert!(replies_judged(&a_isolated, &a));
        assert!(replies_judged(&a, &id(2, IDENTITY_F_STD_EGRESS)));
    }
}
