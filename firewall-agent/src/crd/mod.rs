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
