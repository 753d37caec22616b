//! The API server hookup: a detached `bulkhead-apiserver` serving the testbed's objects, recorded
//! by pid and start time so cleanup stops it and never signals a recycled pid; and the agent's
//! `file:` source with the same objects.
use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::{STATE_DIR, Testbed};
use crate::source::{scenario_objects, write_objects};

/// A detached `bulkhead-apiserver`, identified by pid *and* start time.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct ApiServerProcess {
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

/// The fields of `/proc/PID/stat` after the command name (which may contain spaces), `None` if
/// the process is gone.
fn proc_stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Field 22 of `/proc/PID/stat`: the process start time.
fn proc_start_time(pid: u32) -> Option<u64> {
    proc_stat_fields(pid)?.get(19)?.parse().ok()
}

fn is_zombie(pid: u32) -> bool {
    proc_stat_fields(pid).is_some_and(|f| f.first().is_some_and(|st| st == "Z"))
}

/// Stops a recorded API server: SIGTERM, then SIGKILL after 3 s. Only if the pid still is the
/// same process (same start time).
pub(super) fn stop_apiserver(p: &ApiServerProcess) -> anyhow::Result<()> {
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

impl Testbed {
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
            let st = self.state()?;
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
        let mut child = Command::new(binary)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--objects")
            .arg(&objects)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            // Its own process group: a Ctrl-C in the terminal that ran `up` does not reach it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        let start_time = proc_start_time(pid).unwrap_or_default();
        self.record(|st| st.apiserver = Some(ApiServerProcess { pid, start_time }))?;
        let stdout = child.stdout.take().context("apiserver stdout")?;
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let Some(url) = read.ok().and(line.trim().strip_prefix("ready ")) else {
            let _ = child.kill();
            let _ = child.wait();
            let log = fs::read_to_string(&log).unwrap_or_default();
            bail!("bulkhead-apiserver did not start: {}", log.trim());
        };
        // Not waited for: it outlives this process; cleanup stops it by pid.
        drop(child);
        Ok(ApiServerInfo {
            url: url.to_owned(),
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
        scenario_objects(&self.scenario, extra)
    }

    /// Writes the agent's `file:` source (a YAML stream) atomically, so an agent polling the file
    /// never reads half of it.
    pub fn write_source(&self, path: &Path, extra: &[serde_yaml::Value]) -> anyhow::Result<()> {
        write_objects(path, &self.source_objects(extra)?)
    }
}
