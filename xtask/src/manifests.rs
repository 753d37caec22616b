//! `cargo xtask manifests`: checks `deploy/` offline, as CI runs it (also a step of `cargo xtask test`).
//!
//! 1. Renders the kustomization of `deploy/`, of its CRI-O variant `deploy/crio/` and of each
//!    `deploy/examples/*/` with the small renderer of `bulkhead_tests::kustomize` (`resources:`
//!    and JSON 6902 `patches:` only; any other field fails), so a manifest never relies on
//!    something unchecked.
//! 2. Validates every rendered object except the custom resources with the `kubernetes-validate`
//!    PyPI package (installed by `scripts/bootstrap.sh`, runs offline) in `--strict` mode against
//!    [`KUBERNETES_VERSION`], including the CRDs themselves (apiextensions.k8s.io/v1).
//! 3. Checks the example policies against the CRDs' OpenAPI schemas (`xtask/validate_crs.py`,
//!    with the `jsonschema` package kubernetes-validate brings) and with the agent's own parser
//!    and validation (`firewall-agent validate`).
//! 4. Checks the DaemonSet's security settings in both variants (the base asks for the runtime's
//!    default seccomp profile; `deploy/crio/` for its shipped Localhost profile, which must deny
//!    by default, allow `bpf` and `perf_event_open`, and carry no conditional rules), that its flags and the ConfigMap's variables
//!    are ones `firewall-agent run` knows, and that each example's testbed scenario
//!    (`tests/scenarios/<example>.yaml`) carries exactly the example's policies and labels.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, ensure};
use serde_yaml::Value;

use bulkhead_tests::kustomize::{Object, render};

use crate::util::{cargo, target_dir, workspace_root};

/// The oldest Kubernetes release Bulkhead supports (the CEL CIDR library needs 1.31; 1.32 is
/// the oldest release still maintained upstream). Manifests are validated against its schemas.
pub const KUBERNETES_VERSION: &str = "1.32.0";

/// The exact set of capabilities the DaemonSet may add (see deploy/daemonset.yaml).
const CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];

/// Runs every check; fails on the first failing one.
pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    let deploy = root.join("deploy");
    let base = render(&deploy)?;
    eprintln!("==> rendered deploy/: {} objects", base.len());
    let crio = render(&deploy.join(CRIO))?;
    eprintln!("==> rendered deploy/{CRIO}/: {} objects", crio.len());
    let mut examples = BTreeMap::new();
    for entry in std::fs::read_dir(deploy.join("examples")).context("reading deploy/examples")? {
        let dir = entry?.path();
        if dir.join("kustomization.yaml").is_file() {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            examples.insert(name, render(&dir)?);
        }
    }
    ensure!(!examples.is_empty(), "no examples under deploy/examples");
    let out = target_dir()?.join("manifests");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    // (2) Kubernetes schemas, for everything Kubernetes itself defines.
    let mut files = vec![
        write_stream(&out.join("deploy.yaml"), &base, |_| true)?,
        write_stream(&out.join(format!("deploy-{CRIO}.yaml")), &crio, |_| true)?,
    ];
    for (name, objs) in &examples {
        files.push(write_stream(
            &out.join(format!("example-{name}-core.yaml")),
            objs,
            |o| !is_custom_resource(o),
        )?);
    }
    kubernetes_validate(&files)?;

    // (3) The example policies: the CRDs' OpenAPI schemas, then the agent's own validation.
    let crds = out.join("crds.yaml");
    write_stream(&crds, &base, |o| o.kind() == "CustomResourceDefinition")?;
    let mut policy_files = Vec::new();
    for (name, objs) in &examples {
        ensure!(
            objs.iter().any(is_policy),
            "deploy/examples/{name}: no policy object ({})",
            POLICY_KINDS.join(", ")
        );
        policy_files.push(write_stream(
            &out.join(format!("example-{name}.yaml")),
            objs,
            |_| true,
        )?);
    }
    let mut py = Command::new(venv_bin("python3")?);
    py.arg(root.join("xtask").join("validate_crs.py"))
        .arg(&crds)
        .args(&policy_files);
    step("example policies against the CRD schemas", &mut py)?;
    let mut agent = cargo();
    agent
        .args(["run", "-q", "-p", "firewall-agent", "--", "validate"])
        .args(&policy_files);
    step("example policies with the agent's validation", &mut agent)?;

    // (4) The DaemonSet, the agent's flags, the scenarios.
    let help = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["run", "-q", "-p", "firewall-agent", "--", "run", "--help"])
        .output()
        .context("firewall-agent run --help")?;
    ensure!(help.status.success(), "firewall-agent run --help failed");
    let help = String::from_utf8_lossy(&help.stdout);
    check_daemonset(&base, &help, &Seccomp::RuntimeDefault)?;
    check_daemonset(&crio, &help, &Seccomp::Localhost(deploy.join(CRIO)))?;
    eprintln!("==> DaemonSet: not privileged, read-only root, drops ALL, adds {CAPABILITIES:?}");
    for (name, objs) in &examples {
        check_scenario(&root, name, objs)?;
    }
    eprintln!("==> manifests: all checks passed");
    Ok(())
}

/// The kinds the agent enforces: Bulkhead's CRDs and the standard APIs (`--policy-apis`).
const POLICY_KINDS: [&str; 4] = [
    "NamespaceFirewall",
    "ClusterFirewall",
    "NetworkPolicy",
    "ClusterNetworkPolicy",
];

fn is_policy(o: &Object) -> bool {
    POLICY_KINDS.contains(&o.kind())
}

/// A kind Kubernetes' own schemas do not define (checked against its CRD instead, where
/// `deploy/` carries it; ClusterNetworkPolicy's CRD is network-policy-api's, not vendored).
fn is_custom_resource(o: &Object) -> bool {
    is_policy(o) && o.kind() != "NetworkPolicy"
}

fn write_stream(
    path: &Path,
    objs: &[Object],
    keep: impl Fn(&Object) -> bool,
) -> anyhow::Result<PathBuf> {
    // JSON documents (valid YAML): no YAML 1.1 reader can take `off` or `no` for a boolean.
    let mut text = String::new();
    for o in objs.iter().filter(|o| keep(o)) {
        text.push_str("---\n");
        text.push_str(&serde_json::to_string_pretty(&o.value)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_owned())
}

/// The venv `scripts/bootstrap.sh` creates (`$BULKHEAD_VENV`, default `~/.cache/bulkhead/venv`).
fn venv_bin(name: &str) -> anyhow::Result<PathBuf> {
    let venv = match std::env::var_os("BULKHEAD_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/bulkhead/venv"),
    };
    let bin = venv.join("bin").join(name);
    ensure!(
        bin.exists(),
        "{} is missing: run `bash scripts/bootstrap.sh` (it installs kubernetes-validate)",
        bin.display()
    );
    Ok(bin)
}

fn kubernetes_validate(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut cmd = Command::new(venv_bin("kubernetes-validate")?);
    cmd.args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .args(files);
    step(
        &format!("kubernetes-validate (Kubernetes {KUBERNETES_VERSION}, strict)"),
        &mut cmd,
    )
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Whether any mapping below `v` has `key: true`.
fn has_true(v: &Value, key: &str) -> bool {
    match v {
        Value::Mapping(m) => m.iter().any(|(k, v)| {
            (k.as_str() == Some(key) && v.as_bool() == Some(true)) || has_true(v, key)
        }),
        Value::Sequence(s) => s.iter().any(|v| has_true(v, key)),
        _ => false,
    }
}

/// The variant for CRI-O nodes (an overlay of `deploy/`): a Localhost seccomp profile.
const CRIO: &str = "crio";

/// The seccomp profile a variant's DaemonSet must ask for.
enum Seccomp {
    /// The runtime's default (containerd and Docker allow `bpf` with CAP_BPF).
    RuntimeDefault,
    /// A profile shipped in this directory, installed on the nodes under the kubelet's seccomp root.
    Localhost(PathBuf),
}

fn check_daemonset(objs: &[Object], run_help: &str, want: &Seccomp) -> anyhow::Result<()> {
    let dss: Vec<&Object> = objs.iter().filter(|o| o.kind() == "DaemonSet").collect();
    ensure!(
        dss.len() == 1,
        "expected one DaemonSet, found {}",
        dss.len()
    );
    let ds = &dss[0].value;
    let file = dss[0].file.display().to_string();
    check_pod_placement(ds, &file)?;
    let pod = &ds["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().context("no containers")?;
    ensure!(containers.len() == 1, "{file}: expected one container");
    let c = &containers[0];
    check_container_privileges(pod, c, want, &file)?;
    check_container_runtime(c, &file)?;
    check_agent_settings(objs, c, run_help, &file)
}

/// Nothing privileged or shared with the host; on every node, first to be scheduled, rolled out
/// node by node.
fn check_pod_placement(ds: &Value, file: &str) -> anyhow::Result<()> {
    ensure!(
        !has_true(ds, "privileged"),
        "{file}: privileged: true is not allowed"
    );
    let pod = &ds["spec"]["template"]["spec"];
    for key in ["hostPID", "hostNetwork", "hostIPC"] {
        ensure!(!has_true(pod, key), "{file}: {key} is not needed");
    }
    ensure!(
        pod["priorityClassName"].as_str() == Some("system-node-critical"),
        "{file}: priorityClassName must be system-node-critical"
    );
    ensure!(
        pod["tolerations"].as_sequence().is_some_and(|t| t
            .iter()
            .any(|t| t["operator"].as_str() == Some("Exists")
                && t.get("key").is_none()
                && t.get("effect").is_none())),
        "{file}: must tolerate every taint (operator: Exists, no key, no effect)"
    );
    ensure!(
        ds["spec"]["updateStrategy"]["type"].as_str() == Some("RollingUpdate"),
        "{file}: updateStrategy must be RollingUpdate"
    );
    Ok(())
}

/// The container's security context: read-only root, no escalation, exactly the agent's
/// capabilities, the variant's seccomp profile.
fn check_container_privileges(
    pod: &Value,
    c: &Value,
    want: &Seccomp,
    file: &str,
) -> anyhow::Result<()> {
    let sc = &c["securityContext"];
    ensure!(
        sc["readOnlyRootFilesystem"].as_bool() == Some(true),
        "{file}: readOnlyRootFilesystem must be true"
    );
    ensure!(
        sc["allowPrivilegeEscalation"].as_bool() == Some(false),
        "{file}: allowPrivilegeEscalation must be false"
    );
    ensure!(
        strs(&sc["capabilities"]["drop"]) == ["ALL"],
        "{file}: capabilities.drop must be [ALL]"
    );
    let mut added = strs(&sc["capabilities"]["add"]);
    added.sort_unstable();
    ensure!(
        added == CAPABILITIES,
        "{file}: capabilities.add must be exactly {CAPABILITIES:?}, found {added:?}"
    );
    let seccomp = if sc["seccompProfile"].is_mapping() {
        &sc["seccompProfile"]
    } else {
        &pod["securityContext"]["seccompProfile"]
    };
    check_seccomp(seccomp, want).with_context(|| format!("{file}: seccompProfile"))
}

/// Probes on the health endpoints, resource requests and limits, the node name from the API.
fn check_container_runtime(c: &Value, file: &str) -> anyhow::Result<()> {
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        ensure!(
            c[probe]["httpGet"]["path"].as_str() == Some(path),
            "{file}: {probe} must GET {path}"
        );
    }
    ensure!(
        c["resources"]["requests"].is_mapping() && c["resources"]["limits"].is_mapping(),
        "{file}: resource requests and limits are required"
    );
    let env = c["env"].as_sequence().into_iter().flatten();
    ensure!(
        env.clone().any(|e| e["name"].as_str() == Some("NODE_NAME")
            && e["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("spec.nodeName")),
        "{file}: NODE_NAME must come from spec.nodeName"
    );
    Ok(())
}

/// Every flag of the command line and every `BULKHEAD_*` setting of the ConfigMap is one
/// `firewall-agent run` reads (`run_help` is its `--help`).
fn check_agent_settings(
    objs: &[Object],
    c: &Value,
    run_help: &str,
    file: &str,
) -> anyhow::Result<()> {
    let args = strs(&c["args"]);
    ensure!(
        args.first() == Some(&"run"),
        "{file}: args must start with run"
    );
    for a in &args[1..] {
        let flag = a.split('=').next().unwrap_or_default();
        ensure!(
            flag.starts_with("--") && run_help.contains(&format!("{flag} ")),
            "{file}: `{a}` is not a flag of firewall-agent run"
        );
    }
    let cm_name = c["envFrom"][0]["configMapRef"]["name"]
        .as_str()
        .context("envFrom configMapRef")?;
    let cm = objs
        .iter()
        .find(|o| o.kind() == "ConfigMap" && o.name() == cm_name)
        .with_context(|| format!("ConfigMap {cm_name} is not in deploy/"))?;
    for (k, _) in cm.value["data"].as_mapping().into_iter().flatten() {
        let k = k.as_str().unwrap_or_default();
        ensure!(
            !k.starts_with("BULKHEAD_") || run_help.contains(&format!("[env: {k}=")),
            "ConfigMap {cm_name}: {k} is not an environment variable of firewall-agent run"
        );
    }
    Ok(())
}

fn check_seccomp(profile: &Value, want: &Seccomp) -> anyhow::Result<()> {
    let kind = profile["type"].as_str();
    let Seccomp::Localhost(dir) = want else {
        ensure!(kind == Some("RuntimeDefault"), "must be RuntimeDefault");
        return Ok(());
    };
    ensure!(kind == Some("Localhost"), "must be Localhost");
    let name = profile["localhostProfile"]
        .as_str()
        .context("localhostProfile is missing")?;
    let path = dir.join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let p: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    ensure!(
        p["defaultAction"] == "SCMP_ACT_ERRNO",
        "{}: must deny by default",
        path.display()
    );
    let rules = p["syscalls"].as_array().context("no syscalls")?;
    // containerd reads Localhost profiles as OCI runtime-spec `LinuxSeccomp`, which has no
    // capability or architecture conditions: a rule with `includes` would apply unconditionally.
    ensure!(
        rules
            .iter()
            .all(|r| r.get("includes").is_none() && r.get("excludes").is_none()),
        "{}: conditional rules (includes/excludes) are not read by containerd",
        path.display()
    );
    for call in ["bpf", "perf_event_open"] {
        ensure!(
            rules.iter().any(|r| r["action"] == "SCMP_ACT_ALLOW"
                && r["args"].as_array().is_none_or(Vec::is_empty)
                && r["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|n| n == call))),
            "{}: must allow {call}",
            path.display()
        );
    }
    Ok(())
}

/// The testbed scenario of an example holds exactly its policy objects, and its namespaces the
/// example's labels (the mode label aside: the scenario may pin it).
fn check_scenario(root: &Path, example: &str, objs: &[Object]) -> anyhow::Result<()> {
    let path = root
        .join("tests")
        .join("scenarios")
        .join(format!("{example}.yaml"));
    let scenario = bulkhead_tests::scenario::Scenario::load(&path)
        .with_context(|| format!("deploy/examples/{example} has no valid testbed scenario"))?;
    let policies: Vec<Value> = objs
        .iter()
        .filter(|o| is_policy(o))
        .map(|o| o.value.clone())
        .collect();
    ensure!(
        policies == scenario.objects,
        "{}: `objects` differ from the policies of deploy/examples/{example}; copy them over",
        path.display()
    );
    let without_mode = |labels: BTreeMap<String, String>| -> BTreeMap<String, String> {
        labels
            .into_iter()
            .filter(|(k, _)| k != "bulkhead.dev/mode")
            .collect()
    };
    for ns in objs.iter().filter(|o| o.kind() == "Namespace") {
        let want: BTreeMap<String, String> =
            serde_yaml::from_value(ns.value["metadata"]["labels"].clone()).unwrap_or_default();
        let got = scenario
            .namespaces
            .iter()
            .find(|n| n.name == ns.name())
            .with_context(|| format!("{}: namespace {} missing", path.display(), ns.name()))?;
        ensure!(
            without_mode(want) == without_mode(got.labels.clone()),
            "{}: namespace {} labels differ from deploy/examples/{example}",
            path.display(),
            ns.name()
        );
    }
    eprintln!("==> scenario {}: matches the example", path.display());
    Ok(())
}

fn step(name: &str, cmd: &mut Command) -> anyhow::Result<()> {
    crate::util::step(name, cmd, false)
}
