//! What every stage shares: tools, binaries, the machine description, the testbed and its
//! workloads (iperf3, request/response), and sysctl guards.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, bail};
use bulkhead_tests::{Options, Scenario, Testbed};
use serde_json::{Value, json};

use super::{interrupt, report::progress};
use crate::util::{build_bins_command, target_dir};

/// The testbed scenario: subnet 40, names starting with `bench`; dual-stack, because the `floor`
/// stage measures IPv6 as well (the other stages use the IPv4 addresses).
const SCENARIO: &str = r#"
name: bench
nodeName: node-1
subnet: 40
ipv6: true
namespaces:
  - {name: bench-a}
  - {name: bench-b}
  - {name: bench-x}
pods:
  - {name: client, namespace: bench-a, labels: {app: client}}
  - {name: server, namespace: bench-b, labels: {app: server}, serve: [{protocol: TCP, port: 7000}, {protocol: UDP, port: 7000}]}
  - {name: intruder, namespace: bench-x, labels: {app: intruder}}
services: []
objects: []
"#;

/// The client pod (`bench-a`), allowed to reach the server.
pub const CLIENT: &str = "bench-a/client";
/// The server pod (`bench-b`): echo on [`ECHO_PORT`], iperf3 on [`IPERF_PORT`].
pub const SERVER: &str = "bench-b/server";
/// The intruder pod (`bench-x`), denied everywhere across namespaces.
pub const INTRUDER: &str = "bench-x/intruder";
/// The server's echo port (TCP and UDP).
pub const ECHO_PORT: u16 = 7000;
/// The server's iperf3 port.
pub const IPERF_PORT: u16 = 5201;

/// The binaries the benchmark runs (release builds).
pub struct Bins {
    /// `firewall-agent`.
    pub agent: PathBuf,
    /// `bulkhead-pod`.
    pub pod: PathBuf,
    /// The `bench-floor` eBPF object (reference programs of the `floor` stage), built beside the
    /// agent's own object by firewall-agent's build.rs.
    pub floor: PathBuf,
}

/// Installs iperf3, iptables and bpftool with apt-get when missing.
pub fn ensure_tools() -> anyhow::Result<()> {
    let wanted = [
        ("iperf3", "iperf3"),
        ("iptables", "iptables"),
        ("iptables-restore", "iptables"),
        ("bpftool", "bpftool"),
    ];
    let mut missing: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| !on_path(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    progress(&format!(
        "installing missing packages: {}",
        missing.join(" ")
    ));
    let ok = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("running apt-get update")?
        .success();
    if !ok {
        bail!("apt-get update failed");
    }
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?
        .success();
    if !ok {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(bin).is_file())
}

/// Builds the agent and the pod binary in release mode.
pub fn build() -> anyhow::Result<Bins> {
    progress("building firewall-agent and bulkhead-pod (release)");
    let out_dir = agent_out_dir()?;
    let dir = target_dir()?.join("release");
    let bins = Bins {
        agent: dir.join("firewall-agent"),
        pod: dir.join("bulkhead-pod"),
        floor: out_dir.join("bench-floor"),
    };
    for b in [&bins.agent, &bins.pod, &bins.floor] {
        if !b.is_file() {
            bail!("{} missing after the build", b.display());
        }
    }
    Ok(bins)
}

/// Runs the release build and returns firewall-agent's build-script `OUT_DIR`, where aya-build
/// leaves every eBPF object it built: cargo names it in its JSON messages (even when nothing was
/// rebuilt), so the bench never guesses among stale `target/release/build/firewall-agent-*`.
fn agent_out_dir() -> anyhow::Result<PathBuf> {
    let out = build_bins_command(true)
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("build failed ({})", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "build-script-executed")
        .filter(|m| {
            m["package_id"]
                .as_str()
                .is_some_and(|id| id.contains("firewall-agent"))
        })
        .find_map(|m| m["out_dir"].as_str().map(PathBuf::from))
        .context("cargo reported no build script output for firewall-agent")
}

/// Kernel, CPU model and count, memory, and the sysctls that change the measured path.
pub fn machine() -> Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    json!({
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpu_model": cpu_model,
        "cpus": cpus,
        "mem_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "bridge_nf_call_iptables": read("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        "iperf3": first_line(Command::new("iperf3").arg("--version")),
        "iptables": first_line(Command::new("iptables").arg("--version")),
    })
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}

/// The running testbed and what the stages need around it.
pub struct Env {
    /// The simulated node.
    pub tb: Testbed,
    /// The binaries.
    pub agent_bin: PathBuf,
    /// `bulkhead-pod`.
    pub pod_bin: PathBuf,
    /// The `bench-floor` eBPF object.
    pub floor_obj: PathBuf,
    /// Scratch directory (sources, logs); removed by [`Env::down`].
    pub dir: PathBuf,
    iperf_server: Option<Child>,
}

impl Env {
    /// Brings the testbed up and starts the iperf3 server in the server pod.
    pub fn up(bins: &Bins) -> anyhow::Result<Env> {
        interrupt::check()?;
        progress(
            "testbed up: 3 pods (bench-a/client, bench-b/server, bench-x/intruder) on 198.18.40.0/24",
        );
        let scenario = Scenario::parse(SCENARIO).context("bench scenario")?;
        let tb = Testbed::up(
            &scenario,
            &Options {
                pod_binary: bins.pod.clone(),
            },
        )?;
        let dir = std::env::temp_dir().join(format!("bulkhead-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut env = Env {
            tb,
            agent_bin: bins.agent.clone(),
            pod_bin: bins.pod.clone(),
            floor_obj: bins.floor.clone(),
            dir,
            iperf_server: None,
        };
        let log = std::fs::File::create(env.dir.join("iperf3-server.log"))?;
        let child = env
            .tb
            .pod_command(SERVER, "iperf3")?
            .args(["-s", "-p", &IPERF_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the iperf3 server in the server pod")?;
        env.iperf_server = Some(child);
        std::thread::sleep(std::time::Duration::from_millis(300));
        Ok(env)
    }

    /// Addresses of the pods.
    pub fn info(&self) -> Value {
        json!({
            "scenario": self.tb.name(),
            "pods": self.tb.pods().iter().map(|p| json!({
                "pod": p.key, "ip": p.ipv4.to_string(), "ipv6": p.ipv6.map(|a| a.to_string()),
            })).collect::<Vec<_>>(),
        })
    }

    /// The pod's IPv4 address.
    pub fn ip(&self, pod: &str) -> anyhow::Result<Ipv4Addr> {
        self.tb.pod_ipv4(pod)
    }

    /// Stops the iperf3 server, removes the testbed and the scratch directory.
    pub fn down(mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.iperf_server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        progress("testbed down");
        self.tb.down()
    }

    /// Runs `program args` inside pod `pod`, returns stdout (fails on a non-zero exit).
    pub fn run_in(&self, pod: &str, program: &Path, args: &[String]) -> anyhow::Result<String> {
        interrupt::check()?;
        let out = self
            .tb
            .pod_command(pod, program)?
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} in {pod}", program.display()))?;
        interrupt::check()?;
        if !out.status.success() {
            bail!(
                "`{} {}` in {pod} failed ({}): {}{}",
                program.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        String::from_utf8(out.stdout).context("output is not UTF-8")
    }

    /// `bulkhead-pod ARGS` in `pod`, parsed as one JSON object.
    pub fn pod_json(&self, pod: &str, args: &[String]) -> anyhow::Result<Value> {
        let out = self.run_in(pod, &self.pod_bin, args)?;
        serde_json::from_str(out.trim()).with_context(|| format!("bad bulkhead-pod output: {out}"))
    }

    /// iperf3 client -> server for `secs` seconds (plus one omitted); received Gbit/s.
    pub fn iperf(&self, secs: u32) -> anyhow::Result<f64> {
        self.iperf_to(IpAddr::V4(self.ip(SERVER)?), false, secs)
    }

    /// iperf3 client -> `server` (one of the server pod's addresses), TCP or UDP (`-b 0`: as fast
    /// as the client can send, in 1,200-byte datagrams so that no IPv6 datagram is fragmented),
    /// for `secs` seconds plus one omitted; received Gbit/s.
    pub fn iperf_to(&self, server: IpAddr, udp: bool, secs: u32) -> anyhow::Result<f64> {
        let mut args: Vec<String> = [
            "-c",
            &server.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &secs.to_string(),
            "-O",
            "1",
            "-J",
            "--connect-timeout",
            "3000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if udp {
            args.extend(["-u", "-b", "0", "-l", "1200"].map(String::from));
        }
        let out = self.run_in(CLIENT, Path::new("iperf3"), &args);
        let out = match out {
            Ok(o) => o,
            // The server may still be finishing the previous test: one retry.
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(500));
                self.run_in(CLIENT, Path::new("iperf3"), &args)?
            }
        };
        let v: Value = serde_json::from_str(&out).context("iperf3 -J output")?;
        if let Some(e) = v["error"].as_str() {
            bail!("iperf3: {e}");
        }
        // TCP reports what the server received; iperf3's UDP summary is `end.sum`.
        let end = &v["end"];
        end["sum_received"]["bits_per_second"]
            .as_f64()
            .or_else(|| end["sum"]["bits_per_second"].as_f64())
            .map(|b| b / 1e9)
            .context("iperf3 output without end.sum_received or end.sum bits_per_second")
    }

    /// Request/response from the client to the server's echo port: `connect-each` or `pingpong`.
    pub fn rr(&self, mode: &str, n: u64) -> anyhow::Result<Value> {
        self.rr_to(IpAddr::V4(self.ip(SERVER)?), "tcp", mode, n)
    }

    /// Request/response from the client to `server`'s echo port over `proto` (`tcp` or `udp`;
    /// UDP only ping-pongs): `connect-each` or `pingpong`.
    pub fn rr_to(&self, server: IpAddr, proto: &str, mode: &str, n: u64) -> anyhow::Result<Value> {
        let v = self.pod_json(
            CLIENT,
            &[
                "rr".into(),
                format!("--{proto}"),
                std::net::SocketAddr::new(server, ECHO_PORT).to_string(),
                format!("--{mode}"),
                n.to_string(),
            ],
        )?;
        if v["errors"].as_u64().unwrap_or(0) > 0 {
            bail!(
                "{proto} {mode} to {server}: {} of {n} requests failed (first: {})",
                v["errors"],
                v["first_error"]
            );
        }
        Ok(v)
    }
}

/// Sets a sysctl (a path under /proc/sys) and restores the old value on drop.
pub struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    /// Writes `value` to `/proc/sys/<name with dots as slashes>`, remembering the old value.
    pub fn set(name: &str, value: &str) -> anyhow::Result<Sysctl> {
        let path = Path::new("/proc/sys").join(name.replace('.', "/"));
        let old = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_owned();
        std::fs::write(&path, value).with_context(|| format!("setting {name}={value}"))?;
        Ok(Sysctl { path, old })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.old) {
            eprintln!(
                "bench: could not restore {} to {}: {e}",
                self.path.display(),
                self.old
            );
        }
    }
}
