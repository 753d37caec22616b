//! The echo servers (`bulkhead-pod serve`) of pods and world servers: started detached, output to
//! a log, ready once each printed READY.
use std::{
    fs::{self, File},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::Testbed;
use crate::scenario::{PortSpec, Protocol};

/// How long `up` waits for every pod's server to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A started server: its label, its log, its index in the testbed's children.
pub(super) type Server = (String, PathBuf, usize);

/// `--tcp P --udp Q ...` for `bulkhead-pod serve`.
pub(super) fn serve_args(ports: &[PortSpec]) -> Vec<String> {
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

impl Testbed {
    /// Every pod's server; returns once all listen.
    pub(super) fn start_pod_servers(&self) -> anyhow::Result<()> {
        let s = &self.scenario;
        if let Some(d) = &self.state()?.log_dir {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut servers = Vec::new();
        for (pod, spec) in self.pods.iter().zip(&s.pods) {
            let mut cmd = self.pod_command(&pod.key, &self.pod_binary)?;
            cmd.arg("serve").args(serve_args(&spec.serve));
            if pod.host_network {
                // Only the node's testbed addresses: never the host's real interfaces.
                cmd.args(["--bind", &s.node_ipv4().to_string()]);
                if s.ipv6 {
                    cmd.args(["--bind", &s.node_ipv6().to_string()]);
                }
            }
            let what = format!("pod {}", pod.key);
            let child = self.spawn_server(cmd, &pod.log, &what)?;
            servers.push((what, pod.log.clone(), child));
        }
        self.wait_ready(&servers)
    }

    /// Starts a server detached (own session), output to `log`; returns its index in `children`.
    pub(super) fn spawn_server(
        &self,
        mut cmd: Command,
        log: &Path,
        what: &str,
    ) -> anyhow::Result<usize> {
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
            let mut children = self.children()?;
            children.push(child);
            children.len() - 1
        };
        self.record(|st| st.pids.push(pid))?;
        Ok(idx)
    }

    /// Waits until every server printed READY.
    pub(super) fn wait_ready(&self, servers: &[Server]) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<&Server> = servers.iter().collect();
        loop {
            let mut still = Vec::new();
            for srv in pending {
                let (what, log_path, child) = srv;
                let log = fs::read_to_string(log_path).unwrap_or_default();
                if log.lines().any(|l| l.starts_with("READY")) {
                    continue;
                }
                let exited = self
                    .children()?
                    .get_mut(*child)
                    .and_then(|c| c.try_wait().ok().flatten());
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
}
