//! End-to-end tests of the single-node firewall: the real agent binary, real eBPF programs, real
//! packets between simulated pods (network namespaces + kubelet-style cgroups). Each test asserts
//! both what the connections did and the exact violation log lines. Needs root; skips loudly
//! otherwise (CI runs as root and `cargo xtask test` refuses to skip there).
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
mod common;

use std::time::Duration;

use bulkhead_tests::{
    policy::{baseline, ingress_from, web_to_api},
    skip_unless_root,
};
use common::{
    agent::{Agent, pretty},
    find,
    http::{http_status, metrics_endpoint, sample},
    node::Node,
    side, sides,
};
use serde_json::{Value, json};

/// The pods every test starts from: web (frontend), api + worker (payments), postgres (db), coredns.
fn pods() -> &'static str {
    r#"
namespaces:
  - {name: frontend}
  - {name: payments}
  - {name: db}
  - {name: kube-system}
pods:
  - {name: web, namespace: frontend, labels: {app: web}, serve: [{protocol: TCP, port: 80}]}
  - {name: api, namespace: payments, labels: {app: api}, serve: [{protocol: TCP, port: 8443}]}
  - {name: worker, namespace: payments, labels: {app: worker}, serve: [{protocol: TCP, port: 8443}]}
  - {name: postgres, namespace: db, labels: {app: postgres}, serve: [{protocol: TCP, port: 5432}, {protocol: UDP, port: 5353}]}
  - {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}, serve: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]}
services:
  - {name: payments-api, namespace: payments, selector: {app: api}}
  - {name: kube-dns, namespace: kube-system, selector: {k8s-app: kube-dns}}
"#
}

/// db admits payments on TCP 5432 and UDP 5353.
fn db_from_payments() -> String {
    ingress_from(
        "default",
        "db",
        &["payments"],
        &[],
        &[("TCP", 5432), ("UDP", 5353)],
    )
}

/// A node whose cross-namespace connections are denied in enforce mode, except payments -> db.
fn deny_by_default(name: &str, subnet: u8) -> Node {
    Node::up(
        name,
        subnet,
        pods(),
        &[&baseline("Deny", "Enforce"), &db_from_payments()],
    )
}

/// Probes TCP (from, to, port) and checks each result.
fn expect_tcp(node: &Node, cases: &[(&str, &str, u16, &str)]) {
    for (from, to, port, want) in cases {
        assert_eq!(
            node.tcp(from, to, *port).result,
            *want,
            "{from} -> {to}:{port}"
        );
    }
}

fn line<'a>(lines: &'a [Value], direction: &str, dst_pod: &str, dst_port: u16) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| {
            l["direction"] == direction
                && l["dst"]["pod"] == dst_pod
                && l["dst"]["port"] == dst_port
        })
        .collect()
}

#[test]
fn monitor_mode_logs_audit_and_lets_traffic_through() {
    skip_unless_root!("monitor_mode_logs_audit_and_lets_traffic_through");
    let node = Node::up(
        "mon",
        11,
        pods(),
        &[&baseline("Deny", "Monitor"), &db_from_payments()],
    );
    let agent = node.agent(&[]);
    // Forbidden but monitored: the connection works, and its one line (both pods are on this
    // node) names both denying sides.
    let r = node.tcp("frontend/web", "db/postgres", 5432);
    assert_eq!(r.result, "ok", "{r:?}");
    // Allowed: no line.
    assert_eq!(node.tcp("payments/api", "db/postgres", 5432).result, "ok");
    agent.wait_violations(Duration::from_secs(5), |l| !l.is_empty());
    let lines = agent.stop();
    let web = node.ip("frontend/web");
    let pg = node.ip("db/postgres");
    let egress = line(&lines, "egress", "postgres", 5432);
    assert_eq!(egress.len(), 1, "{}", pretty(&lines));
    let e = egress[0];
    assert_eq!(e["type"], "violation");
    assert_eq!(e["verdict"], "AUDIT");
    assert_eq!(e["node"], "node-1");
    assert_eq!(e["protocol"], "TCP");
    assert_eq!(e["src"]["namespace"], "frontend");
    assert_eq!(e["src"]["pod"], "web");
    assert_eq!(e["src"]["ip"], web.to_string());
    assert!(e["src"]["port"].as_u64().is_some_and(|p| p >= 1024), "{e}");
    assert_eq!(
        e["dst"],
        json!({"namespace": "db", "pod": "postgres", "ip": pg.to_string(), "port": 5432})
    );
    assert_eq!(e["policy"], "default");
    assert_eq!(e["count"], 1);
    assert_eq!(
        sides(e),
        [
            side("egress", "frontend", "monitor", "default"),
            side("ingress", "db", "monitor", "NamespaceFirewall/db/default"),
        ]
    );
    assert_eq!(
        lines.len(),
        1,
        "one line, for the forbidden connection only: {}",
        pretty(&lines)
    );
    assert!(
        e["ts"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 27),
        "{e}"
    );
}

#[test]
fn enforce_mode_drops_fast_and_keeps_allowed_pairs_working() {
    skip_unless_root!("enforce_mode_drops_fast_and_keeps_allowed_pairs_working");
    // The kubelet systemd cgroup driver's layout (the other tests use cgroupfs).
    let node = Node::up_with(
        "enf",
        12,
        "systemd",
        pods(),
        &[
            &baseline("Deny", "Enforce"),
            &db_from_payments(),
            &web_to_api(),
        ],
    );
    let agent = node.agent(&[]);
    let denied = node.tcp("frontend/web", "db/postgres", 5432);
    assert_eq!(denied.result, "denied", "{denied:?}");
    eprintln!("a denied TCP connect failed after {:.2} ms", denied.ms);
    assert!(
        denied.ms < 1000.0,
        "a denied TCP connect must fail within 1 s: {denied:?}"
    );
    // worker -> api: the same namespace is always allowed. coredns -> postgres: a second
    // source to the same destination, also refused at connect() where no source address is
    // known yet: its lines (and counts) must still be its own.
    expect_tcp(
        &node,
        &[
            ("frontend/web", "payments/api", 8443, "ok"),
            ("payments/api", "db/postgres", 5432, "ok"),
            ("payments/worker", "payments/api", 8443, "ok"),
            ("kube-system/coredns", "db/postgres", 5432, "denied"),
        ],
    );
    let all = agent.stop();
    let from = |pod: &str| find(&all, |l| l["src"]["pod"] == pod && l["count"] == 1).len();
    assert_eq!(
        (from("web"), from("coredns"), all.len()),
        (1, 1, 2),
        "one line per connection: {}",
        pretty(&all)
    );
    let lines: Vec<Value> = all
        .into_iter()
        .filter(|l| l["src"]["pod"] == "web")
        .collect();
    let e = line(&lines, "egress", "postgres", 5432);
    let i = line(&lines, "ingress", "postgres", 5432);
    assert_eq!(
        (e.len(), i.len(), lines.len()),
        (1, 0, 1),
        "dropped at the source, which names it egress: {}",
        pretty(&lines)
    );
    assert_eq!(e[0]["verdict"], "DENIED");
    assert_eq!(e[0]["policy"], "default");
    assert_eq!(
        sides(e[0]),
        [
            side("egress", "frontend", "enforce", "default"),
            side("ingress", "db", "enforce", "NamespaceFirewall/db/default"),
        ]
    );
    // Refused at connect(): the source port was never chosen.
    assert_eq!(
        e[0]["src"],
        json!({"namespace": "frontend", "pod": "web", "ip": node.ip("frontend/web").to_string(), "port": null})
    );
}

#[test]
fn services_restrict_a_rule_to_the_backing_pods() {
    skip_unless_root!("services_restrict_a_rule_to_the_backing_pods");
    let node = Node::up(
        "svc",
        13,
        pods(),
        &[&baseline("Allow", "Enforce"), &web_to_api()],
    );
    let agent = node.agent(&[]);
    assert_eq!(node.tcp("frontend/web", "payments/api", 8443).result, "ok");
    assert_eq!(
        node.tcp("frontend/web", "payments/worker", 8443).result,
        "denied"
    );
    let lines = agent.wait_violations(Duration::from_secs(5), |l| !l.is_empty());
    let i = line(&lines, "ingress", "worker", 8443);
    assert_eq!((i.len(), lines.len()), (1, 1), "{}", pretty(&lines));
    assert_eq!(i[0]["verdict"], "DENIED");
    assert_eq!(i[0]["policy"], "NamespaceFirewall/payments/web-to-api");
    assert_eq!(i[0]["dst"]["namespace"], "payments");
}

#[test]
fn egress_cidr_rule_with_except() {
    skip_unless_root!("egress_cidr_rule_with_except");
    let node = Node::up("cidr", 14, pods(), &[&baseline("Allow", "Enforce")]);
    let outside = node.world_server(&[200, 201], 80);
    let rule = format!(
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {{name: internet, namespace: frontend}}
spec:
  egress:
    - to: {{cidrs: ["{net}/26"], except: ["{blocked}/32"]}}
      ports: [{{protocol: TCP, port: 80}}]
"#,
        net = outside.net,
        blocked = outside.ips[0],
    );
    node.set_policies(&[&baseline("Allow", "Enforce"), &rule]);
    let agent = node.agent(&[]);
    assert_eq!(node.tcp_ip("frontend/web", outside.ips[1], 80).result, "ok");
    assert_eq!(
        node.tcp_ip("frontend/web", outside.ips[0], 80).result,
        "denied"
    );
    // Egress rules exist for frontend now: other namespaces are not among them.
    assert_eq!(
        node.tcp("frontend/web", "db/postgres", 5432).result,
        "denied"
    );
    let lines = agent.wait_violations(Duration::from_secs(5), |l| l.len() >= 2);
    let w = find(&lines, |l| l["dst"]["ip"] == outside.ips[0].to_string());
    assert_eq!(w.len(), 1, "{}", pretty(&lines));
    assert_eq!(w[0]["direction"], "egress");
    assert_eq!(w[0]["dst"]["namespace"], Value::Null);
    assert_eq!(w[0]["policy"], "NamespaceFirewall/frontend/internet");
}

#[test]
fn namespace_mode_label_overrides_the_default() {
    skip_unless_root!("namespace_mode_label_overrides_the_default");
    let pods = pods().replace(
        "{name: db}",
        "{name: db, labels: {bulkhead.dev/mode: enforce}}",
    );
    let node = Node::up(
        "lbl",
        15,
        &pods,
        &[&baseline("Deny", "Monitor"), &db_from_payments()],
    );
    let agent = node.agent(&[]);
    // db enforces: its ingress side drops (at the source, so the client fails fast).
    assert_eq!(
        node.tcp("frontend/web", "db/postgres", 5432).result,
        "denied"
    );
    // payments monitors: the flow passes and is only audited.
    assert_eq!(node.tcp("frontend/web", "payments/api", 8443).result, "ok");
    agent.wait_violations(Duration::from_secs(5), |l| l.len() >= 2);
    let lines = agent.stop();
    assert_eq!(
        lines.len(),
        2,
        "one line per connection: {}",
        pretty(&lines)
    );
    // Dropped by db's side, which the line names; frontend's monitor-mode denial is in `sides`.
    let pg = line(&lines, "ingress", "postgres", 5432);
    assert_eq!(
        pg[0]["verdict"],
        "DENIED",
        "db is labelled enforce: {}",
        pretty(&lines)
    );
    assert_eq!(pg[0]["policy"], "NamespaceFirewall/db/default");
    assert_eq!(
        sides(pg[0]),
        [
            side("egress", "frontend", "monitor", "default"),
            side("ingress", "db", "enforce", "NamespaceFirewall/db/default"),
        ]
    );
    let api = line(&lines, "egress", "api", 8443);
    assert_eq!(api[0]["verdict"], "AUDIT", "{}", pretty(&lines));
    assert_eq!(
        sides(api[0]),
        [
            side("egress", "frontend", "monitor", "default"),
            side("ingress", "payments", "monitor", "default"),
        ]
    );
}

#[test]
fn ipv6_flows_are_classified_too() {
    skip_unless_root!("ipv6_flows_are_classified_too");
    let node = deny_by_default("six", 16);
    let agent = node.agent(&[]);
    let pg6 = node.ip6("db/postgres");
    assert_eq!(node.tcp_ip("frontend/web", pg6, 5432).result, "denied");
    assert_eq!(node.tcp_ip("payments/api", pg6, 5432).result, "ok");
    agent.wait_violations(Duration::from_secs(5), |l| !l.is_empty());
    let lines = agent.stop();
    let e = line(&lines, "egress", "postgres", 5432);
    assert_eq!((e.len(), lines.len()), (1, 1), "{}", pretty(&lines));
    assert_eq!(e[0]["dst"]["ip"], pg6.to_string());
    assert_eq!(e[0]["src"]["ip"], node.ip6("frontend/web").to_string());
    assert_eq!(e[0]["verdict"], "DENIED");
}

#[test]
fn udp_request_and_reply() {
    skip_unless_root!("udp_request_and_reply");
    let node = deny_by_default("udp", 17);
    let agent = node.agent(&[]);
    // The reply comes back through conntrack although db -> payments is not allowed by policy.
    assert_eq!(node.udp("payments/api", "db/postgres", 5353).result, "ok");
    let r = node.udp("frontend/web", "db/postgres", 5353);
    assert_eq!(r.result, "denied", "{r:?}");
    agent.wait_violations(Duration::from_secs(5), |l| !l.is_empty());
    let lines = agent.stop();
    let e = line(&lines, "egress", "postgres", 5353);
    assert_eq!((e.len(), lines.len()), (1, 1), "{}", pretty(&lines));
    assert_eq!(e[0]["protocol"], "UDP");
    assert_eq!(e[0]["verdict"], "DENIED");
}

#[test]
fn dns_to_the_cluster_dns_service_is_always_allowed() {
    skip_unless_root!("dns_to_the_cluster_dns_service_is_always_allowed");
    let no_egress = r#"
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: lockdown, namespace: frontend}
spec:
  egress: []
"#;
    let node = Node::up(
        "dns",
        18,
        pods(),
        &[&baseline("Deny", "Enforce"), no_egress],
    );
    let agent = node.agent(&[]);
    assert_eq!(
        node.udp("frontend/web", "kube-system/coredns", 53).result,
        "ok"
    );
    assert_eq!(
        node.tcp("frontend/web", "kube-system/coredns", 53).result,
        "ok"
    );
    assert_eq!(
        node.tcp("frontend/web", "db/postgres", 5432).result,
        "denied"
    );
    let lines = agent.wait_violations(Duration::from_secs(5), |l| !l.is_empty());
    assert!(
        find(&lines, |l| l["dst"]["pod"] == "coredns").is_empty(),
        "{}",
        pretty(&lines)
    );
    assert_eq!(
        line(&lines, "egress", "postgres", 5432)[0]["policy"],
        "NamespaceFirewall/frontend/lockdown"
    );
}

#[test]
fn host_to_pod_probes_pass_and_replies_are_not_judged() {
    skip_unless_root!("host_to_pod_probes_pass_and_replies_are_not_judged");
    let no_egress = r#"
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: lockdown, namespace: db}
spec:
  egress: []
  ingress: []
"#;
    let node = Node::up(
        "host",
        19,
        pods(),
        &[&baseline("Deny", "Enforce"), no_egress],
    );
    let agent = node.agent(&[]);
    // A kubelet-style probe from the node: allowed, and the pod's reply is not a new connection.
    assert_eq!(node.tcp_from_host("db/postgres", 5432).result, "ok");
    assert_eq!(
        node.tcp("frontend/web", "db/postgres", 5432).result,
        "denied"
    );
    let lines = agent.wait_violations(Duration::from_secs(5), |l| !l.is_empty());
    assert!(
        find(&lines, |l| l["src"]["pod"] == "postgres").is_empty(),
        "{}",
        pretty(&lines)
    );
}

#[test]
fn editing_the_source_flips_the_verdict_without_a_restart() {
    skip_unless_root!("editing_the_source_flips_the_verdict_without_a_restart");
    let node = Node::up("edit", 20, pods(), &[&baseline("Allow", "Enforce")]);
    let agent = node.agent(&[]);
    assert_eq!(node.tcp("frontend/web", "db/postgres", 5432).result, "ok");
    let applied = agent.logs_with("policy applied").len();
    node.set_policies(&[&baseline("Allow", "Enforce"), &db_from_payments()]);
    agent.wait_for_log_count("policy applied", applied + 1, Duration::from_secs(5));
    assert_eq!(
        node.tcp("frontend/web", "db/postgres", 5432).result,
        "denied"
    );
    assert_eq!(node.tcp("payments/api", "db/postgres", 5432).result, "ok");
    // A broken file is reported and the last good policy stays in force.
    node.write_raw_source("this: is: not: yaml: [");
    agent.wait_for_log(
        "source unusable; the last good policy stays in force",
        Duration::from_secs(5),
    );
    assert_eq!(
        node.tcp("frontend/web", "db/postgres", 5432).result,
        "denied"
    );
    // An invalid object is rejected whole; never accepted, it restricts what it names (frontend's
    // egress admits nothing across namespaces) and the valid ones keep working.
    let bad = r#"
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: broken, namespace: frontend}
spec:
  egress:
    - to: {cidrs: ["10.0.0.0/33"]}
"#;
    node.set_policies(&[&baseline("Allow", "Enforce"), bad]);
    let fail_closed = "policy object rejected; never accepted: what it restricts is enforced fail closed until it is fixed";
    agent.wait_for_log(fail_closed, Duration::from_secs(5));
    let rejected = agent.logs_with(fail_closed);
    let what = rejected[0]["object"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        what.contains("NamespaceFirewall/frontend/broken")
            && what.contains("spec.egress[0].to.cidrs[0]"),
        "{what}"
    );
    assert_eq!(rejected[0]["in_force"], "FailClosed");
    assert_eq!(
        node.tcp("frontend/web", "db/postgres", 5432).result,
        "denied"
    );
    assert_eq!(node.tcp("payments/api", "db/postgres", 5432).result, "ok");
}

#[test]
fn a_broken_object_keeps_its_last_accepted_version_and_a_new_one_fails_closed() {
    skip_unless_root!("a_broken_object_keeps_its_last_accepted_version_and_a_new_one_fails_closed");
    let base = baseline("Allow", "Enforce");
    let node = Node::up("lastok", 21, pods(), &[&base, &db_from_payments()]);
    let agent = node.agent(&[]);
    let probes = |node: &Node| {
        [
            node.tcp("frontend/web", "db/postgres", 5432).result,
            node.tcp("payments/api", "db/postgres", 5432).result,
            node.tcp("frontend/web", "payments/api", 8443).result,
        ]
    };
    assert_eq!(probes(&node), ["denied", "ok", "ok"]);
    // db's object gets a bad port (the case seen on main at ee718d0: db opened to everybody).
    let broken_db = db_from_payments().replace("port: 5432", "port: 70000");
    node.set_policies(&[&base, &broken_db]);
    let kept = "policy object rejected; its last accepted version stays in force until it is fixed";
    agent.wait_for_log(kept, Duration::from_secs(5));
    assert_eq!(agent.logs_with(kept)[0]["in_force"], "LastAcceptedInForce");
    assert_eq!(
        probes(&node),
        ["denied", "ok", "ok"],
        "db's last version holds"
    );
    // payments' first object, never valid: its ingress admits nothing across namespaces.
    let broken_payments = ingress_from("new", "payments", &["frontend"], &[], &[("TCP", 0)]);
    node.set_policies(&[&base, &broken_db, &broken_payments]);
    agent.wait_for_log(
        "policy object rejected; never accepted: what it restricts is enforced fail closed until it is fixed",
        Duration::from_secs(5),
    );
    assert_eq!(probes(&node), ["denied", "ok", "denied"]);
    // Both fixed: applied as written.
    let applied = agent.logs_with("policy applied").len();
    let fixed = ingress_from("new", "payments", &["frontend"], &[], &[("TCP", 8443)]);
    node.set_policies(&[&base, &db_from_payments(), &fixed]);
    agent.wait_for_log_count("policy applied", applied + 1, Duration::from_secs(5));
    assert_eq!(probes(&node), ["denied", "ok", "ok"]);
    let lines = agent.stop();
    let payments = line(&lines, "ingress", "api", 8443);
    assert_eq!(
        (&payments[0]["verdict"], &payments[0]["policy"]),
        (&json!("DENIED"), &json!("NamespaceFirewall/payments/new")),
        "{}",
        pretty(&lines)
    );
}

#[test]
fn a_storm_of_denied_connections_folds_into_few_lines_whose_counts_add_up() {
    skip_unless_root!("a_storm_of_denied_connections_folds_into_few_lines_whose_counts_add_up");
    let node = deny_by_default("storm", 21);
    let agent = node.agent(&[]);
    let storm = node.storm("frontend/web", "db/postgres", 5432, 10_000);
    assert_eq!(
        storm.get("denied").copied().unwrap_or(0),
        10_000,
        "{storm:?}"
    );
    let lines = agent.stop();
    let e = line(&lines, "egress", "postgres", 5432);
    let i = line(&lines, "ingress", "postgres", 5432);
    let sum = |v: &[&Value]| {
        v.iter()
            .map(|l| l["count"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(sum(&e), 10_000, "{}", pretty(&lines));
    assert!(i.is_empty(), "dropped at the source: {}", pretty(&lines));
    assert!(
        e.iter().all(|l| sides(l).len() == 2),
        "each line names both sides: {}",
        pretty(&lines)
    );
    assert!(e.len() <= 20, "folded into a handful of lines: {}", e.len());
    assert!(
        lines.iter().all(|l| l["type"] == "violation"),
        "no events were lost: {}",
        pretty(&lines)
    );
}

#[test]
fn a_policy_that_overflows_a_map_is_refused_and_the_previous_one_stays() {
    skip_unless_root!("a_policy_that_overflows_a_map_is_refused_and_the_previous_one_stays");
    let node = deny_by_default("full", 22);
    // How many policy entries this policy takes...
    let entries = {
        let probe = node.agent(&[]);
        let applied = probe.logs_with("policy applied");
        let n = applied[0]["policy_entries"]
            .as_u64()
            .expect("policy_entries");
        drop(probe.stop());
        n
    };
    // ...and a policy map with room for exactly that: any change needs both slots and overflows.
    let cap = entries.to_string();
    let agent = node.agent(&["--policy-entries", &cap]);
    assert_eq!(node.tcp("payments/api", "db/postgres", 5432).result, "ok");
    assert_eq!(
        node.tcp("frontend/web", "db/postgres", 5432).result,
        "denied"
    );
    node.set_policies(&[
        &baseline("Deny", "Enforce"),
        &db_from_payments(),
        &web_to_api(),
    ]);
    agent.wait_for_log("policy not applied", Duration::from_secs(5));
    let err = agent.logs_with("policy not applied")[0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        err.contains("map POLICY") && err.contains("--policy-entries") && err.contains(&cap),
        "{err}"
    );
    // The previous policy is still the one enforced: nothing half-written leaked through (the
    // refused policy's new rule, web -> api, is not in force).
    expect_tcp(
        &node,
        &[
            ("payments/api", "db/postgres", 5432, "ok"),
            ("frontend/web", "db/postgres", 5432, "denied"),
            ("frontend/web", "payments/api", 8443, "denied"),
        ],
    );
}

#[test]
fn an_empty_source_file_keeps_the_last_good_policy() {
    skip_unless_root!("an_empty_source_file_keeps_the_last_good_policy");
    let node = Node::up(
        "empty",
        20,
        pods(),
        &[&baseline("Allow", "Enforce"), &db_from_payments()],
    );
    let agent = node.agent(&[]);
    assert_eq!(
        node.tcp("frontend/web", "db/postgres", 5432).result,
        "denied"
    );
    let applied = agent.logs_with("policy applied").len();
    // The transient state of `kubectl get ... > FILE`: truncated to nothing, then a lone
    // separator. Neither is a cluster; applying either would delete every entry.
    for text in ["", "---\n"] {
        node.write_raw_source(text);
        agent.wait_for_log_count(
            "source unusable; the last good policy stays in force",
            if text.is_empty() { 1 } else { 2 },
            Duration::from_secs(5),
        );
        assert_eq!(
            node.tcp("frontend/web", "db/postgres", 5432).result,
            "denied",
            "after writing {text:?}"
        );
    }
    let unusable = agent.logs_with("source unusable; the last good policy stays in force");
    assert!(
        unusable[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("holds no objects") && e.contains("atomically")),
        "{unusable:?}"
    );
    assert_eq!(agent.logs_with("policy applied").len(), applied);
}

#[test]
fn a_wrong_node_name_is_not_ready_and_names_the_nodes_it_saw() {
    skip_unless_root!("a_wrong_node_name_is_not_ready_and_names_the_nodes_it_saw");
    let node = Node::up("nodenm", 20, pods(), &[&baseline("Deny", "Enforce")]);
    let (port, addr) = metrics_endpoint();
    let agent = Agent::start_unready(
        node.source(),
        node.testbed().cgroup_root(),
        "node-l",
        &["--metrics-addr", &addr],
    );
    agent.wait_for_log(
        "pod cgroups on this node belong to no Pod of this node: is --node-name right?",
        Duration::from_secs(5),
    );
    let unknown = agent.logs_with(
        "no Node object and no Pod's spec.nodeName is this node: check --node-name (NODE_NAME); not ready, nothing on this node is classified as a pod",
    );
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0]["node"], "node-l");
    assert!(
        unknown[0]["seen"]
            .as_str()
            .is_some_and(|s| s.contains("node-1")),
        "{unknown:?}"
    );
    // The kubelet runs this node's five pods; none of them is a Pod of "node-l".
    let unmatched = agent
        .logs_with("pod cgroups on this node belong to no Pod of this node: is --node-name right?");
    assert!(
        unmatched
            .first()
            .is_some_and(|l| l["count"].as_u64() == Some(5)),
        "{unmatched:?}"
    );
    assert_eq!(http_status(port, "/readyz"), Some(503));
    assert!(agent.logs_with("ready").is_empty());
}

#[test]
fn the_flow_log_records_each_allowed_connection_across_namespaces_once() {
    skip_unless_root!("the_flow_log_records_each_allowed_connection_across_namespaces_once");
    let node = Node::up("flows", 22, pods(), &[&db_from_payments()]);
    let (port, addr) = metrics_endpoint();
    let agent = node.agent(&["--flow-log", "all", "--metrics-addr", &addr]);
    // Every connection passes (monitor mode). web -> api (by the default) and api -> postgres
    // (by db's rule) are allowed across namespaces: one flow line each. worker -> api (the same
    // namespace) is always allowed, so never recorded, as DNS below. web -> postgres is denied
    // by db's rule: a violation line, not a flow line.
    expect_tcp(
        &node,
        &[
            ("frontend/web", "payments/api", 8443, "ok"),
            ("payments/api", "db/postgres", 5432, "ok"),
            ("payments/worker", "payments/api", 8443, "ok"),
            ("frontend/web", "db/postgres", 5432, "ok"),
        ],
    );
    assert_eq!(
        node.udp("frontend/web", "kube-system/coredns", 53).result,
        "ok"
    );
    agent.wait_violations(Duration::from_secs(5), |l| l.len() >= 3);
    let flows = sample(
        port,
        "bulkhead_flows_allowed_total{src_namespace=\"frontend\",dst_namespace=\"payments\"}",
    );
    let lines = agent.stop();
    assert_eq!(lines.len(), 3, "{}", pretty(&lines));
    let flow = |dst: &str| find(&lines, |l| l["type"] == "flow" && l["dst"]["pod"] == dst);
    let api = flow("api");
    assert_eq!(api.len(), 1, "{}", pretty(&lines));
    let fields = ["type", "verdict", "direction", "policy", "sides"];
    let got: serde_json::Map<String, Value> = fields
        .iter()
        .map(|f| ((*f).to_owned(), api[0][*f].clone()))
        .collect();
    assert_eq!(
        Value::Object(got),
        json!({"type": "flow", "verdict": "ALLOWED", "direction": "egress", "policy": "default", "sides": []})
    );
    assert_eq!(api[0]["src"]["pod"], "web");
    let pg = flow("postgres");
    assert_eq!(pg.len(), 1, "{}", pretty(&lines));
    assert_eq!(pg[0]["policy"], "NamespaceFirewall/db/default");
    let v = find(&lines, |l| l["type"] == "violation");
    assert_eq!((v.len(), &v[0]["src"]["pod"]), (1, &json!("web")));
    assert_eq!(flows, 1.0);
}

/// The agent flags enforcing both standard APIs, as an operator enables them.
const STANDARD_APIS: [&str; 2] = [
    "--policy-apis",
    "bulkhead,networkpolicy,clusternetworkpolicy",
];

#[test]
fn a_pod_isolated_by_a_network_policy_gets_its_same_namespace_replies_and_nothing_else() {
    skip_unless_root!(
        "a_pod_isolated_by_a_network_policy_gets_its_same_namespace_replies_and_nothing_else"
    );
    // api's ingress is isolated by a NetworkPolicy that admits nothing; worker is not selected.
    // NetworkPolicy is stateful: api's own connection to worker (the same namespace) and its
    // replies pass, while worker's connection to api is a new connection api's ingress refuses.
    let isolate_api = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: payments}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
"#;
    let pods = pods().replace(
        "labels: {app: worker}, serve: [{protocol: TCP, port: 8443}]",
        "labels: {app: worker}, serve: [{protocol: TCP, port: 8443}, {protocol: UDP, port: 8443}]",
    );
    let node = Node::up(
        "nprep",
        45,
        &pods,
        &[&baseline("Allow", "Enforce"), isolate_api],
    );
    let agent = node.agent(&STANDARD_APIS);
    expect_tcp(
        &node,
        &[
            ("payments/api", "payments/worker", 8443, "ok"),
            ("payments/worker", "payments/api", 8443, "denied"),
        ],
    );
    assert_eq!(
        node.udp("payments/api", "payments/worker", 8443).result,
        "ok"
    );
    agent.wait_violations(Duration::from_secs(5), |l| !l.is_empty());
    let lines = agent.stop();
    assert_eq!(lines.len(), 1, "{}", pretty(&lines));
    assert_eq!(
        (
            &lines[0]["src"]["pod"],
            &lines[0]["dst"]["pod"],
            &lines[0]["policy"]
        ),
        (
            &json!("worker"),
            &json!("api"),
            &json!("NetworkPolicy/payments/api-ingress")
        ),
        "{}",
        pretty(&lines)
    );
}

#[test]
fn a_network_policy_on_the_dns_pods_restricts_dns_from_clients_on_the_same_node() {
    skip_unless_root!(
        "a_network_policy_on_the_dns_pods_restricts_dns_from_clients_on_the_same_node"
    );
    // DNS to the cluster DNS Service is exempt from Bulkhead's own rules, but a NetworkPolicy
    // selecting the DNS pods judges their ingress: only frontend may query them. The clients are
    // on the DNS pod's node, where its ingress program sees the query after the client's egress.
    let dns_from_frontend = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dns-clients, namespace: kube-system}
spec:
  podSelector: {matchLabels: {k8s-app: kube-dns}}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: frontend}}}]
      ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
"#;
    let node = Node::up(
        "npdns",
        46,
        pods(),
        &[&baseline("Allow", "Enforce"), dns_from_frontend],
    );
    let agent = node.agent(&STANDARD_APIS);
    let dns = "kube-system/coredns";
    assert_eq!(node.udp("frontend/web", dns, 53).result, "ok");
    assert_eq!(node.tcp("frontend/web", dns, 53).result, "ok");
    assert_eq!(node.udp("payments/api", dns, 53).result, "denied");
    assert_eq!(node.tcp("payments/api", dns, 53).result, "denied");
    agent.wait_violations(Duration::from_secs(5), |l| l.len() >= 2);
    let lines = agent.stop();
    let denied = find(&lines, |l| {
        l["src"]["pod"] == "api"
            && l["dst"]["pod"] == "coredns"
            && l["policy"] == "NetworkPolicy/kube-system/dns-clients"
            && l["verdict"] == "DENIED"
    });
    assert_eq!(denied.len(), 2, "{}", pretty(&lines));
    assert_eq!(lines.len(), 2, "{}", pretty(&lines));
}

/// Adds kube-proxy's rewrite inside `pod`'s network namespace: TCP to `vip`:`port` goes to
/// `backend`:`target`.
fn dnat(
    node: &Node,
    pod: &str,
    vip: std::net::IpAddr,
    port: u16,
    backend: std::net::IpAddr,
    target: u16,
) {
    let netns = node
        .testbed()
        .pod(pod)
        .expect("pod")
        .netns
        .clone()
        .expect("a pod network namespace");
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", &netns, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp",
        ])
        .args([
            "-d",
            &vip.to_string(),
            "--dport",
            &port.to_string(),
            "-j",
            "DNAT",
        ])
        .args(["--to-destination", &format!("{backend}:{target}")])
        .output()
        .expect("iptables");
    assert!(
        out.status.success(),
        "iptables: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_network_policy_port_is_the_backends_through_a_service_cluster_ip() {
    skip_unless_root!("a_network_policy_port_is_the_backends_through_a_service_cluster_ip");
    // The Service maps port 80 to api's 8443, which the NetworkPolicy names: `connect()` sees
    // the cluster IP and port 80, the packets api's port after the DNAT. frontend may connect,
    // payments' worker (not listed) may not.
    let api_from_frontend = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-frontend, namespace: payments}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: frontend}}}]
      ports: [{protocol: TCP, port: 8443}]
"#;
    let node = Node::up(
        "npsvc",
        47,
        pods(),
        &[&baseline("Allow", "Enforce"), api_from_frontend],
    );
    let vip = node
        .testbed()
        .service_ips("payments/payments-api")
        .expect("cluster IP")[0];
    let api = node.ip("payments/api");
    for client in ["frontend/web", "payments/worker"] {
        dnat(&node, client, vip, 80, api, 8443);
    }
    let agent = node.agent(&STANDARD_APIS);
    assert_eq!(node.tcp_ip("frontend/web", vip, 80).result, "ok");
    // Dropped on its SYN (after the DNAT), where the kernel gives the sender no error: the
    // probe times out instead of failing fast as a refused `connect()` would.
    assert_eq!(node.tcp_ip("payments/worker", vip, 80).result, "timeout");
    agent.wait_violations(Duration::from_secs(5), |l| !l.is_empty());
    let lines = agent.stop();
    // One line per SYN the client's kernel retransmits: each is a new attempt, judged again.
    assert!(!lines.is_empty());
    let policy = json!("NetworkPolicy/payments/api-from-frontend");
    let want = (
        &json!("worker"),
        &json!("api"),
        &json!(8443),
        &policy,
        &json!("DENIED"),
    );
    for l in &lines {
        let got = (
            &l["src"]["pod"],
            &l["dst"]["pod"],
            &l["dst"]["port"],
            &l["policy"],
            &l["verdict"],
        );
        assert_eq!(got, want, "{}", pretty(&lines));
    }
}

#[test]
fn kubelet_probes_from_the_pod_networks_gateway_reach_a_pod_a_network_policy_isolates() {
    skip_unless_root!(
        "kubelet_probes_from_the_pod_networks_gateway_reach_a_pod_a_network_policy_isolates"
    );
    // On a bridge CNI the node reaches its pods from the bridge's address, which the Node object
    // does not list (it says InternalIP 192.0.2.10 here, the node's other interface). Traffic
    // from the pod's own node stays allowed under a NetworkPolicy; the rest is isolated.
    let db_from_payments = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: db}
spec:
  podSelector: {}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: payments}}}]
"#;
    let node = Node::up("npkube", 48, pods(), &[]);
    let mut objects = node
        .testbed()
        .source_objects(&common::node::docs(&[
            &baseline("Allow", "Enforce"),
            db_from_payments,
        ]))
        .expect("objects");
    assert_eq!(objects[0]["kind"], "Node");
    objects[0]["status"]["addresses"] =
        serde_yaml::from_str(r#"[{type: InternalIP, address: 192.0.2.10}]"#).expect("addresses");
    let text: Vec<String> = objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("YAML"))
        .collect();
    node.write_raw_source(&text.join("---\n"));
    let agent = node.agent(&STANDARD_APIS);
    assert_eq!(node.tcp_from_host("db/postgres", 5432).result, "ok");
    expect_tcp(
        &node,
        &[
            ("payments/api", "db/postgres", 5432, "ok"),
            ("frontend/web", "db/postgres", 5432, "denied"),
        ],
    );
    agent.wait_violations(Duration::from_secs(5), |l| !l.is_empty());
    let lines = agent.stop();
    assert_eq!(lines.len(), 1, "{}", pretty(&lines));
    assert_eq!(lines[0]["src"]["pod"], "web", "{}", pretty(&lines));
}
