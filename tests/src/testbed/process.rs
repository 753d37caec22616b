//! Processes in pods: the echo servers, commands and probes run inside a pod's network
//! namespace and cgroup.
use super::*;

/// How long `up` waits for every pod's server to listen.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`Testbed::spawn_hold`] in progress.
#[derive(Debug)]
pub struct HoldHandle {
    pub(super) child: Child,
    pub(super) what: String,
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

/// A command that runs in cgroup `cgroup` and, if given, network namespace `netns`.
pub(super) fn command_in(
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

impl Testbed {
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
    pub(super) fn wait_ready(&self, servers: &[(String, PathBuf, usize)]) -> anyhow::Result<()> {
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

    pub(super) fn run_pod_binary(
        &self,
        from: Option<&str>,
        args: &[String],
    ) -> anyhow::Result<String> {
        let cmd = match from {
            Some(key) => self.pod_command(key, &self.pod_binary)?,
            None => Command::new(&self.pod_binary),
        };
        self.run_command(cmd, from.unwrap_or("the host"), args)
    }

    pub(super) fn run_command(
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

    pub(super) fn probe_impl(
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

    pub(super) fn matrix_family(&self, v6: bool, timeout: Duration) -> anyhow::Result<Matrix> {
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
}
