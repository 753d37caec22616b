//! The agent image under a real container engine (podman + runc, as root), run the way each
//! variant of `deploy/` asks the kubelet to run it: capabilities, read-only root, user,
//! no_new_privs, seccomp profile, host networking or not, the hostPath mounts at the same paths
//! with their propagation, the ConfigMap's environment, the same command and args, the memory
//! and CPU limits, all read from the rendered manifests (`manifest.rs`).
//!
//! What the test adds, because there is no cluster: the testbed's `file:` source, mounted
//! read-only into the container, replaces `--source=kube`; and `--cgroup-root` points at the
//! testbed's cgroup (through the DaemonSet's own cgroup mount) instead of the host's root, so
//! that only the simulated node is enforced, not this machine. Every other arg is the
//! DaemonSet's, `--bpffs=/sys/fs/bpf/bulkhead` included.
//!
//! Seccomp: podman's default profile is CRI-O's `RuntimeDefault`; containerd's `RuntimeDefault`
//! is stood for by that profile with containerd's rule for `bpf`/`perf_event_open`
//! (`seccomp.rs`). The base variant fails under the first (the test asserts the error) and
//! enforces under the second; `deploy/crio/`'s Localhost profile enforces under podman.
//!
//! Needs root, podman and runc (scripts/bootstrap.sh installs them) and the image
//! (`cargo xtask image`; `cargo xtask test` builds it first). Skips loudly when one is missing,
//! except in CI, where that is a failure.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
mod common;
#[path = "e2e_container/inspect.rs"]
mod inspect;
#[path = "e2e_container/manifest.rs"]
mod manifest;
#[path = "e2e_container/podman.rs"]
mod podman;
#[path = "e2e_container/seccomp.rs"]
mod seccomp;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use bulkhead_tests::{
    policy::{admit, baseline},
    require_root,
};
use common::{
    agent::Pins,
    node::{Node, THREE_PODS},
};
use manifest::AgentPod;
use podman::{Container, Engine, Extra, podman};

/// The testbed's node name (Node::up).
const NODE: &str = "node-1";
/// Where the test mounts the testbed's source directory in the container.
const SOURCE_DIR: &str = "/bulkhead-test-source";
/// The Localhost-profile variant.
const CRIO: &str = "crio";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips loudly (fails in CI) when `why` is Some.
fn skip(test: &str, why: Option<String>) -> bool {
    let Some(why) = why else { return false };
    assert!(!in_ci(), "{test}: {why} (CI must run this test)");
    eprintln!("SKIPPED {test}: {why}");
    true
}

/// Root, podman and the image are there.
fn can_run(test: &str, image: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    let podman_ok = podman()
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if skip(test, (!podman_ok).then(|| "podman is not installed".into())) {
        return false;
    }
    let image_ok = podman()
        .args(["image", "exists", image])
        .status()
        .is_ok_and(|s| s.success());
    !skip(
        test,
        (!image_ok).then(|| format!("no image {image}: run `cargo xtask image`")),
    )
}

/// The node provisioning a Kubernetes node has: bpffs mounted at the DaemonSet's hostPath
/// (systemd does it at boot). The agent cannot mount it from the container (no CAP_SYS_ADMIN),
/// and a bpffs mounted inside would vanish with the container.
fn host_bpffs(dir: &Path) {
    if !inspect::is_bpffs(dir) {
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting bpffs at {}", dir.display());
    }
}

/// The pod of `variant`, with the test's two changes (see the module comment).
fn pod_for(variant: &str, node: &Node) -> AgentPod {
    let mut pod = manifest::load(variant, NODE);
    pod.replace_arg("source", &format!("file:{SOURCE_DIR}/cluster.yaml"));
    let root = pod.in_container(node.testbed().cgroup_root());
    pod.replace_arg("cgroup-root", &root.display().to_string());
    pod
}

fn start_ready(pod: &AgentPod, engine: &Engine, name: &str, node: &Node) -> Container {
    let extra = Extra {
        host: node.dir().to_owned(),
        container: PathBuf::from(SOURCE_DIR),
    };
    let mut c = Container::start(pod, engine, name, &extra);
    c.wait_ready(&pod.ready, Duration::from_secs(30));
    c
}

/// An allowed and a denied flow, and the denial in the container's violation log.
fn enforces(node: &Node, c: Option<&Container>) {
    assert_eq!(node.tcp("alpha/a", "beta/b", 8080).result, "ok");
    assert_eq!(node.tcp("alpha/a", "gamma/c", 9090).result, "denied");
    if let Some(c) = c {
        let line = c.wait_violation(Duration::from_secs(5), |l| {
            l["dst"]["pod"] == "c" && l["dst"]["port"] == 9090
        });
        assert_eq!(line["verdict"], "DENIED", "{line}");
        assert_eq!(line["src"]["namespace"], "alpha", "{line}");
    }
}

/// Enforces from the container, stays enforced after `podman kill`, and a new container on the
/// same pins takes over.
fn enforces_across_kill(test: &str, variant: &str, engine: &Engine, name: &str, subnet: u8) {
    let image = manifest::load(variant, NODE).image;
    if !can_run(test, &image) {
        return;
    }
    let t0 = std::time::Instant::now();
    let node = Node::up(
        name,
        subnet,
        THREE_PODS,
        &[&baseline("Deny", "Enforce"), &admit("beta", "alpha", 8080)],
    );
    let pod = pod_for(variant, &node);
    let bpffs = Path::new(pod.arg("bpffs").expect("the DaemonSet pins (--bpffs)"));
    let pins = Pins::cleaned(pod.on_host(bpffs));
    host_bpffs(pins.0.parent().expect("the pin directory's bpffs"));
    let first = start_ready(&pod, engine, &format!("bulkhead-{name}-1"), &node);
    inspect::container(&pod, first.pid(), node.testbed().cgroup_root());
    enforces(&node, Some(&first));

    let status = first.kill();
    assert!(!status.success(), "killed, yet {status}");
    assert!(
        inspect::pinned(&pins.0),
        "nothing pinned in {}",
        pins.0.display()
    );
    enforces(&node, None);

    let second = start_ready(&pod, engine, &format!("bulkhead-{name}-2"), &node);
    assert!(
        second.stderr().contains("\"adopted\":true"),
        "the second agent did not adopt the pins:\n{}",
        second.stderr()
    );
    enforces(&node, Some(&second));
    drop(second);
    eprintln!("{test}: {:.1} s", t0.elapsed().as_secs_f64());
}

/// The containerd stand-in profile, written next to the test's other files.
fn containerd_profile(test: &str) -> Option<Engine> {
    let default = seccomp::engine_default();
    if skip(
        test,
        default
            .is_none()
            .then(|| format!("{} is missing", seccomp::ENGINE_DEFAULT)),
    ) {
        return None;
    }
    let path = std::env::temp_dir().join(format!(
        "bulkhead-containerd-seccomp-{}.json",
        std::process::id()
    ));
    seccomp::write(&path, &seccomp::containerd_like(&default?));
    Some(Engine::Containerd(path))
}

#[test]
fn base_variant_enforces_under_containerds_runtime_default() {
    let test = "base_variant_enforces_under_containerds_runtime_default";
    if let Some(engine) = containerd_profile(test) {
        enforces_across_kill(test, "", &engine, "ctrd", 50);
    }
}

#[test]
fn crio_variant_enforces_with_its_localhost_profile() {
    let test = "crio_variant_enforces_with_its_localhost_profile";
    enforces_across_kill(test, CRIO, &Engine::Crio, "crio", 51);
}

/// The documented failure: `deploy/` as is on a CRI-O node.
#[test]
fn base_variant_fails_under_crios_runtime_default() {
    let test = "base_variant_fails_under_crios_runtime_default";
    let base = manifest::load("", NODE);
    assert!(matches!(base.seccomp, manifest::Seccomp::RuntimeDefault));
    if !can_run(test, &base.image) {
        return;
    }
    let node = Node::up("crfail", 52, THREE_PODS, &[&baseline("Deny", "Enforce")]);
    let pod = pod_for("", &node);
    let bpffs = Path::new(pod.arg("bpffs").expect("--bpffs"));
    let pins = Pins::cleaned(pod.on_host(bpffs));
    host_bpffs(pins.0.parent().expect("bpffs"));
    let extra = Extra {
        host: node.dir().to_owned(),
        container: PathBuf::from(SOURCE_DIR),
    };
    let mut c = Container::start(&pod, &Engine::Crio, "bulkhead-crfail", &extra);
    let status = c.wait_exit(Duration::from_secs(30));
    let stderr = c.stderr();
    assert!(
        !status.success(),
        "ran under CRI-O's default profile:\n{stderr}"
    );
    // The capabilities were there (the agent checks them first and names a missing one)...
    assert!(!stderr.contains("missing capability"), "{stderr}");
    // ...and bpf() itself was refused: the seccomp profile, the only difference to the runs above.
    assert!(
        stderr.contains("failed to create map") && stderr.contains("Operation not permitted"),
        "not the documented failure:\n{stderr}"
    );
}

/// `deploy/crio/bulkhead-agent.json` is containerd's default for the DaemonSet's capabilities:
/// [`seccomp::resolve`] of the containerd stand-in. `BULKHEAD_WRITE_SECCOMP=1` rewrites it.
#[test]
fn the_shipped_localhost_profile_is_the_resolved_default() {
    let test = "the_shipped_localhost_profile_is_the_resolved_default";
    let Some(default) = seccomp::engine_default() else {
        skip(
            test,
            Some(format!("{} is missing", seccomp::ENGINE_DEFAULT)),
        );
        return;
    };
    let pod = manifest::load(CRIO, NODE);
    let manifest::Seccomp::Localhost(path) = &pod.seccomp else {
        panic!("deploy/{CRIO}/ must use a Localhost profile");
    };
    let want = seccomp::resolve(&seccomp::containerd_like(&default), &pod.cap_add);
    if std::env::var("BULKHEAD_WRITE_SECCOMP").is_ok_and(|v| v == "1") {
        seccomp::write(path, &want);
    }
    let text = std::fs::read_to_string(path).expect("the shipped profile");
    let got: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert!(
        got == want,
        "{} is not the engine's default resolved for {:?} plus bpf/perf_event_open; \
         rewrite it: BULKHEAD_WRITE_SECCOMP=1 cargo test -p bulkhead-tests --test e2e_container \
         the_shipped",
        path.display(),
        pod.cap_add
    );
}
