//! Connection records (violations, and allowed flows with the flow log), folded per flow per
//! second in the kernel (docs/design.md#violation-log).
//!
//! Every event adds one to its flow's `total` (atomically); only the first event of a window is
//! sent. User space remembers what it printed and prints the remainder later, so the counts of
//! the log add up exactly even when the ring buffer was full.
use aya_ebpf::helpers::bpf_ktime_get_ns;
use firewall_common::{Counter, FOLD_WINDOW_NS, FoldValue, ViolationEvent};

use crate::{
    counters::count,
    maps::{EVENTS, FOLD},
};

/// Counts `ev` (its time and fold fields still zero) in its flow's fold entry and sends it when
/// a new window opens.
#[inline(always)]
pub fn report(mut ev: ViolationEvent) {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    ev.ts_ns = now;
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
