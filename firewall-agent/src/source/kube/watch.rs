//! The watchers: one kube-runtime watcher per kind, reflected into a store, counting changes and
//! sync progress for the source.
use std::{
    fmt::Debug,
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1 as core;
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt as _,
        reflector::{Store, store::Writer},
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, error, info, warn};

use crate::model::convert::PolicyKind;

/// The kinds watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Namespace,
    Pod,
    Service,
    Node,
    NamespaceFirewall,
    ClusterFirewall,
    NetworkPolicy,
    ClusterNetworkPolicy,
}

impl Kind {
    /// The policy kind a watch reads, for `--policy-apis`.
    pub fn policy_kind(self) -> Option<PolicyKind> {
        match self {
            Self::NamespaceFirewall => Some(PolicyKind::NamespaceFirewall),
            Self::ClusterFirewall => Some(PolicyKind::ClusterFirewall),
            Self::NetworkPolicy => Some(PolicyKind::NetworkPolicy),
            Self::ClusterNetworkPolicy => Some(PolicyKind::ClusterNetworkPolicy),
            Self::Namespace | Self::Pod | Self::Service | Self::Node => None,
        }
    }

    const COUNT: usize = 8;
    const ALL: [Self; Self::COUNT] = [
        Self::Namespace,
        Self::Pod,
        Self::Service,
        Self::Node,
        Self::NamespaceFirewall,
        Self::ClusterFirewall,
        Self::NetworkPolicy,
        Self::ClusterNetworkPolicy,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Namespace => "Namespace",
            Self::Pod => "Pod",
            Self::Service => "Service",
            Self::Node => "Node",
            Self::NamespaceFirewall => "NamespaceFirewall",
            Self::ClusterFirewall => "ClusterFirewall",
            Self::NetworkPolicy => "NetworkPolicy",
            Self::ClusterNetworkPolicy => "ClusterNetworkPolicy",
        }
    }
}

/// What the watchers share with the source: a change counter to wait on and sync progress.
#[derive(Debug)]
pub struct SyncState {
    changes: watch::Sender<u64>,
    /// Per [`Kind`], by its discriminant.
    synced: [AtomicBool; Kind::COUNT],
    /// Unix time (ms) of the last event or completed list from any watcher.
    pub last_event_ms: AtomicU64,
    /// Watch errors so far (each is retried with backoff).
    pub errors: AtomicU64,
}

impl SyncState {
    /// The sync gate waits for the kinds `watched` says are watched, and only those.
    pub fn new(watched: impl Fn(Kind) -> bool) -> Self {
        let state = Self {
            changes: watch::channel(0).0,
            synced: Default::default(),
            last_event_ms: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        };
        for kind in Kind::ALL.into_iter().filter(|k| !watched(*k)) {
            state.synced[kind as usize].store(true, Ordering::Release);
        }
        state
    }

    fn bump(&self) {
        self.last_event_ms
            .store(crate::clock::unix_ms(), Ordering::Relaxed);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Whether every kind has been listed completely at least once.
    pub fn is_synced(&self) -> bool {
        self.synced.iter().all(|s| s.load(Ordering::Acquire))
    }

    /// A receiver that sees every change of any store.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Server-managed bookkeeping the agent never reads: dropped before storing, to keep memory flat.
pub fn strip<K: Resource>(o: &mut K) {
    let m = o.meta_mut();
    m.managed_fields = None;
    m.annotations = None;
    m.owner_references = None;
}

/// A Pod keeps only what the model reads (identity, node, network, phase, IPs).
pub fn strip_pod(p: &mut core::Pod) {
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
pub fn strip_node(n: &mut core::Node) {
    strip(n);
    n.spec = None;
    if let Some(status) = n.status.as_mut() {
        *status = core::NodeStatus {
            addresses: status.addresses.take(),
            ..Default::default()
        };
    }
}

/// How one kind is watched.
pub struct Watch<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    pub kind: Kind,
    pub api: Api<K>,
    pub writer: Writer<K>,
    pub config: watcher::Config,
    pub strip: fn(&mut K),
}

impl<K> Watch<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// Starts the watcher task; returns the store it fills.
    pub fn spawn(self, state: &Arc<SyncState>, tasks: &mut Vec<JoinHandle<()>>) -> Store<K> {
        let store = self.writer.as_reader();
        tasks.push(tokio::spawn(self.pump(state.clone())));
        store
    }

    /// Runs the watcher into its store for the agent's lifetime.
    async fn pump(self, state: Arc<SyncState>) {
        let (index, kind) = (self.kind as usize, self.kind.name());
        let stream = watcher::watcher(self.api, self.config)
            .default_backoff()
            .modify(self.strip)
            .reflect(self.writer);
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
                    if !failing && status_code(&e) == Some(404) {
                        // Not served at all: nothing will change until an operator acts.
                        error!(kind, error = %e, hint = hint(self.kind, &e), "the API server does not serve this kind; retrying with backoff, no policy is applied before it is listed and the last known state stays in force");
                        failing = true;
                    } else if !failing {
                        warn!(kind, error = %e, hint = hint(self.kind, &e), "watch failed; retrying with backoff, the last known state stays in force");
                        failing = true;
                    } else {
                        debug!(kind, error = %e, "watch still failing");
                    }
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
fn hint(kind: Kind, e: &watcher::Error) -> &'static str {
    match status_code(e) {
        Some(404) if kind == Kind::ClusterNetworkPolicy => {
            "the ClusterNetworkPolicy CRD (policy.networking.k8s.io/v1alpha2) is not installed: kubectl apply -f https://raw.githubusercontent.com/kubernetes-sigs/network-policy-api/refs/tags/v0.2.0/config/crd/standard/policy.networking.k8s.io_clusternetworkpolicies.yaml, or leave clusternetworkpolicy out of --policy-apis"
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sync_gate_waits_for_the_watched_kinds_only() {
        let state = SyncState::new(|k| k != Kind::NetworkPolicy);
        for k in Kind::ALL.into_iter().filter(|k| *k != Kind::Pod) {
            state.synced[k as usize].store(true, Ordering::Release);
        }
        assert!(!state.is_synced(), "Pod is watched and not listed yet");
        state.synced[Kind::Pod as usize].store(true, Ordering::Release);
        assert!(state.is_synced());
        // An unwatched kind counts as listed from the start.
        let state = SyncState::new(|k| k.policy_kind().is_none());
        for k in Kind::ALL.into_iter().filter(|k| k.policy_kind().is_none()) {
            state.synced[k as usize].store(true, Ordering::Release);
        }
        assert!(state.is_synced());
    }
}
