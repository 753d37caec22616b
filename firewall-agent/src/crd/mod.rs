//! The Bulkhead CRDs (`bulkhead.dev/v1alpha1`), their validation, and the CRD YAML generated from
//! the Rust types (`firewall-agent crds`), so the schema can never drift from what the agent reads.
mod cluster_firewall;
mod common;
mod fail_closed;
mod namespace_firewall;
pub mod syntax;
mod to_policy;

pub use cluster_firewall::{
    Action, ClusterDefaults, ClusterFirewall, ClusterFirewallSpec, ClusterRule, DefaultAction,
    DefaultMode,
};
pub use common::{
    Condition, DestPeer, EgressPeer, FirewallStatus, LabelSelector, LabelSelectorRequirement, Peer,
    PortSpec,
};
pub(crate) use fail_closed::part;
pub use namespace_firewall::{EgressRule, IngressRule, NamespaceFirewall, NamespaceFirewallSpec};
pub(crate) use to_policy::{Checker, each, errors_message, refusal, source_rejections, written};
pub use to_policy::{
    FieldError, policy_input, validate_cluster_firewall, validate_namespace_firewall,
};

use kube::CustomResourceExt as _;

/// Both CRDs as a YAML stream (`---` separated), ready for `kubectl apply -f -`.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in [NamespaceFirewall::crd(), ClusterFirewall::crd()] {
        out.push_str("---\n");
        // Serializing a CRD object built from derived types cannot fail.
        out.push_str(&serde_yaml::to_string(&crd).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_yaml_is_a_stream_of_two_structural_crds() {
        let yaml = crds_yaml();
        assert!(!yaml.contains("additionalProperties: false"));
        let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        let names: Vec<&str> = docs
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "namespacefirewalls.bulkhead.dev",
                "clusterfirewalls.bulkhead.dev"
            ]
        );
        assert_eq!(docs[0]["spec"]["scope"], "Namespaced");
        assert_eq!(docs[1]["spec"]["scope"], "Cluster");
        assert_eq!(docs[0]["spec"]["names"]["shortNames"][0], "nsfw");
        assert_eq!(docs[1]["spec"]["names"]["shortNames"][0], "cfw");
        let v = &docs[1]["spec"]["versions"][0];
        assert_eq!(v["name"], "v1alpha1");
        assert!(v["subresources"]["status"].is_object());
        let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(spec["priority"]["default"], 1000);
        let rule = &spec["rules"]["items"]["properties"];
        assert_eq!(
            rule["ports"]["items"]["properties"]["protocol"]["enum"],
            serde_json::json!(["TCP", "UDP", "SCTP"])
        );
        assert_eq!(
            rule["ports"]["items"]["properties"]["protocol"]["default"],
            "TCP"
        );
    }

    /// The committed `deploy/crds.yaml` is what `kubectl apply -k deploy/` installs: it must be
    /// exactly what the types generate.
    #[test]
    fn committed_crd_yaml_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == crds_yaml(),
            "deploy/crds.yaml differs from the CRDs generated from the Rust types; regenerate it:\n  \
             cargo run -p firewall-agent -- crds > deploy/crds.yaml"
        );
    }

    fn schemas() -> Vec<serde_json::Value> {
        serde_yaml::Deserializer::from_str(&crds_yaml())
            .map(|d| {
                let crd: serde_json::Value = serde::Deserialize::deserialize(d).unwrap();
                crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
            })
            .collect()
    }

    fn rules(v: &serde_json::Value) -> Vec<&str> {
        v["x-kubernetes-validations"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["rule"].as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn cel_rules_and_bounds_are_emitted() {
        let s = schemas();
        let nsfw = &s[0]["properties"]["spec"]["properties"];
        let cfw = &s[1]["properties"]["spec"]["properties"];
        let ingress = &nsfw["ingress"];
        assert_eq!(ingress["maxItems"], 64);
        let port = &ingress["items"]["properties"]["ports"]["items"];
        assert_eq!(port["properties"]["port"]["minimum"].as_f64(), Some(1.0));
        assert_eq!(
            port["properties"]["endPort"]["maximum"].as_f64(),
            Some(65535.0)
        );
        assert_eq!(rules(port).len(), 2, "{port}");
        let to = &nsfw["egress"]["items"]["properties"]["to"];
        assert!(rules(to)[0].contains("containsCIDR"), "{to}");
        assert_eq!(rules(&to["properties"]["cidrs"]).len(), 2);
        assert_eq!(rules(&to["properties"]["except"]).len(), 2);
        assert_eq!(to["properties"]["cidrs"]["items"]["maxLength"], 64);
        let ns = &to["properties"]["namespaces"];
        assert!(ns["items"]["pattern"].is_string(), "{ns}");
        let expr = &ingress["items"]["properties"]["from"]["properties"]["namespaceSelector"]["properties"]
            ["matchExpressions"]["items"];
        assert_eq!(rules(expr).len(), 1, "{expr}");
        let cto = &cfw["rules"]["items"]["properties"]["to"];
        assert_eq!(cfw["rules"]["maxItems"], 128);
        assert!(rules(cto)[0].contains("containsCIDR"));
        assert!(cto["properties"]["services"]["items"]["pattern"].is_string());
    }

    /// Every CEL rule compiles, stays within the API server's per-rule cost budget given the
    /// schema's bounds, and every list it iterates is bounded.
    #[test]
    fn cel_rules_compile_within_budget() {
        fn walk(
            schema: &serde_json::Value,
            compiled: &kube_cel::CompiledSchema,
            path: &str,
            seen: &mut usize,
        ) {
            assert!(
                !compiled.has_errors(),
                "{path}: {:?}",
                compiled.compilation_errors()
            );
            for rule in rules(schema) {
                *seen += 1;
                let warnings = kube_cel::estimate_rule_cost(rule, compiled);
                assert!(warnings.is_empty(), "{path}: {rule}: {warnings:?}");
            }
            if let (Some(items), Some(c)) = (schema.get("items"), compiled.items.as_deref()) {
                walk(items, c, &format!("{path}[]"), seen);
            }
            for (k, v) in schema["properties"].as_object().into_iter().flatten() {
                if let Some(c) = compiled.properties.get(k) {
                    walk(v, c, &format!("{path}.{k}"), seen);
                }
            }
        }
        let mut seen = 0;
        for s in schemas() {
            let compiled = kube_cel::compile_schema(&s);
            walk(&s, &compiled, "", &mut seen);
        }
        assert!(seen >= 20, "only {seen} rules found");
    }

    /// The CEL errors of an object of `kind` with `spec` under `schema`, after asserting that the
    /// agent's own validation agrees on whether it is valid.
    fn cel_errors(schema: &serde_json::Value, kind: &str, spec: &str) -> Vec<String> {
        let spec: serde_json::Value = serde_yaml::from_str(spec).unwrap();
        let obj = serde_json::json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": kind,
            "metadata": {"name": "x", "namespace": "payments"}, "spec": spec,
        });
        let cel = match kube_cel::Validator::new().validate(schema, &obj, None) {
            Ok(()) => Vec::new(),
            Err(e) => e.into_vec().into_iter().map(|e| e.message).collect(),
        };
        // The agent agrees: valid for CEL iff valid for the agent.
        let agent_ok = if kind == "NamespaceFirewall" {
            let o: NamespaceFirewall = serde_json::from_value(obj).unwrap();
            validate_namespace_firewall(&o).is_ok()
        } else {
            let o: ClusterFirewall = serde_json::from_value(obj).unwrap();
            validate_cluster_firewall(&o).is_ok()
        };
        assert_eq!(cel.is_empty(), agent_ok, "{kind} {spec}: CEL said {cel:?}");
        cel
    }

    /// Valid objects of both kinds that use every field a CEL rule looks at.
    const VALID: [(&str, &str); 2] = [
        (
            "NamespaceFirewall",
            r#"{ingress: [{from: {namespaces: [web], namespaceSelector: {matchExpressions: [{key: tier, operator: In, values: [web]}, {key: x, operator: Exists}]}}, ports: [{port: 80}, {protocol: UDP, port: 53, endPort: 60}]}], egress: [{to: {cidrs: ["10.0.0.0/8", "fd00::/8"], except: ["10.1.0.0/16", "fd00:1::/32"]}, ports: [{protocol: TCP, port: 443}]}, {to: {}}]}"#,
        ),
        (
            "ClusterFirewall",
            r#"{priority: 10, rules: [{action: Deny, from: {namespaces: [a]}, to: {services: [db/postgres], cidrs: ["0.0.0.0/0"], except: ["10.0.0.0/8"]}, ports: [{protocol: SCTP}]}], defaults: {crossNamespace: Deny, mode: Enforce}}"#,
        ),
    ];

    /// Specs with one mistake each, and what the one CEL error they draw says.
    const REFUSED: [(&str, &str, &str); 11] = [
        (
            "NamespaceFirewall",
            "{egress: [{to: {namespaces: [db]}, ports: [{endPort: 80}]}]}",
            "endPort requires port",
        ),
        (
            "NamespaceFirewall",
            "{egress: [{to: {namespaces: [db]}, ports: [{port: 90, endPort: 80}]}]}",
            "less than port",
        ),
        (
            "NamespaceFirewall",
            r#"{egress: [{to: {cidrs: ["10.0.0.0/33"]}}]}"#,
            "must be a CIDR",
        ),
        (
            "NamespaceFirewall",
            r#"{egress: [{to: {cidrs: ["10.0.0.1"]}}]}"#,
            "must be a CIDR",
        ),
        (
            "NamespaceFirewall",
            r#"{egress: [{to: {cidrs: ["10.0.0.1/8"]}}]}"#,
            "host bits",
        ),
        (
            "NamespaceFirewall",
            r#"{egress: [{to: {cidrs: ["10.0.0.0/8"], except: ["192.168.0.0/16"]}}]}"#,
            "inside one of cidrs",
        ),
        (
            "NamespaceFirewall",
            r#"{egress: [{to: {namespaces: [db], except: ["10.0.0.0/16"]}}]}"#,
            "inside one of cidrs",
        ),
        (
            "NamespaceFirewall",
            "{ingress: [{from: {namespaceSelector: {matchExpressions: [{key: a, operator: In}]}}}]}",
            "need at least one value",
        ),
        (
            "NamespaceFirewall",
            "{ingress: [{from: {namespaceSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}}}]}",
            "take none",
        ),
        (
            "ClusterFirewall",
            r#"{rules: [{action: Allow, to: {cidrs: ["::1/64"]}}]}"#,
            "host bits",
        ),
        (
            "ClusterFirewall",
            "{rules: [{action: Allow, ports: [{port: 100, endPort: 99}]}]}",
            "less than port",
        ),
    ];

    /// The CEL rules refuse what the agent's own validation refuses (where CEL can express it)
    /// and accept the valid objects, evaluated client-side with the Kubernetes CEL libraries.
    #[test]
    fn cel_rules_mirror_the_agents_validation() {
        let s = schemas();
        let schema = |kind: &str| {
            if kind == "NamespaceFirewall" {
                &s[0]
            } else {
                &s[1]
            }
        };
        for (kind, spec) in VALID {
            assert_eq!(cel_errors(schema(kind), kind, spec), Vec::<String>::new());
        }
        for (kind, spec, says) in REFUSED {
            let errors = cel_errors(schema(kind), kind, spec);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(errors[0].contains(says), "{kind} {spec}: {errors:?}");
        }
    }
}
