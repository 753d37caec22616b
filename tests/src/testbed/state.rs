//! What a testbed created, recorded in a state file *before* it is created, and the cleanup that
//! removes exactly that: so `down` works from another process, a crashed run is cleaned by the
//! next `up` of the same name, and cleanup never touches anything it did not create.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Child,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::{
    apiserver::{ApiServerProcess, stop_apiserver},
    network::{link_exists, netns_exists, run},
};
use crate::{
    cgroup::{ensure_below, populated},
    scenario::Scenario,
};

/// Where state files live: `/run` is wiped at reboot, exactly when the kernel objects vanish too.
pub const STATE_DIR: &str = "/run/bulkhead-testbed";

/// Everything one testbed created, in creation order; the only names cleanup ever touches.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) name: String,
    pub(super) scenario: Option<Scenario>,
    pub(super) pod_binary: PathBuf,
    /// The cgroup2 mount at creation time (cleanup refuses paths outside it).
    pub(super) cgroup_mount: PathBuf,
    /// `<mount>/bulkhead-tb-<name>`, also the first entry of `cgroups`.
    pub(super) cgroup_root: PathBuf,
    pub(super) log_dir: Option<PathBuf>,
    pub(super) bridge: Option<String>,
    pub(super) netns: Vec<String>,
    pub(super) links: Vec<String>,
    /// Absolute cgroup directories, parents before children.
    pub(super) cgroups: Vec<PathBuf>,
    /// Host numbers taken by world servers, in creation order.
    #[serde(default)]
    pub(super) world_hosts: Vec<u8>,
    /// World servers created so far (the next one's index).
    #[serde(default)]
    pub(super) worlds: u32,
    /// Server pids (informational: processes are killed through `cgroup.kill`, never by pid).
    pub(super) pids: Vec<u32>,
    /// The `bulkhead-apiserver` started by [`super::Testbed::start_apiserver`]: it runs outside
    /// the testbed's cgroups (it is the control plane, not a pod), so cleanup stops it by pid.
    #[serde(default)]
    pub(super) apiserver: Option<ApiServerProcess>,
}

pub(super) fn state_path(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{name}.json"))
}

impl State {
    pub(super) fn save(&self) -> anyhow::Result<()> {
        fs::create_dir_all(STATE_DIR).with_context(|| format!("creating {STATE_DIR}"))?;
        let path = state_path(&self.name);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).context("serializing testbed state")?;
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    pub(super) fn load(name: &str) -> anyhow::Result<Option<State>> {
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

/// The name of another recorded testbed using `subnet`: two bridges with one address would make
/// both testbeds misroute.
pub(super) fn subnet_user(subnet: u8, except: &str) -> Option<String> {
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

/// Removes everything `state` records, and nothing else. Idempotent.
pub(super) fn cleanup(state: &State, children: &mut [Child]) -> anyhow::Result<()> {
    let mut errors: Vec<String> = Vec::new();
    if let Some(p) = &state.apiserver
        && let Err(e) = stop_apiserver(p)
    {
        errors.push(format!("{e:#}"));
    }
    remove_processes_and_cgroups(state, children, &mut errors);
    remove_network(state, &mut errors);
    // Logs and the state file, only once everything else is gone.
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

/// Every process in the testbed's cgroups at once, then the cgroups, children first.
fn remove_processes_and_cgroups(state: &State, children: &mut [Child], errors: &mut Vec<String>) {
    let root = &state.cgroup_root;
    let root_ours =
        state.cgroups.first() == Some(root) && ensure_below(&state.cgroup_mount, root).is_ok();
    if root_ours
        && root.is_dir()
        && let Err(e) = kill_cgroup(state, root, children)
    {
        errors.push(format!("{e:#}"));
    }
    for c in children.iter_mut() {
        let _ = c.try_wait();
    }
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
}

/// Network namespaces (their veth ends go with them), then leftover links, then the bridge.
fn remove_network(state: &State, errors: &mut Vec<String>) {
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
