//! What a probe measures, shared by the `bulkhead-pod` binary (which prints it as JSON lines) and the
//! testbed library (which parses it), so both sides agree on one schema.
use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use crate::scenario::Protocol;

/// A destination to probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// Destination address (a pod, the node, a cluster IP, anything).
    pub ip: IpAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
}

impl Target {
    /// A TCP target.
    pub fn tcp(ip: impl Into<IpAddr>, port: u16) -> Target {
        Target {
            ip: ip.into(),
            protocol: Protocol::Tcp,
            port,
        }
    }

    /// A UDP target.
    pub fn udp(ip: impl Into<IpAddr>, port: u16) -> Target {
        Target {
            ip: ip.into(),
            protocol: Protocol::Udp,
            port,
        }
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// The `bulkhead-pod` flag for it (`--tcp` / `--udp`).
    pub fn flag(&self) -> &'static str {
        match self.protocol {
            Protocol::Tcp => "--tcp",
            Protocol::Udp => "--udp",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.protocol)
    }
}

/// How one connection attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Connected and the echo came back.
    Ok,
    /// ECONNREFUSED: nothing listens (TCP RST or ICMP port unreachable).
    Refused,
    /// EPERM / EACCES: the firewall refused at the syscall.
    Denied,
    /// No answer within the timeout (a silent drop).
    Timeout,
    /// Anything else (see `errno`).
    Error,
}

impl Outcome {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Denied => "denied",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }

    /// The one-character matrix symbol.
    pub fn symbol(self) -> char {
        match self {
            Outcome::Ok => '.',
            Outcome::Refused => 'R',
            Outcome::Denied => 'X',
            Outcome::Timeout => 'T',
            Outcome::Error => 'E',
        }
    }

    /// Classifies an OS error the way the firewall tests care about.
    pub fn from_errno(errno: i32) -> Outcome {
        match errno {
            libc::EPERM | libc::EACCES => Outcome::Denied,
            libc::ECONNREFUSED => Outcome::Refused,
            libc::ETIMEDOUT | libc::EAGAIN | libc::EINPROGRESS => Outcome::Timeout,
            _ => Outcome::Error,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets tests write `assert_eq!(r.result, "ok")`.
impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One line of `bulkhead-pod connect` output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// `ip:port` (IPv6 in brackets).
    pub target: SocketAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// How it ended.
    pub result: Outcome,
    /// Milliseconds from the first syscall to the outcome.
    pub ms: f64,
    /// The OS error, if one decided the outcome.
    pub errno: Option<i32>,
}

/// The output of `bulkhead-pod ping`: one ICMP (IPv4) or ICMPv6 echo request from a raw socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PingResult {
    /// The address pinged.
    pub target: IpAddr,
    /// `ok` when the echo reply came back, `denied` when the send failed with EPERM (dropped at
    /// the source), `timeout` when no reply came.
    pub result: Outcome,
    /// Milliseconds from the send to the outcome.
    pub ms: f64,
    /// The OS error, if one decided the outcome.
    pub errno: Option<i32>,
}

/// The output of `bulkhead-pod storm`: many sequential connection attempts, counted by outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StormReport {
    /// `ip:port`.
    pub target: SocketAddr,
    /// Always TCP for now.
    pub protocol: Protocol,
    /// Attempts made.
    pub attempts: u64,
    /// Wall time of the whole storm.
    pub ms: f64,
    /// Attempts by outcome (`"ok"`, `"denied"`, ...); absent outcomes are absent keys.
    pub results: BTreeMap<String, u64>,
}

impl StormReport {
    /// Attempts that ended with `outcome` (0 if none).
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.results.get(outcome.as_str()).copied().unwrap_or(0)
    }
}

/// The output of `bulkhead-pod hold`: one long-lived connection doing ping-pong.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoldReport {
    /// `ip:port`.
    pub target: SocketAddr,
    /// Round trips whose echo came back intact and in time.
    pub ok: u64,
    /// Round trips that failed (timeout, reset, short echo).
    pub failed: u64,
    /// How often the connection had to be re-opened after it broke.
    pub reconnects: u64,
    /// Whether any round trip ever failed (the thing reliability tests assert is false).
    pub broke: bool,
    /// The first failure, for the assertion message.
    pub first_error: Option<String>,
    /// Wall time.
    pub ms: f64,
}

/// One column of a [`Matrix`]: a destination pod and one port it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixColumn {
    /// `namespace/name` of the destination pod.
    pub pod: String,
    /// The probed target (the pod's IPv4 address and port).
    pub target: Target,
}

/// Reachability of every (pod, pod, served port), as cyclonus prints it.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    /// Source pods (`namespace/name`), one row each.
    pub rows: Vec<String>,
    /// Destination pod ports.
    pub columns: Vec<MatrixColumn>,
    /// `cells[row][column]`.
    pub cells: Vec<Vec<ProbeResult>>,
}

impl Matrix {
    /// The outcome from `from` to `to` (both `namespace/name`) on `protocol`/`port`.
    pub fn get(&self, from: &str, to: &str, protocol: Protocol, port: u16) -> Option<Outcome> {
        let r = self.rows.iter().position(|p| p == from)?;
        let c = self
            .columns
            .iter()
            .position(|c| c.pod == to && c.target.protocol == protocol && c.target.port == port)?;
        Some(self.cells.get(r)?.get(c)?.result)
    }

    /// Counts of each outcome over the whole matrix.
    pub fn summary(&self) -> BTreeMap<Outcome, usize> {
        let mut m = BTreeMap::new();
        for cell in self.cells.iter().flatten() {
            *m.entry(cell.result).or_default() += 1;
        }
        m
    }
}

impl fmt::Display for Matrix {
    /// Rows = from, columns = to:port, one symbol per cell; column headers are numbered and
    /// listed first so that the grid stays narrow however long the names are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "columns (to):")?;
        for (i, c) in self.columns.iter().enumerate() {
            writeln!(
                f,
                "  {:>3}  {}:{}/{}  ({})",
                i + 1,
                c.pod,
                c.target.port,
                c.target.protocol,
                c.target.addr()
            )?;
        }
        let w = self.rows.iter().map(String::len).max().unwrap_or(4).max(9);
        write!(f, "{:<w$} ", "from \\ to")?;
        for i in 0..self.columns.len() {
            write!(f, "{:>4}", i + 1)?;
        }
        writeln!(f)?;
        for (r, row) in self.rows.iter().enumerate() {
            write!(f, "{row:<w$} ")?;
            for cell in self.cells.get(r).into_iter().flatten() {
                write!(f, "{:>4}", cell.result.symbol())?;
            }
            writeln!(f)?;
        }
        write!(
            f,
            "legend: . ok   R refused   X denied (EPERM)   T timeout   E error"
        )?;
        let s = self.summary();
        let parts: Vec<String> = s.iter().map(|(o, n)| format!("{o} {n}")).collect();
        write!(f, "\ntotal: {}", parts.join(", "))
    }
}
