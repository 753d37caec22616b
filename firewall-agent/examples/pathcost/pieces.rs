//! The pieces of the SYN path (issue 14: the remaining cost "measured, per piece"): the
//! `bench-floor` object's `piece_*` programs (firewall-ebpf/src/pieces.rs), each one operation
//! of the datapath's SYN path, timed on the SYN's frame against the empty program exactly like
//! the paths.
//!
//! So that a lookup costs what Bulkhead's does, each piece map is created with the
//! `max_entries` of Bulkhead's loaded map (checked to match in type, key and value size and
//! flags too) and holds a copy of every entry Bulkhead's map holds when the paths are timed
//! (tries of the same shape); every piece's key is the one the SYN produces, and each run must
//! hit or miss as Bulkhead's map does with that key.
use std::collections::BTreeMap;

use anyhow::{Context as _, bail, ensure};
use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapInfo, lpm_trie::Key},
    programs::{CgroupSkb, TestRun as _, TestRunOptions},
};
use firewall_agent::datapath::Datapath;
use firewall_common::{
    CgroupKey, CtKey, CtValue, IPV4_KEY_BITS, IPV6_KEY_BITS, Identity, IpV4Key, IpV6Key, ModeKey,
    POLICY_PREFIX_FULL, PolicyKey, PolicyValue, SETTING_ACTIVE_SLOT, SETTINGS_LEN, Side,
    bench::PieceInput, ct_key, ipv4_key, ipv6_key, ipv6_octets, policy_key, programs,
};
use serde_json::{Value, json};

use super::{frames::Path, median};

/// Bulkhead's maps the pieces copy, and their copies in the `bench-floor` object.
const COPIES: [(&str, &str); 8] = [
    ("SETTINGS", "P_SETTINGS"),
    ("CGROUPS", "P_CGROUPS"),
    ("IPV4", "P_IPV4"),
    ("IPV6", "P_IPV6"),
    ("POLICY", "P_POLICY"),
    ("MODES", "P_MODES"),
    ("CONNTRACK", "P_CONNTRACK"),
    ("COUNTERS", "P_COUNTERS"),
];

/// Bulkhead's loaded maps by name, opened by the ids its packet programs use.
pub struct Maps(BTreeMap<String, MapData>);

impl Maps {
    pub fn open(dp: &Datapath) -> anyhow::Result<Self> {
        let mut out = BTreeMap::new();
        for prog in [programs::EGRESS, programs::INGRESS] {
            for id in dp.map_ids(prog)? {
                let md = MapData::from_id(id).with_context(|| format!("map id {id}"))?;
                let info = md.info().with_context(|| format!("map id {id}"))?;
                if let Some(name) = info.name_as_str() {
                    out.insert(name.to_owned(), md);
                }
            }
        }
        Ok(Self(out))
    }

    fn info(&self, name: &str) -> anyhow::Result<MapInfo> {
        let md = self
            .0
            .get(name)
            .with_context(|| format!("no Bulkhead map {name}"))?;
        md.info().with_context(|| format!("info of {name}"))
    }

    /// A second handle on map `name`, typed.
    fn typed<T: TryFrom<Map>>(&self, name: &str) -> anyhow::Result<T>
    where
        T::Error: std::error::Error + Send + Sync + 'static,
    {
        let id = self.info(name)?.id();
        let md = MapData::from_id(id).with_context(|| format!("reopening {name}"))?;
        let map = Map::from_map_data(md).with_context(|| name.to_owned())?;
        T::try_from(map).with_context(|| format!("{name}: unexpected map type"))
    }
}

/// Loads the `bench-floor` object with each piece map sized like Bulkhead's, and loads its
/// empty and piece programs (not attached: a test run needs none).
pub fn load_floor(bytes: &[u8], maps: &Maps) -> anyhow::Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    for (theirs, ours) in COPIES {
        loader.map_max_entries(ours, maps.info(theirs)?.max_entries());
    }
    let mut ebpf = loader
        .load(bytes)
        .context("loading the bench-floor object")?;
    for (theirs, ours) in COPIES {
        let (a, b) = (maps.info(theirs)?, floor_map_info(&ebpf, ours)?);
        let shape = |i: &MapInfo| {
            (
                i.map_type().ok().map(|t| format!("{t:?}")),
                i.key_size(),
                i.value_size(),
                i.max_entries(),
                i.map_flags(),
            )
        };
        ensure!(
            shape(&a) == shape(&b),
            "{ours} is not declared like {theirs}: {:?} vs {:?}",
            shape(&b),
            shape(&a)
        );
    }
    let names: Vec<String> = ebpf
        .programs()
        .map(|(n, _)| n.to_owned())
        .filter(|n| n.starts_with("floor_empty_") || n.starts_with("piece_"))
        .collect();
    for name in names {
        let prog: &mut CgroupSkb = ebpf
            .program_mut(&name)
            .with_context(|| format!("no program {name}"))?
            .try_into()
            .with_context(|| format!("{name} is not a cgroup_skb program"))?;
        prog.load().with_context(|| format!("loading {name}"))?;
    }
    Ok(ebpf)
}

fn floor_map_info(ebpf: &Ebpf, name: &str) -> anyhow::Result<MapInfo> {
    let map = ebpf.map(name).with_context(|| format!("no map {name}"))?;
    let md: &MapData = match map {
        Map::Array(m)
        | Map::HashMap(m)
        | Map::LpmTrie(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m) => m,
        _ => bail!("{name}: unexpected map type"),
    };
    md.info().with_context(|| format!("info of {name}"))
}

/// Copies every entry of Bulkhead's maps into the piece maps (counters excepted: their values
/// do not change what an increment costs). Returns entries copied per map.
pub fn copy_maps(maps: &Maps, floor: &mut Ebpf) -> anyhow::Result<Value> {
    let mut copied = serde_json::Map::new();
    let settings: Array<MapData, u32> = maps.typed("SETTINGS")?;
    let mut ours: Array<&mut MapData, u32> = floor_map(floor, "P_SETTINGS")?;
    for i in 0..SETTINGS_LEN {
        ours.set(i, &settings.get(&i, 0)?, 0)?;
    }
    copied.insert("SETTINGS".into(), SETTINGS_LEN.into());
    let mut put = |name: &str, n: usize| copied.insert(name.into(), n.into());
    put(
        "CGROUPS",
        copy_hash::<CgroupKey, Identity>(maps, floor, "CGROUPS")?,
    );
    put("IPV4", copy_lpm::<IpV4Key, Identity>(maps, floor, "IPV4")?);
    put("IPV6", copy_lpm::<IpV6Key, Identity>(maps, floor, "IPV6")?);
    put(
        "POLICY",
        copy_lpm::<PolicyKey, PolicyValue>(maps, floor, "POLICY")?,
    );
    put("MODES", copy_hash::<ModeKey, u32>(maps, floor, "MODES")?);
    put(
        "CONNTRACK",
        copy_hash::<CtKey, CtValue>(maps, floor, "CONNTRACK")?,
    );
    Ok(Value::Object(copied))
}

fn floor_map<'a, T: TryFrom<&'a mut Map>>(floor: &'a mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let map = floor
        .map_mut(name)
        .with_context(|| format!("no map {name}"))?;
    T::try_from(map).with_context(|| format!("{name}: unexpected map type"))
}

fn copy_hash<K: Pod, V: Pod>(maps: &Maps, floor: &mut Ebpf, name: &str) -> anyhow::Result<usize> {
    let theirs: HashMap<MapData, K, V> = maps.typed(name)?;
    let mut ours: HashMap<&mut MapData, K, V> = floor_map(floor, &format!("P_{name}"))?;
    let mut n = 0;
    for e in theirs.iter() {
        let (k, v) = e.with_context(|| format!("reading {name}"))?;
        ours.insert(&k, &v, 0)
            .with_context(|| format!("copying {name}"))?;
        n += 1;
    }
    Ok(n)
}

fn copy_lpm<K: Pod, V: Pod>(maps: &Maps, floor: &mut Ebpf, name: &str) -> anyhow::Result<usize> {
    let theirs: LpmTrie<MapData, K, V> = maps.typed(name)?;
    let mut ours: LpmTrie<&mut MapData, K, V> = floor_map(floor, &format!("P_{name}"))?;
    let mut n = 0;
    for e in theirs.iter() {
        let (k, v) = e.with_context(|| format!("reading {name}"))?;
        ours.insert(&k, &v, 0)
            .with_context(|| format!("copying {name}"))?;
        n += 1;
    }
    Ok(n)
}

/// One piece timed on one SYN: its program, input, and what it must return (1: found).
struct Piece {
    name: &'static str,
    program: String,
    input: PieceInput,
    expect: u32,
}

/// The pieces that build no key from the input array (the rest pay the `input` piece on top of
/// their operation, which the report subtracts).
const KEYLESS: [&str; 6] = [
    "input",
    "parse",
    "cgroup_id",
    "settings",
    "clock",
    "counter",
];

/// The SYN's tuple as `packet::parse` returns it (addresses network order in native words,
/// ports host order), read from the Ethernet frame.
fn tuple(frame: &[u8]) -> anyhow::Result<CtKey> {
    let b = |i: usize| frame.get(i).copied().context("frame too short");
    let word = |i: usize| -> anyhow::Result<u32> {
        Ok(u32::from_ne_bytes([b(i)?, b(i + 1)?, b(i + 2)?, b(i + 3)?]))
    };
    let port = |i: usize| -> anyhow::Result<u16> { Ok(u16::from_be_bytes([b(i)?, b(i + 1)?])) };
    let mut t = CtKey::default();
    let l4 = match u16::from_be_bytes([b(12)?, b(13)?]) {
        0x0800 => {
            (t.family, t.proto) = (4, b(14 + 9)?);
            (t.saddr[0], t.daddr[0]) = (word(14 + 12)?, word(14 + 16)?);
            14 + 20
        }
        0x86dd => {
            (t.family, t.proto) = (6, b(14 + 6)?);
            for w in 0..4 {
                t.saddr[w] = word(14 + 8 + 4 * w)?;
                t.daddr[w] = word(14 + 24 + 4 * w)?;
            }
            14 + 40
        }
        e => bail!("ethertype {e:#x}"),
    };
    (t.sport, t.dport) = (port(l4)?, port(l4 + 2)?);
    Ok(t)
}

/// The pieces of SYN path `p`, with the inputs and expectations its lookups produce.
fn pieces(p: &Path, maps: &Maps, cgroup_id: u64) -> anyhow::Result<Vec<Piece>> {
    let settings: Array<MapData, u32> = maps.typed("SETTINGS")?;
    let slot = settings.get(&SETTING_ACTIVE_SLOT, 0)? & 1;
    let t = tuple(&p.frame)?;
    let side = if p.hook == "egress" {
        Side::Egress
    } else {
        Side::Ingress
    };
    let cgroups: HashMap<MapData, CgroupKey, Identity> = maps.typed("CGROUPS")?;
    let key = CgroupKey {
        cgroup_id,
        slot,
        pad: 0,
    };
    let local = cgroups
        .get(&key, 0)
        .context("the local pod is not in Bulkhead's CGROUPS")?;
    let peer_addr = if side == Side::Egress {
        &t.daddr
    } else {
        &t.saddr
    };
    let peer = if t.family == 4 {
        let trie: LpmTrie<MapData, IpV4Key, Identity> = maps.typed("IPV4")?;
        let k = ipv4_key(slot as u8, peer_addr[0].to_ne_bytes());
        trie.get(&Key::new(IPV4_KEY_BITS, k), 0).ok()
    } else {
        let trie: LpmTrie<MapData, IpV6Key, Identity> = maps.typed("IPV6")?;
        let k = ipv6_key(slot as u8, ipv6_octets(peer_addr));
        trie.get(&Key::new(IPV6_KEY_BITS, k), 0).ok()
    };
    let peer_found = peer.is_some();
    let peer = peer.unwrap_or_default();
    let policy: LpmTrie<MapData, PolicyKey, PolicyValue> = maps.typed("POLICY")?;
    let has_policy = |i: &PieceInput| {
        let k = policy_key(
            i.slot as u8,
            i.side as u8,
            i.local,
            i.peer,
            t.proto,
            t.dport,
        );
        policy.get(&Key::new(POLICY_PREFIX_FULL, k), 0).is_ok()
    };
    let modes: HashMap<MapData, ModeKey, u32> = maps.typed("MODES")?;
    let ct: HashMap<MapData, CtKey, CtValue> = maps.typed("CONNTRACK")?;
    let base = PieceInput {
        cgroup_id,
        tuple: t,
        slot,
        side: side as u32,
        local: local.id,
        peer: peer.id,
        ns: local.ns,
        pad: 0,
    };
    let mut out = Vec::new();
    let mut add = |name, program: &str, input: PieceInput, expect: bool| {
        out.push(Piece {
            name,
            program: format!("piece_{program}_{}", p.hook),
            input,
            expect: expect.into(),
        });
    };
    for name in KEYLESS {
        add(name, name, base, true);
    }
    add("cgroups", "cgroups", base, true);
    add("remote", "remote", base, peer_found);
    add("policy", "policy", base, has_policy(&base));
    if side == Side::Egress {
        // judge's second lookup: the destination's ingress side, keyed from its end.
        let dest = PieceInput {
            side: Side::Ingress as u32,
            local: peer.id,
            peer: local.id,
            ..base
        };
        add("policy_peer", "policy", dest, has_policy(&dest));
    }
    let mode_key = ModeKey { ns: local.ns, slot };
    add("modes", "modes", base, modes.get(&mode_key, 0).is_ok());
    // `opened_by_source` looks up the source's (egress) key.
    let opened = PieceInput {
        side: Side::Egress as u32,
        ..base
    };
    let hit = ct.get(&ct_key(Side::Egress, &t), 0).is_ok();
    add("ct_lookup", "ct_lookup", opened, hit);
    // The key the SYN's `track` inserts must be one Bulkhead inserted: proves `tuple` reads the
    // frame as the datapath's parser does.
    ensure!(
        ct.get(&ct_key(side, &t), 0).is_ok(),
        "{} {}: Bulkhead's CONNTRACK has no entry under the piece's key",
        p.key,
        p.hook
    );
    add("ct_insert", "ct_insert", base, true);
    Ok(out)
}

/// Times every piece of every SYN path (interleaved with the empty program of its hook, ABBA,
/// medians over `rounds`), as one JSON row each.
pub fn time(
    floor: &mut Ebpf,
    maps: &Maps,
    paths: &[Path],
    cgroup_id: u64,
    rounds: usize,
    repeat: u32,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for p in paths.iter().filter(|p| p.key.ends_with("-syn")) {
        for piece in pieces(p, maps, cgroup_id)? {
            let mut input: Array<&mut MapData, PieceInput> = floor_map(floor, "P_INPUT")?;
            input.set(0, &piece.input, 0)?;
            let prog = program(floor, &piece.program)?;
            let empty = program(floor, &format!("floor_empty_{}", p.hook))?;
            let timed = |prog: &CgroupSkb, expect: Option<u32>| -> anyhow::Result<f64> {
                let opts = TestRunOptions {
                    data_in: Some(&p.frame),
                    repeat,
                    ..TestRunOptions::default()
                };
                let r = prog.test_run(opts).context("test run")?;
                if let Some(want) = expect
                    && r.return_value != want
                {
                    bail!(
                        "{} on {} {}: returned {}, expected {want} (1: found, as in Bulkhead's map)",
                        piece.program,
                        p.key,
                        p.hook,
                        r.return_value
                    );
                }
                Ok(r.duration.as_secs_f64() * 1e9)
            };
            let (mut b, mut e) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                if round % 2 == 0 {
                    b.push(timed(prog, Some(piece.expect))?);
                    e.push(timed(empty, None)?);
                } else {
                    e.push(timed(empty, None)?);
                    b.push(timed(prog, Some(piece.expect))?);
                }
            }
            let (mb, me) = (median(&b), median(&e));
            let paired: Vec<f64> = b.iter().zip(&e).map(|(b, e)| b - e).collect();
            out.push(json!({
                "piece": piece.name, "path": p.key, "hook": p.hook, "program": piece.program,
                "found": piece.expect == 1, "reads_input": !KEYLESS.contains(&piece.name),
                "piece_ns": b, "empty_ns": e,
                "piece_ns_median": mb, "empty_ns_median": me,
                "above_empty_ns": mb - me, "above_empty_ns_paired": median(&paired),
            }));
        }
    }
    Ok(out)
}

fn program<'a>(floor: &'a Ebpf, name: &str) -> anyhow::Result<&'a CgroupSkb> {
    let prog = floor.program(name).with_context(|| format!("no {name}"))?;
    prog.try_into()
        .with_context(|| format!("{name} is not a cgroup_skb program"))
}
