//! Identity, mode, slot and flow-log lookups.
use firewall_common::{
    CgroupKey, IPV4_KEY_BITS, IPV6_KEY_BITS, Identity, Mode, ModeKey, NS_WORLD,
    SETTING_ACTIVE_SLOT, SETTING_DEFAULT_MODE_SLOT0, SETTING_FLOW_LOG, ipv4_key, ipv6_key,
    ipv6_octets,
};

use crate::maps::{CGROUPS, IPV4, IPV6, MODES, SETTINGS};
use aya_ebpf::maps::lpm_trie::Key;

/// The slot every lookup of this packet uses.
#[inline(always)]
pub fn active_slot() -> u8 {
    match SETTINGS.get(SETTING_ACTIVE_SLOT) {
        Some(s) => (*s & 1) as u8,
        None => 0,
    }
}

/// Whether allowed new connections are recorded too (`--flow-log all`).
#[inline(always)]
pub fn flow_log_all() -> bool {
    SETTINGS.get(SETTING_FLOW_LOG) == Some(&1)
}

/// The identity of a local pod, by its cgroup id; None for host processes.
#[inline(always)]
pub fn local(slot: u8, cgroup_id: u64) -> Option<Identity> {
    let key = CgroupKey {
        cgroup_id,
        slot: slot as u32,
        pad: 0,
    };
    // SAFETY: plain-data value copied out at once.
    unsafe { CGROUPS.get(&key).copied() }
}

/// The identity of an address; world when no prefix matches.
#[inline(always)]
pub fn remote(slot: u8, family: u8, addr: &[u32; 4]) -> Identity {
    let world = Identity {
        id: NS_WORLD,
        ns: NS_WORLD,
        flags: 0,
    };
    if family == 4 {
        let key = Key::new(IPV4_KEY_BITS, ipv4_key(slot, addr[0].to_ne_bytes()));
        IPV4.get(&key).copied().unwrap_or(world)
    } else {
        let key = Key::new(IPV6_KEY_BITS, ipv6_key(slot, ipv6_octets(addr)));
        IPV6.get(&key).copied().unwrap_or(world)
    }
}

/// The mode of namespace `ns` (falls back to the slot's default, then to monitor: an unknown or
/// unset value never drops).
#[inline(always)]
pub fn mode(slot: u8, ns: u32) -> Mode {
    let key = ModeKey {
        ns,
        slot: slot as u32,
    };
    // SAFETY: plain-data value copied out at once.
    let raw = match unsafe { MODES.get(&key) } {
        Some(m) => *m,
        None => match SETTINGS.get(SETTING_DEFAULT_MODE_SLOT0 + slot as u32) {
            Some(m) => *m,
            None => 0,
        },
    };
    Mode::try_from(raw).unwrap_or(Mode::Monitor)
}

/// Is this address loopback (127/8 or ::1)? Always allowed.
#[inline(always)]
pub fn is_loopback(family: u8, addr: &[u32; 4]) -> bool {
    if family == 4 {
        addr[0].to_ne_bytes()[0] == 127
    } else {
        addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && addr[3] == u32::from_ne_bytes([0, 0, 0, 1])
    }
}
