//! Port-interval splitting for the policy trie's port prefixes (docs/design.md#policy-trie).

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
}
