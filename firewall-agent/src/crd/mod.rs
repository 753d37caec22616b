//! The Bulkhead CRDs (`bulkhead.dev/v1alpha1`), their validation, and the CRD YAML generated from
//! the Rust types (`firewall-agent crds`), so the schema can never drift from what the agent reads.
mod cluster_firewall;
mod common;
mod namespace_firewall;
pub mod syntax;
pub mod valid;
pub mod validate;

pub use cluster_firewall::{
    Action, ClusterDefaults, ClusterFirewall, ClusterFirewallSpec, ClusterRule, DefaultAction,
    DefaultMode,
};
pub use common::{
    Condition, DestPeer, EgressPeer, FirewallStatus, LabelSelector, LabelSelectorRequirement, Peer,
    PortSpec,
};
pub use namespace_firewall::{EgressRule, IngressRule, NamespaceFirewall, NamespaceFirewallSpec};
pub use validate::{FieldError, validate_cluster_firewall, validate_namespace_firewall};

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
}
