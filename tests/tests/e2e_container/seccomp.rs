//! The seccomp profiles the container test runs under, all derived from the engine's own default
//! (podman's `/usr/share/containers/seccomp.json`, containers/common: the profile CRI-O applies for
//! `RuntimeDefault`):
//! - that default itself (CRI-O's `RuntimeDefault`: `bpf`/`perf_event_open` need CAP_SYS_ADMIN);
//! - [`containerd_like`]: the same with `bpf` allowed for CAP_BPF and `perf_event_open` for
//!   CAP_PERFMON, which is what containerd's and Docker's defaults do for these two calls (their
//!   change of 2022; see docs/operations.md), standing in for `RuntimeDefault` on those nodes;
//! - [`resolve`]d: a profile without conditions (what `deploy/crio/bulkhead-agent.json` must be).
use std::path::Path;

use serde_json::{Value, json};

/// podman's default profile (Debian's golang-github-containers-common).
pub const ENGINE_DEFAULT: &str = "/usr/share/containers/seccomp.json";

/// The architectures the shipped profile covers: the image's (amd64, arm64) and their
/// compat modes, with their libseccomp names.
const ARCHES: [(&str, &str); 5] = [
    ("amd64", "SCMP_ARCH_X86_64"),
    ("x86", "SCMP_ARCH_X86"),
    ("x32", "SCMP_ARCH_X32"),
    ("arm64", "SCMP_ARCH_AARCH64"),
    ("arm", "SCMP_ARCH_ARM"),
];

/// The engine's default profile, or None when podman's profile is not installed.
pub fn engine_default() -> Option<Value> {
    let text = std::fs::read_to_string(ENGINE_DEFAULT).ok()?;
    Some(serde_json::from_str(&text).expect("the engine's seccomp profile is JSON"))
}

fn caps_of<'a>(rule: &'a Value, key: &str) -> Vec<&'a str> {
    rule[key]["caps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// `default` with `bpf` and `perf_event_open` gated on CAP_BPF and CAP_PERFMON as well as
/// CAP_SYS_ADMIN (containerd's rule for them), still EPERM without either capability.
pub fn containerd_like(default: &Value) -> Value {
    let mut p = default.clone();
    let calls = ["bpf", "perf_event_open"];
    let rules = p["syscalls"].as_array_mut().expect("syscalls");
    // The EPERM rule for "no CAP_SYS_ADMIN" must no longer cover these two, or it would conflict
    // with the new allow rules.
    let mut found = 0;
    for r in rules.iter_mut() {
        if r["action"] == "SCMP_ACT_ERRNO" && caps_of(r, "excludes") == ["CAP_SYS_ADMIN"] {
            let names = r["names"].as_array_mut().expect("names");
            let before = names.len();
            names.retain(|n| !calls.iter().any(|c| n == c));
            found += before - names.len();
        }
    }
    assert_eq!(
        found, 2,
        "{ENGINE_DEFAULT}: no EPERM rule for bpf and perf_event_open without CAP_SYS_ADMIN"
    );
    for (call, cap) in [("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")] {
        rules.push(json!({
            "names": [call], "action": "SCMP_ACT_ALLOW",
            "includes": {"caps": [cap]}, "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        }));
        rules.push(json!({
            "names": [call], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
            "excludes": {"caps": ["CAP_SYS_ADMIN", cap]},
        }));
    }
    p
}

fn applies(rule: &Value, caps: &[String]) -> bool {
    let has = |c: &str| caps.iter().any(|k| k == c);
    let arches = |key: &str| -> Vec<&str> {
        rule[key]["arches"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    };
    assert!(
        rule["includes"]["minKernel"].is_null(),
        "minKernel conditions are not handled: {rule}"
    );
    let (inc, exc) = (arches("includes"), arches("excludes"));
    caps_of(rule, "includes").iter().all(|c| has(c))
        && !caps_of(rule, "excludes").iter().any(|c| has(c))
        && (inc.is_empty() || ARCHES.iter().any(|(a, _)| inc.contains(a)))
        && ARCHES.iter().any(|(a, _)| !exc.contains(a))
}

/// `profile` evaluated for a container holding exactly `caps` (names as the DaemonSet spells
/// them, without `CAP_`), in the OCI runtime-spec format: no conditions left, so every runtime
/// reads it the same way (containerd ignores `includes`/`excludes`).
pub fn resolve(profile: &Value, caps: &[String]) -> Value {
    let caps: Vec<String> = caps.iter().map(|c| format!("CAP_{c}")).collect();
    let syscalls: Vec<Value> = profile["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .filter(|r| applies(r, &caps))
        .map(|r| {
            let mut out = json!({"names": r["names"], "action": r["action"]});
            if let Some(args) = r["args"].as_array().filter(|a| !a.is_empty()) {
                out["args"] = Value::Array(args.clone());
            }
            if !r["errnoRet"].is_null() {
                out["errnoRet"] = r["errnoRet"].clone();
            }
            out
        })
        .collect();
    json!({
        "defaultAction": profile["defaultAction"],
        "defaultErrnoRet": profile["defaultErrnoRet"],
        "architectures": ARCHES.iter().map(|(_, s)| s).collect::<Vec<_>>(),
        "syscalls": syscalls,
    })
}

/// Writes `profile` as the file podman reads.
pub fn write(path: &Path, profile: &Value) {
    let mut text = serde_json::to_string_pretty(profile).expect("JSON");
    text.push('\n');
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
