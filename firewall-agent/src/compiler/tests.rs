//! Scenario tests of docs/design.md#policy-semantics and a property test: a reference kernel
//! (longest-prefix match over the compiled maps, with the datapath's exemptions) must agree with
//! [`Evaluator::explain`] for every endpoint pair, protocol and boundary port of generated policy
//! sets.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use firewall_common::{
    IDENTITY_F_CLUSTER_IP, IDENTITY_F_DNS, Identity, Mode, NS_FIRST, PolicyValue, PolicyVerdict,
    Side, exemption, policy_key,
};

use super::*;
use crate::{
    crd::{
        Action, ClusterDefaults, ClusterFirewall, ClusterFirewallSpec, ClusterRule, DefaultAction,
        DestPeer, EgressPeer, EgressRule, IngressRule, LabelSelector, LabelSelectorRequirement,
        NamespaceFirewall, NamespaceFirewallSpec, Peer, PortSpec,
    },
    model::{InForce, Namespace, Node, Pod, Service},
    source::file::parse_objects,
};

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {tier: web}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {tier: db}}
---
apiVersion: v1
kind: Namespace
metadata: {name: c}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {name: a1, namespace: a, uid: ua1}
spec: {nodeName: n1, containers: []}
status: {podIP: 10.244.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b-api, namespace: b, uid: ub1, labels: {app: api}}
spec: {nodeName: n1, containers: []}
status: {podIP: 10.244.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: b-other, namespace: b, uid: ub2, labels: {app: other}}
spec: {nodeName: n2, containers: []}
status: {podIP: 10.244.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: dns, namespace: kube-system, uid: uk1, labels: {k8s-app: kube-dns}}
spec: {nodeName: n1, containers: []}
status: {podIP: 10.244.0.10}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: b}
spec: {selector: {app: api}, clusterIP: 10.96.0.2}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec: {selector: {k8s-app: kube-dns}, clusterIP: 10.96.0.10}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 192.168.0.1}, {type: Hostname, address: n1}]}
"#;

const TCP: u8 = 6;
const UDP: u8 = 17;

fn model(extra: &str) -> ClusterModel {
    parse_objects(&format!("{BASE}\n---\n{extra}")).unwrap()
}

/// [`BASE`] with the documents `docs`.
fn model_of(docs: &[String]) -> ClusterModel {
    model(&docs.join("---\n"))
}

/// A NamespaceFirewall document: `name` in namespace `ns`, with `spec` (YAML).
pub(super) fn nsfw(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: NamespaceFirewall\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

/// A ClusterFirewall document: `name`, with `spec` (YAML).
pub(super) fn cfw(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: ClusterFirewall\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    )
}

fn opts() -> CompileOptions {
    CompileOptions {
        node_name: "n1".into(),
        ..Default::default()
    }
}

fn to_ns(m: &ClusterModel, src: &str, dst: &str, proto: u8, port: u16) -> Explanation {
    explain(
        m,
        &opts(),
        src,
        &Destination::Namespace {
            name: dst.into(),
            services: vec![],
        },
        proto,
        port,
    )
}

fn to_ip(m: &ClusterModel, src: &str, ip: &str, proto: u8, port: u16) -> Explanation {
    explain(
        m,
        &opts(),
        src,
        &Destination::Address(ip.parse().unwrap()),
        proto,
        port,
    )
}

fn side(d: &SideDecision) -> (PolicyVerdict, &str, Step) {
    (d.verdict, d.policy.as_str(), d.step)
}

fn ingress(e: &Explanation) -> (PolicyVerdict, &str, Step) {
    side(e.ingress.as_ref().unwrap())
}

use PolicyVerdict::{Allow, Deny};

#[test]
fn cluster_rules_by_priority_then_name_then_index() {
    let m = model_of(&[
        cfw(
            "a-late",
            "{priority: 20, rules: [{action: Allow, from: {namespaces: [a]}, to: {namespaces: [b]}}]}",
        ),
        cfw(
            "z-early",
            concat!(
                "{priority: 10, rules: [",
                "{action: Deny, from: {namespaces: [a]}, to: {namespaces: [b]}, ports: [{port: 80}]},",
                "{action: Allow, from: {namespaces: [a]}, to: {namespaces: [b]}, ports: [{port: 80, endPort: 90}]}]}",
            ),
        ),
        cfw(
            "b-same",
            "{priority: 20, rules: [{action: Deny, from: {namespaces: [a]}, to: {namespaces: [b]}}]}",
        ),
    ]);
    let e = to_ns(&m, "a", "b", TCP, 80);
    assert_eq!(
        side(&e.egress),
        (Deny, "ClusterFirewall/z-early:rules[0]", Step::ClusterRule)
    );
    assert_eq!(
        ingress(&e),
        (Deny, "ClusterFirewall/z-early:rules[0]", Step::ClusterRule)
    );
    let e = to_ns(&m, "a", "b", TCP, 85);
    assert_eq!(
        side(&e.egress),
        (Allow, "ClusterFirewall/z-early:rules[1]", Step::ClusterRule)
    );
    // Same priority: the name decides (a-late before b-same).
    let e = to_ns(&m, "a", "b", TCP, 100);
    assert_eq!(
        side(&e.egress),
        (Allow, "ClusterFirewall/a-late:rules[0]", Step::ClusterRule)
    );
    // No rule for c -> b: cluster default.
    let e = to_ns(&m, "c", "b", TCP, 80);
    assert_eq!(side(&e.egress), (Allow, "default", Step::Default));
}

#[test]
fn delegate_hands_over_to_namespace_rules() {
    let m = model_of(&[
        cfw(
            "base",
            concat!(
                "{rules: [",
                "{action: Delegate, to: {namespaces: [b]}, ports: [{port: 80}]},",
                "{action: Deny, to: {namespaces: [b]}}]}",
            ),
        ),
        nsfw("b", "default", "{ingress: [{from: {namespaces: [a]}}]}"),
    ]);
    let e = to_ns(&m, "a", "b", TCP, 80);
    assert_eq!(
        side(&e.egress),
        (Allow, "NamespaceFirewall/b/default", Step::OtherSide)
    );
    assert_eq!(
        ingress(&e),
        (Allow, "NamespaceFirewall/b/default", Step::NamespaceRule)
    );
    let e = to_ns(&m, "c", "b", TCP, 80);
    assert_eq!(side(&e.egress), (Allow, "default", Step::Default));
    assert_eq!(
        ingress(&e),
        (Deny, "NamespaceFirewall/b/default", Step::NoMatch)
    );
    let e = to_ns(&m, "a", "b", TCP, 81);
    assert_eq!(
        side(&e.egress),
        (Deny, "ClusterFirewall/base:rules[1]", Step::ClusterRule)
    );
}

#[test]
fn egress_side_denies() {
    let m = model(&nsfw("a", "default", "{egress: [{to: {namespaces: [c]}}]}"));
    let e = to_ns(&m, "a", "b", TCP, 80);
    assert_eq!(
        side(&e.egress),
        (Deny, "NamespaceFirewall/a/default", Step::NoMatch)
    );
    assert_eq!(ingress(&e), (Allow, "default", Step::Default));
    let e = to_ns(&m, "a", "c", UDP, 9);
    assert_eq!(
        side(&e.egress),
        (Allow, "NamespaceFirewall/a/default", Step::NamespaceRule)
    );
    assert_eq!(
        ingress(&e),
        (Allow, "NamespaceFirewall/a/default", Step::OtherSide)
    );
    // Egress rules also restrict world and host.
    assert_eq!(side(&to_ip(&m, "a", "8.8.8.8", TCP, 443).egress).0, Deny);
    assert_eq!(
        side(&to_ip(&m, "a", "192.168.0.1", TCP, 10250).egress).0,
        Deny
    );
    assert!(to_ip(&m, "a", "8.8.8.8", TCP, 443).ingress.is_none());
}

#[test]
fn ingress_side_denies_and_namespaces_union() {
    let m = model_of(&[
        nsfw(
            "b",
            "y",
            "{ingress: [{from: {namespaceSelector: {matchLabels: {tier: web}}}, ports: [{port: 80}]}]}",
        ),
        nsfw(
            "b",
            "x",
            "{ingress: [{from: {namespaces: [c]}}], egress: null}",
        ),
    ]);
    let e = to_ns(&m, "a", "b", TCP, 80);
    assert_eq!(
        side(&e.egress),
        (Allow, "NamespaceFirewall/b/y", Step::OtherSide)
    );
    assert_eq!(
        ingress(&e),
        (Allow, "NamespaceFirewall/b/y", Step::NamespaceRule)
    );
    let e = to_ns(&m, "a", "b", TCP, 81);
    assert_eq!(side(&e.egress), (Allow, "default", Step::Default));
    assert_eq!(
        ingress(&e),
        (
            Deny,
            "NamespaceFirewall/b/x,NamespaceFirewall/b/y",
            Step::NoMatch
        )
    );
    let e = to_ns(&m, "c", "b", 1, 0);
    assert_eq!(
        ingress(&e),
        (Allow, "NamespaceFirewall/b/x", Step::NamespaceRule)
    );
    let e = to_ns(&m, "kube-system", "b", 1, 0);
    assert_eq!(ingress(&e).0, Deny);
}

#[test]
fn services_narrow_to_backing_pods_and_cluster_ips() {
    let m = model(&nsfw(
        "b",
        "default",
        "{ingress: [{from: {namespaces: [a]}, services: [api]}]}",
    ));
    for ip in ["10.244.0.2", "10.96.0.2"] {
        let e = to_ip(&m, "a", ip, TCP, 8080);
        assert_eq!(
            ingress(&e),
            (Allow, "NamespaceFirewall/b/default", Step::NamespaceRule),
            "{ip}"
        );
    }
    let e = to_ip(&m, "a", "10.244.0.3", TCP, 8080);
    assert_eq!(
        ingress(&e),
        (Deny, "NamespaceFirewall/b/default", Step::NoMatch)
    );
    let e = explain(
        &m,
        &opts(),
        "a",
        &Destination::Namespace {
            name: "b".into(),
            services: vec!["api".into()],
        },
        TCP,
        1,
    );
    assert_eq!(ingress(&e).0, Allow);
    // Compiled: the api pod and cluster IP share a narrowed identity.
    let c = compile(&m, &opts(), &mut IdAllocator::default());
    let pod = c.maps.ipv4[&("10.244.0.2".parse().unwrap(), 32)];
    let vip = c.maps.ipv4[&("10.96.0.2".parse().unwrap(), 32)];
    let other = c.maps.ipv4[&("10.244.0.3".parse().unwrap(), 32)];
    assert_eq!((pod.id, pod.ns), (vip.id, vip.ns));
    // The cluster IP's own entry says it is one (connect() sees it before the DNAT).
    assert_eq!(vip.flags, pod.flags | IDENTITY_F_CLUSTER_IP);
    assert!(pod.id >= NARROWED_FIRST && pod.id < CIDR_FIRST);
    assert_eq!(other.id, other.ns);
    assert_eq!(pod.ns, other.ns);
}

#[test]
fn cluster_rule_services_and_cidrs() {
    let m = model(&cfw(
        "base",
        concat!(
            "{rules: [",
            "{action: Deny, to: {services: [b/api]}},",
            "{action: Deny, from: {namespaces: [a]}, to: {cidrs: [10.0.0.0/8, \"fd00::/8\"], except: [10.1.0.0/16]}, ports: [{protocol: TCP, port: 443}]}]}",
        ),
    ));
    assert_eq!(
        side(&to_ip(&m, "a", "10.96.0.2", TCP, 80).egress),
        (Deny, "ClusterFirewall/base:rules[0]", Step::ClusterRule)
    );
    assert_eq!(side(&to_ip(&m, "a", "10.244.0.3", TCP, 80).egress).0, Allow);
    assert_eq!(
        side(&to_ip(&m, "a", "10.2.3.4", TCP, 443).egress),
        (Deny, "ClusterFirewall/base:rules[1]", Step::ClusterRule)
    );
    assert_eq!(side(&to_ip(&m, "a", "fd00::5", TCP, 443).egress).0, Deny);
    assert_eq!(
        side(&to_ip(&m, "a", "10.1.3.4", TCP, 443).egress),
        (Allow, "default", Step::Default)
    );
    assert_eq!(side(&to_ip(&m, "a", "10.2.3.4", TCP, 444).egress).0, Allow);
    // cidrs never match pods.
    assert_eq!(
        side(&to_ip(&m, "a", "10.244.0.3", TCP, 443).egress).0,
        Allow
    );
    assert_eq!(side(&to_ip(&m, "c", "10.2.3.4", TCP, 443).egress).0, Allow);
}

#[test]
fn cidr_with_except_and_port_ranges() {
    let m = model(&nsfw(
        "a",
        "out",
        "{egress: [{to: {cidrs: [10.0.0.0/8], except: [10.1.0.0/16]}, ports: [{protocol: TCP, port: 443}, {protocol: UDP, port: 5000, endPort: 5010}]}]}",
    ));
    let allow = |ip: &str, proto, port| side(&to_ip(&m, "a", ip, proto, port).egress).0 == Allow;
    assert!(allow("10.2.3.4", TCP, 443));
    assert!(!allow("10.1.2.3", TCP, 443));
    assert!(!allow("10.2.3.4", TCP, 80));
    assert!(!allow("8.8.8.8", TCP, 443));
    assert!(!allow("10.2.3.4", UDP, 4999));
    assert!(allow("10.2.3.4", UDP, 5000));
    assert!(allow("10.2.3.4", UDP, 5010));
    assert!(!allow("10.2.3.4", UDP, 5011));
    assert!(!allow("10.2.3.4", TCP, 5005));
    assert!(!allow("10.2.3.4", 1, 0));
}

#[test]
fn cluster_default_allow_and_deny() {
    let deny = model(&cfw("defaults", "{defaults: {crossNamespace: Deny}}"));
    let e = to_ns(&deny, "a", "b", TCP, 80);
    assert_eq!(side(&e.egress), (Deny, "default", Step::Default));
    assert_eq!(ingress(&e), (Deny, "default", Step::Default));
    assert_eq!(
        side(&to_ip(&deny, "a", "8.8.8.8", TCP, 80).egress),
        (Allow, "default", Step::Default)
    );
    assert_eq!(
        side(&to_ip(&deny, "a", "192.168.0.1", TCP, 80).egress),
        (Allow, "default", Step::Default)
    );
    let allow = model("");
    let e = to_ns(&allow, "a", "b", TCP, 80);
    assert_eq!(side(&e.egress), (Allow, "default", Step::Default));
    assert!(!e.dropped);
}

#[test]
fn always_allowed() {
    let m = model_of(&[
        cfw(
            "defaults",
            "{rules: [{action: Deny}], defaults: {crossNamespace: Deny, mode: Enforce}}",
        ),
        nsfw("a", "none", "{ingress: [], egress: []}"),
    ]);
    let e = to_ns(&m, "a", "a", TCP, 80);
    assert_eq!(side(&e.egress).2, Step::SameNamespace);
    assert!(!e.dropped);
    for (ip, proto) in [("10.244.0.10", UDP), ("10.96.0.10", TCP)] {
        let e = to_ip(&m, "a", ip, proto, 53);
        assert_eq!((side(&e.egress).0, side(&e.egress).2), (Allow, Step::Dns));
        assert_eq!(ingress(&e).2, Step::Dns);
        assert!(!e.dropped);
    }
    let e = to_ip(&m, "a", "10.96.0.10", UDP, 54);
    assert_eq!(side(&e.egress).0, Deny);
    assert!(e.dropped);
    // The compiled maps: DNS flag on the DNS pod and cluster IP, no ingress entries for world/host
    // peers (the kernel exempts them), nothing for same-namespace pairs.
    let c = compile(&m, &opts(), &mut IdAllocator::default());
    assert_eq!(
        c.maps.ipv4[&("10.244.0.10".parse().unwrap(), 32)].flags,
        IDENTITY_F_DNS
    );
    assert_eq!(
        c.maps.ipv4[&("10.96.0.10".parse().unwrap(), 32)].flags,
        IDENTITY_F_DNS | IDENTITY_F_CLUSTER_IP
    );
    assert_eq!(c.maps.ipv4[&("10.244.0.1".parse().unwrap(), 32)].flags, 0);
    assert_eq!(
        c.maps.ipv4[&("192.168.0.1".parse().unwrap(), 32)],
        Identity {
            id: 1,
            ns: 1,
            flags: 0
        }
    );
    assert!(
        c.maps
            .policy
            .keys()
            .all(|p| p.side != Side::Ingress || p.peer.is_none_or(|x| x >= NS_FIRST))
    );
    let a = c
        .namespaces
        .iter()
        .find(|(_, n)| *n == "a")
        .map(|(id, _)| *id)
        .unwrap();
    assert!(
        c.maps
            .policy
            .keys()
            .all(|p| !(p.local == a && p.peer == Some(a)))
    );
}

#[test]
fn modes_precedence() {
    const ENFORCE: u32 = Mode::Enforce as u32;
    const OFF: u32 = Mode::Off as u32;
    const MONITOR: u32 = Mode::Monitor as u32;
    let text = r#"
apiVersion: v1
kind: Namespace
metadata: {name: e, labels: {bulkhead.dev/mode: enforce}}
---
apiVersion: v1
kind: Namespace
metadata: {name: o, labels: {bulkhead.dev/mode: off}}
---
apiVersion: v1
kind: Namespace
metadata: {name: bad, labels: {bulkhead.dev/mode: loud}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
"#;
    let cfw = "\n---\napiVersion: bulkhead.dev/v1alpha1\nkind: ClusterFirewall\nmetadata: {name: d}\nspec: {defaults: {mode: Monitor}}\n";
    let o = CompileOptions {
        default_mode: Mode::Enforce,
        ..opts()
    };
    let c = compile(
        &parse_objects(text).unwrap(),
        &o,
        &mut IdAllocator::default(),
    );
    let mode = |c: &Compiled, ns: &str| {
        c.maps.modes[c.namespaces.iter().find(|(_, n)| *n == ns).unwrap().0]
    };
    assert_eq!(
        (
            mode(&c, "e"),
            mode(&c, "o"),
            mode(&c, "bad"),
            mode(&c, "plain")
        ),
        (ENFORCE, OFF, ENFORCE, ENFORCE)
    );
    assert_eq!(c.maps.default_mode, ENFORCE);
    let c = compile(
        &parse_objects(&format!("{text}{cfw}")).unwrap(),
        &o,
        &mut IdAllocator::default(),
    );
    assert_eq!(
        (
            mode(&c, "e"),
            mode(&c, "o"),
            mode(&c, "bad"),
            mode(&c, "plain")
        ),
        (ENFORCE, OFF, MONITOR, MONITOR)
    );
    assert_eq!(c.maps.default_mode, MONITOR);
}

#[test]
fn defaults_conflict_and_invalid_objects_are_refused_and_fail_closed() {
    let m = model_of(&[
        cfw(
            "second",
            "{rules: [{action: Deny, to: {namespaces: [b]}}], defaults: {crossNamespace: Allow}}",
        ),
        cfw("first", "{defaults: {crossNamespace: Deny}}"),
        nsfw(
            "c",
            "broken",
            "{ingress: [{from: {namespaces: [a]}, ports: [{port: 70000}]}]}",
        ),
        nsfw("c", "typo", "{ingress: [{from: {namespace: [a]}}]}"),
    ]);
    let c = compile(&m, &opts(), &mut IdAllocator::default());
    let got: Vec<(&str, &str, &str)> = c
        .rejected
        .iter()
        .map(|r| (r.name.as_str(), r.reason.as_str(), r.message.as_str()))
        .collect();
    assert!(
        got.contains(&(
            "second",
            "DefaultsConflict",
            "spec.defaults: ClusterFirewall/first already sets the cluster defaults"
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&(
            "broken",
            "InvalidSpec",
            "spec.ingress[0].ports[0].port: port 70000 out of range 1..=65535"
        )),
        "{got:?}"
    );
    assert!(
        got.iter().any(|(n, r, msg)| *n == "typo"
            && *r == "InvalidSpec"
            && msg.contains("unknown field `namespace`")),
        "{got:?}"
    );
    // Never accepted, both fail closed (docs/design.md#invalid-objects): `second`'s defaults
    // are not applied (`first`'s are), its Deny rule is; c's objects name ingress, so c
    // admits nothing across namespaces on ingress, whatever the default.
    assert!(c.rejected.iter().all(|r| r.in_force == InForce::FailClosed));
    let e = to_ns(&m, "a", "b", TCP, 80);
    assert_eq!(
        side(&e.egress),
        (Deny, "ClusterFirewall/second:rules[0]", Step::ClusterRule)
    );
    assert_eq!(
        side(&to_ns(&m, "b", "a", TCP, 80).egress),
        (Deny, "default", Step::Default)
    );
    assert_eq!(
        ingress(&to_ns(&m, "a", "c", TCP, 80)),
        (
            Deny,
            "NamespaceFirewall/c/broken,NamespaceFirewall/c/typo",
            Step::NoMatch
        )
    );
}

#[test]
fn rule_table_and_endpoints() {
    let m = model(&nsfw(
        "b",
        "default",
        "{ingress: [{from: {namespaces: [c]}}]}",
    ));
    let mut m = m;
    m.pods[0].cgroup_ids = vec![77];
    let c = compile(&m, &opts(), &mut IdAllocator::default());
    assert_eq!(c.rules[0], "default");
    assert!(c.rules.contains(&"NamespaceFirewall/b/default".to_owned()));
    // The log names the ends of a violation from the model and the compile.
    let names = crate::agent::apply::name_tables(&m, &c);
    let pod = &names.by_cgroup[&77];
    assert_eq!((pod.namespace.as_str(), pod.name.as_str()), ("a", "a1"));
    assert_eq!(
        names.by_ip[&"10.244.0.3".parse::<IpAddr>().unwrap()].name,
        "b-other"
    );
    assert_eq!(c.maps.cgroups.len(), 1);
    assert!(c.namespaces.values().any(|n| n == "kube-system"));
}

// ---------------------------------------------------------------------------------------------
// Property test: reference kernel over the compiled maps vs. the evaluator.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const NAMESPACES: [&str; 6] = ["n0", "n1", "n2", "n3", "n4", "kube-system"];
const CIDR_POOL: [(&str, &[&str]); 7] = [
    ("10.0.0.0/8", &["10.1.0.0/16", "10.1.2.0/24"]),
    ("10.1.2.0/24", &[]),
    ("192.168.0.0/16", &["192.168.0.2/32"]),
    ("192.168.0.1/32", &[]),
    ("8.8.0.0/16", &["8.8.8.0/24"]),
    ("0.0.0.0/0", &["10.0.0.0/8"]),
    ("fd00::/8", &["fd00:1::/32"]),
];

fn gen_ports(r: &mut Rng) -> Option<Vec<PortSpec>> {
    let pool = [
        ("TCP", Some(80), None),
        ("TCP", Some(1000), Some(2000)),
        ("TCP", None, None),
        ("UDP", Some(53), None),
        ("UDP", Some(50), Some(60)),
        ("SCTP", Some(1000), None),
        ("TCP", Some(1500), Some(65535)),
    ];
    if r.chance(40) {
        return None;
    }
    let n = 1 + r.below(2);
    Some(
        (0..n)
            .map(|_| {
                let (p, port, end) = *r.pick(&pool);
                PortSpec {
                    protocol: p.into(),
                    port,
                    end_port: end,
                }
            })
            .collect(),
    )
}

fn gen_selector(r: &mut Rng) -> LabelSelector {
    if r.chance(50) {
        LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "tier".into(),
                r.pick(&["web", "db"]).to_string(),
            )])),
            match_expressions: None,
        }
    } else {
        let op = r
            .pick(&["In", "NotIn", "Exists", "DoesNotExist"])
            .to_string();
        let values = matches!(op.as_str(), "In" | "NotIn").then(|| vec!["web".to_owned()]);
        LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: op,
                values,
            }]),
        }
    }
}

fn gen_names(r: &mut Rng) -> Option<Vec<String>> {
    r.chance(50).then(|| {
        (0..1 + r.below(2))
            .map(|_| r.pick(&NAMESPACES).to_string())
            .collect()
    })
}

fn gen_peer(r: &mut Rng) -> Peer {
    Peer {
        namespaces: gen_names(r),
        namespace_selector: r.chance(30).then(|| gen_selector(r)),
    }
}

fn gen_cidrs(r: &mut Rng) -> (Option<Vec<String>>, Option<Vec<String>>) {
    if r.chance(50) {
        return (None, None);
    }
    let (c, ex) = *r.pick(&CIDR_POOL);
    let except: Vec<String> = ex
        .iter()
        .filter(|_| r.chance(60))
        .map(|s| s.to_string())
        .collect();
    (
        Some(vec![c.to_owned()]),
        (!except.is_empty()).then_some(except),
    )
}

fn gen_model(seed: u64) -> ClusterModel {
    let mut r = Rng(seed);
    let mut m = ClusterModel::default();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        m.namespaces
            .insert(ns.to_string(), gen_namespace(&mut r, ns));
        for j in 0..3u8 {
            m.pods.push(gen_pod(&mut r, i, ns, j));
        }
        m.services.extend(services_of(i, ns));
    }
    add_special_endpoints(&mut m);
    for k in 0..r.below(3) {
        m.cluster_firewalls.push(gen_cluster_firewall(&mut r, k));
    }
    for ns in &NAMESPACES[..5] {
        for k in 0..r.below(3) {
            m.namespace_firewalls
                .push(gen_namespace_firewall(&mut r, ns, k));
        }
    }
    m
}

fn gen_namespace(r: &mut Rng, ns: &str) -> Namespace {
    let mut labels = BTreeMap::new();
    if r.chance(70) {
        labels.insert("tier".to_owned(), r.pick(&["web", "db"]).to_string());
    }
    if r.chance(30) {
        labels.insert(
            "bulkhead.dev/mode".to_owned(),
            r.pick(&["enforce", "off", "monitor", "bogus"]).to_string(),
        );
    }
    Namespace {
        name: ns.to_string(),
        labels,
    }
}

/// The label key that Services of `ns` select their pods by.
fn app_label(ns: &str) -> &'static str {
    if ns == "kube-system" {
        "k8s-app"
    } else {
        "app"
    }
}

/// Pod `j` of namespace `i` (`ns`): 10.244.i.(j+1), sometimes also IPv6, mostly on node-1.
fn gen_pod(r: &mut Rng, i: usize, ns: &str, j: u8) -> Pod {
    let app = r.pick(&["a", "b", "c"]).to_string();
    let mut ips = vec![IpAddr::V4(Ipv4Addr::new(10, 244, i as u8, j + 1))];
    if r.chance(40) {
        ips.push(IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0x10,
            0,
            0,
            0,
            0,
            i as u16,
            u16::from(j) + 1,
        )));
    }
    Pod {
        namespace: ns.to_string(),
        name: format!("p{j}"),
        uid: format!("{ns}-{j}"),
        node_name: Some(if r.chance(75) { "node-1" } else { "node-2" }.to_owned()),
        host_network: false,
        ips,
        labels: BTreeMap::from([(app_label(ns).to_owned(), app)]),
        terminal: false,
        cgroup_ids: vec![1000 + (i as u64) * 10 + u64::from(j)],
        named_ports: BTreeMap::new(),
    }
}

/// Services `svc-a` and `svc-b` of namespace `i` (`ns`); kube-system's first is `kube-dns`.
fn services_of(i: usize, ns: &str) -> Vec<Service> {
    ["a", "b"]
        .iter()
        .enumerate()
        .map(|(k, app)| Service {
            namespace: ns.to_string(),
            name: if ns == "kube-system" && k == 0 {
                "kube-dns".to_owned()
            } else {
                format!("svc-{app}")
            },
            selector: Some(BTreeMap::from([(
                app_label(ns).to_owned(),
                app.to_string(),
            )])),
            cluster_ips: vec![IpAddr::V4(Ipv4Addr::new(10, 96, i as u8, k as u8 + 1))],
        })
        .collect()
}

/// A terminal pod whose IP was reused, a hostNetwork pod, and the two nodes.
fn add_special_endpoints(m: &mut ClusterModel) {
    m.pods.push(Pod {
        namespace: "n0".into(),
        name: "done".into(),
        ips: vec!["10.244.0.1".parse().unwrap()],
        terminal: true,
        ..Default::default()
    });
    m.pods.push(Pod {
        namespace: "n1".into(),
        name: "hostnet".into(),
        node_name: Some("node-1".into()),
        host_network: true,
        ips: vec!["192.168.0.3".parse().unwrap()],
        cgroup_ids: vec![999],
        ..Default::default()
    });
    m.nodes.push(Node {
        name: "node-1".into(),
        addresses: vec!["192.168.0.1".parse().unwrap(), "fd00:1::1".parse().unwrap()],
    });
    m.nodes.push(Node {
        name: "node-2".into(),
        addresses: vec!["192.168.0.2".parse().unwrap()],
    });
}

fn gen_cluster_rule(r: &mut Rng) -> ClusterRule {
    let (cidrs, except) = gen_cidrs(r);
    let services = r.chance(25).then(|| {
        vec![format!(
            "{}/svc-{}",
            r.pick(&NAMESPACES[..5]),
            r.pick(&["a", "b"])
        )]
    });
    let to = (!r.chance(20)).then(|| DestPeer {
        namespaces: gen_names(r),
        namespace_selector: r.chance(20).then(|| gen_selector(r)),
        services,
        cidrs,
        except,
    });
    ClusterRule {
        action: *r.pick(&[Action::Allow, Action::Deny, Action::Delegate]),
        from: r.chance(60).then(|| gen_peer(r)),
        to,
        ports: gen_ports(r),
    }
}

fn gen_cluster_firewall(r: &mut Rng, k: usize) -> ClusterFirewall {
    let rules = (0..1 + r.below(4)).map(|_| gen_cluster_rule(r)).collect();
    let defaults = r.chance(40).then(|| ClusterDefaults {
        cross_namespace: Some(*r.pick(&[DefaultAction::Allow, DefaultAction::Deny])),
        mode: None,
    });
    let spec = ClusterFirewallSpec {
        priority: *r.pick(&[10, 20]),
        rules,
        defaults,
    };
    ClusterFirewall::new(&format!("cf{k}"), spec)
}

fn gen_ingress_rule(r: &mut Rng) -> IngressRule {
    IngressRule {
        from: gen_peer(r),
        services: r
            .chance(30)
            .then(|| vec![format!("svc-{}", r.pick(&["a", "b"]))]),
        ports: gen_ports(r),
    }
}

fn gen_egress_rule(r: &mut Rng) -> EgressRule {
    let (cidrs, except) = gen_cidrs(r);
    let to = EgressPeer {
        namespaces: gen_names(r),
        namespace_selector: r.chance(20).then(|| gen_selector(r)),
        cidrs,
        except,
    };
    EgressRule {
        to,
        ports: gen_ports(r),
    }
}

fn gen_namespace_firewall(r: &mut Rng, ns: &str, k: usize) -> NamespaceFirewall {
    let ingress = r
        .chance(60)
        .then(|| (0..r.below(3)).map(|_| gen_ingress_rule(r)).collect());
    let egress = r
        .chance(50)
        .then(|| (0..r.below(3)).map(|_| gen_egress_rule(r)).collect());
    let mut o = NamespaceFirewall::new(&format!("f{k}"), NamespaceFirewallSpec { ingress, egress });
    o.metadata.namespace = Some(ns.to_string());
    o
}

/// Trie entries of one (side, local) row: (prefix length, key, value).
type Row = Vec<(u32, [u8; 13], PolicyValue)>;

/// The kernel's view: longest-prefix match over the compiled trie.
pub(super) struct Kernel<'c> {
    c: &'c Compiled,
    rows: BTreeMap<(Side, u32), Row>,
}

fn prefix_match(len: u32, a: &[u8; 13], b: &[u8; 13]) -> bool {
    // Keys as left-aligned 128-bit numbers: the first `len` bits must be equal.
    let wide = |k: &[u8; 13]| {
        let mut w = [0u8; 16];
        w[..13].copy_from_slice(k);
        u128::from_be_bytes(w)
    };
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    (wide(a) ^ wide(b)) & mask == 0
}

impl<'c> Kernel<'c> {
    pub(super) fn new(c: &'c Compiled) -> Self {
        let mut rows: BTreeMap<(Side, u32), Row> = BTreeMap::new();
        for (p, v) in &c.maps.policy {
            let (len, key) = p.to_lpm(0);
            rows.entry((p.side, p.local))
                .or_default()
                .push((len, key, *v));
        }
        Self { c, rows }
    }

    pub(super) fn identity(&self, ip: IpAddr) -> Identity {
        identities::lookup_address(&self.c.maps.ipv4, &self.c.maps.ipv6, ip)
    }

    pub(super) fn lookup(
        &self,
        side: Side,
        local: u32,
        peer: u32,
        proto: u8,
        port: u16,
    ) -> PolicyValue {
        let key = policy_key(0, side as u8, local, peer, proto, port);
        self.rows
            .get(&(side, local))
            .into_iter()
            .flatten()
            .filter(|(len, k, _)| prefix_match(*len, k, &key))
            .max_by_key(|(len, _, _)| *len)
            .map(|e| e.2)
            .unwrap_or(PolicyValue {
                verdict: Allow as u8,
                pad: [0; 3],
                rule: 0,
            })
    }

    fn mode(&self, ns: u32) -> Mode {
        let raw = self
            .c
            .maps
            .modes
            .get(&ns)
            .copied()
            .unwrap_or(self.c.maps.default_mode);
        Mode::try_from(raw).unwrap()
    }
}

fn probe_addresses(m: &ClusterModel) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = m.pods.iter().flat_map(|p| p.ips.iter().copied()).collect();
    v.extend(
        m.services
            .iter()
            .flat_map(|s| s.cluster_ips.iter().copied()),
    );
    v.extend(m.nodes.iter().flat_map(|n| n.addresses.iter().copied()));
    for s in [
        "10.2.3.4",
        "10.1.9.9",
        "10.1.2.3",
        "192.168.7.7",
        "8.8.8.8",
        "8.8.4.4",
        "1.1.1.1",
        "fd00::9",
        "fd00:1::9",
        "2001:db8::1",
    ] {
        v.push(s.parse().unwrap());
    }
    v.sort();
    v.dedup();
    v
}

fn check_side(what: &str, kernel: PolicyValue, exp: &SideDecision, c: &Compiled) {
    let verdict = exp.verdict as u8;
    assert_eq!(
        kernel.verdict, verdict,
        "{what}: kernel {kernel:?} vs {exp:?}"
    );
    assert_eq!(c.rules[kernel.rule as usize], exp.policy, "{what}: rule");
}

/// Ports probed for TCP, UDP and SCTP: both ends of every range the generator writes, and their
/// neighbours.
const PROBE_PORTS: [u16; 21] = [
    0, 1, 49, 50, 52, 53, 54, 60, 61, 79, 80, 81, 999, 1000, 1001, 1499, 1500, 2000, 2001, 65534,
    65535,
];

/// One probed connection from a local pod.
struct Probe<'a> {
    /// What the failure messages call it.
    what: String,
    src: &'a Pod,
    dst_ip: IpAddr,
    proto: u8,
    port: u16,
}

fn run_property(seed: u64) -> usize {
    let m = gen_model(seed);
    let o = CompileOptions {
        node_name: "node-1".into(),
        ..Default::default()
    };
    let mut ids = IdAllocator::default();
    // Compile twice: identities must be stable across compiles.
    let first = compile(&m, &o, &mut ids);
    let c = compile(&m, &o, &mut ids);
    assert_eq!(first, c);
    let k = Kernel::new(&c);
    let ev = Evaluator::new(&m, &o);
    let sources: Vec<&Pod> = m
        .pods
        .iter()
        .filter(|p| p.is_endpoint() && p.node_name.as_deref() == Some("node-1"))
        .collect();
    let mut checked = 0;
    for src in &sources {
        for dst_ip in probe_addresses(&m) {
            let icmp = if dst_ip.is_ipv4() { 1 } else { 58 };
            for proto in [icmp, 6, 17, 132, 47] {
                let port_list: &[u16] = if matches!(proto, 6 | 17 | 132) {
                    &PROBE_PORTS
                } else {
                    &[0]
                };
                for &port in port_list {
                    let what = format!(
                        "seed {seed}: {}/{} -> {dst_ip} proto {proto} port {port}",
                        src.namespace, src.name
                    );
                    let probe = Probe {
                        what,
                        src,
                        dst_ip,
                        proto,
                        port,
                    };
                    let exp =
                        ev.explain(&src.namespace, &Destination::Address(dst_ip), proto, port);
                    check_at_source(&k, &probe, &exp);
                    check_at_destination(&k, &m, &probe, &exp);
                    checked += 1;
                }
            }
        }
    }
    checked
}

/// The egress program at the source (and, for a pod destination, the ingress decision it
/// takes there on the destination's behalf) against the explanation.
fn check_at_source(k: &Kernel<'_>, p: &Probe<'_>, exp: &Explanation) {
    let (c, what, proto, port) = (k.c, &p.what, p.proto, p.port);
    let local = c.maps.cgroups[&p.src.cgroup_ids[0]];
    let peer = k.identity(p.dst_ip);
    assert_eq!(exp.egress.mode, k.mode(local.ns), "{what}: egress mode");
    if exemption(Side::Egress, &local, &peer, proto, port).is_some() {
        assert_eq!(exp.egress.verdict, Allow, "{what}: exempt");
        assert!(
            matches!(exp.egress.step, Step::SameNamespace | Step::Dns),
            "{what}: {exp:?}"
        );
        return;
    }
    let v = k.lookup(Side::Egress, local.id, peer.id, proto, port);
    check_side(&format!("{what} egress"), v, &exp.egress, c);
    if peer.ns >= NS_FIRST {
        let v2 = k.lookup(Side::Ingress, peer.id, local.id, proto, port);
        let ing = exp.ingress.as_ref().unwrap();
        check_side(&format!("{what} ingress (at source)"), v2, ing, c);
        assert_eq!(ing.mode, k.mode(peer.ns), "{what}: ingress mode");
    } else {
        assert!(exp.ingress.is_none(), "{what}");
    }
}

/// The ingress program at the destination, when it is a pod on this node, against the
/// explanation.
fn check_at_destination(k: &Kernel<'_>, m: &ClusterModel, p: &Probe<'_>, exp: &Explanation) {
    let (c, what, proto, port) = (k.c, &p.what, p.proto, p.port);
    let dst_pod = m.pods.iter().find(|d| {
        d.is_endpoint() && d.ips.contains(&p.dst_ip) && d.node_name.as_deref() == Some("node-1")
    });
    let src_ip = p.src.ips.iter().find(|i| i.is_ipv4() == p.dst_ip.is_ipv4());
    let (Some(dst_pod), Some(src_ip)) = (dst_pod, src_ip) else {
        return;
    };
    let dlocal = c.maps.cgroups[&dst_pod.cgroup_ids[0]];
    let speer = k.identity(*src_ip);
    let ing = exp.ingress.as_ref().unwrap();
    if exemption(Side::Ingress, &dlocal, &speer, proto, port).is_some() {
        assert_eq!(ing.verdict, Allow, "{what}: ingress exempt");
    } else {
        let v = k.lookup(Side::Ingress, dlocal.id, speer.id, proto, port);
        check_side(&format!("{what} ingress (at destination)"), v, ing, c);
    }
}

#[test]
fn compiled_maps_agree_with_evaluation() {
    let mut total = 0;
    let mut rejected = 0;
    for seed in 0..24 {
        total += run_property(seed);
        rejected += compile(
            &gen_model(seed),
            &CompileOptions::default(),
            &mut IdAllocator::default(),
        )
        .rejected
        .len();
    }
    assert!(total > 10_000, "{total}");
    // The generator produces valid objects (apart from defaults conflicts).
    let _ = rejected;
}

#[test]
fn compile_is_deterministic_and_sparse() {
    let m = gen_model(7);
    let o = CompileOptions {
        node_name: "node-1".into(),
        ..Default::default()
    };
    let a = compile(&m, &o, &mut IdAllocator::default());
    let b = compile(&m, &o, &mut IdAllocator::default());
    assert_eq!(a, b);
    let empty = model("");
    let c = compile(&empty, &opts(), &mut IdAllocator::default());
    // Without policy every row is a single allow default.
    assert!(
        c.maps
            .policy
            .iter()
            .all(|(p, v)| p.peer.is_none() && v.verdict == Allow as u8 && v.rule == 0),
        "{:?}",
        c.maps.policy
    );
}

#[test]
fn explanation_reads_well() {
    let m = model_of(&[
        r#"apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {tier: db, bulkhead.dev/mode: enforce}}
"#
        .to_owned(),
        nsfw("b", "default", "{ingress: [{from: {namespaces: [c]}}]}"),
    ]);
    let e = to_ip(&m, "a", "10.244.0.2", TCP, 5432);
    assert!(e.dropped);
    assert_eq!(
        e.to_string(),
        "from namespace a to pod b/b-api (10.244.0.2):\n  egress: Allow by default (Default; mode monitor)\n  ingress: Deny by NamespaceFirewall/b/default (NoMatch; mode enforce)\n  result: dropped\n"
    );
}
