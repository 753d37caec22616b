//! Runs the real `firewall-agent` binary for end-to-end tests and collects its output.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use bulkhead_tests::agent::{Lines, StopError, pump, signal, terminate};
use serde_json::Value;

/// The agent binary: `$BULKHEAD_AGENT_BIN`, else next to this test's target directory.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BULKHEAD_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/firewall-agent
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("firewall-agent");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p firewall-agent`; `cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// A running agent. Killed (SIGTERM, then SIGKILL) on drop.
pub struct Agent {
    child: Option<Child>,
    stdout: Lines<String>,
    stderr: Lines<String>,
}

impl Agent {
    /// Starts `firewall-agent run --source file:SOURCE --cgroup-root ROOT --node-name NODE` plus
    /// `extra` arguments, and waits until it has applied a policy.
    pub fn start(source: &Path, cgroup_root: &Path, node: &str, extra: &[&str]) -> Agent {
        let source = format!("file:{}", source.display());
        Self::launch(&["--source", &source], cgroup_root, node, extra)
    }

    /// Starts `firewall-agent run --source kube --kubeconfig KUBECONFIG ...` (the API server
    /// emulator's kubeconfig) and waits until it has applied a policy from a complete sync.
    pub fn start_kube(kubeconfig: &Path, cgroup_root: &Path, node: &str, extra: &[&str]) -> Agent {
        let kc = kubeconfig.display().to_string();
        Self::launch(
            &["--source", "kube", "--kubeconfig", &kc],
            cgroup_root,
            node,
            extra,
        )
    }

    fn launch(source: &[&str], cgroup_root: &Path, node: &str, extra: &[&str]) -> Agent {
        Self::launch_wrapped(&[], source, cgroup_root, node, extra, "ready")
    }

    /// Like [`Agent::start`], for an agent expected never to be ready: waits until it has
    /// applied a policy.
    pub fn start_unready(source: &Path, cgroup_root: &Path, node: &str, extra: &[&str]) -> Agent {
        let source = format!("file:{}", source.display());
        let source = ["--source", source.as_str()];
        Self::launch_wrapped(&[], &source, cgroup_root, node, extra, "policy applied")
    }

    /// Like [`Agent::start`], run through `wrapper` (e.g. `setpriv ... --`).
    pub fn start_wrapped(
        wrapper: &[String],
        source: &Path,
        cgroup_root: &Path,
        node: &str,
        extra: &[&str],
    ) -> Agent {
        let source = format!("file:{}", source.display());
        Self::launch_wrapped(
            wrapper,
            &["--source", &source],
            cgroup_root,
            node,
            extra,
            "ready",
        )
    }

    fn launch_wrapped(
        wrapper: &[String],
        source: &[&str],
        cgroup_root: &Path,
        node: &str,
        extra: &[&str],
        awaited: &str,
    ) -> Agent {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(agent_bin());
                c
            }
            None => Command::new(agent_bin()),
        };
        cmd.args([
            "--log-format",
            "json",
            "run",
            "--poll-ms",
            "50",
            "--node-name",
            node,
        ])
        .args(source)
        .arg("--cgroup-root")
        .arg(cgroup_root)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn firewall-agent");
        let stdout = Lines::default();
        let stderr = Lines::default();
        pump(child.stdout.take().expect("stdout"), stdout.clone(), Some);
        pump(
            child.stderr.take().expect("stderr"),
            stderr.clone(),
            |line| {
                eprintln!("[agent] {line}");
                Some(line)
            },
        );
        let agent = Agent {
            child: Some(child),
            stdout,
            stderr,
        };
        agent.wait_for_log(awaited, Duration::from_secs(20));
        agent
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Diagnostics lines (JSON) whose message is `message`, so far.
    pub fn logs_with(&self, message: &str) -> Vec<Value> {
        self.stderr
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// Waits until a diagnostics line with `message` has appeared `n` times in total.
    pub fn wait_for_log_count(&self, message: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.logs_with(message).len() < n {
            assert!(
                Instant::now() < deadline,
                "agent did not log {message:?} ×{n} within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the first diagnostics line with `message`.
    pub fn wait_for_log(&self, message: &str, timeout: Duration) {
        self.wait_for_log_count(message, 1, timeout);
    }

    /// Violation log lines (stdout) so far.
    pub fn violations(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .expect("lock")
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Waits until `pred` holds for the violation lines.
    pub fn wait_violations(
        &self,
        timeout: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.violations();
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "violation lines never matched; got:\n{}",
                pretty(&v)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for exit; returns all violation lines (the agent flushes its
    /// folded counts on the way out).
    pub fn stop(mut self) -> Vec<Value> {
        self.terminate();
        // Readers finish when the pipes close.
        thread::sleep(Duration::from_millis(100));
        self.violations()
    }

    /// SIGKILL, as a crash or an OOM kill would: no shutdown code runs. Waits for the exit.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for a clean exit (the upgrade path when state is pinned).
    pub fn term(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            match terminate(&mut child, Duration::from_secs(10)) {
                Ok(status) => assert!(status.success(), "agent exited with {status}"),
                Err(StopError::TimedOut(_)) => panic!("agent did not stop within 10 s of SIGTERM"),
                Err(e) => panic!("stopping the agent: {e}"),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGTERM);
            thread::sleep(Duration::from_millis(300));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Lines as pretty text for assertion messages.
pub fn pretty(lines: &[Value]) -> String {
    lines
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
