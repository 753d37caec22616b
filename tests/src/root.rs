//! Root: the kernel-level tests need it (eBPF, network namespaces, cgroups). Without it a test
//! skips loudly; in CI (`CI=true`) a missing root is a failure, never a silent skip.
use std::io::Write as _;

/// Whether we run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether CI runs us (`CI=true`): there a skipped kernel test would check nothing unnoticed.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Returns from the calling test unless it runs as root ([`require_root`] says why, loudly):
/// the first line of every kernel-level test.
#[macro_export]
macro_rules! skip_unless_root {
    ($test:expr) => {
        if !$crate::require_root($test) {
            return;
        }
    };
}

/// True when running as root; otherwise prints a loud SKIPPED line and returns false, or panics
/// under CI.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        !in_ci(),
        "{test} needs root (eBPF, network namespaces, cgroups) and CI=true never skips"
    );
    // Written to the real stderr, not through eprintln!: the test harness would capture that and
    // hide the skip of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!! SKIPPED {test}: needs root (eBPF, network namespaces, cgroups) !!!!!\n"
    );
    false
}
