//! Policy trie prefixes (docs/design.md#policy-trie) and port-interval splitting.
use firewall_common::{
    POLICY_PREFIX_LOCAL, POLICY_PREFIX_PEER, POLICY_PREFIX_PROTO, PolicyKey, policy_key,
};

/// One entry of the policy trie, slot-free: a local default (`peer: None`), a pair entry
/// (`proto: None`), a protocol entry (`port: None`) or a port prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyPrefix {
    /// `SIDE_EGRESS` or `SIDE_INGRESS`.
    pub side: u8,
    /// Identity whose side this is.
    pub local: u32,
    /// The other end's identity; `None` for the local default.
    pub peer: Option<u32>,
    /// IP protocol; `None` for every protocol.
    pub proto: Option<u8>,
    /// (aligned port value, prefix bits 0..=16); `None` for every port.
    pub port: Option<(u16, u8)>,
}

impl PolicyPrefix {
    /// The LPM key for `slot`: (prefix length in bits including the slot byte, key data).
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
            policy_key(slot, self.side, self.local, peer, proto, port),
        )
    }
}

/// Splits the inclusive port interval [lo, hi] into aligned (value, prefix bits) blocks.
pub fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    for_each_prefix(lo, hi, |p| out.push(p));
    out
}

/// How many aligned blocks [`port_prefixes`] splits [lo, hi] into (without allocating).
pub fn port_prefix_count(lo: u16, hi: u16) -> usize {
    let mut n = 0;
    for_each_prefix(lo, hi, |_| n += 1);
    n
}

fn for_each_prefix(lo: u16, hi: u16, mut f: impl FnMut((u16, u8))) {
    let (mut a, b) = (u32::from(lo), u32::from(hi));
    while a <= b {
        // Largest aligned block starting at `a` that fits in [a, b].
        let mut size = if a == 0 {
            1 << 16
        } else {
            1u32 << a.trailing_zeros().min(16)
        };
        while a + size - 1 > b {
            size >>= 1;
        }
        f((a as u16, (16 - size.trailing_zeros()) as u8));
        a += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(v: &[(u16, u8)]) -> Vec<u32> {
        v.iter()
            .flat_map(|&(p, bits)| (u32::from(p))..(u32::from(p) + (1u32 << (16 - bits))))
            .collect()
    }

    #[test]
    fn prefixes_cover_exactly() {
        for (lo, hi) in [
            (0, 65535),
            (53, 53),
            (1, 65535),
            (1000, 2000),
            (0, 0),
            (65535, 65535),
            (32768, 65534),
        ] {
            let p = port_prefixes(lo, hi);
            assert!(p.len() <= 30, "{lo}-{hi}: {}", p.len());
            assert_eq!(
                expand(&p),
                (u32::from(lo)..=u32::from(hi)).collect::<Vec<_>>()
            );
            assert_eq!(port_prefix_count(lo, hi), p.len());
        }
        assert_eq!(port_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(port_prefixes(1, 65534).len(), 30);
    }

    #[test]
    fn lpm_lengths() {
        let p = PolicyPrefix {
            side: 1,
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
}
