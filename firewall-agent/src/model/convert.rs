//! Kubernetes objects -> the model, for every source: the file source deserializes them from YAML,
//! the kube source takes them from its reflector stores; both convert here, so a Pod means the
//! same to the compiler whichever way it arrived.
//!
//! A policy object that does not deserialize becomes a [`Rejection`] (one team's typo never
//! disables everybody else's policy); its `status` and server-set metadata are dropped, so the
//! model compares equal across status-only updates.
use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::{
    api::{core::v1 as core, networking::v1::NetworkPolicy},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde_json::Value;
use tracing::warn;

use super::{ClusterModel, Namespace, Node, Pod, Rejection, Service};
use crate::{
    cnp::ClusterNetworkPolicy,
    crd::{ClusterFirewall, NamespaceFirewall},
};

/// The policy kinds the model holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    NamespaceFirewall,
    ClusterFirewall,
    NetworkPolicy,
    ClusterNetworkPolicy,
}

impl PolicyKind {
    /// Every policy kind.
    pub const ALL: [Self; 4] = [
        Self::NamespaceFirewall,
        Self::ClusterFirewall,
        Self::NetworkPolicy,
        Self::ClusterNetworkPolicy,
    ];

    /// The object's `kind`.
    pub fn name(self) -> &'static str {
        match self {
            Self::NamespaceFirewall => "NamespaceFirewall",
            Self::ClusterFirewall => "ClusterFirewall",
            Self::NetworkPolicy => "NetworkPolicy",
            Self::ClusterNetworkPolicy => crate::cnp::KIND,
        }
    }
}

/// `metadata.<field>` of an untyped object, when it is a string.
pub fn meta_str<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

/// Adds one policy object to the model, or a [`Rejection`] when it does not deserialize.
pub fn add_policy_object(model: &mut ClusterModel, kind: PolicyKind, value: Value) {
    match kind {
        PolicyKind::NamespaceFirewall => {
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
        }
        PolicyKind::ClusterFirewall => {
            match serde_path_to_error::deserialize::<_, ClusterFirewall>(&value) {
                Ok(mut o) => {
                    o.metadata = policy_meta(o.metadata);
                    o.status = None;
                    model.cluster_firewalls.push(o);
                }
                Err(e) => model.rejected.push(rejection(kind, &value, &e)),
            }
        }
        PolicyKind::NetworkPolicy => {
            match serde_path_to_error::deserialize::<_, NetworkPolicy>(&value) {
                Ok(mut o) => {
                    o.metadata
                        .namespace
                        .get_or_insert_with(|| "default".to_owned());
                    o.metadata = policy_meta(o.metadata);

                    model.network_policies.push(o);
                }
                Err(e) => model.rejected.push(rejection(kind, &value, &e)),
            }
        }
        PolicyKind::ClusterNetworkPolicy => {
            // Its status is not read (the type has none), so status updates compare equal.
            match serde_path_to_error::deserialize::<_, ClusterNetworkPolicy>(&value) {
                Ok(mut o) => {
                    o.metadata = policy_meta(o.metadata);
                    model.cluster_network_policies.push(o);
                }
                Err(e) => model.rejected.push(rejection(kind, &value, &e)),
            }
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
    kind: PolicyKind,
    value: &Value,
    e: &serde_path_to_error::Error<serde_json::Error>,
) -> Rejection {
    Rejection {
        kind: kind.name().to_owned(),
        namespace: meta_str(value, "namespace").map(str::to_owned),
        name: meta_str(value, "name").unwrap_or_default().to_owned(),
        reason: "InvalidSpec".to_owned(),
        message: format!("{}: {}", e.path(), e.inner()),
        spec: Some(value.get("spec").cloned().unwrap_or(Value::Null)),
        ..Rejection::default()
    }
}

/// Distinct addresses; the empty string and `None` (a headless Service) are no address, and an
/// unparseable one is logged against `owner` and skipped.
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

/// The label the API server puts on every Namespace (immutable, its name): standard policies
/// select single namespaces by it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// With [`NAMESPACE_NAME_LABEL`] set as the API server sets it, whatever the source.
pub fn namespace(ns: core::Namespace) -> Namespace {
    let name = ns.metadata.name.unwrap_or_default();
    let mut labels = ns.metadata.labels.unwrap_or_default();
    labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
    Namespace { name, labels }
}

/// Named container ports; a port without a name, or with an unknown protocol, names nothing.
fn named_ports(spec: &core::PodSpec) -> BTreeMap<String, (u8, u16)> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let name = p.name.clone().filter(|n| !n.is_empty())?;
            let proto =
                firewall_common::IpProto::from_name(p.protocol.as_deref().unwrap_or("TCP"))?;
            let port = u16::try_from(p.container_port).ok().filter(|p| *p > 0)?;
            Some((name, (proto as u8, port)))
        })
        .collect()
}

/// `status.podIPs`, or `status.podIP` when that list is empty.
pub fn pod(p: core::Pod) -> Pod {
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
    let named_ports = named_ports(&spec);
    Pod {
        terminal: matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")),
        uid: p.metadata.uid.unwrap_or_default(),
        node_name: spec.node_name,
        host_network: spec.host_network.unwrap_or(false),
        named_ports,
        labels: p.metadata.labels.unwrap_or_default(),
        ips,
        namespace,
        name,
        cgroup_ids: Vec::new(),
    }
}

/// `spec.clusterIPs`, or `spec.clusterIP` when the list is empty.
pub fn service(s: core::Service) -> Service {
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

/// Only InternalIP and ExternalIP addresses (a Hostname is no address).
pub fn node(n: core::Node) -> Node {
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
