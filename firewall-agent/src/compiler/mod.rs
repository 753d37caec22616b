//! The policy compiler: a pure function from the cluster model to the kernel maps' contents
//! (docs/design.md#map-layout), plus the evaluation API that explains single connections.
mod encode;
mod evaluate;
mod explain;
#[cfg(test)]
mod fail_closed_tests;
mod identities;
mod ids;
mod modes;
#[cfg(test)]
mod netpol_tests;
mod policy_set;
mod prefix;
mod standard;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use firewall_common::{Identity, Mode, PolicyPrefix, PolicyValue};

pub use evaluate::Step;
pub use explain::{
    CidrPart, Destination, Evaluator, Explanation, Judgement, Outcome, SideDecision, Source,
    explain,
};
pub use ids::{CIDR_FIRST, IdAllocator, NARROWED_FIRST};
pub use modes::{InvalidModeLabel, MODE_LABEL, ModeSource, NamespaceMode};
pub use prefix::port_prefixes;

use crate::{
    model::{ClusterModel, Rejection},
    policy::{LastAccepted, PolicyApis},
};

/// Compiler settings that come from the agent's command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    /// This node: only its pods get cgroup entries and policy rows of their own.
    pub node_name: String,
    /// `--mode`, for namespaces nothing else sets a mode for.
    pub default_mode: Mode,
    /// The cluster DNS Service (namespace, name), always reachable on port 53.
    pub dns_service: (String, String),
    /// Which policy APIs are enforced; objects of the others are ignored.
    pub policy_apis: PolicyApis,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            default_mode: Mode::Monitor,
            dns_service: ("kube-system".to_owned(), "kube-dns".to_owned()),
            policy_apis: PolicyApis::ALL,
        }
    }
}

/// Everything the kernel needs for one policy generation, slot-free: what the map writer writes
/// into a slot (docs/design.md#map-layout).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MapContents {
    /// This node's pods (not hostNetwork, not terminal): cgroup id -> identity.
    pub cgroups: BTreeMap<u64, Identity>,
    /// IPv4 prefixes -> identity (pods, cluster IPs and host addresses /32, named CIDRs).
    pub ipv4: BTreeMap<(Ipv4Addr, u8), Identity>,
    /// IPv6 prefixes -> identity.
    pub ipv6: BTreeMap<(Ipv6Addr, u8), Identity>,
    /// The policy trie.
    pub policy: BTreeMap<PolicyPrefix, PolicyValue>,
    /// Namespace id -> [`Mode`], as the kernel map holds it.
    pub modes: BTreeMap<u32, u32>,
    /// Mode of namespaces without an entry, as the settings map holds it.
    pub default_mode: u32,
}

/// What one compile gives the map writer and the violation log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compiled {
    /// The kernel maps' contents.
    pub maps: MapContents,
    /// `PolicyValue::rule` -> the log's `policy` string; `[0]` is `"default"`.
    pub rules: Vec<String>,
    /// Namespace id -> name (real namespaces only).
    pub namespaces: BTreeMap<u32, String>,
    /// Objects not applied as written (undeserializable, invalid, or conflicting defaults),
    /// each with what stands in for it.
    pub rejected: Vec<Rejection>,
    /// Every namespace's mode, and where it comes from.
    pub namespace_modes: BTreeMap<String, NamespaceMode>,
    /// The mode of namespaces nothing else sets one for, and where it comes from.
    pub default_mode: NamespaceMode,
    /// Mode labels that are no mode.
    pub invalid_mode_labels: Vec<InvalidModeLabel>,
    /// Identities of this compile: every namespace's, the narrowed ones (by referenced Services
    /// and standard-policy traits), host, world and named CIDRs.
    pub identities: usize,
}

/// What the agent's compiles remember so that a mistake never loosens enforcement: the last
/// accepted version of every policy object and the last valid mode label of every namespace
/// (docs/design.md#invalid-objects). A tool that judges one input alone starts from the
/// default, in which nothing was ever accepted.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    policies: LastAccepted,
    modes: modes::LastValidModes,
}

/// Compiles the model for `opts.node_name` as if it were the first policy ever seen.
pub fn compile(model: &ClusterModel, opts: &CompileOptions, ids: &mut IdAllocator) -> Compiled {
    compile_remembering(model, opts, ids, &mut Memory::default())
}

/// Compiles the model for `opts.node_name`. Pure: the same model, options and state give the
/// same maps; `ids` keeps identities stable across compiles, `memory` what was valid before.
pub fn compile_remembering(
    model: &ClusterModel,
    opts: &CompileOptions,
    ids: &mut IdAllocator,
    memory: &mut Memory,
) -> Compiled {
    let set = policy_set::PolicySet::in_force(model, opts.policy_apis, &mut memory.policies);
    let idents = identities::Identities::build(model, &set, opts, ids);
    let labels: BTreeMap<String, BTreeMap<String, String>> = model
        .namespaces
        .iter()
        .map(|(k, v)| (k.clone(), v.labels.clone()))
        .collect();
    let policy = encode::encode(&set, &idents, &labels);
    let names = identities::namespace_names(model);
    let default_mode = modes::default_mode(&set, opts);
    let (namespace_modes, invalid_mode_labels) =
        modes::namespace_modes(model, &set, opts, &names, &mut memory.modes);
    let modes = idents
        .ns_ids
        .iter()
        .filter_map(|(name, id)| namespace_modes.get(name).map(|m| (*id, m.mode as u32)))
        .collect();
    let identities = idents.kinds.len();
    Compiled {
        identities,
        maps: MapContents {
            cgroups: idents.cgroups,
            ipv4: idents.ipv4,
            ipv6: idents.ipv6,
            policy,
            modes,
            default_mode: default_mode.mode as u32,
        },
        rules: set.rules.into_inner(),
        namespaces: idents
            .ns_ids
            .iter()
            .map(|(n, id)| (*id, n.clone()))
            .collect(),
        rejected: set.rejected,
        namespace_modes,
        default_mode,
        invalid_mode_labels,
    }
}
