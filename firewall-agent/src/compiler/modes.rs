//! Namespace modes (docs/design.md#modes): label `bulkhead.dev/mode` > ClusterFirewall default >
//! `--mode`. Label values are case-insensitive; a value that is no mode keeps the namespace's
//! last valid mode, so a typo in a label never turns enforcement off.
use std::collections::{BTreeMap, BTreeSet};

use firewall_common::Mode;

use super::{CompileOptions, policy_set::PolicySet};
use crate::model::ClusterModel;

/// The namespace label that sets a namespace's mode.
pub const MODE_LABEL: &str = "bulkhead.dev/mode";

/// Where a namespace's mode comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ModeSource {
    /// Its `bulkhead.dev/mode` label.
    Label,
    /// The last valid value of its label: the label's value now is no mode.
    LastValidLabel,
    /// The ClusterFirewall defaults.
    ClusterDefault,
    /// The agent's `--mode`.
    Flag,
}

impl ModeSource {
    /// As `status` and the log print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Label => "label",
            Self::LastValidLabel => "last valid label",
            Self::ClusterDefault => "cluster default",
            Self::Flag => "--mode",
        }
    }
}

/// A namespace's mode and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceMode {
    pub mode: Mode,
    pub source: ModeSource,
}

/// What an empty compile says: `--mode`'s own default.
impl Default for NamespaceMode {
    fn default() -> Self {
        Self {
            mode: Mode::Monitor,
            source: ModeSource::Flag,
        }
    }
}

/// A mode label whose value is no mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidModeLabel {
    pub namespace: String,
    /// The value as written.
    pub value: String,
    /// The mode the namespace keeps meanwhile.
    pub in_force: NamespaceMode,
}

/// The modes each namespace's label set last time it was valid, for the agent's next compile.
#[derive(Clone, Debug, Default)]
pub struct LastValidModes(BTreeMap<String, Mode>);

/// The mode of namespaces without a label.
pub fn default_mode(set: &PolicySet, opts: &CompileOptions) -> NamespaceMode {
    match set.default_mode {
        Some(mode) => NamespaceMode {
            mode,
            source: ModeSource::ClusterDefault,
        },
        None => NamespaceMode {
            mode: opts.default_mode,
            source: ModeSource::Flag,
        },
    }
}

/// A label value as a mode, whatever its case.
pub fn parse_label(value: &str) -> Option<Mode> {
    Mode::from_name(&value.trim().to_ascii_lowercase())
}

/// The mode of each named namespace, and the labels that are no mode.
pub fn namespace_modes(
    model: &ClusterModel,
    set: &PolicySet,
    opts: &CompileOptions,
    names: &BTreeSet<String>,
    last: &mut LastValidModes,
) -> (BTreeMap<String, NamespaceMode>, Vec<InvalidModeLabel>) {
    let fallback = default_mode(set, opts);
    let mut next = LastValidModes::default();
    let mut invalid = Vec::new();
    let modes = names
        .iter()
        .map(|name| {
            let label = model
                .namespaces
                .get(name)
                .and_then(|n| n.labels.get(MODE_LABEL));
            let mode = match label.map(|v| (v, parse_label(v))) {
                None => fallback,
                Some((_, Some(mode))) => {
                    next.0.insert(name.clone(), mode);
                    NamespaceMode {
                        mode,
                        source: ModeSource::Label,
                    }
                }
                Some((value, None)) => {
                    let kept = match last.0.get(name) {
                        Some(&mode) => {
                            next.0.insert(name.clone(), mode);
                            NamespaceMode {
                                mode,
                                source: ModeSource::LastValidLabel,
                            }
                        }
                        None => fallback,
                    };
                    invalid.push(InvalidModeLabel {
                        namespace: name.clone(),
                        value: value.clone(),
                        in_force: kept,
                    });
                    kept
                }
            };
            (name.clone(), mode)
        })
        .collect();
    *last = next;
    (modes, invalid)
}
