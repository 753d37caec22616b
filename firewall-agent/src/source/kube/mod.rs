//! The `kube` source: one reflector per kind the compiler reads, kept in step with the API server
//! by kube-runtime watchers (list, then watch from the list's resourceVersion, relist on 410 Gone,
//! exponential backoff on errors).
//!
//! While the API server is unreachable the stores keep their last contents, so the maps (built
//! from them) stay as they are. A relist replaces a store in one swap when the list is complete
//! (kube-runtime buffers `InitApply` events until `InitDone`), so a resync never shows the
//! compiler a half-listed cluster and verdicts do not flap. No model is yielded before every kind
//! has been listed once, and a burst of events (a Deployment scaling, a relist) yields one model.
mod client;
mod events;
pub mod lease;
mod policies;
mod snapshot;
pub mod status;
mod watch;

use std::{
    fmt::Debug,
    hash::Hash,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use k8s_openapi::api::core::v1 as core;
use kube::{
    Api, Client, Resource, ResourceExt as _,
    api::{ApiResource, DynamicObject},
    runtime::{
        reflector::{Store, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::{
    sync::watch as channel,
    task::JoinHandle,
    time::{Instant, sleep_until},
};
use tracing::{error, info, warn};

pub use client::{KubeError, client};
pub use policies::{
    PolicyObject, PolicyStores, Verdicts, cluster_firewall_resource,
    cluster_network_policy_resource, namespace_firewall_resource, network_policy_resource,
};
pub use snapshot::{SnapshotError, snapshot};

use super::Progress;
use crate::{
    compiler::InvalidModeLabel,
    model::{
        ClusterModel, Rejection,
        convert::{self, PolicyKind},
    },
    policy::PolicyApis,
};
use lease::Elector;
use watch::{Kind, SyncState, Watch, strip, strip_node, strip_pod};

/// How long a burst of events may gather before a model is built: one compile per burst, well
/// inside the 1 s a policy change may take.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Terminal pods are no endpoints and their IPs get reused: the server leaves them out (and
/// sends a DELETED when a pod finishes).
const LIVE_PODS: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// Settings of the `kube` source.
#[derive(Clone, Debug, Default)]
pub struct KubeConfig {
    /// Explicit kubeconfig; `None`: `KUBECONFIG`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the status-writer Lease (the agent's own namespace).
    pub lease_namespace: String,
    pub lease_name: String,
}

/// Reflector stores over the API server, the watcher tasks that fill them, and the status writer.
pub struct KubeSource {
    client: Client,
    namespaces: Store<core::Namespace>,
    pods: Store<core::Pod>,
    services: Store<core::Service>,
    nodes: Store<core::Node>,
    policies: PolicyStores,
    state: Arc<SyncState>,
    tasks: Vec<JoinHandle<()>>,
    /// `None` once the watchers have stopped.
    changes: Option<channel::Receiver<u64>>,
    /// When the current burst of changes is due to be built into a model.
    dirty: Option<Instant>,
    waiting_logged: bool,
    /// The policy objects listed with the last model yielded, for its verdicts.
    listed: Vec<PolicyObject>,
    verdicts: channel::Sender<Option<Arc<Verdicts>>>,
    /// Until the status writer starts (with the agent's loop, after the datapath is attached).
    elector: Option<Elector>,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl KubeSource {
    /// Starts the watchers of the kinds `apis` reads; `holder` (this node's name) is who claims
    /// the status Lease.
    pub fn start(client: Client, cfg: &KubeConfig, apis: PolicyApis, holder: &str) -> Self {
        let watched = move |k: Kind| k.policy_kind().is_none_or(|p| apis.reads(p));
        let state = Arc::new(SyncState::new(watched));
        let changes = state.subscribe();
        let mut tasks = Vec::new();
        let live_pods = watcher::Config::default().fields(LIVE_PODS);
        let namespaces =
            typed(&client, Kind::Namespace, Default::default(), strip).spawn(&state, &mut tasks);
        let pods = typed(&client, Kind::Pod, live_pods, strip_pod).spawn(&state, &mut tasks);
        let services =
            typed(&client, Kind::Service, Default::default(), strip).spawn(&state, &mut tasks);
        let nodes =
            typed(&client, Kind::Node, Default::default(), strip_node).spawn(&state, &mut tasks);
        let mut policy = |kind: Kind, resource: ApiResource| {
            if watched(kind) {
                policy(&client, kind, resource).spawn(&state, &mut tasks)
            } else {
                Writer::new(resource).as_reader()
            }
        };
        let policies = PolicyStores {
            namespace_firewalls: policy(Kind::NamespaceFirewall, namespace_firewall_resource()),
            cluster_firewalls: policy(Kind::ClusterFirewall, cluster_firewall_resource()),
            network_policies: policy(Kind::NetworkPolicy, network_policy_resource()),
            cluster_network_policies: policy(
                Kind::ClusterNetworkPolicy,
                cluster_network_policy_resource(),
            ),
        };
        let elector = Elector::new(
            client.clone(),
            &cfg.lease_namespace,
            &cfg.lease_name,
            holder,
        );
        Self {
            client,
            namespaces,
            pods,
            services,
            nodes,
            policies,
            state,
            tasks,
            changes: Some(changes),
            // Whatever the watchers list before the first wait is built on the first turn.
            dirty: Some(Instant::now()),
            waiting_logged: false,
            listed: Vec::new(),
            verdicts: channel::channel(None).0,
            elector: Some(elector),
        }
    }

    /// The next model: once every kind is listed, [`DEBOUNCE`] after the first change of a
    /// burst. Cancel-safe. Pends forever once the watchers have stopped.
    pub async fn next_model(&mut self) -> ClusterModel {
        self.start_status_writer();
        loop {
            let Some(due) = self.dirty else {
                self.wait_change().await;
                continue;
            };
            tokio::select! {
                () = self.wait_change() => continue,
                () = sleep_until(due) => {}
            }
            self.dirty = None;
            if !self.state.is_synced() {
                if !self.waiting_logged {
                    info!("waiting for every kind to be listed before applying a policy");
                    self.waiting_logged = true;
                }
                continue;
            }
            // Listed before the model: an object changing in between then carries an older
            // generation than the store, and the status writer skips it until it is compiled.
            self.listed = self.policies.objects();
            return self.model();
        }
    }

    /// What the agent made of the last model (`changed`: it differed from the one before): the
    /// status writer reports it, once per distinct model.
    pub fn applied(&mut self, changed: bool, rejected: &[Rejection], labels: &[InvalidModeLabel]) {
        let objects = std::mem::take(&mut self.listed);
        if changed || self.verdicts.borrow().is_none() {
            self.verdicts.send_replace(Some(Arc::new(Verdicts {
                objects,
                rejected: rejected.to_vec(),
                invalid_mode_labels: labels.to_vec(),
            })));
        }
    }

    pub fn progress(&self) -> Progress {
        Progress {
            synced: self.state.is_synced(),
            errors: self.state.errors.load(Ordering::Relaxed),
            last_change_ms: self.state.last_event_ms.load(Ordering::Relaxed),
        }
    }

    fn start_status_writer(&mut self) {
        if let Some(elector) = self.elector.take() {
            tokio::spawn(status::run_writer(
                self.client.clone(),
                elector,
                self.policies.clone(),
                self.verdicts.subscribe(),
                self.state.subscribe(),
            ));
        }
    }

    /// One change of any store: opens a burst if none is open.
    async fn wait_change(&mut self) {
        let Some(changes) = self.changes.as_mut() else {
            return std::future::pending().await;
        };
        if changes.changed().await.is_ok() {
            self.dirty.get_or_insert_with(|| Instant::now() + DEBOUNCE);
        } else {
            error!("the API watchers stopped; the last applied policy stays in force");
            self.changes = None;
        }
    }

    /// The cluster model from the stores' current contents.
    fn model(&self) -> ClusterModel {
        let policies = self
            .policies
            .every_kind()
            .map(|(store, kind)| (cloned(store), kind));
        assemble(
            cloned(&self.namespaces),
            cloned(&self.pods),
            cloned(&self.services),
            cloned(&self.nodes),
            policies,
        )
    }
}

fn cloned<K>(store: &Store<K>) -> Vec<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store.state().iter().map(|o| (**o).clone()).collect()
}

/// The model of listed objects, in a stable order (so that an unchanged cluster gives an equal
/// model, whatever order the server listed it in): the watchers' stores and a one-shot
/// [`snapshot`] build it alike.
fn assemble(
    namespaces: Vec<core::Namespace>,
    pods: Vec<core::Pod>,
    services: Vec<core::Service>,
    nodes: Vec<core::Node>,
    policies: impl IntoIterator<Item = (Vec<DynamicObject>, PolicyKind)>,
) -> ClusterModel {
    let mut m = ClusterModel::default();
    for ns in namespaces {
        let ns = convert::namespace(ns);
        m.namespaces.insert(ns.name.clone(), ns);
    }
    m.pods = pods.into_iter().map(convert::pod).collect();
    m.pods
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    m.services = services.into_iter().map(convert::service).collect();
    m.services
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    m.nodes = nodes.into_iter().map(convert::node).collect();
    m.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    for (mut objs, kind) in policies {
        objs.sort_by_key(|a| (a.namespace(), a.name_any()));
        for o in objs {
            match serde_json::to_value(&o) {
                Ok(v) => convert::add_policy_object(&mut m, kind, v),
                Err(e) => {
                    let kind = kind.name();
                    warn!(kind, name = %o.name_any(), error = %e, "cannot re-serialize object");
                }
            }
        }
    }
    m
}

fn typed<K>(client: &Client, kind: Kind, config: watcher::Config, strip: fn(&mut K)) -> Watch<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    Watch {
        kind,
        api: Api::all(client.clone()),
        writer: Writer::default(),
        config,
        strip,
    }
}

fn policy(client: &Client, kind: Kind, resource: ApiResource) -> Watch<DynamicObject> {
    Watch {
        kind,
        api: Api::all_with(client.clone(), &resource),
        writer: Writer::new(resource),
        config: watcher::Config::default(),
        strip: strip::<DynamicObject>,
    }
}
