//! Exact counts for folded violation lines.
//!
//! The kernel adds every event to its flow's monotonic `total` and sends an event only when a
//! flow's one-second window opens. This module remembers, per flow, how much of that total has
//! been printed; a line's `count` is the unprinted remainder. A periodic sweep of the kernel's fold
//! map prints what later events did not carry (a storm's tail, events lost to a full ring buffer),
//! so the counts of all lines of a flow add up to the number of events.
use std::collections::HashMap;

use firewall_common::{FOLD_WINDOW_NS, FoldKey, FoldValue, ViolationEvent};

/// How long a flow must be quiet before its fold entry is deleted.
pub const IDLE_NS: u64 = 5 * FOLD_WINDOW_NS;

/// What a sweep found.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Lines owed: (flow, its last event if any, count).
    pub owed: Vec<(FoldKey, Option<ViolationEvent>, u64)>,
    /// Flows idle for [`IDLE_NS`] and fully reported: delete their kernel entries.
    pub idle: Vec<FoldKey>,
}

/// What was printed for one flow, and the details of its last event.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    created_ns: u64,
    printed: u64,
    last: Option<ViolationEvent>,
}

/// Per-flow printed totals.
#[derive(Debug, Default)]
pub struct Accounting {
    flows: HashMap<FoldKey, Tracked>,
}

impl Accounting {
    /// Accounts an event from the ring buffer; returns the count its line carries (None: nothing
    /// new, e.g. an event overtaken by a sweep).
    pub fn on_event(&mut self, ev: &ViolationEvent) -> Option<u64> {
        let key = ev.fold_key();
        let t = self.flows.entry(key).or_insert(Tracked {
            created_ns: ev.fold_created_ns,
            printed: 0,
            last: None,
        });
        if t.created_ns != ev.fold_created_ns {
            // The kernel entry was evicted and recreated: a new series.
            *t = Tracked {
                created_ns: ev.fold_created_ns,
                printed: 0,
                last: None,
            };
        }
        t.last = Some(*ev);
        let count = ev.fold_total.saturating_sub(t.printed);
        if count == 0 {
            return None;
        }
        t.printed = ev.fold_total;
        Some(count)
    }

    /// Marks every flow the kernel's fold map holds as already printed up to its current total.
    /// Used when adopting pinned maps from an earlier agent: it printed (SIGTERM flushes) or was
    /// about to print (SIGKILL) those counts, and reprinting them would count them twice.
    pub fn seed(&mut self, kernel: impl IntoIterator<Item = (FoldKey, FoldValue)>) {
        for (key, v) in kernel {
            self.flows.insert(
                key,
                Tracked {
                    created_ns: v.created_ns,
                    printed: v.total,
                    last: None,
                },
            );
        }
    }

    /// Compares the kernel's fold map with what was printed; returns the lines still owed, as
    /// (fold key, last event seen if any, count), for flows whose window has closed (all flows
    /// when `flush`, at shutdown). Forgets flows the kernel no longer has.
    pub fn sweep(
        &mut self,
        kernel: impl IntoIterator<Item = (FoldKey, FoldValue)>,
        now_ns: u64,
        flush: bool,
    ) -> Sweep {
        let mut owed = Vec::new();
        let mut idle = Vec::new();
        let mut seen = HashMap::with_capacity(self.flows.len());
        for (key, v) in kernel {
            let t = self
                .flows
                .get(&key)
                .copied()
                .filter(|t| t.created_ns == v.created_ns);
            let mut t = t.unwrap_or(Tracked {
                created_ns: v.created_ns,
                printed: 0,
                last: None,
            });
            let closed = now_ns.saturating_sub(v.window_ns) >= FOLD_WINDOW_NS;
            if v.total > t.printed && (closed || flush) {
                owed.push((key, t.last, v.total - t.printed));
                t.printed = v.total;
            }
            if now_ns.saturating_sub(v.window_ns) >= IDLE_NS && t.printed == v.total {
                // Quiet and fully reported: its kernel entry can go (the map is not an LRU).
                idle.push(key);
                continue;
            }
            seen.insert(key, t);
        }
        self.flows = seen;
        Sweep { owed, idle }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(total: u64, created: u64) -> ViolationEvent {
        ViolationEvent {
            fold_total: total,
            fold_created_ns: created,
            dport: 80,
            proto: 6,
            family: 4,
            side: 1,
            verdict: 2,
            ..Default::default()
        }
    }

    fn fold(created_ns: u64, window_ns: u64, total: u64) -> FoldValue {
        FoldValue {
            created_ns,
            window_ns,
            total,
        }
    }

    /// A flow whose first event (total 1, created at 5) was printed.
    fn one_event() -> (Accounting, FoldKey) {
        let mut a = Accounting::default();
        assert_eq!(a.on_event(&ev(1, 5)), Some(1));
        (a, ev(1, 5).fold_key())
    }

    #[test]
    fn counts_add_up_across_events_and_sweeps() {
        let (mut a, key) = one_event();
        // 9 more folded in the window; the window is still open: nothing owed yet.
        let v = fold(5, 100, 10);
        assert!(
            a.sweep([(key, v)], 100 + FOLD_WINDOW_NS - 1, false)
                .owed
                .is_empty()
        );
        let owed = a.sweep([(key, v)], 100 + FOLD_WINDOW_NS, false).owed;
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].2, 9);
        // A late ring-buffer event already covered by the sweep prints nothing.
        assert_eq!(a.on_event(&ev(10, 5)), None);
        // A new window: the event carries only the new remainder.
        assert_eq!(a.on_event(&ev(12, 5)), Some(2));
        // Shutdown flush prints what's left even in an open window.
        let v = fold(5, 0, 15);
        assert_eq!(a.sweep([(key, v)], 1, true).owed[0].2, 3);
    }

    #[test]
    fn idle_fully_reported_flows_are_released_and_others_kept() {
        let (mut a, key) = one_event();
        let quiet = fold(5, 5, 3);
        // Idle long enough, but 2 still unprinted: printed now, released in the same sweep.
        let s = a.sweep([(key, quiet)], 5 + IDLE_NS, false);
        assert_eq!((s.owed.len(), s.owed[0].2), (1, 2));
        assert_eq!(s.idle, vec![key]);
        // Not idle yet: kept.
        let mut b = Accounting::default();
        assert_eq!(b.on_event(&ev(3, 5)), Some(3));
        let s = b.sweep([(key, quiet)], 5 + IDLE_NS - 1, false);
        assert!(s.idle.is_empty() && s.owed.is_empty());
    }

    #[test]
    fn recreated_kernel_entry_starts_a_new_series() {
        let mut a = Accounting::default();
        assert_eq!(a.on_event(&ev(7, 1)), Some(7));
        assert_eq!(a.on_event(&ev(1, 2)), Some(1));
    }

    #[test]
    fn lost_first_event_is_still_printed_by_the_sweep() {
        let mut a = Accounting::default();
        let key = ev(1, 1).fold_key();
        let owed = a.sweep([(key, fold(1, 0, 4))], FOLD_WINDOW_NS, false).owed;
        assert_eq!(owed, vec![(key, None, 4)]);
    }
}
