//! The agent from its image (`cargo xtask image`), run by a real container engine (podman + runc)
//! with the security settings, mounts, env and args READ FROM deploy/ (never restated here):
//! under the shipped Localhost seccomp profile it enforces on real packets, reports ready, and
//! keeps enforcing across `podman kill` and a new container on the same pins; under the engine's
//! own default profile (CRI-O's RuntimeDefault) the base DaemonSet cannot create a map.
//! Needs root and podman; skips loudly otherwise (CI runs it: bootstrap installs podman and runc).
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use bulkhead_tests::{
    policy::{admit, baseline},
    require_root,
};
use common::{agent::agent_bin, http::http_status, node::Node};
use serde_yaml::Value;

const PODS: &str = r#"
namespaces:
  - {name: a}
  - {name: b}
  - {name: c}
pods:
  - {name: client, namespace: a}
  - {name: server, namespace: b, serve: [{protocol: TCP, port: 80}]}
  - {name: server, namespace: c, serve: [{protocol: TCP, port: 80}]}
"#;
const NAME: &str = "bulkhead-e2e-agent";
/// Where the test mounts the testbed's source file: an addition of this test (a cluster node
/// uses `--source=kube`, which needs an API server).
const SOURCE_DIR: &str = "/bulkhead-e2e";

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// The agent container of the DaemonSet, with a kustomize component's container patch (if any)
/// laid over its `securityContext`.
struct Manifests {
    ds: Value,
    container: Value,
}

impl Manifests {
    fn load(component: Option<&str>) -> Manifests {
        let ds = yaml("deploy/daemonset.yaml");
        let mut container = ds["spec"]["template"]["spec"]["containers"][0].clone();
        if let Some(dir) = component {
            let kust = yaml(&format!("{dir}/kustomization.yaml"));
            for patch in kust["patches"].as_sequence().expect("patches") {
                let p = yaml(&format!("{dir}/{}", patch["path"].as_str().expect("path")));
                let pc = &p["spec"]["template"]["spec"]["containers"][0];
                assert_eq!(pc["name"], container["name"], "patch targets the agent");
                let sc = container["securityContext"]
                    .as_mapping_mut()
                    .expect("securityContext");
                for (k, v) in pc["securityContext"].as_mapping().expect("patch") {
                    sc.insert(k.clone(), v.clone());
                }
            }
        }
        Manifests { ds, container }
    }

    fn pod(&self) -> &Value {
        &self.ds["spec"]["template"]["spec"]
    }

    /// Env as the kubelet would set it: the ConfigMap (envFrom), then `env` (fieldRefs resolved
    /// for node `node`).
    fn env(&self, node: &str) -> Vec<(String, String)> {
        let cm = yaml("deploy/configmap.yaml");
        let mut env: Vec<(String, String)> = cm["data"]
            .as_mapping()
            .expect("ConfigMap data")
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().expect("key").into(),
                    v.as_str().expect("value").into(),
                )
            })
            .collect();
        for e in self.container["env"].as_sequence().into_iter().flatten() {
            let name = e["name"].as_str().expect("env name").to_owned();
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("spec.nodeName") => node.to_owned(),
                Some("metadata.namespace") => self.ds["metadata"]["namespace"]
                    .as_str()
                    .expect("ns")
                    .into(),
                Some(other) => panic!("fieldRef {other} not modelled"),
                None => e["value"].as_str().expect("env value").into(),
            };
            env.push((name, value));
        }
        env
    }

    /// Host path, container path, podman options of each hostPath volume mount.
    fn mounts(&self) -> Vec<(String, String, String)> {
        let vols = self.pod()["volumes"].as_sequence().expect("volumes");
        let mounts = self.container["volumeMounts"]
            .as_sequence()
            .expect("mounts");
        mounts
            .iter()
            .map(|m| {
                let vol = vols
                    .iter()
                    .find(|v| v["name"] == m["name"])
                    .expect("volume of mount");
                let host = vol["hostPath"]["path"]
                    .as_str()
                    .expect("hostPath")
                    .to_owned();
                let mut opts = vec![if m["readOnly"].as_bool() == Some(true) {
                    "ro"
                } else {
                    "rw"
                }];
                // Kubernetes' names for the propagation modes, as mount(8) calls them.
                opts.push(match m["mountPropagation"].as_str() {
                    None | Some("None") => "rprivate",
                    Some("HostToContainer") => "rslave",
                    Some("Bidirectional") => "rshared",
                    Some(other) => panic!("mountPropagation {other}"),
                });
                let path = m["mountPath"].as_str().expect("mountPath").to_owned();
                (host, path, opts.join(","))
            })
            .collect()
    }

    /// Where a host path appears inside the container (through the mounts above).
    fn in_container(&self, host: &Path) -> String {
        self.mounts()
            .into_iter()
            .find_map(|(h, c, _)| {
                let rest = host.strip_prefix(&h).ok()?;
                Some(Path::new(&c).join(rest).display().to_string())
            })
            .unwrap_or_else(|| panic!("{} is not below any DaemonSet mount", host.display()))
    }
}

/// `seccompProfile` (container over pod) as podman's `--security-opt`; RuntimeDefault is the
/// engine's own default, i.e. no option.
fn seccomp_opts(m: &Manifests) -> Vec<String> {
    let sc = &m.container["securityContext"]["seccompProfile"];
    let p = if sc.is_mapping() {
        sc
    } else {
        &m.pod()["securityContext"]["seccompProfile"]
    };
    match p["type"].as_str() {
        Some("RuntimeDefault") => vec![],
        // The file the node provisioning installs below /var/lib/kubelet/seccomp/.
        Some("Localhost") => {
            let file = p["localhostProfile"].as_str().expect("localhostProfile");
            vec![format!(
                "seccomp={}",
                repo("deploy/seccomp").join(file).display()
            )]
        }
        other => panic!("seccompProfile {other:?} is not allowed"),
    }
    .into_iter()
    .flat_map(|o| ["--security-opt".to_owned(), o])
    .collect()
}

/// `podman run` arguments from the manifests.
fn security_args(m: &Manifests) -> Vec<String> {
    let sc = &m.container["securityContext"];
    assert_ne!(sc["privileged"].as_bool(), Some(true), "never privileged");
    let mut a = vec![];
    for c in strs(&sc["capabilities"]["drop"]) {
        a.extend(["--cap-drop".to_owned(), c]);
    }
    for c in strs(&sc["capabilities"]["add"]) {
        a.extend(["--cap-add".to_owned(), c]);
    }
    if sc["readOnlyRootFilesystem"].as_bool() == Some(true) {
        // Kubernetes mounts no tmpfs over a read-only root; podman would by default.
        a.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    if sc["allowPrivilegeEscalation"].as_bool() == Some(false) {
        a.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    let user = sc["runAsUser"].as_u64().expect("runAsUser");
    a.extend(["--user".into(), user.to_string()]);
    a.extend(seccomp_opts(m));
    if m.pod()["hostNetwork"].as_bool() == Some(true) {
        a.extend(["--network".into(), "host".into()]);
    }
    a
}

/// The DaemonSet's args with `$(VAR)` expanded from `env`, and the two test overrides.
fn agent_args(m: &Manifests, env: &[(String, String)], cgroup_root: &str) -> Vec<String> {
    let source = format!("--source=file:{SOURCE_DIR}/cluster.yaml");
    let cgroup = format!("--cgroup-root={cgroup_root}");
    strs(&m.container["args"])
        .into_iter()
        .map(|arg| {
            let arg = env
                .iter()
                .fold(arg, |a, (k, v)| a.replace(&format!("$({k})"), v));
            if arg.starts_with("--source=") {
                source.clone()
            } else if arg.starts_with("--cgroup-root=") {
                // The DaemonSet attaches at the host's cgroup2 root; the test attaches at the
                // testbed's cgroup below it (the same mount, seen through the same volume), so
                // the rest of the host is not filtered. On this hybrid host cgroup2 is at
                // /sys/fs/cgroup/unified, which the override also reaches.
                cgroup.clone()
            } else {
                arg
            }
        })
        .collect()
}

fn metrics_port(m: &Manifests) -> u16 {
    let ports = m.container["ports"].as_sequence().expect("ports");
    let p = ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("metrics port");
    u16::try_from(p["containerPort"].as_u64().expect("containerPort")).expect("port")
}

/// The image, built by the same code path as `cargo xtask image`.
fn image() -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["xtask", "image"])
        .current_dir(repo(""))
        .status()
        .expect("cargo xtask image");
    assert!(status.success(), "cargo xtask image failed");
    let img = yaml("deploy/daemonset.yaml")["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("image")
        .to_owned();
    format!("localhost/{img}")
}

/// One agent container, attached (its stdout is the violation log).
struct Container {
    child: Option<Child>,
    out: std::sync::Arc<std::sync::Mutex<(String, String)>>,
}

fn podman() -> Command {
    let mut c = Command::new("podman");
    // crun refuses this host's hybrid cgroup layout; runc runs it.
    c.args(["--runtime", "runc"]);
    c
}

impl Container {
    fn start(m: &Manifests, image: &str, node: &Node) -> Container {
        let env = m.env("node-1");
        let root = m.in_container(node.testbed().cgroup_root());
        let mut cmd = podman();
        cmd.args(["run", "--rm", "--pull=never", "--name", NAME])
            // This sandbox's hard limits are below podman's defaults.
            .args([
                "--ulimit",
                "nofile=20000:20000",
                "--ulimit",
                "nproc=1000:1000",
            ])
            // What the kubelet gives a container on a cgroup v2 node (podman's default on a
            // hybrid host would be the host's namespace).
            .args(["--cgroupns", "private"])
            .args(security_args(m));
        if m.pod()["hostNetwork"].as_bool() != Some(true) {
            let p = metrics_port(m);
            cmd.args(["--publish", &format!("127.0.0.1:{p}:{p}")]);
        }
        for (host, path, opts) in m.mounts() {
            cmd.args(["--volume", &format!("{host}:{path}:{opts}")]);
        }
        cmd.args([
            "--volume",
            &format!("{}:{SOURCE_DIR}:ro", node.dir().display()),
        ]);
        for (k, v) in &env {
            cmd.args(["--env", &format!("{k}={v}")]);
        }
        let command = strs(&m.container["command"]);
        cmd.args(["--entrypoint", &command[0]])
            .arg(image)
            .args(agent_args(m, &env, &root))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        eprintln!("{cmd:?}");
        let mut child = cmd.spawn().expect("podman run");
        let out = std::sync::Arc::new(std::sync::Mutex::new((String::new(), String::new())));
        pump(child.stdout.take().expect("stdout"), out.clone(), true);
        pump(child.stderr.take().expect("stderr"), out.clone(), false);
        Container {
            child: Some(child),
            out,
        }
    }

    fn stdout(&self) -> String {
        self.out.lock().expect("lock").0.clone()
    }

    fn stderr(&self) -> String {
        self.out.lock().expect("lock").1.clone()
    }

    /// Waits for `pred` on (stdout, stderr) or the container's exit.
    fn wait(&mut self, what: &str, pred: impl Fn(&str, &str) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if pred(&self.stdout(), &self.stderr()) {
                return true;
            }
            if let Some(c) = self.child.as_mut()
                && c.try_wait().ok().flatten().is_some()
            {
                thread::sleep(Duration::from_millis(200));
                return pred(&self.stdout(), &self.stderr());
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}:\n{}", self.stderr());
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// `podman kill` (SIGKILL, as an OOM kill): no shutdown code runs.
    fn kill(mut self) {
        let _ = podman().args(["kill", NAME]).status();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = podman().args(["rm", "--force", NAME]).status();
            let _ = c.wait();
        }
    }
}

fn pump(
    r: impl std::io::Read + Send + 'static,
    sink: std::sync::Arc<std::sync::Mutex<(String, String)>>,
    stdout: bool,
) {
    thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            eprintln!("[container] {line}");
            let mut s = sink.lock().expect("lock");
            let buf = if stdout { &mut s.0 } else { &mut s.1 };
            buf.push_str(&line);
            buf.push('\n');
        }
    });
}

fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = http_status(port, "/readyz");
        if status == Some(200) {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz never 200: {status:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// Host path of the DaemonSet's `--bpffs` (through the mounts), removed with what it pins.
struct Pins(String);

impl Pins {
    fn of(m: &Manifests) -> Pins {
        let arg = strs(&m.container["args"])
            .into_iter()
            .find_map(|a| a.strip_prefix("--bpffs=").map(str::to_owned))
            .expect("--bpffs in the DaemonSet args");
        let host = m
            .mounts()
            .into_iter()
            .find_map(|(h, c, _)| {
                let rest = Path::new(&arg).strip_prefix(&c).ok()?;
                Some(Path::new(&h).join(rest).display().to_string())
            })
            .expect("--bpffs below a mount");
        let pins = Pins(host);
        pins.clean();
        pins
    }

    fn clean(&self) {
        let _ = Command::new(agent_bin())
            .args(["cleanup", "--bpffs", &self.0])
            .status();
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        self.clean();
    }
}

fn podman_missing() -> bool {
    if Command::new("podman").arg("--version").output().is_ok() {
        return false;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "podman is missing in CI (scripts/bootstrap.sh installs it)"
    );
    eprintln!("SKIPPED: podman is not installed");
    true
}

fn skip(test: &str) -> bool {
    // Not yet run to completion on these machines (the static release build of the image did
    // not finish within the session that wrote this test): opt in until it has passed here once,
    // so an unproven test cannot be mistaken for proof, nor block the suite. Issue 15 stays open.
    if std::env::var("BULKHEAD_CONTAINER_TEST").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED {test}: unproven container test; run with BULKHEAD_CONTAINER_TEST=1 (needs podman, runc and the musl target)"
        );
        return true;
    }
    !require_root(test) || podman_missing()
}

#[test]
fn the_image_enforces_under_the_localhost_profile_and_across_a_kill() {
    if skip("the_image_enforces_under_the_localhost_profile_and_across_a_kill") {
        return;
    }
    let m = Manifests::load(Some("deploy/components/seccomp-localhost"));
    let image = image();
    let policies = [baseline("Deny", "Enforce"), admit("c", "a", 80)];
    let node = Node::up("ctr", 26, PODS, &[&policies[0], &policies[1]]);
    let pins = Pins::of(&m);
    let port = metrics_port(&m);
    let mut first = Container::start(&m, &image, &node);
    assert!(first.wait("ready", |_, e| e.contains("\"ready\"")));
    wait_ready(port);
    assert_eq!(node.tcp("a/client", "b/server", 80).result, "denied");
    assert_eq!(node.tcp("a/client", "c/server", 80).result, "ok");
    // The violation log, from the container's stdout.
    let b = node.ip("b/server").to_string();
    assert!(first.wait("violation", |o, _| {
        o.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["verdict"] == "DENIED" && v["dst"]["ip"] == b.as_str())
    }));
    first.kill();
    // No agent runs: the pins on the host's bpffs keep enforcing.
    assert!(Path::new(&pins.0).exists(), "pins gone with the container");
    assert_eq!(node.tcp("a/client", "b/server", 80).result, "denied");
    assert_eq!(node.tcp("a/client", "c/server", 80).result, "ok");
    let mut second = Container::start(&m, &image, &node);
    assert!(second.wait("ready", |_, e| e.contains("\"ready\"")));
    wait_ready(port);
    assert_eq!(node.tcp("a/client", "b/server", 80).result, "denied");
    assert_eq!(node.tcp("a/client", "c/server", 80).result, "ok");
    drop(second);
}

#[test]
fn runtime_default_under_crio_profile_cannot_create_a_map() {
    if skip("runtime_default_under_crio_profile_cannot_create_a_map") {
        return;
    }
    let m = Manifests::load(None);
    let image = image();
    let node = Node::up("ctrdef", 27, PODS, &[&baseline("Deny", "Enforce")]);
    let _pins = Pins::of(&m);
    let mut c = Container::start(&m, &image, &node);
    let status = c
        .exited()
        .expect("the agent exits under the engine's default profile");
    assert!(!status.success());
    let err = c.stderr();
    // The capabilities are there (the agent's own check passes); bpf() itself is refused, which
    // is the seccomp profile's doing: the same settings with the Localhost profile run (above).
    assert!(!err.contains("missing capability"), "{err}");
    assert!(
        err.contains("failed to create map") && err.contains("Operation not permitted"),
        "expected bpf() to be refused with EPERM:\n{err}"
    );
}
