//! The `kube` source (DESIGN §7): one reflector per kind the compiler reads, kept in step with the
//! API server by kube-runtime watchers (list, then watch from the list's resourceVersion, relist on
//! 410 Gone, exponential backoff on errors).
//!
//! While the API server is unreachable the stores keep their last contents, so the maps (built
//! from them) stay as they are. A relist replaces a store in one swap when the list is complete
//! (kube-runtime buffers `InitApply` events until `InitDone`), so a resync never shows the
//! compiler a half-listed cluster and verdicts do not flap.
pub mod lease;
pub mod status;

use std::{
    fmt::Debug,
    hash::Hash,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1 as core;
use kube::{
    Api, Client, Config, Resource, ResourceExt as _,
    api::{ApiResource, DynamicObject},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt as _,
        reflector::{Store, store::Writer},
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, info, warn};

use crate::{model::ClusterModel, objects};

/// Why the API server could not be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig file is missing or malformed.
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor the in-cluster service account is usable.
    #[error("finding the API server (no --kubeconfig, KUBECONFIG or in-cluster config): {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// `NamespaceFirewall` as an untyped resource: an object that does not match the Rust types must
/// still be listed (and rejected by itself), never fail the whole list.
pub fn namespace_firewall_resource() -> ApiResource {
    ApiResource {
        group: "bulkhead.dev".into(),
        version: "v1alpha1".into(),
        api_version: "bulkhead.dev/v1alpha1".into(),
        kind: "NamespaceFirewall".into(),
        plural: "namespacefirewalls".into(),
    }
}

/// `ClusterFirewall` as an untyped resource (see [`namespace_firewall_resource`]).
pub fn cluster_firewall_resource() -> ApiResource {
    ApiResource {
        group: "bulkhead.dev".into(),
        version: "v1alpha1".into(),
        api_version: "bulkhead.dev/v1alpha1".into(),
        kind: "ClusterFirewall".into(),
        plural: "clusterfirewalls".into(),
    }
}

/// The kinds watched, in the order of [`SyncState::synced`].
const KINDS: [&str; 6] = [
    "Namespace",
    "Pod",
    "Service",
    "Node",
    "NamespaceFirewall",
    "ClusterFirewall",
];

/// What the watchers share with the agent: a change counter to wait on and sync progress.
#[derive(Debug)]
pub struct SyncState {
    changes: watch::Sender<u64>,
    synced: [AtomicBool; KINDS.len()],
    /// Unix time (ms) of the last event or completed list from any watcher.
    pub last_event_ms: AtomicU64,
    /// Watch errors so far (each is retried with backoff).
    pub errors: AtomicU64,
}

impl SyncState {
    fn bump(&self) {
        self.last_event_ms
            .store(crate::clock::unix_ms(), Ordering::Relaxed);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Whether every kind has been listed completely at least once.
    pub fn is_synced(&self) -> bool {
        self.synced.iter().all(|s| s.load(Ordering::Acquire))
    }
}

/// A policy object as listed, for its status: which object, which generation, what it says now.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyObject {
    /// `NamespaceFirewall` or `ClusterFirewall`.
    pub kind: String,
    /// Namespace (NamespaceFirewall only).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `status`, as stored.
    pub status: Option<serde_json::Value>,
}

impl PolicyObject {
    /// Identity: kind, namespace, name.
    pub fn key(&self) -> (&str, Option<&str>, &str) {
        (&self.kind, self.namespace.as_deref(), &self.name)
    }
}

/// What the agent last applied, for the status writer: the policy objects it compiled (with
/// their generation) and which of them were rejected.
#[derive(Clone, Debug, Default)]
pub struct Verdicts {
    /// Objects the applied policy was compiled from.
    pub objects: Vec<PolicyObject>,
    /// Objects rejected whole.
    pub rejected: Vec<crate::model::Rejection>,
}

/// Reflector stores over the API server, and the watcher tasks that fill them.
pub struct KubeSource {
    client: Client,
    namespaces: Store<core::Namespace>,
    pods: Store<core::Pod>,
    services: Store<core::Service>,
    nodes: Store<core::Node>,
    policies: PolicyStores,
    state: Arc<SyncState>,
    tasks: Vec<JoinHandle<()>>,
}

/// The policy objects' stores, shared with the status writer.
#[derive(Clone)]
pub struct PolicyStores {
    namespace_firewalls: Store<DynamicObject>,
    cluster_firewalls: Store<DynamicObject>,
}

impl PolicyStores {
    fn by_kind(&self) -> [(&Store<DynamicObject>, &'static str); 2] {
        [
            (&self.namespace_firewalls, "NamespaceFirewall"),
            (&self.cluster_firewalls, "ClusterFirewall"),
        ]
    }

    /// Every policy object as stored now, sorted by kind, namespace and name.
    pub fn objects(&self) -> Vec<PolicyObject> {
        let mut out = Vec::new();
        for (store, kind) in self.by_kind() {
            for o in store.state() {
                out.push(PolicyObject {
                    kind: kind.to_owned(),
                    namespace: o.namespace(),
                    name: o.name_any(),
                    generation: o.metadata.generation,
                    status: o.data.get("status").cloned(),
                });
            }
        }
        out.sort_by(|a, b| a.key().cmp(&b.key()));
        out
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A client from `--kubeconfig` (or `KUBECONFIG`), else in-cluster config.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| KubeError::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => Config::infer().await.map_err(KubeError::Infer)?,
    };
    Client::try_from(config).map_err(KubeError::Client)
}

impl KubeSource {
    /// Starts the watchers. Returns at once; [`SyncState::is_synced`] tells when every kind has
    /// been listed.
    pub fn start(client: Client) -> Self {
        let (changes, _) = watch::channel(0);
        let state = Arc::new(SyncState {
            changes,
            synced: Default::default(),
            last_event_ms: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
        let mut tasks = Vec::new();
        // Terminal pods are no endpoints and their IPs get reused: the server leaves them out
        // (and sends a DELETED when a pod finishes).
        let live_pods =
            watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
        let (namespaces, t) =
            spawn_typed::<core::Namespace>(&client, 0, &state, Default::default(), strip);
        tasks.push(t);
        let (pods, t) = spawn_typed::<core::Pod>(&client, 1, &state, live_pods, strip_pod);
        tasks.push(t);
        let (services, t) =
            spawn_typed::<core::Service>(&client, 2, &state, Default::default(), strip);
        tasks.push(t);
        let (nodes, t) =
            spawn_typed::<core::Node>(&client, 3, &state, Default::default(), strip_node);
        tasks.push(t);
        let (namespace_firewalls, t) =
            spawn_dynamic(&client, 4, &state, namespace_firewall_resource());
        tasks.push(t);
        let (cluster_firewalls, t) = spawn_dynamic(&client, 5, &state, cluster_firewall_resource());
        tasks.push(t);
        Self {
            client,
            namespaces,
            pods,
            services,
            nodes,
            policies: PolicyStores {
                namespace_firewalls,
                cluster_firewalls,
            },
            state,
            tasks,
        }
    }

    /// The client (the status writer shares it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sync progress and the change counter.
    pub fn state(&self) -> &Arc<SyncState> {
        &self.state
    }

    /// The policy objects' stores.
    pub fn policies(&self) -> &PolicyStores {
        &self.policies
    }

    /// A receiver that sees every change of any store.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.state.changes.subscribe()
    }

    /// The cluster model from the stores' current contents, in a stable order (so that an
    /// unchanged cluster gives an equal model, whatever order the server listed it in).
    pub fn model(&self) -> ClusterModel {
        let mut m = ClusterModel::default();
        for ns in self.namespaces.state() {
            let ns = objects::namespace((*ns).clone());
            m.namespaces.insert(ns.name.clone(), ns);
        }
        m.pods = self
            .pods
            .state()
            .iter()
            .map(|p| objects::pod((**p).clone()))
            .collect();
        m.pods
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        m.services = self
            .services
            .state()
            .iter()
            .map(|s| objects::service((**s).clone()))
            .collect();
        m.services
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        m.nodes = self
            .nodes
            .state()
            .iter()
            .map(|n| objects::node((**n).clone()))
            .collect();
        m.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        for (store, kind) in self.policies.by_kind() {
            let mut objs = store.state();
            objs.sort_by_key(|a| (a.namespace(), a.name_any()));
            for o in objs {
                match serde_json::to_value(&*o) {
                    Ok(v) => objects::add_policy_object(&mut m, kind, v),
                    Err(e) => {
                        warn!(kind, name = %o.name_any(), error = %e, "cannot re-serialize object");
                    }
                }
            }
        }
        m
    }
}

/// Server-managed bookkeeping the agent never reads: dropped before storing, to keep memory flat.
fn strip<K: Resource>(o: &mut K) {
    let m = o.meta_mut();
    m.managed_fields = None;
    m.annotations = None;
    m.owner_references = None;
}

/// A Pod keeps only what the model reads (identity, node, network, phase, IPs).
fn strip_pod(p: &mut core::Pod) {
    strip(p);
    if let Some(spec) = p.spec.as_mut() {
        *spec = core::PodSpec {
            node_name: spec.node_name.take(),
            host_network: spec.host_network,
            ..Default::default()
        };
    }
    if let Some(status) = p.status.as_mut() {
        *status = core::PodStatus {
            phase: status.phase.take(),
            pod_ip: status.pod_ip.take(),
            pod_ips: status.pod_ips.take(),
            ..Default::default()
        };
    }
}

/// A Node keeps only its addresses (its heartbeats change nothing else we read).
fn strip_node(n: &mut core::Node) {
    strip(n);
    n.spec = None;
    if let Some(status) = n.status.as_mut() {
        *status = core::NodeStatus {
            addresses: status.addresses.take(),
            ..Default::default()
        };
    }
}

fn spawn_typed<K>(
    client: &Client,
    index: usize,
    state: &Arc<SyncState>,
    config: watcher::Config,
    strip: fn(&mut K),
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let writer = Writer::<K>::default();
    let store = writer.as_reader();
    let api = Api::<K>::all(client.clone());
    (
        store,
        tokio::spawn(pump(api, config, writer, index, state.clone(), strip)),
    )
}

fn spawn_dynamic(
    client: &Client,
    index: usize,
    state: &Arc<SyncState>,
    resource: ApiResource,
) -> (Store<DynamicObject>, JoinHandle<()>) {
    let writer = Writer::<DynamicObject>::new(resource.clone());
    let store = writer.as_reader();
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    (
        store,
        tokio::spawn(pump(
            api,
            watcher::Config::default(),
            writer,
            index,
            state.clone(),
            strip::<DynamicObject>,
        )),
    )
}

/// Runs one watcher into its store for the agent's lifetime, counting changes and sync progress.
async fn pump<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    index: usize,
    state: Arc<SyncState>,
    strip: fn(&mut K),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let kind = KINDS[index];
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .modify(strip)
        .reflect(writer);
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => debug!(kind, "listing"),
            Ok(Event::InitApply(_)) => {}
            Ok(Event::InitDone) => {
                if !state.synced[index].swap(true, Ordering::AcqRel) {
                    info!(kind, "listed");
                } else {
                    info!(kind, "relisted");
                }
                failing = false;
                state.bump();
            }
            Ok(Event::Apply(_) | Event::Delete(_)) => {
                if failing {
                    info!(kind, "watch resumed");
                    failing = false;
                }
                state.bump();
            }
            Err(e) if status_code(&e) == Some(410) => {
                // Normal after a long disconnection or etcd compaction: the watcher relists.
                info!(kind, "watch expired (410 Gone); relisting");
            }
            Err(e) => {
                state.errors.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    warn!(kind, error = %e, hint = hint(&e), "watch failed; retrying with backoff, the last known state stays in force");
                    failing = true;
                } else {
                    debug!(kind, error = %e, "watch still failing");
                }
            }
        }
    }
}

/// The HTTP status of an API error behind a watcher error.
fn status_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::WatchError(s) => Some(s.code),
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    }
}

/// What an operator should check for the usual causes of a failing watch.
fn hint(e: &watcher::Error) -> &'static str {
    match status_code(e) {
        Some(404) => {
            "the API server does not serve this kind: are the Bulkhead CRDs installed (kubectl apply -k deploy/)?"
        }
        Some(401) => "the API server refused the agent's credentials",
        Some(403) => {
            "forbidden: the agent's ServiceAccount needs list and watch on this kind (deploy/ ClusterRole)"
        }
        Some(_) => "the API server answered with an error",
        None => "the API server is unreachable or the connection broke",
    }
}
