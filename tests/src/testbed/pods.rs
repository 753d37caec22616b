//! The simulated pods: their stable ids, their kubelet-style cgroups, and the lookups tests use
//! (addresses, cgroups, service IPs).
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use super::{Testbed, network::names};
use crate::{
    cgroup::{ensure_below, pod_cgroup_chain},
    probe::Target,
    scenario::{Protocol, Scenario},
};

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

/// Deterministic 64-bit hash (FNV-1a + a finalizer): ids must not change between runs or Rust releases.
fn hash64(seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The pod UID the testbed gives `namespace/name` in scenario `scenario` (UUID v4 format).
pub fn pod_uid(scenario: &str, namespace: &str, name: &str) -> String {
    let a = hash64(1, &[scenario, namespace, name]);
    let b = hash64(2, &[scenario, namespace, name]);
    let a = (a & !0xf000) | 0x4000; // version 4
    let b = (b & !(0xc << 60)) | (0x8 << 60); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// The container id the testbed gives a pod's (single) container: 64 hex digits.
pub fn container_id(scenario: &str, namespace: &str, name: &str) -> String {
    (10..14)
        .map(|seed| format!("{:016x}", hash64(seed, &[scenario, namespace, name])))
        .collect()
}

/// The pods of scenario `s`, with their cgroups below `cgroup_root` and logs in `log_dir`.
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
    /// Creates a cgroup (recorded first), refusing one this testbed did not create.
    pub(super) fn mkdir_cgroup(&self, dir: &Path) -> anyhow::Result<()> {
        {
            let st = self.state()?;
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

    /// The testbed cgroup root and every pod's cgroups, laid out as kubelet would.
    pub(super) fn create_pod_cgroups(&self) -> anyhow::Result<()> {
        let s = &self.scenario;
        self.mkdir_cgroup(&self.cgroup_root)?;
        for (pod, spec) in self.pods.iter().zip(&s.pods) {
            for rel in pod_cgroup_chain(s.cgroup_driver, spec.qos, &pod.uid, &pod.container_id) {
                self.mkdir_cgroup(&self.cgroup_root.join(rel))?;
            }
        }
        Ok(())
    }

    /// A container (re)start: a new, empty container cgroup below pod `key`'s cgroup, as the
    /// runtime creates for every container start (recorded for cleanup). Probe from it with
    /// [`Testbed::probe_in`].
    pub fn new_container_cgroup(&self, key: &str, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.pod(key)?.pod_cgroup.join(name);
        self.mkdir_cgroup(&dir)?;
        Ok(dir)
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
        let ip = IpAddr::V4(self.pod_ipv4(to)?);
        Ok(Target { ip, protocol, port })
    }

    /// A target at pod `to`'s IPv6 address.
    pub fn target6(&self, to: &str, protocol: Protocol, port: u16) -> anyhow::Result<Target> {
        let ip = IpAddr::V6(self.pod_ipv6(to)?);
        Ok(Target { ip, protocol, port })
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_well_formed() {
        let a = pod_uid("saas", "frontend", "web");
        assert_eq!(a, pod_uid("saas", "frontend", "web"));
        assert_ne!(a, pod_uid("saas", "frontend", "web2"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        let c = container_id("saas", "frontend", "web");
        assert_eq!(c.len(), 64);
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(names::host_link("abcdef", 244).len() <= 15);
    }
}
