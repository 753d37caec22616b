//! A watch-capable Kubernetes API server emulator (docs/design.md#testbed): real HTTP that the unmodified kube
//! client (`kube::Api`, `kube::runtime::watcher`) talks to through a generated kubeconfig, so the
//! agent's Kubernetes source runs end to end without a cluster.
//!
//! Served: core/v1 namespaces, pods, services, nodes, configmaps; coordination.k8s.io/v1 leases;
//! events.k8s.io/v1 events;
//! bulkhead.dev/v1alpha1 namespacefirewalls and clusterfirewalls; networking.k8s.io/v1
//! networkpolicies; policy.networking.k8s.io/v1alpha2 clusternetworkpolicies (the CRD always
//! installed) (see [`resources::RESOURCES`]).
//! Deliberate simplifications, all legal for a server or irrelevant to Bulkhead:
//! - `limit`/`continue` are ignored: lists return everything, without a continue token.
//! - Namespaced objects may be created in namespaces that do not exist; deleting a namespace
//!   deletes only the Namespace object (no cascade, no finalizers), and deletes are immediate.
//! - Strategic merge patch is applied as a JSON merge patch; server-side apply is
//!   create-or-merge-patch (no managed fields); `dryRun` is not supported.
//! - A watch from a resourceVersion newer than the current one gets 410 Expired (forcing a
//!   relist), where a real server would wait and then time out.
//! - Every resource is served unless [`ApiServer::set_installed`] says its CRD is not installed
//!   (then its paths answer 404, but discovery still lists it).
//! - HTTP create drops `.status` for kinds with a status subresource (a Namespace gets
//!   `phase: Active`); in-process [`ApiServer::apply`] keeps it.
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

pub mod handlers;
pub mod patch;
pub mod resources;
pub mod routes;
pub mod selector;
pub mod status;
pub mod store;
pub mod watch;

use store::Store;

/// One served HTTP request, for tests that check what the client did (e.g. that it relisted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string (without `?`).
    pub query: String,
    /// Response status code.
    pub status: u16,
}

/// State shared by the handle and the connections.
pub struct Shared {
    store: Arc<Store>,
    requests: Mutex<Vec<RequestRecord>>,
    bookmark_ms: AtomicU64,
    addr: Mutex<SocketAddr>,
    /// Connections being served (so `stop` can wait until they are all closed).
    live: Arc<AtomicUsize>,
    /// Resource ids whose CRD is "not installed": their paths answer 404.
    uninstalled: Mutex<Vec<usize>>,
}

impl Shared {
    fn record(&self, method: &str, path: &str, query: &str, status: u16) {
        let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        r.push(RequestRecord {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            status,
        });
    }

    fn bookmark_interval(&self) -> Duration {
        Duration::from_millis(self.bookmark_ms.load(Ordering::Relaxed).max(1))
    }

    fn addr(&self) -> SocketAddr {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether resource `res` is served (its CRD installed).
    fn installed(&self, res: usize) -> bool {
        let u = self.uninstalled.lock().unwrap_or_else(|e| e.into_inner());
        !u.contains(&res)
    }
}

/// The emulator: a tokio runtime of its own serving HTTP on a local port, usable from synchronous
/// tests. Dropping it stops the server.
pub struct ApiServer {
    rt: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// A listening socket with SO_REUSEADDR, so `restart` can take the same port back while closed
/// connections linger in TIME_WAIT.
fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .context("creating a socket")?;
    sock.set_reuse_address(true).context("SO_REUSEADDR")?;
    sock.bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    sock.listen(1024).context("listen")?;
    sock.set_nonblocking(true).context("O_NONBLOCK")?;
    Ok(sock.into())
}

/// Decrements the live-connection count when a connection task ends or is aborted.
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts and serves connections until aborted; aborting drops the listener and (through the
/// JoinSet) every connection, which is what an outage looks like to clients.
async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                shared.live.fetch_add(1, Ordering::SeqCst);
                let guard = LiveGuard(shared.live.clone());
                let sh = shared.clone();
                conns.spawn(async move {
                    let _guard = guard;
                    let svc = hyper::service::service_fn(move |req| {
                        let sh = sh.clone();
                        async move { Ok::<_, std::convert::Infallible>(handlers::handle(sh, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

impl ApiServer {
    /// Listens on 127.0.0.1 on a free port.
    pub fn start() -> anyhow::Result<ApiServer> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }

    /// Listens on the given address (port 0 = any).
    pub fn start_on(addr: SocketAddr) -> anyhow::Result<ApiServer> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bulkhead-apiserver")
            .enable_all()
            .build()
            .context("starting the API server runtime")?;
        let listener = bind(addr)?;
        let addr = listener.local_addr().context("local address")?;
        let shared = Arc::new(Shared {
            store: Arc::new(Store::default()),
            requests: Mutex::new(Vec::new()),
            bookmark_ms: AtomicU64::new(2000),
            addr: Mutex::new(addr),
            live: Arc::new(AtomicUsize::new(0)),
            uninstalled: Mutex::new(Vec::new()),
        });
        let server = ApiServer {
            rt: Some(rt),
            shared,
            addr,
            task: Mutex::new(None),
        };
        server.spawn(listener)?;
        Ok(server)
    }

    fn runtime(&self) -> anyhow::Result<&tokio::runtime::Runtime> {
        self.rt.as_ref().ok_or_else(|| anyhow!("runtime gone"))
    }

    fn spawn(&self, listener: std::net::TcpListener) -> anyhow::Result<()> {
        let rt = self.runtime()?;
        let _enter = rt.enter();
        let listener =
            tokio::net::TcpListener::from_std(listener).context("registering the listener")?;
        let handle = rt.spawn(serve(listener, self.shared.clone()));
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// Serves `group`/`plural` or not, as if its CRD were installed or deleted: while not, every
    /// path of it answers 404 (discovery still lists it). Objects stored stay stored.
    pub fn set_installed(&self, group: &str, plural: &str, installed: bool) -> anyhow::Result<()> {
        let res = resources::RESOURCES
            .iter()
            .position(|r| r.group == group && r.plural == plural)
            .ok_or_else(|| anyhow!("no resource {plural}.{group}"))?;
        let mut u = self
            .shared
            .uninstalled
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        u.retain(|r| *r != res);
        if !installed {
            u.push(res);
        }
        Ok(())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets how often watches that allow bookmarks get one (default 2 s). Applies to watches
    /// started afterwards.
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.shared.bookmark_ms.store(
            every.as_millis().try_into().unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// A kubeconfig (cluster, user, context; current-context set) pointing at [`Self::url`], for
    /// clients configured the way the agent is (`--kubeconfig`).
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        write_kubeconfig(&self.url(), path)
    }

    /// Simulated outage: stops listening and aborts every open connection, watch streams
    /// included, so clients see connection errors. The store is kept. Returns once every
    /// connection is closed.
    pub fn stop(&self) {
        let Some(handle) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        handle.abort();
        let deadline = Instant::now() + Duration::from_secs(5);
        while (!handle.is_finished() || self.shared.live.load(Ordering::SeqCst) > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// End of the outage: listens again on the same port with the same store (changes made
    /// meanwhile are in the history, so watchers resume from their last version).
    pub fn restart(&self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let listener = bind(self.addr)?;
        self.spawn(listener)
    }

    /// Whether it is listening (not between [`Self::stop`] and [`Self::restart`]).
    pub fn is_running(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|h| !h.is_finished())
    }

    /// Forgets the event history: any watch that (re)starts from an older version gets 410 Gone,
    /// forcing clients to relist; open watch streams end with that 410 ERROR event.
    pub fn compact(&self) {
        self.shared.store.compact();
    }

    /// Creates or replaces one object of a known kind (`apiVersion`, `kind`, `metadata.name`,
    /// plus `metadata.namespace` for namespaced kinds), status included. Sets uid (if absent),
    /// creationTimestamp, resourceVersion, generation; emits ADDED or MODIFIED. Returns the stored
    /// object.
    pub fn apply(&self, obj: Value) -> anyhow::Result<Value> {
        let (res, ns, name, mut obj) = key_of(obj)?;
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        let (stored, _) = self
            .shared
            .store
            .modify(res, &ns, &name, |_| Ok(obj))
            .map_err(|e| anyhow!(e))?;
        Ok(stored.value.clone())
    }

    /// [`Self::apply`] for many objects under one lock (seeding 10k+ objects).
    pub fn apply_all(&self, objs: impl IntoIterator<Item = Value>) -> anyhow::Result<()> {
        let items = objs
            .into_iter()
            .map(key_of)
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.shared.store.upsert_many(items).map_err(|e| anyhow!(e))
    }

    /// Deletes one object; emits DELETED. `Ok(false)` when absent.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> anyhow::Result<bool> {
        let res = resource(api_version, kind)?;
        let ns = namespace_for(res, namespace)?;
        Ok(self
            .shared
            .store
            .delete(res, &ns, name, None)
            .map_err(|e| anyhow!(e))?
            .is_some())
    }

    /// One object, as a client would get it.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let res = resource(api_version, kind).ok()?;
        let ns = namespace_for(res, namespace).ok()?;
        self.shared
            .store
            .get(res, &ns, name)
            .map(|s| s.value.clone())
    }

    /// Every object of a kind, all namespaces, in (namespace, name) order.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Ok(res) = resource(api_version, kind) else {
            return Vec::new();
        };
        let (_, _, items) = self.shared.store.snapshot(res, None, |_| true);
        items.iter().map(|s| s.value.clone()).collect()
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.rv()
    }

    /// Every HTTP request served so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn resource(api_version: &str, kind: &str) -> anyhow::Result<usize> {
    resources::by_kind(api_version, kind)
        .ok_or_else(|| anyhow!("the emulator does not serve {api_version} {kind}"))
}

fn namespace_for(res: usize, ns: Option<&str>) -> anyhow::Result<String> {
    let def = &resources::RESOURCES[res];
    match (def.namespaced, ns.filter(|s| !s.is_empty())) {
        (true, Some(ns)) => Ok(ns.to_owned()),
        (true, None) => bail!("{} is namespaced: a namespace is required", def.kind),
        (false, _) => Ok(String::new()),
    }
}

/// (resource, namespace, name, object) of an object to store.
fn key_of(obj: Value) -> anyhow::Result<(usize, String, String, Value)> {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
    let res = resource(s("/apiVersion"), s("/kind"))?;
    let name = s("/metadata/name").to_owned();
    if name.is_empty() {
        bail!("object without metadata.name: {obj}");
    }
    let ns_field = s("/metadata/namespace");
    let ns = namespace_for(res, Some(ns_field))
        .with_context(|| format!("{} {name}", resources::RESOURCES[res].kind))?;
    Ok((res, ns, name, obj))
}

/// Writes a kubeconfig for `url` (no credentials: the emulator does not authenticate).
pub fn write_kubeconfig(url: &str, path: &Path) -> anyhow::Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: bulkhead-emulator\n  cluster:\n    server: {url}\n\
         users:\n- name: bulkhead-emulator\n  user: {{}}\ncontexts:\n- name: bulkhead-emulator\n  context:\n    \
         cluster: bulkhead-emulator\n    user: bulkhead-emulator\n    namespace: default\n\
         current-context: bulkhead-emulator\n"
    );
    let tmp = path.with_extension("tmp-bulkhead");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Reads objects from a YAML stream (`---`-separated) whose documents are objects or `kind: List`
/// (the agent's `file:` source format).
pub fn read_objects(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).context("parsing a YAML document")?;
        match v {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                if let Some(items) = m.get("items").and_then(Value::as_array) {
                    out.extend(items.iter().cloned());
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}
