//! The scenario file: the namespaces, pods, services and policy objects of one simulated node.
//!
//! One YAML file describes everything a test or a demo needs, so that the same cluster can be
//! brought up by `cargo xtask testbed up`, by an end-to-end test and by the demo. Every error names
//! the offending field (`pods[2].namespace: ...`), because a typo in a scenario should cost seconds.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    net::Ipv6Addr,
    path::Path,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// Highest pod count: pod `i` gets host number `10 + i` in a /24.
pub const MAX_PODS: usize = 245;

/// A whole simulated node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// `[a-z0-9]{1,6}`: part of every resource name (netns, links, cgroups, state file), so two
    /// scenarios with different names never collide.
    pub name: String,
    /// The kubelet cgroup driver whose layout the pod cgroups follow (docs/design.md#local-pods-cgroup-ids).
    #[serde(default)]
    pub cgroup_driver: CgroupDriver,
    /// The Node object's name; pods are scheduled on it (`spec.nodeName`).
    #[serde(default = "default_node_name")]
    pub node_name: String,
    /// Picks 198.18.<subnet>.0/24 and fd00:b1:<subnet>::/64, so parallel testbeds don't collide.
    pub subnet: u8,
    /// Whether pods also get an IPv6 address (default: yes).
    #[serde(default = "yes")]
    pub ipv6: bool,
    /// The Kubernetes namespaces (with labels, which policies select on).
    #[serde(default)]
    pub namespaces: Vec<NamespaceSpec>,
    /// The pods; pod `i` (0-based, in file order) gets addresses ending in `10 + i`.
    #[serde(default)]
    pub pods: Vec<PodSpec>,
    /// Services (metadata for the agent: selectors and cluster IPs; not routed).
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Raw Kubernetes objects passed through to the agent's source (NamespaceFirewall, ...).
    #[serde(default)]
    pub objects: Vec<serde_yaml::Value>,
}

fn default_node_name() -> String {
    "node-1".to_owned()
}

fn yes() -> bool {
    true
}

/// The kubelet cgroup driver, which decides the pod cgroup layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// `kubepods/burstable/pod<UID>/<container id>`.
    #[default]
    Cgroupfs,
    /// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID_>.slice/cri-containerd-<id>.scope`.
    Systemd,
}

/// A Kubernetes namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSpec {
    /// The namespace name (DNS label).
    pub name: String,
    /// Labels, which `namespaceSelector`s and the `bulkhead.dev/mode` label use.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A pod: a netns + veth + kubelet-style cgroup + an echo server on the `serve` ports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    /// The pod name.
    pub name: String,
    /// Its namespace; must be declared in `namespaces`.
    pub namespace: String,
    /// Pod labels, which Service selectors match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// QoS class: decides the cgroup parent, as kubelet does.
    #[serde(default)]
    pub qos: Qos,
    /// Ports the pod's echo server listens on.
    #[serde(default)]
    pub serve: Vec<PortSpec>,
    /// A hostNetwork pod shares the node's network namespace and addresses (it still gets a cgroup).
    #[serde(default)]
    pub host_network: bool,
    /// Container port names (`ports[].name`, for named-port policies): name -> one of `serve`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_names: BTreeMap<String, PortSpec>,
}

impl PodSpec {
    /// The container port name of a served port, if it has one.
    pub fn port_name(&self, port: &PortSpec) -> Option<&str> {
        self.port_names
            .iter()
            .find(|(_, p)| *p == port)
            .map(|(n, _)| n.as_str())
    }
    /// `namespace/name`, the key the testbed API uses for pods.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Kubernetes QoS class of a pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Qos {
    /// Requests = limits: the pod cgroup sits directly under `kubepods`.
    Guaranteed,
    /// The most common class.
    #[default]
    Burstable,
    /// No requests.
    Besteffort,
}

impl Qos {
    /// The name kubelet uses in cgroup paths and `status.qosClass`.
    pub fn kube_name(self) -> &'static str {
        match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::Besteffort => "BestEffort",
        }
    }
}

/// A transport protocol the echo server and the probes speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP (connect + echo).
    #[serde(rename = "TCP", alias = "tcp")]
    Tcp,
    /// UDP (one datagram, one echo).
    #[serde(rename = "UDP", alias = "udp")]
    Udp,
}

impl Protocol {
    /// The Kubernetes spelling (`TCP`, `UDP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A (protocol, port) a pod serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSpec {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// 1..=65535.
    pub port: u16,
}

/// A Service: a selector and a cluster IP (metadata only; the testbed does not route it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service name.
    pub name: String,
    /// Its namespace; must be declared in `namespaces`.
    pub namespace: String,
    /// Pod label selector (pods of the same namespace).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Service ports; absent: the ports the selected pods serve.
    #[serde(default)]
    pub ports: Option<Vec<PortSpec>>,
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Scenario::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    /// Parses and validates scenario YAML.
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let s: Scenario = serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        s.validate()?;
        Ok(s)
    }

    /// Checks what serde cannot: name syntax, references, uniqueness, limits.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.name.is_empty()
            || self.name.len() > 6
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            bail!(
                "name: {:?} must match [a-z0-9]{{1,6}} (it is part of interface names)",
                self.name
            );
        }
        dns_label("nodeName", &self.node_name)?;
        let mut namespaces = BTreeSet::new();
        for (i, ns) in self.namespaces.iter().enumerate() {
            dns_label(&format!("namespaces[{i}].name"), &ns.name)?;
            if !namespaces.insert(ns.name.as_str()) {
                bail!("namespaces[{i}].name: {:?} is declared twice", ns.name);
            }
        }
        self.validate_pods(&namespaces)?;
        self.validate_services(&namespaces)?;
        self.validate_objects()
    }

    fn validate_pods(&self, namespaces: &BTreeSet<&str>) -> anyhow::Result<()> {
        if self.pods.len() > MAX_PODS {
            bail!(
                "pods: {} pods, at most {MAX_PODS} fit in one /24",
                self.pods.len()
            );
        }
        let mut pods = BTreeSet::new();
        for (i, p) in self.pods.iter().enumerate() {
            let field = format!("pods[{i}]");
            dns_label(&format!("{field}.name"), &p.name)?;
            declared(namespaces, &field, &p.namespace)?;
            if !pods.insert(p.key()) {
                bail!("pods[{i}]: pod {} is declared twice", p.key());
            }
            let mut seen = BTreeSet::new();
            for (j, port) in p.serve.iter().enumerate() {
                nonzero_port(&format!("pods[{i}].serve[{j}]"), port)?;
                if !seen.insert(*port) {
                    bail!(
                        "pods[{i}].serve[{j}]: {} {} is listed twice",
                        port.protocol,
                        port.port
                    );
                }
            }
            validate_port_names(i, p)?;
        }
        // hostNetwork pods share the node's addresses: two of them cannot serve the same port.
        let mut host_ports = BTreeMap::new();
        for (i, p) in self.pods.iter().enumerate().filter(|(_, p)| p.host_network) {
            for (j, port) in p.serve.iter().enumerate() {
                if let Some(other) = host_ports.insert(*port, i) {
                    bail!(
                        "pods[{i}].serve[{j}]: hostNetwork pods[{other}] already serves {} {}",
                        port.protocol,
                        port.port
                    );
                }
            }
        }
        Ok(())
    }

    fn validate_services(&self, namespaces: &BTreeSet<&str>) -> anyhow::Result<()> {
        let mut services = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let field = format!("services[{i}]");
            dns_label(&format!("{field}.name"), &s.name)?;
            declared(namespaces, &field, &s.namespace)?;
            if !services.insert((s.namespace.as_str(), s.name.as_str())) {
                bail!(
                    "services[{i}]: service {}/{} is declared twice",
                    s.namespace,
                    s.name
                );
            }
            for (j, port) in s.ports.iter().flatten().enumerate() {
                nonzero_port(&format!("services[{i}].ports[{j}]"), port)?;
            }
        }
        if self.services.len() > 245 {
            bail!("services: at most 245 services");
        }
        Ok(())
    }

    fn validate_objects(&self) -> anyhow::Result<()> {
        for (i, o) in self.objects.iter().enumerate() {
            for field in ["apiVersion", "kind"] {
                if o.get(field).and_then(|v| v.as_str()).is_none() {
                    bail!("objects[{i}].{field}: missing (every object needs apiVersion and kind)");
                }
            }
            if o.get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|v| v.as_str())
                .is_none()
            {
                bail!("objects[{i}].metadata.name: missing");
            }
        }
        Ok(())
    }

    /// Index of the pod `namespace/name`.
    pub fn pod_index(&self, key: &str) -> Option<usize> {
        self.pods.iter().position(|p| p.key() == key)
    }

    /// The node's (bridge's) IPv4 address: 198.18.<subnet>.1.
    pub fn node_ipv4(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 1)
    }

    /// The node's (bridge's) IPv6 address: fd00:b1:<subnet>::1.
    pub fn node_ipv6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0xb1, self.subnet.into(), 0, 0, 0, 0, 1)
    }

    /// The IPv4 address of pod `i` (the node's for hostNetwork pods).
    pub fn pod_ipv4(&self, i: usize) -> Ipv4Addr {
        if self.pods[i].host_network {
            self.node_ipv4()
        } else {
            Ipv4Addr::new(198, 18, self.subnet, host_octet(i))
        }
    }

    /// The IPv6 address of pod `i`, if the scenario has IPv6 (the node's for hostNetwork pods).
    pub fn pod_ipv6(&self, i: usize) -> Option<Ipv6Addr> {
        if !self.ipv6 {
            return None;
        }
        if self.pods[i].host_network {
            return Some(self.node_ipv6());
        }
        Some(Ipv6Addr::new(
            0xfd00,
            0xb1,
            self.subnet.into(),
            0,
            0,
            0,
            0,
            u16::from(host_octet(i)),
        ))
    }

    /// Cluster IPv4 of service `j`: 198.19.<subnet>.(10 + j).
    pub fn service_ipv4(&self, j: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.subnet, host_octet(j))
    }

    /// Cluster IPv6 of service `j` (with IPv6): fd00:b1:<subnet>:1::(10 + j).
    pub fn service_ipv6(&self, j: usize) -> Option<Ipv6Addr> {
        self.ipv6.then(|| {
            Ipv6Addr::new(
                0xfd00,
                0xb1,
                self.subnet.into(),
                1,
                0,
                0,
                0,
                u16::from(host_octet(j)),
            )
        })
    }
}

fn host_octet(i: usize) -> u8 {
    // Validation keeps i < MAX_PODS, so 10 + i <= 254.
    u8::try_from(10 + i).unwrap_or(254)
}

fn dns_label(field: &str, v: &str) -> anyhow::Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if !ok {
        bail!(
            "{field}: {v:?} is not a DNS label ([a-z0-9-], 1..63 characters, no leading or trailing '-')"
        );
    }
    Ok(())
}

/// `FIELD.namespace` names a declared namespace.
fn declared(namespaces: &BTreeSet<&str>, field: &str, namespace: &str) -> anyhow::Result<()> {
    if !namespaces.contains(namespace) {
        bail!("{field}.namespace: namespace {namespace:?} is not declared in namespaces");
    }
    Ok(())
}

/// `pods[i].portNames`: IANA service names (as a container port's `name`), each naming a
/// served port, no port named twice.
fn validate_port_names(i: usize, p: &PodSpec) -> anyhow::Result<()> {
    let mut named = BTreeSet::new();
    for (name, port) in &p.port_names {
        let field = format!("pods[{i}].portNames.{name}");
        let ok = (1..=15).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && name.bytes().any(|b| b.is_ascii_lowercase())
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains("--");
        if !ok {
            bail!("{field}: {name:?} is not a port name (IANA service name, 1..15 characters)");
        }
        if !p.serve.contains(port) {
            bail!("{field}: {} {} is not served", port.protocol, port.port);
        }
        if !named.insert(*port) {
            bail!(
                "{field}: {} {} already has a name",
                port.protocol,
                port.port
            );
        }
    }
    Ok(())
}

/// `FIELD.port` is not 0.
fn nonzero_port(field: &str, port: &PortSpec) -> anyhow::Result<()> {
    if port.port == 0 {
        bail!("{field}.port: must be 1..=65535");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name: saas
subnet: 7
namespaces: [{name: frontend, labels: {team: web}}]
pods: [{name: web, namespace: frontend, serve: [{protocol: TCP, port: 80}]}]
"#;

    #[test]
    fn defaults() {
        let s = Scenario::parse(OK).expect("valid");
        assert_eq!(s.cgroup_driver, CgroupDriver::Cgroupfs);
        assert_eq!(s.node_name, "node-1");
        assert!(s.ipv6);
        assert_eq!(s.pods[0].qos, Qos::Burstable);
        assert_eq!(s.pod_ipv4(0).to_string(), "198.18.7.10");
        assert_eq!(
            s.pod_ipv6(0).map(|a| a.to_string()).as_deref(),
            Some("fd00:b1:7::a")
        );
    }

    fn err(text: &str) -> String {
        format!("{:#}", Scenario::parse(text).expect_err("must fail"))
    }

    #[test]
    fn port_names_name_served_ports() {
        let named = OK.replace(
            "serve: [{protocol: TCP, port: 80}]",
            "serve: [{protocol: TCP, port: 80}], portNames: {serve-80-tcp: {protocol: TCP, port: 80}}",
        );
        let s = Scenario::parse(&named).expect("valid");
        let p = &s.pods[0];
        assert_eq!(p.port_name(&p.serve[0]), Some("serve-80-tcp"));
        let e = err(&named.replace("port: 80}}", "port: 81}}"));
        assert!(e.contains("pods[0].portNames.serve-80-tcp"), "{e}");
        let e = err(&named.replace("serve-80-tcp", "Serve_80"));
        assert!(e.contains("not a port name"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err(&OK.replace("saas", "Bad_Name")).contains("name:"));
        assert!(
            err(&OK.replace("namespace: frontend", "namespace: nope"))
                .contains("pods[0].namespace")
        );
        let e = err(&OK.replace("TCP", "ICMP"));
        assert!(
            e.contains("pods[0].serve[0].protocol") || e.contains("pods[0].serve[0]"),
            "{e}"
        );
        let e = err(&OK.replace("subnet: 7", "subnet: 700"));
        assert!(e.contains("subnet"), "{e}");
        let e = err(&OK.replace("serve:", "srve:"));
        assert!(e.contains("srve"), "{e}");
    }
}
