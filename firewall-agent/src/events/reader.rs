//! Reads the kernel's ring buffer and sweeps its fold map, and prints what they hold as
//! violation log lines on stdout.
use std::{io::Write as _, sync::Arc};

use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use firewall_common::{Counter, FoldKey, FoldValue, ViolationEvent};
use serde::Serialize;
use tracing::{debug, warn};

use super::{Accounting, Names, format};
use crate::{
    agent::metrics::Metrics,
    clock::{monotonic_ns, unix_ns},
};

/// A line reporting events the kernel could not send (ring buffer full).
#[derive(Serialize)]
struct LostLine<'a> {
    ts: String,
    #[serde(rename = "type")]
    kind: &'static str,
    node: &'a str,
    count: u64,
}

/// Writes the violation log.
pub struct ViolationLog {
    node: String,
    accounting: Accounting,
    lost_reported: u64,
    metrics: Arc<Metrics>,
    /// Lines printed (for the shutdown summary).
    pub lines: u64,
}

impl ViolationLog {
    /// A log for `node`; every line is also counted in `metrics`.
    pub fn new(node: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            node: node.to_owned(),
            accounting: Accounting::default(),
            lost_reported: 0,
            metrics,
            lines: 0,
        }
    }

    fn print_violation(&mut self, line: &format::LogLine) {
        self.metrics.record(line);
        self.print(line);
    }

    fn print<T: Serialize>(&mut self, line: &T) {
        match serde_json::to_string(line) {
            Ok(s) => {
                let mut out = std::io::stdout().lock();
                // A closed stdout must not kill the firewall: report and go on.
                if writeln!(out, "{s}").and_then(|()| out.flush()).is_err() {
                    warn!("stdout is closed; violation lines are being dropped");
                }
                self.lines += 1;
            }
            Err(e) => warn!(error = %e, "could not serialize a log line"),
        }
    }

    fn event_ts(ev: &ViolationEvent) -> String {
        let age = monotonic_ns().saturating_sub(ev.ts_ns) as i128;
        format::format_ts(unix_ns() - age)
    }

    /// Prints what the ring buffer holds.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>, names: &Names) {
        while let Some(item) = ring.next() {
            if item.len() < size_of::<ViolationEvent>() {
                warn!(len = item.len(), "short event in the ring buffer");
                continue;
            }
            // SAFETY: the kernel wrote a whole ViolationEvent; read_unaligned copes with alignment.
            let ev: ViolationEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            if let Some(count) = self.accounting.on_event(&ev) {
                let line = format::from_event(
                    &ev,
                    names.slot(ev.slot),
                    &self.node,
                    Self::event_ts(&ev),
                    count,
                );
                self.print_violation(&line);
            } else {
                debug!("event already accounted by a sweep");
            }
        }
    }

    /// Takes over pinned event state from an earlier agent: what its fold map and lost-events
    /// counter hold counts as reported, so nothing is printed twice (a SIGKILLed agent's last,
    /// unprinted second of folded counts is not reported: under-count rather than duplicates).
    pub fn adopt(
        &mut self,
        fold: &HashMap<MapData, FoldKey, FoldValue>,
        counters: &PerCpuArray<MapData, u64>,
    ) {
        self.accounting.seed(fold.iter().filter_map(Result::ok));
        // The same counter `sweep` reports from: seeding from `EventsLost` (which also counts
        // lost events whose counts the fold map still carried) would silence `events_lost`
        // lines after a restart until the unfolded count caught up with it.
        self.lost_reported = counter(counters, Counter::EventsLostUnfolded);
    }

    /// Prints the remainders the kernel's fold map holds (closed windows, or all when `flush`),
    /// and a line for events lost to a full ring buffer.
    pub fn sweep(
        &mut self,
        fold: &mut HashMap<MapData, FoldKey, FoldValue>,
        counters: &PerCpuArray<MapData, u64>,
        names: &Names,
        flush: bool,
    ) {
        let entries: Vec<(FoldKey, FoldValue)> = fold.iter().filter_map(Result::ok).collect();
        let swept = self.accounting.sweep(entries, monotonic_ns(), flush);
        for key in &swept.idle {
            // A flow that wakes up between the read above and this delete loses the events of
            // that instant: it has been quiet for 5 s, so that is microseconds in 5 s.
            if let Err(e) = fold.remove(key) {
                debug!(error = %e, "releasing an idle fold entry");
            }
        }
        let ts = format::format_ts(unix_ns());
        for (key, last, count) in swept.owed {
            let line = match last {
                Some(ev) => {
                    format::from_event(&ev, names.slot(ev.slot), &self.node, ts.clone(), count)
                }
                None => format::from_fold_key(&key, names.latest(), &self.node, ts.clone(), count),
            };
            self.print_violation(&line);
        }
        let lost = counter(counters, Counter::EventsLostUnfolded);
        if lost > self.lost_reported {
            let count = lost - self.lost_reported;
            self.lost_reported = lost;
            warn!(
                count,
                "violations in no line: the fold map and the ring buffer were both full; counted in an events_lost line"
            );
            let node = self.node.clone();
            let line = LostLine {
                ts,
                kind: "events_lost",
                node: &node,
                count,
            };
            self.print(&line);
        }
    }
}

/// The sum over CPUs of one kernel counter.
pub fn counter(counters: &PerCpuArray<MapData, u64>, c: Counter) -> u64 {
    counters
        .get(&(c as u32), 0)
        .map(|v| v.iter().sum())
        .unwrap_or(0)
}
