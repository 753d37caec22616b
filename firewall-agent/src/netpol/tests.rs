//! Expected conversions written from the NetworkPolicy API reference
//! (kubernetes.io/docs/reference/kubernetes-api/policy-resources/network-policy-v1/).
use super::*;

fn np(yaml: &str) -> NetworkPolicy {
    let mut v: NetworkPolicy = serde_yaml::from_str(&format!(
        "metadata: {{name: p, namespace: x}}\nspec: {yaml}"
    ))
    .expect("test object");
    v.metadata.namespace = Some("x".to_owned());
    v
}

fn ok(yaml: &str) -> PodPolicy {
    validate(&np(yaml)).expect("valid")
}

fn errors(yaml: &str) -> Vec<String> {
    validate(&np(yaml))
        .expect_err("invalid")
        .into_iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect()
}

#[test]
fn policy_types_default_to_ingress_plus_egress_when_it_has_egress_rules() {
    let p = ok("{podSelector: {}}");
    assert_eq!((p.ingress, p.egress), (Some(vec![]), None));
    let p = ok("{podSelector: {}, egress: [{}]}");
    assert!(p.ingress == Some(vec![]) && p.egress.is_some_and(|e| e.len() == 1));
    let p = ok("{podSelector: {}, policyTypes: [Egress]}");
    assert_eq!((p.ingress, p.egress), (None, Some(vec![])));
    assert_eq!(
        errors("{podSelector: {}, policyTypes: [Ingres]}"),
        ["spec.policyTypes[0]: unknown policy type \"Ingres\" (expected Ingress or Egress)"]
    );
}

#[test]
fn empty_from_matches_every_peer_and_peers_are_scoped_as_documented() {
    let p = ok(
        "{podSelector: {matchLabels: {pod: a}}, ingress: [{}, {from: [{podSelector: {}}, {namespaceSelector: {}}, {namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]}]}",
    );
    let subject_pods = p.subject.pods.clone().expect("selector");
    assert_eq!(subject_pods.labels["pod"], "a");
    assert!(p.subject.namespaces.names.contains("x"));
    let rules = p.ingress.expect("isolated");
    assert_eq!(rules[0].peers, vec![Peer::Any]);
    assert_eq!(rules[0].ports, StdPorts::default());
    let [own, all_ns, both] = &rules[1].peers[..] else {
        panic!("three peers: {:?}", rules[1].peers)
    };
    // podSelector alone: pods of the policy's own namespace.
    let Peer::Pods(own) = own else { panic!() };
    assert!(own.namespaces.names.contains("x") && !own.namespaces.all);
    // namespaceSelector alone: every pod of the selected namespaces.
    let Peer::Pods(all_ns) = all_ns else { panic!() };
    assert_eq!(all_ns.pods, None);
    assert_eq!(all_ns.namespaces.selector, Some(Selector::default()));
    // Both in one peer: pods selected by podSelector in namespaces selected by namespaceSelector.
    let Peer::Pods(both) = both else { panic!() };
    assert!(both.namespaces.names.is_empty());
    assert_eq!(
        both.pods.as_ref().map(|s| s.labels["pod"].as_str()),
        Some("b")
    );
}

#[test]
fn ip_blocks() {
    let p = ok(
        "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]}]}",
    );
    assert_eq!(
        p.egress.expect("isolated")[0].peers,
        vec![Peer::Network {
            cidr: "10.0.0.0/8".parse().expect("cidr"),
            except: vec!["10.1.0.0/16".parse().expect("cidr")],
        }]
    );
    assert_eq!(
        errors(
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16, 10.0.0.0/8]}}]}]}"
        ),
        [
            "spec.ingress[0].from[0].ipBlock.except[0]: \"192.168.0.0/16\" must be a strict subset of cidr 10.0.0.0/8",
            "spec.ingress[0].from[0].ipBlock.except[1]: \"10.0.0.0/8\" must be a strict subset of cidr 10.0.0.0/8",
        ]
    );
    assert_eq!(
        errors("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}"),
        ["spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR \"10.0.0.0/33\""]
    );
    assert_eq!(
        errors(
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}"
        ),
        [
            "spec.ingress[0].from[0]: ipBlock may not be combined with podSelector or namespaceSelector"
        ]
    );
}

#[test]
fn ports_numbered_named_ranges_and_protocols() {
    let p = ok(
        "{podSelector: {}, ingress: [{ports: [{port: 80}, {protocol: UDP, port: 81}, {port: 8000, endPort: 8080}, {port: serve-80-tcp}, {protocol: SCTP}]}]}",
    );
    let ports = &p.ingress.expect("isolated")[0].ports;
    let tcp = IpProto::Tcp as u8;
    assert_eq!(
        ports.ports.0.as_deref(),
        Some(
            &[
                PortRange {
                    proto: tcp,
                    lo: 80,
                    hi: 80
                },
                PortRange {
                    proto: IpProto::Udp as u8,
                    lo: 81,
                    hi: 81
                },
                PortRange {
                    proto: tcp,
                    lo: 8000,
                    hi: 8080
                },
                PortRange {
                    proto: IpProto::Sctp as u8,
                    lo: 0,
                    hi: u16::MAX
                },
            ][..]
        )
    );
    assert_eq!(
        ports.named,
        vec![NamedPort {
            proto: tcp,
            name: "serve-80-tcp".to_owned()
        }]
    );
    assert_eq!(
        errors(
            "{podSelector: {}, ingress: [{ports: [{port: 80, endPort: 79}, {port: http, endPort: 90}, {endPort: 90}, {protocol: ICMP}, {port: 0}]}]}"
        ),
        [
            "spec.ingress[0].ports[0].endPort: endPort 79 is less than port 80",
            "spec.ingress[0].ports[1].endPort: endPort may not be set with a named port",
            "spec.ingress[0].ports[2].endPort: endPort requires port",
            "spec.ingress[0].ports[3].protocol: unknown protocol \"ICMP\" (expected TCP, UDP or SCTP)",
            "spec.ingress[0].ports[4].port: port 0 out of range 1..=65535",
        ]
    );
}

#[test]
fn a_refused_policy_isolates_what_it_names_and_allows_nothing() {
    let mut model = ClusterModel::default();
    model.network_policies.push(np(
        "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: nonsense}}]}]}",
    ));
    let input = policy_input(&model);
    assert!(input.pod_policies.is_empty());
    let [r] = &input.refused[..] else {
        panic!("one refusal")
    };
    assert_eq!(r.rejection.kind, "NetworkPolicy");
    let StandIn::Pod(p) = &r.stand_in else {
        panic!("a pod policy")
    };
    assert_eq!(p.ingress, None);
    assert_eq!(p.egress, Some(vec![]));
    assert_eq!(
        p.subject.pods.as_ref().map(|s| s.labels["pod"].as_str()),
        Some("a")
    );
    // Unreadable: every pod of the namespace, both directions.
    let p = stand_in(origin("x".into(), "p".into()), &Value::Null);
    assert_eq!(
        (p.ingress, p.egress, p.subject.pods),
        (Some(vec![]), Some(vec![]), None)
    );
}
