//! Per-CPU counters, one per verdict and drop reason (docs/design.md#counters: every drop reason
//! is counted).

/// Defines [`Counter`] from one list: its variants in map order, [`Counter::ALL`],
/// [`Counter::name`] and [`COUNTERS_LEN`].
macro_rules! counters {
    ($($(#[$meta:meta])* $variant:ident => $name:literal,)+) => {
        /// A counter of the `COUNTERS` map; the discriminant is its index.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $($(#[$meta])* $variant,)+
        }

        /// Number of entries in the counters map.
        pub const COUNTERS_LEN: u32 = Counter::ALL.len() as u32;

        impl Counter {
            /// Every counter, in map order.
            pub const ALL: [Counter; [$($name),+].len()] = [$(Counter::$variant,)+];

            /// Stable snake_case name (metric label values).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)+
                }
            }
        }
    };
}

counters! {
    /// Packets of a socket outside every pod cgroup (host processes): passed untouched.
    NotPod => "not_pod",
    /// Passed because a conntrack entry matched (later packet or reply).
    ConntrackHit => "conntrack_hit",
    /// Passed: both ends in one namespace.
    SameNamespace => "same_namespace",
    /// Passed: DNS to the cluster DNS Service.
    Dns => "dns",
    /// Passed: ingress from world or host (not restricted in v1alpha1), or loopback.
    Unrestricted => "unrestricted",
    /// New connection allowed by policy.
    PolicyAllow => "policy_allow",
    /// New connection denied by policy in monitor mode (logged, passed).
    PolicyAudit => "policy_audit",
    /// New connection denied by policy in enforce mode (dropped).
    PolicyDrop => "policy_drop",
    /// Denied by policy in a namespace whose mode is `off` (passed, not logged).
    PolicyOff => "policy_off",
    /// Dropped: a non-first IP fragment whose flow is unknown, in enforce mode.
    FragmentDrop => "fragment_drop",
    /// Passed: a non-first IP fragment whose flow is unknown, in monitor/off mode.
    FragmentPass => "fragment_pass",
    /// Packet too short or malformed to parse; dropped in enforce mode, passed otherwise.
    Malformed => "malformed",
    /// Events lost because the ring buffer was full (still counted in the fold totals).
    EventsLost => "events_lost",
    /// Events folded into an earlier line instead of being sent.
    EventsFolded => "events_folded",
    /// Events sent to user space.
    EventsSent => "events_sent",
    /// Conntrack insertions that failed.
    ConntrackFull => "conntrack_full",
    /// TCP connect() calls refused at the syscall (enforce).
    ConnectDenied => "connect_denied",
    /// Packets of a pod cgroup the agent has not discovered yet (a container that just started or
    /// restarted), identified by the pod's own address instead.
    ByAddress => "by_address",
    /// Violation events whose flow found no room in the fold map: sent one by one, unfolded
    /// (so still counted exactly, or counted as lost when the ring buffer is full too).
    FoldFull => "fold_full",
    /// Unfolded violation events (see `FoldFull`) the ring buffer had no room for: the only
    /// violations whose count appears in no line; reported in `events_lost` lines instead.
    EventsLostUnfolded => "events_lost_unfolded",
    /// Passed: ICMPv6 neighbour or router discovery, redirect or MLD (the link's own control
    /// traffic; never judged).
    IcmpNeighbor => "icmp_neighbor",
    /// Dropped: an ICMP message that is no echo request and that no tracked flow vouches for
    /// (an unsolicited echo reply or error, a timestamp request, ...), across namespaces, in
    /// enforce mode.
    IcmpUnsolicitedDrop => "icmp_unsolicited_drop",
    /// Passed: such an ICMP message across namespaces in monitor/off mode (never judged or logged).
    IcmpUnsolicitedPass => "icmp_unsolicited_pass",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_numbered_in_list_order() {
        assert_eq!(COUNTERS_LEN, 23);
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        assert_eq!(Counter::EventsLostUnfolded.name(), "events_lost_unfolded");
        assert_eq!(Counter::IcmpUnsolicitedPass.name(), "icmp_unsolicited_pass");
    }
}
