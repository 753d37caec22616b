//! `firewall-agent suggest` and `report` as a user runs them: logs of two nodes (one gzip, one
//! plain, one on stdin), mixed with the agent's other output; the suggestion checked by
//! `firewall-agent validate`, byte-for-byte stable across line orders, and converging against
//! the policy once applied.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Node 1: web -> db denied at ingress (db in monitor), web -> world, an `events_lost` line and
/// a diagnostic line.
const NODE1: &[&str] = &[
    r#"{"ts":"2026-11-23T04:00:00.000001Z","type":"violation","verdict":"AUDIT","direction":"ingress","node":"node-1","protocol":"TCP","src":{"namespace":"web","pod":"web-0","ip":"10.0.0.1","port":40000},"dst":{"namespace":"db","pod":"mysql-0","ip":"10.0.1.9","port":3306},"policy":"default","count":3,"sides":[{"side":"ingress","namespace":"db","mode":"monitor","policy":"default"}]}"#,
    r#"{"ts":"2026-11-23T04:00:01.000000Z","type":"events_lost","node":"node-1","count":2}"#,
    r#"{"timestamp":"2026-11-23T04:00:01.5Z","level":"INFO","fields":{"message":"policy applied"},"target":"firewall_agent"}"#,
    r#"{"ts":"2026-11-23T04:00:02.000002Z","type":"flow","verdict":"ALLOWED","direction":"egress","node":"node-1","protocol":"UDP","src":{"namespace":"web","pod":"web-0","ip":"10.0.0.1","port":40001},"dst":{"namespace":null,"pod":null,"ip":"192.0.2.53","port":53},"policy":"default","count":1}"#,
];

/// Node 2: batch -> db, audited on both sides in one line; an ICMP probe.
const NODE2: &[&str] = &[
    r#"{"ts":"2026-11-23T04:00:03.000003Z","type":"violation","verdict":"AUDIT","direction":"egress","node":"node-2","protocol":"TCP","src":{"namespace":"batch","pod":"job-0","ip":"10.0.2.1","port":40002},"dst":{"namespace":"db","pod":"pg-0","ip":"10.0.1.9","port":5432},"policy":"default","count":1,"sides":[{"side":"egress","namespace":"batch","mode":"monitor","policy":"default"},{"side":"ingress","namespace":"db","mode":"monitor","policy":"default"}]}"#,
    r#"{"ts":"2026-11-23T04:00:04.000004Z","type":"violation","verdict":"AUDIT","direction":"egress","node":"node-2","protocol":"ICMP","src":{"namespace":"batch","pod":"job-0","ip":"10.0.2.1","port":null},"dst":{"namespace":"db","pod":"pg-0","ip":"10.0.1.9","port":null},"policy":"default","count":1}"#,
];

/// What the rules say NODE1 + NODE2 need (docs/design.md#agent-cli).
const EXPECTED: &str = "---
# note: ICMP batch -> db (1 connection(s)): a NamespaceFirewall matches ICMP only with a rule without ports, which would allow every protocol and port; none is suggested (allow it by hand if that is wanted)
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata:
  name: suggested
  namespace: batch
spec:
  egress:
  # 1 connection(s), first seen 2026-11-23T04:00:03.000003Z, last seen 2026-11-23T04:00:03.000003Z
  - to:
      namespaces:
      - db
    ports:
    - protocol: TCP
      port: 5432
---
# note: ICMP batch -> db (1 connection(s)): a NamespaceFirewall matches ICMP only with a rule without ports, which would allow every protocol and port; none is suggested (allow it by hand if that is wanted)
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata:
  name: suggested
  namespace: db
spec:
  ingress:
  # 1 connection(s), first seen 2026-11-23T04:00:03.000003Z, last seen 2026-11-23T04:00:03.000003Z
  - from:
      namespaces:
      - batch
    ports:
    - protocol: TCP
      port: 5432
  # 3 connection(s), first seen 2026-11-23T04:00:00.000001Z, last seen 2026-11-23T04:00:00.000001Z
  - from:
      namespaces:
      - web
    ports:
    - protocol: TCP
      port: 3306
---
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata:
  name: suggested
  namespace: web
spec:
  egress:
  # 1 connection(s), first seen 2026-11-23T04:00:02.000002Z, last seen 2026-11-23T04:00:02.000002Z
  - to:
      cidrs:
      - 192.0.2.53/32
    ports:
    - protocol: UDP
      port: 53
";

/// Runs the agent with `stdin` as its standard input (from a file, so a large input cannot
/// block on a full pipe).
fn agent(args: &[&str], stdin: &[u8]) -> Output {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = Dir::new(&format!("stdin-{n}"));
    let input = std::fs::File::open(dir.write("stdin", stdin)).expect("stdin file");
    Command::new(env!("CARGO_BIN_EXE_firewall-agent"))
        .args(args)
        .stdin(Stdio::from(input))
        .output()
        .expect("run firewall-agent")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("bulkhead-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).expect("write");
        p.display().to_string()
    }
}

fn lines(l: &[&str]) -> String {
    l.iter().map(|l| format!("{l}\n")).collect()
}

fn gzip(s: &str) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(s.as_bytes()).expect("gzip");
    gz.finish().expect("gzip")
}

#[test]
fn suggests_from_two_nodes_gzip_and_stdin_and_the_output_validates() {
    let dir = Dir::new("suggest-cli");
    // The name says nothing: gzip is told by its bytes.
    let one = dir.write("node-1.log", &gzip(&lines(NODE1)));
    let o = agent(&["suggest", &one, "-"], lines(NODE2).as_bytes());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), EXPECTED);
    let err = text(&o.stderr);
    assert!(err.contains("note: ICMP batch -> db"), "{err}");
    let v = agent(&["validate", "-"], &o.stdout);
    assert!(v.status.success(), "{}{}", text(&v.stdout), text(&v.stderr));
    assert_eq!(text(&v.stdout), "3 policy object(s) valid\n");
}

#[test]
fn same_bytes_whatever_the_order_of_files_and_lines() {
    let dir = Dir::new("suggest-order");
    let mut all: Vec<&str> = NODE1.iter().chain(NODE2).copied().collect();
    let a = dir.write("a.log", lines(&all).as_bytes());
    all.reverse();
    let b = dir.write("b.log", lines(&all[..3]).as_bytes());
    let c = dir.write("c.log", lines(&all[3..]).as_bytes());
    let first = agent(&["suggest", &a], b"");
    let second = agent(&["suggest", &c, &b], b"");
    assert!(first.status.success() && second.status.success());
    assert_eq!(first.stdout, second.stdout);
    assert_eq!(text(&first.stdout), EXPECTED);
}

#[test]
fn a_line_that_is_not_json_fails_with_its_place_unless_lenient() {
    let dir = Dir::new("suggest-bad");
    let log = dir.write(
        "mixed.log",
        format!("{}starting agent\n{}", lines(NODE1), lines(NODE2)).as_bytes(),
    );
    let o = agent(&["suggest", &log], b"");
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("mixed.log:5: not a JSON line"), "{err}");
    let o = agent(&["suggest", "--lenient", &log], b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), EXPECTED);
    assert!(text(&o.stderr).contains("skipped 1 unreadable line(s)"));
}

#[test]
fn against_the_applied_suggestion_nothing_is_left_to_add() {
    let dir = Dir::new("suggest-against");
    let log = dir.write("all.log", lines(&[NODE1, NODE2].concat()).as_bytes());
    // A cluster that denies across namespaces by default, in monitor mode.
    let baseline = "apiVersion: bulkhead.dev/v1alpha1
kind: ClusterFirewall
metadata: {name: baseline}
spec:
  defaults: {crossNamespace: Deny, mode: Monitor}
";
    let policy = dir.write("policy.yaml", baseline.as_bytes());
    let o = agent(
        &["suggest", &log, "--against", &format!("file:{policy}")],
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let first = text(&o.stdout);
    // The default denies both sides of web -> db and batch -> db. web's first egress rule
    // then denies its world flow too, so that is needed as well.
    for needed in [
        "namespace: batch",
        "namespace: db",
        "namespace: web",
        "192.0.2.53/32",
    ] {
        assert!(first.contains(needed), "{needed}: {first}");
    }
    let applied = dir.write("applied.yaml", format!("{baseline}{first}").as_bytes());
    let o = agent(
        &["suggest", &log, "--against", &format!("file:{applied}")],
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "");
    assert!(
        text(&o.stderr).contains("nothing to suggest"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn report_prints_the_matrix_and_writes_a_page() {
    let dir = Dir::new("report-cli");
    let one = dir.write("node-1.log.gz", &gzip(&lines(NODE1)));
    let page = dir.0.join("flows.html");
    let page_arg = page.display().to_string();
    let o = agent(
        &["report", &one, "-", "--html", &page_arg],
        lines(NODE2).as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    // web -> db: 3 AUDIT; batch -> db: 1 AUDIT (one line, both sides) + 1 ICMP AUDIT;
    // web -> world: 1 ALLOWED.
    assert_eq!(
        text(&o.stdout),
        "connections (ALLOWED/AUDIT/DENIED), source namespace by destination:
FROM \\ TO  (world)    db
batch      -          2 (0/2/0)
web        1 (1/0/0)  3 (0/3/0)

batch -> db: 2 connection(s): ALLOWED 0, AUDIT 2, DENIED 0; ICMP TCP/5432
web -> (world): 1 connection(s): ALLOWED 1, AUDIT 0, DENIED 0; UDP/53
web -> db: 3 connection(s): ALLOWED 0, AUDIT 3, DENIED 0; TCP/3306
"
    );
    let html = std::fs::read_to_string(&page).expect("the page");
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(&html, opts).expect("well-formed");
    let circles = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "circle")
        .count();
    assert_eq!(circles, 4);
}

#[test]
fn against_the_live_cluster_narrows_to_a_service_and_prints_only_what_is_missing() {
    use serde_json::json;
    let server = bulkhead_tests::ApiServer::start().expect("API server emulator");
    let ns = |n: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}});
    let pod = |n: &str, app: &str, ip: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": n, "namespace": "db", "uid": format!("uid-{n}"), "labels": {"app": app}},
               "spec": {"nodeName": "node-1"}, "status": {"phase": "Running", "podIP": ip}})
    };
    server
        .apply_all([
            ns("web"),
            ns("batch"),
            ns("db"),
            pod("pg-0", "pg", "10.0.1.9"),
            pod("mysql-0", "mysql", "10.0.1.8"),
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "pg", "namespace": "db"},
                   "spec": {"selector": {"app": "pg"}, "clusterIP": "10.96.0.9"}}),
            // db already admits batch on 5432; nothing else is allowed across namespaces.
            json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "ClusterFirewall",
                   "metadata": {"name": "baseline"},
                   "spec": {"defaults": {"crossNamespace": "Deny", "mode": "Monitor"}}}),
            json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "NamespaceFirewall",
                   "metadata": {"name": "suggested", "namespace": "db"},
                   "spec": {"ingress": [{"from": {"namespaces": ["batch"]},
                                         "ports": [{"protocol": "TCP", "port": 5432}]}]}}),
        ])
        .expect("seeding the API server");
    let dir = Dir::new("suggest-kube");
    let kc = dir.0.join("kubeconfig.yaml");
    server.write_kubeconfig(&kc).expect("kubeconfig");
    let log = dir.write("all.log", lines(&[NODE1, NODE2].concat()).as_bytes());
    let kc = kc.display().to_string();
    let o = agent(
        &["suggest", &log, "--against", "kube", "--kubeconfig", &kc],
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    // db: only web's ingress is missing, as `suggested-2` (`suggested` is in force); mysql-0 is
    // no backend of `pg`, so the rule is namespace-wide. batch's egress side is allowed by db's
    // rule (step 3) while batch has no egress rules; web's egress needs rules, both of them.
    let ingress = out
        .split("---\n")
        .find(|d| d.contains("namespace: db"))
        .expect("db object");
    assert!(ingress.contains("name: suggested-2"), "{out}");
    assert!(
        ingress.contains("- web") && !ingress.contains("- batch"),
        "{out}"
    );
    assert!(!ingress.contains("services:"), "{out}");
    assert!(!out.contains("namespace: batch"), "{out}");
    let web = out
        .split("---\n")
        .find(|d| d.contains("namespace: web"))
        .expect("web object");
    assert!(
        web.contains("port: 3306") && web.contains("192.0.2.53/32"),
        "{out}"
    );
    // The pods narrow a rule to their Service: batch -> pg-0 on 5433, a port db does not admit.
    let pg = dir.write(
        "pg.log",
        NODE2[0]
            .replace("5432", "5433")
            .replace("ClusterFirewall", "x")
            .as_bytes(),
    );
    let o = agent(
        &[
            "suggest",
            &pg,
            "--against",
            "kube",
            "--kubeconfig",
            &kc,
            "--namespace",
            "db",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("services:\n    - pg\n"), "{out}");
    drop(server);
    let o = agent(
        &["suggest", &log, "--against", "kube", "--kubeconfig", &kc],
        b"",
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "an unreachable API server is an error"
    );
}
