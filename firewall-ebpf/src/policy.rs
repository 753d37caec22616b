//! The policy lookup: one longest-prefix-match per side (docs/design.md#policy-trie), never a loop over rules.
use aya_ebpf::maps::lpm_trie::Key;
use firewall_common::{POLICY_PREFIX_FULL, PolicyValue, PolicyVerdict, Side, policy_key};

use crate::maps::POLICY;

/// The verdict of `side` at `local` for a connection with `peer`.
#[inline(always)]
pub fn lookup(slot: u8, side: Side, local: u32, peer: u32, proto: u8, port: u16) -> PolicyValue {
    let key = Key::new(
        POLICY_PREFIX_FULL,
        policy_key(slot, side as u8, local, peer, proto, port),
    );
    match POLICY.get(&key) {
        Some(v) => *v,
        // Nothing compiled for this identity (not yet known): allow, as the cluster default does.
        None => PolicyValue {
            verdict: PolicyVerdict::Allow as u8,
            pad: [0; 3],
            rule: 0,
        },
    }
}
