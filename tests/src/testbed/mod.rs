//! The testbed: a simulated Kubernetes node (docs/design.md#testbed) built from a [`Scenario`].
//!
//! Per pod: a network namespace, a veth into a shared bridge, a kubelet-style cgroup and an echo
//! server started inside both. One module per job: [`state`] (the record of what was created, and
//! the cleanup that removes exactly that), [`network`], [`pods`] (ids, cgroups, lookups),
//! [`servers`] and [`process`] (processes inside pods), [`probes`], [`fastpath`] (sessions,
//! injected frames), [`world`] servers, and
//! [`apiserver`] (the API server emulator and the agent's `file:` source).
mod apiserver;
mod fastpath;
mod network;
mod pods;
mod probes;
mod process;
mod servers;
mod state;
mod world;

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Child,
    sync::{Mutex, MutexGuard},
};

use anyhow::{Context as _, bail};

pub(crate) use self::pods::plan_pods;
use self::state::{State, cleanup, state_path, subnet_user};
pub use self::{
    apiserver::ApiServerInfo,
    fastpath::{Session, SniffHandle},
    network::names,
    pods::{Pod, container_id, pod_uid},
    probes::HoldHandle,
    state::STATE_DIR,
    world::WorldServer,
};
use crate::{cgroup::cgroup2_mount, root::is_root, scenario::Scenario};

/// How to bring a testbed up.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `bulkhead-pod` binary (servers and probes run it). In this crate's integration tests:
    /// `env!("CARGO_BIN_EXE_bulkhead-pod")`.
    pub pod_binary: PathBuf,
}

/// A running simulated node. Dropping it removes everything (unless [`Testbed::keep_running`]).
pub struct Testbed {
    scenario: Scenario,
    pod_binary: PathBuf,
    cgroup_root: PathBuf,
    pods: Vec<Pod>,
    state: Mutex<State>,
    children: Mutex<Vec<Child>>,
    owned: bool,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("name", &self.scenario.name)
            .field("pods", &self.pods)
            .finish()
    }
}

impl Testbed {
    /// Builds the node: bridge, pods (netns, veth, addresses, routes, cgroups) and their echo
    /// servers; returns once every server listens. A leftover testbed of the same name (from a
    /// crashed run) is removed first. On error, whatever was created is removed again.
    pub fn up(scenario: &Scenario, opts: &Options) -> anyhow::Result<Testbed> {
        scenario.validate().context("invalid scenario")?;
        if !is_root() {
            bail!("the testbed needs root (network namespaces, veths, cgroups)");
        }
        if !opts.pod_binary.is_file() {
            bail!(
                "pod binary {} not found (build it: cargo build -p bulkhead-tests --bin bulkhead-pod)",
                opts.pod_binary.display()
            );
        }
        let name = scenario.name.as_str();
        if let Some(old) = State::load(name)? {
            eprintln!("testbed {name}: removing leftovers of an earlier run");
            cleanup(&old, &mut []).context("removing the leftover testbed of the same name")?;
        }
        if let Some(other) = subnet_user(scenario.subnet, name) {
            bail!(
                "subnet {} (198.18.{}.0/24) is used by testbed {other:?}, still running or left over; \
                 pick another subnet or remove it (cargo xtask testbed down, or Testbed::down_by_name)",
                scenario.subnet,
                scenario.subnet
            );
        }
        let mount = cgroup2_mount()?;
        let cgroup_root = mount.join(names::cgroup_root(name));
        let log_dir = Path::new(STATE_DIR).join(format!("{name}.logs"));
        let state = State {
            name: name.to_owned(),
            scenario: Some(scenario.clone()),
            pod_binary: opts.pod_binary.clone(),
            cgroup_mount: mount,
            cgroup_root: cgroup_root.clone(),
            log_dir: Some(log_dir.clone()),
            ..State::default()
        };
        state.save()?;
        let pods = plan_pods(scenario, &cgroup_root, &log_dir);
        let tb = Testbed {
            scenario: scenario.clone(),
            pod_binary: opts.pod_binary.clone(),
            cgroup_root,
            pods,
            state: Mutex::new(state),
            children: Mutex::new(Vec::new()),
            owned: true,
        };
        // Any error from here on drops `tb`, which removes what was created.
        tb.build()
            .with_context(|| format!("bringing testbed {name} up"))?;
        Ok(tb)
    }

    fn build(&self) -> anyhow::Result<()> {
        self.create_bridge()?;
        for pod in &self.pods {
            if let (Some(ns), Some(link)) = (&pod.netns, &pod.host_link) {
                self.create_netns(ns, link, &[pod.ipv4], pod.ipv6.as_slice())?;
            }
        }
        self.create_pod_cgroups()?;
        self.start_pod_servers()
    }

    /// Attaches to a testbed another process brought up (from its state file). Dropping the
    /// result leaves the testbed running; call [`Testbed::down_by_name`] to remove it.
    pub fn attach(name: &str) -> anyhow::Result<Testbed> {
        let state = State::load(name)?.with_context(|| {
            format!(
                "no testbed {name} is running ({} missing)",
                state_path(name).display()
            )
        })?;
        let scenario = state
            .scenario
            .clone()
            .context("state file without a scenario (testbed creation was interrupted)")?;
        let log_dir = state.log_dir.clone().unwrap_or_default();
        let pods = plan_pods(&scenario, &state.cgroup_root, &log_dir);
        Ok(Testbed {
            pod_binary: state.pod_binary.clone(),
            cgroup_root: state.cgroup_root.clone(),
            scenario,
            pods,
            state: Mutex::new(state),
            children: Mutex::new(Vec::new()),
            owned: false,
        })
    }

    /// Removes the testbed `name` recorded in its state file (from any process). Idempotent: no
    /// state file means nothing to do.
    pub fn down_by_name(name: &str) -> anyhow::Result<bool> {
        match State::load(name)? {
            Some(state) => {
                cleanup(&state, &mut [])?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Removes everything now, reporting errors (drop does the same but can only print them).
    pub fn down(mut self) -> anyhow::Result<()> {
        self.owned = false;
        self.teardown()
    }

    /// Leaves the testbed running after this value is dropped (e.g. `cargo xtask testbed up`).
    pub fn keep_running(mut self) {
        self.owned = false;
    }

    fn teardown(&self) -> anyhow::Result<()> {
        let state = self.state()?.clone();
        cleanup(&state, &mut self.children()?)
    }

    fn state(&self) -> anyhow::Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| anyhow::anyhow!("state lock poisoned"))
    }

    fn children(&self) -> anyhow::Result<MutexGuard<'_, Vec<Child>>> {
        self.children
            .lock()
            .map_err(|_| anyhow::anyhow!("children lock poisoned"))
    }

    /// Changes the state and saves it (before the recorded thing is created).
    fn record(&self, f: impl FnOnce(&mut State)) -> anyhow::Result<()> {
        let mut st = self.state()?;
        f(&mut st);
        st.save()
    }

    /// The scenario it was built from.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The scenario name.
    pub fn name(&self) -> &str {
        &self.scenario.name
    }

    /// All pods, in scenario order.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The testbed cgroup root: what the agent gets as `--cgroup-root`.
    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    /// The bridge's name.
    pub fn bridge(&self) -> String {
        names::bridge(&self.scenario.name)
    }

    /// The node's IPv4 address (on the bridge).
    pub fn node_ipv4(&self) -> Ipv4Addr {
        self.scenario.node_ipv4()
    }

    /// The node's IPv6 address (on the bridge; configured only with `ipv6: true`).
    pub fn node_ipv6(&self) -> Ipv6Addr {
        self.scenario.node_ipv6()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.owned
            && let Err(e) = self.teardown()
        {
            eprintln!("testbed {}: cleanup failed: {e:#}", self.scenario.name);
        }
    }
}
