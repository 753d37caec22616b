//! Key layouts of the slotted maps, built here once for the kernel and the agent.
//!
//! Every LPM key starts with the slot byte, so its prefix length counts those 8 bits too.
use crate::{CtKey, Side};

/// Bits of the slot byte at the start of every LPM key.
pub const SLOT_BITS: u32 = 8;

/// LPM data of the IPv4 trie: `[slot, a, b, c, d]`.
pub type IpV4Key = [u8; 5];
/// LPM data of the IPv6 trie: `[slot, 16 address bytes]`.
pub type IpV6Key = [u8; 17];

/// Prefix length of an IPv4 key holding a whole address (what the kernel looks up).
pub const IPV4_KEY_BITS: u32 = SLOT_BITS + 32;
/// Prefix length of an IPv6 key holding a whole address.
pub const IPV6_KEY_BITS: u32 = SLOT_BITS + 128;

/// The IPv4 trie key data of an address.
#[inline(always)]
pub const fn ipv4_key(slot: u8, a: [u8; 4]) -> IpV4Key {
    [slot, a[0], a[1], a[2], a[3]]
}

/// The IPv6 trie key data of an address.
#[inline(always)]
pub const fn ipv6_key(slot: u8, a: [u8; 16]) -> IpV6Key {
    let mut key = [0u8; 17];
    key[0] = slot;
    let mut i = 0;
    while i < 16 {
        key[1 + i] = a[i];
        i += 1;
    }
    key
}

/// The bytes of an IPv6 address held as four network-order words (packets, events).
#[inline(always)]
pub const fn ipv6_octets(words: &[u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let w = words[i].to_ne_bytes();
        out[i * 4] = w[0];
        out[i * 4 + 1] = w[1];
        out[i * 4 + 2] = w[2];
        out[i * 4 + 3] = w[3];
        i += 1;
    }
    out
}

/// The prefix length of an address trie key for an address prefix of `addr_bits`.
#[inline(always)]
pub const fn ip_key_bits(addr_bits: u8) -> u32 {
    SLOT_BITS + addr_bits as u32
}

/// The address prefix of an address trie key of `key_bits`; `None` when it cannot be one of an
/// address of `max` bits.
pub fn ip_addr_bits(key_bits: u32, max: u8) -> Option<u8> {
    key_bits
        .checked_sub(SLOT_BITS)
        .and_then(|l| u8::try_from(l).ok())
        .filter(|l| *l <= max)
}

/// Bits of a policy LPM key before the peer id: slot, side, local id.
pub const POLICY_PREFIX_LOCAL: u32 = 48;
/// Bits up to and including the peer id.
pub const POLICY_PREFIX_PEER: u32 = 80;
/// Bits up to and including the protocol.
pub const POLICY_PREFIX_PROTO: u32 = 88;
/// Bits of a complete key (with the 16-bit port).
pub const POLICY_PREFIX_FULL: u32 = 104;

/// LPM data of the policy trie: `[slot, side, local id (BE), peer id (BE), proto, port (BE)]`.
///
/// Longest prefix wins: an entry for (local) is that side's default for every peer, (local, peer)
/// overrides it for one peer, (…, proto) for one protocol, and (…, proto, port/len) for a port
/// range expressed as prefixes. The compiler resolves rule order, so the kernel never loops.
pub type PolicyKey = [u8; 13];

/// Builds a policy key's data. `const` so both sides compute it identically.
#[inline(always)]
pub const fn policy_key(
    slot: u8,
    side: u8,
    local: u32,
    peer: u32,
    proto: u8,
    port: u16,
) -> PolicyKey {
    let l = local.to_be_bytes();
    let p = peer.to_be_bytes();
    let o = port.to_be_bytes();
    [
        slot, side, l[0], l[1], l[2], l[3], p[0], p[1], p[2], p[3], proto, o[0], o[1],
    ]
}

/// One entry of the policy trie, slot-free: a local default (`peer: None`), a pair entry
/// (`proto: None`), a protocol entry (`port: None`) or a port prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyPrefix {
    /// The side whose verdict this is.
    pub side: Side,
    /// Identity whose side this is.
    pub local: u32,
    /// The other end's identity; `None` for the local default.
    pub peer: Option<u32>,
    /// IP protocol; `None` for every protocol.
    pub proto: Option<u8>,
    /// (aligned port value, prefix bits 1..=16); `None` for every port.
    pub port: Option<(u16, u8)>,
}

impl PolicyPrefix {
    /// The LPM key in `slot`: (prefix length in bits including the slot byte, key data).
    pub fn to_lpm(&self, slot: u8) -> (u32, PolicyKey) {
        let (len, peer, proto, port) = match (self.peer, self.proto, self.port) {
            (None, _, _) => (POLICY_PREFIX_LOCAL, 0, 0, 0),
            (Some(p), None, _) => (POLICY_PREFIX_PEER, p, 0, 0),
            (Some(p), Some(o), None) => (POLICY_PREFIX_PROTO, p, o, 0),
            (Some(p), Some(o), Some((v, bits))) => {
                (POLICY_PREFIX_PROTO + u32::from(bits.min(16)), p, o, v)
            }
        };
        (
            len,
            policy_key(slot, self.side as u8, self.local, peer, proto, port),
        )
    }

    /// The inverse of [`PolicyPrefix::to_lpm`]: (slot, prefix) of a key read back from the
    /// kernel; `None` for a key no agent of this layout writes.
    pub fn from_lpm(len: u32, key: &PolicyKey) -> Option<(u8, Self)> {
        let side = Side::try_from(key[1]).ok()?;
        let word = |i: usize| u32::from_be_bytes([key[i], key[i + 1], key[i + 2], key[i + 3]]);
        let mut p = PolicyPrefix {
            side,
            local: word(2),
            peer: None,
            proto: None,
            port: None,
        };
        match len {
            POLICY_PREFIX_LOCAL => {}
            POLICY_PREFIX_PEER => p.peer = Some(word(6)),
            POLICY_PREFIX_PROTO..=POLICY_PREFIX_FULL => {
                p.peer = Some(word(6));
                p.proto = Some(key[10]);
                let bits = (len - POLICY_PREFIX_PROTO) as u8;
                if bits > 0 {
                    p.port = Some((u16::from_be_bytes([key[11], key[12]]), bits));
                }
            }
            _ => return None,
        }
        Some((key[0], p))
    }
}

/// [`CtKey::end`] of an entry recorded by the side of the key's first endpoint.
pub const CT_END_FIRST: u8 = 1;
/// [`CtKey::end`] of an entry recorded by the side of the key's second endpoint.
pub const CT_END_SECOND: u8 = 2;

/// The canonical order of two endpoints `(a, ap)` and `(b, bp)`: -1, 0 or 1 as the first comes
/// before, equals or follows the second. Any total order works; this one compares the
/// network-order words as integers, then the ports. Written out word by word: the kernel's
/// programs have no `memcmp`.
#[inline(always)]
const fn endpoint_order(a: &[u32; 4], ap: u16, b: &[u32; 4], bp: u16) -> i8 {
    let mut i = 0;
    while i < 4 {
        if a[i] != b[i] {
            return if a[i] < b[i] { -1 } else { 1 };
        }
        i += 1;
    }
    if ap == bp {
        0
    } else if ap < bp {
        -1
    } else {
        1
    }
}

/// The conntrack key under which `side` records, and finds, the connection of a packet with
/// tuple `t`: on egress the local pod is the packet's source, on ingress its destination.
///
/// A packet and its reply on the other side of the same pod, `ct_key(side, t)` and
/// `ct_key(side.other(), &t.reversed())`, get the same key: one lookup answers "a later packet
/// of a connection this side let through" and "a reply to one". Two pods on one node keep
/// apart, since each records its own end.
#[inline(always)]
pub const fn ct_key(side: Side, t: &CtKey) -> CtKey {
    let order = endpoint_order(&t.saddr, t.sport, &t.daddr, t.dport);
    let forward = order <= 0;
    let local_is_source = matches!(side, Side::Egress);
    let (saddr, sport, daddr, dport) = if forward {
        (t.saddr, t.sport, t.daddr, t.dport)
    } else {
        (t.daddr, t.dport, t.saddr, t.sport)
    };
    // An endpoint talking to itself is one pod at both ends: one end.
    let end = if order == 0 || local_is_source == forward {
        CT_END_FIRST
    } else {
        CT_END_SECOND
    };
    CtKey {
        saddr,
        daddr,
        sport,
        dport,
        proto: t.proto,
        end,
        family: t.family,
        pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(saddr: [u32; 4], sport: u16, daddr: [u32; 4], dport: u16, proto: u8) -> CtKey {
        CtKey {
            saddr,
            daddr,
            sport,
            dport,
            proto,
            family: if saddr[1..] == [0; 3] && daddr[1..] == [0; 3] {
                4
            } else {
                6
            },
            ..CtKey::default()
        }
    }

    /// Tuples in both orders of their endpoints, v4 and v6, equal addresses with different
    /// ports, and one endpoint talking to itself.
    fn tuples() -> [CtKey; 8] {
        let a4 = [u32::from_be_bytes([10, 0, 0, 1]).to_be(), 0, 0, 0];
        let b4 = [u32::from_be_bytes([10, 0, 0, 2]).to_be(), 0, 0, 0];
        let a6 = [0xfd00_0000u32.to_be(), 0, 0, 1u32.to_be()];
        let b6 = [0xfd00_0000u32.to_be(), 0, 1, 0];
        [
            tuple(a4, 40000, b4, 80, 6),
            tuple(b4, 80, a4, 40000, 6),
            tuple(a4, 53, b4, 53, 17),
            tuple(a4, 1000, a4, 2000, 17),
            tuple(a6, 40000, b6, 443, 6),
            tuple(b6, 1, a6, 65535, 17),
            tuple(a6, 5, a6, 5, 17),
            tuple(a4, 7, b4, 0, 1),
        ]
    }

    #[test]
    fn a_packet_and_its_reply_on_the_other_side_share_one_key() {
        for t in tuples() {
            for side in [Side::Egress, Side::Ingress] {
                assert_eq!(
                    ct_key(side, &t),
                    ct_key(side.other(), &t.reversed()),
                    "{side:?} {t:?}"
                );
            }
        }
    }

    #[test]
    fn the_two_ends_of_one_connection_record_apart() {
        for t in tuples() {
            // The source's egress and the destination's ingress: different pods (unless the
            // endpoint talks to itself, where both are the same pod and the same end).
            let same_endpoint = t.saddr == t.daddr && t.sport == t.dport;
            assert_eq!(
                ct_key(Side::Egress, &t) == ct_key(Side::Ingress, &t),
                same_endpoint,
                "{t:?}"
            );
        }
    }

    #[test]
    fn keys_keep_the_connection_and_nothing_else() {
        for t in tuples() {
            for side in [Side::Egress, Side::Ingress] {
                let k = ct_key(side, &t);
                assert!(k.end == CT_END_FIRST || k.end == CT_END_SECOND);
                assert_eq!((k.proto, k.family, k.pad), (t.proto, t.family, 0));
                let as_is =
                    (k.saddr, k.sport, k.daddr, k.dport) == (t.saddr, t.sport, t.daddr, t.dport);
                let swapped =
                    (k.saddr, k.sport, k.daddr, k.dport) == (t.daddr, t.dport, t.saddr, t.sport);
                assert!(as_is || swapped, "{t:?} -> {k:?}");
                // Another flow between the same pods (another port) is another key.
                let mut other = t;
                other.sport = other.sport.wrapping_add(1);
                assert_ne!(ct_key(side, &other), k, "{t:?}");
            }
        }
    }

    #[test]
    fn policy_prefixes_round_trip() {
        let base = PolicyPrefix {
            side: Side::Ingress,
            local: 2,
            peer: None,
            proto: None,
            port: None,
        };
        let pair = PolicyPrefix {
            peer: Some(3),
            ..base
        };
        let proto = PolicyPrefix {
            proto: Some(6),
            ..pair
        };
        let port = PolicyPrefix {
            port: Some((1024, 6)),
            ..proto
        };
        for p in [base, pair, proto, port] {
            let (len, key) = p.to_lpm(1);
            assert_eq!(PolicyPrefix::from_lpm(len, &key), Some((1, p)));
        }
        assert_eq!(port.to_lpm(0), (94, policy_key(0, 2, 2, 3, 6, 1024)));
        assert_eq!(PolicyPrefix::from_lpm(47, &[0; 13]), None);
    }

    #[test]
    fn lpm_lengths() {
        let p = PolicyPrefix {
            side: Side::Egress,
            local: 2,
            peer: None,
            proto: None,
            port: None,
        };
        assert_eq!(p.to_lpm(1).0, 48);
        assert_eq!(p.to_lpm(1).1[0], 1);
        let p = PolicyPrefix {
            peer: Some(3),
            proto: Some(6),
            port: Some((1024, 6)),
            ..p
        };
        let (len, key) = p.to_lpm(0);
        assert_eq!(len, 94);
        assert_eq!(key, policy_key(0, 1, 2, 3, 6, 1024));
    }

    #[test]
    fn address_keys() {
        assert_eq!(ipv4_key(1, [10, 0, 0, 1]), [1, 10, 0, 0, 1]);
        let words = [
            u32::from_ne_bytes([0xfd, 0, 0, 0]),
            0,
            0,
            u32::from_ne_bytes([0, 0, 0, 1]),
        ];
        let key = ipv6_key(1, ipv6_octets(&words));
        assert_eq!((key[0], key[1], key[16]), (1, 0xfd, 1));
        assert_eq!(ip_addr_bits(ip_key_bits(24), 32), Some(24));
        assert_eq!(ip_addr_bits(41, 32), None);
    }
}
