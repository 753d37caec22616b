//! Parses a file source (DESIGN §7): a YAML stream and/or `kind: List` documents of the objects
//! the API would serve, into a [`ClusterModel`].
//!
//! A broken document or core object fails the whole parse (the caller keeps its last good
//! policy); a policy object that does not deserialize is only a [`Rejection`], so one team's
//! typo never disables everybody else's policy.
use std::net::IpAddr;

use k8s_openapi::{api::core::v1 as core, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use serde::{Deserialize as _, de::DeserializeOwned};
use serde_json::Value;
use tracing::warn;

use crate::{
    crd::{ClusterFirewall, NamespaceFirewall},
    model::{ClusterModel, Namespace, Node, Pod, Rejection, Service},
};

/// Why a source text could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// Not YAML.
    #[error("document {document}: {source}")]
    Yaml {
        /// 1-based document index in the stream.
        document: usize,
        /// Parser error (with line and column).
        #[source]
        source: serde_yaml::Error,
    },
    /// A core object (Namespace, Pod, Service, Node) that does not deserialize.
    #[error("document {document}{}: {kind} {name:?}: {path}: {message}", item.map(|i| format!(" item {i}")).unwrap_or_default())]
    Object {
        /// 1-based document index in the stream.
        document: usize,
        /// 0-based index in a List's `items`.
        item: Option<usize>,
        /// Object kind.
        kind: String,
        /// `metadata.name` (empty when absent).
        name: String,
        /// Path of the offending field.
        path: String,
        /// Deserializer message.
        message: String,
    },
}

/// Where an object sits in the source, for error messages.
#[derive(Clone, Copy)]
struct Position {
    document: usize,
    item: Option<usize>,
}

/// Parses a YAML stream of Kubernetes objects (and `List`s of them) into a model.
pub fn parse_objects(text: &str) -> Result<ClusterModel, ObjectsError> {
    let mut model = ClusterModel::default();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value =
            Value::deserialize(doc).map_err(|source| ObjectsError::Yaml { document, source })?;
        match &value {
            Value::Null => {}
            Value::Object(map) if is_list(map) => {
                let items = map
                    .get("items")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for (j, item) in items.iter().enumerate() {
                    add_object(
                        &mut model,
                        item.clone(),
                        Position {
                            document,
                            item: Some(j),
                        },
                    )?;
                }
            }
            _ => add_object(
                &mut model,
                value,
                Position {
                    document,
                    item: None,
                },
            )?,
        }
    }
    Ok(model)
}

fn is_list(map: &serde_json::Map<String, Value>) -> bool {
    map.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && map.get("items").is_some_and(Value::is_array)
}

fn meta_str<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

fn typed<T: DeserializeOwned>(value: Value, kind: &str, pos: Position) -> Result<T, ObjectsError> {
    let name = meta_str(&value, "name").unwrap_or_default().to_owned();
    serde_path_to_error::deserialize(value).map_err(|e| ObjectsError::Object {
        document: pos.document,
        item: pos.item,
        kind: kind.to_owned(),
        name,
        path: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

fn add_object(model: &mut ClusterModel, value: Value, pos: Position) -> Result<(), ObjectsError> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match kind.as_str() {
        "Namespace" => {
            let ns = namespace(typed(value, &kind, pos)?);
            model.namespaces.insert(ns.name.clone(), ns);
        }
        "Pod" => model.pods.push(pod(typed(value, &kind, pos)?)),
        "Service" => model.services.push(service(typed(value, &kind, pos)?)),
        "Node" => model.nodes.push(node(typed(value, &kind, pos)?)),
        "NamespaceFirewall" | "ClusterFirewall" => add_policy_object(model, &kind, value),
        other => {
            warn!(document = pos.document, item = ?pos.item, kind = other, "skipping object of unknown kind");
        }
    }
    Ok(())
}

/// Adds one policy object (`NamespaceFirewall` or `ClusterFirewall`) to the model, or a
/// [`Rejection`] when it does not deserialize. Its `status` and server-set metadata are dropped:
/// they never change the policy, and the model compares equal across status-only updates.
pub(crate) fn add_policy_object(model: &mut ClusterModel, kind: &str, value: Value) {
    if kind == "NamespaceFirewall" {
        match serde_path_to_error::deserialize::<_, NamespaceFirewall>(&value) {
            Ok(mut o) => {
                // As kubectl does, an object without a namespace lands in `default`.
                o.metadata
                    .namespace
                    .get_or_insert_with(|| "default".to_owned());
                o.metadata = policy_meta(o.metadata);
                o.status = None;
                model.namespace_firewalls.push(o);
            }
            Err(e) => model.rejected.push(rejection(kind, &value, &e)),
        }
    } else {
        match serde_path_to_error::deserialize::<_, ClusterFirewall>(&value) {
            Ok(mut o) => {
                o.metadata = policy_meta(o.metadata);
                o.status = None;
                model.cluster_firewalls.push(o);
            }
            Err(e) => model.rejected.push(rejection(kind, &value, &e)),
        }
    }
}

/// The identifying part of a policy object's metadata.
fn policy_meta(m: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        labels: m.labels,
        ..ObjectMeta::default()
    }
}

fn rejection(
    kind: &str,
    value: &Value,
    e: &serde_path_to_error::Error<serde_json::Error>,
) -> Rejection {
    Rejection {
        kind: kind.to_owned(),
        namespace: meta_str(value, "namespace").map(str::to_owned),
        name: meta_str(value, "name").unwrap_or_default().to_owned(),
        reason: "InvalidSpec".to_owned(),
        message: format!("{}: {}", e.path(), e.inner()),
    }
}

fn parse_ips<'a>(what: &str, owner: &str, ips: impl Iterator<Item = &'a str>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for s in ips.filter(|s| !s.is_empty() && *s != "None") {
        match s.parse() {
            Ok(ip) if !out.contains(&ip) => out.push(ip),
            Ok(_) => {}
            Err(_) => warn!(object = owner, address = s, "ignoring unparseable {what}"),
        }
    }
    out
}

/// The model's view of a Namespace.
pub(crate) fn namespace(ns: core::Namespace) -> Namespace {
    Namespace {
        name: ns.metadata.name.unwrap_or_default(),
        labels: ns.metadata.labels.unwrap_or_default(),
    }
}

/// The model's view of a Pod.
pub(crate) fn pod(p: core::Pod) -> Pod {
    let namespace = p.metadata.namespace.unwrap_or_else(|| "default".to_owned());
    let name = p.metadata.name.unwrap_or_default();
    let spec = p.spec.unwrap_or_default();
    let status = p.status.unwrap_or_default();
    let owner = format!("Pod/{namespace}/{name}");
    let listed: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|i| i.ip.as_str())
        .collect();
    let ips = if listed.is_empty() {
        parse_ips("pod IP", &owner, status.pod_ip.as_deref().into_iter())
    } else {
        parse_ips("pod IP", &owner, listed.into_iter())
    };
    Pod {
        terminal: matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")),
        uid: p.metadata.uid.unwrap_or_default(),
        node_name: spec.node_name,
        host_network: spec.host_network.unwrap_or(false),
        labels: p.metadata.labels.unwrap_or_default(),
        ips,
        namespace,
        name,
        cgroup_ids: Vec::new(),
    }
}

/// The model's view of a Service.
pub(crate) fn service(s: core::Service) -> Service {
    let namespace = s.metadata.namespace.unwrap_or_else(|| "default".to_owned());
    let name = s.metadata.name.unwrap_or_default();
    let spec = s.spec.unwrap_or_default();
    let owner = format!("Service/{namespace}/{name}");
    let cluster_ips = match &spec.cluster_ips {
        Some(list) if !list.is_empty() => {
            parse_ips("cluster IP", &owner, list.iter().map(String::as_str))
        }
        _ => parse_ips("cluster IP", &owner, spec.cluster_ip.as_deref().into_iter()),
    };
    Service {
        selector: spec.selector,
        cluster_ips,
        namespace,
        name,
    }
}

/// The model's view of a Node.
pub(crate) fn node(n: core::Node) -> Node {
    let name = n.metadata.name.unwrap_or_default();
    let owner = format!("Node/{name}");
    let addresses = n.status.and_then(|s| s.addresses).unwrap_or_default();
    let ips = addresses
        .iter()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .map(|a| a.address.as_str());
    Node {
        addresses: parse_ips("node address", &owner, ips),
        name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_of_objects() {
        let m = parse_objects(
            r#"
apiVersion: v1
kind: Namespace
metadata: {name: web, labels: {tier: web}}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: web, uid: u1, labels: {app: x}}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: web}
spec: {hostNetwork: true, containers: []}
status: {phase: Succeeded, podIP: 10.0.0.2}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: web}
spec: {selector: {app: x}, clusterIP: 10.96.0.1, clusterIPs: [10.96.0.1, "fd01::1"]}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: web}
spec: {clusterIP: None}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 192.168.0.1}, {type: Hostname, address: n1}, {type: ExternalIP, address: 1.2.3.4}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
---
"#,
        )
        .unwrap();
        assert_eq!(m.namespaces["web"].labels["tier"], "web");
        let p = &m.pods[0];
        assert_eq!(
            (
                p.uid.as_str(),
                p.node_name.as_deref(),
                p.terminal,
                p.host_network
            ),
            ("u1", Some("n1"), false, false)
        );
        assert_eq!(
            p.ips,
            vec![
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        assert!(m.pods[1].terminal && m.pods[1].host_network);
        assert_eq!(m.pods[1].ips, vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(m.services[0].cluster_ips.len(), 2);
        assert!(m.services[0].selects(p));
        assert!(m.services[1].cluster_ips.is_empty());
        assert_eq!(
            m.nodes[0].addresses,
            vec![
                "192.168.0.1".parse::<IpAddr>().unwrap(),
                "1.2.3.4".parse().unwrap()
            ]
        );
    }

    #[test]
    fn list_documents() {
        let m = parse_objects(
            r#"
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Namespace, metadata: {name: a}}
  - apiVersion: bulkhead.dev/v1alpha1
    kind: NamespaceFirewall
    metadata: {name: f}
    spec: {ingress: []}
---
apiVersion: v1
kind: PodList
items: [{apiVersion: v1, kind: Pod, metadata: {name: p, namespace: a}}]
"#,
        )
        .unwrap();
        assert_eq!(m.namespaces.len(), 1);
        assert_eq!(m.namespace_firewalls.len(), 1);
        assert_eq!(m.namespace_firewalls[0].spec.ingress, Some(vec![]));
        assert_eq!(
            m.namespace_firewalls[0].metadata.namespace.as_deref(),
            Some("default")
        );
        assert_eq!(m.pods.len(), 1);
    }

    #[test]
    fn bad_yaml_is_fatal() {
        let e = parse_objects("kind: Namespace\n---\nkind: [unclosed\n").unwrap_err();
        assert!(matches!(e, ObjectsError::Yaml { document: 2, .. }), "{e}");
        assert!(e.to_string().starts_with("document 2: "), "{e}");
    }

    #[test]
    fn bad_core_object_is_fatal_and_named() {
        let e = parse_objects(
            "apiVersion: v1\nkind: List\nitems:\n- {kind: Namespace, metadata: {name: ok}}\n- {kind: Pod, metadata: {name: web}, spec: {hostNetwork: maybe}}\n",
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with(
                r#"document 1 item 1: Pod "web": spec.hostNetwork: invalid type: string "maybe""#
            ),
            "{s}"
        );
    }

    #[test]
    fn bad_policy_object_is_rejected_and_the_rest_kept() {
        let m = parse_objects(
            r#"
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: bad, namespace: a}
spec:
  ingress: [{from: {}, ports: [{port: abc}]}]
---
apiVersion: bulkhead.dev/v1alpha1
kind: ClusterFirewall
metadata: {name: good}
spec: {rules: [{action: Deny}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: a}
"#,
        )
        .unwrap();
        assert_eq!(m.cluster_firewalls.len(), 1);
        assert_eq!(m.namespaces.len(), 1);
        assert_eq!(m.rejected.len(), 1);
        let r = &m.rejected[0];
        assert_eq!(
            (
                r.kind.as_str(),
                r.namespace.as_deref(),
                r.name.as_str(),
                r.reason.as_str()
            ),
            ("NamespaceFirewall", Some("a"), "bad", "InvalidSpec")
        );
        assert!(
            r.message
                .starts_with("spec.ingress[0].ports[0].port: invalid type: string \"abc\""),
            "{}",
            r.message
        );
    }
}
