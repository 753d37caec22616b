//! Root checks for everything that needs the kernel: the e2e tests, the kernel-level tests of
//! firewall-agent, the testbed, the demo and the bench.
use std::io::Write as _;

/// Whether we run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True when running as root; otherwise prints a loud SKIPPED line, so a test that checked
/// nothing never passes quietly.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    // Written to the real stderr, not through eprintln!: the test harness would capture that and
    // hide the skip of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!! SKIPPED {test}: needs root (eBPF programs, network namespaces, cgroups) !!!!!\n"
    );
    false
}
