//! `firewall-agent validate` on broken inputs, as a user runs it: exit status, and every error of
//! every object printed exactly once with the input, object and field.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
use std::{
    io::Write as _,
    path::Path,
    process::{Command, Output, Stdio},
};

const VALID: &str = "apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: default, namespace: db}
spec:
  ingress:
    - from: {namespaces: [web]}
      ports: [{protocol: TCP, port: 5432}]
";

fn validate(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_firewall-agent"))
        .arg("validate")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn firewall-agent");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write input");
    p.display().to_string()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_kinds_and_versions_of_the_group_fail() {
    let dir = tempdir();
    let kind = write(
        &dir,
        "kind.yaml",
        &VALID.replace("NamespaceFirewall", "NamespaceFirewal"),
    );
    let version = write(&dir, "version.yaml", &VALID.replace("v1alpha1", "v1"));
    let o = validate(&[&kind, &version], None);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(
        out(&o).contains(&format!(
            "{kind}: NamespaceFirewal/db/default (document 1): unknown kind \"NamespaceFirewal\""
        )),
        "{}",
        out(&o)
    );
    assert!(
        out(&o).contains(&format!(
            "{version}: NamespaceFirewall/db/default (document 1): apiVersion \"bulkhead.dev/v1\" is not served"
        )),
        "{}",
        out(&o)
    );
}

#[test]
fn input_without_a_policy_object_fails() {
    let dir = tempdir();
    let empty = write(&dir, "empty.yaml", "");
    let other = write(
        &dir,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: db}\n",
    );
    for f in [&empty, &other] {
        let o = validate(&[f], None);
        assert_eq!(o.status.code(), Some(1), "{f}: {}{}", out(&o), err(&o));
        assert!(err(&o).contains("no policy object"), "{f}: {}", err(&o));
    }
}

#[test]
fn every_error_of_every_object_is_printed_once() {
    let dir = tempdir();
    let text = format!(
        "{VALID}---
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {{name: typos, namespace: db}}
spec:
  ingres: []
  egress: 5
---
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {{name: ports, namespace: db}}
spec:
  ingress:
    - from: {{namespaces: [web]}}
      ports: [{{protocol: TCP, port: 0}}, {{protocol: UDP, port: 99999}}]
"
    );
    let f = write(&dir, "broken.yaml", &text);
    let o = validate(&[&f], None);
    assert_eq!(o.status.code(), Some(1));
    let stdout = out(&o);
    let lines: Vec<&str> = stdout.lines().collect();
    let expected = [
        "NamespaceFirewall/db/typos (document 2): spec.egress: expected array, found integer",
        "NamespaceFirewall/db/typos (document 2): spec.ingres: unknown field",
        "NamespaceFirewall/db/ports: spec.ingress[0].ports[0].port:",
        "NamespaceFirewall/db/ports: spec.ingress[0].ports[1].port:",
    ];
    for e in expected {
        let n = lines
            .iter()
            .filter(|l| l.starts_with(&format!("{f}: {e}")))
            .count();
        assert_eq!(n, 1, "{e:?} printed {n} times in:\n{}", out(&o));
    }
    assert_eq!(lines.len(), expected.len(), "{}", out(&o));
    assert_eq!(
        err(&o).trim(),
        "firewall-agent: 4 error(s); 1 of 3 policy object(s) valid"
    );
}

/// NetworkPolicy (networking.k8s.io/v1) and ClusterNetworkPolicy
/// (policy.networking.k8s.io/v1alpha2) are checked by the rules their APIs document: an
/// `except` outside its `cidr`, an `endPort` below `port`, a tier that is neither Admin nor
/// Baseline, a priority above 1000. Another version of either kind is named, not skipped.
#[test]
fn network_policies_and_cluster_network_policies_are_validated_too() {
    let dir = tempdir();
    let text = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ok, namespace: web}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: web}
spec:
  podSelector: {}
  egress:
    - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}]
      ports: [{protocol: TCP, port: 90, endPort: 80}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: tiers}
spec:
  tier: Middle
  priority: 2000
  subject: {namespaces: {}}
  ingress: []
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: ClusterNetworkPolicy
metadata: {name: old}
spec: {}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: not-a-policy, namespace: web}
";
    let f = write(&dir, "standard.yaml", text);
    let o = validate(&[&f], None);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    let stdout = out(&o);
    let lines: Vec<&str> = stdout.lines().collect();
    let expected = [
        "NetworkPolicy/web/bad: spec.egress[0].to[0].ipBlock.except[0]:",
        "NetworkPolicy/web/bad: spec.egress[0].ports[0].endPort:",
        "ClusterNetworkPolicy/tiers: spec.tier:",
        "ClusterNetworkPolicy/tiers: spec.priority:",
        "ClusterNetworkPolicy/old (document 4): policy.networking.k8s.io/v1alpha1 is not read",
    ];
    for e in expected {
        let n = lines
            .iter()
            .filter(|l| l.starts_with(&format!("{f}: {e}")))
            .count();
        assert_eq!(n, 1, "{e:?} printed {n} times in:\n{stdout}");
    }
    assert_eq!(lines.len(), expected.len(), "{stdout}");
    assert_eq!(
        err(&o).trim(),
        "firewall-agent: 5 error(s); 1 of 4 policy object(s) valid"
    );
    let o = validate(
        &[&write(
            &dir,
            "ok.yaml",
            text.split("---").next().unwrap_or(""),
        )],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert_eq!(out(&o).trim(), "1 policy object(s) valid");
}

#[test]
fn directories_and_stdin_are_read_and_other_kinds_skipped_quietly() {
    let dir = tempdir();
    write(
        &dir,
        "kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\n",
    );
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    write(&dir.join("sub"), "a.yaml", VALID);
    write(&dir, "notes.txt", "not a manifest");
    let d = dir.display().to_string();
    let o = validate(&[&d], None);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert_eq!(out(&o).trim(), "1 policy object(s) valid");
    assert_eq!(err(&o), "", "other kinds are skipped quietly");
    let o = validate(&["-"], Some(VALID));
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let o = validate(&["-"], Some(&VALID.replace("5432", "65536")));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).starts_with("<stdin>: NamespaceFirewall/db/default: spec.ingress[0].ports[0].port"),
        "{}",
        out(&o)
    );
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "bulkhead-validate-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir temp");
    d
}
