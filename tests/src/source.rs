//! The objects the agent reads (docs/design.md#sources, `--source file:PATH`): what the API server would serve
//! for the scenario, as typed objects would serialize, so the agent's real parser (k8s-openapi
//! types) accepts them unchanged.
use std::{
    fs::{self, File},
    io::Write as _,
    path::Path,
};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{
    scenario::{NamespaceSpec, PodSpec, PortSpec, Scenario, ServiceSpec},
    testbed::{Pod, plan_pods, pod_uid},
};

/// The Kubernetes objects the agent should see: the Node, Namespaces, Pods, Services, then the
/// scenario's `objects`, then `extra`.
pub fn scenario_objects(
    s: &Scenario,
    extra: &[serde_yaml::Value],
) -> anyhow::Result<Vec<serde_yaml::Value>> {
    let pods = plan_pods(s, Path::new(""), Path::new(""));
    let mut objs = vec![node_object(s)];
    objs.extend(s.namespaces.iter().map(namespace_object));
    objs.extend(
        pods.iter()
            .zip(&s.pods)
            .map(|(pod, spec)| pod_object(s, pod, spec)),
    );
    objs.extend(
        s.services
            .iter()
            .enumerate()
            .map(|(j, svc)| service_object(s, j, svc)),
    );
    let mut out: Vec<serde_yaml::Value> = objs
        .into_iter()
        .map(serde_yaml::to_value)
        .collect::<Result<_, _>>()
        .context("converting objects")?;
    out.extend(s.objects.iter().cloned());
    out.extend(extra.iter().cloned());
    Ok(out)
}

/// The objects of a cluster whose nodes are `scenarios` (one testbed each): every scenario's
/// objects as [`scenario_objects`] gives them, an object two scenarios both declare (a Namespace)
/// once, as the first declares it, then `extra`.
pub fn cluster_objects(
    scenarios: &[&Scenario],
    extra: &[serde_yaml::Value],
) -> anyhow::Result<Vec<serde_yaml::Value>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for s in scenarios {
        for o in scenario_objects(s, &[])? {
            let field = |v: &serde_yaml::Value| v.as_str().unwrap_or_default().to_owned();
            let meta = &o["metadata"];
            if seen.insert((
                field(&o["kind"]),
                field(&meta["namespace"]),
                field(&meta["name"]),
            )) {
                out.push(o);
            }
        }
    }
    out.extend(extra.iter().cloned());
    Ok(out)
}

/// Writes `objects` to `path` as the agent's `file:` source (a YAML stream), atomically.
pub fn write_objects(path: &Path, objects: &[serde_yaml::Value]) -> anyhow::Result<()> {
    let mut text = String::new();
    for o in objects {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(o).context("serializing an object")?);
    }
    write_atomic(path, &text)
}

/// Writes `text` to `path` atomically (a temporary file renamed over it), so an agent polling the
/// file never reads half of it.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp-bulkhead");
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all().ok();
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The container runtime prefix of `containerID` (kubelet reports `<runtime>://<id>`).
const CONTAINERD: &str = "containerd://";

fn node_object(s: &Scenario) -> Value {
    let mut node_addrs = vec![json!({"type": "InternalIP", "address": s.node_ipv4().to_string()})];
    if s.ipv6 {
        node_addrs.push(json!({"type": "InternalIP", "address": s.node_ipv6().to_string()}));
    }
    node_addrs.push(json!({"type": "Hostname", "address": s.node_name}));
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": s.node_name, "labels": {"kubernetes.io/hostname": s.node_name}},
        "status": {"addresses": node_addrs},
    })
}

fn namespace_object(ns: &NamespaceSpec) -> Value {
    let mut labels = ns.labels.clone();
    labels.insert("kubernetes.io/metadata.name".into(), ns.name.clone());
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns.name, "labels": labels},
        "status": {"phase": "Active"},
    })
}

fn pod_object(s: &Scenario, pod: &Pod, spec: &PodSpec) -> Value {
    let mut ips = vec![json!({"ip": pod.ipv4.to_string()})];
    ips.extend(pod.ipv6.map(|v6| json!({"ip": v6.to_string()})));
    let ports: Vec<_> = spec
        .serve
        .iter()
        .map(|p| {
            let mut port = json!({"containerPort": p.port, "protocol": p.protocol.as_str()});
            if let Some(name) = spec.port_name(p) {
                port["name"] = json!(name);
            }
            port
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "uid": pod.uid, "labels": spec.labels},
        "spec": {
            "nodeName": s.node_name,
            "hostNetwork": spec.host_network,
            "containers": [{"name": "main", "image": "bulkhead-pod", "ports": ports}],
        },
        "status": {
            "phase": "Running",
            "qosClass": spec.qos.kube_name(),
            "hostIP": s.node_ipv4().to_string(),
            "podIP": pod.ipv4.to_string(),
            "podIPs": ips,
            "containerStatuses": [{"name": "main", "ready": true, "started": true, "restartCount": 0, "image": "bulkhead-pod", "imageID": "bulkhead-pod", "containerID": format!("{CONTAINERD}{}", pod.container_id), "state": {"running": {}}}],
        },
    })
}

fn service_object(s: &Scenario, j: usize, svc: &ServiceSpec) -> Value {
    let ports: Vec<PortSpec> = match &svc.ports {
        Some(p) => p.clone(),
        None => {
            // The ports of the selected pods, as a user would write them.
            let mut set = std::collections::BTreeSet::new();
            for p in s.pods.iter().filter(|p| {
                p.namespace == svc.namespace
                    && !svc.selector.is_empty()
                    && svc.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
            }) {
                set.extend(p.serve.iter().copied());
            }
            set.into_iter().collect()
        }
    };
    let ports: Vec<_> = ports
        .iter()
        .map(|p| {
            json!({"name": format!("{}-{}", p.protocol.as_str().to_lowercase(), p.port),
                   "protocol": p.protocol.as_str(), "port": p.port, "targetPort": p.port})
        })
        .collect();
    let mut ips = vec![s.service_ipv4(j).to_string()];
    let mut families = vec!["IPv4"];
    if let Some(v6) = s.service_ipv6(j) {
        ips.push(v6.to_string());
        families.push("IPv6");
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": svc.name, "namespace": svc.namespace, "uid": pod_uid(&s.name, &svc.namespace, &format!("svc/{}", svc.name))},
        "spec": {
            "type": "ClusterIP",
            "selector": svc.selector,
            "clusterIP": ips[0],
            "clusterIPs": ips,
            "ipFamilies": families,
            "ipFamilyPolicy": if families.len() > 1 { "PreferDualStack" } else { "SingleStack" },
            "ports": ports,
        },
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1 as core;

    use super::*;

    fn typed<T: serde::de::DeserializeOwned>(v: &serde_yaml::Value) -> T {
        serde_yaml::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v:?}"))
    }

    #[test]
    fn objects_deserialize_as_the_agent_reads_them() {
        let text = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/saas.yaml"))
            .expect("saas");
        let s = Scenario::parse(&text).expect("valid");
        let objs = scenario_objects(&s, &[]).expect("objects");
        let kinds: Vec<&str> = objs.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "Pod").count(), 5);
        for o in &objs {
            match o["kind"].as_str() {
                Some("Node") => {
                    let n: core::Node = typed(o);
                    let a = n.status.and_then(|s| s.addresses).unwrap_or_default();
                    assert_eq!(a[0].address, "198.18.7.1");
                    assert_eq!(a[1].address, "fd00:b1:7::1");
                }
                Some("Namespace") => {
                    let _: core::Namespace = typed(o);
                }
                Some("Pod") => {
                    let p: core::Pod = typed(o);
                    let st = p.status.expect("status");
                    assert_eq!(st.phase.as_deref(), Some("Running"));
                    let ips: Vec<String> = st.pod_ips.into_iter().flatten().map(|i| i.ip).collect();
                    assert_eq!(ips.len(), 2);
                    assert!(
                        ips[0].starts_with("198.18.7.") && ips[1].starts_with("fd00:b1:7::"),
                        "{ips:?}"
                    );
                    assert_eq!(p.spec.and_then(|s| s.node_name).as_deref(), Some("node-1"));
                    assert_eq!(p.metadata.uid.map(|u| u.len()), Some(36));
                }
                Some("Service") => {
                    let svc: core::Service = typed(o);
                    let spec = svc.spec.expect("spec");
                    assert_eq!(spec.cluster_ips.map(|v| v.len()), Some(2));
                    assert!(!spec.ports.unwrap_or_default().is_empty());
                }
                other => panic!("unexpected kind {other:?}"),
            }
        }
    }
}
