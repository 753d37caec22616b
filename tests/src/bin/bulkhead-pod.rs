//! `bulkhead-pod`: the one program a simulated pod runs.
//!
//! `serve` is the pod's workload (TCP and UDP echo); `connect`, `ping`, `storm`, `hold`, `session`
//! and `sniff` are the probes a test runs *inside* a pod's network namespace and cgroup, because
//! the firewall identifies pods by the cgroup of the socket. Results are JSON lines on stdout (see `bulkhead_tests::probe`).
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bulkhead_tests::{
    probe::{HoldReport, Outcome, ProbeResult, StormReport},
    scenario::Protocol,
};
use clap::{Parser, Subcommand};

/// Pod workload and in-pod probes for the Bulkhead testbed.
#[derive(Parser)]
#[command(name = "bulkhead-pod")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo server: TCP (echoes until EOF) and UDP (one echo per datagram). Prints READY once every
    /// listener is bound.
    Serve {
        /// TCP ports to listen on.
        #[arg(long = "tcp")]
        tcp: Vec<u16>,
        /// UDP ports to listen on.
        #[arg(long = "udp")]
        udp: Vec<u16>,
        /// Addresses to bind (default: [::] dual-stack).
        #[arg(long = "bind")]
        bind: Vec<IpAddr>,
    },
    /// One attempt per target, concurrently; one JSON line per target (TCP targets first).
    Connect {
        /// TCP targets (ip:port, IPv6 in brackets).
        #[arg(long = "tcp")]
        tcp: Vec<SocketAddr>,
        /// UDP targets.
        #[arg(long = "udp")]
        udp: Vec<SocketAddr>,
        /// Per-target budget for connect + echo.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// One ICMP/ICMPv6 echo request from a raw socket; one JSON line.
    Ping {
        /// The address to ping.
        ip: IpAddr,
        /// Budget for the reply.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Sequential TCP connect attempts as fast as possible; prints counts by outcome.
    Storm {
        /// The target.
        #[arg(long)]
        tcp: SocketAddr,
        /// Number of attempts.
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Per-attempt timeout.
        #[arg(long, default_value_t = 200)]
        timeout_ms: u64,
    },
    /// One long-lived TCP connection doing ping-pong every interval; prints whether it ever broke.
    Hold {
        /// The target.
        #[arg(long)]
        tcp: SocketAddr,
        /// Pause between round trips.
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
        /// How long to keep going.
        #[arg(long, default_value_t = 5000)]
        duration_ms: u64,
        /// Budget for one round trip (and for a reconnect).
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Request/response latency to a TCP echo server (benchmarks): either a new connection per
    /// request (`--connect-each N`: connect, send, read the echo, close with RST so that no
    /// TIME_WAIT piles up) or one connection doing `--pingpong N` round trips. Prints one JSON
    /// object with percentiles in microseconds and the request rate. With `--udp` instead of
    /// `--tcp`: `--pingpong N` datagram round trips on one connected UDP socket (the UDP flow the
    /// firewall tracks), since UDP has no connection to open per request.
    Rr {
        /// The TCP echo server.
        #[arg(long, conflicts_with = "udp", required_unless_present = "udp")]
        tcp: Option<SocketAddr>,
        /// The UDP echo server (with `--pingpong` only).
        #[arg(long, conflicts_with = "connect_each", requires = "pingpong")]
        udp: Option<SocketAddr>,
        /// Requests, each on a new connection.
        #[arg(
            long,
            conflicts_with = "pingpong",
            required_unless_present = "pingpong"
        )]
        connect_each: Option<u64>,
        /// Round trips on one connection.
        #[arg(long)]
        pingpong: Option<u64>,
        /// Request size in bytes (at most 1024: the echo server's buffer).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Unmeasured requests first (connection setup, caches).
        #[arg(long, default_value_t = 50)]
        warmup: u64,
        /// Budget for one request.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// One long-lived connection doing round trips when told on stdin (`rt N`, `ext hbh|dst|both|none`,
    /// `quit`); one JSON reply per command (see `bulkhead_tests::session`).
    Session {
        /// A TCP echo server.
        #[arg(long, conflicts_with = "udp", required_unless_present = "udp")]
        tcp: Option<SocketAddr>,
        /// A UDP echo server (a connected UDP socket).
        #[arg(long)]
        udp: Option<SocketAddr>,
        /// IPv6 extension headers from the first packet on: hbh, dst, both or none.
        #[arg(long, default_value = "none")]
        ext: String,
        /// Budget for connecting and for one round trip.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Counts UDP datagrams to a port on raw sockets and on a bound UDP socket; prints READY once
    /// they are open, then one JSON report at the end.
    Sniff {
        /// The UDP port.
        #[arg(long)]
        port: u16,
        /// How long to listen.
        #[arg(long, default_value_t = 3000)]
        duration_ms: u64,
    },
    /// Sequential TCP connect attempts cycling over `--ports` consecutive destination ports (each
    /// port is a separate flow for the firewall's per-flow folding); prints counts by outcome.
    Flood {
        /// Destination address.
        #[arg(long)]
        ip: IpAddr,
        /// First destination port.
        #[arg(long)]
        port_from: u16,
        /// How many consecutive ports to cycle over.
        #[arg(long, default_value_t = 1)]
        ports: u16,
        /// Number of attempts.
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Per-attempt timeout.
        #[arg(long, default_value_t = 200)]
        timeout_ms: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Serve { tcp, udp, bind } => serve(&tcp, &udp, &bind),
        Cmd::Connect {
            tcp,
            udp,
            timeout_ms,
        } => {
            connect(&tcp, &udp, Duration::from_millis(timeout_ms.max(1)));
            Ok(())
        }
        Cmd::Ping { ip, timeout_ms } => {
            print_json(&bulkhead_tests::ping::ping(
                ip,
                Duration::from_millis(timeout_ms.max(1)),
            ));
            Ok(())
        }
        Cmd::Storm {
            tcp,
            count,
            timeout_ms,
        } => {
            print_json(&storm(tcp, count, Duration::from_millis(timeout_ms.max(1))));
            Ok(())
        }
        Cmd::Hold {
            tcp,
            interval_ms,
            duration_ms,
            timeout_ms,
        } => {
            print_json(&hold(
                tcp,
                Duration::from_millis(interval_ms),
                Duration::from_millis(duration_ms),
                Duration::from_millis(timeout_ms.max(1)),
            ));
            Ok(())
        }
        Cmd::Rr {
            tcp,
            udp,
            connect_each,
            pingpong,
            size,
            warmup,
            timeout_ms,
        } => {
            let plan = |n| RrPlan {
                n,
                size: size.clamp(1, 1024),
                warmup,
                timeout: Duration::from_millis(timeout_ms.max(1)),
            };
            let report = match (tcp, udp, connect_each, pingpong) {
                (_, Some(addr), _, Some(n)) => rr_udp_pingpong(addr, &plan(n))?,
                (Some(addr), _, Some(n), _) => rr_connect_each(addr, &plan(n)),
                (Some(addr), _, None, Some(n)) => rr_pingpong(addr, &plan(n))?,
                _ => anyhow::bail!(
                    "give --tcp ADDR with --connect-each N or --pingpong N, or --udp ADDR --pingpong N"
                ),
            };
            print_json(&report);
            Ok(())
        }
        Cmd::Session {
            tcp,
            udp,
            ext,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms.max(1));
            match (tcp, udp) {
                (Some(a), _) => bulkhead_tests::session::run(Protocol::Tcp, a, &ext, timeout),
                (None, Some(a)) => bulkhead_tests::session::run(Protocol::Udp, a, &ext, timeout),
                (None, None) => anyhow::bail!("give --tcp ADDR or --udp ADDR"),
            }
            Ok(())
        }
        Cmd::Sniff { port, duration_ms } => {
            print_json(&bulkhead_tests::frames::sniff(
                port,
                Duration::from_millis(duration_ms),
            ));
            Ok(())
        }
        Cmd::Flood {
            ip,
            port_from,
            ports,
            count,
            timeout_ms,
        } => {
            print_json(&flood(
                ip,
                port_from,
                ports.max(1),
                count,
                Duration::from_millis(timeout_ms.max(1)),
            ));
            Ok(())
        }
    }
}

fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cannot serialize result: {e}"),
    }
}

// ---------- serve ----------

/// Serves one bound socket until it fails.
type ServeSocket = fn(OwnedFd);

fn serve(tcp: &[u16], udp: &[u16], bind: &[IpAddr]) -> anyhow::Result<()> {
    let binds: Vec<IpAddr> = if bind.is_empty() {
        vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
    } else {
        bind.to_vec()
    };
    // Per protocol: its ports, socket type, and the loop that serves one bound socket.
    let protocols: [(&str, &[u16], libc::c_int, ServeSocket); 2] = [
        ("TCP", tcp, libc::SOCK_STREAM, |fd| {
            tcp_accept_loop(TcpListener::from(fd));
        }),
        ("UDP", udp, libc::SOCK_DGRAM, |fd| {
            udp_echo_loop(UdpSocket::from(fd));
        }),
    ];
    let mut threads = Vec::new();
    for ip in &binds {
        for (name, ports, ty, serve_socket) in protocols {
            for &port in ports {
                let addr = SocketAddr::new(*ip, port);
                let fd = bound_socket(addr, ty)
                    .with_context(|| format!("listening on {name} {addr}"))?;
                threads.push(thread::spawn(move || serve_socket(fd)));
            }
        }
    }
    println!("READY tcp={tcp:?} udp={udp:?} bind={binds:?}");
    io::stdout().flush().context("stdout")?;
    if threads.is_empty() {
        // A pod without ports still needs a process, like a pause container.
        loop {
            thread::park();
        }
    }
    for t in threads {
        let _ = t.join();
    }
    anyhow::bail!("all listeners stopped")
}

/// A listening (TCP) or bound (UDP) socket; `[::]` is dual-stack whatever `bindv6only` says.
fn bound_socket(addr: SocketAddr, ty: libc::c_int) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) with constant arguments; the fd is owned right away.
    let raw = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if let IpAddr::V6(ip) = addr.ip() {
        setsockopt_int(
            &fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            i32::from(!ip.is_unspecified()),
        )?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a valid sockaddr of length len.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) on our fd.
    if ty == libc::SOCK_STREAM && unsafe { libc::listen(fd.as_raw_fd(), 4096) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a c_int of the stated size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            (storage, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

fn tcp_accept_loop(listener: TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                thread::spawn(move || tcp_echo(stream));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn tcp_echo(mut stream: TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn udp_echo_loop(sock: UdpSocket) {
    let mut buf = [0u8; 1024];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let _ = sock.send_to(&buf[..n], peer);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("udp recv: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

// ---------- probes ----------

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// (outcome, errno) of an I/O error.
fn classify(e: &io::Error) -> (Outcome, Option<i32>) {
    match e.raw_os_error() {
        Some(errno) => (Outcome::from_errno(errno), Some(errno)),
        None if matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ) =>
        {
            (Outcome::Timeout, None)
        }
        None => (Outcome::Error, None),
    }
}

fn remaining(start: Instant, budget: Duration) -> Duration {
    budget
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(1))
}

fn connect(tcp: &[SocketAddr], udp: &[SocketAddr], timeout: Duration) {
    let jobs: Vec<(SocketAddr, Protocol)> = tcp
        .iter()
        .map(|a| (*a, Protocol::Tcp))
        .chain(udp.iter().map(|a| (*a, Protocol::Udp)))
        .collect();
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|(addr, proto)| {
            thread::spawn(move || match proto {
                Protocol::Tcp => tcp_probe(addr, timeout),
                Protocol::Udp => udp_probe(addr, timeout),
            })
        })
        .collect();
    for h in handles {
        match h.join() {
            Ok(r) => print_json(&r),
            Err(_) => eprintln!("a probe thread panicked"),
        }
    }
}

fn payload() -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("bulkhead-probe {} {nanos}\n", std::process::id()).into_bytes()
}

/// The result of a probe of `addr` started at `start`: `echo` says whether the echo came back
/// intact; `mismatch` is the outcome when it did not.
fn probe_result(
    addr: SocketAddr,
    protocol: Protocol,
    start: Instant,
    echo: io::Result<bool>,
    mismatch: Outcome,
) -> ProbeResult {
    let (result, errno) = match echo {
        Ok(true) => (Outcome::Ok, None),
        Ok(false) => (mismatch, None),
        Err(e) => classify(&e),
    };
    ProbeResult {
        target: addr,
        protocol,
        result,
        ms: ms(start),
        errno,
    }
}

fn tcp_probe(addr: SocketAddr, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let msg = payload();
    let echo = (|| -> io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(remaining(start, timeout)))?;
        stream.set_write_timeout(Some(remaining(start, timeout)))?;
        stream.write_all(&msg)?;
        let mut buf = vec![0u8; msg.len()];
        stream.read_exact(&mut buf)?;
        Ok(buf == msg)
    })();
    probe_result(addr, Protocol::Tcp, start, echo, Outcome::Error)
}

fn udp_probe(addr: SocketAddr, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()
    } else {
        "[::]:0".parse()
    }
    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let msg = payload();
    let r = (|| -> io::Result<bool> {
        let sock = UdpSocket::bind(local)?;
        sock.connect(addr)?;
        sock.send(&msg)?;
        sock.set_read_timeout(Some(remaining(start, timeout)))?;
        let mut buf = [0u8; 1024];
        loop {
            let n = sock.recv(&mut buf)?;
            if buf[..n] == msg[..] {
                return Ok(true);
            }
            if start.elapsed() >= timeout {
                return Ok(false);
            }
            sock.set_read_timeout(Some(remaining(start, timeout)))?;
        }
    })();
    probe_result(addr, Protocol::Udp, start, r, Outcome::Timeout)
}

fn linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: SO_LINGER takes a struct linger of the stated size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn storm(addr: SocketAddr, count: u64, timeout: Duration) -> StormReport {
    let start = Instant::now();
    let mut results: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..count {
        let outcome = match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                // Reset instead of FIN: no TIME_WAIT pile-up over thousands of attempts.
                linger_zero(&s);
                Outcome::Ok
            }
            Err(e) => classify(&e).0,
        };
        *results.entry(outcome.as_str().to_owned()).or_default() += 1;
    }
    StormReport {
        target: addr,
        protocol: Protocol::Tcp,
        attempts: count,
        ms: ms(start),
        results,
    }
}

fn hold(addr: SocketAddr, interval: Duration, duration: Duration, timeout: Duration) -> HoldReport {
    let start = Instant::now();
    let mut report = HoldReport {
        target: addr,
        ok: 0,
        failed: 0,
        reconnects: 0,
        broke: false,
        first_error: None,
        ms: 0.0,
    };
    let fail = |report: &mut HoldReport, what: String| {
        report.failed += 1;
        report.broke = true;
        report.first_error.get_or_insert(what);
    };
    let mut stream: Option<TcpStream> = None;
    let mut seq: u64 = 0;
    while start.elapsed() < duration {
        let tick = Instant::now();
        if stream.is_none() {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    if seq > 0 {
                        report.reconnects += 1;
                    }
                    stream = Some(s);
                }
                Err(e) => fail(&mut report, format!("connect #{seq}: {e}")),
            }
        }
        if let Some(s) = stream.as_mut() {
            let msg = format!("ping {seq:016}\n").into_bytes();
            let r = (|| -> io::Result<bool> {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                s.write_all(&msg)?;
                let mut buf = vec![0u8; msg.len()];
                s.read_exact(&mut buf)?;
                Ok(buf == msg)
            })();
            match r {
                Ok(true) => report.ok += 1,
                Ok(false) => fail(&mut report, format!("round trip #{seq}: echo mismatch")),
                Err(e) => {
                    fail(&mut report, format!("round trip #{seq}: {e}"));
                    // The stream may hold a late echo or be dead: start over on a new one.
                    stream = None;
                }
            }
        }
        seq += 1;
        let spent = tick.elapsed();
        if spent < interval {
            thread::sleep(interval - spent);
        }
    }
    report.ms = ms(start);
    report
}

// ---------- benchmarks ----------

/// The value at quantile `q` (0..=1) of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn rr_report(
    mode: &str,
    mut lat_us: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
) -> serde_json::Value {
    lat_us.sort_by(f64::total_cmp);
    let n = lat_us.len();
    let mean = if n == 0 {
        0.0
    } else {
        lat_us.iter().sum::<f64>() / n as f64
    };
    let secs = elapsed.as_secs_f64();
    serde_json::json!({
        "mode": mode,
        "requests": n,
        "errors": errors,
        "first_error": first_error,
        "elapsed_ms": secs * 1e3,
        "rate_per_s": if secs > 0.0 { n as f64 / secs } else { 0.0 },
        "p50_us": quantile(&lat_us, 0.50),
        "p90_us": quantile(&lat_us, 0.90),
        "p99_us": quantile(&lat_us, 0.99),
        "mean_us": mean,
        "max_us": lat_us.last().copied().unwrap_or(0.0),
    })
}

/// One request on a fresh connection: connect, send, read the echo, close with RST.
fn one_connection_request(
    addr: SocketAddr,
    msg: &[u8],
    buf: &mut [u8],
    timeout: Duration,
) -> io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(msg)?;
    s.read_exact(buf)?;
    linger_zero(&s);
    if buf != msg {
        return Err(io::Error::other("echo mismatch"));
    }
    Ok(())
}

/// How many requests `rr` times, and how.
struct RrPlan {
    /// Timed requests.
    n: u64,
    /// Request size in bytes.
    size: usize,
    /// Unmeasured requests first.
    warmup: u64,
    /// Budget for one request.
    timeout: Duration,
}

fn rr_connect_each(addr: SocketAddr, p: &RrPlan) -> serde_json::Value {
    let msg = vec![b'x'; p.size];
    let mut buf = vec![0u8; p.size];
    for _ in 0..p.warmup {
        let _ = one_connection_request(addr, &msg, &mut buf, p.timeout);
    }
    timed_requests("connect-each", p.n, false, || {
        one_connection_request(addr, &msg, &mut buf, p.timeout)
    })
}

/// `p.warmup` unmeasured round trips, then `p.n` timed ones. A failed round trip leaves the
/// connection unusable (or, for UDP, means a lost datagram): the run ends there.
fn pingpong(
    mode: &str,
    p: &RrPlan,
    mut round_trip: impl FnMut() -> io::Result<()>,
) -> anyhow::Result<serde_json::Value> {
    for _ in 0..p.warmup {
        round_trip().context("warm-up round trip")?;
    }
    Ok(timed_requests(mode, p.n, true, round_trip))
}

fn rr_pingpong(addr: SocketAddr, p: &RrPlan) -> anyhow::Result<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr, p.timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(p.timeout))?;
    let msg = vec![b'y'; p.size];
    let mut buf = vec![0u8; p.size];
    pingpong("pingpong", p, || {
        s.write_all(&msg)?;
        s.read_exact(&mut buf)
    })
}

fn rr_udp_pingpong(addr: SocketAddr, p: &RrPlan) -> anyhow::Result<serde_json::Value> {
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).context("binding a UDP socket")?;
    sock.connect(addr)
        .with_context(|| format!("connecting to {addr}"))?;
    sock.set_read_timeout(Some(p.timeout))?;
    let msg = vec![b'u'; p.size];
    // One byte more than sent: a longer echo shows as a mismatch, not as a truncated match.
    let mut buf = vec![0u8; p.size + 1];
    pingpong("udp-pingpong", p, || {
        sock.send(&msg)?;
        let got = sock.recv(&mut buf)?;
        if buf.get(..got) != Some(msg.as_slice()) {
            return Err(io::Error::other("echo mismatch"));
        }
        Ok(())
    })
}

/// Times `n` requests and reports their latencies; with `stop_at_error` the first failure ends
/// the run.
fn timed_requests(
    mode: &str,
    n: u64,
    stop_at_error: bool,
    mut request: impl FnMut() -> io::Result<()>,
) -> serde_json::Value {
    let mut lat = Vec::with_capacity(n as usize);
    let mut errors = 0;
    let mut first_error = None;
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        match request() {
            Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1e6),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
                if stop_at_error {
                    break;
                }
            }
        }
    }
    rr_report(mode, lat, errors, first_error, start.elapsed())
}

fn flood(
    ip: IpAddr,
    port_from: u16,
    ports: u16,
    count: u64,
    timeout: Duration,
) -> serde_json::Value {
    let start = Instant::now();
    let mut results: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..count {
        let port = port_from.wrapping_add((i % u64::from(ports)) as u16);
        let outcome = match TcpStream::connect_timeout(&SocketAddr::new(ip, port), timeout) {
            Ok(s) => {
                linger_zero(&s);
                Outcome::Ok
            }
            Err(e) => classify(&e).0,
        };
        *results.entry(outcome.as_str().to_owned()).or_default() += 1;
    }
    serde_json::json!({
        "attempts": count,
        "ports": ports,
        "ms": ms(start),
        "results": results,
    })
}
