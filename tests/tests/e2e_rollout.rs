//! The rollout loop end to end (issue 12; README "Rolling out"): discover the traffic of a node
//! without policy (`run --flow-log all`), turn the log into rules (`suggest --source`), apply them
//! behind a deny-by-default baseline in monitor mode (nothing is audited any more and
//! `suggest --against` has nothing to add), then enforce: every observed connection still works,
//! every unobserved cross-namespace one is dropped and logged. The real agent binary and real
//! packets throughout; the commands are the ones an operator types. Needs root; skips loudly
//! otherwise.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
mod common;

use std::{
    collections::BTreeSet,
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use bulkhead_tests::{Protocol, agent::file_source, policy::baseline, skip_unless_root};
use common::{
    agent::{agent_bin, pretty},
    node::{Node, R, set_cluster_policies},
    side, sides,
};
use serde_json::Value;

/// Four namespaces; `payments-api` selects `api` but not `worker`, which serves the same port.
const PODS: &str = r#"
namespaces:
  - {name: frontend}
  - {name: payments}
  - {name: db}
  - {name: batch}
pods:
  - {name: web, namespace: frontend, labels: {app: web}, serve: [{protocol: TCP, port: 80}]}
  - {name: api, namespace: payments, labels: {app: api}, serve: [{protocol: TCP, port: 8443}, {protocol: TCP, port: 9000}]}
  - {name: worker, namespace: payments, labels: {app: worker}, serve: [{protocol: TCP, port: 8443}, {protocol: UDP, port: 5353}]}
  - {name: postgres, namespace: db, labels: {app: postgres}, serve: [{protocol: TCP, port: 5432}, {protocol: UDP, port: 5432}, {protocol: UDP, port: 5353}]}
  - {name: job, namespace: batch, labels: {app: job}}
services:
  - {name: payments-api, namespace: payments, selector: {app: api}}
"#;

/// Where a connection goes: a pod (`ns/name`) or the world server's address.
#[derive(Clone, Copy, Debug)]
enum To {
    Pod(&'static str),
    World(Ipv4Addr),
}

/// One connection of the traffic pattern.
#[derive(Clone, Copy, Debug)]
struct Conn {
    from: &'static str,
    to: To,
    protocol: &'static str,
    port: u16,
}

/// How the log names a connection: (source `ns/pod`, destination `ns/pod` or address, protocol,
/// destination port).
type Key = (String, String, String, u64);

impl Conn {
    fn key(&self) -> Key {
        let to = match self.to {
            To::Pod(p) => p.to_owned(),
            To::World(ip) => ip.to_string(),
        };
        (
            self.from.to_owned(),
            to,
            self.protocol.to_owned(),
            self.port.into(),
        )
    }

    /// Probes from the node that runs the source pod to the destination's address, wherever
    /// it runs.
    fn probe(&self, nodes: &[&Node]) -> R {
        let on = |pod: &str| {
            nodes
                .iter()
                .find(|n| n.testbed().pod_ipv4(pod).is_ok())
                .unwrap_or_else(|| panic!("no node runs {pod}"))
        };
        let ip = match self.to {
            To::Pod(p) => on(p).ip(p),
            To::World(ip) => ip.into(),
        };
        let protocol = match self.protocol {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            other => panic!("no probe for {other}"),
        };
        on(self.from).probe(self.from, ip, protocol, self.port)
    }
}

fn conn(from: &'static str, to: To, protocol: &'static str, port: u16) -> Conn {
    Conn {
        from,
        to,
        protocol,
        port,
    }
}

/// The traffic the rules are learnt from: TCP and UDP across namespaces, a Service's backend
/// (`payments/api` behind `payments-api`), a world destination.
fn observed(world: Ipv4Addr) -> Vec<Conn> {
    use To::*;
    vec![
        conn("frontend/web", Pod("payments/api"), "TCP", 8443),
        conn("payments/api", Pod("db/postgres"), "TCP", 5432),
        conn("payments/worker", Pod("db/postgres"), "UDP", 5353),
        conn("batch/job", Pod("db/postgres"), "TCP", 5432),
        conn("batch/job", World(world), "TCP", 80),
    ]
}

/// An unobserved connection and the policy of its egress and ingress side, each of which must
/// deny it once enforced unless it is [`ALLOWS`]; each side's namespace is its end's.
type Denied = (Conn, &'static str, &'static str);

/// A side that allows, or that does not exist (a world destination's ingress side).
const ALLOWS: &str = "";

const FRONTEND: &str = "NamespaceFirewall/frontend/suggested";
const PAYMENTS: &str = "NamespaceFirewall/payments/suggested";
const DB: &str = "NamespaceFirewall/db/suggested";
const BATCH: &str = "NamespaceFirewall/batch/suggested";

/// Unobserved connections, denied in `enforce` (the baseline's mode). A namespace with rules of
/// its own for a direction denies what they do not match (step 2: the object is named); one
/// without leaves it to the other side's rules and then to `crossNamespace: Deny` (`default`);
/// world destinations have no ingress side (docs/design.md#evaluation-order).
#[rustfmt::skip]
fn unobserved(world: Ipv4Addr) -> Vec<Denied> {
    use To::*;
    vec![
        // The reverse directions.
        (conn("payments/api", Pod("frontend/web"), "TCP", 80), PAYMENTS, "default"),
        (conn("db/postgres", Pod("payments/api"), "TCP", 8443), "default", PAYMENTS),
        (conn("db/postgres", Pod("payments/worker"), "UDP", 5353), "default", PAYMENTS),
        // Another port of a pod that was reached.
        (conn("frontend/web", Pod("payments/api"), "TCP", 9000), FRONTEND, PAYMENTS),
        // The observed port, on a pod that is not behind the Service: only payments' side knows.
        (conn("frontend/web", Pod("payments/worker"), "TCP", 8443), ALLOWS, PAYMENTS),
        // A namespace pair never seen.
        (conn("frontend/web", Pod("db/postgres"), "TCP", 5432), FRONTEND, DB),
        // UDP where only TCP was seen.
        (conn("batch/job", Pod("db/postgres"), "UDP", 5432), BATCH, DB),
        // The world: another port, and a namespace that never went there.
        (conn("batch/job", World(world), "TCP", 8080), BATCH, ALLOWS),
        (conn("frontend/web", World(world), "TCP", 80), FRONTEND, ALLOWS),
    ]
}

/// The NamespaceFirewall rules `suggest` must print for [`observed`], one per (namespace,
/// direction, peer, protocol) with the observed ports, `services` where every pod reached is a
/// backend of that Service: `NS DIRECTION PEERS SERVICES PORTS`.
fn expected_rules(world: Ipv4Addr) -> BTreeSet<String> {
    [
        "frontend egress payments - TCP/8443".to_owned(),
        "payments ingress frontend payments-api TCP/8443".to_owned(),
        "payments egress db - TCP/5432".to_owned(),
        "payments egress db - UDP/5353".to_owned(),
        "db ingress payments - TCP/5432".to_owned(),
        "db ingress payments - UDP/5353".to_owned(),
        "db ingress batch - TCP/5432".to_owned(),
        "batch egress db - TCP/5432".to_owned(),
        format!("batch egress {world}/32 - TCP/80"),
    ]
    .into_iter()
    .collect()
}

/// A line's [`Key`].
fn key(l: &Value) -> Key {
    let s = |v: &Value| v.as_str().unwrap_or("null").to_owned();
    let src = format!("{}/{}", s(&l["src"]["namespace"]), s(&l["src"]["pod"]));
    let dst = if l["dst"]["namespace"].is_null() {
        s(&l["dst"]["ip"])
    } else {
        format!("{}/{}", s(&l["dst"]["namespace"]), s(&l["dst"]["pod"]))
    };
    let port = l["dst"]["port"].as_u64().unwrap_or(0);
    (src, dst, s(&l["protocol"]), port)
}

/// The rules of a YAML stream of NamespaceFirewalls, as [`expected_rules`] writes them.
fn rules_of(stream: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for doc in common::node::docs(&[stream]) {
        assert_eq!(doc["apiVersion"], "bulkhead.dev/v1alpha1", "{doc:?}");
        assert_eq!(doc["kind"], "NamespaceFirewall", "{doc:?}");
        assert_eq!(doc["metadata"]["name"], "suggested", "{doc:?}");
        let ns = doc["metadata"]["namespace"].as_str().expect("namespace");
        for (dir, peer) in [("ingress", "from"), ("egress", "to")] {
            for rule in doc["spec"][dir].as_sequence().into_iter().flatten() {
                let strings = |v: &serde_yaml::Value| -> Vec<String> {
                    v.as_sequence()
                        .into_iter()
                        .flatten()
                        .map(|x| x.as_str().expect("a string").to_owned())
                        .collect()
                };
                let mut peers = strings(&rule[peer]["namespaces"]);
                peers.extend(strings(&rule[peer]["cidrs"]));
                let services = strings(&rule["services"]);
                let services = if services.is_empty() {
                    "-".to_owned()
                } else {
                    services.join(",")
                };
                let ports: Vec<String> = rule["ports"]
                    .as_sequence()
                    .expect("ports are always listed")
                    .iter()
                    .map(|pt| {
                        assert!(pt.get("endPort").is_none(), "no ranges: {pt:?}");
                        format!(
                            "{}/{}",
                            pt["protocol"].as_str().expect("protocol"),
                            pt["port"].as_u64().expect("port")
                        )
                    })
                    .collect();
                out.insert(format!(
                    "{ns} {dir} {} {services} {}",
                    peers.join(","),
                    ports.join(",")
                ));
            }
        }
    }
    out
}

/// Runs `firewall-agent ARGS` with `stdin`; its output, whatever the exit status.
fn firewall_agent(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(agent_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run firewall-agent {args:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("firewall-agent output")
}

/// `firewall-agent ARGS`, which must succeed: its stdout.
fn ok(args: &[&str]) -> String {
    let out = firewall_agent(args, "");
    assert!(
        out.status.success(),
        "firewall-agent {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "$ firewall-agent {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Shows a log file as written, for the reader of a failure.
fn print_log(path: &Path) {
    let text = std::fs::read_to_string(path).expect("the log");
    eprintln!("{}:\n{text}", path.display());
}

/// Runs every connection; panics unless each ends as `want`.
fn run_all<'a>(nodes: &[&Node], conns: impl IntoIterator<Item = &'a Conn>, want: &str) {
    for c in conns {
        let r = c.probe(nodes);
        assert_eq!(r.result, want, "{c:?}: {r:?}");
    }
}

#[test]
fn discover_suggest_monitor_enforce() {
    skip_unless_root!("discover_suggest_monitor_enforce");
    // No ClusterFirewall at all: a fresh install, where everything is allowed.
    let node = Node::up("roll", 60, PODS, &[]);
    let outside = node.world_server(&[200], 80);
    let world = outside.ips[0];
    let seen = observed(world);
    let unseen = unobserved(world);
    let seen_keys: BTreeSet<Key> = seen.iter().map(Conn::key).collect();
    let source = file_source(node.source());
    let log = |phase: &str| -> PathBuf { node.dir().join(format!("{phase}.log")) };

    // Phase 1: discovery. Every allowed new connection across namespaces or to the world is a
    // flow line, ALLOWED by `default`; nothing is a violation.
    let agent = node.agent(&["--flow-log", "all"]);
    run_all(&[&node], &seen, "ok");
    let discovery = log("discovery");
    let lines = agent.stop_to_file(&discovery);
    print_log(&discovery);
    let flows: Vec<Key> = lines.iter().map(key).collect();
    assert_eq!(
        flows.iter().cloned().collect::<BTreeSet<_>>(),
        seen_keys,
        "one flow line per observed connection, nothing else: {}",
        pretty(&lines)
    );
    assert_eq!(flows.len(), seen.len(), "{}", pretty(&lines));
    for l in &lines {
        assert_eq!(
            (&l["type"], &l["verdict"], &l["policy"], &l["count"]),
            (
                &Value::from("flow"),
                &Value::from("ALLOWED"),
                &Value::from("default"),
                &Value::from(1)
            ),
            "{l}"
        );
        assert_eq!(sides(l), [], "a flow line has no denying side: {l}");
    }

    // suggest: exactly the observed connections, valid, deterministic.
    let suggested = suggest_checked(&source, &[&discovery], &expected_rules(world));

    // report: the pairs with their connections, and a well-formed page.
    let html = node.dir().join("flows.html");
    let report = ok(&["report", path_str(&discovery), "--html", path_str(&html)]);
    eprintln!("{report}");
    check_report(&report, &html);

    // Phase 2: the suggestion behind a deny-by-default baseline, still monitoring. The same
    // pattern is audited nowhere, and against the policy now in force nothing more is needed.
    node.set_policies(&[&baseline("Deny", "Monitor"), &suggested]);
    let agent = node.agent(&["--flow-log", "all"]);
    run_all(&[&node], &seen, "ok");
    let monitor = log("monitor");
    let lines = agent.stop_to_file(&monitor);
    let violations = common::find(&lines, |l| l["type"] != "flow");
    assert!(
        violations.is_empty(),
        "zero AUDIT lines once the suggestion is applied: {}",
        pretty(&lines)
    );
    assert_eq!(
        lines.iter().map(key).collect::<BTreeSet<_>>(),
        seen_keys,
        "{}",
        pretty(&lines)
    );
    assert_converged(node.source(), &[&monitor]);
    assert_converged(node.source(), &[&discovery]);

    // Phase 3: enforce. Every observed connection still works; every unobserved one is dropped
    // at once (EPERM at the syscall) and logged once, DENIED, with the sides that denied it.
    node.set_policies(&[&baseline("Deny", "Enforce"), &suggested]);
    let agent = node.agent(&[]);
    run_all(&[&node], &seen, "ok");
    run_all(&[&node], unseen.iter().map(|(c, _, _)| c), "denied");
    let enforce = log("enforce");
    let lines = agent.stop_to_file(&enforce);
    print_log(&enforce);
    check_denied(&lines, &unseen);
}

/// `suggest --source SOURCE LOGS...`, checked: its rules are `expected` exactly, it passes
/// `validate`, and the same lines in reverse order, split over two files, give the same bytes.
/// Returns the suggestion.
fn suggest_checked(source: &str, logs: &[&Path], expected: &BTreeSet<String>) -> String {
    let mut args = vec!["suggest", "--source", source];
    args.extend(logs.iter().map(|l| path_str(l)));
    let suggested = ok(&args);
    eprintln!("{suggested}");
    assert_eq!(&rules_of(&suggested), expected, "{suggested}");
    let v = firewall_agent(&["validate", "-"], &suggested);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    eprintln!("$ firewall-agent validate -\n{said}");
    assert!(
        v.status.success(),
        "suggest's output must pass validate: {said}"
    );

    let mut lines = Vec::new();
    for l in logs {
        let text = std::fs::read_to_string(l).expect("a log");
        lines.extend(text.lines().map(str::to_owned));
    }
    lines.reverse();
    let tail = lines.split_off(lines.len() / 2);
    let dir = logs[0].parent().expect("the logs' directory");
    let (a, b) = (dir.join("reversed-a.log"), dir.join("reversed-b.log"));
    std::fs::write(&a, lines.join("\n") + "\n").expect("write");
    std::fs::write(&b, tail.join("\n") + "\n").expect("write");
    let again = ok(&["suggest", "--source", source, path_str(&a), path_str(&b)]);
    assert_eq!(again, suggested, "suggest must be deterministic");
    suggested
}

/// `suggest --against file:SOURCE LOGS...` prints nothing: the policy in force allows every
/// connection of the logs (docs/design.md, `suggest`: the loop has converged).
fn assert_converged(source: &Path, logs: &[&Path]) {
    let against = file_source(source);
    let mut args = vec!["suggest", "--against", against.as_str()];
    args.extend(logs.iter().map(|l| path_str(l)));
    let out = firewall_agent(&args, "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("$ firewall-agent {}\n{stderr}", args.join(" "));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "converged: nothing to add ({stderr})"
    );
    assert!(stderr.contains("nothing to suggest"), "{stderr}");
}

/// `lines` are one DENIED line per connection of `unseen`, naming the sides that denied it (all
/// in enforce, egress first), and nothing else.
fn check_denied(lines: &[Value], unseen: &[Denied]) {
    assert_eq!(lines.len(), unseen.len(), "{}", pretty(lines));
    for (c, egress, ingress) in unseen {
        let got = common::find(lines, |l| key(l) == c.key());
        assert_eq!(got.len(), 1, "{c:?}: {}", pretty(lines));
        let l = got[0];
        assert_eq!(
            (&l["type"], &l["verdict"], &l["count"]),
            (
                &Value::from("violation"),
                &Value::from("DENIED"),
                &Value::from(1)
            ),
            "{l}"
        );
        let namespace = |pod: &str| pod.split_once('/').map_or("", |(ns, _)| ns).to_owned();
        let mut want = Vec::new();
        if *egress != ALLOWS {
            want.push(side("egress", &namespace(c.from), "enforce", egress));
        }
        if *ingress != ALLOWS {
            want.push(side("ingress", &namespace(pod_of(c)), "enforce", ingress));
        }
        assert_eq!(sides(l), want, "{l}");
    }
}

/// `report`'s per-pair lines (README: `SRC -> DST: N connection(s): ALLOWED a, AUDIT b, DENIED
/// c; PROTO/PORT ...`) for the discovery log, and its page: one XML document, no scripts, an SVG
/// naming every namespace.
fn check_report(report: &str, html: &Path) {
    for (pair, n, ports) in [
        ("batch -> (world)", 1, &["TCP/80"][..]),
        ("batch -> db", 1, &["TCP/5432"]),
        ("frontend -> payments", 1, &["TCP/8443"]),
        ("payments -> db", 2, &["TCP/5432", "UDP/5353"]),
    ] {
        let head = format!("{pair}: {n} connection(s): ALLOWED {n}, AUDIT 0, DENIED 0;");
        let line = report
            .lines()
            .find(|l| l.starts_with(&head))
            .unwrap_or_else(|| panic!("no line {head:?} in:\n{report}"));
        for p in ports {
            assert!(line.contains(p), "{line}");
        }
    }
    let page = std::fs::read_to_string(html).expect("the page");
    // The page declares the XHTML doctype.
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(&page, opts)
        .unwrap_or_else(|e| panic!("the page is not well-formed XML: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "html");
    let names: Vec<&str> = doc.descendants().map(|n| n.tag_name().name()).collect();
    assert!(names.contains(&"svg"), "{names:?}");
    assert!(!names.contains(&"script"), "a page without scripts");
    let text: String = doc.descendants().filter_map(|n| n.text()).collect();
    for ns in ["frontend", "payments", "db", "batch"] {
        assert!(text.contains(ns), "{ns} missing from the page");
    }
}

/// Node 1 of the two-node cluster: the web tier and the Service's backend.
const NODE_1: &str = r#"
namespaces:
  - {name: frontend}
  - {name: payments}
pods:
  - {name: web, namespace: frontend, labels: {app: web}, serve: [{protocol: TCP, port: 80}]}
  - {name: api, namespace: payments, labels: {app: api}, serve: [{protocol: TCP, port: 8443}]}
services:
  - {name: payments-api, namespace: payments, selector: {app: api}}
"#;

/// Node 2: the database, a batch job and a second payments pod (payments spans both nodes).
const NODE_2: &str = r#"
namespaces:
  - {name: payments}
  - {name: db}
  - {name: batch}
pods:
  - {name: worker, namespace: payments, labels: {app: worker}}
  - {name: postgres, namespace: db, labels: {app: postgres}, serve: [{protocol: TCP, port: 5432}, {protocol: UDP, port: 5353}]}
  - {name: job, namespace: batch, labels: {app: job}}
"#;

/// The loop over two nodes, each with its own agent: a connection between nodes is judged on
/// both (its egress side at the source's node, its ingress side at the destination's), so each
/// logs it; `suggest` reads both logs merged and the result holds on both nodes.
#[test]
fn two_nodes_logs_merged() {
    skip_unless_root!("two_nodes_logs_merged");
    let n1 = Node::up_in_cluster("rolla", 61, "node-1", NODE_1);
    let n2 = Node::up_in_cluster("rollb", 62, "node-2", NODE_2);
    let nodes = [&n1, &n2];
    let node_of = |pod: &str| {
        if n1.testbed().pod_ipv4(pod).is_ok() {
            "node-1"
        } else {
            "node-2"
        }
    };
    use To::Pod;
    let seen = [
        conn("frontend/web", Pod("payments/api"), "TCP", 8443),
        conn("payments/api", Pod("db/postgres"), "TCP", 5432),
        conn("payments/api", Pod("db/postgres"), "UDP", 5353),
        conn("batch/job", Pod("payments/api"), "TCP", 8443),
        conn("payments/worker", Pod("db/postgres"), "TCP", 5432),
    ];
    // Each dropped on the source's node, which also judges a pod destination's ingress side
    // (docs/design.md#connections, step 10): the only node to see it, it logs both sides.
    #[rustfmt::skip]
    let unseen: [Denied; 5] = [
        (conn("db/postgres", Pod("payments/api"), "TCP", 8443), "default", PAYMENTS),
        (conn("frontend/web", Pod("db/postgres"), "TCP", 5432), FRONTEND, DB),
        (conn("payments/api", Pod("db/postgres"), "TCP", 5433), PAYMENTS, DB),
        (conn("batch/job", Pod("payments/api"), "UDP", 8443), BATCH, PAYMENTS),
        // Only the remote destination's side denies: a payments pod behind no Service.
        (conn("frontend/web", Pod("payments/worker"), "TCP", 8443), ALLOWS, PAYMENTS),
    ];
    let source = file_source(n1.source());
    let logs = |phase: &str| -> [PathBuf; 2] {
        [
            n1.dir().join(format!("{phase}-node-1.log")),
            n2.dir().join(format!("{phase}-node-2.log")),
        ]
    };
    // Runs `conns` with both agents up (started with `flags`); each agent's lines, as logged.
    let phase = |name: &str, flags: &[&str], runs: &[(&[Conn], &str)]| -> Vec<Value> {
        let agents = [n1.agent(flags), n2.agent(flags)];
        for (conns, want) in runs {
            run_all(&nodes, conns.iter(), want);
        }
        let mut lines = Vec::new();
        for (agent, path) in agents.into_iter().zip(logs(name)) {
            lines.extend(agent.stop_to_file(&path));
            print_log(&path);
        }
        lines
    };

    // Phase 1: discovery, no policy. A flow line on every node that judged a side.
    set_cluster_policies(&nodes, &[]);
    let lines = phase("discovery", &["--flow-log", "all"], &[(&seen, "ok")]);
    let mut want: Vec<(Key, String)> = Vec::new();
    for c in &seen {
        let on: BTreeSet<&str> = [node_of(c.from), node_of(pod_of(c))].into();
        want.extend(on.into_iter().map(|n| (c.key(), n.to_owned())));
    }
    want.sort();
    let mut got: Vec<(Key, String)> = lines
        .iter()
        .map(|l| (key(l), l["node"].as_str().unwrap_or("null").to_owned()))
        .collect();
    got.sort();
    assert_eq!(got, want, "{}", pretty(&lines));
    assert!(
        lines
            .iter()
            .all(|l| l["type"] == "flow" && l["verdict"] == "ALLOWED"),
        "{}",
        pretty(&lines)
    );

    // suggest over both logs merged.
    let expected: BTreeSet<String> = [
        "frontend egress payments - TCP/8443",
        "payments ingress frontend payments-api TCP/8443",
        "payments ingress batch payments-api TCP/8443",
        "payments egress db - TCP/5432",
        "payments egress db - UDP/5353",
        "db ingress payments - TCP/5432",
        "db ingress payments - UDP/5353",
        "batch egress payments - TCP/8443",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let [l1, l2] = logs("discovery");
    let suggested = suggest_checked(&source, &[&l1, &l2], &expected);

    // Phase 2: monitor behind the baseline: no AUDIT on either node, nothing more to suggest.
    set_cluster_policies(&nodes, &[&baseline("Deny", "Monitor"), &suggested]);
    let lines = phase("monitor", &["--flow-log", "all"], &[(&seen, "ok")]);
    assert!(
        lines.iter().all(|l| l["type"] == "flow"),
        "zero AUDIT lines: {}",
        pretty(&lines)
    );
    let [m1, m2] = logs("monitor");
    assert_converged(n1.source(), &[&m1, &m2]);

    // Phase 3: enforce on both nodes.
    set_cluster_policies(&nodes, &[&baseline("Deny", "Enforce"), &suggested]);
    let unseen_conns: Vec<Conn> = unseen.iter().map(|(c, _, _)| *c).collect();
    let lines = phase("enforce", &[], &[(&seen, "ok"), (&unseen_conns, "denied")]);
    assert_eq!(lines.len(), unseen.len(), "{}", pretty(&lines));
    check_denied(&lines, &unseen);
    for (c, _, _) in &unseen {
        let l = common::find(&lines, |l| key(l) == c.key())[0];
        assert_eq!(l["node"], node_of(c.from), "{l}");
    }
}

/// The destination pod of a connection between pods.
fn pod_of(c: &Conn) -> &'static str {
    match c.to {
        To::Pod(p) => p,
        To::World(_) => panic!("{c:?} goes to the world"),
    }
}
