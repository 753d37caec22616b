//! Bench-only: what the `bench-floor` object's piece programs look up (issue 14's per-piece
//! costs, `cargo xtask bench --only paths`). Never used by the agent or the datapath.
use crate::CtKey;

/// The values one SYN's lookups are keyed by, written by `pathcost` into the piece programs'
/// one-entry input array before it times them on that SYN's frame: the cgroup id and slot the
/// datapath would read, the SYN's tuple as `packet::parse` returns it, and the identities its
/// earlier lookups would have found. Each piece builds its key from these with the datapath's
/// own key functions, so a piece looks up exactly the key the SYN's path does; reading this
/// array is itself timed (the `input` piece) and subtracted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PieceInput {
    /// The local pod's cgroup id (`bpf_skb_cgroup_id` of the test run's socket).
    pub cgroup_id: u64,
    /// The packet's tuple (addresses network order, ports host order, `end` 0).
    pub tuple: CtKey,
    /// The active slot.
    pub slot: u32,
    /// The [`crate::Side`] judged (policy) or recorded (conntrack); also picks the peer
    /// address (egress: the destination, ingress: the source).
    pub side: u32,
    /// Policy: the judging side's identity.
    pub local: u32,
    /// Policy: the other end's identity.
    pub peer: u32,
    /// Modes: the namespace looked up.
    pub ns: u32,
    /// Always zero.
    pub pad: u32,
}
