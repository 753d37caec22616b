//! Structured inputs for the compiler: a small cluster (namespaces, pods, Services) and policy
//! objects built from fuzzer choices — valid and invalid ports, ranges, CIDRs, selectors, actions —
//! so the fuzzer spends its time in validation and compilation rather than in YAML syntax. The
//! objects go through the same parser as the file source. Checks: no panic; invalid objects are
//! rejected whole (never half-applied); compile is deterministic.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use firewall_agent::source::file::parse_objects;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use serde_json::{Value, json};

const NAMESPACES: [&str; 5] = ["a", "b", "c", "kube-system", "missing"];
const CIDRS: [&str; 8] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "0.0.0.0/0",
    "fd00::/8",
    "10.0.0.0/33",
    "10.0.0.1/24",
    "not-a-cidr",
    "::/0",
];

fn pick<'a>(u: &mut Unstructured, from: &[&'a str]) -> arbitrary::Result<&'a str> {
    Ok(from[usize::from(u8::arbitrary(u)?) % from.len()])
}

fn port(u: &mut Unstructured) -> arbitrary::Result<Value> {
    let protocol = pick(u, &["TCP", "UDP", "SCTP", "ICMP", "tcp"])?;
    let p: i64 = match u8::arbitrary(u)? % 6 {
        0 => 0,
        1 => 65_535,
        2 => 65_536,
        3 => -1,
        _ => i64::from(u16::arbitrary(u)?),
    };
    let mut v = json!({"protocol": protocol, "port": p});
    if bool::arbitrary(u)? {
        v["endPort"] = json!(p + i64::from(i8::arbitrary(u)?));
    }
    Ok(v)
}

fn peer(u: &mut Unstructured) -> arbitrary::Result<Value> {
    let mut v = json!({});
    if bool::arbitrary(u)? {
        let n = usize::from(u8::arbitrary(u)? % 3);
        let names: Vec<&str> = (0..n)
            .map(|_| pick(u, &NAMESPACES))
            .collect::<Result<_, _>>()?;
        v["namespaces"] = json!(names);
    }
    if bool::arbitrary(u)? {
        v["namespaceSelector"] = json!({"matchLabels": {"tier": pick(u, &["web", "db", ""])?}});
    }
    if bool::arbitrary(u)? {
        let cidr = pick(u, &CIDRS)?;
        v["cidrs"] = json!([cidr]);
        if bool::arbitrary(u)? {
            v["except"] = json!([pick(u, &CIDRS)?]);
        }
    }
    Ok(v)
}

fn rule(u: &mut Unstructured, key: &str) -> arbitrary::Result<Value> {
    let mut r = json!({ key: peer(u)? });
    if bool::arbitrary(u)? {
        let n = usize::from(u8::arbitrary(u)? % 3);
        r["ports"] = json!((0..n).map(|_| port(u)).collect::<Result<Vec<_>, _>>()?);
    }
    if key == "from" && bool::arbitrary(u)? {
        r["services"] = json!([pick(u, &["api", "missing"])?]);
    }
    Ok(r)
}

fn objects(u: &mut Unstructured) -> arbitrary::Result<Vec<Value>> {
    let mut out = Vec::new();
    for (i, ns) in NAMESPACES[..4].iter().enumerate() {
        let mut labels = json!({"kubernetes.io/metadata.name": ns, "tier": if i % 2 == 0 { "web" } else { "db" }});
        if bool::arbitrary(u)? {
            labels["bulkhead.dev/mode"] = json!(pick(u, &["enforce", "monitor", "off", "bogus"])?);
        }
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}));
        for j in 0..2u8 {
            let node = if bool::arbitrary(u)? {
                "node-1"
            } else {
                "node-2"
            };
            out.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{j}"), "namespace": ns, "uid": format!("{i}-{j}"), "labels": {"app": if j == 0 { "api" } else { "x" }}},
                "spec": {"nodeName": node, "hostNetwork": u8::arbitrary(u)? == 0},
                "status": {"phase": "Running", "podIPs": [{"ip": format!("10.{i}.0.{j}")}, {"ip": format!("fd00::{i}:{j}")}]},
            }));
        }
        out.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "namespace": ns},
            "spec": {"selector": {"app": "api"}, "clusterIPs": [format!("10.96.0.{i}")]},
        }));
    }
    let policies = u8::arbitrary(u)? % 6;
    for k in 0..policies {
        if bool::arbitrary(u)? {
            let ns = pick(u, &NAMESPACES)?;
            let mut spec = json!({});
            for (direction, peer) in [("ingress", "from"), ("egress", "to")] {
                if bool::arbitrary(u)? {
                    let n = usize::from(u8::arbitrary(u)? % 3);
                    let rules = (0..n).map(|_| rule(u, peer));
                    spec[direction] = json!(rules.collect::<Result<Vec<_>, _>>()?);
                }
            }
            out.push(
                json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "NamespaceFirewall",
                            "metadata": {"name": format!("f{k}"), "namespace": ns}, "spec": spec}),
            );
        } else {
            let n = usize::from(u8::arbitrary(u)? % 3);
            let mut rules = Vec::new();
            for _ in 0..n {
                let mut r = json!({
                    "action": pick(u, &["Allow", "Deny", "Delegate", "Bogus"])?,
                    "from": peer(u)?,
                    "to": peer(u)?,
                });
                if bool::arbitrary(u)? {
                    r["ports"] = json!([port(u)?]);
                }
                rules.push(r);
            }
            let mut spec = json!({"priority": i32::arbitrary(u)? % 2000, "rules": rules});
            if bool::arbitrary(u)? {
                spec["defaults"] = json!({
                    "crossNamespace": pick(u, &["Allow", "Deny"])?,
                    "mode": pick(u, &["Monitor", "Enforce", "Off"])?,
                });
            }
            out.push(
                json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "ClusterFirewall",
                            "metadata": {"name": format!("c{k}")}, "spec": spec}),
            );
        }
    }
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(objs) = objects(&mut u) else {
        return;
    };
    let text = json!({"apiVersion": "v1", "kind": "List", "items": objs}).to_string();
    let model = parse_objects(&text).expect("generated core objects always parse");
    let a = common::compile_twice(&model);
    // Judged alone (no memory), a rejected object is in force only through its fail-closed
    // stand-in (docs/design.md#invalid-objects); its rules may appear, restrictions only.
    for r in &a.rejected {
        assert_eq!(
            r.in_force,
            firewall_agent::model::InForce::FailClosed,
            "rejected object {r} judged alone is not fail closed"
        );
    }
});
