//! Types shared by Bulkhead's eBPF programs and its agent.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel and user space read the same bytes, so a
//! field added on one side without the other is a compile error rather than a silent misread.
//!
//! All compiled state (identities, policy, modes) is written in one of two **slots**. The agent
//! fills the inactive slot completely, then flips [`SETTING_ACTIVE_SLOT`]; a packet reads the slot
//! once and uses it for every lookup, so it sees either the old policy or the new one, never a mix.
#![no_std]

/// Identity of addresses outside every namespace and every named CIDR.
pub const NS_WORLD: u32 = 0;
/// Identity of the node's own addresses and of hostNetwork pods.
pub const NS_HOST: u32 = 1;
/// First id given to a real Kubernetes namespace; ids below are reserved.
pub const NS_FIRST: u32 = 2;

/// The side that decides: at the connection's source pod.
pub const SIDE_EGRESS: u8 = 1;
/// The side that decides: at the connection's destination pod.
pub const SIDE_INGRESS: u8 = 2;

/// Mode values in [`MODES`] and the default-mode settings (docs/design.md#modes).
pub const MODE_MONITOR: u32 = 1;
/// Denied flows are logged and dropped.
pub const MODE_ENFORCE: u32 = 2;
/// Denied flows pass without a log line.
pub const MODE_OFF: u32 = 3;

/// Policy verdicts stored in [`PolicyValue::verdict`].
pub const VERDICT_ALLOW: u8 = 1;
/// The flow is forbidden on this side.
pub const VERDICT_DENY: u8 = 2;

/// Event verdicts ([`ViolationEvent::verdict`]): monitor mode, would have been dropped.
pub const EVENT_AUDIT: u8 = 1;
/// Enforce mode: dropped.
pub const EVENT_DENIED: u8 = 2;

/// Where in the kernel an event was raised ([`ViolationEvent::hook`]).
pub const HOOK_SKB_EGRESS: u8 = 1;
/// cgroup_skb ingress (delivery to the destination pod's socket).
pub const HOOK_SKB_INGRESS: u8 = 2;
/// cgroup/connect4|6: the TCP connect() syscall, before any packet exists.
pub const HOOK_CONNECT: u8 = 3;

/// Identity flag: this endpoint is a pod or cluster IP of the cluster DNS Service (DNS is exempt).
pub const IDENTITY_F_DNS: u32 = 1;

/// Index in [`SETTINGS`] of the active slot (0 or 1).
pub const SETTING_ACTIVE_SLOT: u32 = 0;
/// Index in [`SETTINGS`] of slot 0's default mode (used for namespaces without an entry).
pub const SETTING_DEFAULT_MODE_SLOT0: u32 = 1;
/// Index in [`SETTINGS`] of slot 1's default mode.
pub const SETTING_DEFAULT_MODE_SLOT1: u32 = 2;
/// Number of u32 entries in [`SETTINGS`].
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
    /// `HashMap<ModeKey, u32>`: mode per namespace.
    pub const MODES: &str = "MODES";
    /// `LruHashMap<CtKey, CtValue>`: connection tracking.
    pub const CONNTRACK: &str = "CONNTRACK";
    /// `LruHashMap<FoldKey, FoldValue>`: per-flow-per-second event folding.
    pub const FOLD: &str = "FOLD";
    /// `RingBuf`: violation events.
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<u64>`: counters indexed by [`super::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
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
    /// Policy prefixes × 2 slots.
    pub const POLICY: u32 = 262_144;
    /// Namespaces × 2 slots.
    pub const MODES: u32 = 16_384;
    /// Tracked connections.
    pub const CONNTRACK: u32 = 262_144;
    /// Flows folded at once.
    pub const FOLD: u32 = 65_536;
    /// Ring buffer bytes (power of two, multiple of the page size).
    pub const EVENTS_BYTES: u32 = 1 << 22;
}

/// Per-CPU counters, one per verdict and drop reason (docs/design.md#counters: every drop reason counted).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets of a socket outside every pod cgroup (host processes): passed untouched.
    NotPod = 0,
    /// Passed because a conntrack entry matched (later packet or reply).
    ConntrackHit = 1,
    /// Passed: both ends in one namespace.
    SameNamespace = 2,
    /// Passed: DNS to the cluster DNS Service.
    Dns = 3,
    /// Passed: ingress from world or host (not restricted in v1alpha1), or loopback.
    Unrestricted = 4,
    /// New connection allowed by policy.
    PolicyAllow = 5,
    /// New connection denied by policy in monitor mode (logged, passed).
    PolicyAudit = 6,
    /// New connection denied by policy in enforce mode (dropped).
    PolicyDrop = 7,
    /// Denied by policy in a namespace whose mode is `off` (passed, not logged).
    PolicyOff = 8,
    /// Dropped: a non-first IP fragment whose flow is unknown, in enforce mode.
    FragmentDrop = 9,
    /// Passed: a non-first IP fragment whose flow is unknown, in monitor/off mode.
    FragmentPass = 10,
    /// Packet too short or malformed to parse; dropped in enforce mode, passed otherwise.
    Malformed = 11,
    /// Events lost because the ring buffer was full (still counted in the fold totals).
    EventsLost = 12,
    /// Events folded into an earlier line instead of being sent.
    EventsFolded = 13,
    /// Events sent to user space.
    EventsSent = 14,
    /// Conntrack insertions that failed.
    ConntrackFull = 15,
    /// TCP connect() calls refused at the syscall (enforce).
    ConnectDenied = 16,
    /// Packets of a pod cgroup the agent has not discovered yet (a container that just started or
    /// restarted), identified by the pod's own address instead.
    ByAddress = 17,
    /// Violation events whose flow found no room in the fold map: sent one by one, unfolded
    /// (so still counted exactly, or counted as lost when the ring buffer is full too).
    FoldFull = 18,
    /// Unfolded violation events (see `FoldFull`) the ring buffer had no room for: the only
    /// violations whose count appears in no line; reported in `events_lost` lines instead.
    EventsLostUnfolded = 19,
}

/// Number of entries in the counters map.
pub const COUNTERS_LEN: u32 = 20;

impl Counter {
    /// Every counter, in map order.
    pub const ALL: [Counter; COUNTERS_LEN as usize] = [
        Counter::NotPod,
        Counter::ConntrackHit,
        Counter::SameNamespace,
        Counter::Dns,
        Counter::Unrestricted,
        Counter::PolicyAllow,
        Counter::PolicyAudit,
        Counter::PolicyDrop,
        Counter::PolicyOff,
        Counter::FragmentDrop,
        Counter::FragmentPass,
        Counter::Malformed,
        Counter::EventsLost,
        Counter::EventsFolded,
        Counter::EventsSent,
        Counter::ConntrackFull,
        Counter::ConnectDenied,
        Counter::ByAddress,
        Counter::FoldFull,
        Counter::EventsLostUnfolded,
    ];

    /// Stable snake_case name (metric label values).
    pub const fn name(self) -> &'static str {
        match self {
            Counter::NotPod => "not_pod",
            Counter::ConntrackHit => "conntrack_hit",
            Counter::SameNamespace => "same_namespace",
            Counter::Dns => "dns",
            Counter::Unrestricted => "unrestricted",
            Counter::PolicyAllow => "policy_allow",
            Counter::PolicyAudit => "policy_audit",
            Counter::PolicyDrop => "policy_drop",
            Counter::PolicyOff => "policy_off",
            Counter::FragmentDrop => "fragment_drop",
            Counter::FragmentPass => "fragment_pass",
            Counter::Malformed => "malformed",
            Counter::EventsLost => "events_lost",
            Counter::EventsFolded => "events_folded",
            Counter::EventsSent => "events_sent",
            Counter::ConntrackFull => "conntrack_full",
            Counter::ConnectDenied => "connect_denied",
            Counter::ByAddress => "by_address",
            Counter::FoldFull => "fold_full",
            Counter::EventsLostUnfolded => "events_lost_unfolded",
        }
    }
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

/// LPM data of the IPv4 trie: `[slot, a, b, c, d]`; the prefix length counts the slot's 8 bits.
pub type IpV4Key = [u8; 5];
/// LPM data of the IPv6 trie: `[slot, 16 address bytes]`.
pub type IpV6Key = [u8; 17];

/// Bits of a policy LPM key before the peer id: slot, side, local id.
pub const POLICY_PREFIX_LOCAL: u32 = 48;
/// Bits up to and including the peer id.
pub const POLICY_PREFIX_PEER: u32 = 80;
/// Bits up to and including the protocol.
pub const POLICY_PREFIX_PROTO: u32 = 88;
/// Bits of a complete key (with the 16-bit port).
pub const POLICY_PREFIX_FULL: u32 = 104;

/// LPM data of the policy trie: `[slot, side, local id (BE), peer id (BE), proto, port (BE)]`.
///
/// Longest prefix wins: an entry for (local) is that side's default for every peer, (local, peer)
/// overrides it for one peer, (…, proto) for one protocol, and (…, proto, port/len) for a port
/// range expressed as prefixes. The compiler resolves rule order, so the kernel never loops.
pub type PolicyKey = [u8; 13];

/// Build a policy key's data. `const` so both sides compute it identically.
#[inline(always)]
pub const fn policy_key(
    slot: u8,
    side: u8,
    local: u32,
    peer: u32,
    proto: u8,
    port: u16,
) -> PolicyKey {
    let l = local.to_be_bytes();
    let p = peer.to_be_bytes();
    let o = port.to_be_bytes();
    [
        slot, side, l[0], l[1], l[2], l[3], p[0], p[1], p[2], p[3], proto, o[0], o[1],
    ]
}

/// Value of the policy trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyValue {
    /// [`VERDICT_ALLOW`] or [`VERDICT_DENY`].
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

/// A connection as seen on one side. Addresses are in network byte order; IPv4 uses word 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Source address of the packet that opened the connection.
    pub saddr: [u32; 4],
    /// Destination address.
    pub daddr: [u32; 4],
    /// Source port (ICMP: echo id).
    pub sport: u16,
    /// Destination port (ICMP: 0).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`SIDE_EGRESS`] or [`SIDE_INGRESS`]: each side tracks its own verdict.
    pub side: u8,
    /// 4 or 6.
    pub family: u8,
    /// Always zero.
    pub pad: u8,
}

/// Connection tracking value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// Monotonic ns of the first packet.
    pub created_ns: u64,
    /// Monotonic ns of the last refresh (refreshed at most once a second).
    pub seen_ns: u64,
}

/// Idle time after which a non-TCP conntrack entry no longer lets packets pass without a lookup.
pub const CT_IDLE_NS: u64 = 60_000_000_000;
/// How long one log line folds the events of a flow.
pub const FOLD_WINDOW_NS: u64 = 1_000_000_000;

/// A flow for folding: source port left out, so a storm of new connections folds together.
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
    /// Side that decided.
    pub side: u8,
    /// [`EVENT_AUDIT`] or [`EVENT_DENIED`].
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

/// A violation, sent through the ring buffer when a flow's fold window opens.
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
    /// [`PolicyValue::rule`] that decided.
    pub rule: u32,
    /// Source port; 0 when unknown (connect() before bind).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// Side that decided.
    pub side: u8,
    /// [`EVENT_AUDIT`] or [`EVENT_DENIED`].
    pub verdict: u8,
    /// Slot of the policy that decided (the agent resolves `rule` in that slot's table).
    pub slot: u8,
    /// `HOOK_*`.
    pub hook: u8,
    /// 1 when the cgroup (local end) is the connection's source.
    pub local_is_src: u8,
    /// Always zero.
    pub pad: u8,
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
}
