//! `ClusterFirewall`: the security team's ordered cluster-wide rules and defaults (docs/design.md#policy-semantics).
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DestPeer, FirewallStatus, Peer, PortSpec};

fn default_priority() -> i32 {
    1000
}

/// Rules evaluated before any NamespaceFirewall, ordered by (priority, name, index), and the
/// cluster defaults (at most one object may set them).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "ClusterFirewall",
    shortname = "cfw",
    status = "FirewallStatus",
    derive = "PartialEq",
    doc = "Cluster-wide ordered namespace firewall rules and defaults (Bulkhead).",
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterFirewallSpec {
    /// Lower runs first across ClusterFirewall objects (default 1000).
    #[serde(default = "default_priority")]
    pub priority: i32,
    /// Ordered rules; the first matching one decides (or delegates).
    #[serde(default)]
    #[schemars(extend("maxItems" = 128))]
    pub rules: Vec<ClusterRule>,
    /// Cluster defaults; only one object may set them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<ClusterDefaults>,
}

impl Default for ClusterFirewallSpec {
    fn default() -> Self {
        Self {
            priority: default_priority(),
            rules: Vec::new(),
            defaults: None,
        }
    }
}

/// What a matching cluster rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Action {
    /// The connection is allowed on this side.
    Allow,
    /// The connection is denied on this side.
    Deny,
    /// The cluster rules stop here; the namespaces' own rules decide.
    Delegate,
}

/// One ordered cluster rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRule {
    /// What a match does.
    pub action: Action,
    /// Source namespaces; absent or `{}`: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Peer>,
    /// Destinations; absent or `{}`: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DestPeer>,
    /// Absent: every port and protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 32))]
    pub ports: Option<Vec<PortSpec>>,
}

/// Verdict for namespace pairs that no rule decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DefaultAction {
    /// Allowed (the default: installing the agent breaks nothing).
    Allow,
    /// Denied.
    Deny,
}

/// Mode for namespaces without a `bulkhead.dev/mode` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DefaultMode {
    /// Log and pass.
    Monitor,
    /// Log and drop.
    Enforce,
    /// Neither.
    Off,
}

/// Cluster defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterDefaults {
    /// Verdict for cross-namespace pairs no rule decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_namespace: Option<DefaultAction>,
    /// Mode of namespaces without a mode label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DefaultMode>,
}
