//! Writes compiled map contents into the kernel without a window of wrong verdicts.
//!
//! Every compiled map is keyed by a slot (0 or 1). The writer brings the *inactive* slot to the new
//! contents (only the difference against what that slot holds), then flips the active slot with a
//! single 4-byte store. Packets read the slot once, so each sees the old state or the new one.
//! When a write fails (a map is full), the active slot is left alone: the last good policy stays.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use aya::maps::{MapError, lpm_trie::Key};
use firewall_common::{
    CgroupKey, IpV4Key, IpV6Key, ModeKey, PolicyKey, PolicyPrefix, SETTING_ACTIVE_SLOT,
    SETTING_DEFAULT_MODE_SLOT0, SETTING_FLOW_LOG, ip_addr_bits, ip_key_bits, ipv4_key, ipv6_key,
    maps,
};
use tracing::warn;

use super::loader::StateMaps;
use crate::compiler::MapContents;

/// A write that failed, naming the map.
#[derive(Debug, thiserror::Error)]
#[error("writing map {map}: {source} (the previous policy stays in force)")]
pub struct WriteError {
    /// Map name.
    pub map: &'static str,
    /// Cause (E2BIG/ENOSPC when the map is full).
    #[source]
    pub source: MapError,
}

/// Why a policy was not applied; the previous one stays in force either way.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The policy does not fit: nothing was written.
    #[error(
        "map {map} would need {needed} entries (the active policy's {active} plus the new one's {new}) but holds {capacity}; raise {flag} (the previous policy stays in force)"
    )]
    Capacity {
        /// Map name.
        map: &'static str,
        /// Entries both slots would hold.
        needed: usize,
        /// The active slot's entries.
        active: usize,
        /// The new policy's entries.
        new: usize,
        /// The map's capacity.
        capacity: u32,
        /// The agent flag that sizes it.
        flag: &'static str,
    },
    /// The kernel refused a write.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// What one apply changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries inserted or updated.
    pub written: usize,
    /// Entries deleted.
    pub deleted: usize,
    /// Slot now active.
    pub slot: u8,
}

/// Owns the state maps and what each slot holds.
pub struct MapWriter {
    maps: StateMaps,
    active: u8,
    slots: [MapContents; 2],
}

fn err(map: &'static str) -> impl FnOnce(MapError) -> WriteError {
    move |source| WriteError { map, source }
}

/// Entries of one slot's contents per state map, in the order of [`super::loader::Capacities`].
fn state_map_entries(c: &MapContents) -> [(&'static str, usize); 5] {
    [
        (maps::CGROUPS, c.cgroups.len()),
        (maps::IPV4, c.ipv4.len()),
        (maps::IPV6, c.ipv6.len()),
        (maps::POLICY, c.policy.len()),
        (maps::MODES, c.modes.len()),
    ]
}

/// Brings `have` to `want` through `write` (`None` deletes): deletions first, as they free room.
fn sync<K: Ord + Clone, V: PartialEq + Clone>(
    have: &mut BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    stats: &mut ApplyStats,
    mut write: impl FnMut(&K, Option<&V>) -> Result<(), WriteError>,
) -> Result<(), WriteError> {
    let stale: Vec<K> = have
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    for k in stale {
        write(&k, None)?;
        have.remove(&k);
        stats.deleted += 1;
    }
    for (k, v) in want {
        if have.get(k) != Some(v) {
            write(k, Some(v))?;
            have.insert(k.clone(), v.clone());
            stats.written += 1;
        }
    }
    Ok(())
}

fn v4_key(slot: u8, (addr, len): &(Ipv4Addr, u8)) -> Key<IpV4Key> {
    Key::new(ip_key_bits(*len), ipv4_key(slot, addr.octets()))
}

fn v6_key(slot: u8, (addr, len): &(Ipv6Addr, u8)) -> Key<IpV6Key> {
    Key::new(ip_key_bits(*len), ipv6_key(slot, addr.octets()))
}

fn policy_key(slot: u8, prefix: &PolicyPrefix) -> Key<PolicyKey> {
    let (len, data) = prefix.to_lpm(slot);
    Key::new(len, data)
}

impl MapWriter {
    /// Takes ownership of freshly loaded (empty) maps; slot 0 becomes active.
    pub fn new(mut maps: StateMaps) -> Result<Self, WriteError> {
        maps.settings
            .set(SETTING_ACTIVE_SLOT, &0, 0)
            .map_err(err(maps::SETTINGS))?;
        Ok(Self {
            maps,
            active: 0,
            slots: Default::default(),
        })
    }

    /// Takes ownership of maps that may already hold state (pinned by an earlier agent): reads the
    /// active slot, each slot's default mode and every entry of every state map back into the
    /// two slots' [`MapContents`], and leaves the kernel untouched. The next [`MapWriter::apply`]
    /// is then an exact difference into the inactive slot followed by the usual one-store flip,
    /// so the policy the old agent left in force keeps deciding until then, without a window.
    /// On freshly created (empty) maps this is the same as [`MapWriter::new`].
    pub fn adopt(maps: StateMaps) -> Result<Self, WriteError> {
        let setting = |i: u32| maps.settings.get(&i, 0).map_err(err(maps::SETTINGS));
        let active = match setting(SETTING_ACTIVE_SLOT)? {
            1 => 1u8,
            _ => 0,
        };
        let mut slots: [MapContents; 2] = Default::default();
        for (s, c) in slots.iter_mut().enumerate() {
            c.default_mode = setting(SETTING_DEFAULT_MODE_SLOT0 + s as u32)?;
        }
        let slot_of = |s: u32| usize::try_from(s).ok().filter(|s| *s < 2);
        for e in maps.cgroups.iter() {
            let (k, v) = e.map_err(err(maps::CGROUPS))?;
            if let Some(s) = slot_of(k.slot) {
                slots[s].cgroups.insert(k.cgroup_id, v);
            }
        }
        for e in maps.ipv4.iter() {
            let (k, v) = e.map_err(err(maps::IPV4))?;
            let d = k.data();
            if let (Some(s), Some(len)) =
                (slot_of(u32::from(d[0])), ip_addr_bits(k.prefix_len(), 32))
            {
                slots[s]
                    .ipv4
                    .insert((Ipv4Addr::new(d[1], d[2], d[3], d[4]), len), v);
            }
        }
        for e in maps.ipv6.iter() {
            let (k, v) = e.map_err(err(maps::IPV6))?;
            let d = k.data();
            let mut o = [0u8; 16];
            o.copy_from_slice(&d[1..]);
            if let (Some(s), Some(len)) =
                (slot_of(u32::from(d[0])), ip_addr_bits(k.prefix_len(), 128))
            {
                slots[s].ipv6.insert((Ipv6Addr::from(o), len), v);
            }
        }
        for e in maps.policy.iter() {
            let (k, v) = e.map_err(err(maps::POLICY))?;
            match PolicyPrefix::from_lpm(k.prefix_len(), &k.data()) {
                Some((s, p)) if s < 2 => {
                    slots[usize::from(s)].policy.insert(p, v);
                }
                // No agent of this layout writes such a key; it is left alone.
                _ => warn!(key = ?k.data(), len = k.prefix_len(), "ignoring unknown policy key"),
            }
        }
        for e in maps.modes.iter() {
            let (k, v) = e.map_err(err(maps::MODES))?;
            if let Some(s) = slot_of(k.slot) {
                slots[s].modes.insert(k.ns, v);
            }
        }
        Ok(Self {
            maps,
            active,
            slots,
        })
    }

    /// The slot packets currently use.
    pub fn active_slot(&self) -> u8 {
        self.active
    }

    /// What the active slot holds.
    pub fn active_contents(&self) -> &MapContents {
        &self.slots[usize::from(self.active)]
    }

    /// Entries held in the kernel per state map, both slots together (what counts against each
    /// map's capacity): `(map name, entries)`.
    pub fn entries(&self) -> [(&'static str, usize); 5] {
        let mut total = state_map_entries(&self.slots[0]);
        for (t, (_, n)) in total.iter_mut().zip(state_map_entries(&self.slots[1])) {
            t.1 += n;
        }
        total
    }

    /// Entries and capacity per state map, both slots together: how full each is.
    pub fn fill(&self) -> Vec<(&'static str, usize, u32)> {
        let c = self.maps.capacities;
        let caps = [c.cgroups, c.ipv4, c.ipv6, c.policy, c.modes];
        self.entries()
            .into_iter()
            .zip(caps)
            .map(|((name, n), cap)| (name, n, cap))
            .collect()
    }

    /// Whether `want` fits beside the active slot in every map; the first map that would
    /// overflow otherwise. Checked before anything is written, so an oversized policy never
    /// leaves a map half-filled.
    pub fn check_capacity(&self, want: &MapContents) -> Result<(), ApplyError> {
        let c = self.maps.capacities;
        let limits = [
            (c.cgroups, "--cgroup-entries"),
            (c.ipv4, "--address-entries"),
            (c.ipv6, "--address-entries"),
            (c.policy, "--policy-entries"),
            (c.modes, "(fixed: namespaces with a mode)"),
        ];
        let active = state_map_entries(self.active_contents());
        let new = state_map_entries(want);
        for (((map, active), (_, new)), (capacity, flag)) in active.into_iter().zip(new).zip(limits)
        {
            let needed = active + new;
            if needed > capacity as usize {
                return Err(ApplyError::Capacity {
                    map,
                    needed,
                    active,
                    new,
                    capacity,
                    flag,
                });
            }
        }
        Ok(())
    }

    /// The maps' capacities.
    pub fn capacities(&self) -> super::loader::Capacities {
        self.maps.capacities
    }

    /// `--flow-log all` (true) also records allowed new connections; set at every start, so an
    /// adopted datapath follows this agent's flag rather than the last one's.
    pub fn set_flow_log(&mut self, all: bool) -> Result<(), WriteError> {
        self.maps
            .settings
            .set(SETTING_FLOW_LOG, &u32::from(all), 0)
            .map_err(err(maps::SETTINGS))
    }

    /// Writes `want` into the inactive slot, then makes it active.
    pub fn apply(&mut self, want: &MapContents) -> Result<ApplyStats, ApplyError> {
        self.check_capacity(want)?;
        let slot = 1 - self.active;
        let mut stats = ApplyStats {
            slot,
            ..Default::default()
        };
        let m = &mut self.maps;
        let have = &mut self.slots[usize::from(slot)];
        let s32 = u32::from(slot);

        // One map's slot brought to `want`, with the keys `$key` builds (the maps share no
        // trait for insert and remove).
        macro_rules! sync_map {
            ($map:ident, $name:expr, |$k:ident| $key:expr) => {
                sync(&mut have.$map, &want.$map, &mut stats, |$k, v| {
                    let key = $key;
                    match v {
                        Some(v) => m.$map.insert(&key, v, 0),
                        None => m.$map.remove(&key),
                    }
                    .map_err(err($name))
                })?
            };
        }
        sync_map!(cgroups, maps::CGROUPS, |id| CgroupKey {
            cgroup_id: *id,
            slot: s32,
            pad: 0,
        });
        sync_map!(ipv4, maps::IPV4, |k| v4_key(slot, k));
        sync_map!(ipv6, maps::IPV6, |k| v6_key(slot, k));
        sync_map!(policy, maps::POLICY, |k| policy_key(slot, k));
        sync_map!(modes, maps::MODES, |ns| ModeKey { ns: *ns, slot: s32 });
        m.settings
            .set(SETTING_DEFAULT_MODE_SLOT0 + s32, &want.default_mode, 0)
            .map_err(err(maps::SETTINGS))?;
        have.default_mode = want.default_mode;

        // The flip: one u32 store; from here on new packets use the new slot.
        m.settings
            .set(SETTING_ACTIVE_SLOT, &s32, 0)
            .map_err(err(maps::SETTINGS))?;
        self.active = slot;
        Ok(stats)
    }
}
