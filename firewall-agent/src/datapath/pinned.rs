//! What an agent left pinned, read without loading a program or changing a byte: `firewall-agent
//! status` on a node whether or not an agent runs. The state maps are read back the way a new
//! agent adopts them ([`MapWriter::adopt`]), so `status` and adoption agree on what is in force.
use std::collections::BTreeMap;

use aya::maps::{HashMap, Map, MapData, MapError, MapInfo};
use firewall_common::{CtKey, CtValue, FoldKey, FoldValue, capacity, maps};

use super::{
    legacy,
    loader::{Capacities, LoadError, StateMaps},
    pin::{self, PinDir},
    writer::MapWriter,
};

/// One attached generation of links, from the names of the pins in `links/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// `<unix ns>-<pid>` of the agent that attached it.
    pub tag: String,
    /// The programs pinned under this tag.
    pub programs: Vec<String>,
}

/// The pinned state of one pin directory.
pub struct Pinned {
    /// The state maps, both slots, as adoption reads them.
    pub writer: MapWriter,
    /// Entries and capacity of the maps the writer does not hold (`CONNTRACK`, `FOLD`).
    pub other_maps: Vec<(&'static str, usize, u32)>,
    /// Link generations, oldest first (more than one only while an agent replaces another, or
    /// after a crash in that step).
    pub generations: Vec<Generation>,
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> LoadError {
    move |source| LoadError::Map { name, source }
}

/// Opens the map pinned as `name` as a `T`.
fn open<T: TryFrom<Map, Error = MapError>>(
    dir: &PinDir,
    name: &'static str,
) -> Result<T, LoadError> {
    let data = MapData::from_pin(dir.map(name)).map_err(map_err(name))?;
    let map = Map::from_map_data(data).map_err(map_err(name))?;
    T::try_from(map).map_err(map_err(name))
}

fn max_entries(dir: &PinDir, name: &'static str) -> Result<u32, LoadError> {
    MapInfo::from_pin(dir.map(name))
        .map(|i| i.max_entries())
        .map_err(map_err(name))
}

/// The link generations pinned under `dir`, from the pins' names.
pub fn generations(dir: &PinDir) -> Result<Vec<Generation>, LoadError> {
    let mut by_tag: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in dir.link_pins()? {
        if let Some((program, tag)) = pin::parse_link_pin(&p) {
            by_tag
                .entry(tag.to_owned())
                .or_default()
                .push(program.to_owned());
        }
    }
    Ok(by_tag
        .into_iter()
        .map(|(tag, programs)| Generation { tag, programs })
        .collect())
}

/// Reads every pinned state map and counts the others. `Ok(None)` when nothing is pinned there.
/// Needs the privileges of `bpf(BPF_OBJ_GET)` on the pins (root, or CAP_BPF with access to the
/// files).
pub fn read(dir: &PinDir) -> Result<Option<Pinned>, LoadError> {
    if !dir.has_maps() {
        return Ok(None);
    }
    let capacities = Capacities {
        cgroups: max_entries(dir, maps::CGROUPS)?,
        ipv4: max_entries(dir, maps::IPV4)?,
        ipv6: max_entries(dir, maps::IPV6)?,
        policy: max_entries(dir, maps::POLICY)?,
        modes: max_entries(dir, maps::MODES).unwrap_or(capacity::MODES),
    };
    let state = StateMaps {
        settings: open(dir, maps::SETTINGS)?,
        capacities,
        cgroups: open(dir, maps::CGROUPS)?,
        ipv4: open(dir, maps::IPV4)?,
        ipv6: open(dir, maps::IPV6)?,
        policy: open(dir, maps::POLICY)?,
        modes: open(dir, maps::MODES)?,
    };
    let writer = MapWriter::adopt(state).map_err(|e| LoadError::Map {
        name: e.map,
        source: e.source,
    })?;
    // An earlier agent's layout is read as such: `status` works over its pins too.
    let conntrack_entries = match open::<HashMap<MapData, CtKey, CtValue>>(dir, maps::CONNTRACK) {
        Ok(m) => m.keys().filter(Result::is_ok).count(),
        Err(e) => legacy::entries(&dir.map(maps::CONNTRACK)).ok_or(e)?,
    };
    let fold: HashMap<MapData, FoldKey, FoldValue> = open(dir, maps::FOLD)?;
    let other_maps = vec![
        (
            maps::CONNTRACK,
            conntrack_entries,
            max_entries(dir, maps::CONNTRACK)?,
        ),
        (
            maps::FOLD,
            fold.keys().filter(Result::is_ok).count(),
            max_entries(dir, maps::FOLD)?,
        ),
    ];
    Ok(Some(Pinned {
        writer,
        other_maps,
        generations: generations(dir)?,
    }))
}
