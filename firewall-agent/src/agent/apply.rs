//! Model -> compiled maps -> kernel, keeping the last good policy when anything fails.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
    time::Instant,
};

use tracing::{error, info, warn};

use super::{local_addresses::local_addresses, metrics::Metrics, status::PolicyView};

use crate::{
    cgroups,
    compiler::{self, CompileOptions, Compiled, IdAllocator, InvalidModeLabel, MODE_LABEL},
    datapath::writer::{ApplyError, MapWriter},
    events::{NameTables, Names, names::PodName},
    model::{ClusterModel, Rejection},
};

/// The agent's policy state: the last good model and what was applied from it.
pub struct PolicyState {
    pub opts: CompileOptions,
    cgroup_root: PathBuf,
    ids: IdAllocator,
    /// What was valid before, so that a rejection or a bad label never loosens enforcement.
    memory: compiler::Memory,
    model: Option<ClusterModel>,
    cgroup_ids: BTreeMap<String, Vec<u64>>,
    rejected: Vec<Rejection>,
    invalid_labels: Vec<InvalidModeLabel>,
    metrics: Arc<Metrics>,
    /// Whether a policy has been applied at least once.
    pub ready: bool,
    /// Whether the model names this node (a Node object or a Pod's `spec.nodeName`).
    node_seen: bool,
    /// Pod UIDs with a cgroup on this node but no local Pod object.
    unmatched: BTreeSet<String>,
    /// What the policy in force decided, by name (`/status`).
    pub view: Option<PolicyView>,
    /// When a policy was last written (unix ms).
    pub applied_unix_ms: u64,
    /// Why the last apply failed, while the previous policy stays in force.
    pub apply_error: Option<String>,
}

/// The log's name tables for a model and its compiled policy.
pub fn name_tables(model: &ClusterModel, c: &Compiled) -> NameTables {
    let mut t = NameTables {
        rules: c.rules.clone(),
        namespaces: c
            .namespaces
            .iter()
            .map(|(id, n)| (*id, n.clone()))
            .collect(),
        ..Default::default()
    };
    for pod in model.pods.iter().filter(|p| !p.terminal) {
        let name = Arc::new(PodName {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            ips: pod.ips.clone(),
        });
        if !pod.host_network {
            for ip in &pod.ips {
                t.by_ip.insert(*ip, name.clone());
            }
        }
        for cg in &pod.cgroup_ids {
            t.by_cgroup.insert(*cg, name.clone());
        }
    }
    t
}

impl PolicyState {
    /// Empty state: nothing applied yet.
    pub fn new(opts: CompileOptions, cgroup_root: PathBuf, metrics: Arc<Metrics>) -> Self {
        Self {
            opts,
            cgroup_root,
            ids: IdAllocator::default(),
            memory: compiler::Memory::default(),
            model: None,
            cgroup_ids: BTreeMap::new(),
            rejected: Vec::new(),
            invalid_labels: Vec::new(),
            metrics,
            ready: false,
            node_seen: false,
            unmatched: BTreeSet::new(),
            view: None,
            applied_unix_ms: 0,
            apply_error: None,
        }
    }

    /// Whether the agent does its job: a policy is applied and this node is the one the model
    /// knows by `--node-name`. A wrong node name matches no pod, so the policy would enforce
    /// nothing on this node: `/readyz` must not say ready then.
    pub fn serving(&self) -> bool {
        self.ready && self.node_seen
    }

    /// Checks that the model knows this node; logs the names it does know when it does not.
    fn check_node(&mut self, model: &ClusterModel) {
        let node = self.opts.node_name.as_str();
        let mut seen: BTreeSet<&str> = model.nodes.iter().map(|n| n.name.as_str()).collect();
        seen.extend(model.pods.iter().filter_map(|p| p.node_name.as_deref()));
        let known = seen.contains(node);
        self.metrics.node_known(known);
        if known && !self.node_seen && self.ready {
            info!(node, "this node is known now; ready");
        }
        if !known && (self.node_seen || !self.ready) {
            let seen: Vec<&str> = seen.into_iter().collect();
            error!(
                node,
                seen = %seen.join(", "),
                "no Node object and no Pod's spec.nodeName is this node: check --node-name (NODE_NAME); not ready, nothing on this node is classified as a pod"
            );
        }
        self.node_seen = known;
    }

    /// A new model from the source; applied at once. Returns false (and does nothing) when it
    /// equals the current one, e.g. after events that only touched status or bookkeeping.
    pub fn set_model(
        &mut self,
        model: ClusterModel,
        writer: &mut MapWriter,
        names: &mut Names,
    ) -> bool {
        if self.model.as_ref() == Some(&model) {
            return false;
        }
        self.check_node(&model);
        self.model = Some(model);
        self.rediscover();
        self.apply(writer, names);
        true
    }

    /// Pod cgroups of this node that belong to no local Pod.
    pub fn unmatched_pod_cgroups(&self) -> usize {
        self.unmatched.len()
    }

    /// The policy objects rejected by the last compile.
    pub fn rejected(&self) -> &[Rejection] {
        &self.rejected
    }

    /// The mode labels the last compile found to be no mode.
    pub fn invalid_mode_labels(&self) -> &[InvalidModeLabel] {
        &self.invalid_labels
    }

    /// Looks for this node's pods' cgroups again; true when something changed (containers start
    /// and restart after their Pod object appears).
    pub fn rediscover(&mut self) -> bool {
        let Some(model) = &self.model else {
            return false;
        };
        let mut found = BTreeMap::new();
        for pod in &model.pods {
            let local = pod.node_name.as_deref() == Some(self.opts.node_name.as_str());
            if local && !pod.host_network && !pod.terminal {
                found.insert(
                    pod.uid.clone(),
                    cgroups::pod_cgroup_ids(&self.cgroup_root, &pod.uid),
                );
            }
        }
        let changed = found != self.cgroup_ids;
        self.cgroup_ids = found;
        self.report_unmatched();
        changed
    }

    /// Counts, and warns once per change about, pod cgroups of this node that belong to no
    /// local Pod: the kubelet runs them here, so the API (or `--node-name`) is wrong about them
    /// and their traffic is classified by address only.
    fn report_unmatched(&mut self) {
        let unmatched: BTreeSet<String> = cgroups::pod_uids(&self.cgroup_root)
            .into_iter()
            .filter(|uid| !self.cgroup_ids.contains_key(uid))
            .collect();
        self.metrics.unmatched_pod_cgroups(unmatched.len());
        if !unmatched.is_empty() && unmatched != self.unmatched {
            let some: Vec<&str> = unmatched.iter().take(5).map(String::as_str).collect();
            warn!(
                count = unmatched.len(),
                pod_uids = %some.join(", "),
                node = %self.opts.node_name,
                "pod cgroups on this node belong to no Pod of this node: is --node-name right?"
            );
        }
        self.unmatched = unmatched;
    }

    /// Compiles the current model and writes the difference into the kernel.
    pub fn apply(&mut self, writer: &mut MapWriter, names: &mut Names) {
        let Some(model) = &self.model else { return };
        let started = Instant::now();
        let mut model = model.clone();
        for pod in &mut model.pods {
            if let Some(ids) = self.cgroup_ids.get(&pod.uid) {
                pod.cgroup_ids.clone_from(ids);
            }
        }
        // Read at each compile: a bridge CNI creates its gateway with the node's first pod.
        match local_addresses() {
            Ok(addresses) => model.add_node_addresses(&self.opts.node_name, &addresses),
            Err(e) => {
                warn!(error = %e, "cannot list this node's interface addresses: only the Node object's count as the host");
            }
        }
        let compiled =
            compiler::compile_remembering(&model, &self.opts, &mut self.ids, &mut self.memory);
        self.report_rejections(&compiled);
        self.report_invalid_labels(&compiled);
        let contents = &compiled.maps;
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;
        let objects =
            model.namespace_firewalls.len() + model.cluster_firewalls.len() + model.rejected.len();
        let accepted = objects.saturating_sub(compiled.rejected.len());
        let labels = compiled.invalid_mode_labels.len();
        let view = super::status::policy_view(&model, &compiled, &self.opts, &self.cgroup_ids);
        if self.ready && contents == writer.active_contents() {
            self.view = Some(view);
            self.apply_error = None;
            names.set(writer.active_slot(), name_tables(&model, &compiled));
            self.metrics
                .policy_objects(accepted, &compiled.rejected, labels);
            return;
        }
        match writer.apply(contents) {
            Ok(stats) => {
                self.view = Some(view);
                self.applied_unix_ms = crate::clock::unix_ms();
                self.apply_error = None;
                names.set(stats.slot, name_tables(&model, &compiled));
                self.metrics.applied(started.elapsed());
                self.metrics
                    .policy_objects(accepted, &compiled.rejected, labels);
                self.metrics.observe_maps(&writer.entries());
                info!(
                    written = stats.written,
                    deleted = stats.deleted,
                    slot = stats.slot,
                    pods = contents.cgroups.len(),
                    addresses = contents.ipv4.len() + contents.ipv6.len(),
                    policy_entries = contents.policy.len(),
                    identities = compiled.identities,
                    compile_ms = format!("{compile_ms:.2}"),
                    total_ms = format!("{:.2}", started.elapsed().as_secs_f64() * 1e3),
                    "policy applied"
                );
                if !self.ready {
                    self.ready = true;
                    if self.node_seen {
                        info!("ready");
                    }
                }
            }
            Err(e) => {
                let map = match &e {
                    ApplyError::Capacity { map, .. } => map,
                    ApplyError::Write(w) => w.map,
                };
                self.metrics.apply_failed(map);
                error!(error = %e, "policy not applied");
                self.apply_error = Some(e.to_string());
            }
        }
    }

    /// Logs the objects rejected by this compile that the previous one had not rejected, and
    /// what stands in for each.
    fn report_rejections(&mut self, c: &Compiled) {
        for r in c.rejected.iter().filter(|r| !self.rejected.contains(r)) {
            warn!(
                object = %r,
                in_force = r.in_force.reason(),
                "policy object rejected; {}",
                r.in_force.describe()
            );
        }
        self.rejected.clone_from(&c.rejected);
    }

    /// Logs the mode labels that became invalid with this compile, and the mode each keeps.
    fn report_invalid_labels(&mut self, c: &Compiled) {
        for l in c
            .invalid_mode_labels
            .iter()
            .filter(|l| !self.invalid_labels.contains(l))
        {
            warn!(
                namespace = %l.namespace,
                value = %l.value,
                mode = %l.in_force.mode,
                from = l.in_force.source.as_str(),
                "invalid {MODE_LABEL} label (expected enforce, monitor or off, in any case); the namespace keeps its mode"
            );
        }
        self.invalid_labels.clone_from(&c.invalid_mode_labels);
    }
}
