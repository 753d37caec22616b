//! A simulated node whose agent reads the cluster from the API server emulator
//! (`--source kube`), with shorthands to change the cluster through it.
use std::{
    ops::Deref,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use bulkhead_tests::apiserver::ApiServer;
use serde_json::Value;

use super::{
    agent::Agent,
    http::free_port,
    node::{Node, docs},
};

/// The namespace the agent runs in (its status Lease lives there).
pub const AGENT_NAMESPACE: &str = "bulkhead-system";

/// A testbed, an API server serving its objects, and the kubeconfig the agent uses.
pub struct KubeNode {
    node: Node,
    /// The emulator (outages, compaction, direct object access).
    pub api: ApiServer,
    kubeconfig: PathBuf,
}

impl Deref for KubeNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

/// One YAML document as a JSON value.
pub fn object(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).expect("object YAML")
}

impl KubeNode {
    /// Brings up the scenario and serves its objects plus `objects`, leaving out the Pod objects
    /// named in `hidden` (`ns/name`: pods that run but the API does not know yet).
    pub fn up(name: &str, subnet: u8, pods: &str, objects: &[&str], hidden: &[&str]) -> KubeNode {
        let node = Node::up(name, subnet, pods, &[]);
        let api = ApiServer::start().expect("API server emulator");
        let kubeconfig = node.dir().join("kubeconfig.yaml");
        api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let mut all: Vec<Value> = node
            .testbed()
            .source_objects(&docs(objects))
            .expect("scenario objects")
            .into_iter()
            .map(|o| serde_json::to_value(o).expect("object as JSON"))
            .collect();
        all.retain(|o| {
            let key = format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            !(o["kind"] == "Pod" && hidden.contains(&key.as_str()))
        });
        all.push(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": AGENT_NAMESPACE, "labels": {"kubernetes.io/metadata.name": AGENT_NAMESPACE}},
        }));
        api.apply_all(all).expect("seeding the API server");
        KubeNode {
            node,
            api,
            kubeconfig,
        }
    }

    /// Starts the agent on this node, reading the emulator.
    pub fn agent(&self, extra: &[&str]) -> Agent {
        let mut args = vec!["--lease-namespace", AGENT_NAMESPACE];
        args.extend_from_slice(extra);
        Agent::start_kube(
            &self.kubeconfig,
            self.testbed().cgroup_root(),
            "node-1",
            &args,
        )
    }

    /// Starts the agent with its metrics and health endpoints on a free local port; returns it
    /// and the port.
    pub fn agent_with_metrics(&self) -> (Agent, u16) {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        (self.agent(&["--metrics-addr", &addr]), port)
    }

    /// The Pod object the testbed would serve for pod `key` (`ns/name`).
    pub fn pod_object(&self, key: &str) -> Value {
        let (ns, name) = key.split_once('/').expect("ns/name");
        self.testbed()
            .source_objects(&[])
            .expect("scenario objects")
            .into_iter()
            .map(|o| serde_json::to_value(o).expect("object as JSON"))
            .find(|o| {
                o["kind"] == "Pod"
                    && o["metadata"]["namespace"] == ns
                    && o["metadata"]["name"] == name
            })
            .unwrap_or_else(|| panic!("no pod {key} in the scenario"))
    }

    /// Creates or replaces an object given as YAML.
    pub fn apply(&self, yaml: &str) -> Value {
        self.api.apply(object(yaml)).expect("apply")
    }

    /// Runs the real `kubectl` against the emulator, as a user would; its stdout. Panics with
    /// its stderr when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        super::stdout_of(
            std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--cache-dir")
                .arg(self.dir().join("kubectl-cache"))
                .args(args),
            &format!("kubectl {}", args.join(" ")),
        )
    }

    /// The Warning Events about an object (`kind`, `name`) in `namespace`, via `kubectl`.
    pub fn events_about(&self, namespace: &str, kind: &str, name: &str) -> Vec<Value> {
        let list: Value = serde_json::from_str(&self.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-n",
            namespace,
            "-o",
            "json",
        ]))
        .expect("kubectl -o json");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["regarding"]["kind"] == kind && e["regarding"]["name"] == name)
            .cloned()
            .collect()
    }

    /// The `Accepted` condition of a policy object, if written.
    pub fn accepted(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let o = self
            .api
            .get("bulkhead.dev/v1alpha1", kind, namespace, name)?;
        o["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Accepted")
            .cloned()
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`; returns the value and
/// how long it took.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        thread::sleep(Duration::from_millis(20));
    }
}
