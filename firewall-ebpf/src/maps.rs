//! Every map of the datapath, one definition each. Sizes are defaults: the agent resizes them from
//! its configuration before loading (`EbpfLoader::set_max_entries`).
use aya_ebpf::{
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use firewall_common::{
    CgroupKey, CtKey, CtValue, FoldKey, FoldValue, Identity, IpV4Key, IpV6Key, ModeKey, PolicyKey,
    PolicyValue, SETTINGS_LEN, SocketVerdict, capacity,
};

/// Active slot and per-slot default modes.
#[map(name = "SETTINGS")]
pub static SETTINGS: Array<u32> = Array::with_max_entries(SETTINGS_LEN, 0);

/// Local pods by cgroup id.
#[map(name = "CGROUPS")]
pub static CGROUPS: HashMap<CgroupKey, Identity> = HashMap::with_max_entries(capacity::CGROUPS, 0);

/// Remote ends by IPv4 prefix.
#[map(name = "IPV4")]
pub static IPV4: LpmTrie<IpV4Key, Identity> = LpmTrie::with_max_entries(capacity::IPV4, 0);

/// Remote ends by IPv6 prefix.
#[map(name = "IPV6")]
pub static IPV6: LpmTrie<IpV6Key, Identity> = LpmTrie::with_max_entries(capacity::IPV6, 0);

/// The compiled policy (see docs/design.md#policy-trie).
#[map(name = "POLICY")]
pub static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::with_max_entries(capacity::POLICY, 0);

/// Mode per namespace and slot.
#[map(name = "MODES")]
pub static MODES: HashMap<ModeKey, u32> = HashMap::with_max_entries(capacity::MODES, 0);

/// Connection tracking: only the first packet of a connection is checked.
#[map(name = "CONNTRACK")]
pub static CONNTRACK: LruHashMap<CtKey, CtValue> =
    LruHashMap::with_max_entries(capacity::CONNTRACK, 0);

/// Verdicts of established TCP sockets (see `sockets.rs`). Socket-local storage: an entry lives
/// and dies with its socket, so it needs no capacity and no eviction.
#[btf_map(name = "SOCKETS")]
pub static SOCKETS: SkStorage<SocketVerdict> = SkStorage::new();

/// Per-flow event folding state. A plain hash, not an LRU: an LRU would evict a flow's unreported
/// count silently; here a full map refuses the insert and the event goes out unfolded (counted).
/// User space deletes entries once they are idle and fully reported.
#[map(name = "FOLD")]
pub static FOLD: HashMap<FoldKey, FoldValue> = HashMap::with_max_entries(capacity::FOLD, 0);

/// Violation events to user space.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(capacity::EVENTS_BYTES, 0);

/// Per-CPU counters by `firewall_common::Counter`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(capacity::COUNTERS, 0);
