//! Network setup: the bridge, each pod's network namespace, veth, addresses and routes.
use super::*;

/// Runs a command, failing with its stderr.
pub(super) fn run(args: &[&str]) -> anyhow::Result<()> {
    let (prog, rest) = args.split_first().context("empty command")?;
    let out = Command::new(prog)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {prog} (is iproute2 installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub(super) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub(super) fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

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

impl Testbed {
    pub(super) fn build(&self) -> anyhow::Result<()> {
        let s = &self.scenario;
        let name = s.name.as_str();
        // The bridge: the node's own addresses.
        let bridge = names::bridge(name);
        if link_exists(&bridge) {
            bail!(
                "interface {bridge} already exists and no testbed state records it; remove it yourself (ip link del {bridge})"
            );
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
        let v6conf = Path::new("/proc/sys/net/ipv6/conf").join(&bridge);
        if s.ipv6 {
            // No duplicate address detection: v6 must work the moment `up` returns.
            fs::write(v6conf.join("disable_ipv6"), "0").context("enabling IPv6 on the bridge")?;
            fs::write(v6conf.join("accept_dad"), "0").context("disabling DAD on the bridge")?;
        }
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", s.node_ipv4()),
            "dev",
            &bridge,
        ])?;
        if s.ipv6 {
            run(&[
                "ip",
                "addr",
                "add",
                &format!("{}/64", s.node_ipv6()),
                "dev",
                &bridge,
                "nodad",
            ])?;
        }
        run(&["ip", "link", "set", &bridge, "up"])?;

        // Pod networks.
        for pod in &self.pods {
            let (Some(ns), Some(link)) = (&pod.netns, &pod.host_link) else {
                continue;
            };
            self.create_netns(ns, link, &[pod.ipv4], pod.ipv6.as_slice())?;
        }

        // Cgroups, laid out as kubelet would.
        self.mkdir_cgroup(&self.cgroup_root)?;
        for (i, pod) in self.pods.iter().enumerate() {
            let spec = &s.pods[i];
            for rel in pod_cgroup_chain(s.cgroup_driver, spec.qos, &pod.uid, &pod.container_id) {
                self.mkdir_cgroup(&self.cgroup_root.join(rel))?;
            }
        }

        // Servers.
        let log_dir = self
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("state lock poisoned"))?
            .log_dir
            .clone();
        if let Some(d) = &log_dir {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut servers = Vec::new();
        for (i, pod) in self.pods.iter().enumerate() {
            let spec = &s.pods[i];
            let mut cmd = self.pod_command(&pod.key, &self.pod_binary)?;
            cmd.arg("serve").args(serve_args(&spec.serve));
            if pod.host_network {
                // Only the node's testbed addresses: never the host's real interfaces.
                cmd.args(["--bind", &s.node_ipv4().to_string()]);
                if s.ipv6 {
                    cmd.args(["--bind", &s.node_ipv6().to_string()]);
                }
            }
            let child = self.spawn_server(cmd, &pod.log, &format!("pod {}", pod.key))?;
            servers.push((format!("pod {}", pod.key), pod.log.clone(), child));
        }
        self.wait_ready(&servers)
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
            bail!(
                "network namespace {ns} already exists and no testbed state records it; remove it yourself (ip netns del {ns})"
            );
        }
        if link_exists(link) {
            bail!(
                "interface {link} already exists and no testbed state records it; remove it yourself (ip link del {link})"
            );
        }
        self.record(|st| st.netns.push(ns.to_owned()))?;
        run(&["ip", "netns", "add", ns])?;
        if s.ipv6 {
            // No duplicate address detection: v6 must work the moment `up` returns.
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ])?;
        }
        self.record(|st| st.links.push(link.to_owned()))?;
        run(&[
            "ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        run(&["ip", "link", "set", link, "master", &self.bridge(), "up"])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        for a in v4 {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                "eth0",
            ])?;
        }
        if s.ipv6 {
            for a in v6 {
                run(&[
                    "ip",
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{a}/64"),
                    "dev",
                    "eth0",
                    "nodad",
                ])?;
            }
        }
        run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        run(&[
            "ip",
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &s.node_ipv4().to_string(),
        ])?;
        if s.ipv6 {
            run(&[
                "ip",
                "-n",
                ns,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &s.node_ipv6().to_string(),
            ])?;
        }
        Ok(())
    }
}
