//! World servers: hosts outside every namespace (the firewall's "world"), each its own netns on
//! the bridge with a server in a cgroup that belongs to no pod.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::bail;

use super::{Testbed, network::ip_in, process::command_in, servers::serve_args};
use crate::scenario::PortSpec;

/// A host outside every namespace, from [`Testbed::world_server`].
#[derive(Clone, Debug, PartialEq)]
pub struct WorldServer {
    /// Its network namespace.
    pub netns: String,
    /// Its IPv4 addresses, in the order asked for.
    pub ipv4: Vec<Ipv4Addr>,
    /// Its IPv6 addresses (empty without IPv6).
    pub ipv6: Vec<Ipv6Addr>,
    /// The /26 network containing the first IPv4 address (for CIDR rules in tests).
    pub net: Ipv4Addr,
    /// The cgroup its server runs in (no pod's).
    pub cgroup: PathBuf,
    /// The server's output.
    pub log: PathBuf,
}

impl Testbed {
    /// Starts an echo server on a host outside every namespace (the firewall's "world"): its own
    /// netns on the bridge with addresses 198.18.S.H (and fd00:b1:S::H) for each `H` in `hosts`,
    /// serving `serve`. Its process lives in `<cgroup root>/world/w<k>`, a cgroup that belongs to no
    /// pod. Removed with the testbed. `hosts` must not collide with the node (1), pods (10..) or
    /// earlier world servers; 192..=254 is a good range.
    pub fn world_server(&self, hosts: &[u8], serve: &[PortSpec]) -> anyhow::Result<WorldServer> {
        let s = &self.scenario;
        let k = self.reserve_world(hosts)?;
        let ns = format!("bh-{}-w{k}", s.name);
        let link = format!("bh{}w{k}", s.name);
        let v4: Vec<Ipv4Addr> = hosts
            .iter()
            .map(|&h| Ipv4Addr::new(198, 18, s.subnet, h))
            .collect();
        let v6: Vec<Ipv6Addr> = if s.ipv6 {
            hosts
                .iter()
                .map(|&h| Ipv6Addr::new(0xfd00, 0xb1, s.subnet.into(), 0, 0, 0, 0, h.into()))
                .collect()
        } else {
            Vec::new()
        };
        self.create_netns(&ns, &link, &v4, &v6)?;
        let world = self.cgroup_root.join("world");
        self.mkdir_cgroup(&world)?;
        let cgroup = world.join(format!("w{k}"));
        self.mkdir_cgroup(&cgroup)?;
        let log = (self.state()?.log_dir.clone())
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("world-w{k}.log"));
        let mut cmd = command_in(Some(&ns), &cgroup, &self.pod_binary)?;
        cmd.arg("serve").args(serve_args(serve));
        let what = format!("world server {ns}");
        let child = self.spawn_server(cmd, &log, &what)?;
        self.wait_ready(&[(what, log.clone(), child)])?;
        let first = u32::from(v4[0]) & !0x3f;
        Ok(WorldServer {
            netns: ns,
            net: Ipv4Addr::from(first),
            ipv4: v4,
            ipv6: v6,
            cgroup,
            log,
        })
    }

    /// Like [`Testbed::world_server`], also answering on `routed` IPv4 addresses outside the
    /// testbed's subnet (a policy's `10.0.0.0/8`, say): each is added to the server's netns
    /// (/32), and every pod's netns gets an on-link route to it, so pods reach it across the
    /// bridge without the host routing anything (nothing changes outside the testbed's netns).
    /// The routed addresses follow the others in `ipv4`. Its replies from unbound sockets (UDP
    /// echoes) come from the first routed address, so keep its own `hosts` for TCP only.
    pub fn world_server_routed(
        &self,
        hosts: &[u8],
        routed: &[Ipv4Addr],
        serve: &[PortSpec],
    ) -> anyhow::Result<WorldServer> {
        let mut ws = self.world_server(hosts, serve)?;
        for a in routed {
            ip_in(
                &ws.netns,
                &["addr", "add", &format!("{a}/32"), "dev", "eth0"],
            )?;
            for ns in self.pods.iter().filter_map(|p| p.netns.as_deref()) {
                ip_in(ns, &["route", "add", &format!("{a}/32"), "dev", "eth0"])?;
            }
            ws.ipv4.push(*a);
        }
        if let Some(first) = routed.first() {
            let net = format!("{}/24", Ipv4Addr::new(198, 18, self.scenario.subnet, 0));
            let src = first.to_string();
            let route = ["route", "replace", &net, "dev", "eth0", "proto", "kernel"];
            ip_in(
                &ws.netns,
                &[&route[..], &["scope", "link", "src", &src]].concat(),
            )?;
        }
        Ok(ws)
    }

    /// Validates and reserves the host numbers and the next world index, in one critical section.
    fn reserve_world(&self, hosts: &[u8]) -> anyhow::Result<u32> {
        if hosts.is_empty() {
            bail!("world_server: no host numbers given");
        }
        let pod_range = 10..10 + self.scenario.pods.len();
        let mut st = self.state()?;
        for &h in hosts {
            if h < 2
                || h == 255
                || pod_range.contains(&usize::from(h))
                || st.world_hosts.contains(&h)
            {
                bail!(
                    "world_server: host number {h} is the node's, a pod's, broadcast or already taken"
                );
            }
        }
        let k = st.worlds;
        st.worlds += 1;
        st.world_hosts.extend_from_slice(hosts);
        st.save()?;
        Ok(k)
    }
}
