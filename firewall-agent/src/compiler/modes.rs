//! Namespace modes (docs/design.md#modes): label `bulkhead.dev/mode` > ClusterFirewall default >
//! `--mode`.
use std::collections::{BTreeMap, BTreeSet};

use firewall_common::Mode;
use tracing::warn;

use super::{CompileOptions, policy_set::PolicySet};
use crate::model::ClusterModel;

/// The namespace label that sets a namespace's mode.
pub const MODE_LABEL: &str = "bulkhead.dev/mode";

/// The mode of namespaces without a label.
pub fn default_mode(set: &PolicySet, opts: &CompileOptions) -> Mode {
    set.default_mode.unwrap_or(opts.default_mode)
}

/// The mode of each named namespace.
pub fn namespace_modes(
    model: &ClusterModel,
    set: &PolicySet,
    opts: &CompileOptions,
    names: &BTreeSet<String>,
) -> BTreeMap<String, Mode> {
    let fallback = default_mode(set, opts);
    names
        .iter()
        .map(|name| {
            let label = model.namespaces.get(name).and_then(|n| n.labels.get(MODE_LABEL));
            let mode = match label {
                None => fallback,
                Some(v) => Mode::from_name(v).unwrap_or_else(|| {
                    warn!(namespace = %name, value = %v, "ignoring invalid {MODE_LABEL} label (expected enforce, monitor or off)");
                    fallback
                }),
            };
            (name.clone(), mode)
        })
        .collect()
}
