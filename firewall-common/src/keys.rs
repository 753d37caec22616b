//! Key layouts of the slotted maps, built here once for the kernel and the agent.
//!
//! Every LPM key starts with the slot byte, so its prefix length counts those 8 bits too.
use crate::Side;

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

#[cfg(test)]
mod tests {
    use super::*;

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
