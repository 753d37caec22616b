//! One read of the cluster for the offline commands (`suggest --source/--against`): a file as
//! the `file:` source parses it, or one paged list per kind from the API server, converted as
//! the kube source's stores are (no watch, no status written).
use std::{fmt::Debug, path::Path};

use anyhow::Context as _;
use k8s_openapi::api::core::v1 as core;
use kube::{
    Api, Resource,
    api::{DynamicObject, ListParams},
};
use serde::de::DeserializeOwned;

use crate::{
    model::{
        ClusterModel,
        convert::{self, PolicyKind},
    },
    source::{
        SourceSpec,
        file::parse_objects,
        kube::{client, cluster_firewall_resource, namespace_firewall_resource},
    },
};

/// Items per list page.
const PAGE: u32 = 500;

/// Reads `spec` once.
pub fn read(spec: &SourceSpec, kubeconfig: Option<&Path>) -> anyhow::Result<ClusterModel> {
    match spec {
        SourceSpec::File(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            parse_objects(&text).with_context(|| path.display().to_string())
        }
        SourceSpec::Kube => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(list_cluster(kubeconfig)),
    }
}

async fn list_cluster(kubeconfig: Option<&Path>) -> anyhow::Result<ClusterModel> {
    let c = client(kubeconfig).await?;
    let mut m = ClusterModel::default();
    for ns in
        list::<core::Namespace>(&Api::all(c.clone()), ListParams::default(), "namespaces").await?
    {
        let ns = convert::namespace(ns);
        m.namespaces.insert(ns.name.clone(), ns);
    }
    // Finished pods are no endpoints, as the agent's watch leaves them out.
    let live = ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    m.pods = list(&Api::all(c.clone()), live, "pods")
        .await?
        .into_iter()
        .map(convert::pod)
        .collect();
    m.services = list(&Api::all(c.clone()), ListParams::default(), "services")
        .await?
        .into_iter()
        .map(convert::service)
        .collect();
    m.nodes = list(&Api::all(c.clone()), ListParams::default(), "nodes")
        .await?
        .into_iter()
        .map(convert::node)
        .collect();
    for (resource, kind) in [
        (namespace_firewall_resource(), PolicyKind::NamespaceFirewall),
        (cluster_firewall_resource(), PolicyKind::ClusterFirewall),
    ] {
        let api: Api<DynamicObject> = Api::all_with(c.clone(), &resource);
        for o in list(&api, ListParams::default(), &resource.plural).await? {
            convert::add_policy_object(&mut m, kind, serde_json::to_value(&o)?);
        }
    }
    Ok(m)
}

/// Every page of a list.
async fn list<K>(api: &Api<K>, params: ListParams, what: &str) -> anyhow::Result<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut params = params.limit(PAGE);
    let mut out = Vec::new();
    loop {
        let page = api
            .list(&params)
            .await
            .with_context(|| format!("listing {what}"))?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}
