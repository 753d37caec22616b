//! Namespace modes (docs/design.md#modes): label `bulkhead.dev/mode` > ClusterFirewall default > `--mode`.
use std::collections::{BTreeMap, BTreeSet};

use firewall_common::{MODE_ENFORCE, MODE_MONITOR, MODE_OFF};
use tracing::warn;

use super::{CompileOptions, policy_set::PolicySet};
use crate::model::ClusterModel;

/// The namespace label that sets a namespace's mode.
pub const MODE_LABEL: &str = "bulkhead.dev/mode";

/// Parses a mode name (`enforce`, `monitor`, `off`).
pub fn parse_mode(s: &str) -> Option<u32> {
    match s {
        "enforce" => Some(MODE_ENFORCE),
        "monitor" => Some(MODE_MONITOR),
        "off" => Some(MODE_OFF),
        _ => None,
    }
}

/// The name of a mode value, for explanations.
pub fn mode_name(mode: u32) -> &'static str {
    match mode {
        MODE_ENFORCE => "enforce",
        MODE_OFF => "off",
        _ => "monitor",
    }
}

/// The mode of namespaces without a label.
pub fn default_mode(set: &PolicySet, opts: &CompileOptions) -> u32 {
    set.default_mode.unwrap_or(opts.default_mode)
}

/// The mode of each named namespace.
pub fn namespace_modes(
    model: &ClusterModel,
    set: &PolicySet,
    opts: &CompileOptions,
    names: &BTreeSet<String>,
) -> BTreeMap<String, u32> {
    let fallback = default_mode(set, opts);
    names
        .iter()
        .map(|name| {
            let label = model.namespaces.get(name).and_then(|n| n.labels.get(MODE_LABEL));
            let mode = match label {
                None => fallback,
                Some(v) => parse_mode(v).unwrap_or_else(|| {
                    warn!(namespace = %name, value = %v, "ignoring invalid {MODE_LABEL} label (expected enforce, monitor or off)");
                    fallback
                }),
            };
            (name.clone(), mode)
        })
        .collect()
}
