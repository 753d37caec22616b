//! Connection tracking: each side records the connections it let through, so later packets and
//! replies pass without a policy lookup (docs/design.md#connections).
use firewall_common::{CT_IDLE_NS, CtKey, CtValue, IpProto, Side};

use crate::{maps::CONNTRACK, packet::Tuple};

/// Refresh an entry's `seen_ns` at most this often (saves a write per packet).
const REFRESH_NS: u64 = 1_000_000_000;

#[inline(always)]
fn key(side: Side, t: &Tuple) -> CtKey {
    CtKey {
        side: side as u8,
        ..*t
    }
}

/// Is there a live entry for `t` on `side`? Refreshes it.
#[inline(always)]
pub fn lookup(side: Side, t: &Tuple, now: u64) -> bool {
    let Some(v) = CONNTRACK.get_ptr_mut(&key(side, t)) else {
        return false;
    };
    // SAFETY: the pointer comes from a successful map lookup and is valid for this program run.
    let v = unsafe { &mut *v };
    // TCP entries live until evicted (a new SYN is always re-checked); others expire when idle.
    if t.proto != IpProto::Tcp as u8 && now.wrapping_sub(v.seen_ns) > CT_IDLE_NS {
        return false;
    }
    if now.wrapping_sub(v.seen_ns) > REFRESH_NS {
        v.seen_ns = now;
    }
    true
}

/// Is `t` a later packet of, or a reply to, a connection some side let through?
#[inline(always)]
pub fn established(side: Side, t: &Tuple, check_forward: bool, now: u64) -> bool {
    (check_forward && lookup(side, t, now)) || lookup(side.other(), &t.reversed(), now)
}

/// Is the flow quoted by an ICMP error known in either orientation on either side?
#[inline(always)]
pub fn related(inner: &Tuple, now: u64) -> bool {
    let rev = inner.reversed();
    lookup(Side::Egress, inner, now)
        || lookup(Side::Ingress, inner, now)
        || lookup(Side::Egress, &rev, now)
        || lookup(Side::Ingress, &rev, now)
}

/// Records that `side` let the connection `t` through. Returns false when the map refused it.
#[inline(always)]
pub fn insert(side: Side, t: &Tuple, now: u64) -> bool {
    let v = CtValue {
        created_ns: now,
        seen_ns: now,
    };
    CONNTRACK.insert(&key(side, t), &v, 0).is_ok()
}
