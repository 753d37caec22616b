//! What the datapath fast-path tests drive: long-lived sessions inside pods
//! ([`crate::session`]), jumbo pod links, frames injected below a pod's IP stack and the pod-side
//! sniffer ([`crate::frames`]).
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    process::{Child, ChildStdin, ChildStdout, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    Testbed,
    network::{run, sysctl_in},
};
use crate::{
    frames::{self, SniffReport},
    scenario::Protocol,
    session::SessionReply,
};

/// A `bulkhead-pod session` running in a pod: one connection, round trips on command.
#[derive(Debug)]
pub struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    what: String,
    /// The reply to connecting (`first_error` set when it failed).
    pub opened: SessionReply,
}

impl Session {
    fn command(&mut self, line: &str) -> anyhow::Result<SessionReply> {
        writeln!(self.stdin, "{line}").with_context(|| format!("writing to {}", self.what))?;
        self.stdin.flush().context("flush")?;
        self.reply()
    }

    fn reply(&mut self) -> anyhow::Result<SessionReply> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .with_context(|| format!("reading {}", self.what))?;
        if n == 0 {
            bail!("{} exited", self.what);
        }
        serde_json::from_str(line.trim())
            .with_context(|| format!("bad {} reply: {line}", self.what))
    }

    /// `n` round trips on the connection.
    pub fn round_trips(&mut self, n: u64) -> anyhow::Result<SessionReply> {
        self.command(&format!("rt {n}"))
    }

    /// Sets the connection's sticky IPv6 extension headers (`hbh`, `dst`, `both` or `none`).
    pub fn ext_headers(&mut self, which: &str) -> anyhow::Result<()> {
        let r = self.command(&format!("ext {which}"))?;
        match r.first_error {
            Some(e) => bail!("{}: {e}", self.what),
            None => Ok(()),
        }
    }

    /// What the session is (`session POD -> PROTO ADDR`), for messages.
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `bulkhead-pod sniff` running in a pod.
#[derive(Debug)]
pub struct SniffHandle {
    child: Child,
    what: String,
}

impl SniffHandle {
    /// Waits for the sniffer's end and returns its report.
    pub fn wait(self) -> anyhow::Result<SniffReport> {
        let what = self.what;
        let out = self
            .child
            .wait_with_output()
            .with_context(|| format!("waiting for {what}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let report = text
            .lines()
            .rfind(|l| l.starts_with('{'))
            .with_context(|| format!("no report from {what}: {text}"))?;
        serde_json::from_str(report).with_context(|| format!("bad {what} output: {text}"))
    }
}

impl Testbed {
    /// Opens a session from pod `from` to `addr` (`ext`: extension headers from the first packet
    /// on, as [`Session::ext_headers`] names them). Returns once the connection is open or failed.
    pub fn session(
        &self,
        from: &str,
        protocol: Protocol,
        addr: SocketAddr,
        ext: &str,
        timeout: Duration,
    ) -> anyhow::Result<Session> {
        let mut cmd = self.pod_command(from, &self.pod_binary)?;
        cmd.arg("session")
            .arg(match protocol {
                Protocol::Tcp => "--tcp",
                Protocol::Udp => "--udp",
            })
            .arg(addr.to_string())
            .args(["--ext", ext])
            .args(["--timeout-ms", &timeout.as_millis().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting session in {from}"))?;
        let stdin = child.stdin.take().context("session stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("session stdout")?);
        let mut s = Session {
            child,
            stdin,
            stdout,
            what: format!("session {from} -> {protocol} {addr}"),
            opened: SessionReply::default(),
        };
        s.opened = s.reply()?;
        Ok(s)
    }

    /// Raises pod `key`'s link (both veth ends) to `mtu` and turns early demux off in its network
    /// namespace, so that a frame injected with [`Testbed::inject`] reaches a raw socket with its
    /// transport header still outside the skb's linear area.
    pub fn jumbo_link(&self, key: &str, mtu: u32) -> anyhow::Result<()> {
        let pod = self.pod(key)?;
        let (Some(ns), Some(link)) = (&pod.netns, &pod.host_link) else {
            bail!("{key} has no veth (hostNetwork)");
        };
        let mtu = mtu.to_string();
        run(&["ip", "link", "set", link, "mtu", &mtu])?;
        run(&["ip", "-n", ns, "link", "set", "eth0", "mtu", &mtu])?;
        sysctl_in(
            ns,
            &[
                "net.ipv4.ip_early_demux=0",
                "net.ipv4.udp_early_demux=0",
                "net.ipv4.tcp_early_demux=0",
            ],
        )
    }

    /// The MAC addresses of pod `key`'s link: (its `eth0`, the host end).
    pub fn pod_macs(&self, key: &str) -> anyhow::Result<([u8; 6], [u8; 6])> {
        let pod = self.pod(key)?;
        let (Some(ns), Some(link)) = (&pod.netns, &pod.host_link) else {
            bail!("{key} has no veth (hostNetwork)");
        };
        let out = std::process::Command::new("ip")
            .args(["-n", ns, "-j", "link", "show", "dev", "eth0"])
            .output()
            .context("ip link show")?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("ip -j link show output")?;
        let inner = v[0]["address"].as_str().context("no eth0 address")?;
        let outer = std::fs::read_to_string(format!("/sys/class/net/{link}/address"))
            .with_context(|| format!("address of {link}"))?;
        Ok((parse_mac(inner)?, parse_mac(outer.trim())?))
    }

    /// Sends `frames` into pod `key` from the host end of its veth (`AF_PACKET`), below its IP
    /// stack and below every program of the sending side.
    pub fn inject(&self, key: &str, frames: &[Vec<u8>]) -> anyhow::Result<()> {
        let pod = self.pod(key)?;
        let link = pod.host_link.as_deref().context("no host link")?;
        frames::inject(link, frames).with_context(|| format!("injecting frames on {link}"))
    }

    /// Starts `bulkhead-pod sniff` in pod `key` on UDP `port` for `duration`; returns once its
    /// sockets are open.
    pub fn spawn_sniff(
        &self,
        key: &str,
        port: u16,
        duration: Duration,
    ) -> anyhow::Result<SniffHandle> {
        let mut cmd = self.pod_command(key, &self.pod_binary)?;
        cmd.arg("sniff")
            .args(["--port", &port.to_string()])
            .args(["--duration-ms", &duration.as_millis().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting sniff in {key}"))?;
        let mut stdout = BufReader::new(child.stdout.take().context("sniff stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).context("sniff READY")?;
        if line.trim() != "READY" {
            bail!("sniff in {key} did not start: {line}");
        }
        child.stdout = Some(stdout.into_inner());
        Ok(SniffHandle {
            child,
            what: format!("sniff in {key} on UDP {port}"),
        })
    }
}

fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("bad MAC {s}");
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {s}"))?;
    }
    Ok(mac)
}
