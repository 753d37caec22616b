//! ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2, network-policy-api v0.2.0) end to
//! end, in the shape of network-policy-api's conformance suite: the houses' namespaces
//! (`network-policy-conformance-<house>`, label `conformance-house`) with two pods each serving
//! TCP 80 and 8080 and UDP 53 and 5353, Admin tier Accept/Deny/Pass, NetworkPolicy in between,
//! Baseline tier, priorities and rule order, subjects and peers, protocols. The whole matrix is
//! compared with what the API defines, in enforce and in monitor mode. Plus Wiz's
//! `restrict-external-access` NetworkPolicy against world servers inside and outside 10.0.0.0/8.
//! Needs root; skips loudly otherwise.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
mod common;

use std::{collections::BTreeSet, net::Ipv4Addr, time::Instant};

use bulkhead_tests::{Protocol, scenario::PortSpec, skip_unless_root};
use common::matrix::{
    Extra, Flow, Grid, Harness, Pod, Reach, assert_no_failures, run_cases, skip_loudly,
};

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;

/// A policy object: (namespace, name, spec), spec as flow-style YAML with `{net}` and `{ns/pod}`
/// filled in. An empty namespace makes a ClusterNetworkPolicy, any other a NetworkPolicy there.
type Obj = (&'static str, &'static str, &'static str);

/// A case: name, objects, and which flows the API says connect.
type Case = (&'static str, &'static [Obj], fn(&Flow) -> bool);

const G: &str = "network-policy-conformance-gryffindor";
const S: &str = "network-policy-conformance-slytherin";
const H: &str = "network-policy-conformance-hufflepuff";
const R: &str = "network-policy-conformance-ravenclaw";

/// The houses (conformance/base/manifests.yaml, without SCTP: this kernel has none).
fn houses() -> Grid {
    let ns: [(&str, &str); 4] = [
        (G, "{conformance-house: gryffindor}"),
        (S, "{conformance-house: slytherin}"),
        (H, "{conformance-house: hufflepuff}"),
        (R, "{conformance-house: ravenclaw}"),
    ];
    let pods: [(&str, &str, &str); 8] = [
        (
            G,
            "harry-potter-0",
            "{conformance-house: gryffindor, statefulset.kubernetes.io/pod-name: harry-potter-0}",
        ),
        (
            G,
            "harry-potter-1",
            "{conformance-house: gryffindor, statefulset.kubernetes.io/pod-name: harry-potter-1}",
        ),
        (
            S,
            "draco-malfoy-0",
            "{conformance-house: slytherin, statefulset.kubernetes.io/pod-name: draco-malfoy-0}",
        ),
        (
            S,
            "draco-malfoy-1",
            "{conformance-house: slytherin, statefulset.kubernetes.io/pod-name: draco-malfoy-1}",
        ),
        (
            H,
            "cedric-diggory-0",
            "{conformance-house: hufflepuff, statefulset.kubernetes.io/pod-name: cedric-diggory-0}",
        ),
        (
            H,
            "cedric-diggory-1",
            "{conformance-house: hufflepuff, statefulset.kubernetes.io/pod-name: cedric-diggory-1}",
        ),
        (
            R,
            "luna-lovegood-0",
            "{conformance-house: ravenclaw, statefulset.kubernetes.io/pod-name: luna-lovegood-0}",
        ),
        (
            R,
            "luna-lovegood-1",
            "{conformance-house: ravenclaw, statefulset.kubernetes.io/pod-name: luna-lovegood-1}",
        ),
    ];
    Grid {
        namespaces: ns.to_vec(),
        pods: pods
            .iter()
            .map(|(n, p, l)| (Pod { ns: n, name: p }, *l))
            .collect(),
        ports: vec![(TCP, 80), (TCP, 8080), (UDP, 53), (UDP, 5353)],
    }
}

fn is(p: Pod, key: &str) -> bool {
    p.key() == key
}

/// Admin tier: Deny, Accept, priorities, rule order, over NetworkPolicy.
const ADMIN: &[Case] = &[
    (
        "admin-ingress-deny-tcp-80",
        &[(
            "",
            "deny-slytherin-80",
            "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, ingress: [{name: no-80, action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}]}",
        )],
        |f| !(f.to.ns == G && f.from.ns == S && f.is(TCP, 80)),
    ),
    (
        "admin-egress-deny-udp-53",
        &[(
            "",
            "no-53-to-hufflepuff",
            "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, egress: [{action: Deny, to: [{namespaces: {matchLabels: {conformance-house: hufflepuff}}}], protocols: [{udp: {destinationPort: {number: 53}}}]}]}",
        )],
        |f| !(f.from.ns == G && f.to.ns == H && f.is(UDP, 53)),
    ),
    (
        "admin-accept-overrides-networkpolicy-deny",
        &[
            (G, "deny-all", "{podSelector: {}, policyTypes: [Ingress]}"),
            (
                "",
                "accept-slytherin",
                "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, ingress: [{action: Accept, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}]}",
            ),
        ],
        |f| f.to.ns != G || f.from.ns == S,
    ),
    (
        "admin-deny-overrides-networkpolicy-allow",
        &[
            (H, "allow-all", "{podSelector: {}, ingress: [{}]}"),
            (
                "",
                "deny-ravenclaw",
                "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: hufflepuff}}}, ingress: [{action: Deny, from: [{namespaces: {matchLabels: {conformance-house: ravenclaw}}}]}]}",
            ),
        ],
        |f| !(f.to.ns == H && f.from.ns == R),
    ),
    // Lower priority number wins; then the same objects with the priorities swapped (an edit).
    (
        "admin-priority-lower-number-wins",
        &[
            (
                "",
                "accept-80",
                "{tier: Admin, priority: 5, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, ingress: [{action: Accept, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}]}",
            ),
            (
                "",
                "deny-all-slytherin",
                "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, ingress: [{action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}]}",
            ),
        ],
        |f| !(f.to.ns == G && f.from.ns == S) || f.is(TCP, 80),
    ),
    (
        "admin-priority-changed-mid-test",
        &[
            (
                "",
                "accept-80",
                "{tier: Admin, priority: 20, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, ingress: [{action: Accept, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}]}",
            ),
            (
                "",
                "deny-all-slytherin",
                "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, ingress: [{action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}]}",
            ),
        ],
        |f| !(f.to.ns == G && f.from.ns == S),
    ),
    (
        "admin-rule-order-is-precedence",
        &[(
            "",
            "ordered",
            "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, ingress: [{name: accept-8080, action: Accept, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}], protocols: [{tcp: {destinationPort: {number: 8080}}}]}, {name: deny-rest, action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}]}",
        )],
        |f| !(f.to.ns == G && f.from.ns == S) || f.is(TCP, 8080),
    ),
    (
        "admin-egress-accept-overrides-networkpolicy-deny-egress",
        &[
            (R, "deny-egress", "{podSelector: {}, policyTypes: [Egress]}"),
            (
                "",
                "ravenclaw-to-gryffindor",
                "{tier: Admin, priority: 3, subject: {namespaces: {matchLabels: {conformance-house: ravenclaw}}}, egress: [{action: Accept, to: [{namespaces: {matchLabels: {conformance-house: gryffindor}}}]}]}",
            ),
        ],
        |f| f.from.ns != R || f.to.ns == G,
    ),
];

/// Pass, the Baseline tier, and their order around NetworkPolicy.
const TIERS: &[Case] = &[
    // Pass hands the connection to the NetworkPolicies: G admits only H; the Baseline Deny is
    // never reached for what NetworkPolicy decided.
    (
        "admin-pass-delegates-to-networkpolicy",
        &[
            (
                "",
                "pass-all",
                "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, ingress: [{action: Pass, from: [{namespaces: {}}]}]}",
            ),
            (
                G,
                "from-hufflepuff",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {conformance-house: hufflepuff}}}]}]}",
            ),
            (
                "",
                "baseline-deny",
                "{tier: Baseline, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, ingress: [{action: Deny, from: [{namespaces: {}}]}]}",
            ),
        ],
        |f| f.to.ns != G || f.from.ns == H,
    ),
    // Pass skips the rest of the Admin tier (the Accept below it); no NetworkPolicy; Baseline denies.
    (
        "admin-pass-skips-admin-tier-then-baseline",
        &[
            (
                "",
                "a-pass",
                "{tier: Admin, priority: 1, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, ingress: [{action: Pass, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}]}",
            ),
            (
                "",
                "b-accept",
                "{tier: Admin, priority: 2, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, ingress: [{action: Accept, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}]}",
            ),
            (
                "",
                "baseline-deny-slytherin",
                "{tier: Baseline, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, ingress: [{action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}]}",
            ),
        ],
        |f| !(f.to.ns == G && f.from.ns == S),
    ),
    (
        "baseline-deny-applies-without-networkpolicy",
        &[(
            "",
            "baseline-hufflepuff",
            "{tier: Baseline, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: hufflepuff}}}, ingress: [{action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}]}",
        )],
        |f| !(f.to.ns == H && f.from.ns == S),
    ),
    (
        "networkpolicy-overrides-baseline",
        &[
            (
                "",
                "baseline-deny-ravenclaw",
                "{tier: Baseline, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: ravenclaw}}}, ingress: [{action: Deny, from: [{namespaces: {}}]}]}",
            ),
            (
                R,
                "from-gryffindor",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {conformance-house: gryffindor}}}]}]}",
            ),
        ],
        |f| f.to.ns != R || f.from.ns == G,
    ),
    (
        "baseline-rule-order",
        &[(
            "",
            "baseline-ordered",
            "{tier: Baseline, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: ravenclaw}}}, ingress: [{name: accept-g-80, action: Accept, from: [{namespaces: {matchLabels: {conformance-house: gryffindor}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}, {name: deny-all, action: Deny, from: [{namespaces: {}}]}]}",
        )],
        |f| f.to.ns != R || (f.from.ns == G && f.is(TCP, 80)),
    ),
];

/// Subjects and peers by pods and networks; protocols with ranges and named ports.
const SELECT: &[Case] = &[
    (
        "ingress-peer-by-pods",
        &[(
            "",
            "ravenclaw-not-harry-1",
            "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: ravenclaw}}}, ingress: [{action: Deny, from: [{pods: {namespaceSelector: {matchLabels: {conformance-house: gryffindor}}, podSelector: {matchLabels: {statefulset.kubernetes.io/pod-name: harry-potter-1}}}}]}]}",
        )],
        |f| {
            !(f.to.ns == R
                && is(
                    f.from,
                    "network-policy-conformance-gryffindor/harry-potter-1",
                ))
        },
    ),
    (
        "baseline-egress-deny-by-networks",
        &[(
            "",
            "baseline-hufflepuff-out",
            "{tier: Baseline, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: hufflepuff}}}, egress: [{action: Deny, to: [{networks: [\"{net}\"]}], protocols: [{tcp: {destinationPort: {number: 8080}}}, {udp: {destinationPort: {number: 5353}}}]}]}",
        )],
        |f| !(f.from.ns == H && (f.is(TCP, 8080) || f.is(UDP, 5353))),
    ),
    (
        "subject-by-pods",
        &[(
            "",
            "guard-harry-0",
            "{tier: Admin, priority: 10, subject: {pods: {namespaceSelector: {matchLabels: {conformance-house: gryffindor}}, podSelector: {matchLabels: {statefulset.kubernetes.io/pod-name: harry-potter-0}}}}, ingress: [{action: Deny, from: [{namespaces: {}}]}]}",
        )],
        |f| !is(f.to, "network-policy-conformance-gryffindor/harry-potter-0"),
    ),
    (
        "egress-peer-by-pods",
        &[(
            "",
            "slytherin-not-cedric-1",
            "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: slytherin}}}, egress: [{action: Deny, to: [{pods: {namespaceSelector: {matchLabels: {conformance-house: hufflepuff}}, podSelector: {matchLabels: {statefulset.kubernetes.io/pod-name: cedric-diggory-1}}}}]}]}",
        )],
        |f| {
            !(f.from.ns == S
                && is(
                    f.to,
                    "network-policy-conformance-hufflepuff/cedric-diggory-1",
                ))
        },
    ),
    (
        "egress-peer-by-networks",
        &[(
            "",
            "gryffindor-not-luna-0",
            "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, egress: [{action: Deny, to: [{networks: [\"{network-policy-conformance-ravenclaw/luna-lovegood-0}/32\"]}]}]}",
        )],
        |f| !(f.from.ns == G && is(f.to, "network-policy-conformance-ravenclaw/luna-lovegood-0")),
    ),
    (
        "egress-networks-accept-before-deny",
        &[(
            "",
            "gryffindor-only-cedric-0",
            "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}, egress: [{action: Accept, to: [{networks: [\"{network-policy-conformance-hufflepuff/cedric-diggory-0}/32\"]}]}, {action: Deny, to: [{networks: [\"{net}\"]}]}]}",
        )],
        |f| {
            f.from.ns != G
                || is(
                    f.to,
                    "network-policy-conformance-hufflepuff/cedric-diggory-0",
                )
        },
    ),
    (
        "protocols-port-ranges",
        &[(
            "",
            "hufflepuff-ranges",
            "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: hufflepuff}}}, ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 81, end: 8080}}}}, {udp: {destinationPort: {range: {start: 53, end: 1000}}}}]}]}",
        )],
        |f| !(f.to.ns == H && (f.is(TCP, 8080) || f.is(UDP, 53))),
    ),
    (
        "protocols-named-port",
        &[(
            "",
            "slytherin-no-5353",
            "{tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {conformance-house: slytherin}}}, ingress: [{action: Deny, from: [{namespaces: {matchLabels: {conformance-house: gryffindor}}}], protocols: [{destinationNamedPort: serve-5353-udp}]}]}",
        )],
        |f| !(f.to.ns == S && f.from.ns == G && f.is(UDP, 5353)),
    ),
    ("deleted: no policy, everything connects", &[], |_| true),
];

fn object(h: &Harness, (ns, name, spec): &Obj) -> (String, String) {
    let (head, id) = if ns.is_empty() {
        let head = format!(
            "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: {name}}}"
        );
        (head, format!("ClusterNetworkPolicy/{name}"))
    } else {
        let head = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}"
        );
        (head, format!("NetworkPolicy/{ns}/{name}"))
    };
    (h.fill(&format!("{head}\nspec: {spec}\n")), id)
}

fn prepared(h: &Harness, cases: &[Case]) -> Vec<(String, Vec<String>, Reach, Vec<String>)> {
    cases
        .iter()
        .map(|(name, objs, allowed)| {
            let (policies, ids) = objs.iter().map(|o| object(h, o)).unzip();
            (name.to_string(), policies, h.grid.expect(allowed), ids)
        })
        .collect()
}

#[test]
fn cluster_network_policy_conformance_shapes() {
    skip_unless_root!("cluster_network_policy_conformance_shapes");
    let started = Instant::now();
    let h = Harness::up("cnphse", 151, houses(), &Extra::default());
    eprintln!(
        "testbed and agent up in {} ms",
        started.elapsed().as_millis()
    );
    skip_loudly(
        "CNPAdminTierIngressSCTP / CNPBaselineTierEgressSCTP (SCTP 9003, 9005)",
        "this kernel has no SCTP",
    );
    let mut failures = Vec::new();
    for group in [ADMIN, TIERS, SELECT] {
        failures.extend(run_cases(&h, &prepared(&h, group)));
    }
    eprintln!("all cases in {} ms", started.elapsed().as_millis());
    assert_no_failures(&failures, &h.agent);
}

/// Wiz's example: development's pods may reach only 10.0.0.0/8 on TCP 80 and 443.
const RESTRICT_EXTERNAL: Obj = (
    "development",
    "restrict-external-access",
    "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}}], ports: [{protocol: TCP, port: 80}, {protocol: TCP, port: 443}]}]}",
);

const INSIDE: Ipv4Addr = Ipv4Addr::new(10, 152, 0, 5);

fn wiz_grid() -> Grid {
    Grid {
        namespaces: vec![
            ("development", "{env: development}"),
            ("production", "{env: production}"),
        ],
        pods: vec![
            (
                Pod {
                    ns: "development",
                    name: "web",
                },
                "{app: web}",
            ),
            (
                Pod {
                    ns: "production",
                    name: "api",
                },
                "{app: api}",
            ),
        ],
        ports: vec![(TCP, 80), (TCP, 443), (UDP, 80)],
    }
}

/// (from, to world address, protocol, port, connects per the policy).
fn world_flows(outside: Ipv4Addr) -> Vec<(&'static str, Ipv4Addr, Protocol, u16, bool)> {
    vec![
        ("development/web", INSIDE, TCP, 80, true),
        ("development/web", INSIDE, TCP, 443, true),
        ("development/web", INSIDE, TCP, 8080, false),
        ("development/web", INSIDE, UDP, 80, false),
        ("development/web", outside, TCP, 80, false),
        ("development/web", outside, TCP, 443, false),
        ("production/api", outside, TCP, 80, true),
        ("production/api", INSIDE, TCP, 8080, true),
    ]
}

/// The world probes in one mode; returns the failures.
fn check_world(h: &Harness, mode: &str, policies: &[String], outside: Ipv4Addr) -> Vec<String> {
    h.apply(mode, policies);
    let mark = h.agent.violations().len();
    let mut failures = Vec::new();
    let mut denied = BTreeSet::new();
    for (from, ip, proto, port, allowed) in world_flows(outside) {
        let want = allowed || mode == "monitor";
        let got = h.probe(from, ip.into(), proto, port);
        if got != want {
            failures.push(format!("world ({mode}): {from} -> {ip} {proto}/{port}: expected connects={want}, observed {got}"));
        }
        if !allowed {
            denied.insert(format!("{from} -> {ip} {proto}/{port}"));
        }
    }
    if mode == "monitor" {
        let lines = h.audit_lines(mark, &denied);
        let logged: BTreeSet<String> = lines.iter().map(common::matrix::flow_of).collect();
        if logged != denied {
            failures.push(format!(
                "world (monitor): logged {logged:?}, denied {denied:?}"
            ));
        }
        let ids = ["NetworkPolicy/development/restrict-external-access".to_owned()];
        failures.extend(
            lines
                .iter()
                .filter_map(|l| common::matrix::misnamed(l, &ids)),
        );
    }
    failures
}

#[test]
fn wiz_restrict_external_access() {
    skip_unless_root!("wiz_restrict_external_access");
    let started = Instant::now();
    let h = Harness::up("cnpwiz", 152, wiz_grid(), &Extra::default());
    let serve: Vec<PortSpec> = [(TCP, 80), (TCP, 443), (TCP, 8080), (UDP, 80)]
        .into_iter()
        .map(|(protocol, port)| PortSpec { protocol, port })
        .collect();
    let tb = h.node.testbed();
    let outside = tb.world_server(&[200], &serve).expect("world server").ipv4[0];
    let inside = tb.world_server_routed(&[201], &[INSIDE], &serve);
    assert_eq!(inside.expect("routed world server").ipv4[1], INSIDE);
    let (policy, id) = object(&h, &RESTRICT_EXTERNAL);
    let policies = vec![policy];
    // Pod to pod: development's egress reaches no pod (pod addresses are outside 10.0.0.0/8).
    let expected = h.grid.expect(|f| f.from.ns != "development");
    let cases = vec![(
        "restrict-external-access (pods)".to_owned(),
        policies.clone(),
        expected,
        vec![id],
    )];
    let mut failures = run_cases(&h, &cases);
    for mode in ["enforce", "monitor"] {
        failures.extend(check_world(&h, mode, &policies, outside));
    }
    eprintln!("wiz case in {} ms", started.elapsed().as_millis());
    assert_no_failures(&failures, &h.agent);
}
