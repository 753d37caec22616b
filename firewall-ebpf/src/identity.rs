//! Identity, mode and slot lookups.
use firewall_common::{
    CgroupKey, Identity, MODE_MONITOR, ModeKey, NS_WORLD, SETTING_ACTIVE_SLOT,
    SETTING_DEFAULT_MODE_SLOT0,
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
        let a = addr[0].to_ne_bytes();
        let key = Key::new(40, [slot, a[0], a[1], a[2], a[3]]);
        IPV4.get(&key).copied().unwrap_or(world)
    } else {
        let mut data = [0u8; 17];
        data[0] = slot;
        let mut i = 0;
        while i < 4 {
            let w = addr[i].to_ne_bytes();
            data[1 + i * 4] = w[0];
            data[2 + i * 4] = w[1];
            data[3 + i * 4] = w[2];
            data[4 + i * 4] = w[3];
            i += 1;
        }
        IPV6.get(&Key::new(136, data)).copied().unwrap_or(world)
    }
}

/// The mode of namespace `ns` (falls back to the slot's default).
#[inline(always)]
pub fn mode(slot: u8, ns: u32) -> u32 {
    // SAFETY: plain-data value copied out at once.
    if let Some(m) = unsafe {
        MODES.get(&ModeKey {
            ns,
            slot: slot as u32,
        })
    } {
        return *m;
    }
    match SETTINGS.get(SETTING_DEFAULT_MODE_SLOT0 + slot as u32) {
        Some(m) if *m != 0 => *m,
        _ => MODE_MONITOR,
    }
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
