//! One complete read of the cluster, for commands that answer once (`firewall-agent check`):
//! a paged list of every kind the compiler reads, converted as the watchers' stores are, no watch.
use std::fmt::Debug;

use k8s_openapi::api::core::v1 as core;
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, ListParams},
};
use serde::de::DeserializeOwned;

use super::{
    LIVE_PODS, assemble, cluster_firewall_resource, cluster_network_policy_resource,
    namespace_firewall_resource, network_policy_resource,
};
use crate::model::{ClusterModel, convert::PolicyKind};

/// Items per list page: large lists arrive in pieces rather than one response.
const PAGE: u32 = 500;

/// A list the API server refused or could not serve.
#[derive(Debug, thiserror::Error)]
#[error("listing {kind}: {source}")]
pub struct SnapshotError {
    /// The kind (plural) that failed.
    pub kind: &'static str,
    #[source]
    pub source: kube::Error,
}

/// The cluster as the API server lists it now. Pods that finished are left out, as the agent's
/// watch leaves them out.
pub async fn snapshot(client: &Client) -> Result<ClusterModel, SnapshotError> {
    let namespaces: Vec<core::Namespace> = list(
        &Api::all(client.clone()),
        ListParams::default(),
        "namespaces",
    )
    .await?;
    let pods: Vec<core::Pod> = list(
        &Api::all(client.clone()),
        ListParams::default().fields(LIVE_PODS),
        "pods",
    )
    .await?;
    let services: Vec<core::Service> =
        list(&Api::all(client.clone()), ListParams::default(), "services").await?;
    let nodes: Vec<core::Node> =
        list(&Api::all(client.clone()), ListParams::default(), "nodes").await?;
    let nsfw = policies(client, &namespace_firewall_resource(), "namespacefirewalls").await?;
    let cfw = policies(client, &cluster_firewall_resource(), "clusterfirewalls").await?;
    let np = policies(client, &network_policy_resource(), "networkpolicies").await?;
    // The ClusterNetworkPolicy CRD is optional: a cluster without it has none.
    let cnp = match policies(
        client,
        &cluster_network_policy_resource(),
        "clusternetworkpolicies",
    )
    .await
    {
        Err(SnapshotError {
            source: kube::Error::Api(e),
            ..
        }) if e.code == 404 => Vec::new(),
        listed => listed?,
    };
    Ok(assemble(
        namespaces,
        pods,
        services,
        nodes,
        [
            (nsfw, PolicyKind::NamespaceFirewall),
            (cfw, PolicyKind::ClusterFirewall),
            (np, PolicyKind::NetworkPolicy),
            (cnp, PolicyKind::ClusterNetworkPolicy),
        ],
    ))
}

async fn policies(
    client: &Client,
    resource: &ApiResource,
    kind: &'static str,
) -> Result<Vec<DynamicObject>, SnapshotError> {
    list(
        &Api::all_with(client.clone(), resource),
        ListParams::default(),
        kind,
    )
    .await
}

/// Every page of a list.
async fn list<K>(
    api: &Api<K>,
    params: ListParams,
    kind: &'static str,
) -> Result<Vec<K>, SnapshotError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut params = params.limit(PAGE);
    let mut out = Vec::new();
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|source| SnapshotError { kind, source })?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}
