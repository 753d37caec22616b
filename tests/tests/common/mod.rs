//! Shared support for the end-to-end tests: a simulated node (testbed + source file) and the
//! real agent process.
#![allow(dead_code)]

pub mod agent;
pub mod http;
pub mod kube_node;
pub mod matrix;
pub mod node;

use std::process::Command;

use serde_json::Value;

/// Lines matching `pred`.
pub fn find(lines: &[Value], pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    lines.iter().filter(|l| pred(l)).collect()
}

/// Runs `cmd` to its end and returns its stdout; panics, naming `what` and quoting the stderr,
/// when it cannot start or fails.
pub fn stdout_of(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A line's `sides` as (side, namespace, mode, policy).
pub fn sides(l: &Value) -> Vec<(String, String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or("null").to_owned();
    l["sides"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                s(&d["side"]),
                s(&d["namespace"]),
                s(&d["mode"]),
                s(&d["policy"]),
            )
        })
        .collect()
}

/// One expected entry of `sides`.
pub fn side(
    side: &str,
    namespace: &str,
    mode: &str,
    policy: &str,
) -> (String, String, String, String) {
    (side.into(), namespace.into(), mode.into(), policy.into())
}
