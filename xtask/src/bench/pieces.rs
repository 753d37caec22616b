//! Stage 10's pieces: what each operation of a SYN's path costs alone (issue 14), and the sum of
//! those a SYN performs against the measured SYN path, so the remainder (control flow, copies,
//! pure functions such as the exemption checks) is visible.
//!
//! `pathcost` times each `bench-floor` piece program on the SYN's frame against the empty program
//! (firewall-agent/examples/pathcost/pieces.rs). Pieces that build their key from the input array
//! pay that read on top of their operation: their `net_ns` subtracts the `input` piece's cost
//! on the same path and hook.
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::stats::median;

/// The pieces an allowed SYN between namespaces performs on egress, with how often (flow log
/// off), read from firewall-ebpf/src/datapath.rs:
/// - `on_packet`: `packet::parse`, `bpf_skb_cgroup_id`, `identity::active_slot` (one SETTINGS
///   read), `identity::local` (CGROUPS), `identity::remote` of the destination (IPV4/IPV6 trie);
///   a SYN skips `conntrack::established`;
/// - `judge`: this side's `policy::lookup`; the destination is a pod of another namespace, so
///   `destination_judges` holds and its ingress side is looked up too (`policy_peer`); nothing
///   denies, so no MODES lookup, but `identity::flow_log_all` reads SETTINGS;
/// - `settle`: `flow_log_all` again (SETTINGS), `count(PolicyAllow)`;
/// - `track`: `conntrack::insert` (the LRU update; a TCP insert reads no clock).
///
/// Not pieces (the remainder): `sockets::socket`/`vouched` (two socket field reads, no storage
/// lookup for a socket that is not synchronized), `is_loopback`, `exempt` (pure), the
/// judgement and record building, copies between them.
const SYN_EGRESS: [(&str, u32); 9] = [
    ("parse", 1),
    ("cgroup_id", 1),
    ("settings", 3),
    ("cgroups", 1),
    ("remote", 1),
    ("policy", 1),
    ("policy_peer", 1),
    ("counter", 1),
    ("ct_insert", 1),
];

/// The same on ingress: `on_packet` also asks `conntrack::opened_by_source` (one CONNTRACK
/// lookup of the source's key, a miss for a source on another node) before the peer's
/// identity, and `judge` looks up this side's policy only.
const SYN_INGRESS: [(&str, u32); 9] = [
    ("parse", 1),
    ("cgroup_id", 1),
    ("settings", 3),
    ("cgroups", 1),
    ("ct_lookup", 1),
    ("remote", 1),
    ("policy", 1),
    ("counter", 1),
    ("ct_insert", 1),
];

type Key = (String, String, String);

/// Per piece, path and hook, in `pathcost`'s order: medians over the runs of each run's medians,
/// and the cost net of the input read.
pub fn summarize(runs: &[Value]) -> Vec<Value> {
    let mut by: BTreeMap<Key, Vec<&Value>> = BTreeMap::new();
    let mut order = Vec::new();
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    for p in runs
        .iter()
        .flat_map(|r| r["pieces"].as_array().into_iter().flatten())
    {
        let key = (s(&p["piece"]), s(&p["path"]), s(&p["hook"]));
        if !by.contains_key(&key) {
            order.push(key.clone());
        }
        by.entry(key).or_default().push(p);
    }
    let m = |ps: &[&Value], field: &str| {
        median(
            &ps.iter()
                .filter_map(|p| p[field].as_f64())
                .collect::<Vec<_>>(),
        )
    };
    let above = |key: &Key| {
        by.get(key)
            .map(|ps| m(ps, "piece_ns_median") - m(ps, "empty_ns_median"))
    };
    order
        .iter()
        .filter_map(|key| {
            let ps = by.get(key)?;
            let a = above(key)?;
            let reads_input = ps[0]["reads_input"].as_bool().unwrap_or(false);
            let input = above(&("input".to_owned(), key.1.clone(), key.2.clone()));
            let net = if reads_input {
                input.map(|i| a - i)
            } else {
                Some(a)
            };
            Some(json!({
                "piece": key.0, "path": key.1, "hook": key.2, "found": ps[0]["found"],
                "reads_input": reads_input,
                "piece_ns": m(ps, "piece_ns_median"), "empty_ns": m(ps, "empty_ns_median"),
                "above_empty_ns": a, "above_empty_ns_paired": m(ps, "above_empty_ns_paired"),
                "net_ns": net,
            }))
        })
        .collect()
}

/// Per SYN path and hook: the sum of the pieces it performs (net) against the measured path.
/// `paths`: the stage's summarized paths; `pieces`: [`summarize`]'s rows.
pub fn sums(paths: &[Value], pieces: &[Value]) -> Vec<Value> {
    let net = |piece: &str, path: &str, hook: &str| {
        pieces
            .iter()
            .find(|p| p["piece"] == piece && p["path"] == path && p["hook"] == hook)
            .and_then(|p| p["net_ns"].as_f64())
    };
    paths
        .iter()
        .filter(|p| p["path"].as_str().is_some_and(|k| k.ends_with("-syn")))
        .filter_map(|p| {
            let (path, hook) = (p["path"].as_str()?, p["hook"].as_str()?);
            let list: &[(&str, u32)] = if hook == "egress" {
                &SYN_EGRESS
            } else {
                &SYN_INGRESS
            };
            let parts: Option<Vec<(&str, u32, f64)>> = list
                .iter()
                .map(|(name, n)| net(name, path, hook).map(|v| (*name, *n, v)))
                .collect();
            let parts = parts?;
            let sum: f64 = parts.iter().map(|(_, n, v)| f64::from(*n) * v).sum();
            let measured = p["above_empty_ns"].as_f64()?;
            Some(json!({
                "path": path, "hook": hook,
                "pieces": parts.iter().map(|(name, n, v)| json!({"piece": name, "times": n, "net_ns": v})).collect::<Vec<_>>(),
                "sum_ns": sum, "measured_above_empty_ns": measured, "remainder_ns": measured - sum,
            }))
        })
        .collect()
}
