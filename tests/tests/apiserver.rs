//! Conformance of the API server emulator against the real kube client (kube 5): typed lists and
//! watches through kube-runtime's reflector, selectors, bookmarks, 410 relists, outages,
//! status subresources, optimistic concurrency, and the `bulkhead-apiserver` binary.
//! No root needed.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
use std::{
    io::BufRead as _,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use bulkhead_tests::ApiServer;
use futures_util::StreamExt as _;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use kube::{
    Client, Config,
    api::{
        Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
        PostParams, WatchEvent, WatchParams,
    },
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt as _, reflector, watcher},
};
use serde_json::json;

fn temp_path(what: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "bulkhead-apiserver-test-{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

async fn client_for_kubeconfig(path: &std::path::Path) -> Client {
    let kc = Kubeconfig::read_from(path).expect("kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(cfg).expect("client")
}

async fn client(server: &ApiServer) -> Client {
    let path = temp_path("kubeconfig.yaml");
    server.write_kubeconfig(&path).expect("write kubeconfig");
    let c = client_for_kubeconfig(&path).await;
    let _ = std::fs::remove_file(&path);
    c
}

fn pod(ns: &str, name: &str, node: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "x"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]},
    })
}

async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running API server holding `pods`.
fn seeded(pods: impl IntoIterator<Item = serde_json::Value>) -> ApiServer {
    let server = ApiServer::start().expect("start");
    server.apply_all(pods).expect("seed");
    server
}

/// Waits (up to `timeout`) until `store` holds exactly the pods `want` (`namespace/name`, sorted).
async fn wait_for_pods(store: &reflector::Store<Pod>, timeout: Duration, want: &[&str]) {
    wait_until(&format!("the store to hold {want:?}"), timeout, || {
        names(store) == want
    })
    .await;
}

/// Asserts that `err` is an API status with `code` (and `reason`, when given).
fn assert_status(err: &kube::Error, code: u16, reason: Option<&str>) {
    assert!(
        matches!(err, kube::Error::Api(s) if s.code == code && reason.is_none_or(|r| s.reason == r)),
        "{err:?}"
    );
}

/// How many objects a list with `params` returns.
async fn listed<K>(api: &Api<K>, params: ListParams) -> usize
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&params).await.expect("list").items.len()
}

/// Asserts that a list with `params` (a selector the server cannot parse) fails with 400.
async fn refused_as_bad_request(api: &Api<Pod>, params: &ListParams) {
    let err = api.list(params).await.expect_err("a bad selector");
    assert_status(&err, 400, None);
}

/// Runs a reflector over `api` with `cfg`; returns its store.
fn spawn_reflector(api: Api<Pod>, cfg: watcher::Config) -> reflector::Store<Pod> {
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, cfg)).default_backoff();
    tokio::spawn(stream.for_each(|_| std::future::ready(())));
    reader
}

fn names(store: &reflector::Store<Pod>) -> Vec<String> {
    let mut v: Vec<String> = store
        .state()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default()
            )
        })
        .collect();
    v.sort();
    v
}

fn list_requests(server: &ApiServer, path: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == path && !r.query.contains("watch=true"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_sees_create_update_delete() {
    let server = seeded([
        pod("a", "p1", "n1", json!({"app": "web"})),
        pod("b", "p2", "n1", json!({"app": "db"})),
    ]);
    let store = spawn_reflector(Api::all(client(&server).await), watcher::Config::default());
    wait_for_pods(&store, Duration::from_secs(5), &["a/p1", "b/p2"]).await;
    let p1 = store
        .state()
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some("p1"))
        .expect("p1");
    assert_eq!(
        p1.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("10.0.0.1"),
        "in-process apply keeps status"
    );
    assert_eq!(p1.metadata.uid.as_ref().map(String::len), Some(36));

    server
        .apply(pod("a", "p3", "n1", json!({})))
        .expect("create");
    server
        .apply(pod("a", "p1", "n1", json!({"app": "web", "v": "2"})))
        .expect("update");
    assert!(server.delete("v1", "Pod", Some("b"), "p2").expect("delete"));
    assert!(
        !server
            .delete("v1", "Pod", Some("b"), "p2")
            .expect("delete again")
    );
    wait_until("changes", Duration::from_secs(5), || {
        names(&store) == ["a/p1", "a/p3"]
            && store.state().iter().any(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.get("v").map(String::as_str) == Some("2"))
            })
    })
    .await;
    // Through the client too: the typed API sees what the store holds.
    let api: Api<Pod> = Api::namespaced(client(&server).await, "a");
    let got = api.get("p1").await.expect("get");
    assert_eq!(
        got.metadata.resource_version,
        server
            .get("v1", "Pod", Some("a"), "p1")
            .and_then(|v| v["metadata"]["resourceVersion"].as_str().map(str::to_owned))
    );
    let err = api.get("nope").await.expect_err("absent");
    assert_status(&err, 404, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_selector_filters_lists_and_watches() {
    let server = seeded([
        pod("a", "on1", "n1", json!({})),
        pod("a", "on2", "n2", json!({})),
    ]);
    let c = client(&server).await;
    let api: Api<Pod> = Api::all(c.clone());
    let listed = api
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    let store = spawn_reflector(
        api.clone(),
        watcher::Config::default().fields("spec.nodeName=n1"),
    );
    wait_for_pods(&store, Duration::from_secs(5), &["a/on1"]).await;
    // Moving onto the node = ADDED, moving away = DELETED, for the filtered watch.
    server
        .apply(pod("a", "on2", "n1", json!({})))
        .expect("move");
    server
        .apply(pod("a", "on1", "n2", json!({})))
        .expect("move");
    server
        .apply(pod("b", "other", "n2", json!({})))
        .expect("unrelated");
    wait_for_pods(&store, Duration::from_secs(5), &["a/on2"]).await;
    refused_as_bad_request(&api, &ListParams::default().fields("spec.bogus=1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selector_filters_lists_and_watches() {
    let server = seeded([
        pod("a", "web", "n1", json!({"app": "web", "tier": "front"})),
        pod("a", "db", "n1", json!({"app": "db"})),
        pod("b", "cache", "n1", json!({"app": "cache"})),
    ]);
    let c = client(&server).await;
    let api: Api<Pod> = Api::all(c.clone());
    let n = |l: &str| listed(&api, ListParams::default().labels(l));
    assert_eq!(n("app in (web,db)").await, 2);
    assert_eq!(n("app notin (web,db)").await, 1);
    assert_eq!(n("tier").await, 1);
    assert_eq!(n("!tier,app!=cache").await, 1);
    assert_eq!(n("app=web,tier=front").await, 1);
    let ns_a: Api<Pod> = Api::namespaced(c.clone(), "a");
    assert_eq!(listed(&ns_a, ListParams::default()).await, 2);
    let store = spawn_reflector(api.clone(), watcher::Config::default().labels("app=web"));
    wait_for_pods(&store, Duration::from_secs(5), &["a/web"]).await;
    server
        .apply(pod("a", "web", "n1", json!({"app": "other"})))
        .expect("relabel");
    server
        .apply(pod("a", "db", "n1", json!({"app": "web"})))
        .expect("relabel");
    wait_for_pods(&store, Duration::from_secs(5), &["a/db"]).await;
    refused_as_bad_request(&api, &ListParams::default().labels("app in (x")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_arrive_and_timeouts_end_watches() {
    let server = ApiServer::start().expect("start");
    server.set_bookmark_interval(Duration::from_millis(100));
    server.apply(pod("a", "p", "n1", json!({}))).expect("seed");
    let rv = server.resource_version();
    let api: Api<Pod> = Api::all(client(&server).await);
    let started = Instant::now();
    let stream = api
        .watch(&WatchParams::default().timeout(1), &rv.to_string())
        .await
        .expect("watch");
    let events: Vec<_> = stream.collect().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the stream must end after timeoutSeconds"
    );
    let bookmarks: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Ok(WatchEvent::Bookmark(b)) => Some(b.metadata.resource_version.clone()),
            _ => None,
        })
        .collect();
    assert!(bookmarks.len() >= 3, "{events:?}");
    assert!(
        bookmarks.iter().all(|b| *b == rv.to_string()),
        "{bookmarks:?}"
    );
    // From "0": the current state as ADDED events first.
    let stream = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .expect("watch");
    let first = stream.boxed().next().await.expect("an event").expect("ok");
    assert!(matches!(first, WatchEvent::Added(ref p) if p.metadata.name.as_deref() == Some("p")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_forces_a_relist_and_the_store_ends_correct() {
    let server = ApiServer::start().expect("start");
    server.apply(pod("a", "p1", "n1", json!({}))).expect("seed");
    let api: Api<Pod> = Api::all(client(&server).await);
    let store = spawn_reflector(api.clone(), watcher::Config::default());
    wait_for_pods(&store, Duration::from_secs(5), &["a/p1"]).await;
    assert_eq!(list_requests(&server, "/api/v1/pods"), 1);
    let old_rv = server.resource_version();
    server.apply(pod("a", "p2", "n1", json!({}))).expect("add");
    server.compact();
    server.delete("v1", "Pod", Some("a"), "p1").expect("delete");
    server.apply(pod("a", "p3", "n1", json!({}))).expect("add");
    wait_until("relist", Duration::from_secs(10), || {
        names(&store) == ["a/p2", "a/p3"] && list_requests(&server, "/api/v1/pods") >= 2
    })
    .await;
    // A watch from before the compaction gets the 410 ERROR event.
    let mut s = api
        .watch(&WatchParams::default().timeout(5), &old_rv.to_string())
        .await
        .expect("watch")
        .boxed();
    match s.next().await {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(s.next().await.is_none(), "the stream ends after the error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_keeps_the_store_and_catches_up_after_restart() {
    let server = ApiServer::start().expect("start");
    server.set_bookmark_interval(Duration::from_millis(200));
    server
        .apply_all([
            pod("a", "p1", "n1", json!({})),
            pod("a", "p2", "n1", json!({})),
        ])
        .expect("seed");
    let api: Api<Pod> = Api::all(client(&server).await);
    let store = spawn_reflector(api.clone(), watcher::Config::default());
    wait_for_pods(&store, Duration::from_secs(5), &["a/p1", "a/p2"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a bookmark
    let addr = server.addr();
    server.stop();
    assert!(!server.is_running());
    assert!(std::net::TcpStream::connect(addr).is_err(), "not listening");
    server
        .delete("v1", "Pod", Some("a"), "p1")
        .expect("delete while down");
    server
        .apply(pod("a", "p3", "n1", json!({})))
        .expect("add while down");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        names(&store),
        ["a/p1", "a/p2"],
        "the store is kept during the outage"
    );
    let failed_watches = server.requests().len();
    server.restart().expect("restart");
    assert!(server.is_running());
    assert_eq!(server.addr(), addr);
    wait_for_pods(&store, Duration::from_secs(15), &["a/p2", "a/p3"]).await;
    // It resumed the watch from its last version (the outage's changes are in the history): no relist.
    assert_eq!(
        list_requests(&server, "/api/v1/pods"),
        1,
        "{:?}",
        server.requests()
    );
    assert!(server.requests().len() > failed_watches);
}

fn firewall_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("bulkhead.dev", "v1alpha1", "NamespaceFirewall"),
        "namespacefirewalls",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_changes_only_status() {
    let server = ApiServer::start().expect("start");
    let ar = firewall_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client(&server).await, "team", &ar);
    let mut obj = DynamicObject::new("fw", &ar).within("team");
    obj.data = json!({"spec": {"mode": "enforce"}, "status": {"ignored": true}});
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    assert_eq!(created.data.get("status"), None, "create ignores status");
    assert_eq!(created.metadata.generation, Some(1));
    let err = api
        .create(&PostParams::default(), &obj)
        .await
        .expect_err("exists");
    assert_status(&err, 409, Some("AlreadyExists"));

    let patched = api
        .patch_status(
            "fw",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "audit"}, "status": {"observedGeneration": 1, "ready": true}})),
        )
        .await
        .expect("patch status");
    assert_eq!(patched.data["spec"]["mode"], "enforce", "spec untouched");
    assert_eq!(patched.data["status"]["ready"], true);
    assert_eq!(patched.metadata.generation, Some(1));

    let patched = api
        .patch(
            "fw",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "audit"}, "status": {"ready": false}})),
        )
        .await
        .expect("patch main");
    assert_eq!(patched.data["spec"]["mode"], "audit");
    assert_eq!(patched.data["status"]["ready"], true, "status untouched");
    assert_eq!(patched.metadata.generation, Some(2));

    // JSON patch and server-side apply.
    let patched = api
        .patch(
            "fw",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(
                    json!([{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]),
                )
                .expect("json patch"),
            ),
        )
        .await
        .expect("json patch");
    assert_eq!(
        patched
            .metadata
            .labels
            .and_then(|l| l.get("a").cloned())
            .as_deref(),
        Some("b")
    );
    let applied = api
        .patch(
            "fw2",
            &PatchParams::apply("test"),
            &Patch::Apply(
                json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "NamespaceFirewall",
                                 "metadata": {"name": "fw2"}, "spec": {"mode": "enforce"}}),
            ),
        )
        .await
        .expect("apply creates");
    assert_eq!(applied.data["spec"]["mode"], "enforce");
    let deleted = api
        .delete("fw2", &Default::default())
        .await
        .expect("delete");
    assert!(deleted.is_left());
    assert!(
        server
            .get(
                "bulkhead.dev/v1alpha1",
                "NamespaceFirewall",
                Some("team"),
                "fw2"
            )
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_optimistic_concurrency() {
    let server = ApiServer::start().expect("start");
    let api: Api<Lease> = Api::namespaced(client(&server).await, "kube-system");
    let mut lease = Lease::default();
    lease.metadata.name = Some("bulkhead-status".into());
    lease.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
        holder_identity: Some("a".into()),
        ..Default::default()
    });
    let created = api
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    let mut mine = created.clone();
    mine.spec.as_mut().expect("spec").holder_identity = Some("b".into());
    let replaced = api
        .replace("bulkhead-status", &PostParams::default(), &mine)
        .await
        .expect("replace with the current version");
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    // `mine` still carries the old resourceVersion: someone else won.
    let err = api
        .replace("bulkhead-status", &PostParams::default(), &mine)
        .await
        .expect_err("stale");
    assert_status(&err, 409, Some("Conflict"));
    let mut absent = created.clone();
    absent.metadata.name = Some("other".into());
    absent.metadata.resource_version = None;
    let err = api
        .replace("other", &PostParams::default(), &absent)
        .await
        .expect_err("absent");
    assert_status(&err, 404, None);
    let got = api.get("bulkhead-status").await.expect("get");
    assert_eq!(
        got.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pods_list_fast() {
    let server = ApiServer::start().expect("start");
    let t = Instant::now();
    server
        .apply_all((0..10_000).map(|i| {
            pod(
                &format!("ns-{}", i % 1000),
                &format!("p-{i}"),
                "n1",
                json!({"app": "x"}),
            )
        }))
        .expect("seed");
    let seeded = t.elapsed();
    let api: Api<Pod> = Api::all(client(&server).await);
    let t = Instant::now();
    let list = api.list(&ListParams::default()).await.expect("list");
    let listed = t.elapsed();
    assert_eq!(list.items.len(), 10_000);
    eprintln!("seeded 10k pods in {seeded:?}, listed (client decode included) in {listed:?}");
    // Server side only: raw bytes.
    let t = Instant::now();
    let req = http::Request::get("/api/v1/pods")
        .body(Vec::new())
        .expect("req");
    let bytes = client(&server)
        .await
        .request_text(req)
        .await
        .expect("raw list");
    let raw_time = t.elapsed();
    eprintln!("raw list of {} bytes in {raw_time:?}", bytes.len());
    assert!(raw_time < Duration::from_secs(1), "{raw_time:?}");
}

#[test]
fn binary_serves_objects_from_files() {
    let objects = temp_path("objects.yaml");
    std::fs::write(
        &objects,
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: team}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: team}\nspec: {nodeName: n1, containers: []}\n\
         ---\napiVersion: bulkhead.dev/v1alpha1\nkind: ClusterFirewall\nmetadata: {name: default}\nspec: {}\n",
    )
    .expect("write objects");
    let kubeconfig = temp_path("kubeconfig.yaml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead-apiserver"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--objects")
        .arg(&objects)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert!(line.starts_with("ready http://127.0.0.1:"), "{line:?}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let c = client_for_kubeconfig(&kubeconfig).await;
        let pods: Api<Pod> = Api::namespaced(c.clone(), "team");
        let names: Vec<_> = pods
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        assert_eq!(names, ["web"]);
        let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.clone());
        assert!(nss.get("team").await.is_ok());
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("bulkhead.dev", "v1alpha1", "ClusterFirewall"),
            "clusterfirewalls",
        );
        let cf: Api<DynamicObject> = Api::all_with(c, &ar);
        assert_eq!(listed(&cf, ListParams::default()).await, 1);
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_file(&objects);
    let _ = std::fs::remove_file(&kubeconfig);
}
