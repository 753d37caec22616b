//! `bulkhead-pod`: the one program a simulated pod runs.
//!
//! `serve` is the pod's workload (TCP and UDP echo); `connect`, `storm` and `hold` are the probes a
//! test runs *inside* a pod's network namespace and cgroup, because the firewall identifies pods by
//! the cgroup of the socket. Results are JSON lines on stdout (see `bulkhead_tests::probe`).
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
    }
}

fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cannot serialize result: {e}"),
    }
}

// ---------- serve ----------

fn serve(tcp: &[u16], udp: &[u16], bind: &[IpAddr]) -> anyhow::Result<()> {
    let binds: Vec<IpAddr> = if bind.is_empty() {
        vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
    } else {
        bind.to_vec()
    };
    let mut threads = Vec::new();
    for ip in &binds {
        for &port in tcp {
            let addr = SocketAddr::new(*ip, port);
            let fd = bound_socket(addr, libc::SOCK_STREAM)
                .with_context(|| format!("listening on TCP {addr}"))?;
            let listener = TcpListener::from(fd);
            threads.push(thread::spawn(move || tcp_accept_loop(listener)));
        }
        for &port in udp {
            let addr = SocketAddr::new(*ip, port);
            let fd = bound_socket(addr, libc::SOCK_DGRAM)
                .with_context(|| format!("listening on UDP {addr}"))?;
            let sock = UdpSocket::from(fd);
            threads.push(thread::spawn(move || udp_echo_loop(sock)));
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

fn tcp_probe(addr: SocketAddr, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let done = |result, errno| ProbeResult {
        target: addr,
        protocol: Protocol::Tcp,
        result,
        ms: ms(start),
        errno,
    };
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            let (o, errno) = classify(&e);
            return done(o, errno);
        }
    };
    let msg = payload();
    let echo = (|| -> io::Result<bool> {
        stream.set_read_timeout(Some(remaining(start, timeout)))?;
        stream.set_write_timeout(Some(remaining(start, timeout)))?;
        stream.write_all(&msg)?;
        let mut buf = vec![0u8; msg.len()];
        stream.read_exact(&mut buf)?;
        Ok(buf == msg)
    })();
    match echo {
        Ok(true) => done(Outcome::Ok, None),
        Ok(false) => done(Outcome::Error, None),
        Err(e) => {
            let (o, errno) = classify(&e);
            done(o, errno)
        }
    }
}

fn udp_probe(addr: SocketAddr, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let done = |result, errno| ProbeResult {
        target: addr,
        protocol: Protocol::Udp,
        result,
        ms: ms(start),
        errno,
    };
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
    match r {
        Ok(true) => done(Outcome::Ok, None),
        Ok(false) => done(Outcome::Timeout, None),
        Err(e) => {
            let (o, errno) = classify(&e);
            done(o, errno)
        }
    }
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
