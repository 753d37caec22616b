//! The testbed: a simulated Kubernetes node (DESIGN §8) built from a [`Scenario`].
//!
//! Per pod: a network namespace, a veth into a shared bridge, a kubelet-style cgroup and an echo
//! server started inside both. Everything created is recorded in a state file *before* it is
//! created, so that `down` works from another process and a crashed run is cleaned by the next `up`
//! of the same name, and so that cleanup never touches anything it did not create.
use std::{
    fs::{self, File},
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::{
    cgroup::{cgroup2_mount, ensure_below, pod_cgroup_chain, populated},
    probe::{HoldReport, Matrix, MatrixColumn, ProbeResult, StormReport, Target},
    scenario::{PortSpec, Protocol, Scenario},
};

/// Where state files live: `/run` is wiped at reboot, exactly when the kernel objects vanish too.
pub const STATE_DIR: &str = "/run/bulkhead-testbed";

/// How long `up` waits for every pod's server to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How to bring a testbed up.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `bulkhead-pod` binary (servers and probes run it). In this crate's integration tests:
    /// `env!("CARGO_BIN_EXE_bulkhead-pod")`.
    pub pod_binary: PathBuf,
}

/// Everything one testbed created, in creation order; the only names cleanup ever touches.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    name: String,
    scenario: Option<Scenario>,
    pod_binary: PathBuf,
    /// The cgroup2 mount at creation time (cleanup refuses paths outside it).
    cgroup_mount: PathBuf,
    /// `<mount>/bulkhead-tb-<name>`, also the first entry of `cgroups`.
    cgroup_root: PathBuf,
    log_dir: Option<PathBuf>,
    bridge: Option<String>,
    netns: Vec<String>,
    links: Vec<String>,
    /// Absolute cgroup directories, parents before children.
    cgroups: Vec<PathBuf>,
    /// Host numbers taken by world servers, in creation order.
    #[serde(default)]
    world_hosts: Vec<u8>,
    /// World servers created so far (the next one's index).
    #[serde(default)]
    worlds: u32,
    /// Server pids (informational: processes are killed through `cgroup.kill`, never by pid).
    pids: Vec<u32>,
    /// The `bulkhead-apiserver` started by [`Testbed::start_apiserver`]: it runs outside the
    /// testbed's cgroups (it is the control plane, not a pod), so cleanup stops it by pid.
    #[serde(default)]
    apiserver: Option<ApiServerProcess>,
}

/// A detached `bulkhead-apiserver`, identified by pid *and* start time so that cleanup never
/// signals a recycled pid.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ApiServerProcess {
    pid: u32,
    /// Field 22 of `/proc/PID/stat` (clock ticks since boot).
    start_time: u64,
}

/// A running API server emulator serving a testbed's objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiServerInfo {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Kubeconfig pointing at it (for the agent's `--kubeconfig`).
    pub kubeconfig: PathBuf,
    /// The objects file it was seeded with.
    pub objects: PathBuf,
    /// Its pid.
    pub pid: u32,
}

/// Field 22 of `/proc/PID/stat`: the process start time, `None` if the process is gone.
fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: count fields after its closing paren.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Stops a recorded API server: SIGTERM, then SIGKILL after 3 s. Only if the pid still is the
/// same process (same start time).
fn stop_apiserver(p: &ApiServerProcess) -> anyhow::Result<()> {
    let alive = || proc_start_time(p.pid) == Some(p.start_time);
    if !alive() {
        return Ok(());
    }
    let pid = i32::try_from(p.pid).context("pid out of range")?;
    // SAFETY: kill(2) on the pid this testbed started, checked by start time just above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive() {
        if is_zombie(p.pid) {
            // Our own child (same process that started it): reap it.
            // SAFETY: waitpid on a specific pid, no status pointer.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            return Ok(());
        }
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            thread::sleep(Duration::from_millis(50));
            if alive() && !is_zombie(p.pid) {
                bail!("bulkhead-apiserver (pid {}) survives SIGKILL", p.pid);
            }
            return Ok(());
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(|st| st == "Z"))
        })
        .unwrap_or(false)
}

fn state_path(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{name}.json"))
}

impl State {
    fn save(&self) -> anyhow::Result<()> {
        fs::create_dir_all(STATE_DIR).with_context(|| format!("creating {STATE_DIR}"))?;
        let path = state_path(&self.name);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).context("serializing testbed state")?;
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    fn load(name: &str) -> anyhow::Result<Option<State>> {
        let path = state_path(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

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

/// A [`Testbed::spawn_hold`] in progress.
#[derive(Debug)]
pub struct HoldHandle {
    child: Child,
    what: String,
}

impl HoldHandle {
    /// Waits for the hold to finish and returns its report.
    pub fn wait(self) -> anyhow::Result<HoldReport> {
        let what = self.what;
        let out = self
            .child
            .wait_with_output()
            .with_context(|| format!("waiting for {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).with_context(|| format!("bad {what} output: {text}"))
    }
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

/// Runs a command, failing with its stderr.
fn run(args: &[&str]) -> anyhow::Result<()> {
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

/// The name of another recorded testbed using `subnet`: two bridges with one address would make
/// both testbeds misroute.
fn subnet_user(subnet: u8, except: &str) -> Option<String> {
    let dir = fs::read_dir(STATE_DIR).ok()?;
    dir.flatten().find_map(|e| {
        let file = e.file_name().to_string_lossy().into_owned();
        let name = file.strip_suffix(".json")?;
        if name == except {
            return None;
        }
        let st = State::load(name).ok()??;
        (st.scenario?.subnet == subnet).then(|| name.to_owned())
    })
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
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
        let state = self
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("state lock poisoned"))?
            .clone();
        let mut children = self
            .children
            .lock()
            .map_err(|_| anyhow::anyhow!("children lock poisoned"))?;
        cleanup(&state, &mut children)
    }

    fn record(&self, f: impl FnOnce(&mut State)) -> anyhow::Result<()> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("state lock poisoned"))?;
        f(&mut st);
        st.save()
    }

    fn mkdir_cgroup(&self, dir: &Path) -> anyhow::Result<()> {
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

    fn build(&self) -> anyhow::Result<()> {
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
    fn create_netns(
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

    /// Starts an echo server on a host outside every namespace (the firewall's "world"): its own
    /// netns on the bridge with addresses 198.18.S.H (and fd00:b1:S::H) for each `H` in `hosts`,
    /// serving `serve`. Its process lives in `<cgroup root>/world/w<k>`, a cgroup that belongs to no
    /// pod. Removed with the testbed. `hosts` must not collide with the node (1), pods (10..) or
    /// earlier world servers; 192..=254 is a good range.
    pub fn world_server(&self, hosts: &[u8], serve: &[PortSpec]) -> anyhow::Result<WorldServer> {
        let s = &self.scenario;
        if hosts.is_empty() {
            bail!("world_server: no host numbers given");
        }
        // Validate and reserve the host numbers and the index in one critical section.
        let k = {
            let mut st = self
                .state
                .lock()
                .map_err(|_| anyhow::anyhow!("state lock poisoned"))?;
            for &h in hosts {
                let pod_range = 10..10 + s.pods.len();
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
            k
        };
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
        let log_dir = self
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("state lock poisoned"))?
            .log_dir
            .clone();
        let log = log_dir
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

    /// Starts a server detached (own session), output to `log`; returns its index in `children`.
    fn spawn_server(&self, mut cmd: Command, log: &Path, what: &str) -> anyhow::Result<usize> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log fd")?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: setsid(2) is async-signal-safe; a server must not die with our session.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting the server of {what}"))?;
        let pid = child.id();
        let idx = {
            let mut children = self
                .children
                .lock()
                .map_err(|_| anyhow::anyhow!("children lock poisoned"))?;
            children.push(child);
            children.len() - 1
        };
        self.record(|st| st.pids.push(pid))?;
        Ok(idx)
    }

    /// Waits until every server (label, log, child index) printed READY.
    fn wait_ready(&self, servers: &[(String, PathBuf, usize)]) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<&(String, PathBuf, usize)> = servers.iter().collect();
        loop {
            let mut still = Vec::new();
            for srv in pending {
                let (what, log_path, child) = srv;
                let log = fs::read_to_string(log_path).unwrap_or_default();
                if log.lines().any(|l| l.starts_with("READY")) {
                    continue;
                }
                let exited = {
                    let mut children = self
                        .children
                        .lock()
                        .map_err(|_| anyhow::anyhow!("children lock poisoned"))?;
                    children
                        .get_mut(*child)
                        .and_then(|c| c.try_wait().ok().flatten())
                };
                if let Some(status) = exited {
                    bail!(
                        "the server of {what} exited ({status}) before listening:\n{}",
                        log.trim()
                    );
                }
                still.push(srv);
            }
            pending = still;
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let who: Vec<&str> = pending.iter().map(|s| s.0.as_str()).collect();
                bail!(
                    "servers not listening after {READY_TIMEOUT:?}: {} (log: {})",
                    who.join(", "),
                    pending[0].1.display()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    // ---------- accessors ----------

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

    /// A command that will run inside the pod: in its container cgroup (the firewall identifies
    /// pods by the socket's cgroup) and, unless hostNetwork, in its network namespace.
    pub fn pod_command(
        &self,
        key: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> anyhow::Result<Command> {
        let pod = self.pod(key)?;
        command_in(pod.netns.as_deref(), &pod.container_cgroup, program)
    }

    fn run_pod_binary(&self, from: Option<&str>, args: &[String]) -> anyhow::Result<String> {
        let cmd = match from {
            Some(key) => self.pod_command(key, &self.pod_binary)?,
            None => Command::new(&self.pod_binary),
        };
        self.run_command(cmd, from.unwrap_or("the host"), args)
    }

    fn run_command(
        &self,
        mut cmd: Command,
        place: &str,
        args: &[String],
    ) -> anyhow::Result<String> {
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} in {place}", self.pod_binary.display()))?;
        if !out.status.success() {
            bail!(
                "`bulkhead-pod {}` in {place} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).context("bulkhead-pod output is not UTF-8")
    }

    /// A container (re)start: a new, empty container cgroup below pod `key`'s cgroup, as the
    /// runtime creates for every container start (recorded for cleanup). Probe from it with
    /// [`Testbed::probe_in`].
    pub fn new_container_cgroup(&self, key: &str, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.pod(key)?.pod_cgroup.join(name);
        self.mkdir_cgroup(&dir)?;
        Ok(dir)
    }

    /// One probe from pod `key`'s network namespace but from cgroup `cgroup` (see
    /// [`Testbed::new_container_cgroup`]).
    pub fn probe_in(
        &self,
        key: &str,
        cgroup: &Path,
        target: Target,
        timeout: Duration,
    ) -> anyhow::Result<ProbeResult> {
        let pod = self.pod(key)?;
        let cmd = command_in(pod.netns.as_deref(), cgroup, &self.pod_binary)?;
        let args = vec![
            "connect".to_owned(),
            "--timeout-ms".to_owned(),
            timeout.as_millis().to_string(),
            target.flag().to_owned(),
            target.addr().to_string(),
        ];
        let out = self.run_command(cmd, &cgroup.display().to_string(), &args)?;
        let line = out
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        serde_json::from_str(line).with_context(|| format!("bad probe output: {out}"))
    }

    fn probe_impl(
        &self,
        from: Option<&str>,
        targets: &[Target],
        timeout: Duration,
    ) -> anyhow::Result<Vec<ProbeResult>> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![
            "connect".to_owned(),
            "--timeout-ms".to_owned(),
            timeout.as_millis().to_string(),
        ];
        for t in targets {
            args.push(t.flag().to_owned());
            args.push(t.addr().to_string());
        }
        let out = self.run_pod_binary(from, &args)?;
        let mut results: Vec<Option<ProbeResult>> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .with_context(|| format!("bad probe output line: {l}"))
                    .map(Some)
            })
            .collect::<anyhow::Result<_>>()?;
        // Report in the caller's order (the binary prints TCP targets first).
        targets
            .iter()
            .map(|t| {
                results
                    .iter_mut()
                    .find(|r| {
                        r.as_ref()
                            .is_some_and(|r| r.target == t.addr() && r.protocol == t.protocol)
                    })
                    .and_then(Option::take)
                    .with_context(|| format!("no probe result for {t}:\n{out}"))
            })
            .collect()
    }

    /// Connects from inside pod `from` (`namespace/name`) to each target, concurrently; results in
    /// the order of `targets`.
    pub fn probe(
        &self,
        from: &str,
        targets: &[Target],
        timeout: Duration,
    ) -> anyhow::Result<Vec<ProbeResult>> {
        self.probe_impl(Some(from), targets, timeout)
    }

    /// Like [`Testbed::probe`], from the node itself (host netns, the caller's cgroup): a
    /// kubelet-style probe.
    pub fn probe_from_host(
        &self,
        targets: &[Target],
        timeout: Duration,
    ) -> anyhow::Result<Vec<ProbeResult>> {
        self.probe_impl(None, targets, timeout)
    }

    /// One probe from pod `from` to `target`.
    pub fn probe_one(
        &self,
        from: &str,
        target: Target,
        timeout: Duration,
    ) -> anyhow::Result<ProbeResult> {
        self.probe(from, &[target], timeout)?
            .pop()
            .context("no probe result")
    }

    /// `count` sequential TCP connection attempts from pod `from` to `target`, each bounded by
    /// `timeout`; counts by outcome.
    pub fn storm(
        &self,
        from: &str,
        target: Target,
        count: u64,
        timeout: Duration,
    ) -> anyhow::Result<StormReport> {
        let args = vec![
            "storm".to_owned(),
            "--tcp".to_owned(),
            target.addr().to_string(),
            "--count".to_owned(),
            count.to_string(),
            "--timeout-ms".to_owned(),
            timeout.as_millis().to_string(),
        ];
        let out = self.run_pod_binary(Some(from), &args)?;
        serde_json::from_str(out.trim()).with_context(|| format!("bad storm output: {out}"))
    }

    /// One long-lived TCP connection from pod `from` to `target`, one round trip every `interval`
    /// for `duration` (blocks that long; see [`Testbed::spawn_hold`] to do something meanwhile).
    pub fn hold(
        &self,
        from: &str,
        target: Target,
        interval: Duration,
        duration: Duration,
    ) -> anyhow::Result<HoldReport> {
        self.spawn_hold(from, target, interval, duration)?.wait()
    }

    /// Starts [`Testbed::hold`] in the background, so a test can restart the agent or change the
    /// policy while the connection lives; [`HoldHandle::wait`] returns the report.
    pub fn spawn_hold(
        &self,
        from: &str,
        target: Target,
        interval: Duration,
        duration: Duration,
    ) -> anyhow::Result<HoldHandle> {
        let mut cmd = self.pod_command(from, &self.pod_binary)?;
        cmd.arg("hold")
            .args(["--tcp", &target.addr().to_string()])
            .args(["--interval-ms", &interval.as_millis().to_string()])
            .args(["--duration-ms", &duration.as_millis().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting hold in {from}"))?;
        Ok(HoldHandle {
            child,
            what: format!("hold {from} -> {target}"),
        })
    }

    /// Every pod × every pod × every served port (IPv4), one source pod per thread.
    pub fn matrix(&self, timeout: Duration) -> anyhow::Result<Matrix> {
        self.matrix_family(false, timeout)
    }

    /// Like [`Testbed::matrix`] over IPv6 (hostNetwork pods: the node's v6 address).
    pub fn matrix6(&self, timeout: Duration) -> anyhow::Result<Matrix> {
        if !self.scenario.ipv6 {
            bail!("testbed {} has no IPv6 (ipv6: false)", self.scenario.name);
        }
        self.matrix_family(true, timeout)
    }

    fn matrix_family(&self, v6: bool, timeout: Duration) -> anyhow::Result<Matrix> {
        let mut columns = Vec::new();
        for (i, pod) in self.pods.iter().enumerate() {
            for p in &self.scenario.pods[i].serve {
                columns.push(MatrixColumn {
                    pod: pod.key.clone(),
                    target: Target {
                        ip: match (v6, pod.ipv6) {
                            (true, Some(a)) => IpAddr::V6(a),
                            _ => IpAddr::V4(pod.ipv4),
                        },
                        protocol: p.protocol,
                        port: p.port,
                    },
                });
            }
        }
        let targets: Vec<Target> = columns.iter().map(|c| c.target).collect();
        let cells = thread::scope(|scope| {
            let handles: Vec<_> = self
                .pods
                .iter()
                .map(|p| {
                    let targets = &targets;
                    scope.spawn(move || self.probe(&p.key, targets, timeout))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        Ok(Matrix {
            rows: self.pods.iter().map(|p| p.key.clone()).collect(),
            columns,
            cells,
        })
    }

    // ---------- objects for the agent ----------

    /// Starts `bulkhead-apiserver` (the API server emulator, `binary`) detached, on
    /// 127.0.0.1 (`port` 0 = any), serving [`Testbed::source_objects`]`(extra)`, and records its
    /// pid so that [`Testbed::down_by_name`] (or the next `up` after a crash) stops it. Writes the
    /// kubeconfig and the objects next to the testbed's logs; returns once it listens.
    pub fn start_apiserver(
        &self,
        binary: &Path,
        port: u16,
        extra: &[serde_yaml::Value],
    ) -> anyhow::Result<ApiServerInfo> {
        let (dir, running) = {
            let st = self
                .state
                .lock()
                .map_err(|_| anyhow::anyhow!("state lock poisoned"))?;
            (st.log_dir.clone(), st.apiserver.clone())
        };
        if let Some(p) = running {
            stop_apiserver(&p)?;
        }
        let dir = dir.unwrap_or_else(|| Path::new(STATE_DIR).join(format!("{}.logs", self.name())));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let objects = dir.join("apiserver-objects.yaml");
        let kubeconfig = dir.join("kubeconfig.yaml");
        let log = dir.join("apiserver.log");
        self.write_source(&objects, extra)?;
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(binary);
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--objects")
            .arg(&objects)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            // Its own process group: a Ctrl-C in the terminal that ran `up` does not reach it.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        let start_time = proc_start_time(pid).unwrap_or_default();
        self.record(|st| st.apiserver = Some(ApiServerProcess { pid, start_time }))?;
        let stdout = child.stdout.take().context("apiserver stdout")?;
        let mut line = String::new();
        let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let url = match (read, line.trim().strip_prefix("ready ")) {
            (Ok(_), Some(url)) => url.to_owned(),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "bulkhead-apiserver did not start: {}",
                    fs::read_to_string(&log).unwrap_or_default().trim()
                );
            }
        };
        // Not waited for: it outlives this process; cleanup stops it by pid.
        drop(child);
        Ok(ApiServerInfo {
            url,
            kubeconfig,
            objects,
            pid,
        })
    }

    /// The Kubernetes objects the agent should see: the Node, Namespaces, Pods, Services, then the
    /// scenario's `objects`, then `extra` (see [`crate::source::scenario_objects`]).
    pub fn source_objects(
        &self,
        extra: &[serde_yaml::Value],
    ) -> anyhow::Result<Vec<serde_yaml::Value>> {
        crate::source::scenario_objects(&self.scenario, extra)
    }

    /// Writes the agent's `file:` source (a YAML stream) atomically, so an agent polling the file
    /// never reads half of it.
    pub fn write_source(&self, path: &Path, extra: &[serde_yaml::Value]) -> anyhow::Result<()> {
        let mut text = String::new();
        for o in self.source_objects(extra)? {
            text.push_str("---\n");
            text.push_str(&serde_yaml::to_string(&o).context("serializing an object")?);
        }
        let tmp = path.with_extension("tmp-bulkhead");
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all().ok();
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
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

/// `--tcp P --udp Q ...` for `bulkhead-pod serve`.
fn serve_args(ports: &[PortSpec]) -> Vec<String> {
    ports
        .iter()
        .flat_map(|p| {
            let flag = match p.protocol {
                Protocol::Tcp => "--tcp",
                Protocol::Udp => "--udp",
            };
            [flag.to_owned(), p.port.to_string()]
        })
        .collect()
}

/// A command that runs in cgroup `cgroup` and, if given, network namespace `netns`.
fn command_in(
    netns: Option<&str>,
    cgroup: &Path,
    program: impl AsRef<std::ffi::OsStr>,
) -> anyhow::Result<Command> {
    let procs_path = cgroup.join("cgroup.procs");
    // Opened here (O_CLOEXEC, as std always does), used in the child: pre_exec may not allocate.
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(&procs_path)
        .with_context(|| format!("opening {}", procs_path.display()))?;
    let netns = match netns {
        Some(ns) => Some(
            File::open(Path::new("/run/netns").join(ns))
                .with_context(|| format!("opening netns {ns}"))?,
        ),
        None => None,
    };
    let mut cmd = Command::new(program);
    // SAFETY: only async-signal-safe calls (write, setns) on fds opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(ns) = &netns
                && libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
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

/// Removes everything `state` records, and nothing else. Idempotent.
fn cleanup(state: &State, children: &mut [Child]) -> anyhow::Result<()> {
    let mut errors: Vec<String> = Vec::new();
    if let Some(p) = &state.apiserver
        && let Err(e) = stop_apiserver(p)
    {
        errors.push(format!("{e:#}"));
    }
    let root = &state.cgroup_root;
    let root_ours =
        state.cgroups.first() == Some(root) && ensure_below(&state.cgroup_mount, root).is_ok();
    // 1. Processes: every process in the testbed's cgroups, at once.
    if root_ours
        && root.is_dir()
        && let Err(e) = kill_cgroup(state, root, children)
    {
        errors.push(format!("{e:#}"));
    }
    for c in children.iter_mut() {
        let _ = c.try_wait();
    }
    // 2. Cgroups, children first.
    for dir in state.cgroups.iter().rev() {
        if ensure_below(&state.cgroup_mount, dir).is_err() || !dir.starts_with(root) {
            errors.push(format!(
                "refusing to remove {}: outside the testbed cgroup root",
                dir.display()
            ));
            continue;
        }
        if let Err(e) = rmdir_retry(dir) {
            errors.push(format!("removing cgroup {}: {e}", dir.display()));
        }
    }
    // 3. Network namespaces (their veth ends go with them), then leftover links, then the bridge.
    for ns in &state.netns {
        if netns_exists(ns)
            && let Err(e) = run(&["ip", "netns", "del", ns])
        {
            errors.push(format!("{e:#}"));
        }
    }
    for link in state.links.iter().chain(state.bridge.iter()) {
        if link_exists(link)
            && let Err(e) = run(&["ip", "link", "del", link])
            && link_exists(link)
        {
            errors.push(format!("{e:#}"));
        }
    }
    // 4. Logs and the state file.
    if errors.is_empty() {
        if let Some(d) = &state.log_dir
            && d.starts_with(STATE_DIR)
        {
            let _ = fs::remove_dir_all(d);
        }
        match fs::remove_file(state_path(&state.name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("removing the state file: {e}")),
        }
        Ok(())
    } else {
        bail!(
            "testbed {}: cleanup incomplete (state kept in {}):\n  {}",
            state.name,
            state_path(&state.name).display(),
            errors.join("\n  ")
        )
    }
}

fn kill_cgroup(state: &State, root: &Path, children: &mut [Child]) -> anyhow::Result<()> {
    let kill = root.join("cgroup.kill");
    if kill.exists() {
        fs::write(&kill, "1").with_context(|| format!("writing {}", kill.display()))?;
    } else {
        // Kernels before 5.14: SIGKILL each process listed in our own cgroups.
        for dir in &state.cgroups {
            for pid in fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: kill(2); the pid was read from a cgroup this testbed created.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for c in children.iter_mut() {
            let _ = c.try_wait();
        }
        if !populated(root)? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "processes still alive in {} 5 s after cgroup.kill",
                root.display()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn rmdir_retry(dir: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
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
