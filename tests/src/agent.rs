//! A running `firewall-agent` process and its output, for the end-to-end tests, the demo and the
//! bench: the violation log (stdout, one JSON line each) and the diagnostics (stderr, JSON with
//! `--log-format json`), each line kept with the time it arrived.
use std::{
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long the agent gets to detach after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong with the agent process.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// It could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// It exited while we waited for a log line.
    #[error("firewall-agent exited ({status}):\n{log}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Its last diagnostics lines.
        log: String,
    },
    /// A log line did not appear in time.
    #[error("firewall-agent did not log {message:?} x{count} within {timeout:?}:\n{log}")]
    Timeout {
        /// The awaited message.
        message: String,
        /// How many of them.
        count: usize,
        /// How long we waited.
        timeout: Duration,
        /// Its last diagnostics lines.
        log: String,
    },
    /// SIGTERM did not end it in time (it was killed).
    #[error("firewall-agent did not stop within {0:?} of SIGTERM")]
    StopTimeout(Duration),
    /// It exited unsuccessfully after SIGTERM.
    #[error("firewall-agent exited with {0}")]
    Failed(ExitStatus),
    /// The caller's cancel check said stop (e.g. Ctrl-C in the bench).
    #[error("interrupted")]
    Cancelled,
    /// Waiting for the process failed.
    #[error("waiting for firewall-agent: {0}")]
    Wait(#[source] std::io::Error),
}

/// `$BULKHEAD_AGENT_BIN`, else `firewall-agent` in the directory above `exe`'s (a test binary in
/// `target/<profile>/deps/` finds `target/<profile>/firewall-agent`).
pub fn agent_bin_near(exe: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BULKHEAD_AGENT_BIN") {
        return Some(PathBuf::from(p));
    }
    let bin = exe.parent()?.parent()?.join("firewall-agent");
    bin.exists().then_some(bin)
}

type Lines<T> = Arc<Mutex<Vec<T>>>;

fn pump<T: Send + 'static>(
    r: impl Read + Send + 'static,
    sink: Lines<T>,
    f: impl Fn(String) -> T + Send + 'static,
) {
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let v = f(line);
            if let Ok(mut s) = sink.lock() {
                s.push(v);
            }
        }
    });
}

/// A running agent; stopped (SIGTERM, then SIGKILL) on drop.
pub struct AgentProcess {
    /// Behind a lock so that waiting (which polls for an early exit) needs only `&self`.
    child: Mutex<Option<Child>>,
    /// When it was spawned.
    pub started: Instant,
    stderr: Lines<(Instant, Value)>,
    stdout: Lines<String>,
    cancel: fn() -> bool,
}

fn never() -> bool {
    false
}

impl AgentProcess {
    /// Spawns `cmd` (a `firewall-agent` command line) with piped output. With `echo`, every
    /// diagnostics line is also printed to our stderr behind that prefix.
    pub fn spawn(mut cmd: Command, echo: Option<&'static str>) -> Result<Self, AgentError> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| AgentError::Spawn { program, source })?;
        let started = Instant::now();
        let stderr: Lines<(Instant, Value)> = Arc::default();
        let stdout: Lines<String> = Arc::default();
        if let Some(err) = child.stderr.take() {
            pump(err, stderr.clone(), move |l| {
                if let Some(prefix) = echo {
                    eprintln!("{prefix}{l}");
                }
                let v = serde_json::from_str(&l).unwrap_or(Value::String(l));
                (Instant::now(), v)
            });
        }
        if let Some(out) = child.stdout.take() {
            pump(out, stdout.clone(), |l| l);
        }
        Ok(AgentProcess {
            child: Mutex::new(Some(child)),
            started,
            stderr,
            stdout,
            cancel: never,
        })
    }

    /// Makes every wait fail with [`AgentError::Cancelled`] once `cancel` returns true.
    pub fn cancel_when(&mut self, cancel: fn() -> bool) {
        self.cancel = cancel;
    }

    /// The process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(Child::id))
            .unwrap_or(0)
    }

    fn try_wait(&self) -> Result<Option<ExitStatus>, AgentError> {
        match self.child.lock().as_deref_mut() {
            Ok(Some(c)) => c.try_wait().map_err(AgentError::Wait),
            _ => Ok(None),
        }
    }

    fn take_child(&self) -> Option<Child> {
        self.child.lock().ok().and_then(|mut c| c.take())
    }

    /// Diagnostics lines whose message is `message`, with their arrival times.
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

    /// The last 30 diagnostics lines, as text (for error messages).
    pub fn stderr_tail(&self) -> String {
        let lines = self.stderr.lock().map(|v| v.clone()).unwrap_or_default();
        let skip = lines.len().saturating_sub(30);
        lines[skip..]
            .iter()
            .map(|(_, l)| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until `message` was logged `count` times; returns the `count`-th. Fails early if the
    /// agent exits.
    pub fn wait_message(
        &self,
        message: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<(Instant, Value), AgentError> {
        let deadline = Instant::now() + timeout;
        loop {
            if (self.cancel)() {
                return Err(AgentError::Cancelled);
            }
            let m = self.messages(message);
            if let Some(line) = m.get(count.saturating_sub(1)) {
                return Ok(line.clone());
            }
            if let Some(status) = self.try_wait()? {
                let log = self.stderr_tail();
                return Err(AgentError::Exited { status, log });
            }
            if Instant::now() > deadline {
                let (message, log) = (message.to_owned(), self.stderr_tail());
                return Err(AgentError::Timeout {
                    message,
                    count,
                    timeout,
                    log,
                });
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Violation log lines so far, as printed.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// (VmRSS, VmHWM) in KiB, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> std::io::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    /// SIGTERM and wait for the exit (SIGKILL after 10 s); then the output readers finish. An
    /// unsuccessful exit is an error unless the cancel check holds (the agent got our Ctrl-C too).
    pub fn terminate(&self) -> Result<(), AgentError> {
        let Some(mut child) = self.take_child() else {
            return Ok(());
        };
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(AgentError::Wait)? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AgentError::StopTimeout(STOP_TIMEOUT));
            }
            thread::sleep(Duration::from_millis(10));
        };
        // The readers finish when the pipes close.
        thread::sleep(Duration::from_millis(150));
        if !status.success() && !(self.cancel)() {
            return Err(AgentError::Failed(status));
        }
        Ok(())
    }

    /// SIGKILL, as a crash or an OOM kill would: no shutdown code runs. Waits for the exit.
    pub fn kill(&self) {
        if let Some(mut child) = self.take_child() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(pid, sig) };
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            eprintln!("stopping firewall-agent: {e}");
        }
    }
}

/// Where an agent pins its state. The agent pins under `/sys/fs/bpf/bulkhead` unless told
/// otherwise, so every caller says which it means: a throwaway run must not leave programs
/// attached, nor adopt what an earlier run left.
#[derive(Clone, Copy, Debug)]
pub enum Pinning<'a> {
    /// `--no-pin`: stopping the agent detaches everything; nothing is left on the machine.
    Off,
    /// `--bpffs DIR`: enforcement outlives the agent; the caller removes `DIR` (`cleanup`).
    Dir(&'a Path),
    /// No flag: the agent's default directory, as an operator's plain `run` does.
    Default,
}

/// `firewall-agent --log-format json run --node-name NODE SOURCE... --cgroup-root ROOT` plus
/// the pinning flag, run through `wrapper` (e.g. `setpriv ... --`) when that is not empty;
/// callers append their flags.
pub fn agent_command(
    wrapper: &[String],
    bin: &Path,
    node: &str,
    source: &[&str],
    cgroup_root: &Path,
    pin: Pinning<'_>,
) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["--log-format", "json", "run", "--node-name", node])
        .args(source)
        .arg("--cgroup-root")
        .arg(cgroup_root);
    match pin {
        Pinning::Off => {
            cmd.arg("--no-pin");
        }
        Pinning::Dir(dir) => {
            cmd.arg("--bpffs").arg(dir);
        }
        Pinning::Default => {}
    }
    cmd
}

/// The `--source` argument for a `file:` source.
pub fn file_source(path: &Path) -> String {
    format!("file:{}", path.display())
}
