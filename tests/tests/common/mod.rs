//! Shared support for the end-to-end tests: a simulated node (testbed + source file) and the
//! real agent process.
#![allow(dead_code)]

pub mod agent;
pub mod http;
pub mod kube_node;
pub mod node;

use serde_json::Value;

/// Lines matching `pred`.
pub fn find(lines: &[Value], pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    lines.iter().filter(|l| pred(l)).collect()
}
