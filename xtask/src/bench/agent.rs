//! The real `firewall-agent`, started on the testbed ([`bulkhead_tests::agent`]); waits stop at
//! Ctrl-C so the bench unwinds through its guards.
use std::{
    ops::Deref,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bulkhead_tests::agent::{AgentProcess, Pinning, agent_command, file_source};
use serde_json::Value;

use super::{interrupt, setup::Env};

/// A running agent; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Agent(AgentProcess);

impl Deref for Agent {
    type Target = AgentProcess;
    fn deref(&self) -> &AgentProcess {
        &self.0
    }
}

/// A number from a log field that may be a JSON number or a string ("1.23").
pub fn num(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str()?.parse().ok())
}

impl Agent {
    /// Starts `firewall-agent run` on `source` in `mode` and waits (up to `ready_timeout`) for
    /// "ready".
    pub fn start(
        env: &Env,
        source: &Path,
        mode: &str,
        extra: &[&str],
        ready_timeout: Duration,
    ) -> anyhow::Result<Agent> {
        let source = file_source(source);
        Self::start_with(env, &["--source", &source], mode, extra, ready_timeout)
    }

    /// Like [`Agent::start`] with explicit source arguments (e.g. `--source kube --kubeconfig K`).
    pub fn start_with(
        env: &Env,
        source: &[&str],
        mode: &str,
        extra: &[&str],
        ready_timeout: Duration,
    ) -> anyhow::Result<Agent> {
        interrupt::check()?;
        // Measurements start from empty maps and leave nothing attached.
        let (bin, root) = (&env.agent_bin, env.tb.cgroup_root());
        let mut cmd = agent_command(&[], bin, "node-1", source, root, Pinning::Off);
        cmd.args(["--mode", mode]).args(extra);
        let mut process = AgentProcess::spawn(cmd, None)?;
        process.cancel_when(interrupt::requested);
        process.wait_message("ready", 1, ready_timeout)?;
        Ok(Agent(process))
    }

    /// Waits until `message` was logged `n` times; returns the `n`-th.
    pub fn wait_message(
        &self,
        message: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<(Instant, Value)> {
        Ok(self.0.wait_message(message, n, timeout)?)
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<(u64, u64)> {
        self.0.rss_kib().context("reading the agent's /proc status")
    }

    /// SIGTERM, wait for exit; returns the final "detaching" line (the kernel counters) and every
    /// violation log line (the agent prints what it still owes on the way out).
    pub fn stop(self) -> anyhow::Result<(Value, Vec<String>)> {
        self.0.terminate()?;
        let detaching = self
            .messages("detaching")
            .pop()
            .map(|(_, v)| v)
            .unwrap_or(Value::Null);
        Ok((detaching, self.stdout_lines()))
    }
}
