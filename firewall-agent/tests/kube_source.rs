//! The `kube` source against the API server emulator through the real kube client: which policy
//! kinds it watches follows `--policy-apis`, and an object of the standard APIs that does not
//! deserialize is rejected by itself. No root needed (no datapath: the source's model is
//! checked, as the agent would compile it).
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
use std::{path::PathBuf, time::Duration};

use bulkhead_tests::ApiServer;
use firewall_agent::{
    model::ClusterModel,
    policy::PolicyApis,
    source::kube::{KubeConfig, KubeSource, client},
};
use serde_json::{Value, json};

fn objects() -> Vec<Value> {
    let cnp = |name: &str, priority: Value| {
        json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name},
            "spec": {"tier": "Admin", "priority": priority, "subject": {"namespaces": {}},
                     "egress": [{"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}]}]},
        })
    };
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}),
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-in", "namespace": "web"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }),
        cnp("guard", json!(10)),
        // Does not deserialize: rejected alone, the valid one still read.
        cnp("broken", json!("first")),
        json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": "NamespaceFirewall",
            "metadata": {"name": "default", "namespace": "web"}, "spec": {"ingress": []},
        }),
    ]
}

fn kubeconfig(server: &ApiServer, what: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "bulkhead-kube-source-{what}-{}.yaml",
        std::process::id()
    ));
    server.write_kubeconfig(&path).expect("kubeconfig");
    path
}

/// The kube source over `server`, reading `apis`.
async fn source(server: &ApiServer, what: &str, apis: &str) -> KubeSource {
    let path = kubeconfig(server, what);
    let c = client(Some(&path)).await.expect("client");
    let _ = std::fs::remove_file(&path);
    let cfg = KubeConfig {
        kubeconfig: None,
        lease_namespace: "bulkhead-system".to_owned(),
        lease_name: "bulkhead-status".to_owned(),
    };
    let apis: PolicyApis = apis.parse().expect("policy APIs");
    KubeSource::start(c, &cfg, apis, "node-1")
}

/// The first model the source yields with `apis` (after every watched kind is listed).
async fn first_model(server: &ApiServer, what: &str, apis: &str) -> ClusterModel {
    let mut source = source(server, what, apis).await;
    tokio::time::timeout(Duration::from_secs(20), source.next_model())
        .await
        .expect("a model within 20 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_apis_are_watched_when_named() {
    let server = ApiServer::start().expect("API server emulator");
    server.apply_all(objects()).expect("seeding");
    let m = first_model(&server, "std", "networkpolicy,clusternetworkpolicy").await;
    let names = |metas: Vec<Option<String>>| metas.into_iter().flatten().collect::<Vec<_>>();
    let np = m.network_policies.iter().map(|p| p.metadata.name.clone());
    assert_eq!(names(np.collect()), ["deny-in"]);
    let cnp = m.cluster_network_policies.iter();
    assert_eq!(
        names(cnp.map(|p| p.metadata.name.clone()).collect()),
        ["guard"]
    );
    let rejected: Vec<_> = m
        .rejected
        .iter()
        .map(|r| (r.kind.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(rejected, [("ClusterNetworkPolicy", "broken")]);
    assert!(
        m.rejected[0].message.starts_with("spec.priority"),
        "{}",
        m.rejected[0].message
    );
    // `bulkhead` is not named: its kinds are not watched.
    assert!(m.namespace_firewalls.is_empty() && m.cluster_firewalls.is_empty());
    let watched = |plural: &str| {
        server
            .requests()
            .iter()
            .any(|r| r.path.ends_with(plural) && r.method == "GET")
    };
    assert!(watched("/networkpolicies") && watched("/clusternetworkpolicies"));
    assert!(!watched("/namespacefirewalls") && !watched("/clusterfirewalls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_only_bulkheads_own_kinds_are_watched() {
    let server = ApiServer::start().expect("API server emulator");
    server.apply_all(objects()).expect("seeding");
    let m = first_model(&server, "default", &PolicyApis::default().to_string()).await;
    assert_eq!(m.namespace_firewalls.len(), 1);
    assert!(m.network_policies.is_empty() && m.cluster_network_policies.is_empty());
    assert!(m.rejected.is_empty(), "{:?}", m.rejected);
    assert!(
        !server
            .requests()
            .iter()
            .any(|r| r.path.contains("networkpolicies")),
        "{:?}",
        server.requests()
    );
}

/// Without the ClusterNetworkPolicy CRD no model is yielded (the agent applies nothing and stays
/// unready rather than enforce as if there were no such policies); once installed, it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_crd_holds_the_sync_gate_until_installed() {
    let server = ApiServer::start().expect("API server emulator");
    server.apply_all(objects()).expect("seeding");
    let group = "policy.networking.k8s.io";
    server
        .set_installed(group, "clusternetworkpolicies", false)
        .expect("uninstall");
    let mut source = source(&server, "crd", "bulkhead,clusternetworkpolicy").await;
    let early = tokio::time::timeout(Duration::from_secs(3), source.next_model()).await;
    assert!(early.is_err(), "no model while a named kind is not served");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/clusternetworkpolicies") && r.status == 404)
    );
    server
        .set_installed(group, "clusternetworkpolicies", true)
        .expect("install");
    let m = tokio::time::timeout(Duration::from_secs(30), source.next_model())
        .await
        .expect("a model once the CRD is installed");
    assert_eq!(m.cluster_network_policies.len(), 1);
    assert_eq!(m.namespace_firewalls.len(), 1);
}
