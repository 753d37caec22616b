//! NetworkPolicy (networking.k8s.io/v1) end to end, in the shape of kubernetes
//! `test/e2e/network/netpol`: namespaces x, y, z with pods a, b, c serving TCP and UDP 80 and 81
//! (named ports `serve-80-tcp` ...), one policy set per case, the whole 9x9 matrix probed on every
//! port and compared with the reachability the API's documentation gives. Each case runs in
//! enforce mode (the matrix must match) and in monitor mode (every probe connects; exactly the
//! denied flows are logged, naming the NetworkPolicies that decided). Needs root; skips loudly
//! otherwise.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
mod common;

use std::{collections::BTreeSet, time::Instant};

use bulkhead_tests::{Protocol, skip_unless_root};
use common::matrix::{
    Extra, Flow, Grid, Harness, Pod, assert_no_failures, flow_of, misnamed, run_cases, skip_loudly,
};

/// A NetworkPolicy: (namespace, name, spec as flow-style YAML; `{net}`, `{ns/pod}` filled in).
type Np = (&'static str, &'static str, &'static str);

/// A case: name, policies, and which flows the API says connect.
type Case = (&'static str, &'static [Np], fn(&Flow) -> bool);

/// A label edit: (namespace or `ns/pod`, key, value).
type Label = (&'static str, &'static str, &'static str);

/// A probe to the DNS pod: (client, protocol, connects).
type DnsProbe = (&'static str, Protocol, bool);

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;

fn is(p: Pod, key: &str) -> bool {
    p.key() == key
}

/// Isolation and selectors.
const SELECTORS: &[Case] = &[
    (
        "deny-all-ingress",
        &[("x", "deny-all", "{podSelector: {}, policyTypes: [Ingress]}")],
        |f| f.to.ns != "x",
    ),
    (
        "deny-all-ingress-policytypes-defaulted",
        &[("x", "deny-all", "{podSelector: {}}")],
        |f| f.to.ns != "x",
    ),
    (
        "deny-all-egress",
        &[("x", "deny-all", "{podSelector: {}, policyTypes: [Egress]}")],
        |f| f.from.ns != "x",
    ),
    (
        "deny-all-both-directions",
        &[(
            "x",
            "deny-all",
            "{podSelector: {}, policyTypes: [Ingress, Egress]}",
        )],
        |f| f.from.ns != "x" && f.to.ns != "x",
    ),
    // policyTypes absent with egress rules: the policy also isolates ingress (with no rule).
    (
        "egress-rules-default-policytypes-to-both",
        &[(
            "x",
            "a-egress",
            "{podSelector: {matchLabels: {pod: a}}, egress: [{to: [{podSelector: {}}]}]}",
        )],
        |f| !is(f.to, "x/a") && (!is(f.from, "x/a") || f.to.ns == "x"),
    ),
    (
        "allow-ingress-from-same-namespace",
        &[(
            "x",
            "same-ns",
            "{podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}",
        )],
        |f| f.to.ns != "x" || f.from.ns == "x",
    ),
    (
        "allow-ingress-by-namespace-selector",
        &[(
            "x",
            "from-y",
            "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}",
        )],
        |f| f.to.ns != "x" || f.from.ns == "y",
    ),
    (
        "allow-ingress-by-metadata-name-label",
        &[(
            "x",
            "from-z",
            "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]}]}",
        )],
        |f| f.to.ns != "x" || f.from.ns == "z",
    ),
    // Pods of x cannot reach each other: the inside of a namespace isolated like the outside.
    (
        "namespace-selector-match-expressions-isolates-inside",
        &[(
            "x",
            "not-x",
            "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}}]}]}",
        )],
        |f| f.to.ns != "x" || f.from.ns != "x",
    ),
    (
        "allow-ingress-by-pod-selector",
        &[(
            "x",
            "a-from-b",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]}",
        )],
        |f| !is(f.to, "x/a") || is(f.from, "x/b"),
    ),
    (
        "pod-selector-match-expressions-in-all-namespaces",
        &[(
            "x",
            "a-from-bc",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}}]}]}",
        )],
        |f| !is(f.to, "x/a") || f.from.name != "a",
    ),
    (
        "namespace-and-pod-selector-in-one-peer-is-and",
        &[(
            "x",
            "a-from-yb",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]}]}",
        )],
        |f| !is(f.to, "x/a") || is(f.from, "y/b"),
    ),
    (
        "namespace-or-pod-selector-in-two-peers-is-or",
        &[(
            "x",
            "a-from-y-or-b",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: b}}}]}]}",
        )],
        |f| !is(f.to, "x/a") || f.from.ns == "y" || is(f.from, "x/b"),
    ),
    (
        "two-policies-are-a-union",
        &[
            (
                "x",
                "a-from-y",
                "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}",
            ),
            (
                "x",
                "a-from-c",
                "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: c}}}]}]}",
            ),
        ],
        |f| !is(f.to, "x/a") || f.from.ns == "y" || is(f.from, "x/c"),
    ),
    (
        "deny-all-and-allow-all-union-allows",
        &[
            ("x", "deny-all", "{podSelector: {}, policyTypes: [Ingress]}"),
            ("x", "allow-all", "{podSelector: {}, ingress: [{}]}"),
        ],
        |_| true,
    ),
    (
        "a-policy-affects-only-its-namespace",
        &[(
            "y",
            "isolate-a",
            "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress]}",
        )],
        |f| !is(f.to, "y/a"),
    ),
    (
        "egress-empty-pod-selector-same-namespace-only",
        &[(
            "x",
            "egress-x",
            "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{podSelector: {}}]}]}",
        )],
        |f| f.from.ns != "x" || f.to.ns == "x",
    ),
];

/// Ports, protocols, named ports, ranges.
const PORTS: &[Case] = &[
    (
        "ingress-tcp-port-80",
        &[(
            "x",
            "a-80",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{protocol: TCP, port: 80}]}]}",
        )],
        |f| !is(f.to, "x/a") || f.is(TCP, 80),
    ),
    (
        "ingress-port-protocol-defaults-to-tcp",
        &[(
            "x",
            "a-81",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 81}]}]}",
        )],
        |f| !is(f.to, "x/a") || f.is(TCP, 81),
    ),
    (
        "ingress-udp-port-80",
        &[(
            "x",
            "a-udp-80",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{protocol: UDP, port: 80}]}]}",
        )],
        |f| !is(f.to, "x/a") || f.is(UDP, 80),
    ),
    (
        "ingress-protocol-without-port",
        &[(
            "x",
            "a-udp",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{protocol: UDP}]}]}",
        )],
        |f| !is(f.to, "x/a") || f.proto == UDP,
    ),
    (
        "ingress-named-port-tcp",
        &[(
            "x",
            "a-named",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: serve-81-tcp}]}]}",
        )],
        |f| !is(f.to, "x/a") || f.is(TCP, 81),
    ),
    (
        "ingress-named-port-udp",
        &[(
            "x",
            "a-named-udp",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{protocol: UDP, port: serve-80-udp}]}]}",
        )],
        |f| !is(f.to, "x/a") || f.is(UDP, 80),
    ),
    // A named port matches the container port of that name *and* the rule's protocol (TCP).
    (
        "named-port-of-another-protocol-matches-nothing",
        &[(
            "x",
            "a-named-mismatch",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: serve-80-udp}]}]}",
        )],
        |f| !is(f.to, "x/a"),
    ),
    (
        "ingress-end-port-range-tcp",
        &[(
            "x",
            "a-80-81",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{protocol: TCP, port: 80, endPort: 81}]}]}",
        )],
        |f| !is(f.to, "x/a") || f.proto == TCP,
    ),
    (
        "ingress-end-port-range-udp",
        &[(
            "x",
            "a-81-90",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{protocol: UDP, port: 81, endPort: 90}]}]}",
        )],
        |f| !is(f.to, "x/a") || f.is(UDP, 81),
    ),
    (
        "peers-and-ports-in-one-rule",
        &[(
            "x",
            "a-y-80",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80}]}]}",
        )],
        |f| !is(f.to, "x/a") || (f.from.ns == "y" && f.is(TCP, 80)),
    ),
    (
        "egress-tcp-port-80-only",
        &[(
            "x",
            "a-out-80",
            "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{ports: [{port: 80}]}]}",
        )],
        |f| !is(f.from, "x/a") || f.is(TCP, 80),
    ),
    (
        "egress-named-port-udp",
        &[(
            "x",
            "a-out-named",
            "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{ports: [{protocol: UDP, port: serve-81-udp}]}]}",
        )],
        |f| !is(f.from, "x/a") || f.is(UDP, 81),
    ),
];

/// Egress, both directions, ipBlock.
const DIRECTIONS: &[Case] = &[
    (
        "egress-to-namespace",
        &[(
            "x",
            "to-y",
            "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}",
        )],
        |f| f.from.ns != "x" || f.to.ns == "y",
    ),
    (
        "egress-and-ingress-in-one-policy",
        &[(
            "x",
            "a-both",
            "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress, Egress], ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}], egress: [{to: [{namespaceSelector: {matchLabels: {ns: z}}}]}]}",
        )],
        |f| (!is(f.to, "x/a") || f.from.ns == "y") && (!is(f.from, "x/a") || f.to.ns == "z"),
    ),
    (
        "egress-and-ingress-must-both-allow",
        &[
            (
                "x",
                "to-y",
                "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}",
            ),
            (
                "y",
                "b-from-z",
                "{podSelector: {matchLabels: {pod: b}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}]}]}",
            ),
        ],
        |f| (f.from.ns != "x" || f.to.ns == "y") && (!is(f.to, "y/b") || f.from.ns == "z"),
    ),
    // An ipBlock matches pod addresses too (upstream's except-clause tests use pod IPs).
    (
        "ingress-ipblock-with-except",
        &[(
            "x",
            "a-from-net",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{ipBlock: {cidr: \"{net}\", except: [\"{y/b}/32\"]}}]}]}",
        )],
        |f| !is(f.to, "x/a") || !is(f.from, "y/b"),
    ),
    (
        "egress-ipblock-with-except",
        &[(
            "x",
            "a-to-net",
            "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: \"{net}\", except: [\"{z/c}/32\"]}}]}]}",
        )],
        |f| !is(f.from, "x/a") || !is(f.to, "z/c"),
    ),
    (
        "ingress-ipblock-of-one-pod",
        &[(
            "x",
            "a-from-ya",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{ipBlock: {cidr: \"{y/a}/32\"}}]}]}",
        )],
        |f| !is(f.to, "x/a") || is(f.from, "y/a"),
    ),
];

/// Labels edited mid-test (upstream's "updated namespace" and "updated pod" cases): each runs
/// after [`relabel`]ing what its comment says.
const RELABELED: &[(Option<Label>, Case)] = &[
    (
        None,
        (
            "labels-before: x admits team=blue namespaces (none yet)",
            &[(
                "x",
                "from-blue",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]}",
            )],
            |f| f.to.ns != "x",
        ),
    ),
    (
        Some(("y", "team", "blue")),
        (
            "labels-after: namespace y labelled team=blue",
            &[(
                "x",
                "from-blue",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]}",
            )],
            |f| f.to.ns != "x" || f.from.ns == "y",
        ),
    ),
    (
        None,
        (
            "labels-before: x/a admits role=client pods (none yet)",
            &[(
                "x",
                "from-client",
                "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]}",
            )],
            |f| !is(f.to, "x/a"),
        ),
    ),
    (
        Some(("x/b", "role", "client")),
        (
            "labels-after: pod x/b labelled role=client",
            &[(
                "x",
                "from-client",
                "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]}",
            )],
            |f| !is(f.to, "x/a") || is(f.from, "x/b"),
        ),
    ),
];

fn relabeled_cases(h: &Harness) -> Vec<String> {
    let mut failures = Vec::new();
    for (change, case) in RELABELED {
        if change.is_some() {
            h.relabel(*change);
        }
        failures.extend(run_cases(h, &prepared(h, std::slice::from_ref(case))));
    }
    h.relabel(None);
    failures
}

/// Changes: the same object edited, then deleted.
const CHANGES: &[Case] = &[
    (
        "update-before: x admits y",
        &[(
            "x",
            "admit",
            "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}",
        )],
        |f| f.to.ns != "x" || f.from.ns == "y",
    ),
    (
        "update-after: the same policy now admits z",
        &[(
            "x",
            "admit",
            "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}]}]}",
        )],
        |f| f.to.ns != "x" || f.from.ns == "z",
    ),
    ("deleted: no policy, everything connects", &[], |_| true),
];

/// The SCTP cases upstream has; this kernel has no SCTP.
const SCTP_CASES: &[&str] = &[
    "ingress-sctp-port-80 (should support a 'default-deny-ingress' policy ... SCTP)",
    "egress-sctp-port-81 (should enforce policy to allow traffic only from a pod ... SCTP)",
    "named-port-sctp (serve-80-sctp)",
];

fn np(h: &Harness, (ns, name, spec): &Np) -> String {
    h.fill(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    ))
}

fn prepared(
    h: &Harness,
    cases: &[Case],
) -> Vec<(String, Vec<String>, common::matrix::Reach, Vec<String>)> {
    cases
        .iter()
        .map(|(name, nps, allowed)| {
            let policies = nps.iter().map(|p| np(h, p)).collect();
            let objects = nps
                .iter()
                .map(|(ns, n, _)| format!("NetworkPolicy/{ns}/{n}"))
                .collect();
            (name.to_string(), policies, h.grid.expect(allowed), objects)
        })
        .collect()
}

/// kube-system/coredns behind the kube-dns Service: the cluster DNS, outside the grid.
const DNS: Extra<'static> = Extra {
    namespaces: &["{name: kube-system}"],
    pods: &[
        "{name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}, serve: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]}",
    ],
    services: &["{name: kube-dns, namespace: kube-system, selector: {k8s-app: kube-dns}}"],
};

/// DNS cases: a policy, and (client, protocol, connects) to kube-system/coredns port 53. The
/// API has no DNS exception: a deny-all egress policy blocks DNS; a policy on the DNS pods
/// judges their ingress from every client.
const DNS_CASES: &[(Np, &[DnsProbe])] = &[
    (
        (
            "x",
            "deny-all-egress",
            "{podSelector: {}, policyTypes: [Egress]}",
        ),
        &[
            ("x/a", UDP, false),
            ("x/b", TCP, false),
            ("y/a", UDP, true),
            ("y/b", TCP, true),
        ],
    ),
    (
        (
            "kube-system",
            "dns-from-x",
            "{podSelector: {matchLabels: {k8s-app: kube-dns}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}}]}]}",
        ),
        &[
            ("x/a", UDP, true),
            ("x/c", TCP, true),
            ("y/a", UDP, false),
            ("z/b", TCP, false),
        ],
    ),
];

/// The DNS cases in enforce and monitor mode; returns the failures.
fn dns_cases(h: &Harness) -> Vec<String> {
    let dns = h.node.ip("kube-system/coredns");
    let mut failures = Vec::new();
    for (policy, probes) in DNS_CASES {
        let (ns, name, _) = policy;
        let ids = [format!("NetworkPolicy/{ns}/{name}")];
        let policies = [np(h, policy)];
        for mode in ["enforce", "monitor"] {
            h.apply(mode, &policies);
            // The kernel folds a flow's violations for 1 s: the last monitor pass must be over.
            std::thread::sleep(std::time::Duration::from_millis(1200));
            let mark = h.agent.violations().len();
            let mut denied = BTreeSet::new();
            for (from, proto, allowed) in probes.iter().copied() {
                let want = allowed || mode == "monitor";
                let got = h.probe(from, dns, proto, 53);
                if got != want {
                    failures.push(format!("dns {name} ({mode}): {from} -> kube-system/coredns {proto}/53: expected connects={want}, observed {got}"));
                }
                if !allowed {
                    denied.insert(format!("{from} -> kube-system/coredns {proto}/53"));
                }
            }
            if mode == "monitor" {
                let lines = h.audit_lines(mark, &denied);
                let logged: BTreeSet<String> = lines.iter().map(flow_of).collect();
                if logged != denied {
                    failures.push(format!(
                        "dns {name} (monitor): logged {logged:?}, denied {denied:?}"
                    ));
                }
                failures.extend(lines.iter().filter_map(|l| misnamed(l, &ids)));
            }
        }
        eprintln!("dns case {name}: done");
    }
    failures
}

/// A denial because no rule of the isolating policies matched names every one of them (both
/// policies of `two-policies-are-a-union` isolate x/a's ingress).
fn union_denials_name_both(h: &Harness) -> Vec<String> {
    let both = ["NetworkPolicy/x/a-from-c", "NetworkPolicy/x/a-from-y"];
    let mut seen = 0;
    let mut failures = Vec::new();
    for l in h.agent.violations() {
        for side in l["sides"].as_array().into_iter().flatten() {
            let policy = side["policy"].as_str().unwrap_or("");
            let names: BTreeSet<&str> = policy.split(',').collect();
            if both.iter().any(|b| names.contains(b)) {
                seen += 1;
                if names != both.into_iter().collect() {
                    failures.push(format!(
                        "union: {policy:?} does not name both of {both:?}: {l}"
                    ));
                }
            }
        }
    }
    if seen == 0 {
        failures.push("union: no line named the two policies of two-policies-are-a-union".into());
    }
    failures
}

#[test]
fn network_policy_truth_tables() {
    skip_unless_root!("network_policy_truth_tables");
    let started = Instant::now();
    let h = Harness::up("npxyz", 150, Grid::xyz(), &DNS);
    eprintln!(
        "testbed and agent up in {} ms",
        started.elapsed().as_millis()
    );
    for case in SCTP_CASES {
        skip_loudly(case, "this kernel has no SCTP");
    }
    let mut failures = Vec::new();
    for group in [SELECTORS, PORTS, DIRECTIONS] {
        failures.extend(run_cases(&h, &prepared(&h, group)));
    }
    failures.extend(relabeled_cases(&h));
    failures.extend(run_cases(&h, &prepared(&h, CHANGES)));
    failures.extend(dns_cases(&h));
    failures.extend(union_denials_name_both(&h));
    eprintln!("all cases in {} ms", started.elapsed().as_millis());
    assert_no_failures(&failures, &h.agent);
}
