//! Connection tracking: each side records the connections it let through, so later packets and
//! replies pass without a policy lookup (docs/design.md#connections).
use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use firewall_common::{CT_IDLE_NS, CtKey, CtValue, IpProto, Side, ct_key};

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

/// The live entry under `key`, refreshed; `None` when there is none or it idled out.
#[inline(always)]
fn find(key: &CtKey, clock: &mut Clock) -> Option<*mut CtValue> {
    let v = CONNTRACK.get_ptr_mut(key)?;
    // TCP entries live until evicted (a new SYN is always re-checked), and nothing reads their
    // `seen_ns`: no clock, no write.
    if key.proto == IpProto::Tcp as u8 {
        return Some(v);
    }
    // SAFETY: the pointer comes from a successful map lookup and is valid for this program run.
    let e = unsafe { &mut *v };
    let now = clock.now();
    // Saturating: an entry written by the fine clock (an agent before this one, adopted) can be
    // up to a tick ahead of the coarse one, and is fresh, not 2^64 ns old.
    let idle = now.saturating_sub(e.seen_ns);
    if idle > CT_IDLE_NS {
        return None;
    }
    if idle > REFRESH_NS {
        e.seen_ns = now;
    }
    Some(v)
}

/// Is `t` a later packet of, or a reply to, a connection `side` let through? One lookup: the
/// key is the same for both directions ([`ct_key`]).
#[inline(always)]
pub fn established(side: Side, t: &Tuple, clock: &mut Clock) -> bool {
    find(&ct_key(side, t), clock).is_some()
}

/// Did the egress side at the packet's source let `t` through as a connection it opened (the
/// source's program judged it, for both sides when both ends are on this node)?
#[inline(always)]
pub fn opened_by_source(t: &Tuple, clock: &mut Clock) -> bool {
    let Some(v) = find(&ct_key(Side::Egress, t), clock) else {
        return false;
    };
    // SAFETY: as in `find`.
    unsafe { (*v).side == Side::Egress as u8 }
}

/// Is the flow quoted by an ICMP error known, in either orientation, at either of its ends?
#[inline(always)]
pub fn related(inner: &Tuple, clock: &mut Clock) -> bool {
    find(&ct_key(Side::Egress, inner), clock).is_some()
        || find(&ct_key(Side::Ingress, inner), clock).is_some()
}

/// Records that `side` let the connection `t` through. Returns false when the map refused it.
#[inline(always)]
pub fn insert(side: Side, t: &Tuple, clock: &mut Clock) -> bool {
    // A TCP entry's timestamps are never read (see `find`): 0, and a first packet spared the
    // clock (15 ns of the insert's ~175 here, docs/benchmarks.md, stage 10's pieces).
    let now = if t.proto == IpProto::Tcp as u8 {
        0
    } else {
        clock.now()
    };
    let v = CtValue {
        created_ns: now,
        seen_ns: now,
        side: side as u8,
        pad: [0; 7],
    };
    CONNTRACK.insert(&ct_key(side, t), &v, 0).is_ok()
}
