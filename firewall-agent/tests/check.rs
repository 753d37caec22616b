//! `firewall-agent check` as a user runs it, on the shipped examples (`deploy/examples/*`), the
//! testbed scenarios (`tests/scenarios/*.yaml`) and the API server emulator (`--source kube`):
//! exit status, the rule, step and mode named per side, and the warnings. Every expected verdict
//! is worked out from docs/design.md#policy-semantics (the reasoning is next to it), never taken
//! from the program's output. No root needed.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use bulkhead_tests::{ApiServer, Scenario, source::scenario_objects};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// A path no other call (of any test of this run) gets, in cargo's scratch directory.
fn scratch(what: &str) -> PathBuf {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("check-{pid}-{n}-{what}"))
}

/// Runs `firewall-agent check ARGS` without a KUBECONFIG from the environment.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_firewall-agent"))
        .arg("check")
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("BULKHEAD_MODE")
        .env_remove("BULKHEAD_DNS_SERVICE")
        .output()
        .expect("run firewall-agent")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A judged connection: the `-o json` report and the exit status.
struct Checked {
    code: Option<i32>,
    json: Value,
    stderr: String,
}

impl Checked {
    fn result(&self) -> &str {
        self.json["result"].as_str().unwrap_or_default()
    }

    /// The only judgement's side (`egress` or `ingress`).
    fn side(&self, side: &str) -> &Value {
        let j = self.json["judgements"].as_array().expect("judgements");
        assert_eq!(j.len(), 1, "{:#}", self.json);
        &j[0][side]
    }

    /// (verdict, policy, step, mode, mode_from, result) of a side.
    fn decided(&self, side: &str) -> (&str, &str, &str, &str, &str, &str) {
        let s = self.side(side);
        let f = |k: &str| s[k].as_str().unwrap_or_default();
        (
            f("verdict"),
            f("policy"),
            f("step"),
            f("mode"),
            f("mode_from"),
            f("result"),
        )
    }

    fn warned(&self, needle: &str) -> bool {
        let in_json = self.json["warnings"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w.as_str().is_some_and(|w| w.contains(needle)))
        });
        in_json && self.stderr.contains(needle)
    }
}

/// `check --source file:SOURCE -o json ARGS` (whitespace-separated).
fn check(source: &Path, args: &str) -> Checked {
    let src = format!("file:{}", source.display());
    let mut all = vec!["--source", &src, "-o", "json"];
    all.extend(args.split_whitespace());
    checked(&run(&all))
}

fn checked(o: &Output) -> Checked {
    let json: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is no JSON report ({e}):\n{}", text(o)));
    let c = Checked {
        code: o.status.code(),
        json,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    // The exit status is the result's: 0 allowed, 2 a violation.
    let want = if c.result() == "allowed" { 0 } else { 2 };
    assert_eq!(c.code, Some(want), "{}", text(o));
    c
}

/// An example's objects in one file (the Kustomization left out); `namespaces`: with its
/// Namespace objects.
fn example(name: &str, namespaces: bool) -> PathBuf {
    let dir = repo().join("deploy/examples").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("example dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .filter(|p| namespaces || !p.ends_with("namespaces.yaml"))
        .collect();
    files.sort();
    let docs: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("example file"))
        .collect();
    let path = scratch(&format!("{name}.yaml"));
    std::fs::write(&path, docs.join("\n---\n")).expect("write source");
    path
}

fn scenario(name: &str) -> (Scenario, String) {
    let path = repo().join("tests/scenarios").join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).expect("scenario");
    (Scenario::parse(&text).expect("scenario parses"), text)
}

/// The objects the testbed serves for a scenario, plus `extra` (YAML documents).
fn scenario_values(name: &str, extra: &[&str]) -> Vec<Value> {
    let (s, _) = scenario(name);
    let extra: Vec<serde_yaml::Value> = extra
        .iter()
        .map(|y| serde_yaml::from_str(y).expect("extra object"))
        .collect();
    scenario_objects(&s, &extra)
        .expect("scenario objects")
        .into_iter()
        .map(|o| serde_json::to_value(o).expect("object as JSON"))
        .collect()
}

/// A scenario's objects plus `extra` as a `file:` source.
fn scenario_source(name: &str, extra: &[&str]) -> PathBuf {
    let docs: Vec<String> = scenario_values(name, extra)
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("YAML"))
        .collect();
    let path = scratch(&format!("{name}.yaml"));
    std::fs::write(&path, docs.join("---\n")).expect("write source");
    path
}

/// Checks (command line, side, the rule of `cluster_firewall` deciding that side (`None`: the
/// default), the result) cases.
fn expect_rules(src: &Path, cluster_firewall: &str, cases: &[(&str, &str, Option<u8>, &str)]) {
    for (args, side, rule, result) in cases {
        let policy = match rule {
            Some(i) => format!("ClusterFirewall/{cluster_firewall}:rules[{i}]"),
            None => "default".to_owned(),
        };
        let c = check(src, args);
        assert_eq!(
            (c.decided(side).1, c.result()),
            (policy.as_str(), *result),
            "{args}"
        );
    }
}

#[test]
fn security_zones_example_names_the_rule_and_the_mode_of_each_side() {
    let src = example("security-zones", true);
    // Every namespace is labelled enforce. Rule 3 (from a zone, `to: {}`: every namespace)
    // is the first to match dmz -> data on both sides; rule 0 allows dmz -> app on TCP 8443.
    for (args, verdict, rule, result) in [
        ("--from dmz --to data --port 5432", "deny", 3, "dropped"),
        ("--from dmz --to app --port 8443", "allow", 0, "allowed"),
    ] {
        let c = check(&src, args);
        let policy = format!("ClusterFirewall/security-zones:rules[{rule}]");
        for side in ["egress", "ingress"] {
            let want = (
                verdict,
                policy.as_str(),
                "ClusterRule",
                "enforce",
                "Label",
                result,
            );
            assert_eq!(c.decided(side), want, "{args}");
        }
        assert_eq!(c.json["protocol"], "TCP", "{args}");
    }
    let c = check(&src, "--from dmz --to data --port 5432");
    assert_eq!(c.json["port"].as_u64(), Some(5432));
    // (command line, side, deciding rule, result)
    let cases = [
        // Rule 2: a public address on 443.
        (
            "--from dmz --to 203.0.113.7 --port 443",
            "egress",
            Some(2),
            "allowed",
        ),
        // Rule 2 does not match port 80; rule 4 (cidrs 0/0) denies.
        (
            "--from dmz --to 203.0.113.7 --port 80",
            "egress",
            Some(4),
            "dropped",
        ),
        // tools carries no zone: no rule matches tools -> dmz, the default allows.
        ("--from tools --to dmz --port 80", "egress", None, "allowed"),
        (
            "--from tools --to dmz --port 80",
            "ingress",
            None,
            "allowed",
        ),
        // Rule 5: nobody reaches app or data.
        (
            "--from tools --to app --port 8443",
            "ingress",
            Some(5),
            "dropped",
        ),
    ];
    expect_rules(&src, "security-zones", &cases);
    // World has no ingress side.
    let c = check(&src, "--from dmz --to 203.0.113.7 --port 443");
    assert!(c.side("ingress").is_null());
    // 10/8 is in rule 2's `except`: every address of it is denied by rule 4.
    let c = check(&src, "--from dmz --to 10.0.0.0/8 --port 443");
    let parts = c.json["judgements"].as_array().expect("judgements");
    assert!(!parts.is_empty());
    for p in parts {
        assert_eq!(
            p["egress"]["policy"],
            "ClusterFirewall/security-zones:rules[4]"
        );
        assert!(p["address"].as_str().is_some_and(|a| a.starts_with("10.")));
    }
    assert_eq!(c.result(), "dropped");
    // ICMP has no port: rule 0 lists ports, so rule 3 (no ports: every protocol) denies.
    let c = check(&src, "--from dmz --to app --protocol ICMP");
    assert_eq!(
        (c.json["protocol"].as_str(), c.json["port"].as_u64()),
        (Some("ICMP"), None)
    );
    assert_eq!(
        c.decided("egress").1,
        "ClusterFirewall/security-zones:rules[3]"
    );
    assert_eq!(c.result(), "dropped");
    assert_eq!(c.json["warnings"], serde_json::json!([]));
}

#[test]
fn a_source_without_namespace_objects_says_the_answer_assumes_defaults() {
    // Only the ClusterFirewall: the zone labels are unknown, so no rule selects dmz or data and
    // the default allows, in the default mode (monitor). The answer must say it assumed that.
    let src = example("security-zones", false);
    let c = check(&src, "--from dmz --to data --port 5432");
    assert!(c.warned("no Namespace objects"), "{:#}", c.json);
    assert_eq!(
        c.decided("egress"),
        ("allow", "default", "Default", "monitor", "Flag", "allowed")
    );
    // The agents' --mode, when given, is the mode assumed.
    let c = check(&src, "--from dmz --to data --port 5432 --mode enforce");
    assert_eq!(c.decided("ingress").3, "enforce");
}

#[test]
fn multi_tenant_example() {
    let src = example("multi-tenant", true);
    // (command line, side, deciding rule, result)
    let cases = [
        // Rule 1 denies every namespace -> a tenant namespace, on both sides.
        (
            "--from tenant-a --to tenant-b --port 8080",
            "egress",
            Some(1),
            "dropped",
        ),
        (
            "--from tenant-a --to tenant-b --port 8080",
            "ingress",
            Some(1),
            "dropped",
        ),
        // Rule 0 lets monitoring scrape 9090 first.
        (
            "--from monitoring --to tenant-a --port 9090",
            "ingress",
            Some(0),
            "allowed",
        ),
    ];
    expect_rules(&src, "tenant-isolation", &cases);
}

/// The expected flows in a scenario's header: `#   ns/pod -> ns/pod|world IP  PROTO PORT  ok|denied`.
fn header_flows(text: &str) -> Vec<(String, String, String, String, bool)> {
    let mut flows = Vec::new();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        let w: Vec<&str> = line[1..].split_whitespace().collect();
        let Some(i) = w.iter().position(|t| *t == "->") else {
            continue;
        };
        let (to, rest) = match w.get(i + 1) {
            Some(&"world") => (w.get(i + 2), w.get(i + 3..)),
            t => (t, w.get(i + 2..)),
        };
        let (Some(to), Some([proto, port, verdict, ..])) = (to, rest) else {
            continue;
        };
        if !matches!(*verdict, "ok" | "denied") || i == 0 {
            continue;
        }
        flows.push((
            w[i - 1].to_owned(),
            (*to).to_owned(),
            (*proto).to_owned(),
            (*port).to_owned(),
            *verdict == "ok",
        ));
    }
    flows
}

#[test]
fn every_flow_listed_by_the_example_scenarios() {
    // The headers were written from the policy semantics and are proved with packets by
    // e2e_examples; every namespace of these scenarios is in enforce, so `ok` is `allowed` and
    // `denied` is `dropped`.
    for name in [
        "security-zones",
        "multi-tenant",
        "team-segmentation",
        "standard-policies",
    ] {
        let (_, header) = scenario(name);
        let flows = header_flows(&header);
        assert!(flows.len() >= 9, "{name}: {} flows parsed", flows.len());
        let src = scenario_source(name, &[]);
        for (from, to, proto, port, ok) in flows {
            let c = check(
                &src,
                &format!("--from {from} --to {to} --protocol {proto} --port {port}"),
            );
            let want = if ok { "allowed" } else { "dropped" };
            assert_eq!(
                c.result(),
                want,
                "{name}: {from} -> {to} {proto} {port}: {:#}",
                c.json
            );
            assert_eq!(
                c.json["warnings"],
                serde_json::json!([]),
                "{name}: {from} -> {to}"
            );
        }
    }
}

/// db admits frontend on TCP 5432; payments admits frontend on 8443 to its `payments-api` pods.
const DB_FROM_FRONTEND: &str = "
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: default, namespace: db}
spec:
  ingress: [{from: {namespaces: [frontend]}, ports: [{protocol: TCP, port: 5432}]}]
";
const PAYMENTS_API_FROM_FRONTEND: &str = "
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: default, namespace: payments}
spec:
  ingress: [{from: {namespaces: [frontend]}, services: [payments-api], ports: [{protocol: TCP, port: 8443}]}]
";

/// kube-system's object that does not validate (port 0), a ClusterFirewall that does not
/// deserialize, a cluster default mode, and a mode label that is no mode.
const BROKEN_KUBE_SYSTEM: &str = "
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: broken, namespace: kube-system}
spec:
  ingress: [{from: {namespaces: [frontend]}, ports: [{protocol: TCP, port: 0}]}]
";
const BROKEN_CLUSTER_FIREWALL: &str = "
apiVersion: bulkhead.dev/v1alpha1
kind: ClusterFirewall
metadata: {name: broken}
spec: {rules: [{action: Maybe}]}
";
const MODE_DEFAULT_ENFORCE: &str = "
apiVersion: bulkhead.dev/v1alpha1
kind: ClusterFirewall
metadata: {name: defaults}
spec: {defaults: {mode: Enforce}}
";
const DB_LOUD_LABEL: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: db, labels: {bulkhead.dev/mode: loud}}
";

#[test]
fn pods_services_and_modes_on_the_saas_scenario() {
    // No namespace of saas has a mode label and no ClusterFirewall sets one: --mode (monitor).
    let src = scenario_source("saas", &[DB_FROM_FRONTEND, PAYMENTS_API_FROM_FRONTEND]);
    // db's ingress rule admits frontend (step 2); frontend has no egress rules, so its egress
    // side takes db's matching ingress rule (step 3).
    let c = check(&src, "--from frontend/web --to db/postgres --port 5432");
    let db = "NamespaceFirewall/db/default";
    assert_eq!(
        c.decided("egress"),
        ("allow", db, "OtherSide", "monitor", "Flag", "allowed")
    );
    assert_eq!(
        c.decided("ingress"),
        ("allow", db, "NamespaceRule", "monitor", "Flag", "allowed")
    );
    assert!(c.side("ingress")["namespace"] == "db" && c.side("egress")["namespace"] == "frontend");
    // payments is not admitted by db: step 2 "no match" denies on db's side, in monitor: logged
    // (exit 2), although the egress side allows (step 4).
    let c = check(&src, "--from payments/api --to db/postgres --port 5432");
    assert_eq!(
        c.decided("egress"),
        ("allow", "default", "Default", "monitor", "Flag", "allowed")
    );
    assert_eq!(
        c.decided("ingress"),
        ("deny", db, "NoMatch", "monitor", "Flag", "logged")
    );
    assert_eq!(c.result(), "logged");
    // The agents' --mode enforce makes it a drop.
    let c = check(
        &src,
        "--from payments/api --to db/postgres --port 5432 --mode enforce",
    );
    assert_eq!(c.result(), "dropped");
    // (command line, side, the step that decides it, the result)
    let cases = [
        // The Service narrows: the api pod is selected by payments-api, the worker is not.
        (
            "--to payments/api --port 8443",
            "ingress",
            "NamespaceRule",
            "allowed",
        ),
        (
            "--to payments/worker --port 8443",
            "ingress",
            "NoMatch",
            "logged",
        ),
        // The bare namespace with --services, as before.
        (
            "--to payments --services payments-api --port 8443",
            "ingress",
            "NamespaceRule",
            "allowed",
        ),
        // Inside one namespace and DNS: always allowed.
        (
            "--to frontend --port 8443",
            "egress",
            "SameNamespace",
            "allowed",
        ),
        (
            "--to kube-system/svc/kube-dns --protocol UDP --port 53",
            "egress",
            "Dns",
            "allowed",
        ),
    ];
    for (args, side, step, result) in cases {
        let c = check(&src, &format!("--from frontend/web {args}"));
        assert_eq!((c.decided(side).2, c.result()), (step, result), "{args}");
    }
    // The Service itself: its cluster IP carries its identity.
    let c = check(
        &src,
        "--from frontend/web --to payments/svc/payments-api --port 8443",
    );
    assert!(
        c.json["judgements"][0]["destination"]
            .as_str()
            .is_some_and(|d| d.starts_with("service payments/payments-api"))
    );
    assert_eq!(c.result(), "allowed");
}

#[test]
fn world_sources_and_cidrs() {
    let src = scenario_source("saas", &[DB_FROM_FRONTEND, PAYMENTS_API_FROM_FRONTEND]);
    // Traffic from world into pods is not restricted: no egress side, ingress exempt.
    let c = check(&src, "--from 203.0.113.9 --to db/postgres --port 5432");
    assert!(c.side("egress").is_null());
    assert_eq!(c.decided("ingress").2, "Unrestricted");
    assert!(c.warned("not restricted"));
    assert_eq!(c.result(), "allowed");
    // A pod's address as the source is that pod.
    let (s, _) = scenario("saas");
    let web = s
        .pod_ipv4(s.pod_index("frontend/web").expect("web"))
        .to_string();
    let c = check(&src, &format!("--from {web} --to db/postgres --port 5432"));
    assert_eq!(c.decided("egress").1, "NamespaceFirewall/db/default");
    // The pods' /24 holds payments/worker, which payments does not admit (logged), the other
    // pods and the node (host), and world addresses: every identity is judged.
    let net = format!("198.18.{}.0/24", s.subnet);
    let c = check(&src, &format!("--from frontend/web --to {net} --port 8443"));
    let parts = c.json["judgements"].as_array().expect("judgements");
    let find = |prefix: &str| {
        parts
            .iter()
            .find(|p| {
                p["destination"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no part {prefix}: {:#}", c.json))
    };
    assert_eq!(find("pod payments/worker")["ingress"]["step"], "NoMatch");
    assert_eq!(find("pod payments/api")["ingress"]["step"], "NamespaceRule");
    assert_eq!(find("host ")["result"], "allowed");
    assert!(find("world ")["ingress"].is_null());
    assert_eq!(c.result(), "logged");
}

/// A hostNetwork pod on the node's address, and a pod of the payments-api Service that has no
/// IP yet.
const HOST_AND_PENDING_PODS: &str = "
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: agent, namespace: kube-system}
  spec: {hostNetwork: true, nodeName: node-1, containers: []}
  status: {phase: Running, podIP: 198.18.7.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: api-2, namespace: payments, labels: {app: api}}
  spec: {nodeName: node-1, containers: []}
  status: {phase: Pending}
";

#[test]
fn host_network_and_pending_pods() {
    let src = scenario_source(
        "saas",
        &[
            DB_FROM_FRONTEND,
            PAYMENTS_API_FROM_FRONTEND,
            HOST_AND_PENDING_PODS,
        ],
    );
    // A hostNetwork pod's connections are the host's: no egress side, ingress from host exempt.
    let c = check(
        &src,
        "--from kube-system/agent --to db/postgres --port 5432",
    );
    assert!(c.side("egress").is_null());
    assert_eq!(c.decided("ingress").2, "Unrestricted");
    assert!(c.warned("uses the host network"));
    assert_eq!(c.result(), "allowed");
    // As a destination it is the host: no ingress side; frontend has no egress rules (step 4).
    let c = check(
        &src,
        "--from frontend/web --to kube-system/agent --port 10250",
    );
    assert!(c.side("ingress").is_null());
    assert_eq!(c.decided("egress").2, "Default");
    // A pod without an IP is judged by its labels, as its own node identifies it: payments-api
    // selects it, so payments admits frontend on 8443.
    let c = check(&src, "--from frontend/web --to payments/api-2 --port 8443");
    assert!(c.warned("has no IP yet"));
    let judged = (c.decided("ingress").2, c.result());
    assert_eq!(judged, ("NamespaceRule", "allowed"));
}

#[test]
fn unknown_names_and_rejected_objects_are_warned_about() {
    let src = scenario_source("saas", &[DB_FROM_FRONTEND, BROKEN_KUBE_SYSTEM]);
    let c = check(&src, "--from frontend/nope --to db/postgres --port 5432");
    assert!(c.warned("unknown pod frontend/nope"), "{:#}", c.json);
    // Judged as a pod of frontend: admitted by db.
    assert_eq!(c.result(), "allowed");
    // The broken object of kube-system bears on neither frontend nor db.
    assert_eq!(c.json["rejected"], serde_json::json!([]));
    let c = check(&src, "--from frontend --to nosuch --port 80");
    assert!(c.warned("unknown namespace nosuch"));
    let c = check(&src, "--from frontend --to payments/svc/nope --port 80");
    assert!(c.warned("unknown service payments/svc/nope"));
    let c = check(
        &src,
        "--from frontend --to payments --services nope --port 80",
    );
    assert!(c.warned("unknown service payments/svc/nope"));
    // A pair touching kube-system names its rejected object (DNS itself is always allowed).
    let c = check(
        &src,
        "--from frontend/web --to kube-system/coredns --protocol UDP --port 53",
    );
    assert!(
        c.warned("NamespaceFirewall/kube-system/broken: InvalidSpec"),
        "{:#}",
        c.json
    );
    let r = &c.json["rejected"][0];
    assert_eq!(
        (&r["kind"], &r["namespace"], &r["name"], &r["reason"]),
        (
            &Value::from("NamespaceFirewall"),
            &Value::from("kube-system"),
            &Value::from("broken"),
            &Value::from("InvalidSpec")
        )
    );
    // A rejected ClusterFirewall bears on every pair.
    let src = scenario_source("saas", &[BROKEN_CLUSTER_FIREWALL]);
    let c = check(&src, "--from frontend --to db --port 5432");
    assert!(
        c.warned("ClusterFirewall/broken: InvalidSpec"),
        "{:#}",
        c.json
    );
    assert_eq!(c.json["rejected"][0]["kind"], "ClusterFirewall");
    // Judged alone, a rejected object was never accepted: it is enforced fail closed
    // (docs/design.md#invalid-objects), so its rule with an unreadable action denies, here in
    // monitor.
    assert_eq!(c.json["rejected"][0]["inForce"], "FailClosed");
    assert_eq!(c.decided("egress").1, "ClusterFirewall/broken:rules[0]");
    assert_eq!(c.result(), "logged");
}

#[test]
fn the_mode_names_where_it_comes_from() {
    // The ClusterFirewall default sets the mode of namespaces without a label.
    let src = scenario_source("saas", &[DB_FROM_FRONTEND, MODE_DEFAULT_ENFORCE]);
    let c = check(&src, "--from payments/api --to db/postgres --port 5432");
    assert_eq!(
        c.decided("ingress"),
        (
            "deny",
            "NamespaceFirewall/db/default",
            "NoMatch",
            "enforce",
            "ClusterDefault",
            "dropped"
        )
    );
    // An invalid label is ignored (docs/design.md#modes), and said so.
    let src = scenario_source("saas", &[DB_FROM_FRONTEND, DB_LOUD_LABEL]);
    let c = check(&src, "--from payments/api --to db/postgres --port 5432");
    assert!(
        c.warned("bulkhead.dev/mode label \"loud\" is no mode"),
        "{:#}",
        c.json
    );
    assert_eq!(
        (c.decided("ingress").3, c.decided("ingress").4),
        ("monitor", "Flag")
    );
}

#[test]
fn errors_exit_1() {
    let src = example("security-zones", true);
    let file = format!("file:{}", src.display());
    let empty = scratch("empty.yaml");
    std::fs::write(&empty, "\n").expect("write");
    let empty = format!("file:{}", empty.display());
    let missing = "file:/nonexistent/cluster.yaml".to_owned();
    // Each: a `--source` and the rest of the command line.
    let cases = [
        (&file, "--from dmz --to data"), // TCP needs a port
        (&file, "--from dmz --to data --protocol ICMP --port 1"),
        (&file, "--from dmz --to Data --port 1"),
        (&file, "--from a/b/c/d --to data --port 1"),
        (&file, "--from 10.0.0.0/8 --to data --port 1"),
        (&file, "--from dmz --to 10.0.0.1/8 --port 1"),
        (&file, "--from dmz --to data/x --services s --port 1"),
        (&file, "--from dmz --to data --port 1 --bogus"),
        (&file, "--to data --port 1"),
        (&file, "--from dmz --to data --port 1 --mode loud"),
        (&missing, "--from dmz --to data --port 1"),
        (&empty, "--from dmz --to data --port 1"),
        (&"nope".to_owned(), "--from dmz --to data --port 1"),
    ];
    for (source, rest) in cases {
        let mut args = vec!["--source", source.as_str()];
        args.extend(rest.split_whitespace());
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(!o.stderr.is_empty(), "{args:?}: no message");
    }
}

#[test]
fn text_output_names_port_protocol_rule_and_mode() {
    let src = example("security-zones", true);
    let file = format!("file:{}", src.display());
    let mut args = vec!["--source", file.as_str()];
    args.extend("--from dmz --to data --port 5432".split_whitespace());
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "TCP port 5432",
        "egress at dmz: deny by ClusterFirewall/security-zones:rules[3]",
        "ingress at data: deny by ClusterFirewall/security-zones:rules[3]",
        "mode enforce (from label)",
        "result: dropped (enforce)",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}

#[test]
fn the_live_cluster_is_the_default_source() {
    // The API server emulator serves the saas scenario's objects; `check` lists them once.
    let server = ApiServer::start().expect("API server emulator");
    server
        .apply_all(scenario_values("saas", &[DB_FROM_FRONTEND]))
        .expect("seeding the API server");
    let kubeconfig = scratch("kubeconfig.yaml");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let kc = kubeconfig.display().to_string();
    // `--kubeconfig KC` and the rest of the command line.
    let kube = |rest: &str| {
        let mut args = vec!["--kubeconfig", kc.as_str()];
        args.extend(rest.split_whitespace());
        run(&args)
    };
    let c = checked(&kube(
        "-o json --from frontend/web --to db/postgres --port 5432",
    ));
    assert_eq!(c.decided("ingress").2, "NamespaceRule");
    assert_eq!(c.result(), "allowed");
    assert_eq!(c.json["warnings"], serde_json::json!([]));
    let c = checked(&kube(
        "--source kube -o json --from payments/api --to db/postgres --port 5432",
    ));
    assert_eq!(
        c.decided("ingress"),
        (
            "deny",
            "NamespaceFirewall/db/default",
            "NoMatch",
            "monitor",
            "Flag",
            "logged"
        )
    );
    // KUBECONFIG works as for `run`.
    let o = Command::new(env!("CARGO_BIN_EXE_firewall-agent"))
        .args("check --from frontend --to db/postgres --port 5432".split_whitespace())
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // An unreachable API server is an error, not an answer.
    drop(server);
    let o = kube("--from frontend --to db --port 5432");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let _ = std::fs::remove_file(&kubeconfig);
}
