//! `cargo xtask testbed up|probe|down SCENARIO.yaml`: a simulated node (docs/design.md#testbed) by hand, to try
//! the agent against it or to look at the connectivity matrix.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use bulkhead_tests::{Options, Scenario, Testbed};

use crate::util::{cargo, is_root, target_dir, workspace_root};

/// Arguments of `cargo xtask testbed`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Creates the testbed and leaves it running.
    Up {
        /// Scenario file (tests/scenarios/*.yaml).
        scenario: PathBuf,
        /// Also write the agent's `file:` source here.
        #[arg(long)]
        source_out: Option<PathBuf>,
        /// `kube`: also start the API server emulator (`bulkhead-apiserver`) serving the
        /// scenario's objects, for `firewall-agent run --source kube`. Stopped by `down`.
        #[arg(long, value_enum)]
        source: Option<SourceKind>,
        /// Port of the API server emulator on 127.0.0.1 (0 = any free port).
        #[arg(long, default_value_t = 0)]
        apiserver_port: u16,
    },
    /// Prints the connectivity matrix of the running testbed.
    Probe {
        /// Scenario file the testbed was brought up from.
        scenario: PathBuf,
        /// Per-probe timeout.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Probe the pods' IPv6 addresses instead of IPv4.
        #[arg(long)]
        ipv6: bool,
    },
    /// Removes everything the testbed created.
    Down {
        /// Scenario file the testbed was brought up from.
        scenario: PathBuf,
    },
}

/// Extra sources `up` can provide for the agent.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SourceKind {
    /// The Kubernetes API (served by the emulator).
    Kube,
}

/// Runs one `testbed` action.
pub fn run(args: Args) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the testbed needs root (network namespaces, veths, cgroups): run `sudo -E cargo xtask testbed ...`"
        );
    }
    match args.action {
        Action::Up {
            scenario,
            source_out,
            source,
            apiserver_port,
        } => up(&scenario, source_out, source, apiserver_port),
        Action::Probe {
            scenario,
            timeout_ms,
            ipv6,
        } => probe(&scenario, timeout_ms, ipv6),
        Action::Down { scenario } => down(&scenario),
    }
}

fn up(
    path: &Path,
    source_out: Option<PathBuf>,
    source: Option<SourceKind>,
    apiserver_port: u16,
) -> anyhow::Result<()> {
    let scenario = Scenario::load(path)?;
    let pod_binary = build_binary("bulkhead-pod")?;
    let apiserver_binary = match source {
        Some(SourceKind::Kube) => Some(build_binary("bulkhead-apiserver")?),
        None => None,
    };
    let tb = Testbed::up(&scenario, &Options { pod_binary })?;
    print_testbed(&tb);
    if let Some(path) = source_out {
        tb.write_source(&path, &[])?;
        println!(
            "agent source: firewall-agent run --source file:{} --node-name {} --cgroup-root {} --no-pin",
            path.display(),
            scenario.node_name,
            tb.cgroup_root().display()
        );
    }
    if let Some(bin) = apiserver_binary {
        let api = tb.start_apiserver(&bin, apiserver_port, &[])?;
        println!(
            "API server emulator: {} (pid {}, objects {})",
            api.url,
            api.pid,
            api.objects.display()
        );
        println!("kubeconfig: {}", api.kubeconfig.display());
        println!(
            "agent: firewall-agent run --source kube --kubeconfig {} --node-name {} --cgroup-root {} --no-pin",
            api.kubeconfig.display(),
            scenario.node_name,
            tb.cgroup_root().display()
        );
    }
    tb.keep_running();
    println!(
        "remove it with: cargo xtask testbed down {}",
        path.display()
    );
    Ok(())
}

/// The node's addresses, its cgroup root and every pod.
fn print_testbed(tb: &Testbed) {
    println!(
        "testbed {} is up (bridge {}, node {} / {})",
        tb.name(),
        tb.bridge(),
        tb.node_ipv4(),
        if tb.scenario().ipv6 {
            tb.node_ipv6().to_string()
        } else {
            "-".to_owned()
        }
    );
    println!(
        "cgroup root (agent --cgroup-root): {}",
        tb.cgroup_root().display()
    );
    for p in tb.pods() {
        let v6 = p.ipv6.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        println!("  {:<28} {:<15} {:<22} uid {}", p.key, p.ipv4, v6, p.uid);
        println!("  {:<28} cgroup {}", "", p.container_cgroup.display());
    }
}

fn probe(path: &Path, timeout_ms: u64, ipv6: bool) -> anyhow::Result<()> {
    let scenario = Scenario::load(path)?;
    let tb = Testbed::attach(&scenario.name)?;
    if tb.scenario() != &scenario {
        eprintln!("note: the scenario file changed since `up`; probing what is running");
    }
    let timeout = Duration::from_millis(timeout_ms);
    let m = if ipv6 {
        tb.matrix6(timeout)?
    } else {
        tb.matrix(timeout)?
    };
    println!("{m}");
    Ok(())
}

fn down(path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // Down must work even if the file no longer validates: only the name is needed.
    let name = match Scenario::parse(&text) {
        Ok(s) => s.name,
        Err(_) => serde_yaml_name(&text).context("scenario file has no usable `name`")?,
    };
    if Testbed::down_by_name(&name)? {
        println!("testbed {name} removed");
    } else {
        println!("testbed {name} is not running (no state file)");
    }
    Ok(())
}

fn serde_yaml_name(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("name:"))
        .map(|v| v.split('#').next().unwrap_or("").trim().to_owned())
}

/// Builds a `bulkhead-tests` binary and returns its path in the target directory.
fn build_binary(name: &str) -> anyhow::Result<PathBuf> {
    let status = cargo()
        .args(["build", "-p", "bulkhead-tests", "--bin", name])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building {name} failed ({status})");
    }
    let bin = target_dir()?.join("debug").join(name);
    if !bin.is_file() {
        bail!("{} missing after the build", bin.display());
    }
    Ok(bin)
}
