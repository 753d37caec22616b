//! The file source's format: a YAML stream and/or `kind: List` documents of the objects the API
//! would serve, parsed into a [`ClusterModel`] (the objects convert through
//! [`crate::model::convert`], as the kube source's do).
//!
//! A broken document or core object fails the whole parse (the caller keeps its last good
//! policy); a policy object that does not deserialize is only a
//! [`Rejection`](crate::model::Rejection).
use serde::{Deserialize as _, de::DeserializeOwned};
use serde_json::Value;
use tracing::warn;

use crate::model::{
    ClusterModel,
    convert::{self, PolicyKind, meta_str},
};

/// Why a source text could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// 1-based document index in the stream.
    pub document: usize,
    /// 0-based index in a `List`'s `items`.
    pub item: Option<usize>,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "document {}", self.document)?;
        match self.item {
            Some(i) => write!(f, " item {i}"),
            None => Ok(()),
        }
    }
}

/// Every object of a YAML stream with its position, `List`s (`kind: List` or a typed list such
/// as `PodList`) expanded into their items.
pub fn documents(text: &str) -> Result<Vec<(Position, Value)>, ObjectsError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value =
            Value::deserialize(doc).map_err(|source| ObjectsError::Yaml { document, source })?;
        let is_list = value["kind"].as_str().is_some_and(|k| k.ends_with("List"))
            && value["items"].is_array();
        match value {
            Value::Null => {}
            Value::Object(mut map) if is_list => {
                let items = map.remove("items").unwrap_or_default();
                for (j, item) in items.as_array().into_iter().flatten().enumerate() {
                    let pos = Position {
                        document,
                        item: Some(j),
                    };
                    out.push((pos, item.clone()));
                }
            }
            value => out.push((
                Position {
                    document,
                    item: None,
                },
                value,
            )),
        }
    }
    Ok(out)
}

/// Parses a YAML stream of Kubernetes objects (and `List`s of them) into a model.
pub fn parse_objects(text: &str) -> Result<ClusterModel, ObjectsError> {
    let mut model = ClusterModel::default();
    for (pos, value) in documents(text)? {
        add_object(&mut model, value, pos)?;
    }
    Ok(model)
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
            let ns = convert::namespace(typed(value, &kind, pos)?);
            model.namespaces.insert(ns.name.clone(), ns);
        }
        "Pod" => model.pods.push(convert::pod(typed(value, &kind, pos)?)),
        "Service" => model
            .services
            .push(convert::service(typed(value, &kind, pos)?)),
        "Node" => model.nodes.push(convert::node(typed(value, &kind, pos)?)),
        "NamespaceFirewall" => {
            convert::add_policy_object(model, PolicyKind::NamespaceFirewall, value);
        }
        "ClusterFirewall" => convert::add_policy_object(model, PolicyKind::ClusterFirewall, value),
        "NetworkPolicy" => convert::add_policy_object(model, PolicyKind::NetworkPolicy, value),
        "ClusterNetworkPolicy" => {
            convert::add_policy_object(model, PolicyKind::ClusterNetworkPolicy, value);
        }
        other => {
            warn!(document = pos.document, item = ?pos.item, kind = other, "skipping object of unknown kind");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

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
