//! A simulated node for one test: a testbed (pods as netns + kubelet cgroups), the agent's source
//! file, and shorthands for probing from one pod to another.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

use bulkhead_tests::{
    Options, PingResult, ProbeResult, Protocol, Scenario, Target, Testbed, WorldServer,
    agent::Pinning, scenario::PortSpec,
};

use super::agent::Agent;

/// The probe result type.
pub type R = ProbeResult;

const TIMEOUT: Duration = Duration::from_millis(1500);

/// Pods for the restart tests: a client `alpha/a` and two servers, `beta/b` (TCP 8080) and
/// `gamma/c` (TCP 9090), one namespace each.
pub const THREE_PODS: &str = r#"
namespaces:
  - {name: alpha}
  - {name: beta}
  - {name: gamma}
pods:
  - {name: a, namespace: alpha, labels: {app: a}}
  - {name: b, namespace: beta, labels: {app: b}, serve: [{protocol: TCP, port: 8080}]}
  - {name: c, namespace: gamma, labels: {app: c}, serve: [{protocol: TCP, port: 9090}]}
"#;

/// A testbed plus the source file the agent reads.
pub struct Node {
    tb: Testbed,
    source: PathBuf,
    dir: PathBuf,
    node_name: String,
}

/// YAML documents as values. Each string may be a stream of documents (as `suggest` prints);
/// empty documents are left out.
pub fn docs(policies: &[&str]) -> Vec<serde_yaml::Value> {
    use serde::Deserialize as _;
    policies
        .iter()
        .flat_map(|p| serde_yaml::Deserializer::from_str(p))
        .map(|d| serde_yaml::Value::deserialize(d).expect("policy YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

impl Node {
    /// Brings up scenario `name` on subnet `subnet` with `pods` (YAML: namespaces, pods,
    /// services) and writes the source file with `policies`.
    pub fn up(name: &str, subnet: u8, pods: &str, policies: &[&str]) -> Node {
        Self::up_with(name, subnet, "cgroupfs", pods, policies)
    }

    /// Like [`Node::up`] with the given kubelet cgroup driver.
    pub fn up_with(name: &str, subnet: u8, driver: &str, pods: &str, policies: &[&str]) -> Node {
        let node = Self::build(name, subnet, "node-1", driver, pods);
        node.set_policies(policies);
        node
    }

    /// One node of a cluster of several (the Node object `node_name`), routing IPv4 to the
    /// others ([`Testbed::forward_ipv4`]). Its source file is written by [`set_cluster_policies`].
    pub fn up_in_cluster(name: &str, subnet: u8, node_name: &str, pods: &str) -> Node {
        let node = Self::build(name, subnet, node_name, "cgroupfs", pods);
        node.tb.forward_ipv4().expect("forwarding");
        node
    }

    fn build(name: &str, subnet: u8, node_name: &str, driver: &str, pods: &str) -> Node {
        let yaml = format!(
            "name: {name}\nsubnet: {subnet}\nnodeName: {node_name}\ncgroupDriver: {driver}\nipv6: true\n{pods}"
        );
        let scenario = Scenario::parse(&yaml).expect("scenario");
        let opts = Options {
            pod_binary: PathBuf::from(env!("CARGO_BIN_EXE_bulkhead-pod")),
        };
        let tb = Testbed::up(&scenario, &opts).expect("testbed up");
        let dir = std::env::temp_dir().join(format!("bulkhead-e2e-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let source = dir.join("cluster.yaml");
        Node {
            tb,
            source,
            dir,
            node_name: node_name.to_owned(),
        }
    }

    /// Starts the agent on this node, pinning nothing (`--no-pin`).
    pub fn agent(&self, extra: &[&str]) -> Agent {
        Agent::start(&self.source, self.tb.cgroup_root(), &self.node_name, extra)
    }

    /// Starts the agent on this node, pinning as `pin` says.
    pub fn agent_pinned(&self, pin: Pinning<'_>, extra: &[&str]) -> Agent {
        let root = self.tb.cgroup_root();
        Agent::start_pinned(&[], pin, &self.source, root, &self.node_name, extra)
    }

    /// Rewrites the source file with the scenario's objects plus `policies` (atomically).
    pub fn set_policies(&self, policies: &[&str]) {
        self.tb
            .write_source(&self.source, &docs(policies))
            .expect("write source");
    }

    /// The source file the agent reads.
    pub fn source(&self) -> &std::path::Path {
        &self.source
    }

    /// The testbed.
    pub fn testbed(&self) -> &Testbed {
        &self.tb
    }

    /// This test's scratch directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Replaces the source file with arbitrary text.
    pub fn write_raw_source(&self, text: &str) {
        let tmp = self.dir.join("cluster.yaml.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &self.source).expect("rename");
    }

    /// IPv4 address of a pod ("ns/name").
    pub fn ip(&self, pod: &str) -> IpAddr {
        IpAddr::V4(self.tb.pod_ipv4(pod).expect("pod ipv4"))
    }

    /// IPv6 address of a pod.
    pub fn ip6(&self, pod: &str) -> IpAddr {
        IpAddr::V6(self.tb.pod_ipv6(pod).expect("pod ipv6"))
    }

    /// A probe from a pod to an address.
    pub fn probe(&self, from: &str, ip: IpAddr, protocol: Protocol, port: u16) -> R {
        self.tb
            .probe_one(from, Target { ip, protocol, port }, TIMEOUT)
            .expect("probe")
    }

    /// TCP connect + echo from a pod to a pod's IPv4 address.
    pub fn tcp(&self, from: &str, to: &str, port: u16) -> R {
        self.probe(from, self.ip(to), Protocol::Tcp, port)
    }

    /// TCP to an address.
    pub fn tcp_ip(&self, from: &str, ip: impl Into<IpAddr>, port: u16) -> R {
        self.probe(from, ip.into(), Protocol::Tcp, port)
    }

    /// UDP datagram + echo.
    pub fn udp(&self, from: &str, to: &str, port: u16) -> R {
        self.probe(from, self.ip(to), Protocol::Udp, port)
    }

    /// One ICMP echo from a pod to a pod's IPv4 address.
    pub fn ping(&self, from: &str, to: &str) -> PingResult {
        self.tb.ping(from, self.ip(to), TIMEOUT).expect("ping")
    }

    /// One ICMPv6 echo from a pod to a pod's IPv6 address.
    pub fn ping6(&self, from: &str, to: &str) -> PingResult {
        self.tb.ping(from, self.ip6(to), TIMEOUT).expect("ping")
    }

    /// TCP from the node itself (like a kubelet probe).
    pub fn tcp_from_host(&self, to: &str, port: u16) -> R {
        let t = Target {
            ip: self.ip(to),
            protocol: Protocol::Tcp,
            port,
        };
        self.tb
            .probe_from_host(&[t], TIMEOUT)
            .expect("probe")
            .remove(0)
    }

    /// `count` TCP connection attempts as fast as possible; counts by outcome.
    pub fn storm(&self, from: &str, to: &str, port: u16, count: u64) -> BTreeMap<String, u64> {
        let t = Target {
            ip: self.ip(to),
            protocol: Protocol::Tcp,
            port,
        };
        self.tb
            .storm(from, t, count, Duration::from_millis(200))
            .expect("storm")
            .results
    }

    /// A TCP server outside every namespace (a "world" address) on hosts `.N` of the subnet.
    pub fn world_server(&self, hosts: &[u8], port: u16) -> World {
        let ws = self
            .tb
            .world_server(
                hosts,
                &[PortSpec {
                    protocol: Protocol::Tcp,
                    port,
                }],
            )
            .expect("world server");
        World {
            net: ws.net,
            ips: ws.ipv4.clone(),
            _ws: ws,
        }
    }
}

/// Writes one cluster's source to every node's source file: all the nodes' Namespaces, Pods
/// (with their `nodeName`), Services and Node objects, plus `policies`, so each agent knows the
/// other nodes' pods by address.
pub fn set_cluster_policies(nodes: &[&Node], policies: &[&str]) {
    let scenarios: Vec<_> = nodes.iter().map(|n| n.tb.scenario()).collect();
    let objects =
        bulkhead_tests::source::cluster_objects(&scenarios, &docs(policies)).expect("objects");
    for n in nodes {
        bulkhead_tests::source::write_objects(&n.source, &objects).expect("write source");
    }
}

/// A world server's addresses.
pub struct World {
    /// The /26 containing it.
    pub net: Ipv4Addr,
    /// Its addresses.
    pub ips: Vec<Ipv4Addr>,
    _ws: WorldServer,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
