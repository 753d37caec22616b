//! Conntrack as agents before the one-key layout pinned it: keyed by `(side, tuple in the
//! direction of the first packet)`, with 16-byte values. A reply needed two lookups there; the
//! current key ([`ct_key`]) answers both directions in one. An upgrade over such pins must not
//! re-judge every open connection, so the new agent migrates the entries
//! (docs/design.md#pinning-and-restarts):
//! 1. [`set_aside`] renames the old pin, so the loader creates the new layout's map in its place;
//! 2. [`migrate`] copies every entry under its new key before the new programs are attached;
//! 3. once the old programs are detached, a second [`migrate`] copies what they tracked in
//!    between, and the old map is unpinned.
//!
//! Both layouts record the same facts, so nothing is widened: an old `(side, t)` becomes
//! `ct_key(side, t)` with `side` kept in the value, which is what the new datapath would have
//! written for the same packet.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, Map, MapData, MapError, MapInfo};
use firewall_common::{CtKey, CtValue, Side, ct_key, maps};
use tracing::{info, warn};

use super::{loader::LoadError, pin::PinDir};

/// Where the old layout's map waits while its entries are copied (bpffs refuses dots in names).
pub const SET_ASIDE: &str = "CONNTRACK_BY_SIDE";

/// `BPF_NOEXIST` (linux/bpf.h): insert only where the key is absent.
const BPF_NOEXIST: u64 = 1;

/// Value size of the old layout's conntrack (`created_ns`, `seen_ns`).
const OLD_VALUE_SIZE: u32 = 16;

/// The old layout's key: the fields of [`CtKey`], with a [`Side`] where `end` is now.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct OldKey {
    saddr: [u32; 4],
    daddr: [u32; 4],
    sport: u16,
    dport: u16,
    proto: u8,
    side: u8,
    family: u8,
    pad: u8,
}

/// The old layout's value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct OldValue {
    created_ns: u64,
    seen_ns: u64,
}

// SAFETY: plain `repr(C)` data, as the kernel wrote it.
unsafe impl aya::Pod for OldKey {}
// SAFETY: as above.
unsafe impl aya::Pod for OldValue {}

/// The entry the current datapath would have written for the same connection; `None` for a key
/// no agent wrote (an unknown side).
fn convert(k: &OldKey, v: &OldValue) -> Option<(CtKey, CtValue)> {
    let side = Side::try_from(k.side).ok()?;
    let value = CtValue {
        created_ns: v.created_ns,
        seen_ns: v.seen_ns,
        side: side as u8,
        pad: [0; 7],
    };
    Some((ct_key(side, &k.tuple()), value))
}

impl OldKey {
    /// The connection's tuple in the direction of its first packet.
    fn tuple(&self) -> CtKey {
        CtKey {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            family: self.family,
            ..CtKey::default()
        }
    }
}

fn map_err(source: MapError) -> LoadError {
    LoadError::Map {
        name: maps::CONNTRACK,
        source,
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LoadError + '_ {
    move |source| LoadError::Legacy {
        path: path.to_owned(),
        source,
    }
}

/// Renames a pinned conntrack of the old layout out of the loader's way. Returns the set-aside
/// map and its capacity (which the new map keeps) when there is one: renamed now, or by an
/// earlier start that stopped before finishing.
pub fn set_aside(dir: &PinDir) -> Result<Option<(PathBuf, u32)>, LoadError> {
    let current = dir.map(maps::CONNTRACK);
    let aside = dir.map(SET_ASIDE);
    if let Ok(info) = MapInfo::from_pin(&current)
        && info.value_size() == OLD_VALUE_SIZE
    {
        fs::rename(&current, &aside).map_err(io_err(&current))?;
        info!(
            from = %current.display(),
            to = %aside.display(),
            "pinned conntrack has the layout of an earlier agent; its entries are migrated"
        );
    }
    match MapInfo::from_pin(&aside) {
        Ok(info) => Ok(Some((aside, info.max_entries()))),
        Err(_) if !aside.exists() => Ok(None),
        Err(source) => Err(map_err(source)),
    }
}

/// What [`migrate`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Entries written under their new key.
    pub copied: usize,
    /// Entries the new map already held (tracked by the new programs since).
    pub present: usize,
    /// Entries that could not be read or written: those connections are judged again on their
    /// next packet, as after an eviction.
    pub failed: usize,
}

/// Copies every entry of the old-layout map pinned at `from` into `to`, keeping what `to`
/// already holds.
pub fn migrate(
    from: &Path,
    to: &mut HashMap<MapData, CtKey, CtValue>,
) -> Result<Migrated, LoadError> {
    let old: HashMap<MapData, OldKey, OldValue> = open(from)?;
    let mut m = Migrated::default();
    for entry in old.iter() {
        let Some((key, value)) = entry.ok().and_then(|(k, v)| convert(&k, &v)) else {
            m.failed += 1;
            continue;
        };
        match to.insert(&key, &value, BPF_NOEXIST) {
            Ok(()) => m.copied += 1,
            Err(MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::AlreadyExists => {
                m.present += 1;
            }
            Err(_) => m.failed += 1,
        }
    }
    if m.failed > 0 {
        warn!(
            failed = m.failed,
            "conntrack entries of the earlier layout not migrated: their connections are judged again on their next packet"
        );
    }
    Ok(m)
}

/// The hand-over's last step, once the older programs are detached: copies what they tracked
/// since the first [`migrate`] into the map pinned at `current`, then unpins the set-aside map
/// (the kernel frees it with its last holder).
pub fn finish(aside: &Path, current: &Path) -> Result<Migrated, LoadError> {
    let mut to = open(current)?;
    let m = migrate(aside, &mut to)?;
    fs::remove_file(aside).map_err(io_err(aside))?;
    Ok(m)
}

/// Entries of an old-layout conntrack pinned at `pin` (`status` over an earlier agent's pins);
/// `None` when it is not one.
pub fn entries(pin: &Path) -> Option<usize> {
    let old: HashMap<MapData, OldKey, OldValue> = open(pin).ok()?;
    Some(old.keys().filter(Result::is_ok).count())
}

fn open<K: aya::Pod, V: aya::Pod>(pin: &Path) -> Result<HashMap<MapData, K, V>, LoadError> {
    let data = MapData::from_pin(pin).map_err(map_err)?;
    HashMap::try_from(Map::from_map_data(data).map_err(map_err)?).map_err(map_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use firewall_common::{CT_END_FIRST, CT_END_SECOND};

    const A: u32 = u32::from_ne_bytes([10, 0, 0, 1]);
    const B: u32 = u32::from_ne_bytes([10, 0, 0, 2]);

    fn old(side: Side, sport: u16, dport: u16) -> OldKey {
        OldKey {
            saddr: [A, 0, 0, 0],
            daddr: [B, 0, 0, 0],
            sport,
            dport,
            proto: 17,
            side: side as u8,
            family: 4,
            pad: 0,
        }
    }

    #[test]
    fn an_old_entry_becomes_the_entry_its_side_writes_now() {
        let v = OldValue {
            created_ns: 5,
            seen_ns: 7,
        };
        for side in [Side::Egress, Side::Ingress] {
            let k = old(side, 40000, 53);
            let (key, value) = convert(&k, &v).expect("a known side");
            // The connection the old entry names: 10.0.0.1:40000 -> 10.0.0.2:53, UDP.
            let tuple = CtKey {
                saddr: [A, 0, 0, 0],
                daddr: [B, 0, 0, 0],
                sport: 40000,
                dport: 53,
                proto: 17,
                family: 4,
                ..CtKey::default()
            };
            assert_eq!(key, ct_key(side, &tuple));
            // ...and so answers the replies the old layout answered from the other side.
            assert_eq!(key, ct_key(side.other(), &tuple.reversed()));
            assert!(key.end == CT_END_FIRST || key.end == CT_END_SECOND);
            assert_eq!(
                (value.created_ns, value.seen_ns, value.side),
                (5, 7, side as u8)
            );
        }
    }

    #[test]
    fn a_key_with_an_unknown_side_is_not_migrated() {
        let mut k = old(Side::Egress, 1, 2);
        k.side = 3;
        assert_eq!(convert(&k, &OldValue::default()), None);
    }
}
