//! Shared support for the end-to-end tests: a simulated node (testbed + source file) and the
//! real agent process.
#![allow(dead_code)]

pub mod agent;
pub mod http;
pub mod kube_node;
pub mod node;
pub mod policy;

use serde_json::Value;

/// True when running as root; otherwise prints a loud SKIPPED line.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (eBPF, network namespaces, cgroups)");
    false
}

/// Lines matching `pred`.
pub fn find(lines: &[Value], pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    lines.iter().filter(|l| pred(l)).collect()
}
