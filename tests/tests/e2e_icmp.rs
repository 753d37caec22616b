//! ICMP end to end (docs/design.md#connections): real echo requests from raw sockets inside pods.
//! An echo request is the only ICMP message that opens a connection; its destination's kernel
//! answers without a socket, so the destination's ingress side is judged by the source, and the
//! source's one line per connection names it, in monitor mode too. Neighbour discovery, which a pod's raw ICMPv6 socket receives,
//! never produces a line. Needs root; skips loudly otherwise.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
mod common;

use std::time::Duration;

use bulkhead_tests::{
    policy::{baseline, ingress_from},
    skip_unless_root,
};
use common::{
    agent::pretty,
    http::{metrics_endpoint, sample},
    kube_node::wait_for,
    node::Node,
};
use serde_json::{Value, json};

fn pods() -> &'static str {
    r#"
namespaces: [{name: frontend}, {name: payments}, {name: db}]
pods:
  - {name: web, namespace: frontend, serve: [{protocol: TCP, port: 80}]}
  - {name: api, namespace: payments, serve: [{protocol: TCP, port: 8443}]}
  - {name: postgres, namespace: db, serve: [{protocol: TCP, port: 5432}]}
"#
}

/// frontend may open connections to payments only (every protocol); db admits payments on TCP
/// 5432 only, so no ICMP into db; payments has no rules of its own.
fn policies(cross: &str, mode: &str) -> Vec<String> {
    vec![
        baseline(cross, mode),
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: default, namespace: frontend}
spec:
  egress:
    - to: {namespaces: [payments]}
"#
        .to_owned(),
        ingress_from("default", "db", &["payments"], &[], &[("TCP", 5432)]),
    ]
}

fn up(name: &str, subnet: u8, cross: &str, mode: &str) -> Node {
    let p = policies(cross, mode);
    let refs: Vec<&str> = p.iter().map(String::as_str).collect();
    Node::up(name, subnet, pods(), &refs)
}

/// The mode behind a verdict: in these tests both namespaces of a pair share one mode.
fn mode_of(verdict: &str) -> &'static str {
    if verdict == "DENIED" {
        "enforce"
    } else {
        "monitor"
    }
}

/// The exact line of an echo from pod `src` to pod `dst` (`ns/pod`), over IPv4 or IPv6: one per
/// connection, naming `direction`'s `policy`, with every denying side (side, namespace, policy).
fn echo_line(
    node: &Node,
    v6: bool,
    (verdict, direction, policy): (&str, &str, &str),
    denying: &[(&str, &str, &str)],
    (src, dst): (&str, &str),
) -> Value {
    let end = |key: &str| {
        let (ns, pod) = key.split_once('/').expect("ns/pod");
        let ip = if v6 { node.ip6(key) } else { node.ip(key) };
        json!({"namespace": ns, "pod": pod, "ip": ip.to_string(), "port": null})
    };
    let sides: Vec<Value> = denying
        .iter()
        .map(|(side, namespace, policy)| {
            json!({"side": side, "namespace": namespace, "mode": mode_of(verdict), "policy": policy})
        })
        .collect();
    json!({
        "type": "violation",
        "verdict": verdict,
        "direction": direction,
        "node": "node-1",
        "protocol": if v6 { "ICMPv6" } else { "ICMP" },
        "src": end(src),
        "dst": end(dst),
        "policy": policy,
        "sides": sides,
        "count": 1,
    })
}

/// The line of an echo from web to postgres: both sides deny (frontend's egress rules do not
/// name db, db's ingress rules do not admit frontend); the egress side, first, names it.
fn web_to_postgres(node: &Node, v6: bool, verdict: &str) -> Value {
    echo_line(
        node,
        v6,
        (verdict, "egress", "NamespaceFirewall/frontend/default"),
        &[
            ("egress", "frontend", "NamespaceFirewall/frontend/default"),
            ("ingress", "db", "NamespaceFirewall/db/default"),
        ],
        ("frontend/web", "db/postgres"),
    )
}

/// The line of an echo from api to postgres: only db's ingress side denies (its rule admits
/// payments on TCP 5432 only).
fn api_to_postgres(node: &Node, verdict: &str) -> Value {
    echo_line(
        node,
        false,
        (verdict, "ingress", "NamespaceFirewall/db/default"),
        &[("ingress", "db", "NamespaceFirewall/db/default")],
        ("payments/api", "db/postgres"),
    )
}

/// The lines without their timestamps, sorted, to compare with the expected ones.
fn without_ts(lines: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = lines
        .iter()
        .map(|l| {
            let mut l = l.clone();
            if let Some(o) = l.as_object_mut() {
                o.remove("ts");
            }
            l
        })
        .collect();
    out.sort_by_key(Value::to_string);
    out
}

/// The log holds exactly the lines of web -> postgres and api -> postgres, with `verdict`.
fn assert_two_echoes(node: &Node, lines: &[Value], verdict: &str) {
    let expected = sorted(vec![
        web_to_postgres(node, false, verdict),
        api_to_postgres(node, verdict),
    ]);
    assert_eq!(without_ts(lines), expected, "{}", pretty(lines));
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(Value::to_string);
    v
}

#[test]
fn monitor_mode_logs_the_destination_side_of_an_echo_it_never_sees() {
    skip_unless_root!("monitor_mode_logs_the_destination_side_of_an_echo_it_never_sees");
    let node = up("icmpm", 67, "Allow", "Monitor");
    let agent = node.agent(&[]);
    // Both sides of web -> postgres deny; only db's ingress side denies api -> postgres. In
    // monitor mode both echoes are answered, and every denying side logs AUDIT.
    let r = node.ping("frontend/web", "db/postgres");
    assert_eq!(r.result, "ok", "{r:?}");
    let r = node.ping("payments/api", "db/postgres");
    assert_eq!(r.result, "ok", "{r:?}");
    // Allowed: no line.
    let r = node.ping("frontend/web", "payments/api");
    assert_eq!(r.result, "ok", "{r:?}");
    agent.wait_violations(Duration::from_secs(5), |l| l.len() >= 2);
    assert_two_echoes(&node, &agent.stop(), "AUDIT");
}

#[test]
fn enforce_mode_drops_a_denied_echo_at_the_source_and_answers_an_allowed_one() {
    skip_unless_root!("enforce_mode_drops_a_denied_echo_at_the_source_and_answers_an_allowed_one");
    let node = up("icmpe", 68, "Allow", "Enforce");
    let agent = node.agent(&[]);
    assert_eq!(node.ping("frontend/web", "db/postgres").result, "denied");
    assert_eq!(node.ping("payments/api", "db/postgres").result, "denied");
    // Allowed into a namespace in enforce mode: the reply its kernel sends passes.
    let r = node.ping("frontend/web", "payments/api");
    assert_eq!(r.result, "ok", "{r:?}");
    assert_two_echoes(&node, &agent.stop(), "DENIED");
}

#[test]
fn neighbour_discovery_between_namespaces_passes_and_is_never_logged() {
    skip_unless_root!("neighbour_discovery_between_namespaces_passes_and_is_never_logged");
    // Nothing admits payments or db into frontend: judged as a connection, a neighbour
    // advertisement from api to web would be denied.
    let node = up("icmpnd", 69, "Deny", "Enforce");
    let (port, addr) = metrics_endpoint();
    let agent = node.agent(&["--metrics-addr", &addr]);
    // The first IPv6 packets between these pods: each needs neighbour discovery first, and the
    // neighbour advertisements reach the pinging pod's raw ICMPv6 socket (its ingress program).
    let r = node.ping6("frontend/web", "payments/api");
    assert_eq!(r.result, "ok", "{r:?}");
    assert_eq!(node.ping6("frontend/web", "db/postgres").result, "denied");
    let neighbor = r#"bulkhead_datapath_packets_total{reason="icmp_neighbor"}"#;
    wait_for(
        Duration::from_secs(5),
        "neighbour discovery counted as icmp_neighbor",
        || (sample(port, neighbor) >= 1.0).then_some(()),
    );
    let lines = agent.stop();
    // Only the echo that policy denies is logged: no line names a neighbour discovery message.
    let expected = vec![web_to_postgres(&node, true, "DENIED")];
    assert_eq!(without_ts(&lines), expected, "{}", pretty(&lines));
}
