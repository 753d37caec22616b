//! Structural checks of raw policy objects for `validate`: the kind and version must be served,
//! and every structural error of the object is listed (deserializing stops at the first one).
//! The walk follows the CRD's own OpenAPI schema, so it can never disagree with the API server
//! about which fields exist.
use kube::CustomResourceExt as _;
use serde_json::Value;

use crate::crd::{ClusterFirewall, NamespaceFirewall};

/// The API group of Bulkhead's policy objects.
pub const GROUP: &str = "bulkhead.dev";

/// A served policy kind and the schema of its one version.
pub struct PolicyKind {
    pub kind: String,
    pub version: String,
    schema: Value,
}

/// The policy kinds this agent serves, from the generated CRDs.
pub fn policy_kinds() -> Vec<PolicyKind> {
    [NamespaceFirewall::crd(), ClusterFirewall::crd()]
        .into_iter()
        .flat_map(|crd| {
            let kind = crd.spec.names.kind.clone();
            crd.spec.versions.into_iter().map(move |v| PolicyKind {
                kind: kind.clone(),
                version: v.name,
                schema: v
                    .schema
                    .and_then(|s| s.open_api_v3_schema)
                    .and_then(|s| serde_json::to_value(s).ok())
                    .unwrap_or(Value::Null),
            })
        })
        .collect()
}

/// Why an object of the `bulkhead.dev` group is not one this agent can apply: an unknown kind or
/// a version it does not serve. `None` when the kind and version are served.
pub fn unserved(kinds: &[PolicyKind], api_version: &str, kind: &str) -> Option<String> {
    let version = api_version.strip_prefix(GROUP)?.strip_prefix('/')?;
    let known: Vec<&str> = kinds.iter().map(|k| k.kind.as_str()).collect();
    let Some(k) = kinds.iter().find(|k| k.kind == kind) else {
        return Some(format!(
            "unknown kind {kind:?} in {GROUP} (known: {})",
            known.join(", ")
        ));
    };
    (k.version != version).then(|| {
        format!(
            "apiVersion {api_version:?} is not served for {kind}: use {GROUP}/{}",
            k.version
        )
    })
}

/// Every structural error of `object` (a served kind's object) below its `spec`, as
/// `path: message`.
pub fn errors(kinds: &[PolicyKind], kind: &str, object: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(k) = kinds.iter().find(|k| k.kind == kind) else {
        return out;
    };
    let spec_schema = &k.schema["properties"]["spec"];
    match object.get("spec") {
        Some(spec) => walk(spec, spec_schema, "spec", &mut out),
        None if required(&k.schema, "spec") => out.push("spec: required".to_owned()),
        None => {}
    }
    out
}

fn required(schema: &Value, field: &str) -> bool {
    schema["required"]
        .as_array()
        .is_some_and(|r| r.iter().any(|f| f == field))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether `v` has the schema's `type` (integers are numbers too).
fn has_type(v: &Value, schema: &Value) -> bool {
    if v.is_null() {
        return schema["nullable"] == true;
    }
    if schema["x-kubernetes-int-or-string"] == true {
        return v.is_string() || type_name(v) == "integer";
    }
    match schema["type"].as_str() {
        None => true,
        Some("number") => v.is_number(),
        Some(t) => type_name(v) == t,
    }
}

fn walk(v: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    if !has_type(v, schema) {
        let want = schema["type"].as_str().unwrap_or("string or integer");
        out.push(format!("{path}: expected {want}, found {}", type_name(v)));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !v.is_null()
        && !allowed.contains(v)
    {
        let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
        out.push(format!("{path}: {v} is not one of {}", names.join(", ")));
    }
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &schema["items"], &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(fields) => walk_object(fields, schema, path, out),
        _ => {}
    }
}

fn walk_object(
    fields: &serde_json::Map<String, Value>,
    schema: &Value,
    path: &str,
    out: &mut Vec<String>,
) {
    let properties = schema["properties"].as_object();
    let open = schema["x-kubernetes-preserve-unknown-fields"] == true;
    for (name, value) in fields {
        let field = format!("{path}.{name}");
        match (
            properties.and_then(|p| p.get(name)),
            &schema["additionalProperties"],
        ) {
            (Some(s), _) => walk(value, s, &field, out),
            (None, Value::Object(_)) => walk(value, &schema["additionalProperties"], &field, out),
            (None, _) if open || properties.is_none() => {}
            (None, _) => {
                let known: Vec<&str> = properties
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                out.push(format!(
                    "{field}: unknown field (known: {})",
                    known.join(", ")
                ));
            }
        }
    }
    for name in schema["required"].as_array().into_iter().flatten() {
        if let Some(name) = name.as_str()
            && !fields.contains_key(name)
        {
            out.push(format!("{path}.{name}: required"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_kinds_and_versions_of_the_group_are_named() {
        let kinds = policy_kinds();
        let kind = unserved(&kinds, "bulkhead.dev/v1alpha1", "NamespaceFirewal");
        assert!(kind.is_some_and(|e| e.contains("unknown kind \"NamespaceFirewal\"")));
        let version = unserved(&kinds, "bulkhead.dev/v1", "NamespaceFirewall");
        assert!(version.is_some_and(|e| e.contains("use bulkhead.dev/v1alpha1")));
        assert_eq!(
            unserved(&kinds, "bulkhead.dev/v1alpha1", "ClusterFirewall"),
            None
        );
        assert_eq!(unserved(&kinds, "v1", "Namespace"), None);
        assert_eq!(unserved(&kinds, "bulkhead.devx/v1", "Other"), None);
    }

    #[test]
    fn every_structural_error_of_an_object_is_listed() {
        let kinds = policy_kinds();
        let object = json!({"spec": {
            "ingres": [],
            "egress": 5,
            "ingress": [{"from": {"namespaces": "web"}, "ports": [{"protocol": "ICMP", "port": "x"}]}],
        }});
        let errs = errors(&kinds, "NamespaceFirewall", &object);
        let has = |p: &str| errs.iter().any(|e| e.starts_with(p));
        assert!(has("spec.ingres: unknown field"), "{errs:?}");
        assert!(
            has("spec.egress: expected array, found integer"),
            "{errs:?}"
        );
        assert!(
            has("spec.ingress[0].from.namespaces: expected array"),
            "{errs:?}"
        );
        assert!(
            has("spec.ingress[0].ports[0].port: expected integer"),
            "{errs:?}"
        );
        assert!(has("spec.ingress[0].ports[0].protocol:"), "{errs:?}");
        assert_eq!(errs.len(), 5, "{errs:?}");
    }

    #[test]
    fn a_valid_object_has_no_structural_error() {
        let kinds = policy_kinds();
        let object = json!({"spec": {"rules": [{"action": "Deny", "from": {}, "to": {"cidrs": ["10.0.0.0/8"]}}],
            "defaults": {"crossNamespace": "Deny", "mode": "Monitor"}}});
        assert_eq!(
            errors(&kinds, "ClusterFirewall", &object),
            Vec::<String>::new()
        );
    }
}
