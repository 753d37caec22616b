//! Loads the embedded eBPF object and attaches its programs at a cgroup v2 directory.
//!
//! Programs are attached through bpf_link. Cgroup links always coexist with other programs on the
//! same cgroup (the kernel refuses attach flags on them, hence `CgroupAttachMode::Single`, which
//! passes none), so systemd's or a CNI's programs keep running. Dropping [`Datapath`] closes the links, which
//! detaches everything: that is the clean shutdown when no state is pinned.
use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr},
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
    Load(#[from] aya::EbpfError),
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
        source: aya::maps::MapError,
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

/// Loaded and attached programs. Dropping it detaches them.
pub struct Datapath {
    ebpf: Ebpf,
    cgroup_root: PathBuf,
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
        if opts.conntrack_entries > 0 {
            loader.map_max_entries(maps::CONNTRACK, opts.conntrack_entries);
        }
        let caps = opts.capacities();
        loader.map_max_entries(maps::POLICY, caps.policy);
        loader.map_max_entries(maps::CGROUPS, caps.cgroups);
        loader.map_max_entries(maps::IPV4, caps.ipv4);
        loader.map_max_entries(maps::IPV6, caps.ipv6);
        let mut ebpf = loader.load(OBJECT)?;
        for name in [programs::EGRESS, programs::INGRESS] {
            let prog: &mut CgroupSkb = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|source| LoadError::Program { name, source })?;
        }
        for name in [programs::CONNECT4, programs::CONNECT6] {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|source| LoadError::Program { name, source })?;
        }
        let state = StateMaps {
            settings: take!(ebpf, maps::SETTINGS),
            capacities: caps,
            cgroups: take!(ebpf, maps::CGROUPS),
            ipv4: take!(ebpf, maps::IPV4),
            ipv6: take!(ebpf, maps::IPV6),
            policy: take!(ebpf, maps::POLICY),
            modes: take!(ebpf, maps::MODES),
        };
        let events = EventMaps {
            events: take!(ebpf, maps::EVENTS),
            fold: take!(ebpf, maps::FOLD),
            counters: take!(ebpf, maps::COUNTERS),
            conntrack: take!(ebpf, maps::CONNTRACK),
        };
        Ok((
            Self {
                ebpf,
                cgroup_root: PathBuf::new(),
            },
            state,
            events,
        ))
    }

    /// Attaches every program at `cgroup_root`, which covers every cgroup below it.
    pub fn attach(&mut self, cgroup_root: &Path) -> Result<(), LoadError> {
        let dir = File::open(cgroup_root).map_err(|source| LoadError::Cgroup {
            path: cgroup_root.to_owned(),
            source,
        })?;
        for (name, ty) in [
            (programs::EGRESS, CgroupSkbAttachType::Egress),
            (programs::INGRESS, CgroupSkbAttachType::Ingress),
        ] {
            let prog: &mut CgroupSkb = program(&mut self.ebpf, name)?;
            prog.attach(&dir, ty, CgroupAttachMode::Single)
                .map_err(|source| LoadError::Program { name, source })?;
        }
        for name in [programs::CONNECT4, programs::CONNECT6] {
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            prog.attach(&dir, CgroupAttachMode::Single)
                .map_err(|source| LoadError::Program { name, source })?;
        }
        self.cgroup_root = cgroup_root.to_owned();
        Ok(())
    }

    /// The loaded object.
    pub(crate) fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The cgroup the programs are attached at.
    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    /// Kernel program ids (for `kernel.bpf_stats_enabled` accounting in benchmarks).
    pub fn program_ids(&self) -> Vec<(String, u32)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| p.info().ok().map(|i| (name.to_owned(), i.id())))
            .collect()
    }
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
