//! `firewall-agent run`: the DaemonSet's command. Parses and checks its arguments into a
//! [`RunConfig`]; the agent itself is [`crate::agent::run`].
use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::ValueEnum;

use crate::{
    agent::{self, RunConfig},
    cgroups,
    compiler::CompileOptions,
    datapath::{LoadOptions, pin},
    policy::PolicyApis,
    source::{SourceSpec, kube::KubeConfig},
};

/// Mode for namespaces that set none (label `bulkhead.dev/mode`, ClusterFirewall default).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Log forbidden flows, let them through.
    Monitor,
    /// Log and drop forbidden flows.
    Enforce,
    /// Neither log nor drop.
    Off,
}

impl Mode {
    fn value(self) -> firewall_common::Mode {
        match self {
            Mode::Monitor => firewall_common::Mode::Monitor,
            Mode::Enforce => firewall_common::Mode::Enforce,
            Mode::Off => firewall_common::Mode::Off,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Attach {
    /// cgroup_skb + cgroup/connect programs at the cgroup v2 root.
    Cgroup,
    /// TC classifier on pod interfaces (not implemented yet).
    Tc,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// `kube` (in-cluster config or kubeconfig) or `file:PATH` (YAML stream or List).
    #[arg(long, default_value = "kube")]
    source: SourceSpec,
    /// This node's name (pods with this spec.nodeName are local).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Mode for namespaces that set none.
    #[arg(long, env = "BULKHEAD_MODE", value_enum, default_value_t = Mode::Monitor)]
    mode: Mode,
    /// Where programs attach.
    #[arg(long, value_enum, default_value_t = Attach::Cgroup)]
    attach: Attach,
    /// cgroup v2 directory to attach at (default: the cgroup2 mount from /proc/self/mountinfo).
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// bpffs directory for pinned state (bpffs is mounted on its parent if missing): enforcement
    /// survives the agent (SIGKILL, SIGTERM, upgrade) and a new agent adopts the state.
    #[arg(long, default_value = pin::DEFAULT_DIR, conflicts_with = "no_pin")]
    bpffs: PathBuf,
    /// Pin nothing, for throwaway runs: stopping the agent in any way detaches everything, and a
    /// restart is a window without enforcement.
    #[arg(long)]
    no_pin: bool,
    /// Address for /metrics, /healthz, /readyz and /status (e.g. 0.0.0.0:9090).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// kubeconfig for `--source kube` (default: in-cluster config).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the Lease that elects the one agent writing policy status.
    #[arg(long, env = "POD_NAMESPACE", default_value = "bulkhead-system")]
    lease_namespace: String,
    /// Name of that Lease.
    #[arg(long, default_value = "bulkhead-status")]
    lease_name: String,
    /// The cluster DNS Service, always reachable on port 53.
    #[arg(
        long,
        env = "BULKHEAD_DNS_SERVICE",
        default_value = "kube-system/kube-dns"
    )]
    dns_service: String,
    /// Capacity of the connection-tracking map.
    #[arg(long, env = "BULKHEAD_CONNTRACK_ENTRIES", default_value_t = firewall_common::capacity::CONNTRACK)]
    conntrack_entries: u32,
    /// Capacity of the policy map (both slots together).
    #[arg(long, env = "BULKHEAD_POLICY_ENTRIES", default_value_t = firewall_common::capacity::POLICY)]
    policy_entries: u32,
    /// Capacity of the cgroup map (both slots): containers of this node's pods.
    #[arg(long, default_value_t = firewall_common::capacity::CGROUPS)]
    cgroup_entries: u32,
    /// Capacity of each address map, IPv4 and IPv6 (both slots): pod, Service and node
    /// addresses and named CIDRs of the whole cluster.
    #[arg(long, default_value_t = firewall_common::capacity::IPV4)]
    address_entries: u32,
    /// How often a file source is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 200)]
    poll_ms: u64,
    /// `violations`: log connections some side denies; `all`: also every allowed new connection
    /// across namespaces or to the world (`"type":"flow"`), to discover traffic before writing
    /// rules.
    #[arg(long, env = "BULKHEAD_FLOW_LOG", value_enum, default_value_t = FlowLog::Violations)]
    flow_log: FlowLog,
    /// Which policy APIs to enforce, comma-separated: `bulkhead` (NamespaceFirewall,
    /// ClusterFirewall), `networkpolicy` (networking.k8s.io/v1), `clusternetworkpolicy`
    /// (policy.networking.k8s.io/v1alpha2). Leave `networkpolicy` out where the CNI already
    /// enforces NetworkPolicy.
    #[arg(long, env = "BULKHEAD_POLICY_APIS", default_value_t = PolicyApis::BULKHEAD)]
    policy_apis: PolicyApis,
}

/// What the log records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum FlowLog {
    /// Connections some side denies.
    Violations,
    /// Those and every allowed new connection across namespaces or to the world.
    All,
}

impl RunArgs {
    /// Where to pin: `--bpffs` (default [`pin::DEFAULT_DIR`]) unless `--no-pin`.
    fn pin_dir(&self) -> Option<PathBuf> {
        (!self.no_pin).then(|| self.bpffs.clone())
    }
}

fn parse_dns_service(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.into(), name.into()))
        }
        _ => bail!("invalid --dns-service {s:?}: expected NAMESPACE/NAME"),
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
}

/// Validates the arguments into a [`RunConfig`] and runs the agent.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    crate::capabilities::check_self()?;
    if matches!(args.attach, Attach::Tc) {
        bail!("--attach tc is not implemented yet; use --attach cgroup");
    }
    let pin_dir = args.pin_dir();
    let node_name = args
        .node_name
        .or_else(hostname)
        .context("no node name: pass --node-name or set NODE_NAME")?;
    let cgroup_root = match args.cgroup_root {
        Some(p) => p,
        None => cgroups::cgroup2_root()?,
    };
    let cfg = RunConfig {
        source: args.source,
        cgroup_root,
        compile: CompileOptions {
            node_name,
            default_mode: args.mode.value(),
            dns_service: parse_dns_service(&args.dns_service)?,
            policy_apis: args.policy_apis,
        },
        load: LoadOptions {
            conntrack_entries: args.conntrack_entries,
            policy_entries: args.policy_entries,
            cgroup_entries: args.cgroup_entries,
            address_entries: args.address_entries,
            pin_dir,
        },
        poll: Duration::from_millis(args.poll_ms.max(10)),
        kube: KubeConfig {
            kubeconfig: args.kubeconfig,
            lease_namespace: args.lease_namespace,
            lease_name: args.lease_name,
        },
        metrics_addr: args.metrics_addr,
        flow_log_all: args.flow_log == FlowLog::All,
    };
    agent::run(cfg).await
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn pin_dir(args: &[&str]) -> Result<Option<PathBuf>, clap::Error> {
        let cli = Cli::try_parse_from(["firewall-agent", "run"].iter().chain(args))?;
        match cli.command {
            Command::Run(r) => Ok(r.pin_dir()),
            _ => unreachable!("parsed as run"),
        }
    }

    #[test]
    fn run_pins_by_default_where_cleanup_looks() {
        let default = Some(PathBuf::from(pin::DEFAULT_DIR));
        assert_eq!(pin_dir(&[]).ok(), Some(default));
        assert_eq!(
            pin_dir(&["--bpffs", "/sys/fs/bpf/x"]).ok(),
            Some(Some(PathBuf::from("/sys/fs/bpf/x")))
        );
        assert_eq!(pin_dir(&["--no-pin"]).ok(), Some(None));
        let both = pin_dir(&["--no-pin", "--bpffs", "/sys/fs/bpf/x"]);
        assert_eq!(
            both.err().map(|e| e.kind()),
            Some(clap::error::ErrorKind::ArgumentConflict)
        );
        let cli = Cli::try_parse_from(["firewall-agent", "cleanup"]).expect("cleanup");
        match cli.command {
            Command::Cleanup(c) => assert_eq!(c.bpffs, PathBuf::from(pin::DEFAULT_DIR)),
            _ => unreachable!("parsed as cleanup"),
        }
    }
}
