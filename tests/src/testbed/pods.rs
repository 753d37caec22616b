//! Pods and their cgroups: planning names, addresses and kubelet-style cgroup paths, creating
//! the cgroups, and looking pods up.
use super::*;

/// One simulated pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Pod {
    /// `namespace/name`.
    pub key: String,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// `metadata.uid`: a UUID derived from (scenario, namespace, name), stable across runs.
    pub uid: String,
    /// 64 hex digits, as containerd's ids.
    pub container_id: String,
    /// The pod's network namespace (`None` for hostNetwork pods).
    pub netns: Option<String>,
    /// The host end of its veth (`None` for hostNetwork pods).
    pub host_link: Option<String>,
    /// Its IPv4 address (the node's for hostNetwork pods).
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address, when the scenario has IPv6.
    pub ipv6: Option<Ipv6Addr>,
    /// The pod cgroup (`.../pod<UID>`), absolute.
    pub pod_cgroup: PathBuf,
    /// The container cgroup the server and the probes run in, absolute.
    pub container_cgroup: PathBuf,
    /// The server's stdout/stderr.
    pub log: PathBuf,
    /// Whether it shares the node's network namespace.
    pub host_network: bool,
}

pub(crate) fn plan_pods(s: &Scenario, cgroup_root: &Path, log_dir: &Path) -> Vec<Pod> {
    s.pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let uid = pod_uid(&s.name, &p.namespace, &p.name);
            let cid = container_id(&s.name, &p.namespace, &p.name);
            let chain = pod_cgroup_chain(s.cgroup_driver, p.qos, &uid, &cid);
            let n = chain.len();
            Pod {
                key: p.key(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                netns: (!p.host_network).then(|| names::netns(&s.name, i)),
                host_link: (!p.host_network).then(|| names::host_link(&s.name, i)),
                ipv4: s.pod_ipv4(i),
                ipv6: s.pod_ipv6(i),
                pod_cgroup: cgroup_root.join(&chain[n.saturating_sub(2)]),
                container_cgroup: cgroup_root.join(&chain[n.saturating_sub(1)]),
                log: log_dir.join(format!("{}-{}-{}.log", i, p.namespace, p.name)),
                host_network: p.host_network,
                uid,
                container_id: cid,
            }
        })
        .collect()
}

impl Testbed {
    pub(super) fn mkdir_cgroup(&self, dir: &Path) -> anyhow::Result<()> {
        {
            let st = self
                .state
                .lock()
                .map_err(|_| anyhow::anyhow!("state lock poisoned"))?;
            if st.cgroups.iter().any(|c| c == dir) {
                return Ok(());
            }
            ensure_below(&st.cgroup_mount, dir)?;
        }
        if dir.exists() {
            bail!(
                "cgroup {} already exists and this testbed did not create it; remove it yourself (rmdir)",
                dir.display()
            );
        }
        self.record(|s| s.cgroups.push(dir.to_owned()))?;
        fs::create_dir(dir).with_context(|| format!("creating cgroup {}", dir.display()))
    }

    /// All pods, in scenario order.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, key: &str) -> anyhow::Result<&Pod> {
        self.pods.iter().find(|p| p.key == key).with_context(|| {
            let all: Vec<&str> = self.pods.iter().map(|p| p.key.as_str()).collect();
            format!(
                "no pod {key:?} in testbed {} (pods: {})",
                self.scenario.name,
                all.join(", ")
            )
        })
    }

    /// The pod's IPv4 address.
    pub fn pod_ipv4(&self, key: &str) -> anyhow::Result<Ipv4Addr> {
        Ok(self.pod(key)?.ipv4)
    }

    /// The pod's IPv6 address (error if the scenario has no IPv6).
    pub fn pod_ipv6(&self, key: &str) -> anyhow::Result<Ipv6Addr> {
        self.pod(key)?
            .ipv6
            .with_context(|| format!("testbed {} has no IPv6 (ipv6: false)", self.scenario.name))
    }

    /// A target at pod `to`'s IPv4 address.
    pub fn target(&self, to: &str, protocol: Protocol, port: u16) -> anyhow::Result<Target> {
        Ok(Target {
            ip: IpAddr::V4(self.pod_ipv4(to)?),
            protocol,
            port,
        })
    }

    /// A target at pod `to`'s IPv6 address.
    pub fn target6(&self, to: &str, protocol: Protocol, port: u16) -> anyhow::Result<Target> {
        Ok(Target {
            ip: IpAddr::V6(self.pod_ipv6(to)?),
            protocol,
            port,
        })
    }

    /// The pod's `metadata.uid`.
    pub fn pod_uid(&self, key: &str) -> anyhow::Result<&str> {
        Ok(&self.pod(key)?.uid)
    }

    /// The pod cgroup (`.../pod<UID>` or `...-pod<UID_>.slice`).
    pub fn pod_cgroup(&self, key: &str) -> anyhow::Result<&Path> {
        Ok(&self.pod(key)?.pod_cgroup)
    }

    /// The container cgroup the pod's processes run in.
    pub fn container_cgroup(&self, key: &str) -> anyhow::Result<&Path> {
        Ok(&self.pod(key)?.container_cgroup)
    }

    /// The cluster IPs (v4, then v6 if any) of Service `namespace/name`.
    pub fn service_ips(&self, key: &str) -> anyhow::Result<Vec<IpAddr>> {
        let j = self
            .scenario
            .services
            .iter()
            .position(|s| format!("{}/{}", s.namespace, s.name) == key)
            .with_context(|| format!("no service {key:?} in testbed {}", self.scenario.name))?;
        let mut ips = vec![IpAddr::V4(self.scenario.service_ipv4(j))];
        ips.extend(self.scenario.service_ipv6(j).map(IpAddr::V6));
        Ok(ips)
    }

    // ---------- running things in pods ----------

    /// A container (re)start: a new, empty container cgroup below pod `key`'s cgroup, as the
    /// runtime creates for every container start (recorded for cleanup). Probe from it with
    /// [`Testbed::probe_in`].
    pub fn new_container_cgroup(&self, key: &str, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.pod(key)?.pod_cgroup.join(name);
        self.mkdir_cgroup(&dir)?;
        Ok(dir)
    }
}
