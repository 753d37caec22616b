//! The clocks the agent reads: wall-clock time as it reports it (probe heartbeats, source
//! freshness, log timestamps) and the monotonic clock the kernel stamps events with.
use std::time::{SystemTime, UNIX_EPOCH};

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Seconds since the Unix epoch, for Prometheus timestamps.
pub fn unix_secs() -> f64 {
    since_epoch().as_secs_f64()
}

/// Nanoseconds since the Unix epoch.
pub fn unix_ns() -> i128 {
    since_epoch().as_nanos() as i128
}

/// What `bpf_ktime_get_ns` returns: `CLOCK_MONOTONIC`, in ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
