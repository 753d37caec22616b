//! Types shared by Bulkhead's eBPF programs and its agent.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel and user space read the same bytes, so a
//! field added on one side without the other is a compile error rather than a silent misread.
//!
//! All compiled state (identities, policy, modes) is written in one of two **slots**. The agent
//! fills the inactive slot completely, then flips [`SETTING_ACTIVE_SLOT`]; a packet reads the slot
//! once and uses it for every lookup, so it sees either the old policy or the new one, never a mix.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

pub mod bench;
mod counter;
mod exemption;
mod keys;
#[cfg(feature = "std")]
pub mod mountinfo;
mod vocabulary;

pub use counter::{COUNTERS_LEN, Counter};
pub use exemption::{
    DNS_PORT, Exemption, bulkhead_exemption, bulkhead_pair_exemption, destination_judges,
    exemption, is_dns, pair_exemption, replies_judged, standard_judges,
};
pub use keys::*;
pub use vocabulary::{EventVerdict, Hook, IpProto, Mode, PolicyVerdict, Side, UnknownValue};

/// Identity of addresses outside every namespace and every named CIDR.
pub const NS_WORLD: u32 = 0;
/// Identity of the node's own addresses and of hostNetwork pods.
pub const NS_HOST: u32 = 1;
/// First id given to a real Kubernetes namespace; ids below are reserved.
pub const NS_FIRST: u32 = 2;

/// Identity flag: this endpoint is a pod or cluster IP of the cluster DNS Service (DNS is exempt).
pub const IDENTITY_F_DNS: u32 = 1;
/// Identity flag: a standard policy (NetworkPolicy, ClusterNetworkPolicy) judges this endpoint's
/// ingress, so Bulkhead's own exemptions other than the host's do not shield it: the kernel
/// looks the policy up and the compiler has decided every case.
pub const IDENTITY_F_STD_INGRESS: u32 = 2;
/// Identity flag: as [`IDENTITY_F_STD_INGRESS`], for the endpoint's egress.
pub const IDENTITY_F_STD_EGRESS: u32 = 4;
/// Address flag (set on the IP-trie entries of Service cluster IPs, not on the identity): the
/// address is a cluster IP. `connect()` sees it before kube-proxy's DNAT, with the Service's
/// port; the packets after it carry the backend's address and the target port, which is the
/// port NetworkPolicy and ClusterNetworkPolicy rules name.
pub const IDENTITY_F_CLUSTER_IP: u32 = 8;

/// Index in [`maps::SETTINGS`] of the active slot (0 or 1).
pub const SETTING_ACTIVE_SLOT: u32 = 0;
/// Index in [`maps::SETTINGS`] of slot 0's default [`Mode`] (namespaces without an entry).
pub const SETTING_DEFAULT_MODE_SLOT0: u32 = 1;
/// Index in [`maps::SETTINGS`] of slot 1's default mode.
pub const SETTING_DEFAULT_MODE_SLOT1: u32 = 2;
/// Index in [`maps::SETTINGS`] of the flow log: 1 also records every allowed new connection
/// across namespaces or to the world (`--flow-log all`), 0 only violations.
pub const SETTING_FLOW_LOG: u32 = 3;
/// Number of u32 entries in [`maps::SETTINGS`].
pub const SETTINGS_LEN: u32 = 4;

/// Map names, shared so that the loader and the programs cannot drift apart.
pub mod maps {
    /// `Array<u32>`: active slot and per-slot default modes.
    pub const SETTINGS: &str = "SETTINGS";
    /// `HashMap<CgroupKey, Identity>`: local pods by cgroup v2 id.
    pub const CGROUPS: &str = "CGROUPS";
    /// `LpmTrie<IpV4Key, Identity>`: remote ends by IPv4 address.
    pub const IPV4: &str = "IPV4";
    /// `LpmTrie<IpV6Key, Identity>`: remote ends by IPv6 address.
    pub const IPV6: &str = "IPV6";
    /// `LpmTrie<PolicyKey, PolicyValue>`: the compiled policy.
    pub const POLICY: &str = "POLICY";
    /// `HashMap<ModeKey, u32>`: [`super::Mode`] per namespace.
    pub const MODES: &str = "MODES";
    /// `LruHashMap<CtKey, CtValue>`: connection tracking.
    pub const CONNTRACK: &str = "CONNTRACK";
    /// `HashMap<FoldKey, FoldValue>`: per-flow-per-second event folding. A plain hash, not an
    /// LRU: a full map refuses a new flow (its event goes out unfolded) instead of evicting
    /// another flow's unreported count.
    pub const FOLD: &str = "FOLD";
    /// `RingBuf`: violation events.
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<u64>`: counters indexed by [`super::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// `SkStorage<SocketVerdict>`: the verdict of an established TCP socket, so its packets
    /// skip parsing and conntrack (docs/design.md#connections).
    pub const SOCKETS: &str = "SOCKETS";
}

/// Names of the programs in the object file.
pub mod programs {
    /// cgroup_skb/egress.
    pub const EGRESS: &str = "bulkhead_egress";
    /// cgroup_skb/ingress.
    pub const INGRESS: &str = "bulkhead_ingress";
    /// cgroup/connect4.
    pub const CONNECT4: &str = "bulkhead_connect4";
    /// cgroup/connect6.
    pub const CONNECT6: &str = "bulkhead_connect6";
}

/// Default capacities; the agent can override each with `set_max_entries`.
pub mod capacity {
    /// Local pod cgroups × 2 slots.
    pub const CGROUPS: u32 = 65_536;
    /// Remote IPv4 prefixes × 2 slots.
    pub const IPV4: u32 = 131_072;
    /// Remote IPv6 prefixes × 2 slots.
    pub const IPV6: u32 = 131_072;
    /// Policy prefixes × 2 slots. A change needs room for the active slot's entries and the new
    /// ones; pod-level identities multiply the entries (stage 8 of the bench: 227,706 at 10,000
    /// pods with realistic selectors). An LPM trie allocates its entries as they are written, so
    /// unused capacity costs no memory.
    pub const POLICY: u32 = 1_048_576;
    /// Namespaces × 2 slots.
    pub const MODES: u32 = 16_384;
    /// Tracked connections.
    pub const CONNTRACK: u32 = 262_144;
    /// Flows folded at once.
    pub const FOLD: u32 = 65_536;
    /// Ring buffer bytes (power of two, multiple of the page size).
    pub const EVENTS_BYTES: u32 = 1 << 22;
    /// Counter slots: more than [`crate::COUNTERS_LEN`], so that a release adding a counter keeps
    /// the map's layout and still adopts the previous release's pinned map.
    pub const COUNTERS: u32 = 64;
    const _: () = assert!(crate::COUNTERS_LEN <= COUNTERS);
}

/// An endpoint's identity: the value of the cgroup map and the IP tries.
///
/// `id` is what the policy is keyed by (a namespace, or a namespace narrowed to the set of
/// Services that select the endpoint, or a named CIDR); `ns` is the namespace id used for the
/// same-namespace exemption, the mode lookup and the log.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// Policy identity.
    pub id: u32,
    /// Namespace id ([`NS_WORLD`], [`NS_HOST`] or >= [`NS_FIRST`]).
    pub ns: u32,
    /// `IDENTITY_F_*` bits.
    pub flags: u32,
}

/// Key of the cgroup map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupKey {
    /// cgroup v2 id (the inode number of the cgroup directory).
    pub cgroup_id: u64,
    /// Slot (0 or 1).
    pub slot: u32,
    /// Always zero.
    pub pad: u32,
}

/// Value of the policy trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyValue {
    /// A [`PolicyVerdict`].
    pub verdict: u8,
    /// Always zero.
    pub pad: [u8; 3],
    /// Index into the agent's table of deciding objects/rules (for the log's `policy`).
    pub rule: u32,
}

/// Key of the modes map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModeKey {
    /// Namespace id.
    pub ns: u32,
    /// Slot (0 or 1).
    pub slot: u32,
}

/// A packet's 5-tuple, and the key of a conntrack entry ([`crate::keys::ct_key`]). Addresses
/// are in network byte order; IPv4 uses word 0.
///
/// As a packet's tuple (`end` 0) the fields are in the packet's direction. As a key the two
/// endpoints are in canonical order (the lesser `(address, port)` first) and `end` says which of
/// them is the recording side's own pod: a packet and its reply then share one key, found in one
/// lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Source address (key: the first endpoint's).
    pub saddr: [u32; 4],
    /// Destination address (key: the second endpoint's).
    pub daddr: [u32; 4],
    /// Source port (ICMP: the echo id of a request).
    pub sport: u16,
    /// Destination port (ICMP: the echo id of a reply).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// In a key: [`crate::keys::CT_END_FIRST`] or [`crate::keys::CT_END_SECOND`], the endpoint
    /// whose side recorded the entry. 0 in a packet's tuple.
    pub end: u8,
    /// 4 or 6.
    pub family: u8,
    /// Always zero.
    pub pad: u8,
}

impl CtKey {
    /// The same connection seen from its other end.
    #[inline(always)]
    pub fn reversed(&self) -> CtKey {
        CtKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            ..*self
        }
    }
}

/// The datapath's memo on a synchronized TCP socket whose connection a side let through (a
/// conntrack hit): later packets of that socket pass on this alone. It names the connection it
/// was written for, because a socket outlives its connection (a `connect(AF_UNSPEC)` and a new
/// `connect()` reuse it), and the kernel's current view of the socket must still match it.
/// Ports host order, addresses network order, IPv4 in word 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketVerdict {
    /// The remote address of the connection.
    pub dst_ip: [u32; 4],
    /// The socket's local port.
    pub src_port: u16,
    /// The remote port.
    pub dst_port: u16,
    /// The [`Side`]s whose conntrack vouched for the connection, or-ed (their values are distinct
    /// bits).
    pub sides: u8,
    /// Always zero.
    pub pad: [u8; 3],
}

/// Connection tracking value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// Monotonic ns of the first packet; 0 for TCP, whose entries never expire on idle time, so
    /// that its first packet reads no clock.
    pub created_ns: u64,
    /// Monotonic ns of the last refresh (refreshed at most once a second); 0 for TCP.
    pub seen_ns: u64,
    /// The [`Side`] that let the connection through: egress when the entry's own end opened it,
    /// ingress when the other end did.
    pub side: u8,
    /// Always zero.
    pub pad: [u8; 7],
}

/// Idle time after which a non-TCP conntrack entry no longer lets packets pass without a lookup.
pub const CT_IDLE_NS: u64 = 60_000_000_000;
/// How long one log line folds the events of a flow.
pub const FOLD_WINDOW_NS: u64 = 1_000_000_000;

/// A flow for folding ([`ViolationEvent::fold_key`]): source port left out, so a storm of new
/// connections folds together.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FoldKey {
    /// cgroup id of the local end: events raised at connect() have no source address yet, so
    /// this is what keeps two pods' flows to one destination apart.
    pub cgroup_id: u64,
    /// Source address.
    pub saddr: [u32; 4],
    /// Destination address.
    pub daddr: [u32; 4],
    /// Destination port.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// The [`Side`] that decided.
    pub side: u8,
    /// An [`EventVerdict`].
    pub verdict: u8,
    /// 4 or 6.
    pub family: u8,
    /// Always zero.
    pub pad: [u8; 2],
}

/// Folding state of a flow. `total` only grows (atomic add), so user space, which remembers what
/// it has already printed, can always print the exact remainder: counts add up even when the ring
/// buffer was full or a window closed with no later event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FoldValue {
    /// Monotonic ns when this map entry was created (tells a recreated entry from an old one).
    pub created_ns: u64,
    /// Monotonic ns when the current window opened (an event was sent).
    pub window_ns: u64,
    /// Events seen for this flow since `created_ns`.
    pub total: u64,
}

/// What one side of a connection decided, as a [`ViolationEvent`] carries it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideRecord {
    /// [`PolicyValue::rule`] that decided this side.
    pub rule: u32,
    /// The side's namespace [`Mode`].
    pub mode: u8,
    /// 1 when this side denied (and is not `off`): it is one of the line's `sides`.
    pub denied: u8,
    /// Always zero.
    pub pad: [u8; 2],
}

/// One connection as one node judged it (a violation or, with the flow log, an allowed
/// connection), sent through the ring buffer when a flow's fold window opens. Where the node
/// judged both sides it is one record with both (docs/design.md#violation-log).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViolationEvent {
    /// Monotonic ns (bpf_ktime_get_ns).
    pub ts_ns: u64,
    /// cgroup id of the local end (the socket that raised it).
    pub cgroup_id: u64,
    /// [`FoldValue::created_ns`] of the flow's fold entry.
    pub fold_created_ns: u64,
    /// [`FoldValue::total`] after this event.
    pub fold_total: u64,
    /// Connection source address (network order; IPv4 in word 0).
    pub saddr: [u32; 4],
    /// Connection destination address.
    pub daddr: [u32; 4],
    /// Policy identity of the source.
    pub src_id: u32,
    /// Policy identity of the destination.
    pub dst_id: u32,
    /// Namespace id of the source.
    pub src_ns: u32,
    /// Namespace id of the destination.
    pub dst_ns: u32,
    /// [`PolicyValue::rule`] of the `side` that decided.
    pub rule: u32,
    /// The egress side (at the source), when this node judged it.
    pub egress: SideRecord,
    /// The ingress side (at the destination), when this node judged it.
    pub ingress: SideRecord,
    /// Source port; 0 when unknown (connect() before bind).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// The [`Side`] the line names: the side that dropped the connection, else the first side
    /// that denied (egress before ingress), else (allowed) the side that judged.
    pub side: u8,
    /// An [`EventVerdict`]: `Denied` iff the connection was dropped.
    pub verdict: u8,
    /// Slot of the policy that decided (the agent resolves `rule` in that slot's table).
    pub slot: u8,
    /// The [`Hook`] that raised it.
    pub hook: u8,
    /// 1 when the cgroup (local end) is the connection's source.
    pub local_is_src: u8,
    /// Always zero.
    pub pad: u8,
}

impl ViolationEvent {
    /// The flow this event is folded into. The kernel folds events by it and user space accounts
    /// its lines by it, so both take it from here.
    #[inline(always)]
    pub fn fold_key(&self) -> FoldKey {
        FoldKey {
            cgroup_id: self.cgroup_id,
            saddr: self.saddr,
            daddr: self.daddr,
            dport: self.dport,
            proto: self.proto,
            side: self.side,
            verdict: self.verdict,
            family: self.family,
            pad: [0; 2],
        }
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are repr(C) plain data with no padding-sensitive invariants.
    unsafe impl aya::Pod for Identity {}
    unsafe impl aya::Pod for CgroupKey {}
    unsafe impl aya::Pod for PolicyValue {}
    unsafe impl aya::Pod for ModeKey {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtValue {}
    unsafe impl aya::Pod for FoldKey {}
    unsafe impl aya::Pod for FoldValue {}
    unsafe impl aya::Pod for ViolationEvent {}
    unsafe impl aya::Pod for SideRecord {}
    unsafe impl aya::Pod for bench::PieceInput {}
}
