//! Violation events, folded per flow per second in the kernel (docs/design.md#violation-log).
//!
//! Every event adds one to its flow's `total` (atomically); only the first event of a window is
//! sent. User space remembers what it printed and prints the remainder later, so the counts of
//! the log add up exactly even when the ring buffer was full.
use aya_ebpf::helpers::bpf_ktime_get_ns;
use firewall_common::{
    Counter, EventVerdict, FOLD_WINDOW_NS, FoldValue, Hook, Side, SideRecord, ViolationEvent,
};

use crate::{
    counters::count,
    maps::{EVENTS, FOLD},
    packet::Tuple,
};

/// What is known about a connection's record when it is raised.
pub struct Violation {
    /// The connection, in its own orientation (source = the initiator).
    pub tuple: Tuple,
    /// cgroup id of the local end.
    pub cgroup_id: u64,
    /// Identities and namespaces of the two ends.
    pub src_id: u32,
    /// Destination identity.
    pub dst_id: u32,
    /// Source namespace id.
    pub src_ns: u32,
    /// Destination namespace id.
    pub dst_ns: u32,
    /// Rule index of `side`.
    pub rule: u32,
    /// The egress side, when judged here.
    pub egress: SideRecord,
    /// The ingress side, when judged here.
    pub ingress: SideRecord,
    /// The side the line names.
    pub side: Side,
    /// What became of it.
    pub verdict: EventVerdict,
    /// Slot of the policy.
    pub slot: u8,
    /// Where it was raised.
    pub hook: Hook,
    /// 1 when the local end is the source.
    pub local_is_src: u8,
}

/// Counts `v` in its flow's fold entry and sends an event when a new window opens.
#[inline(always)]
pub fn report(v: &Violation) {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut ev = event(v, now);
    let key = ev.fold_key();
    let (created, total, folded) = match FOLD.get_ptr_mut(&key) {
        Some(p) => {
            // SAFETY: `p` comes from a successful lookup; `total` is u64-aligned.
            let f = unsafe { &mut *p };
            atomic_add(&mut f.total, 1);
            if now.wrapping_sub(f.window_ns) < FOLD_WINDOW_NS {
                count(Counter::EventsFolded);
                return;
            }
            f.window_ns = now;
            (f.created_ns, f.total, true)
        }
        None => {
            let f = FoldValue {
                created_ns: now,
                window_ns: now,
                total: 1,
            };
            // A full map: the event still goes out below, unfolded, so it is counted either way.
            let folded = FOLD.insert(&key, &f, 0).is_ok();
            if !folded {
                count(Counter::FoldFull);
            }
            (now, 1, folded)
        }
    };
    ev.fold_created_ns = created;
    ev.fold_total = total;
    send(&ev, folded);
}

/// The event of `v` raised at `now`, its fold fields still zero.
#[inline(always)]
fn event(v: &Violation, now: u64) -> ViolationEvent {
    let t = &v.tuple;
    ViolationEvent {
        ts_ns: now,
        cgroup_id: v.cgroup_id,
        fold_created_ns: 0,
        fold_total: 0,
        saddr: t.saddr,
        daddr: t.daddr,
        src_id: v.src_id,
        dst_id: v.dst_id,
        src_ns: v.src_ns,
        dst_ns: v.dst_ns,
        rule: v.rule,
        egress: v.egress,
        ingress: v.ingress,
        sport: t.sport,
        dport: t.dport,
        proto: t.proto,
        family: t.family,
        side: v.side as u8,
        verdict: v.verdict as u8,
        slot: v.slot,
        hook: v.hook as u8,
        local_is_src: v.local_is_src,
        pad: 0,
    }
}

#[inline(always)]
fn send(ev: &ViolationEvent, folded: bool) {
    let Some(mut entry) = EVENTS.reserve::<ViolationEvent>(0) else {
        count(Counter::EventsLost);
        // A folded flow's count still reaches the log through the fold map; an unfolded one's
        // only through this counter.
        if !folded {
            count(Counter::EventsLostUnfolded);
        }
        return;
    };
    entry.write(*ev);
    entry.submit(0);
    count(Counter::EventsSent);
}

/// `lock *(u64 *)p += v`: the BPF atomic add (the bpf target exposes no `fetch_add`).
#[inline(always)]
fn atomic_add(p: &mut u64, v: u64) {
    // SAFETY: `p` is a valid, aligned u64 in a map value; BPF_ATOMIC | BPF_ADD on it is always allowed.
    unsafe {
        core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) p as *mut u64, v = in(reg) v);
    }
}
