//! Probes from inside pods (`bulkhead-pod connect | ping | storm | hold`): connection outcomes as the
//! firewall leaves them, one pod, one target or the whole pod x pod x port matrix.
use std::{
    net::IpAddr,
    path::Path,
    process::{Child, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{Testbed, process::command_in, process::ensure_success};
use crate::probe::{
    HoldReport, Matrix, MatrixColumn, PingResult, ProbeResult, StormReport, Target,
};

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
        let stdout = ensure_success(out, &what)?;
        let text = String::from_utf8_lossy(&stdout);
        serde_json::from_str(text.trim()).with_context(|| format!("bad {what} output: {text}"))
    }
}

/// `connect --timeout-ms T --tcp|--udp ADDR...` for `bulkhead-pod`.
fn connect_args(targets: &[Target], timeout: Duration) -> Vec<String> {
    let mut args = vec![
        "connect".to_owned(),
        "--timeout-ms".to_owned(),
        timeout.as_millis().to_string(),
    ];
    for t in targets {
        args.push(t.flag().to_owned());
        args.push(t.addr().to_string());
    }
    args
}

impl Testbed {
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
        let args = connect_args(&[target], timeout);
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
        let out = self.run_pod_binary(from, &connect_args(targets, timeout))?;
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

    /// Runs `bulkhead-pod COMMAND ARGS... --timeout-ms T` in pod `from`; its one JSON report.
    fn pod_report<T: serde::de::DeserializeOwned>(
        &self,
        from: &str,
        command: &str,
        args: &[String],
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let mut argv = vec![command.to_owned()];
        argv.extend_from_slice(args);
        argv.extend(["--timeout-ms".to_owned(), timeout.as_millis().to_string()]);
        let out = self.run_pod_binary(Some(from), &argv)?;
        serde_json::from_str(out.trim()).with_context(|| format!("bad {command} output: {out}"))
    }

    /// One ICMP (IPv4) or ICMPv6 echo request from pod `from` to `ip`, from a raw socket.
    pub fn ping(&self, from: &str, ip: IpAddr, timeout: Duration) -> anyhow::Result<PingResult> {
        self.pod_report(from, "ping", &[ip.to_string()], timeout)
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
        let args = [
            "--tcp".to_owned(),
            target.addr().to_string(),
            "--count".to_owned(),
            count.to_string(),
        ];
        self.pod_report(from, "storm", &args, timeout)
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
        for (pod, spec) in self.pods.iter().zip(&self.scenario.pods) {
            for p in &spec.serve {
                let ip = match (v6, pod.ipv6) {
                    (true, Some(a)) => IpAddr::V6(a),
                    _ => IpAddr::V4(pod.ipv4),
                };
                columns.push(MatrixColumn {
                    pod: pod.key.clone(),
                    target: Target {
                        ip,
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
}
