//! The agent's probe and metrics endpoints, as a test reads them.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

/// A free local TCP port for the agent's probe endpoints.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A free port and `--metrics-addr` for it: `(port, "127.0.0.1:PORT")`.
pub fn metrics_endpoint() -> (u16, String) {
    let port = free_port();
    (port, format!("127.0.0.1:{port}"))
}

/// `GET path` on the agent's metrics server: status code and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// The status code of `GET path`.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path).map(|(code, _)| code)
}

/// The value of one sample (`name{labels}` exactly as exposed) in a scrape; 0 when absent.
pub fn sample(port: u16, series: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics").expect("scrape /metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
