//! `suggest` from the rules of docs/design.md#agent-cli: expected objects are written by hand
//! from those rules, never from what the code printed.
use std::collections::BTreeSet;

use super::{
    Flows,
    lines::LogRecord,
    render::render,
    rules::RuleOptions,
    suggest::{SuggestOptions, Suggestion, suggest},
};
use crate::{
    compiler::CompileOptions, crd::NamespaceFirewall, model::ClusterModel,
    source::file::parse_objects,
};

/// A log line as the agent prints it. `dst_ns` empty: a world address.
#[allow(clippy::too_many_arguments)]
fn line(
    ts: &str,
    kind: &str,
    verdict: &str,
    direction: &str,
    proto: &str,
    src: (&str, &str),
    dst: (&str, &str, &str),
    port: Option<u16>,
    policy: &str,
    count: u64,
) -> String {
    let ns = |n: &str| {
        if n.is_empty() {
            "null".to_owned()
        } else {
            format!("{n:?}")
        }
    };
    let port = port.map_or("null".to_owned(), |p| p.to_string());
    format!(
        r#"{{"ts":"{ts}","type":"{kind}","verdict":"{verdict}","direction":"{direction}","node":"node-1","protocol":"{proto}","src":{{"namespace":{},"pod":{},"ip":"10.0.0.1","port":40000}},"dst":{{"namespace":{},"pod":{},"ip":"{}","port":{port}}},"policy":"{policy}","count":{count}}}"#,
        ns(src.0),
        ns(src.1),
        ns(dst.0),
        ns(dst.1),
        dst.2,
    )
}

/// One AUDIT line per (time, direction, source namespace, destination, port).
type Audit<'a> = (&'a str, &'a str, &'a str, (&'a str, &'a str, &'a str), u16);

fn audits(rows: &[Audit<'_>]) -> Vec<String> {
    rows.iter()
        .map(|&(ts, direction, src, dst, port)| audit(ts, direction, src, dst, port))
        .collect()
}

fn audit(ts: &str, direction: &str, src: &str, dst: (&str, &str, &str), port: u16) -> String {
    line(
        ts,
        "violation",
        "AUDIT",
        direction,
        "TCP",
        (src, "client"),
        dst,
        Some(port),
        "default",
        1,
    )
}

fn flows(lines: &[String]) -> Flows {
    let mut f = Flows::default();
    for l in lines {
        let r: LogRecord = serde_json::from_str(l).unwrap();
        f.add(&r);
    }
    f
}

fn opts() -> SuggestOptions {
    SuggestOptions {
        namespace: None,
        rules: RuleOptions::default(),
        compile: CompileOptions::default(),
    }
}

fn run(
    lines: &[String],
    opts: &SuggestOptions,
    cluster: Option<&ClusterModel>,
    against: Option<&ClusterModel>,
) -> (String, Suggestion) {
    let s = suggest(&flows(lines), opts, cluster, against);
    (render(&s.objects).unwrap(), s)
}

fn objects(text: &str) -> Vec<NamespaceFirewall> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| NamespaceFirewall::deserialize(d).unwrap())
        .collect()
}

/// (namespace, name, spec as JSON) of each object of a stream.
fn summary(text: &str) -> Vec<(String, String, String)> {
    objects(text)
        .iter()
        .map(|o| {
            (
                o.metadata.namespace.clone().unwrap_or_default(),
                o.metadata.name.clone().unwrap_or_default(),
                serde_json::to_string(&o.spec).unwrap(),
            )
        })
        .collect()
}

const T1: &str = "2026-11-23T04:00:00.000001Z";
const T2: &str = "2026-11-23T04:00:05.000002Z";
const T3: &str = "2026-11-23T04:01:00.000003Z";

/// Ingress denied at orders (twice, two seconds), egress denied at shop once, and shop's egress
/// to the world.
fn denials_at_both_ends() -> Vec<String> {
    vec![
        // Ingress denied at orders (twice, two seconds), egress denied at shop once.
        audit(
            T2,
            "ingress",
            "shop",
            ("orders", "postgres-0", "10.0.1.9"),
            5433,
        ),
        audit(
            T1,
            "ingress",
            "shop",
            ("orders", "postgres-0", "10.0.1.9"),
            5433,
        ),
        audit(
            T3,
            "egress",
            "shop",
            ("orders", "postgres-0", "10.0.1.9"),
            6432,
        ),
        // To the world, on the egress side.
        line(
            T1,
            "violation",
            "DENIED",
            "egress",
            "UDP",
            ("shop", "client"),
            ("", "", "192.0.2.7"),
            Some(123),
            "NamespaceFirewall/shop/old",
            4,
        ),
    ]
}

#[test]
fn writes_each_denying_side_with_its_count_and_times() {
    let (text, s) = run(&denials_at_both_ends(), &opts(), None, None);
    let expected = format!(
        "---
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata:
  name: suggested
  namespace: orders
spec:
  ingress:
  # 2 connection(s), first seen {T1}, last seen {T2}
  - from:
      namespaces:
      - shop
    ports:
    - protocol: TCP
      port: 5433
---
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata:
  name: suggested
  namespace: shop
spec:
  egress:
  # 1 connection(s), first seen {T3}, last seen {T3}
  - to:
      namespaces:
      - orders
    ports:
    - protocol: TCP
      port: 6432
  # 4 connection(s), first seen {T1}, last seen {T1}
  - to:
      cidrs:
      - 192.0.2.7/32
    ports:
    - protocol: UDP
      port: 123
"
    );
    assert_eq!(text, expected);
    assert!(s.notes.is_empty(), "{:?}", s.notes);
    // The text is exactly the objects (comments aside).
    let parsed = objects(&text);
    let built: Vec<_> = s.objects.iter().map(|o| o.object.clone()).collect();
    assert_eq!(parsed, built);
}

#[test]
fn flow_lines_need_both_sides_and_sides_name_the_denying_ones() {
    let lines = vec![
        line(
            T1,
            "flow",
            "ALLOWED",
            "egress",
            "TCP",
            ("web", "client"),
            ("api", "api-0", "10.0.1.3"),
            Some(443),
            "default",
            2,
        ),
        // Both sides denied, in one line (`sides`), egress in enforce.
        r#"{"ts":"2026-11-23T04:00:00.000001Z","type":"violation","verdict":"DENIED","direction":"egress","node":"n","protocol":"SCTP","src":{"namespace":"web","pod":"c","ip":"10.0.0.1","port":9},"dst":{"namespace":"sig","pod":"s","ip":"10.0.1.4","port":3868},"policy":"default","count":1,"sides":[{"side":"egress","namespace":"web","mode":"enforce","policy":"default"},{"side":"ingress","namespace":"sig","mode":"monitor","policy":"default"}]}"#.to_owned(),
    ];
    let (text, _) = run(&lines, &opts(), None, None);
    let ingress = |proto: &str, port: u16| {
        format!(
            r#"{{"ingress":[{{"from":{{"namespaces":["web"]}},"ports":[{{"protocol":"{proto}","port":{port}}}]}}]}}"#
        )
    };
    let s = |x: &str| x.to_owned();
    assert_eq!(
        summary(&text),
        vec![
            (s("api"), s("suggested"), ingress("TCP", 443)),
            (s("sig"), s("suggested"), ingress("SCTP", 3868)),
            (
                s("web"),
                s("suggested"),
                s(
                    r#"{"egress":[{"to":{"namespaces":["api"]},"ports":[{"protocol":"TCP","port":443}]},{"to":{"namespaces":["sig"]},"ports":[{"protocol":"SCTP","port":3868}]}]}"#
                )
            ),
        ]
    );
}

#[test]
fn icmp_and_cluster_rule_denials_are_notes_never_rules() {
    let lines = vec![
        line(
            T1,
            "violation",
            "AUDIT",
            "egress",
            "ICMP",
            ("web", "client"),
            ("db", "pg", "10.0.1.9"),
            None,
            "default",
            1,
        ),
        line(
            T1,
            "violation",
            "DENIED",
            "egress",
            "TCP",
            ("web", "client"),
            ("db", "pg", "10.0.1.9"),
            Some(22),
            "ClusterFirewall/baseline:rules[0]",
            1,
        ),
    ];
    let (text, s) = run(&lines, &opts(), None, None);
    assert_eq!(text, "");
    assert_eq!(s.notes.len(), 2, "{:?}", s.notes);
    assert!(s.notes[0].contains("ICMP web -> db"), "{}", s.notes[0]);
    assert!(s.notes[1].contains("ClusterFirewall/baseline:rules[0]"));
}

#[test]
fn same_bytes_whatever_the_line_order() {
    let mut lines = Vec::new();
    for i in 0..60u16 {
        let src = ["web", "api", "batch"][usize::from(i % 3)];
        let dst = ["db", "cache", ""][usize::from(i % 5 % 3)];
        let ip = format!("10.0.{}.{}", i % 4, i % 7 + 1);
        let pod = if dst.is_empty() { "" } else { "p-0" };
        let ts = format!("2026-11-23T04:00:{:02}.000000Z", (i * 7) % 60);
        let dir = if i % 2 == 0 { "egress" } else { "ingress" };
        let dir = if dst.is_empty() { "egress" } else { dir };
        lines.push(audit(&ts, dir, src, (dst, pod, &ip), 8000 + i % 9));
    }
    let (a, _) = run(&lines, &opts(), None, None);
    assert!(!a.is_empty());
    lines.reverse();
    let (b, _) = run(&lines, &opts(), None, None);
    // A fixed shuffle: every 7th position first.
    let shuffled: Vec<String> = (0..7)
        .flat_map(|k| lines.iter().skip(k).step_by(7).cloned())
        .collect();
    let (c, _) = run(&shuffled, &opts(), None, None);
    assert_eq!(a, b);
    assert_eq!(a, c);
}

/// Every rule of the output allows only observed (peer, protocol, port) of its namespace and
/// direction, names its peers, and lists ports.
#[test]
fn never_wider_than_observed() {
    let mut lines = Vec::new();
    let mut observed = BTreeSet::new();
    for i in 0..80u16 {
        let src = ["web", "api"][usize::from(i % 2)];
        let dst = ["db", "cache", "", "web"][usize::from(i % 4)];
        let ip = format!("198.51.100.{}", i % 5 + 1);
        let port = 1000 + (i * 13) % 40;
        let proto = ["TCP", "UDP"][usize::from(i / 3 % 2)];
        if dst == src {
            continue;
        }
        let (pod, kind, verdict) = if dst.is_empty() {
            ("", "violation", "AUDIT")
        } else {
            ("p", "flow", "ALLOWED")
        };
        lines.push(line(
            T1,
            kind,
            verdict,
            "egress",
            proto,
            (src, "c"),
            (dst, pod, &ip),
            Some(port),
            "default",
            1,
        ));
        if dst.is_empty() {
            observed.insert((src.to_owned(), "egress", format!("{ip}/32"), proto, port));
        } else {
            observed.insert((src.to_owned(), "egress", dst.to_owned(), proto, port));
            observed.insert((dst.to_owned(), "ingress", src.to_owned(), proto, port));
        }
    }
    let (text, _) = run(&lines, &opts(), None, None);
    let mut allowed = BTreeSet::new();
    for o in objects(&text) {
        let ns = o.metadata.namespace.clone().unwrap();
        for r in o.spec.ingress.iter().flatten() {
            assert!(r.from.namespace_selector.is_none());
            for peer in r.from.namespaces.as_ref().expect("a named peer") {
                for p in r.ports.as_ref().expect("ports listed") {
                    assert_eq!(p.end_port, None);
                    let port = u16::try_from(p.port.unwrap()).unwrap();
                    let proto = if p.protocol == "TCP" { "TCP" } else { "UDP" };
                    allowed.insert((ns.clone(), "ingress", peer.clone(), proto, port));
                }
            }
        }
        for r in o.spec.egress.iter().flatten() {
            assert!(r.to.namespace_selector.is_none() && r.to.except.is_none());
            let peers: Vec<String> =
                r.to.namespaces
                    .iter()
                    .flatten()
                    .chain(r.to.cidrs.iter().flatten())
                    .cloned()
                    .collect();
            assert!(!peers.is_empty());
            for peer in peers {
                for p in r.ports.as_ref().expect("ports listed") {
                    let port = u16::try_from(p.port.unwrap()).unwrap();
                    let proto = if p.protocol == "TCP" { "TCP" } else { "UDP" };
                    allowed.insert((ns.clone(), "egress", peer.clone(), proto, port));
                }
            }
        }
    }
    assert_eq!(allowed, observed);
}

#[test]
fn addresses_group_by_their_exact_ports_and_aggregate_on_request() {
    let world = |ip: &str, port: u16| audit(T1, "egress", "web", ("", "", ip), port);
    let lines = vec![
        world("192.0.2.1", 53),
        world("192.0.2.7", 53),
        world("198.51.100.9", 443),
        world("2001:db8::5", 443),
    ];
    let (text, _) = run(&lines, &opts(), None, None);
    let o = &objects(&text)[0];
    let got = serde_json::to_string(&o.spec.egress).unwrap();
    // 53 to both 192.0.2.x, 443 to the others: no address gets the other's port.
    assert_eq!(
        got,
        r#"[{"to":{"cidrs":["192.0.2.1/32","192.0.2.7/32"]},"ports":[{"protocol":"TCP","port":53}]},{"to":{"cidrs":["198.51.100.9/32","2001:db8::5/128"]},"ports":[{"protocol":"TCP","port":443}]}]"#
    );
    let mut wide = opts();
    wide.rules.cidr_prefix_v4 = 24;
    wide.rules.cidr_prefix_v6 = 64;
    let (text, _) = run(&lines, &wide, None, None);
    let got = serde_json::to_string(&objects(&text)[0].spec.egress).unwrap();
    assert_eq!(
        got,
        r#"[{"to":{"cidrs":["192.0.2.0/24"]},"ports":[{"protocol":"TCP","port":53}]},{"to":{"cidrs":["198.51.100.0/24","2001:db8::/64"]},"ports":[{"protocol":"TCP","port":443}]}]"#
    );
}

#[test]
fn ports_are_ranges_only_with_merge_ports() {
    let lines: Vec<String> = [8080, 8081, 8082, 9000]
        .iter()
        .map(|&p| audit(T1, "ingress", "web", ("db", "pg", "10.0.1.9"), p))
        .collect();
    let ports = |gap: Option<u16>| {
        let mut o = opts();
        o.rules.merge_gap = gap;
        let (text, _) = run(&lines, &o, None, None);
        let spec = &objects(&text)[0].spec;
        serde_json::to_string(&spec.ingress.as_ref().unwrap()[0].ports).unwrap()
    };
    assert_eq!(
        ports(None),
        r#"[{"protocol":"TCP","port":8080},{"protocol":"TCP","port":8081},{"protocol":"TCP","port":8082},{"protocol":"TCP","port":9000}]"#
    );
    assert_eq!(
        ports(Some(1)),
        r#"[{"protocol":"TCP","port":8080,"endPort":8082},{"protocol":"TCP","port":9000}]"#
    );
    assert_eq!(
        ports(Some(1000)),
        r#"[{"protocol":"TCP","port":8080,"endPort":9000}]"#
    );
}

#[test]
fn schema_bounds_split_rules_and_objects_never_drop() {
    // 40 ports from one peer: 32 + 8 in two rules.
    let mut lines: Vec<String> = (0..40)
        .map(|p| audit(T1, "ingress", "web", ("db", "pg", "10.0.1.9"), 2000 + p))
        .collect();
    // 70 source namespaces: 64 rules in `suggested`, the rest in `suggested-2`.
    lines.extend((0..70).map(|i| {
        audit(
            T1,
            "ingress",
            &format!("src{i:02}"),
            ("cache", "r", "10.0.1.8"),
            6379,
        )
    }));
    let (text, _) = run(&lines, &opts(), None, None);
    let got = objects(&text);
    let shape: Vec<(String, String, usize)> = got
        .iter()
        .map(|o| {
            (
                o.metadata.namespace.clone().unwrap(),
                o.metadata.name.clone().unwrap(),
                o.spec.ingress.as_ref().map_or(0, Vec::len),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("cache".into(), "suggested".into(), 64),
            ("cache".into(), "suggested-2".into(), 6),
            ("db".into(), "suggested".into(), 2),
        ]
    );
    let db = &got[2].spec.ingress.as_ref().unwrap();
    assert_eq!(db[0].ports.as_ref().unwrap().len(), 32);
    assert_eq!(db[1].ports.as_ref().unwrap().len(), 8);
}

const CLUSTER: &str = "
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: web}}
- {apiVersion: v1, kind: Namespace, metadata: {name: db}}
- {apiVersion: v1, kind: Namespace, metadata: {name: cache}}
- apiVersion: v1
  kind: Pod
  metadata: {name: postgres-0, namespace: db, labels: {app: pg, tier: data}}
  status: {podIP: 10.0.1.9}
- apiVersion: v1
  kind: Pod
  metadata: {name: postgres-1, namespace: db, labels: {app: pg, tier: data}}
  status: {podIP: 10.0.1.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: backup-0, namespace: db, labels: {app: backup, tier: data}}
  status: {podIP: 10.0.1.11}
- apiVersion: v1
  kind: Service
  metadata: {name: pg, namespace: db}
  spec: {selector: {app: pg}, clusterIP: 10.96.0.9}
- apiVersion: v1
  kind: Service
  metadata: {name: data, namespace: db}
  spec: {selector: {tier: data}, clusterIP: 10.96.0.10}
";

#[test]
fn services_narrow_ingress_to_the_fewest_backends_covering_the_observed_pods() {
    let cluster = parse_objects(CLUSTER).unwrap();
    // backup-0 is a backend of `data` only. postgres-1 and backup-0 on 7000: two pods of
    // different Services on one port, `data` covers both. gone-0: a pod the cluster does not
    // know, so the whole namespace.
    let lines = audits(&[
        (T1, "ingress", "web", ("db", "postgres-0", "10.0.1.9"), 5432),
        (T1, "ingress", "web", ("db", "backup-0", "10.0.1.11"), 9000),
        (
            T1,
            "ingress",
            "cache",
            ("db", "postgres-1", "10.0.1.10"),
            7000,
        ),
        (
            T1,
            "ingress",
            "cache",
            ("db", "backup-0", "10.0.1.11"),
            7000,
        ),
        (T1, "ingress", "cache", ("db", "gone-0", "10.0.1.99"), 7001),
    ]);
    let (text, _) = run(&lines, &opts(), Some(&cluster), None);
    let spec = serde_json::to_string(&objects(&text)[0].spec).unwrap();
    assert_eq!(
        spec,
        concat!(
            r#"{"ingress":["#,
            r#"{"from":{"namespaces":["cache"]},"ports":[{"protocol":"TCP","port":7001}]},"#,
            r#"{"from":{"namespaces":["cache"]},"services":["data"],"ports":[{"protocol":"TCP","port":7000}]},"#,
            r#"{"from":{"namespaces":["web"]},"services":["data"],"ports":[{"protocol":"TCP","port":9000}]},"#,
            r#"{"from":{"namespaces":["web"]},"services":["pg"],"ports":[{"protocol":"TCP","port":5432}]}"#,
            r#"]}"#
        )
    );
}

/// A baseline that denies across namespaces, and db already admitting web on 5432.
const POLICY: &str = "
apiVersion: bulkhead.dev/v1alpha1
kind: ClusterFirewall
metadata: {name: baseline}
spec:
  defaults: {crossNamespace: Deny, mode: Monitor}
---
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: suggested, namespace: db}
spec: {ingress: [{from: {namespaces: [web]}, ports: [{protocol: TCP, port: 5432}]}]}
";

#[test]
fn against_prints_only_what_the_policy_does_not_allow_and_converges() {
    let policy = parse_objects(POLICY).unwrap();
    let lines = vec![
        audit(T1, "egress", "web", ("db", "postgres-0", "10.0.1.9"), 5432),
        audit(T1, "ingress", "web", ("db", "postgres-0", "10.0.1.9"), 5432),
        audit(T2, "egress", "web", ("cache", "redis-0", "10.0.2.4"), 6379),
        audit(T2, "ingress", "web", ("cache", "redis-0", "10.0.2.4"), 6379),
        line(
            T3,
            "flow",
            "ALLOWED",
            "egress",
            "UDP",
            ("web", "client"),
            ("", "", "192.0.2.7"),
            Some(123),
            "default",
            1,
        ),
    ];
    let (text, _) = run(&lines, &opts(), None, Some(&policy));
    let got = summary(&text);
    // db admits web already: nothing for db. cache needs its ingress rule. web gets egress
    // rules for cache, and therefore (its first egress rules) also for db and the world
    // address, which were allowed only while web had no egress rules.
    assert_eq!(
        got,
        vec![
            (
                "cache".into(),
                "suggested".into(),
                r#"{"ingress":[{"from":{"namespaces":["web"]},"ports":[{"protocol":"TCP","port":6379}]}]}"#.into()
            ),
            (
                "web".into(),
                "suggested".into(),
                r#"{"egress":[{"to":{"namespaces":["cache"]},"ports":[{"protocol":"TCP","port":6379}]},{"to":{"namespaces":["db"]},"ports":[{"protocol":"TCP","port":5432}]},{"to":{"cidrs":["192.0.2.7/32"]},"ports":[{"protocol":"UDP","port":123}]}]}"#.into()
            ),
        ]
    );
    // Applied, the same observations need nothing more.
    let mut applied = policy;
    applied.namespace_firewalls.extend(objects(&text));
    let (again, s) = run(&lines, &opts(), None, Some(&applied));
    assert_eq!(again, "", "{:?}", s.notes);
}

#[test]
fn against_never_replaces_an_object_in_force() {
    let policy = parse_objects(POLICY).unwrap();
    let lines = vec![audit(T1, "ingress", "web", ("db", "pg", "10.0.1.9"), 5433)];
    let (text, _) = run(&lines, &opts(), None, Some(&policy));
    let got: Vec<(String, String)> = summary(&text)
        .into_iter()
        .map(|(ns, n, _)| (ns, n))
        .collect();
    // `suggested` is in force in db: its addition is a new object. web's egress side is denied
    // by the default too (db's rule names 5432 only), and web has no object of that name.
    assert_eq!(
        got,
        vec![
            ("db".into(), "suggested-2".into()),
            ("web".into(), "suggested".into()),
        ]
    );
}

#[test]
fn namespace_keeps_only_that_namespaces_objects() {
    let lines = vec![
        audit(T1, "egress", "web", ("db", "pg", "10.0.1.9"), 5432),
        audit(T1, "ingress", "web", ("db", "pg", "10.0.1.9"), 5432),
    ];
    let mut o = opts();
    o.namespace = Some("db".into());
    let (text, _) = run(&lines, &o, None, None);
    let got = objects(&text);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].metadata.namespace.as_deref(), Some("db"));
}

#[test]
fn against_with_namespace_counts_only_that_namespaces_objects_as_applied() {
    let policy = parse_objects(POLICY).unwrap();
    let lines = vec![audit(
        T2,
        "ingress",
        "web",
        ("cache", "redis-0", "10.0.2.4"),
        6379,
    )];
    let mut o = opts();
    o.namespace = Some("web".into());
    // Without cache's ingress rule (not printed), web's egress side is denied by the default:
    // web needs its own egress rule, not an allowance by cache's rule it will not get.
    let (text, _) = run(&lines, &o, None, Some(&policy));
    assert_eq!(
        summary(&text),
        vec![(
            "web".to_owned(),
            "suggested".to_owned(),
            r#"{"egress":[{"to":{"namespaces":["cache"]},"ports":[{"protocol":"TCP","port":6379}]}]}"#
                .to_owned()
        )]
    );
}

#[test]
fn a_note_is_also_a_comment_in_the_objects_of_its_namespaces() {
    let icmp = line(
        T1,
        "flow",
        "ALLOWED",
        "egress",
        "ICMPv6",
        ("web", "client"),
        ("db", "pg", "fd00::9"),
        None,
        "default",
        1,
    );
    let lines = vec![
        icmp,
        audit(T1, "egress", "web", ("cache", "r", "10.0.2.4"), 6379),
    ];
    let (text, s) = run(&lines, &opts(), None, None);
    let note = "ICMPv6 web -> db (1 connection(s)): a NamespaceFirewall matches ICMPv6 only with a rule without ports, which would allow every protocol and port; none is suggested (allow it by hand if that is wanted)";
    assert_eq!(s.notes, vec![note.to_owned()]);
    // web has an object (its egress to cache); db has none, so the note is only on stderr.
    assert!(text.starts_with(&format!(
        "---\n# note: {note}\napiVersion: bulkhead.dev/v1alpha1\n"
    )));
    assert_eq!(text.matches("# note:").count(), 1);
    assert!(text.contains("  namespace: web\n"));
}
