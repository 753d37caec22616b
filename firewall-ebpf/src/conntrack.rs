//! Connection tracking: each side records the connections it let through, so later packets and
//! replies pass without a policy lookup (docs/design.md#connections).
use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use firewall_common::{CT_IDLE_NS, CtKey, CtValue, IpProto, Side};

use crate::{maps::CONNTRACK, packet::Tuple};

/// Refresh an entry's `seen_ns` at most this often (saves a write per packet).
const REFRESH_NS: u64 = 1_000_000_000;

/// The time of this program run, read once and only when needed: a TCP conntrack hit needs no
/// clock (its entries never expire), and on this machine kind a clock read is a measurable part
/// of an established packet's cost (../shared/notes/datapath-cost.md). The coarse clock (the
/// last tick's CLOCK_MONOTONIC, no clocksource read) is plenty for a 60 s idle timeout and a 1 s
/// refresh, and only the datapath reads conntrack's timestamps.
#[derive(Default)]
pub struct Clock(u64);

impl Clock {
    /// A clock not read yet.
    #[inline(always)]
    pub fn new() -> Self {
        Clock(0)
    }

    /// Monotonic ns of this program run.
    #[inline(always)]
    pub fn now(&mut self) -> u64 {
        if self.0 == 0 {
            // SAFETY: helper without preconditions.
            self.0 = unsafe { bpf_ktime_get_coarse_ns() };
        }
        self.0
    }
}

#[inline(always)]
fn key(side: Side, t: &Tuple) -> CtKey {
    CtKey {
        side: side as u8,
        ..*t
    }
}

/// Is there a live entry for `t` on `side`? Refreshes it.
#[inline(always)]
pub fn lookup(side: Side, t: &Tuple, clock: &mut Clock) -> bool {
    let Some(v) = CONNTRACK.get_ptr_mut(&key(side, t)) else {
        return false;
    };
    // TCP entries live until evicted (a new SYN is always re-checked), and nothing reads their
    // `seen_ns`: no clock, no write.
    if t.proto == IpProto::Tcp as u8 {
        return true;
    }
    // SAFETY: the pointer comes from a successful map lookup and is valid for this program run.
    let v = unsafe { &mut *v };
    let now = clock.now();
    // Saturating: an entry written by the fine clock (an agent before this one, adopted) can be
    // up to a tick ahead of the coarse one, and is fresh, not 2^64 ns old.
    let idle = now.saturating_sub(v.seen_ns);
    if idle > CT_IDLE_NS {
        return false;
    }
    if idle > REFRESH_NS {
        v.seen_ns = now;
    }
    true
}

/// Is `t` a later packet of, or a reply to, a connection some side let through?
#[inline(always)]
pub fn established(side: Side, t: &Tuple, clock: &mut Clock) -> bool {
    lookup(side, t, clock) || lookup(side.other(), &t.reversed(), clock)
}

/// Is the flow quoted by an ICMP error known in either orientation on either side?
#[inline(always)]
pub fn related(inner: &Tuple, clock: &mut Clock) -> bool {
    let rev = inner.reversed();
    lookup(Side::Egress, inner, clock)
        || lookup(Side::Ingress, inner, clock)
        || lookup(Side::Egress, &rev, clock)
        || lookup(Side::Ingress, &rev, clock)
}

/// Records that `side` let the connection `t` through. Returns false when the map refused it.
#[inline(always)]
pub fn insert(side: Side, t: &Tuple, clock: &mut Clock) -> bool {
    let now = clock.now();
    let v = CtValue {
        created_ns: now,
        seen_ns: now,
    };
    CONNTRACK.insert(&key(side, t), &v, 0).is_ok()
}
