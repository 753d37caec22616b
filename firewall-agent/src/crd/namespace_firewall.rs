//! `NamespaceFirewall`: a namespace team's own ingress and egress allow-lists (docs/design.md#policy-semantics).
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{EgressPeer, FirewallStatus, Peer, PortSpec};

/// Who may connect into this namespace and where it may connect to. Absent `ingress`/`egress`
/// leaves that direction unrestricted by this object; `[]` allows nothing.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "NamespaceFirewall",
    namespaced,
    shortname = "nsfw",
    status = "FirewallStatus",
    derive = "PartialEq",
    doc = "Connections allowed into and out of one namespace (Bulkhead).",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceFirewallSpec {
    /// Allowed incoming connections (union of rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 64))]
    pub ingress: Option<Vec<IngressRule>>,
    /// Allowed outgoing connections (union of rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 64))]
    pub egress: Option<Vec<EgressRule>>,
}

/// Connections from `from` into this namespace (optionally only to some Services' pods) on `ports`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    /// Source namespaces.
    pub from: Peer,
    /// Names of Services of this namespace: only their pods and cluster IPs are opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 256, "items" = {"type": "string", "maxLength": 63, "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$"}))]
    pub services: Option<Vec<String>>,
    /// Absent: every port and protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 32))]
    pub ports: Option<Vec<PortSpec>>,
}

/// Connections from this namespace to `to` on `ports`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// Destination namespaces and/or addresses.
    pub to: EgressPeer,
    /// Absent: every port and protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 32))]
    pub ports: Option<Vec<PortSpec>>,
}
