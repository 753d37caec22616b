//! `/status`: what only the running agent knows (namespace names and where each mode comes from,
//! rejected objects, invalid mode labels, the local pods it found), beside what the pins show too
//! (slot, generation, map fill). `firewall-agent status` reads it; the loop republishes it after
//! every apply.
use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use firewall_common::Mode;
use serde::{Deserialize, Serialize};

pub use crate::compiler::ModeSource;
use crate::{
    compiler::{CompileOptions, Compiled, NamespaceMode},
    model::{ClusterModel, Rejection},
};

/// One namespace as the policy in force sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    pub name: String,
    /// Its id in the kernel maps.
    pub id: u32,
    /// `enforce`, `monitor` or `off`.
    pub mode: String,
    pub source: ModeSource,
}

/// A `bulkhead.dev/mode` label whose value is no mode, and the mode the namespace keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidLabel {
    pub namespace: String,
    pub value: String,
    pub mode: String,
    pub source: ModeSource,
}

/// A pod of this node with the cgroups found for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalPod {
    pub namespace: String,
    pub name: String,
    /// Container cgroups found under the cgroup root (0: not classified by cgroup yet).
    pub cgroups: usize,
}

/// Entries and capacity of one map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapFill {
    pub name: String,
    pub entries: usize,
    pub capacity: u32,
}

impl MapFill {
    /// From `(name, entries, capacity)`.
    pub fn list(fill: &[(&'static str, usize, u32)]) -> Vec<MapFill> {
        fill.iter()
            .map(|(name, entries, capacity)| MapFill {
                name: (*name).to_owned(),
                entries: *entries,
                capacity: *capacity,
            })
            .collect()
    }
}

/// What the last compile decided, kept by the policy state for `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// Mode of namespaces without an entry, and where it comes from.
    pub default_mode: String,
    pub default_source: Option<ModeSource>,
    pub namespaces: Vec<NamespaceStatus>,
    pub invalid_mode_labels: Vec<InvalidLabel>,
    pub local_pods: Vec<LocalPod>,
}

/// The agent's status, as `/status` serves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub version: String,
    pub commit: String,
    pub node: String,
    pub pid: u32,
    /// `--policy-apis` (empty from an agent that predates it).
    #[serde(default)]
    pub policy_apis: String,
    /// A policy is applied and this node is known (`/readyz`).
    pub ready: bool,
    /// The pin directory; `None` with `--no-pin`.
    pub pin_dir: Option<String>,
    /// This agent's link generation (pinned only).
    pub link_generation: Option<String>,
    /// Whether the maps were adopted from an earlier agent's pins.
    pub adopted: bool,
    pub active_slot: u8,
    /// When a policy was last written (unix ms; 0: never).
    pub applied_unix_ms: u64,
    /// The last apply's error, while the previous policy stays in force.
    pub apply_error: Option<String>,
    /// `None` until a policy has been compiled.
    pub policy: Option<PolicyView>,
    pub rejected: Vec<Rejection>,
    /// Pod cgroups under the cgroup root that belong to no local Pod.
    pub unmatched_pod_cgroups: usize,
    pub maps: Vec<MapFill>,
}

/// The latest snapshot, shared by the loop (writer) and the HTTP server (reader), kept as its
/// JSON so a request costs no serialization.
#[derive(Debug, Default)]
pub struct StatusBoard(RwLock<Arc<String>>);

impl StatusBoard {
    /// Replaces the published snapshot.
    pub fn publish(&self, s: &Snapshot) {
        let json = serde_json::to_string_pretty(s).unwrap_or_else(|e| {
            serde_json::json!({ "error": format!("serializing the status: {e}") }).to_string()
        });
        if let Ok(mut g) = self.0.write() {
            *g = Arc::new(json + "\n");
        }
    }

    /// The published snapshot as JSON.
    pub fn json(&self) -> Arc<String> {
        self.0.read().map(|g| g.clone()).unwrap_or_default()
    }
}

fn mode_name(v: u32) -> String {
    Mode::try_from(v).map_or_else(|_| format!("unknown ({v})"), |m| m.as_str().to_owned())
}

/// What `compiled` (from `model`, with the cgroups found per pod UID) decided, by namespace name.
pub fn policy_view(
    model: &ClusterModel,
    compiled: &Compiled,
    opts: &CompileOptions,
    cgroup_ids: &BTreeMap<String, Vec<u64>>,
) -> PolicyView {
    let m = &compiled.maps;
    let mode = |id: &u32, name: &str| -> (String, Option<ModeSource>) {
        let source = compiled.namespace_modes.get(name).map(|n| n.source);
        // The kernel map's entry is what packets see; the compiler's record says why.
        let v = m.modes.get(id).copied().unwrap_or(m.default_mode);
        (mode_name(v), source)
    };
    let namespaces = compiled
        .namespaces
        .iter()
        .map(|(id, name)| {
            let (mode, source) = mode(id, name);
            NamespaceStatus {
                name: name.clone(),
                id: *id,
                mode,
                source: source.unwrap_or(ModeSource::Flag),
            }
        })
        .collect();
    let kept = |n: &NamespaceMode| (n.mode.as_str().to_owned(), n.source);
    let invalid_mode_labels = compiled
        .invalid_mode_labels
        .iter()
        .map(|l| {
            let (mode, source) = kept(&l.in_force);
            InvalidLabel {
                namespace: l.namespace.clone(),
                value: l.value.clone(),
                mode,
                source,
            }
        })
        .collect();
    let local_pods = model
        .pods
        .iter()
        .filter(|p| p.node_name.as_deref() == Some(opts.node_name.as_str()) && p.is_endpoint())
        .map(|p| LocalPod {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            cgroups: cgroup_ids.get(&p.uid).map_or(0, Vec::len),
        })
        .collect();
    PolicyView {
        default_mode: mode_name(m.default_mode),
        default_source: Some(compiled.default_mode.source),
        namespaces,
        invalid_mode_labels,
        local_pods,
    }
}

/// The snapshot of a running agent: its policy state, writer and datapath.
pub fn snapshot(
    state: &super::apply::PolicyState,
    writer: &crate::datapath::writer::MapWriter,
    datapath: &crate::datapath::Datapath,
) -> Snapshot {
    Snapshot {
        version: crate::VERSION.to_owned(),
        commit: crate::COMMIT.to_owned(),
        node: state.opts.node_name.clone(),
        pid: std::process::id(),
        policy_apis: state.opts.policy_apis.to_string(),
        ready: state.serving(),
        pin_dir: datapath.pin_dir().map(|p| p.display().to_string()),
        link_generation: datapath.generation().map(str::to_owned),
        adopted: datapath.adopted(),
        active_slot: writer.active_slot(),
        applied_unix_ms: state.applied_unix_ms,
        apply_error: state.apply_error.clone(),
        policy: state.view.clone(),
        rejected: state.rejected().to_vec(),
        unmatched_pod_cgroups: state.unmatched_pod_cgroups(),
        maps: MapFill::list(&writer.fill()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compiler::{IdAllocator, compile},
        source::file::parse_objects,
    };

    /// One flow-style document per line: namespaces with a valid label, an invalid one and none;
    /// a pod on this node and one elsewhere.
    const CLUSTER: &str = r#"
{apiVersion: v1, kind: Namespace, metadata: {name: a, labels: {bulkhead.dev/mode: off}}}
--- {apiVersion: v1, kind: Namespace, metadata: {name: b, labels: {bulkhead.dev/mode: enforcing}}}
--- {apiVersion: v1, kind: Namespace, metadata: {name: c}}
--- {apiVersion: v1, kind: Pod, metadata: {name: a1, namespace: a, uid: ua1}, spec: {nodeName: n1, containers: []}, status: {podIP: 10.244.0.1}}
--- {apiVersion: v1, kind: Pod, metadata: {name: b1, namespace: b, uid: ub1}, spec: {nodeName: n2, containers: []}, status: {podIP: 10.244.0.2}}
"#;

    fn view(extra: &str) -> PolicyView {
        let model = parse_objects(&format!("{CLUSTER}{extra}")).expect("model");
        let opts = CompileOptions {
            node_name: "n1".into(),
            default_mode: Mode::Monitor,
            ..Default::default()
        };
        let compiled = compile(&model, &opts, &mut IdAllocator::default());
        let cgroups = BTreeMap::from([("ua1".to_owned(), vec![7, 8])]);
        policy_view(&model, &compiled, &opts, &cgroups)
    }

    fn modes(v: &PolicyView) -> Vec<(&str, &str, ModeSource)> {
        v.namespaces
            .iter()
            .map(|n| (n.name.as_str(), n.mode.as_str(), n.source))
            .collect()
    }

    #[test]
    fn modes_name_their_source() {
        let v = view("");
        // docs/design.md#modes: label > ClusterFirewall default > --mode; an invalid label
        // counts as none and is reported.
        assert_eq!(
            modes(&v),
            [
                ("a", "off", ModeSource::Label),
                ("b", "monitor", ModeSource::Flag),
                ("c", "monitor", ModeSource::Flag),
            ]
        );
        assert_eq!(
            v.invalid_mode_labels,
            [InvalidLabel {
                namespace: "b".into(),
                value: "enforcing".into(),
                mode: "monitor".into(),
                source: ModeSource::Flag,
            }]
        );
        assert_eq!(
            (v.default_mode.as_str(), v.default_source),
            ("monitor", Some(ModeSource::Flag))
        );
        // Only this node's pods, with the cgroups found for them.
        assert_eq!(
            v.local_pods,
            [LocalPod {
                namespace: "a".into(),
                name: "a1".into(),
                cgroups: 2
            }]
        );
        let cfw = "--- {apiVersion: bulkhead.dev/v1alpha1, kind: ClusterFirewall, metadata: {name: base}, spec: {defaults: {mode: Enforce}}}";
        let v = view(cfw);
        assert_eq!(
            modes(&v),
            [
                ("a", "off", ModeSource::Label),
                ("b", "enforce", ModeSource::ClusterDefault),
                ("c", "enforce", ModeSource::ClusterDefault),
            ]
        );
    }

    #[test]
    fn the_board_serves_the_last_snapshot_as_json() {
        let board = StatusBoard::default();
        let s = Snapshot {
            node: "n1".into(),
            rejected: vec![Rejection {
                namespace: Some("a".into()),
                in_force: crate::model::InForce::LastAccepted,
                ..Default::default()
            }],
            ..Default::default()
        };
        board.publish(&s);
        let back: Snapshot = serde_json::from_str(&board.json()).expect("snapshot JSON");
        assert_eq!(back, s);
    }
}
