//! The node's network: the bridge (the node's own addresses) and, per pod or world server, a
//! network namespace with a veth into it, addresses and default routes via the node.
use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::{Testbed, process::ensure_success};

/// The testbed's names, all derived from the scenario name.
pub mod names {
    /// The bridge: `bhbr-<name>`.
    pub fn bridge(scenario: &str) -> String {
        format!("bhbr-{scenario}")
    }
    /// Pod `i`'s network namespace: `bh-<name>-<i>`.
    pub fn netns(scenario: &str, i: usize) -> String {
        format!("bh-{scenario}-{i}")
    }
    /// Pod `i`'s host-side veth: `bh<name><i>` (at most 11 characters).
    pub fn host_link(scenario: &str, i: usize) -> String {
        format!("bh{scenario}{i}")
    }
    /// The testbed cgroup root, below the cgroup2 mount: `bulkhead-tb-<name>`.
    pub fn cgroup_root(scenario: &str) -> String {
        format!("bulkhead-tb-{scenario}")
    }
}

/// Runs a command, failing with its stderr.
pub(super) fn run(args: &[&str]) -> anyhow::Result<()> {
    let (prog, rest) = args.split_first().context("empty command")?;
    let out = Command::new(prog)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {prog} (is iproute2 installed?)"))?;
    ensure_success(out, format!("`{}`", args.join(" "))).map(drop)
}

/// `ip -n NS ARGS...`.
pub(super) fn ip_in(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["ip", "-n", ns];
    all.extend_from_slice(args);
    run(&all)
}

/// `sysctl -qw SETTINGS...` inside network namespace `ns`.
pub(super) fn sysctl_in(ns: &str, settings: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["ip", "netns", "exec", ns, "sysctl", "-qw"];
    all.extend_from_slice(settings);
    run(&all)
}

pub(super) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub(super) fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn refuse_existing(what: &str, name: &str, remove: &str) -> anyhow::Result<()> {
    bail!(
        "{what} {name} already exists and no testbed state records it; remove it yourself ({remove} {name})"
    )
}

impl Testbed {
    /// The bridge with the node's addresses, up.
    pub(super) fn create_bridge(&self) -> anyhow::Result<()> {
        let s = &self.scenario;
        let bridge = names::bridge(&s.name);
        if link_exists(&bridge) {
            return refuse_existing("interface", &bridge, "ip link del");
        }
        self.record(|st| st.bridge = Some(bridge.clone()))?;
        run(&[
            "ip",
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        let v4 = format!("{}/24", s.node_ipv4());
        run(&["ip", "addr", "add", &v4, "dev", &bridge])?;
        if s.ipv6 {
            // No duplicate address detection: v6 must work the moment `up` returns.
            let v6conf = Path::new("/proc/sys/net/ipv6/conf").join(&bridge);
            fs::write(v6conf.join("disable_ipv6"), "0").context("enabling IPv6 on the bridge")?;
            fs::write(v6conf.join("accept_dad"), "0").context("disabling DAD on the bridge")?;
            let v6 = format!("{}/64", s.node_ipv6());
            run(&["ip", "addr", "add", &v6, "dev", &bridge, "nodad"])?;
        }
        run(&["ip", "link", "set", &bridge, "up"])
    }

    /// Lets the node route IPv4 between its bridge and other testbeds' bridges, so that pods of
    /// two testbeds (two simulated nodes) reach each other through the host, as pods of two nodes
    /// do through the network. Per interface (`net.ipv4.conf.<bridge>.forwarding`, which decides
    /// for packets arriving on it): the host's `ip_forward` is not touched, and the setting goes
    /// with the bridge. IPv6 has no per-interface forwarding switch, so it stays within the node.
    pub fn forward_ipv4(&self) -> anyhow::Result<()> {
        let path = Path::new("/proc/sys/net/ipv4/conf")
            .join(self.bridge())
            .join("forwarding");
        fs::write(&path, "1").with_context(|| format!("writing 1 to {}", path.display()))
    }

    /// A network namespace `ns` with a veth (`link` on the bridge, `eth0` inside), the given
    /// addresses, lo up and default routes via the node.
    pub(super) fn create_netns(
        &self,
        ns: &str,
        link: &str,
        v4: &[Ipv4Addr],
        v6: &[Ipv6Addr],
    ) -> anyhow::Result<()> {
        let s = &self.scenario;
        if netns_exists(ns) {
            return refuse_existing("network namespace", ns, "ip netns del");
        }
        if link_exists(link) {
            return refuse_existing("interface", link, "ip link del");
        }
        self.record(|st| st.netns.push(ns.to_owned()))?;
        run(&["ip", "netns", "add", ns])?;
        if s.ipv6 {
            // No duplicate address detection: v6 must work the moment `up` returns.
            sysctl_in(
                ns,
                &[
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ],
            )?;
        }
        self.record(|st| st.links.push(link.to_owned()))?;
        run(&[
            "ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        run(&["ip", "link", "set", link, "master", &self.bridge(), "up"])?;
        ip_in(ns, &["link", "set", "lo", "up"])?;
        for a in v4 {
            ip_in(ns, &["addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
        }
        if s.ipv6 {
            for a in v6 {
                ip_in(
                    ns,
                    &["addr", "add", &format!("{a}/64"), "dev", "eth0", "nodad"],
                )?;
            }
        }
        ip_in(ns, &["link", "set", "eth0", "up"])?;
        let via = s.node_ipv4().to_string();
        ip_in(ns, &["route", "add", "default", "via", &via])?;
        if s.ipv6 {
            let via = s.node_ipv6().to_string();
            ip_in(ns, &["-6", "route", "add", "default", "via", &via])?;
        }
        Ok(())
    }
}
