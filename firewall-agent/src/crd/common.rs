//! Types shared by both CRDs: peers, ports, label selectors and the status block.
use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// Schema bounds. The API server refuses a CRD whose CEL rules could cost too much in the worst
// case, and it estimates that worst case from `maxItems`/`maxLength` (unbounded lists count as
// "as many as fit in a request"). So every list on the way to a CEL rule is bounded; split a
// larger policy into more rules or objects (rules of one namespace are a union).
// NamespaceFirewall ingress/egress: 64 rules; ClusterFirewall rules: 128 (in their files);
// ports 32, cidrs 32, except 32, matchExpressions 16 per entry (here).

/// Declares a peer struct: the two ways every peer picks namespaces (`namespaces`,
/// `namespaceSelector`), then the peer's own fields. Unknown fields are refused so that a typo
/// never widens a rule to `{}`.
macro_rules! peer {
    ($(#[$attr:meta])* $name:ident { $($field:tt)* }) => {
        $(#[$attr])*
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// Namespaces by name.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(extend("maxItems" = 256, "items" = {"type": "string", "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}))]
            pub namespaces: Option<Vec<String>>,
            /// Namespaces by label.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub namespace_selector: Option<LabelSelector>,
            $($field)*
        }
    };
}

/// Declares a destination peer: a [`peer!`] whose own fields are followed by addresses outside
/// every namespace, `cidrs` (described by `$cidrs_doc`) minus `except`, and the rule that keeps
/// `except` inside `cidrs`.
macro_rules! destination_peer {
    // Each address list: its doc, and the examples its two CEL messages give.
    (@lists $(#[$attr:meta])* $name:ident { $($field:tt)* }
        $($list:ident($doc:literal, $such_as:literal, $e_g:literal))*) => {
        peer! {
            $(#[$attr])*
            #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
            #[x_kube(validation = Rule::new(
                "!has(self.except) || (has(self.cidrs) && self.except.all(e, !isCIDR(e) || self.cidrs.exists(c, isCIDR(c) && cidr(c).containsCIDR(e))))"
            )
            .message("each except entry must lie inside one of cidrs")
            .field_path(".except"))]
            $name {
                $($field)*
                $(
                    #[doc = $doc]
                    #[serde(default, skip_serializing_if = "Option::is_none")]
                    #[schemars(extend("maxItems" = 32, "items" = {"type": "string", "maxLength": 64}))]
                    #[x_kube(
                        validation = Rule::new("self.all(c, isCIDR(c))").message(concat!("each entry must be a CIDR such as ", $such_as)),
                        validation = Rule::new("self.all(c, !isCIDR(c) || cidr(c) == cidr(c).masked())").message(concat!("host bits set: write the network address, e.g. ", $e_g))
                    )]
                    pub $list: Option<Vec<String>>,
                )*
            }
        }
    };
    ($(#[$attr:meta])* $name:ident { $($field:tt)* } cidrs: $cidrs_doc:literal) => {
        destination_peer! {
            @lists $(#[$attr])* $name { $($field)* }
            cidrs($cidrs_doc, "10.0.0.0/8 or fd00::/8", "10.0.0.0/8")
            except(" Prefixes carved out of `cidrs`; each must lie inside one of them.", "10.1.0.0/16", "10.1.0.0/16")
        }
    };
}

peer! {
    /// A set of source namespaces (`from`): named ones plus those a selector picks; `{}` is every
    /// namespace. Unknown fields are refused so that a typo never widens a rule to `{}`.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    Peer {}
}

destination_peer! {
    /// A NamespaceFirewall egress destination: namespaces (by name or label) and addresses outside
    /// every namespace (`cidrs` minus `except`).
    EgressPeer {}
    cidrs: " World and host addresses (never pods or cluster IPs), e.g. `10.0.0.0/8`, `fd00::/8`."
}

destination_peer! {
    /// A ClusterFirewall destination: like [`EgressPeer`], plus `services` (`namespace/name`) that
    /// narrow the rule to the pods behind those Services and their cluster IPs.
    DestPeer {
        /// Services as `namespace/name`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(extend("maxItems" = 256, "items" = {"type": "string", "maxLength": 127, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z]([-a-z0-9]*[a-z0-9])?$"}))]
        pub services: Option<Vec<String>>,
    }
    cidrs: " World and host addresses."
}

fn default_protocol() -> String {
    "TCP".to_owned()
}

/// A protocol and an optional port range; absent `port` means every port of the protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("!has(self.endPort) || has(self.port)").message("endPort requires port").field_path(".endPort"),
    validation = Rule::new("!has(self.endPort) || !has(self.port) || self.endPort >= self.port").message("endPort must not be less than port").field_path(".endPort")
)]
pub struct PortSpec {
    // A string (not an enum) so that an unknown value is reported by validation with its path
    // instead of failing the whole document.
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default = "default_protocol")]
    #[schemars(extend("enum" = ["TCP", "UDP", "SCTP"]))]
    pub protocol: String,
    /// First port (1..=65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1, "maximum" = 65535))]
    pub port: Option<i32>,
    /// Last port of a range (requires `port`, >= `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1, "maximum" = 65535))]
    pub end_port: Option<i32>,
}

/// A Kubernetes label selector (same shape and meaning as `metav1.LabelSelector`): every
/// `matchLabels` pair and every expression must hold; `{}` selects everything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 16))]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// One set-based requirement of a [`LabelSelector`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)"
)
.message("In and NotIn need at least one value; Exists and DoesNotExist take none")
.field_path(".values"))]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    #[schemars(extend("enum" = ["In", "NotIn", "Exists", "DoesNotExist"]))]
    pub operator: String,
    /// Values for `In`/`NotIn`; must be empty for `Exists`/`DoesNotExist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

/// Status of both CRDs: the agent reports whether the object was accepted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirewallStatus {
    /// `Accepted` (and possibly more) conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A status condition, shaped like `metav1.Condition`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Accepted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable CamelCase reason.
    #[serde(default)]
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time of the last status change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
