//! NetworkPolicy through the compiler and a simulation of the kernel's lookups (the datapath's
//! exemption check, then the policy trie, on both sides). Expected verdicts come from the
//! NetworkPolicy documentation (kubernetes.io/docs/concepts/services-networking/network-policies/):
//! a pod selected for a direction is isolated in it, allowed traffic is the union of the
//! selecting policies' rules, and traffic from the pod's own node is always allowed.
use std::{collections::BTreeMap, net::IpAddr};

use firewall_common::{IpProto, NS_FIRST, PolicyValue, PolicyVerdict, Side, exemption};

use super::{tests::Kernel, *};
use crate::model::{Namespace, Node, Pod, Service};

fn pod(ns: &str, name: &str, ip: &str, labels: &[(&str, &str)], cgroup: u64) -> Pod {
    Pod {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        uid: format!("{ns}-{name}"),
        node_name: Some("node-1".to_owned()),
        ips: vec![ip.parse().expect("test address")],
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        named_ports: BTreeMap::from([("serve-80-tcp".to_owned(), (IpProto::Tcp as u8, 80))]),
        cgroup_ids: vec![cgroup],
        ..Pod::default()
    }
}

/// Namespaces x and y (labelled `ns`), pods a and b in x and a in y, the DNS Service in
/// kube-system, one node, and the given NetworkPolicies (YAML documents).
fn model(policies: &str) -> ClusterModel {
    let mut m = crate::source::file::parse_objects(policies).expect("test policies");
    for ns in ["x", "y", "kube-system"] {
        let labels = BTreeMap::from([
            ("ns".to_owned(), ns.to_owned()),
            ("kubernetes.io/metadata.name".to_owned(), ns.to_owned()),
        ]);
        m.namespaces.insert(
            ns.to_owned(),
            Namespace {
                name: ns.to_owned(),
                labels,
            },
        );
    }
    m.pods = vec![
        pod("x", "a", "10.0.1.1", &[("pod", "a")], 11),
        pod("x", "b", "10.0.1.2", &[("pod", "b")], 12),
        pod("y", "a", "10.0.2.1", &[("pod", "a")], 21),
        pod(
            "kube-system",
            "dns",
            "10.0.3.1",
            &[("k8s-app", "kube-dns")],
            31,
        ),
    ];
    m.services = vec![Service {
        namespace: "kube-system".to_owned(),
        name: "kube-dns".to_owned(),
        selector: Some(BTreeMap::from([(
            "k8s-app".to_owned(),
            "kube-dns".to_owned(),
        )])),
        cluster_ips: vec!["10.96.0.10".parse().expect("test address")],
    }];
    m.nodes = vec![
        Node {
            name: "node-1".to_owned(),
            addresses: vec!["192.168.0.1".parse().expect("test address")],
        },
        Node {
            name: "node-2".to_owned(),
            addresses: vec!["192.168.0.2".parse().expect("test address")],
        },
    ];
    m
}

/// The connection's fate as the datapath decides it on this node: `None` when allowed, else
/// the deciding rule of the first side that denies (egress at the source, the destination's
/// ingress looked up at the source, then the destination's own ingress program).
fn denied_by(c: &Compiled, m: &ClusterModel, from: &str, to: &str, port: u16) -> Option<String> {
    let k = Kernel::new(c);
    let tcp = IpProto::Tcp as u8;
    let ip = |s: &str| -> IpAddr { s.parse().expect("test address") };
    let by_name = |n: &str| {
        m.pods
            .iter()
            .find(|p| format!("{}/{}", p.namespace, p.name) == n)
    };
    let rule = |v: PolicyValue| {
        (v.verdict == PolicyVerdict::Deny as u8).then(|| c.rules[v.rule as usize].clone())
    };
    let (src_ip, dst_ip) = (
        by_name(from).map_or_else(|| ip(from), |p| p.ips[0]),
        by_name(to).map_or_else(|| ip(to), |p| p.ips[0]),
    );
    if let Some(src) = by_name(from) {
        let local = c.maps.cgroups[&src.cgroup_ids[0]];
        let peer = k.identity(dst_ip);
        if exemption(Side::Egress, &local, &peer, tcp, port).is_none() {
            if let Some(r) = rule(k.lookup(Side::Egress, local.id, peer.id, tcp, port)) {
                return Some(r);
            }
            if peer.ns >= NS_FIRST
                && exemption(Side::Ingress, &peer, &local, tcp, port).is_none()
                && let Some(r) = rule(k.lookup(Side::Ingress, peer.id, local.id, tcp, port))
            {
                return Some(r);
            }
        }
    }
    let dst = by_name(to)?;
    let local = c.maps.cgroups[&dst.cgroup_ids[0]];
    let peer = k.identity(src_ip);
    if exemption(Side::Ingress, &local, &peer, tcp, port).is_some() {
        return None;
    }
    rule(k.lookup(Side::Ingress, local.id, peer.id, tcp, port))
}

fn compiled(policies: &str) -> (Compiled, ClusterModel) {
    let m = model(policies);
    let opts = CompileOptions {
        node_name: "node-1".to_owned(),
        ..CompileOptions::default()
    };
    let c = compile(&m, &opts, &mut IdAllocator::default());
    assert!(c.rejected.is_empty(), "{:?}", c.rejected);
    (c, m)
}

const NP: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: x}\nspec: ";

#[test]
fn ingress_isolation_applies_inside_the_namespace_and_from_the_world() {
    let (c, m) = compiled(&format!(
        "{NP}{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}], ports: [{{port: 80}}]}}]}}"
    ));
    let np = Some("NetworkPolicy/x/np".to_owned());
    assert_eq!(denied_by(&c, &m, "x/b", "x/a", 80), None);
    assert_eq!(denied_by(&c, &m, "x/b", "x/a", 81), np);
    // podSelector alone selects pods of the policy's own namespace only.
    assert_eq!(denied_by(&c, &m, "y/a", "x/a", 80), np);
    // Not selected: not isolated.
    assert_eq!(denied_by(&c, &m, "x/a", "x/b", 81), None);
    assert_eq!(denied_by(&c, &m, "y/a", "x/b", 81), None);
    // Outside the cluster: restricted; the pod's own node: always allowed.
    assert_eq!(denied_by(&c, &m, "203.0.113.7", "x/a", 80), np);
    assert_eq!(denied_by(&c, &m, "192.168.0.1", "x/a", 81), None);
    // Another node (its kubelet, its hostNetwork pods) is not the pod's own node.
    assert_eq!(denied_by(&c, &m, "192.168.0.2", "x/a", 81), np);
    // Egress of the isolated pod is not isolated by an ingress-only policy.
    assert_eq!(denied_by(&c, &m, "x/a", "y/a", 81), None);
}

#[test]
fn egress_deny_all_blocks_dns_and_same_namespace() {
    let (c, m) = compiled(&format!("{NP}{{podSelector: {{}}, policyTypes: [Egress]}}"));
    let np = Some("NetworkPolicy/x/np".to_owned());
    assert_eq!(denied_by(&c, &m, "x/a", "10.96.0.10", 53), np);
    assert_eq!(denied_by(&c, &m, "x/a", "kube-system/dns", 53), np);
    assert_eq!(denied_by(&c, &m, "x/a", "x/b", 80), np);
    assert_eq!(denied_by(&c, &m, "x/a", "203.0.113.7", 443), np);
    // Other namespaces keep Bulkhead's exemptions and allow-by-default.
    assert_eq!(denied_by(&c, &m, "y/a", "10.96.0.10", 53), None);
    assert_eq!(denied_by(&c, &m, "y/a", "x/a", 80), None);
}

#[test]
fn namespace_selector_pod_selector_combined_and_separate() {
    // One peer with both: pods a of namespaces labelled ns=y. Two peers: either.
    let (c, m) = compiled(&format!(
        "{NP}{{podSelector: {{}}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}]}}"
    ));
    assert_eq!(denied_by(&c, &m, "y/a", "x/b", 80), None);
    assert!(denied_by(&c, &m, "x/a", "x/b", 80).is_some());
    let (c, m) = compiled(&format!(
        "{NP}{{podSelector: {{}}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}, {{podSelector: {{matchLabels: {{pod: a}}}}}}]}}]}}"
    ));
    assert_eq!(denied_by(&c, &m, "y/a", "x/b", 80), None);
    assert_eq!(denied_by(&c, &m, "x/a", "x/b", 80), None);
    assert!(denied_by(&c, &m, "x/b", "x/a", 80).is_some());
}

#[test]
fn ip_blocks_match_pod_addresses_and_except_carves_holes() {
    let (c, m) = compiled(&format!(
        "{NP}{{podSelector: {{}}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {{cidr: 10.0.0.0/16, except: [10.0.2.0/24]}}}}]}}]}}"
    ));
    assert_eq!(denied_by(&c, &m, "x/a", "x/b", 80), None);
    assert_eq!(denied_by(&c, &m, "x/a", "kube-system/dns", 53), None);
    assert!(denied_by(&c, &m, "x/a", "y/a", 80).is_some());
    assert!(denied_by(&c, &m, "x/a", "203.0.113.7", 80).is_some());
}

#[test]
fn named_ports_resolve_at_the_destination_and_policies_union() {
    let second = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np2, namespace: x}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 81}]}]}";
    let (c, m) = compiled(&format!(
        "{NP}{{podSelector: {{}}, ingress: [{{ports: [{{port: serve-80-tcp}}]}}]}}\n{second}"
    ));
    assert_eq!(denied_by(&c, &m, "y/a", "x/b", 80), None);
    assert_eq!(
        denied_by(&c, &m, "y/a", "x/b", 81),
        Some("NetworkPolicy/x/np".to_owned())
    );
    // x/a is isolated by both: the union of their rules, and a denial names both.
    assert_eq!(denied_by(&c, &m, "y/a", "x/a", 81), None);
    assert_eq!(
        denied_by(&c, &m, "y/a", "x/a", 82),
        Some("NetworkPolicy/x/np,NetworkPolicy/x/np2".to_owned())
    );
}

#[test]
fn without_standard_policies_identities_are_as_before() {
    let (c, _) = compiled("");
    let ids: std::collections::BTreeSet<u32> = c.maps.cgroups.values().map(|i| i.id).collect();
    // One identity per namespace: nothing splits them.
    assert_eq!(ids.len(), 3, "{:?}", c.maps.cgroups);
    assert!(c.maps.cgroups.values().all(|i| i.id == i.ns));
}
