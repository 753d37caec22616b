//! The stable identities the testbed gives pods: UIDs and container ids derived from names.
/// Deterministic 64-bit hash (FNV-1a + a finalizer): ids must not change between runs or Rust releases.
pub(super) fn hash64(seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The pod UID the testbed gives `namespace/name` in scenario `scenario` (UUID v4 format).
pub fn pod_uid(scenario: &str, namespace: &str, name: &str) -> String {
    let a = hash64(1, &[scenario, namespace, name]);
    let b = hash64(2, &[scenario, namespace, name]);
    let a = (a & !0xf000) | 0x4000; // version 4
    let b = (b & !(0xc << 60)) | (0x8 << 60); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// The container id the testbed gives a pod's (single) container: 64 hex digits.
pub fn container_id(scenario: &str, namespace: &str, name: &str) -> String {
    (10..14)
        .map(|seed| format!("{:016x}", hash64(seed, &[scenario, namespace, name])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_well_formed() {
        let a = pod_uid("saas", "frontend", "web");
        assert_eq!(a, pod_uid("saas", "frontend", "web"));
        assert_ne!(a, pod_uid("saas", "frontend", "web2"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        let c = container_id("saas", "frontend", "web");
        assert_eq!(c.len(), 64);
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(crate::testbed::names::host_link("abcdef", 244).len() <= 15);
    }
}
