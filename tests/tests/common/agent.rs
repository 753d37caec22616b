//! The real `firewall-agent` binary for end-to-end tests ([`bulkhead_tests::agent`]), with
//! assertions instead of errors.
use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use bulkhead_tests::agent::{AgentProcess, Pinning, agent_bin_near, agent_command, file_source};
use serde_json::Value;

/// The agent binary: `$BULKHEAD_AGENT_BIN`, else next to this test's target directory.
pub fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    agent_bin_near(&exe).unwrap_or_else(|| {
        panic!(
            "firewall-agent not found next to {}: build it first (`cargo build -p firewall-agent`; `cargo xtask test` does)",
            exe.display()
        )
    })
}

/// A running agent. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct Agent(AgentProcess);

impl Agent {
    /// Starts `firewall-agent run --source file:SOURCE --cgroup-root ROOT --node-name NODE
    /// --no-pin` plus `extra` arguments, and waits until it has applied a policy. Every start
    /// but [`Agent::start_pinned`]'s pins nothing: a test leaves no program attached and adopts
    /// nothing an earlier test left.
    pub fn start(source: &Path, cgroup_root: &Path, node: &str, extra: &[&str]) -> Agent {
        Self::start_wrapped(&[], source, cgroup_root, node, extra)
    }

    /// Starts `firewall-agent run --source kube --kubeconfig KUBECONFIG ...` (the API server
    /// emulator's kubeconfig) and waits until it has applied a policy from a complete sync.
    pub fn start_kube(kubeconfig: &Path, cgroup_root: &Path, node: &str, extra: &[&str]) -> Agent {
        let kc = kubeconfig.display().to_string();
        let source = ["--source", "kube", "--kubeconfig", &kc];
        Self::launch(
            &[],
            Pinning::Off,
            &source,
            cgroup_root,
            node,
            extra,
            "ready",
        )
    }

    /// Like [`Agent::start`], for an agent expected never to be ready: waits until it has
    /// applied a policy.
    pub fn start_unready(source: &Path, cgroup_root: &Path, node: &str, extra: &[&str]) -> Agent {
        let source = file_source(source);
        let source = ["--source", source.as_str()];
        let pin = Pinning::Off;
        Self::launch(
            &[],
            pin,
            &source,
            cgroup_root,
            node,
            extra,
            "policy applied",
        )
    }

    /// Like [`Agent::start`], run through `wrapper` (e.g. `setpriv ... --`).
    pub fn start_wrapped(
        wrapper: &[String],
        source: &Path,
        cgroup_root: &Path,
        node: &str,
        extra: &[&str],
    ) -> Agent {
        Self::start_pinned(wrapper, Pinning::Off, source, cgroup_root, node, extra)
    }

    /// Like [`Agent::start_wrapped`], pinning as `pin` says.
    pub fn start_pinned(
        wrapper: &[String],
        pin: Pinning<'_>,
        source: &Path,
        cgroup_root: &Path,
        node: &str,
        extra: &[&str],
    ) -> Agent {
        let source = file_source(source);
        let source = ["--source", source.as_str()];
        Self::launch(wrapper, pin, &source, cgroup_root, node, extra, "ready")
    }

    fn launch(
        wrapper: &[String],
        pin: Pinning<'_>,
        source: &[&str],
        cgroup_root: &Path,
        node: &str,
        extra: &[&str],
        awaited: &str,
    ) -> Agent {
        let mut cmd = agent_command(wrapper, &agent_bin(), node, source, cgroup_root, pin);
        cmd.args(["--poll-ms", "50"]).args(extra);
        let process = AgentProcess::spawn(cmd, Some("[agent] ")).expect("spawn firewall-agent");
        let agent = Agent(process);
        agent.wait_for_log(awaited, Duration::from_secs(20));
        agent
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// Diagnostics lines (JSON) whose message is `message`, so far.
    pub fn logs_with(&self, message: &str) -> Vec<Value> {
        self.0
            .messages(message)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// Waits until a diagnostics line with `message` has appeared `n` times in total.
    pub fn wait_for_log_count(&self, message: &str, n: usize, timeout: Duration) {
        if let Err(e) = self.0.wait_message(message, n, timeout) {
            panic!("agent did not log {message:?} ×{n} within {timeout:?}: {e}");
        }
    }

    /// Waits for the first diagnostics line with `message`.
    pub fn wait_for_log(&self, message: &str, timeout: Duration) {
        self.wait_for_log_count(message, 1, timeout);
    }

    /// Violation log lines (stdout) so far.
    pub fn violations(&self) -> Vec<Value> {
        self.0
            .stdout_lines()
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
    pub fn stop(self) -> Vec<Value> {
        self.term_in_place();
        self.violations()
    }

    /// Like [`Agent::stop`], also writing the stdout lines as printed to `path`: the log file an
    /// operator feeds to `suggest` and `report`.
    pub fn stop_to_file(self, path: &Path) -> Vec<Value> {
        self.term_in_place();
        let text: String = self
            .0
            .stdout_lines()
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        self.violations()
    }

    /// SIGKILL, as a crash or an OOM kill would: no shutdown code runs. Waits for the exit.
    pub fn kill9(self) {
        self.0.kill();
    }

    /// Sends SIGTERM and waits for a clean exit (the upgrade path when state is pinned).
    pub fn term(self) {
        self.term_in_place();
    }

    fn term_in_place(&self) {
        if let Err(e) = self.0.terminate() {
            panic!("{e}");
        }
    }
}

/// A `--bpffs` pin directory, cleaned with `firewall-agent cleanup` (whatever is still attached)
/// when the test ends.
pub struct Pins(pub PathBuf);

impl Pins {
    /// `dir`, cleaned first of what an earlier run left.
    pub fn cleaned(dir: PathBuf) -> Pins {
        cleanup(&dir);
        Pins(dir)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        cleanup(&self.0);
    }
}

/// `firewall-agent cleanup --bpffs DIR`, which must succeed; its report (stdout).
pub fn cleanup(dir: &Path) -> String {
    let mut cmd = Command::new(agent_bin());
    cmd.args(["cleanup", "--bpffs"]).arg(dir);
    super::stdout_of(&mut cmd, "firewall-agent cleanup")
}

/// Lines as pretty text for assertion messages.
pub fn pretty(lines: &[Value]) -> String {
    lines
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
