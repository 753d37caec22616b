//! Per-CPU counters: every verdict and drop reason is counted (read by the agent's metrics).
use firewall_common::Counter;

use crate::maps::COUNTERS;

/// Adds one to `c` on this CPU.
#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot from a successful lookup; no other writer on this CPU meanwhile.
        unsafe { *p += 1 };
    }
}
