//! The real `firewall-agent`, started on the testbed with a `file:` source; its JSON diagnostics
//! (stderr) are collected with the time each line arrived, its violation log (stdout) line by line.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bulkhead_tests::agent::{Lines, pump, terminate};
use serde_json::Value;

use super::{interrupt, setup::Env};

/// A running agent; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Agent {
    child: Option<Child>,
    /// When it was spawned.
    pub started: Instant,
    stderr: Lines<(Instant, Value)>,
    stdout: Lines<String>,
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
        let source = format!("file:{}", source.display());
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
        let mut child = Command::new(&env.agent_bin)
            .args(["--log-format", "json", "run", "--node-name", "node-1"])
            .args(source)
            .arg("--cgroup-root")
            .arg(env.tb.cgroup_root())
            .args(["--mode", mode])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting firewall-agent")?;
        let started = Instant::now();
        let stderr: Lines<(Instant, Value)> = Arc::default();
        let stdout: Lines<String> = Arc::default();
        pump(
            child.stderr.take().context("agent stderr")?,
            stderr.clone(),
            |l| {
                Some((
                    Instant::now(),
                    serde_json::from_str(&l).unwrap_or(Value::String(l)),
                ))
            },
        );
        pump(
            child.stdout.take().context("agent stdout")?,
            stdout.clone(),
            Some,
        );
        let mut agent = Agent {
            child: Some(child),
            started,
            stderr,
            stdout,
        };
        agent.wait_message("ready", 1, ready_timeout)?;
        Ok(agent)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Diagnostics lines with this `message`, with their arrival times.
    pub fn messages(&self, message: &str) -> Vec<(Instant, Value)> {
        self.stderr
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|(_, l)| l["message"] == message || l["fields"]["message"] == message)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every diagnostics line so far, as text (for error messages).
    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .map(|v| {
                v.iter()
                    .rev()
                    .take(30)
                    .rev()
                    .map(|(_, l)| l.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }

    /// Waits until `message` was logged `n` times; returns the `n`-th.
    pub fn wait_message(
        &mut self,
        message: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<(Instant, Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            interrupt::check()?;
            let m = self.messages(message);
            if m.len() >= n {
                return Ok(m[n - 1].clone());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("firewall-agent exited ({status}):\n{}", self.stderr_text());
            }
            if Instant::now() > deadline {
                bail!(
                    "firewall-agent did not log {message:?} x{n} within {timeout:?}:\n{}",
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Violation log lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .context("reading the agent's /proc status")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    /// SIGTERM, wait for exit; returns the final "detaching" line (the kernel counters) and every
    /// violation log line (the agent prints what it still owes on the way out).
    pub fn stop(mut self) -> anyhow::Result<(Value, Vec<String>)> {
        self.terminate()?;
        // The pumps finish when the pipes close.
        thread::sleep(Duration::from_millis(200));
        let detaching = self
            .messages("detaching")
            .pop()
            .map(|(_, v)| v)
            .unwrap_or(Value::Null);
        Ok((detaching, self.stdout_lines()))
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = terminate(&mut child, Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("firewall-agent {e}"))?;
        if !status.success() && !interrupt::requested() {
            bail!("firewall-agent exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            eprintln!("bench: stopping firewall-agent: {e:#}");
        }
    }
}
