//! The resource table: which kinds the emulator serves and where. One row per resource, so a new
//! kind is one line.

/// One served resource, as discovery would describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group (`""` for core).
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// URL segment (`pods`).
    pub plural: &'static str,
    /// Singular name, for discovery.
    pub singular: &'static str,
    /// `kind` of one object (`Pod`).
    pub kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Whether `/status` exists: then writes to the main resource keep `.status` and writes to
    /// `/status` change only `.status`.
    pub status: bool,
    /// Extra field selectors (beyond `metadata.name`/`metadata.namespace`) the real server accepts.
    pub fields: &'static [&'static str],
}

impl ResourceDef {
    /// `v1` or `group/version`: what objects carry in `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The short names the real server (or the CRD) gives the resource, so `kubectl get ns`
    /// works as it does against a cluster.
    pub fn short_names(&self) -> &'static [&'static str] {
        match self.plural {
            "namespaces" => &["ns"],
            "pods" => &["po"],
            "services" => &["svc"],
            "nodes" => &["no"],
            "configmaps" => &["cm"],
            "events" => &["ev"],
            "namespacefirewalls" => &["nsfw"],
            "clusterfirewalls" => &["cfw"],
            "networkpolicies" => &["netpol"],
            "clusternetworkpolicies" => &["cnp"],
            _ => &[],
        }
    }

    /// Whether `field` may be used in a field selector on this resource.
    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || (field == "metadata.namespace" && self.namespaced)
            || self.fields.contains(&field)
    }
}

#[allow(clippy::too_many_arguments)] // one table row, positional on purpose
const fn def(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
    fields: &'static [&'static str],
) -> ResourceDef {
    ResourceDef {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        status,
        fields,
    }
}

/// Every resource served. Index in this table = resource id in the store.
pub const RESOURCES: &[ResourceDef] = &[
    def(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        true,
        &["status.phase"],
    ),
    def(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        true,
        true,
        &[
            "spec.nodeName",
            "status.phase",
            "status.podIP",
            "spec.serviceAccountName",
            "spec.schedulerName",
            "spec.restartPolicy",
        ],
    ),
    def(
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        true,
        &["spec.clusterIP", "spec.type"],
    ),
    def(
        "",
        "v1",
        "nodes",
        "node",
        "Node",
        false,
        true,
        &["spec.unschedulable"],
    ),
    def(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        false,
        &[],
    ),
    def(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        false,
        &[],
    ),
    def(
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        true,
        false,
        &["regarding.kind", "regarding.name", "reason", "type"],
    ),
    def(
        "bulkhead.dev",
        "v1alpha1",
        "namespacefirewalls",
        "namespacefirewall",
        "NamespaceFirewall",
        true,
        true,
        &[],
    ),
    def(
        "bulkhead.dev",
        "v1alpha1",
        "clusterfirewalls",
        "clusterfirewall",
        "ClusterFirewall",
        false,
        true,
        &[],
    ),
    def(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        true,
        false,
        &[],
    ),
    // network-policy-api v0.2.0's CRD, as if installed.
    def(
        "policy.networking.k8s.io",
        "v1alpha2",
        "clusternetworkpolicies",
        "clusternetworkpolicy",
        "ClusterNetworkPolicy",
        false,
        true,
        &[],
    ),
];

/// The resource id for `group`/`version`/`plural` (URL form).
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource id for an object's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<usize> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Distinct `(group, version)` pairs, in table order (for discovery).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The value at a dotted `path` (`spec.nodeName`) as a string, the way field selectors compare
/// (booleans and numbers by their JSON text; absent = empty string).
pub fn field_value(obj: &serde_json::Value, path: &str) -> String {
    let mut v = obj;
    for part in path.split('.') {
        match v.get(part) {
            Some(x) => v = x,
            None => return String::new(),
        }
    }
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let pods = by_plural("", "v1", "pods").expect("pods");
        assert_eq!(by_kind("v1", "Pod"), Some(pods));
        let nf = by_kind("bulkhead.dev/v1alpha1", "NamespaceFirewall").expect("nf");
        assert_eq!(RESOURCES[nf].api_version(), "bulkhead.dev/v1alpha1");
        assert_eq!(RESOURCES[nf].list_kind(), "NamespaceFirewallList");
        assert!(RESOURCES[pods].supports_field("spec.nodeName"));
        assert!(!RESOURCES[pods].supports_field("spec.bogus"));
        assert_eq!(group_versions()[0], ("", "v1"));
    }
}
