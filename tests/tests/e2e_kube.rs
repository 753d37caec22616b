//! End-to-end tests of `--source kube`: the real agent talks to the API server emulator through
//! the unmodified kube client, and real packets between simulated pods show what it enforces.
//! Needs root; skips loudly otherwise (CI runs as root).
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
mod common;

use std::{thread, time::Duration};

use bulkhead_tests::{
    Protocol,
    policy::{self, admit, ingress_from},
    skip_unless_root,
};
use common::{
    agent::pretty,
    find,
    http::{http_get, http_status, sample},
    kube_node::{AGENT_NAMESPACE, KubeNode, object, wait_for},
};
use serde_json::{Value, json};

/// Three namespaces, one pod each, all serving TCP 80.
const PODS: &str = r#"
namespaces:
  - {name: a}
  - {name: b}
  - {name: c}
pods:
  - {name: client, namespace: a, labels: {app: client}, serve: [{protocol: TCP, port: 80}]}
  - {name: server, namespace: b, labels: {app: server}, serve: [{protocol: TCP, port: 80}]}
  - {name: server, namespace: c, labels: {app: server}, serve: [{protocol: TCP, port: 80}]}
"#;

fn baseline(mode: &str) -> String {
    policy::baseline("Deny", mode)
}

/// b admits a on port 80.
fn b_from_a() -> String {
    admit("b", "a", 80)
}

/// c admits a on port 80.
fn c_from_a() -> String {
    admit("c", "a", 80)
}

/// The outcome of a TCP probe a -> b or a -> c.
fn to(node: &KubeNode, ns: &str) -> String {
    node.tcp("a/client", &format!("{ns}/server"), 80)
        .result
        .as_str()
        .to_owned()
}

/// Waits until [`to`] `ns` gives `result`, which must take under a second: how soon a change in
/// the API (`change`) is enforced on new connections.
fn enforced_within_a_second(node: &KubeNode, change: &str, ns: &str, result: &str) {
    let (_, took) = wait_for(Duration::from_secs(5), change, || {
        (to(node, ns) == result).then_some(())
    });
    eprintln!("{change}: {took:?}");
    assert!(took < Duration::from_secs(1), "{change} took {took:?}");
}

#[test]
fn a_policy_created_through_the_api_is_enforced_within_a_second() {
    skip_unless_root!("a_policy_created_through_the_api_is_enforced_within_a_second");
    let node = KubeNode::up("kapi", 30, PODS, &[&baseline("Enforce")], &[]);
    let (agent, port) = node.agent_with_metrics();
    assert_eq!(http_status(port, "/readyz"), Some(200));
    assert_eq!(http_status(port, "/healthz"), Some(200));
    let denied_ab = r#"bulkhead_violations_total{verdict="DENIED",direction="egress",src_namespace="a",dst_namespace="b"}"#;
    let connect_denied = r#"bulkhead_datapath_packets_total{reason="connect_denied"}"#;
    let (v0, c0) = (sample(port, denied_ab), sample(port, connect_denied));
    assert_eq!(to(&node, "b"), "denied");
    assert_eq!(to(&node, "b"), "denied");
    // Metrics move with the traffic (the kernel counters are read every second).
    wait_for(
        Duration::from_secs(5),
        "metrics counted the denials",
        || {
            (sample(port, denied_ab) >= v0 + 2.0 && sample(port, connect_denied) >= c0 + 2.0)
                .then_some(())
        },
    );
    let (_, body) = http_get(port, "/metrics").expect("scrape");
    for family in [
        "bulkhead_map_fill_ratio{map=\"POLICY\"}",
        "bulkhead_policy_objects{state=\"accepted\"} 1",
        "bulkhead_source_synced 1",
        "bulkhead_policy_last_applied_timestamp_seconds",
        "bulkhead_events_lost_total",
    ] {
        assert!(body.contains(family), "no {family} in:\n{body}");
    }

    node.apply(&b_from_a());
    enforced_within_a_second(&node, "policy created -> a -> b allowed", "b", "ok");
    assert_eq!(to(&node, "c"), "denied", "only b opened");

    // Status: one agent (the Lease holder) reports the object as accepted.
    let (cond, _) = wait_for(Duration::from_secs(10), "Accepted condition", || {
        node.accepted("NamespaceFirewall", Some("b"), "from-a")
    });
    assert_eq!(cond["status"], "True", "{cond}");
    assert_eq!(cond["observedGeneration"], 1, "{cond}");
    let lease = node
        .api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            Some(AGENT_NAMESPACE),
            "bulkhead-status",
        )
        .expect("status lease");
    assert_eq!(lease["spec"]["holderIdentity"], "node-1");

    // The agent watched only live pods, with a field selector.
    let pod_watches: Vec<_> = node
        .api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/pods")
        .collect();
    assert!(!pod_watches.is_empty());
    assert!(
        pod_watches
            .iter()
            .all(|r| r.query.contains("fieldSelector=status.phase")),
        "{:?}",
        pod_watches.iter().map(|r| &r.query).collect::<Vec<_>>()
    );
    drop(agent);
}

#[test]
fn a_namespace_label_flips_monitor_and_enforce() {
    skip_unless_root!("a_namespace_label_flips_monitor_and_enforce");
    let node = KubeNode::up("klbl", 31, PODS, &[&baseline("Monitor")], &[]);
    let agent = node.agent(&[]);
    assert_eq!(to(&node, "b"), "ok", "monitor lets it through");
    let namespace = |mode: &str| {
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "a", "labels": {"kubernetes.io/metadata.name": "a", "bulkhead.dev/mode": mode}}})
    };
    node.api.apply(namespace("enforce")).expect("label a");
    enforced_within_a_second(&node, "label -> a enforces", "b", "denied");
    node.api.apply(namespace("monitor")).expect("relabel a");
    wait_for(Duration::from_secs(5), "a monitors again", || {
        (to(&node, "b") == "ok").then_some(())
    });
    let lines = agent.stop();
    let egress = |verdict: &str| {
        find(&lines, |l| {
            l["direction"] == "egress" && l["verdict"] == verdict && l["dst"]["namespace"] == "b"
        })
        .len()
    };
    assert!(egress("AUDIT") >= 1, "{}", pretty(&lines));
    assert!(egress("DENIED") >= 1, "{}", pretty(&lines));
}

#[test]
fn a_mode_label_in_any_case_applies_and_an_invalid_one_keeps_the_mode() {
    skip_unless_root!("a_mode_label_in_any_case_applies_and_an_invalid_one_keeps_the_mode");
    let node = KubeNode::up("kcase", 36, PODS, &[&baseline("Monitor")], &[]);
    let (agent, port) = node.agent_with_metrics();
    assert_eq!(to(&node, "b"), "ok", "monitor lets it through");
    // ClusterFirewall's `defaults.mode` is spelled `Enforce`: the label may be too.
    node.kubectl(&["label", "namespace", "a", "bulkhead.dev/mode=Enforce"]);
    wait_for(Duration::from_secs(5), "a enforces", || {
        (to(&node, "b") == "denied").then_some(())
    });
    // A typo keeps the last valid mode: enforcement never turns off by mistake.
    node.kubectl(&[
        "label",
        "--overwrite",
        "namespace",
        "a",
        "bulkhead.dev/mode=Enforcing",
    ]);
    let message = "invalid bulkhead.dev/mode label (expected enforce, monitor or off, in any case); the namespace keeps its mode";
    agent.wait_for_log(message, Duration::from_secs(5));
    let warned = agent.logs_with(message);
    assert_eq!(
        (
            &warned[0]["namespace"],
            &warned[0]["value"],
            &warned[0]["mode"],
            &warned[0]["from"]
        ),
        (
            &json!("a"),
            &json!("Enforcing"),
            &json!("enforce"),
            &json!("last valid label")
        ),
        "{}",
        pretty(&warned)
    );
    assert_eq!(to(&node, "b"), "denied");
    assert_eq!(sample(port, "bulkhead_invalid_mode_labels"), 1.0);
    // The agent holding the status Lease tells the Namespace (cluster-scoped: in `default`).
    let (events, _) = wait_for(Duration::from_secs(10), "an Event on the Namespace", || {
        Some(node.events_about("default", "Namespace", "a")).filter(|e| !e.is_empty())
    });
    assert_eq!(events[0]["reason"], "InvalidModeLabel", "{events:?}");
    // Fixed: counted no more.
    node.kubectl(&[
        "label",
        "--overwrite",
        "namespace",
        "a",
        "bulkhead.dev/mode=MONITOR",
    ]);
    wait_for(Duration::from_secs(5), "a monitors", || {
        (to(&node, "b") == "ok").then_some(())
    });
    assert_eq!(sample(port, "bulkhead_invalid_mode_labels"), 0.0);
    drop(agent);
}

#[test]
fn a_new_pod_is_classified_and_a_deleted_pod_is_forgotten() {
    skip_unless_root!("a_new_pod_is_classified_and_a_deleted_pod_is_forgotten");
    // a/client runs, but the API does not know it yet: its traffic is nobody's (world), and
    // ingress from the world is not restricted.
    let node = KubeNode::up("kpod", 32, PODS, &[&baseline("Enforce")], &["a/client"]);
    let agent = node.agent(&[]);
    assert_eq!(to(&node, "b"), "ok");

    let pod = node.pod_object("a/client");
    node.api.apply(pod).expect("create pod");
    enforced_within_a_second(&node, "pod created -> classified", "b", "denied");
    let lines = agent.wait_violations(Duration::from_secs(3), |l| {
        l.iter()
            .any(|l| l["verdict"] == "DENIED" && l["src"]["pod"] == "client")
    });
    let line = find(&lines, |l| l["src"]["pod"] == "client")[0].clone();
    assert_eq!(
        (&line["src"]["namespace"], &line["dst"]["namespace"]),
        (&json!("a"), &json!("b")),
        "{line}"
    );

    // A container restart: a new cgroup the agent has not discovered yet. Its packets are still
    // identified by the pod's address (so never let through), and within the rediscovery
    // period (1 s) by the cgroup itself (refused at connect()).
    let cgroup = node
        .testbed()
        .new_container_cgroup("a/client", "restarted")
        .expect("new container cgroup");
    let target = node
        .testbed()
        .target("b/server", Protocol::Tcp, 80)
        .expect("target");
    let from_new = || {
        node.testbed()
            .probe_in("a/client", &cgroup, target, Duration::from_millis(300))
            .expect("probe")
            .result
    };
    let started = std::time::Instant::now();
    let first = from_new();
    assert_ne!(
        first.as_str(),
        "ok",
        "a restarted container slipped through"
    );
    let (_, _) = wait_for(
        Duration::from_secs(5),
        "restarted container's cgroup classified",
        || (from_new().as_str() == "denied").then_some(()),
    );
    let took = started.elapsed();
    eprintln!("container restarted -> cgroup classified: {took:?} (first probe: {first:?})");
    assert!(
        took < Duration::from_secs(2),
        "cgroup discovery took {took:?}"
    );

    node.api
        .delete("v1", "Pod", Some("a"), "client")
        .expect("delete pod");
    enforced_within_a_second(&node, "pod deleted -> forgotten", "b", "ok");
}

#[test]
fn an_api_outage_keeps_enforcement_and_changes_made_during_it_apply_after() {
    skip_unless_root!("an_api_outage_keeps_enforcement_and_changes_made_during_it_apply_after");
    let node = KubeNode::up("kout", 33, PODS, &[&baseline("Enforce"), &b_from_a()], &[]);
    let (agent, port) = node.agent_with_metrics();
    assert_eq!(
        (to(&node, "b"), to(&node, "c")),
        ("ok".into(), "denied".into())
    );

    node.api.stop();
    // The agent notices (its watches fail) but keeps the last known policy.
    agent.wait_for_log(
        "watch failed; retrying with backoff, the last known state stays in force",
        Duration::from_secs(10),
    );
    for _ in 0..5 {
        assert_eq!(
            (to(&node, "b"), to(&node, "c")),
            ("ok".into(), "denied".into())
        );
        thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        http_status(port, "/readyz"),
        Some(200),
        "still serving its last policy"
    );
    // Changes while the API is down (they reach the agent when it comes back).
    node.api.apply(object(&c_from_a())).expect("open c");
    node.api
        .delete(
            "bulkhead.dev/v1alpha1",
            "NamespaceFirewall",
            Some("b"),
            "from-a",
        )
        .expect("close b");
    assert_eq!(
        (to(&node, "b"), to(&node, "c")),
        ("ok".into(), "denied".into())
    );

    node.api.restart().expect("API back");
    let (_, took) = wait_for(
        Duration::from_secs(40),
        "changes applied after the outage",
        || (to(&node, "b") == "denied" && to(&node, "c") == "ok").then_some(()),
    );
    eprintln!("API back -> changes applied: {took:?}");
}

#[test]
fn a_forced_relist_keeps_every_verdict() {
    skip_unless_root!("a_forced_relist_keeps_every_verdict");
    let node = KubeNode::up("kgone", 34, PODS, &[&baseline("Enforce"), &b_from_a()], &[]);
    let agent = node.agent(&[]);
    let relisted_before = agent.logs_with("relisted").len();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let wrong = thread::scope(|s| {
        let prober = s.spawn(|| {
            let mut wrong = Vec::new();
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || rounds < 10 {
                let got = (to(&node, "b"), to(&node, "c"));
                if got != ("ok".to_owned(), "denied".to_owned()) {
                    wrong.push(got);
                }
                rounds += 1;
            }
            wrong
        });
        // Every open watch ends with 410 Gone and resuming from the old resourceVersion is refused:
        // the agent must list everything again.
        node.api.compact();
        agent.wait_for_log_count("relisted", relisted_before + 6, Duration::from_secs(40));
        thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        prober.join().expect("prober")
    });
    assert!(
        wrong.is_empty(),
        "wrong verdicts during the relist: {wrong:?}"
    );
    // And the watches work again afterwards.
    node.apply(&c_from_a());
    wait_for(Duration::from_secs(5), "change after relist", || {
        (to(&node, "c") == "ok").then_some(())
    });
}

#[test]
fn an_invalid_object_is_refused_in_its_status_while_valid_ones_keep_working() {
    skip_unless_root!("an_invalid_object_is_refused_in_its_status_while_valid_ones_keep_working");
    // Another agent holds the status Lease: this one must not write status.
    let now = time_now();
    let other = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "bulkhead-status", "namespace": AGENT_NAMESPACE},
        "spec": {"holderIdentity": "node-2", "leaseDurationSeconds": 3600, "acquireTime": now, "renewTime": now},
    });
    let broken = ingress_from("typo", "c", &["a"], &[], &[("TCP", 70000)]);
    let node = KubeNode::up(
        "kbad",
        35,
        PODS,
        &[&baseline("Enforce"), &b_from_a(), &broken],
        &[],
    );
    node.api.apply(other).expect("lease of another agent");
    let agent = node.agent(&[]);
    assert_eq!(
        (to(&node, "b"), to(&node, "c")),
        ("ok".into(), "denied".into())
    );
    // Never accepted: c admits nothing across namespaces on ingress (docs/design.md#invalid-objects).
    let rejected = agent.logs_with(
        "policy object rejected; never accepted: what it restricts is enforced fail closed until it is fixed",
    );
    assert!(
        rejected.iter().any(|l| l["object"]
            .as_str()
            .is_some_and(|o| o.contains("NamespaceFirewall/c/typo")
                && o.contains("spec.ingress[0].ports[0].port"))),
        "{}",
        pretty(&rejected)
    );
    thread::sleep(Duration::from_secs(2));
    assert!(
        node.accepted("NamespaceFirewall", Some("b"), "from-a")
            .is_none(),
        "status written without holding the Lease"
    );

    // The other agent goes away: this one takes the Lease over and reports.
    node.api
        .delete(
            "coordination.k8s.io/v1",
            "Lease",
            Some(AGENT_NAMESPACE),
            "bulkhead-status",
        )
        .expect("release lease");
    let (bad, _) = wait_for(
        Duration::from_secs(15),
        "status of the broken object",
        || node.accepted("NamespaceFirewall", Some("c"), "typo"),
    );
    assert_eq!(
        (&bad["status"], &bad["reason"]),
        (&json!("False"), &json!("FailClosed")),
        "{bad}"
    );
    assert!(
        bad["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("InvalidSpec: spec.ingress[0].ports[0].port")),
        "{bad}"
    );
    // A Warning Event on the object says the same, where `kubectl describe` looks.
    let (events, _) = wait_for(Duration::from_secs(5), "an Event on the object", || {
        Some(node.events_about("c", "NamespaceFirewall", "typo")).filter(|e| !e.is_empty())
    });
    assert_eq!(
        (&events[0]["type"], &events[0]["reason"], &events[0]["note"]),
        (&json!("Warning"), &json!("FailClosed"), &bad["message"]),
        "{events:?}"
    );
    let (good, _) = wait_for(Duration::from_secs(5), "status of the valid object", || {
        node.accepted("NamespaceFirewall", Some("b"), "from-a")
    });
    assert_eq!(good["status"], "True", "{good}");
    let (cfw, _) = wait_for(
        Duration::from_secs(5),
        "status of the ClusterFirewall",
        || node.accepted("ClusterFirewall", None, "baseline"),
    );
    assert_eq!(cfw["status"], "True", "{cfw}");

    // Fixing the object flips its condition and opens the flow.
    node.apply(&broken.replace("70000", "80"));
    wait_for(Duration::from_secs(5), "fixed object applied", || {
        (to(&node, "c") == "ok").then_some(())
    });
    wait_for(Duration::from_secs(10), "fixed object accepted", || {
        node.accepted("NamespaceFirewall", Some("c"), "typo")
            .filter(|c| c["status"] == "True" && c["observedGeneration"] == 2)
    });

    // Broken again: now its last accepted generation (2) stays in force, so the flow it admits
    // stays open and everything else stays closed.
    node.apply(&broken.replace("70000", "99999"));
    let (again, _) = wait_for(Duration::from_secs(10), "broken again", || {
        node.accepted("NamespaceFirewall", Some("c"), "typo")
            .filter(|c| c["observedGeneration"] == 3)
    });
    assert_eq!(
        (&again["status"], &again["reason"]),
        (&json!("False"), &json!("LastAcceptedInForce")),
        "{again}"
    );
    assert_eq!(to(&node, "c"), "ok");
    assert_eq!(
        agent
            .logs_with(
                "policy object rejected; its last accepted version stays in force until it is fixed"
            )
            .len(),
        1
    );
    drop(agent);
}

/// Now as an RFC 3339 timestamp.
fn time_now() -> Value {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format time");
    json!(now)
}
