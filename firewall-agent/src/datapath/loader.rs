//! Loads the embedded eBPF object and attaches its programs at a cgroup v2 directory.
//!
//! Programs are attached through bpf_link. Cgroup links always coexist with other programs on the
//! same cgroup (the kernel refuses attach flags on them, hence `CgroupAttachMode::Single`, which
//! passes none), so systemd's or a CNI's programs keep running. Dropping [`Datapath`] closes the links, which
//! detaches everything: that is the clean shutdown when no state is pinned.
//!
//! With a pin directory ([`LoadOptions::pin_dir`], see [`super::pin`]) every map is pinned by name
//! and reused by the next load, and every link is pinned, so enforcement outlives the agent; a new
//! agent attaches its own links before removing the older generation's.
use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, MapInfo, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr,
        links::{FdLink, PinnedLink},
    },
};
use tracing::{info, warn};

use super::{
    legacy,
    pin::{self, PinDir, PinError},
};
use firewall_common::{
    CgroupKey, CtKey, CtValue, FoldKey, FoldValue, Identity, IpV4Key, IpV6Key, ModeKey, PolicyKey,
    PolicyValue, capacity, maps, programs,
};

/// The eBPF object built by build.rs (empty when built with `AYA_BUILD_SKIP=1`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/firewall"));

/// Failures while loading or attaching, each naming what failed and why.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The agent was built without its eBPF object.
    #[error(
        "this firewall-agent was built with AYA_BUILD_SKIP=1 and has no eBPF object; rebuild without it"
    )]
    NoObject,
    /// The kernel refused the object or a program (the verifier log is in the source).
    #[error("loading the eBPF object: {0}")]
    Load(#[from] EbpfError),
    /// A pinned map from an earlier agent does not match this agent's definition (an upgrade
    /// changed its layout): it cannot be adopted in place.
    #[error(
        "the pinned map {name} was created with {property} {actual} but this agent needs {expected}; it cannot be adopted: run `firewall-agent cleanup --bpffs DIR` (enforcement stops until the agent starts again) or keep the previous agent version"
    )]
    PinnedMapIncompatible {
        /// Map name.
        name: String,
        /// Differing property.
        property: &'static str,
        /// This agent's value.
        expected: u64,
        /// The pinned map's value.
        actual: u64,
    },
    /// Preparing, reading or cleaning the pin directory failed.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// A link could not be pinned.
    #[error("pinning the link of {name} at {path}: {source}")]
    PinLink {
        /// Program name.
        name: &'static str,
        /// Pin path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: aya::pin::PinError,
    },
    /// A program's link is not a bpf_link (the kernel lacks BPF_LINK_CREATE for cgroups, < 5.7),
    /// so it cannot be pinned.
    #[error("program {name}: its attachment cannot be pinned: {source}")]
    LinkType {
        /// Program name.
        name: &'static str,
        /// Cause.
        #[source]
        source: aya::programs::links::LinkError,
    },
    /// A program could not be loaded or attached.
    #[error("program {name}: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// Cause.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map is missing or has the wrong type.
    #[error("map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Cause.
        #[source]
        source: MapError,
    },
    /// Moving or removing an earlier layout's pinned conntrack failed.
    #[error("migrating the pinned conntrack of an earlier agent at {path}: {source}")]
    Legacy {
        /// The pin.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A map the object must define is absent.
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    /// The cgroup directory cannot be opened.
    #[error("opening cgroup {path}: {source}")]
    Cgroup {
        /// Directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Map capacities (entries); zero keeps the object's default.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Capacity of the conntrack map.
    pub conntrack_entries: u32,
    /// Capacity of the policy trie (both slots).
    pub policy_entries: u32,
    /// Capacity of the cgroup map (both slots): local pods' containers.
    pub cgroup_entries: u32,
    /// Capacity of each address trie, IPv4 and IPv6 (both slots): pod, Service and node
    /// addresses plus named CIDRs.
    pub address_entries: u32,
    /// bpffs directory to pin maps and links under (`run` passes `--bpffs`, default
    /// [`super::pin::DEFAULT_DIR`]); `None` (`--no-pin`): nothing is pinned and dropping the
    /// [`Datapath`] detaches everything.
    pub pin_dir: Option<PathBuf>,
}

impl LoadOptions {
    /// The capacities the maps are created with (zero: the object's default).
    pub fn capacities(&self) -> Capacities {
        let or = |v: u32, d: u32| if v > 0 { v } else { d };
        Capacities {
            cgroups: or(self.cgroup_entries, capacity::CGROUPS),
            ipv4: or(self.address_entries, capacity::IPV4),
            ipv6: or(self.address_entries, capacity::IPV6),
            policy: or(self.policy_entries, capacity::POLICY),
            modes: capacity::MODES,
        }
    }
}

/// Entries each state map can hold (both slots together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    /// CGROUPS.
    pub cgroups: u32,
    /// IPV4.
    pub ipv4: u32,
    /// IPV6.
    pub ipv6: u32,
    /// POLICY.
    pub policy: u32,
    /// MODES.
    pub modes: u32,
}

/// The compiled-state maps, written by the [`crate::datapath::writer::MapWriter`].
pub struct StateMaps {
    /// Active slot and default modes.
    pub settings: Array<MapData, u32>,
    /// What the maps below were created to hold.
    pub capacities: Capacities,
    /// Local pods by cgroup.
    pub cgroups: HashMap<MapData, CgroupKey, Identity>,
    /// IPv4 identities.
    pub ipv4: LpmTrie<MapData, IpV4Key, Identity>,
    /// IPv6 identities.
    pub ipv6: LpmTrie<MapData, IpV6Key, Identity>,
    /// Policy.
    pub policy: LpmTrie<MapData, PolicyKey, PolicyValue>,
    /// Modes.
    pub modes: HashMap<MapData, ModeKey, u32>,
}

/// The maps the event reader and metrics read.
pub struct EventMaps {
    /// Violation events.
    pub events: RingBuf<MapData>,
    /// Per-flow folding state.
    pub fold: HashMap<MapData, FoldKey, FoldValue>,
    /// Per-CPU counters.
    pub counters: PerCpuArray<MapData, u64>,
    /// Connection tracking (for fill ratio and tests).
    pub conntrack: HashMap<MapData, CtKey, CtValue>,
}

/// Every map of the object, all pinned under `maps/` when pinning. `SOCKETS` repeats `CONNTRACK`
/// (a socket's cached verdict), so the two are adopted, or started afresh, together.
const ALL_MAPS: [&str; 11] = [
    maps::SETTINGS,
    maps::CGROUPS,
    maps::IPV4,
    maps::IPV6,
    maps::POLICY,
    maps::MODES,
    maps::CONNTRACK,
    maps::SOCKETS,
    maps::FOLD,
    maps::EVENTS,
    maps::COUNTERS,
];

/// Loaded and attached programs. Dropping it detaches them, unless they were pinned.
pub struct Datapath {
    ebpf: Ebpf,
    cgroup_root: PathBuf,
    pin: Option<PinDir>,
    adopted: bool,
    links: Vec<PinnedLink>,
    replaced: Vec<PathBuf>,
    generation: Option<String>,
    /// An earlier layout's conntrack being migrated ([`legacy`]): copied again and removed once
    /// its programs are detached.
    legacy: Option<PathBuf>,
}

macro_rules! take {
    ($ebpf:expr, $name:expr) => {{
        let m = $ebpf.take_map($name).ok_or(LoadError::MissingMap($name))?;
        m.try_into().map_err(|source| LoadError::Map {
            name: $name,
            source,
        })?
    }};
}

impl Datapath {
    /// Loads the object into the kernel (maps and programs), without attaching.
    pub fn load(opts: &LoadOptions) -> Result<(Self, StateMaps, EventMaps), LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        let mut loader = EbpfLoader::new();
        let mut caps = opts.capacities();
        let mut conntrack = if opts.conntrack_entries > 0 {
            opts.conntrack_entries
        } else {
            capacity::CONNTRACK
        };
        let pin = opts.pin_dir.as_ref().map(PinDir::new);
        let mut adopted = false;
        let mut legacy = None;
        if let Some(p) = &pin {
            p.prepare()?;
            adopted = p.has_maps();
            legacy = legacy::set_aside(p)?;
            for name in ALL_MAPS {
                loader.map_pin_path(name, p.map(name));
            }
            keep_pinned_sizes(p, &mut caps, &mut conntrack);
            if let Some((_, size)) = &legacy
                && !p.map(maps::CONNTRACK).exists()
            {
                conntrack = *size;
            }
        }
        loader.map_max_entries(maps::CONNTRACK, conntrack);
        loader.map_max_entries(maps::POLICY, caps.policy);
        loader.map_max_entries(maps::CGROUPS, caps.cgroups);
        loader.map_max_entries(maps::IPV4, caps.ipv4);
        loader.map_max_entries(maps::IPV6, caps.ipv6);
        let mut ebpf = loader.load(OBJECT).map_err(|e| match e {
            EbpfError::MapError(MapError::IncompatiblePinnedMap {
                name,
                property,
                expected,
                actual,
            }) => LoadError::PinnedMapIncompatible {
                name,
                property,
                expected,
                actual,
            },
            e => LoadError::Load(e),
        })?;
        load_programs(&mut ebpf)?;
        let state = StateMaps {
            settings: take!(ebpf, maps::SETTINGS),
            capacities: caps,
            cgroups: take!(ebpf, maps::CGROUPS),
            ipv4: take!(ebpf, maps::IPV4),
            ipv6: take!(ebpf, maps::IPV6),
            policy: take!(ebpf, maps::POLICY),
            modes: take!(ebpf, maps::MODES),
        };
        let mut events = EventMaps {
            events: take!(ebpf, maps::EVENTS),
            fold: take!(ebpf, maps::FOLD),
            counters: take!(ebpf, maps::COUNTERS),
            conntrack: take!(ebpf, maps::CONNTRACK),
        };
        let legacy = match legacy {
            Some((aside, _)) => {
                let m = legacy::migrate(&aside, &mut events.conntrack)?;
                info!(
                    copied = m.copied,
                    present = m.present,
                    failed = m.failed,
                    "conntrack of the earlier layout migrated"
                );
                Some(aside)
            }
            None => None,
        };
        let datapath = Self {
            ebpf,
            cgroup_root: PathBuf::new(),
            pin,
            adopted,
            links: Vec::new(),
            replaced: Vec::new(),
            generation: None,
            legacy,
        };
        Ok((datapath, state, events))
    }

    /// Attaches every program at `cgroup_root`, which covers every cgroup below it.
    ///
    /// When pinning, each new link is pinned as `links/<program>@<generation>` and only once all
    /// of them are attached are the links of earlier generations unpinned (detached): cgroup
    /// programs are multi-attached, so during that overlap old and new programs both run, against
    /// the same pinned maps. A crash at any step leaves at least one complete generation attached;
    /// the next start removes every generation but its own.
    pub fn attach(&mut self, cgroup_root: &Path) -> Result<(), LoadError> {
        let dir = File::open(cgroup_root).map_err(|source| LoadError::Cgroup {
            path: cgroup_root.to_owned(),
            source,
        })?;
        let old = match &self.pin {
            Some(p) => p.link_pins()?,
            None => Vec::new(),
        };
        let generation = pin::generation();
        let mut fd_links: Vec<(&'static str, FdLink)> = Vec::new();
        for (name, ty) in [
            (programs::EGRESS, CgroupSkbAttachType::Egress),
            (programs::INGRESS, CgroupSkbAttachType::Ingress),
        ] {
            let prog: &mut CgroupSkb = program(&mut self.ebpf, name)?;
            let id = prog
                .attach(&dir, ty, CgroupAttachMode::Single)
                .map_err(|source| LoadError::Program { name, source })?;
            if self.pin.is_some() {
                fd_links.push((name, fd_link(name, prog.take_link(id))?));
            }
        }
        for name in [programs::CONNECT4, programs::CONNECT6] {
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            let id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(|source| LoadError::Program { name, source })?;
            if self.pin.is_some() {
                fd_links.push((name, fd_link(name, prog.take_link(id))?));
            }
        }
        self.cgroup_root = cgroup_root.to_owned();
        if let Some(p) = &self.pin {
            for (name, fd) in fd_links {
                // bpffs refuses names with a dot.
                let path = p.links().join(format!("{name}@{generation}"));
                let pinned = fd.pin(&path).map_err(|source| LoadError::PinLink {
                    name,
                    path: path.clone(),
                    source,
                })?;
                self.links.push(pinned);
            }
            // Every program of this generation is attached and pinned: the older ones can go.
            self.replaced = pin::unpin_links(&old)?;
            if let Some(aside) = self.legacy.take() {
                let m = legacy::finish(&aside, &p.map(maps::CONNTRACK))?;
                info!(
                    copied = m.copied,
                    present = m.present,
                    failed = m.failed,
                    "earlier layout's conntrack: entries tracked during the hand-over copied, map unpinned"
                );
            }
            info!(
                pin_dir = %p.root().display(),
                generation,
                adopted_maps = self.adopted,
                replaced_links = self.replaced.len(),
                "links pinned; earlier generations detached"
            );
            self.generation = Some(generation);
        }
        Ok(())
    }

    /// Whether the maps were adopted from an earlier agent's pins (rather than created empty).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Whether state is pinned (then dropping the datapath leaves enforcement in place).
    pub fn pinned(&self) -> bool {
        self.pin.is_some()
    }

    /// The generation tag of this agent's pinned links (`None` when not pinned or not attached).
    pub fn generation(&self) -> Option<&str> {
        self.generation.as_deref()
    }

    /// The pin directory, when pinning.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin.as_ref().map(PinDir::root)
    }

    /// Link pins of earlier generations that [`Datapath::attach`] removed.
    pub fn replaced_links(&self) -> &[PathBuf] {
        &self.replaced
    }

    /// The loaded object.
    pub(crate) fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The cgroup the programs are attached at.
    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }
}

/// A pinned map keeps the size it was created with: adopting it is the only way to keep
/// enforcing without a gap, so its size wins over the flag, loudly.
fn keep_pinned_sizes(p: &PinDir, caps: &mut Capacities, conntrack: &mut u32) {
    for (name, configured, flag) in [
        (maps::CGROUPS, &mut caps.cgroups, "--cgroup-entries"),
        (maps::IPV4, &mut caps.ipv4, "--address-entries"),
        (maps::IPV6, &mut caps.ipv6, "--address-entries"),
        (maps::POLICY, &mut caps.policy, "--policy-entries"),
        (maps::CONNTRACK, conntrack, "--conntrack-entries"),
    ] {
        if let Ok(info) = MapInfo::from_pin(p.map(name)) {
            let pinned = info.max_entries();
            if pinned != *configured {
                warn!(
                    map = name,
                    pinned,
                    configured = *configured,
                    flag,
                    "the pinned map keeps its size; {flag} takes effect only after `firewall-agent cleanup` (which stops enforcement until the next start)"
                );
                *configured = pinned;
            }
        }
    }
}

fn load_programs(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    for name in [programs::EGRESS, programs::INGRESS] {
        let prog: &mut CgroupSkb = program(ebpf, name)?;
        prog.load()
            .map_err(|source| LoadError::Program { name, source })?;
    }
    for name in [programs::CONNECT4, programs::CONNECT6] {
        let prog: &mut CgroupSockAddr = program(ebpf, name)?;
        prog.load()
            .map_err(|source| LoadError::Program { name, source })?;
    }
    Ok(())
}

/// The attachment `link` as a bpf_link, which can be pinned.
fn fd_link<L>(
    name: &'static str,
    link: Result<L, aya::programs::ProgramError>,
) -> Result<FdLink, LoadError>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    let link = link.map_err(|source| LoadError::Program { name, source })?;
    FdLink::try_from(link).map_err(|source| LoadError::LinkType { name, source })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(LoadError::Program {
        name,
        source: aya::programs::ProgramError::UnexpectedProgramType,
    })?;
    prog.try_into()
        .map_err(|source| LoadError::Program { name, source })
}
