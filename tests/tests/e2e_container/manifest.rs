//! What a kubelet would ask the container runtime for, read from a rendered variant of `deploy/`
//! (the DaemonSet's agent container and the ConfigMap it takes its environment from). Nothing
//! here restates a setting: every value comes from the manifests.
use std::path::{Path, PathBuf};

use bulkhead_tests::kustomize::{Object, render};
use serde_yaml::Value;

/// The seccomp profile the pod asks for.
#[derive(Debug, Clone)]
pub enum Seccomp {
    /// The runtime's default profile.
    RuntimeDefault,
    /// A profile file on the node: the variant's directory stands in for the kubelet's
    /// seccomp root (/var/lib/kubelet/seccomp), as the install instructions provision it.
    Localhost(PathBuf),
}

/// A hostPath volume and where the container mounts it.
#[derive(Debug, Clone)]
pub struct Mount {
    pub host: PathBuf,
    pub container: PathBuf,
    pub read_only: bool,
    /// `mountPropagation` (None, HostToContainer, Bidirectional); absent means None.
    pub propagation: Option<String>,
}

/// The agent container as the manifests define it.
#[derive(Debug, Clone)]
pub struct AgentPod {
    pub image: String,
    pub command: Vec<String>,
    /// `args` with `$(VAR)` references expanded from `env`, as the kubelet does.
    pub args: Vec<String>,
    /// `env` (fieldRefs resolved) then the ConfigMap's `data`.
    pub env: Vec<(String, String)>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub read_only_root: bool,
    pub run_as_user: Option<u64>,
    pub allow_privilege_escalation: bool,
    pub seccomp: Seccomp,
    pub host_network: bool,
    pub mounts: Vec<Mount>,
    pub memory_limit: Option<String>,
    pub cpu_limit: Option<String>,
    /// `readinessProbe.httpGet`: path and container port.
    pub ready: (String, u16),
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

fn str_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// Renders `deploy/<variant>` (`""`: the base) and reads the agent container, as scheduled on
/// node `node_name`.
pub fn load(variant: &str, node_name: &str) -> AgentPod {
    let dir = deploy_dir().join(variant);
    let objs = render(&dir).unwrap_or_else(|e| panic!("rendering {}: {e:#}", dir.display()));
    let ds = find(&objs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    let env = environment(&objs, ds, c, node_name);
    let seccomp_of = |v: &Value| v["type"].as_str().map(|_| v.clone());
    let seccomp = seccomp_of(&sc["seccompProfile"])
        .or_else(|| seccomp_of(&pod["securityContext"]["seccompProfile"]))
        .expect("a seccompProfile");
    let seccomp = match seccomp["type"].as_str() {
        Some("RuntimeDefault") => Seccomp::RuntimeDefault,
        Some("Localhost") => Seccomp::Localhost(
            dir.join(
                seccomp["localhostProfile"]
                    .as_str()
                    .expect("localhostProfile"),
            ),
        ),
        other => panic!("seccompProfile {other:?} is not handled by this test"),
    };
    let port_name = &c["readinessProbe"]["httpGet"]["port"];
    let port = c["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|p| &p["name"] == port_name || &p["containerPort"] == port_name)
        .and_then(|p| p["containerPort"].as_u64())
        .expect("the readiness probe's port");
    AgentPod {
        image: str_of(&c["image"]).expect("image"),
        command: strs(&c["command"]),
        args: strs(&c["args"]).iter().map(|a| expand(a, &env)).collect(),
        cap_add: strs(&sc["capabilities"]["add"]),
        cap_drop: strs(&sc["capabilities"]["drop"]),
        privileged: sc["privileged"].as_bool().unwrap_or(false),
        read_only_root: sc["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
        run_as_user: sc["runAsUser"].as_u64(),
        allow_privilege_escalation: sc["allowPrivilegeEscalation"].as_bool().unwrap_or(true),
        seccomp,
        host_network: pod["hostNetwork"].as_bool().unwrap_or(false),
        mounts: mounts(pod, c),
        memory_limit: str_of(&c["resources"]["limits"]["memory"]),
        cpu_limit: str_of(&c["resources"]["limits"]["cpu"]),
        ready: (
            str_of(&c["readinessProbe"]["httpGet"]["path"]).expect("readiness path"),
            u16::try_from(port).expect("a port"),
        ),
        env,
    }
}

/// The repository's deploy/ directory.
pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn find<'a>(objs: &'a [Object], kind: &str) -> &'a Value {
    let mut all = objs.iter().filter(|o| o.kind() == kind);
    let one = all.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(all.next().is_none(), "more than one {kind}");
    &one.value
}

/// `env` (the fieldRefs a DaemonSet pod resolves) followed by every `envFrom` ConfigMap.
fn environment(objs: &[Object], ds: &Value, c: &Value, node: &str) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for e in c["env"].as_sequence().into_iter().flatten() {
        let name = str_of(&e["name"]).expect("env name");
        let value = match (
            e["value"].as_str(),
            e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Some(v), _) => v.to_owned(),
            (None, Some("spec.nodeName")) => node.to_owned(),
            (None, Some("metadata.namespace")) => {
                str_of(&ds["metadata"]["namespace"]).expect("the DaemonSet's namespace")
            }
            (None, other) => panic!("env {name}: {other:?} is not handled by this test"),
        };
        env.push((name, value));
    }
    for from in c["envFrom"].as_sequence().into_iter().flatten() {
        let cm = from["configMapRef"]["name"].as_str().expect("configMapRef");
        let data = objs
            .iter()
            .find(|o| o.kind() == "ConfigMap" && o.name() == cm)
            .map(|o| o.value["data"].clone())
            .unwrap_or_else(|| panic!("ConfigMap {cm} is not in the variant"));
        for (k, v) in data.as_mapping().into_iter().flatten() {
            env.push((
                str_of(k).expect("a key"),
                str_of(v).expect("ConfigMap values are strings"),
            ));
        }
    }
    env
}

/// `$(VAR)` references in an argument, as the kubelet expands them.
fn expand(arg: &str, env: &[(String, String)]) -> String {
    env.iter()
        .fold(arg.to_owned(), |a, (k, v)| a.replace(&format!("$({k})"), v))
}

fn mounts(pod: &Value, c: &Value) -> Vec<Mount> {
    let volume = |name: &Value| {
        pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| &v["name"] == name)
            .and_then(|v| v["hostPath"]["path"].as_str())
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("volume {name:?} is not a hostPath"))
    };
    c["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|m| Mount {
            host: volume(&m["name"]),
            container: PathBuf::from(m["mountPath"].as_str().expect("mountPath")),
            read_only: m["readOnly"].as_bool().unwrap_or(false),
            propagation: str_of(&m["mountPropagation"]),
        })
        .collect()
}

impl AgentPod {
    /// Where a host path appears in the container (through the hostPath mounts).
    pub fn in_container(&self, host: &Path) -> PathBuf {
        self.mounts
            .iter()
            .filter_map(|m| {
                host.strip_prefix(&m.host)
                    .ok()
                    .map(|rest| m.container.join(rest))
            })
            .next()
            .unwrap_or_else(|| panic!("{} is not below a hostPath mount", host.display()))
    }

    /// Where a container path is on the host (the inverse of [`AgentPod::in_container`]).
    pub fn on_host(&self, container: &Path) -> PathBuf {
        self.mounts
            .iter()
            .filter_map(|m| {
                container
                    .strip_prefix(&m.container)
                    .ok()
                    .map(|rest| m.host.join(rest))
            })
            .next()
            .unwrap_or_else(|| panic!("{} is not below a hostPath mount", container.display()))
    }

    /// The value of flag `--name=` in the args.
    pub fn arg(&self, name: &str) -> Option<&str> {
        let prefix = format!("--{name}=");
        self.args.iter().find_map(|a| a.strip_prefix(&prefix))
    }

    /// The args with `--name=` replaced by `--name=value`.
    pub fn replace_arg(&mut self, name: &str, value: &str) {
        let prefix = format!("--{name}=");
        let arg = self
            .args
            .iter_mut()
            .find(|a| a.starts_with(&prefix))
            .unwrap_or_else(|| panic!("the DaemonSet has no --{name}="));
        *arg = format!("{prefix}{value}");
    }
}
