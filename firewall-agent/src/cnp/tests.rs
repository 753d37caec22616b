//! Expected conversions written from the network-policy-api v0.2.0 API reference
//! (`apis/v1alpha2/clusternetworkpolicy_types.go`: field docs, kubebuilder bounds, CEL rules).
use std::collections::BTreeMap;

use firewall_common::IpProto;
use ipnet::IpNet;

use super::*;
use crate::{
    model::{
        ClusterModel,
        convert::{PolicyKind, add_policy_object},
    },
    policy::{
        ClusterAction, NamedPort, NamespaceSet, Peer, PeerRule, PodSet, PortRange, Ports, Selector,
        StdPorts, Tier, TieredPolicy,
    },
};

const SUBJECT: &str = "subject: {namespaces: {}}";

fn value(spec: &str) -> Value {
    serde_yaml::from_str(&format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: p}}\nspec: {spec}"
    ))
    .expect("test object")
}

fn cnp(spec: &str) -> ClusterNetworkPolicy {
    serde_json::from_value(value(spec)).expect("deserializes")
}

/// The policy, or its errors as `path: message`.
fn checked(spec: &str) -> Result<TieredPolicy, Vec<String>> {
    let errors =
        |e: Vec<crate::crd::FieldError>| e.into_iter().map(|e| [e.path, e.message].join(": "));
    validate(&cnp(spec)).map_err(|e| errors(e).collect())
}

fn ok(spec: &str) -> TieredPolicy {
    checked(spec).expect("valid")
}

fn errors(spec: &str) -> Vec<String> {
    checked(spec).expect_err("invalid")
}

/// A spec with one egress rule `rule` (and the required fields).
fn egress(rule: &str) -> String {
    format!("{{tier: Admin, priority: 10, {SUBJECT}, egress: [{rule}]}}")
}

fn ingress(rule: &str) -> String {
    format!("{{tier: Admin, priority: 10, {SUBJECT}, ingress: [{rule}]}}")
}

fn labels(pairs: &[(&str, &str)]) -> Selector {
    Selector {
        labels: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        requirements: Vec::new(),
    }
}

fn every_namespace() -> NamespaceSet {
    NamespaceSet {
        all: true,
        ..NamespaceSet::default()
    }
}

fn network(s: &str) -> Peer {
    Peer::Network {
        cidr: s.parse::<IpNet>().expect("cidr"),
        except: Vec::new(),
    }
}

#[test]
fn tier_priority_and_subjects() {
    let p = ok("{tier: Baseline, priority: 1000, subject: {namespaces: {matchLabels: {team: a}}}}");
    assert_eq!((p.tier, p.priority), (Tier::Baseline, 1000));
    assert_eq!(p.origin.to_string(), "ClusterNetworkPolicy/p");
    assert_eq!(
        p.subject.namespaces.selector,
        Some(labels(&[("team", "a")]))
    );
    assert_eq!(p.subject.pods, None);
    assert!(p.ingress.is_empty() && p.egress.is_empty());
    // `pods`: podSelector in the namespaces namespaceSelector selects; an absent or empty
    // namespaceSelector selects every namespace, an empty podSelector every pod.
    let p =
        ok("{tier: Admin, priority: 0, subject: {pods: {podSelector: {matchLabels: {app: db}}}}}");
    assert_eq!(p.tier, Tier::Admin);
    assert_eq!(
        p.subject,
        PodSet {
            namespaces: every_namespace(),
            pods: Some(labels(&[("app", "db")])),
        }
    );
    let p = ok(
        "{tier: Admin, priority: 0, subject: {pods: {namespaceSelector: {matchExpressions: [{key: env, operator: Exists}]}, podSelector: {}}}}",
    );
    assert!(!p.subject.namespaces.all && p.subject.namespaces.selector.is_some());
    assert_eq!(p.subject.pods, None);
    assert_eq!(
        ok(&format!("{{tier: Admin, priority: 5, {SUBJECT}}}"))
            .subject
            .namespaces,
        every_namespace()
    );
}

#[test]
fn tier_priority_and_subject_errors() {
    assert_eq!(
        errors("{tier: Developer, priority: 1001, subject: {}}"),
        [
            "spec.tier: unknown tier \"Developer\" (expected Admin or Baseline)",
            "spec.priority: priority 1001 out of range 0..=1000",
            "spec.subject: required: one of namespaces and pods",
        ]
    );
    assert_eq!(
        errors("{priority: -1, subject: {namespaces: {}, pods: {podSelector: {}}}}"),
        [
            "spec.tier: required (Admin or Baseline)",
            "spec.priority: priority -1 out of range 0..=1000",
            "spec.subject: exactly one of namespaces and pods may be set",
        ]
    );
    assert_eq!(
        errors("{tier: Admin, subject: {pods: {namespaceSelector: {}}}}"),
        [
            "spec.priority: required (0..=1000)",
            "spec.subject.pods.podSelector: required ({} selects every pod)",
        ]
    );
}

#[test]
fn selector_errors_reuse_the_label_rules() {
    let e = errors(
        "{tier: Admin, priority: 1, subject: {namespaces: {matchExpressions: [{key: a, operator: In}, {key: b, operator: Exists, values: [x]}, {key: c, operator: Has}]}}}",
    );
    assert_eq!(
        e,
        [
            "spec.subject.namespaces.matchExpressions[0].values: operator In requires at least one value",
            "spec.subject.namespaces.matchExpressions[1].values: operator Exists takes no values",
            "spec.subject.namespaces.matchExpressions[2].operator: unknown operator \"Has\" (expected In, NotIn, Exists or DoesNotExist)",
        ]
    );
    let e = errors(&ingress(
        "{action: Accept, from: [{pods: {podSelector: {matchLabels: {\"a b\": x}}}}]}",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "spec.ingress[0].from[0].pods.podSelector.matchLabels[\"a b\"]: invalid label key"
        ),
        "{e:?}"
    );
}

#[test]
fn each_peer_form() {
    let p = ok(&ingress(
        "{name: from-web, action: Accept, from: [{namespaces: {matchLabels: {team: web}}}, {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: probe}}}}]}",
    ));
    let [r] = &p.ingress[..] else {
        panic!("one rule")
    };
    assert_eq!(r.name.as_deref(), Some("from-web"));
    assert_eq!(r.action, ClusterAction::Allow);
    assert_eq!(
        r.peers,
        [
            Peer::Pods(PodSet {
                namespaces: NamespaceSet {
                    selector: Some(labels(&[("team", "web")])),
                    ..NamespaceSet::default()
                },
                pods: None,
            }),
            Peer::Pods(PodSet {
                namespaces: every_namespace(),
                pods: Some(labels(&[("app", "probe")])),
            }),
        ]
    );
    // Without `protocols`: every protocol and port.
    assert_eq!(r.ports, StdPorts::default());
    // Networks: each CIDR is a peer; one with host bits set stands for its network (the API's
    // isCIDR accepts it).
    let p = ok(&egress(
        r#"{action: Deny, to: [{networks: ["10.0.0.0/8", "fd00::/8", "192.168.1.7/24"]}, {namespaces: {}}]}"#,
    ));
    let [r] = &p.egress[..] else {
        panic!("one rule")
    };
    assert_eq!((r.name.as_deref(), r.action), (None, ClusterAction::Deny));
    assert_eq!(
        r.peers,
        [
            network("10.0.0.0/8"),
            network("fd00::/8"),
            network("192.168.1.0/24"),
            Peer::Pods(PodSet {
                namespaces: every_namespace(),
                pods: None,
            }),
        ]
    );
    let p = ok(&egress("{action: Pass, to: [{namespaces: {}}]}"));
    assert_eq!(p.egress[0].action, ClusterAction::Pass);
}

#[test]
fn peer_and_rule_errors() {
    assert_eq!(
        errors(&egress(
            r#"{action: Accept, to: [{networks: ["10.0.0.0/8"]}, {networks: ["10.0.0.0/8", "10.0.0.0/33", "nonsense"]}, {networks: []}, {namespaces: {}, networks: ["10.0.0.0/8"]}]}"#,
        )),
        [
            "spec.egress[0].to[1].networks[1]: invalid CIDR \"10.0.0.0/33\"",
            "spec.egress[0].to[1].networks[2]: invalid CIDR \"nonsense\"",
            "spec.egress[0].to[2].networks: must list at least 1 item",
            "spec.egress[0].to[3]: exactly one of namespaces, pods and networks may be set",
        ]
    );
    assert_eq!(
        errors(&ingress(
            "{action: Allow, from: [{namespaces: {}, pods: {podSelector: {}}}]}"
        )),
        [
            "spec.ingress[0].action: unknown action \"Allow\" (expected Accept, Deny or Pass)",
            "spec.ingress[0].from[0]: exactly one of namespaces and pods may be set",
        ]
    );
    assert_eq!(
        errors(&ingress("{from: []}")),
        [
            "spec.ingress[0].action: required (Accept, Deny or Pass)",
            "spec.ingress[0].from: must list at least 1 item",
        ]
    );
    let long = "x".repeat(101);
    assert_eq!(
        errors(&egress(&format!("{{name: {long}, action: Deny}}"))),
        [
            "spec.egress[0].name: 101 characters, more than the 100 allowed",
            "spec.egress[0].to: must list at least 1 item",
        ]
    );
}

#[test]
fn at_most_25_rules_peers_networks_and_protocols() {
    let rules = vec!["{action: Deny, to: [{namespaces: {}}]}"; 26].join(", ");
    assert_eq!(
        errors(&format!(
            "{{tier: Admin, priority: 1, {SUBJECT}, egress: [{rules}]}}"
        )),
        ["spec.egress: 26 items, more than the 25 allowed"]
    );
    let peers = vec!["{namespaces: {}}"; 26].join(", ");
    assert_eq!(
        errors(&ingress(&format!("{{action: Deny, from: [{peers}]}}"))),
        ["spec.ingress[0].from: 26 items, more than the 25 allowed"]
    );
    let nets = (0..26)
        .map(|i| format!("\"10.{i}.0.0/16\""))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        errors(&egress(&format!(
            "{{action: Deny, to: [{{networks: [{nets}]}}]}}"
        ))),
        ["spec.egress[0].to[0].networks: 26 items, more than the 25 allowed"]
    );
    let protos = vec!["{tcp: {destinationPort: {number: 80}}}"; 26].join(", ");
    assert_eq!(
        errors(&ingress(&format!(
            "{{action: Deny, from: [{{namespaces: {{}}}}], protocols: [{protos}]}}"
        ))),
        ["spec.ingress[0].protocols: 26 items, more than the 25 allowed"]
    );
}

#[test]
fn each_protocol_form() {
    let p = ok(&ingress(
        "{action: Accept, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 443}}}, {udp: {destinationPort: {range: {start: 5000, end: 5010}}}}, {sctp: {destinationPort: {number: 9}}}, {destinationNamedPort: metrics}]}",
    ));
    let tcp = IpProto::Tcp as u8;
    let (udp, sctp) = (IpProto::Udp as u8, IpProto::Sctp as u8);
    assert_eq!(
        p.ingress[0].ports,
        StdPorts {
            ports: Ports(Some(vec![
                PortRange {
                    proto: tcp,
                    lo: 443,
                    hi: 443
                },
                PortRange {
                    proto: udp,
                    lo: 5000,
                    hi: 5010
                },
                PortRange {
                    proto: sctp,
                    lo: 9,
                    hi: 9
                },
            ])),
            // The API names no protocol for a named port: any container port of that name.
            named: [tcp, udp, sctp]
                .map(|proto| NamedPort {
                    proto,
                    name: "metrics".to_owned()
                })
                .to_vec(),
        }
    );
}

#[test]
fn protocol_errors() {
    assert_eq!(
        errors(&ingress(
            "{action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 0}}}, {udp: {destinationPort: {range: {start: 90, end: 80}}}}, {sctp: {destinationPort: {range: {start: 80, end: 80}}}}, {tcp: {}}, {tcp: {destinationPort: {number: 1, range: {start: 1, end: 2}}}}, {tcp: {destinationPort: {}}}, {tcp: {destinationPort: {number: 80}}, udp: {destinationPort: {number: 80}}}, {}, {destinationNamedPort: \"\"}, {udp: {destinationPort: {range: {start: 70000}}}}]}",
        )),
        [
            "spec.ingress[0].protocols[0].tcp.destinationPort.number: port 0 out of range 1..=65535",
            "spec.ingress[0].protocols[1].udp.destinationPort.range.end: start 90 must be less than end 80",
            "spec.ingress[0].protocols[2].sctp.destinationPort.range.end: start 80 must be less than end 80",
            "spec.ingress[0].protocols[3].tcp.destinationPort: required",
            "spec.ingress[0].protocols[4].tcp.destinationPort: exactly one of number and range must be set",
            "spec.ingress[0].protocols[5].tcp.destinationPort: exactly one of number and range must be set",
            "spec.ingress[0].protocols[6]: exactly one of tcp, udp, sctp and destinationNamedPort must be set",
            "spec.ingress[0].protocols[7]: exactly one of tcp, udp, sctp and destinationNamedPort must be set",
            "spec.ingress[0].protocols[8].destinationNamedPort: must not be empty",
            "spec.ingress[0].protocols[9].udp.destinationPort.range.start: start 70000 out of range 1..=65535",
            "spec.ingress[0].protocols[9].udp.destinationPort.range.end: required",
        ]
    );
    assert_eq!(
        errors(&ingress(
            "{action: Deny, from: [{namespaces: {}}], protocols: []}"
        )),
        ["spec.ingress[0].protocols: must list at least 1 item"]
    );
}

/// The API's fail-closed case: a peer with no field this agent knows (a newer CRD's, or the
/// experimental `nodes` and `domainNames`) matches nothing in an Accept rule and makes a Deny
/// or Pass rule deny every peer. Unknown fields elsewhere are tolerated.
#[test]
fn a_peer_with_no_known_field_fails_closed() {
    let p = ok(&egress(
        "{action: Accept, to: [{domainNames: [example.com]}, {namespaces: {}}], futureField: 1}",
    ));
    assert_eq!(p.egress[0].action, ClusterAction::Allow);
    assert_eq!(
        p.egress[0].peers,
        [Peer::Pods(PodSet {
            namespaces: every_namespace(),
            pods: None,
        })]
    );
    let p = ok(&egress(
        "{action: Deny, to: [{nodes: {}}], protocols: [{tcp: {destinationPort: {number: 22}}}]}",
    ));
    assert_eq!(
        (p.egress[0].action, &p.egress[0].peers[..]),
        (ClusterAction::Deny, &[Peer::Any][..])
    );
    assert!(p.egress[0].ports.ports.contains(IpProto::Tcp as u8, 22));
    let p = ok(&ingress("{action: Pass, from: [{namespaces: {}}, {}]}"));
    assert_eq!(
        (p.ingress[0].action, &p.ingress[0].peers[..]),
        (ClusterAction::Deny, &[Peer::Any][..])
    );
    // An ingress peer has no `networks`: it is an unknown field there.
    let p = ok(&ingress(
        r#"{action: Accept, from: [{networks: ["10.0.0.0/8"]}]}"#,
    ));
    assert!(p.ingress[0].peers.is_empty());
}

fn refused_alone(model: &ClusterModel) -> (crate::model::Rejection, TieredPolicy) {
    let input = policy_input(model);
    assert!(input.tiered.is_empty(), "{:?}", input.tiered);
    assert!(
        input.cluster.is_empty() && input.namespaces.is_empty() && input.pod_policies.is_empty()
    );
    let [r] = &input.refused[..] else {
        panic!("one refusal: {:?}", input.refused)
    };
    let StandIn::Tiered(t) = &r.stand_in else {
        panic!("a tiered stand-in")
    };
    (r.rejection.clone(), t.clone())
}

/// Every rule denies every peer on every port.
fn all_deny_all(rules: &[PeerRule]) -> bool {
    rules.iter().all(|r| {
        (r.action, &r.peers[..], &r.ports)
            == (ClusterAction::Deny, &[Peer::Any], &StdPorts::default())
    })
}

#[test]
fn an_invalid_policy_stands_in_with_its_restrictions() {
    let mut model = ClusterModel::default();
    add_policy_object(
        &mut model,
        PolicyKind::ClusterNetworkPolicy,
        value(
            r#"{tier: Baseline, priority: 7, subject: {pods: {podSelector: {matchLabels: {app: db}}}}, egress: [
              {name: ok-deny, action: Deny, to: [{networks: ["10.0.0.0/8"]}], protocols: [{tcp: {destinationPort: {number: 25}}}]},
              {name: open, action: Accept, to: [{namespaces: {}}]},
              {action: Deny, to: [{networks: ["bad"]}, {namespaces: {matchLabels: {a: b}}}], protocols: [{udp: {destinationPort: {number: 0}}}]},
              {action: Pass, to: [{networks: ["nonsense"]}]}]}"#,
        ),
    );
    let (r, t) = refused_alone(&model);
    assert_eq!(
        (r.kind.as_str(), r.reason.as_str()),
        ("ClusterNetworkPolicy", "InvalidSpec")
    );
    assert_eq!(
        r.message,
        "spec.egress[2].to[0].networks[0]: invalid CIDR \"bad\"; spec.egress[2].protocols[0].udp.destinationPort.number: port 0 out of range 1..=65535; spec.egress[3].to[0].networks[0]: invalid CIDR \"nonsense\""
    );
    assert_eq!((t.tier, t.priority), (Tier::Baseline, 7));
    assert_eq!(t.subject.pods, Some(labels(&[("app", "db")])));
    let [deny, open, widened, pass] = &t.egress[..] else {
        panic!("four rules keep their places: {:?}", t.egress)
    };
    // A valid Deny stands as written.
    assert_eq!(deny.name.as_deref(), Some("ok-deny"));
    assert_eq!(deny.peers, [network("10.0.0.0/8")]);
    assert!(
        deny.ports.ports.contains(IpProto::Tcp as u8, 25)
            && !deny.ports.ports.contains(IpProto::Tcp as u8, 26)
    );
    // An Accept opens nothing.
    assert_eq!((open.action, open.peers.len()), (ClusterAction::Allow, 0));
    // The unreadable peer widens to every peer, the unreadable protocols to every port.
    assert_eq!(widened.action, ClusterAction::Deny);
    assert!(widened.peers.contains(&Peer::Any));
    assert_eq!(widened.ports, StdPorts::default());
    // A Pass with an unreadable part denies.
    assert_eq!(
        (pass.action, &pass.peers[..]),
        (ClusterAction::Deny, &[Peer::Any][..])
    );
}

#[test]
fn an_undeserializable_policy_stands_in_from_what_reads() {
    let mut model = ClusterModel::default();
    // `priority` a string and a port number a string: the object does not deserialize.
    add_policy_object(
        &mut model,
        PolicyKind::ClusterNetworkPolicy,
        value(
            r#"{tier: Admin, priority: high, subject: {namespaces: {matchLabels: {team: a}}}, ingress: [
              {action: Accept, from: [{namespaces: {}}]},
              {action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: "80"}}}]}]}"#,
        ),
    );
    // A NetworkPolicy rejection is not this front end's.
    model.rejected.push(crate::model::Rejection {
        kind: "NetworkPolicy".to_owned(),
        name: "other".to_owned(),
        ..Default::default()
    });
    let (r, t) = refused_alone(&model);
    // The first field that fails, in key order.
    assert!(
        r.message
            .starts_with("spec.ingress[1].protocols[0].tcp.destinationPort.number: invalid type"),
        "{}",
        r.message
    );
    assert!(r.spec.is_some());
    // Unreadable priority: first.
    assert_eq!((t.tier, t.priority), (Tier::Admin, 0));
    assert_eq!(
        t.subject.namespaces.selector,
        Some(labels(&[("team", "a")]))
    );
    assert!(t.ingress[0].peers.is_empty());
    assert_eq!(
        (t.ingress[1].action, t.ingress[1].ports.clone()),
        (ClusterAction::Deny, StdPorts::default())
    );
    assert!(t.egress.is_empty());
    // Nothing readable: every pod, both directions denied, Admin tier first.
    let t = stand_in(origin("x".to_owned()), &Value::Null);
    assert_eq!((t.tier, t.priority), (Tier::Admin, 0));
    assert_eq!(t.subject.namespaces, every_namespace());
    assert!(t.ingress.len() == 1 && t.egress.len() == 1);
    assert!(all_deny_all(&t.ingress) && all_deny_all(&t.egress));
    // Unreadable rule lists deny everything; an unreadable tier is Admin, subject every pod.
    let t = stand_in(
        origin("x".to_owned()),
        &serde_json::json!({"tier": 3, "subject": {"pods": 1}, "ingress": "all"}),
    );
    assert_eq!(t.tier, Tier::Admin);
    assert_eq!(t.subject.namespaces, every_namespace());
    assert!(t.ingress.len() == 1 && all_deny_all(&t.ingress) && t.egress.is_empty());
}

#[test]
fn the_model_and_file_source_read_it() {
    let text = "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: a, resourceVersion: \"9\"}\nspec: {tier: Admin, priority: 1, subject: {namespaces: {}}}\nstatus: {conditions: []}\n";
    let model = crate::source::file::parse_objects(text).expect("parses");
    let [o] = &model.cluster_network_policies[..] else {
        panic!("one object")
    };
    assert_eq!(o.metadata.name.as_deref(), Some("a"));
    // Server-set metadata is dropped, so an unchanged object compares equal.
    assert_eq!(o.metadata.resource_version, None);
    let input = policy_input(&model);
    assert_eq!(input.tiered.len(), 1);
    assert!(input.refused.is_empty());
}
