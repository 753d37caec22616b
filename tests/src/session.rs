//! `bulkhead-pod session`: one long-lived connection (TCP, or a connected UDP socket) that does
//! round trips to an echo server when told on stdin, so a test can change the policy, restart the
//! agent or switch IPv6 extension headers on between batches of round trips of the *same*
//! connection. The test's side is [`crate::testbed::Session`].
//!
//! Protocol (one line each way): after connecting the pod prints a [`SessionReply`] (`ok` 0;
//! `first_error` says why connecting failed); then for each command line it reads it prints one
//! reply:
//! - `rt N`: N round trips, each a message sent and its echo read back within the timeout;
//! - `ext hbh|dst|both|none`: sets the socket's sticky IPv6 extension headers (hop-by-hop and/or
//!   destination options, each 8 bytes of padding), which every later packet it sends carries;
//! - `quit` (or end of input): exits.
use std::{
    io::{self, BufRead as _, Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::scenario::Protocol;

/// One reply of a session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionReply {
    /// Round trips whose echo came back intact and in time.
    pub ok: u64,
    /// Round trips that failed (send error, timeout, short or wrong echo).
    pub failed: u64,
    /// The first failure (or why connecting or a command failed).
    pub first_error: Option<String>,
    /// The connection's local address, once connected.
    pub local: Option<SocketAddr>,
}

/// An 8-byte options-style extension header: next header and length (the kernel fills the next
/// header in), then one PadN option of 4 zero bytes.
const PADDED_EXT: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];

enum Conn {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

impl Conn {
    fn fd(&self) -> RawFd {
        match self {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Udp(s) => s.as_raw_fd(),
        }
    }
}

/// Runs a session to `addr` over `protocol`, reading commands from stdin until `quit` or EOF.
pub fn run(protocol: Protocol, addr: SocketAddr, ext: &str, timeout: Duration) {
    let mut reply = SessionReply::default();
    let conn = match connect(protocol, addr, ext, timeout) {
        Ok(c) => c,
        Err(e) => {
            reply.first_error = Some(format!("connect: {e}"));
            print(&reply);
            return;
        }
    };
    reply.local = local_addr(&conn);
    print(&reply);
    let mut session = Running {
        conn,
        seq: 0,
        broken: None,
        timeout,
    };
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { return };
        let mut words = line.split_whitespace();
        let reply = match (words.next(), words.next()) {
            (Some("rt"), Some(n)) => match n.parse::<u64>() {
                Ok(n) => session.round_trips(n),
                Err(e) => error_reply(format!("bad count {n}: {e}")),
            },
            (Some("ext"), Some(which)) => match set_ext(session.conn.fd(), which) {
                Ok(()) => SessionReply::default(),
                Err(e) => error_reply(format!("ext {which}: {e}")),
            },
            (Some("quit"), _) => return,
            _ => error_reply(format!("unknown command {line:?}")),
        };
        print(&reply);
    }
}

fn error_reply(what: String) -> SessionReply {
    SessionReply {
        failed: 1,
        first_error: Some(what),
        ..SessionReply::default()
    }
}

fn print(reply: &SessionReply) {
    if let Ok(s) = serde_json::to_string(reply) {
        println!("{s}");
        let _ = io::stdout().flush();
    }
}

fn local_addr(conn: &Conn) -> Option<SocketAddr> {
    match conn {
        Conn::Tcp(s) => s.local_addr().ok(),
        Conn::Udp(s) => s.local_addr().ok(),
    }
}

fn connect(protocol: Protocol, addr: SocketAddr, ext: &str, timeout: Duration) -> io::Result<Conn> {
    match protocol {
        Protocol::Tcp => {
            let domain = if addr.is_ipv4() {
                socket2::Domain::IPV4
            } else {
                socket2::Domain::IPV6
            };
            let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
            // Options set before connect() ride on the SYN already.
            if ext != "none" {
                set_ext(s.as_raw_fd(), ext)?;
            }
            s.connect_timeout(&addr.into(), timeout)?;
            Ok(Conn::Tcp(s.into()))
        }
        Protocol::Udp => {
            let local: SocketAddr = if addr.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            };
            let s = UdpSocket::bind(local)?;
            if ext != "none" {
                set_ext(s.as_raw_fd(), ext)?;
            }
            s.connect(addr)?;
            Ok(Conn::Udp(s))
        }
    }
}

/// Sets (or with `none`, clears) the sticky hop-by-hop and destination options headers.
fn set_ext(fd: RawFd, which: &str) -> io::Result<()> {
    let (hbh, dst) = match which {
        "none" => (false, false),
        "hbh" => (true, false),
        "dst" => (false, true),
        "both" => (true, true),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ext {other}: give hbh, dst, both or none"),
            ));
        }
    };
    for (name, on) in [(libc::IPV6_HOPOPTS, hbh), (libc::IPV6_DSTOPTS, dst)] {
        if which == "none" || on {
            let len = if on { PADDED_EXT.len() } else { 0 };
            // SAFETY: the option value is PADDED_EXT (or nothing) with its length.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IPV6,
                    name,
                    PADDED_EXT.as_ptr().cast(),
                    len as libc::socklen_t,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

struct Running {
    conn: Conn,
    seq: u64,
    /// Once a TCP round trip failed the byte stream may hold a late echo: later ones fail too.
    broken: Option<String>,
    timeout: Duration,
}

impl Running {
    fn round_trips(&mut self, n: u64) -> SessionReply {
        let mut reply = SessionReply {
            local: local_addr(&self.conn),
            ..SessionReply::default()
        };
        for _ in 0..n {
            self.seq += 1;
            let seq = self.seq;
            let r = match &self.broken {
                Some(why) => Err(io::Error::other(format!(
                    "connection broken earlier: {why}"
                ))),
                None => self.one(seq),
            };
            match r {
                Ok(()) => reply.ok += 1,
                Err(e) => {
                    let what = format!("round trip #{seq}: {e}");
                    if matches!(self.conn, Conn::Tcp(_)) && self.broken.is_none() {
                        self.broken = Some(what.clone());
                    }
                    reply.failed += 1;
                    reply.first_error.get_or_insert(what);
                }
            }
        }
        reply
    }

    fn one(&mut self, seq: u64) -> io::Result<()> {
        let msg = format!("session {seq:016}\n").into_bytes();
        let start = Instant::now();
        let left = || {
            self.timeout
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(1))
        };
        match &mut self.conn {
            Conn::Tcp(s) => {
                s.set_write_timeout(Some(left()))?;
                s.write_all(&msg)?;
                s.set_read_timeout(Some(left()))?;
                let mut buf = vec![0u8; msg.len()];
                s.read_exact(&mut buf)?;
                if buf != msg {
                    return Err(io::Error::other("echo mismatch"));
                }
                Ok(())
            }
            Conn::Udp(s) => {
                s.send(&msg)?;
                let mut buf = [0u8; 1024];
                loop {
                    s.set_read_timeout(Some(left()))?;
                    let n = s.recv(&mut buf)?;
                    // A late echo of an earlier, timed-out round trip is skipped.
                    if buf[..n] == msg[..] {
                        return Ok(());
                    }
                    if start.elapsed() >= self.timeout {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "no echo"));
                    }
                }
            }
        }
    }
}
