//! `bulkhead-pod ping`: one ICMP or ICMPv6 echo request from a raw socket, as `ping` sends it.
//!
//! A raw socket, not an ICMP datagram socket: those need `net.ipv4.ping_group_range`, which a new
//! network namespace leaves closed. An ICMPv6 raw socket also receives the namespace's neighbour
//! discovery messages, so a ping from a pod makes the firewall's ingress program see them too.
use std::{
    io,
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::probe::{Outcome, PingResult};

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const SEQUENCE: u16 = 1;

/// Sends one echo request to `ip` and waits up to `timeout` for its reply.
pub fn ping(ip: IpAddr, timeout: Duration) -> PingResult {
    let start = Instant::now();
    let (result, errno) = match echo(ip, start, timeout) {
        Ok(true) => (Outcome::Ok, None),
        Ok(false) => (Outcome::Timeout, None),
        Err(e) => match e.raw_os_error() {
            Some(errno) => (Outcome::from_errno(errno), Some(errno)),
            None => (Outcome::Error, None),
        },
    };
    PingResult {
        target: ip,
        result,
        ms: start.elapsed().as_secs_f64() * 1000.0,
        errno,
    }
}

/// Whether the reply came back in time.
fn echo(ip: IpAddr, start: Instant, timeout: Duration) -> io::Result<bool> {
    let (domain, protocol, request, reply) = if ip.is_ipv4() {
        (
            Domain::IPV4,
            Protocol::ICMPV4,
            ICMP_ECHO_REQUEST,
            ICMP_ECHO_REPLY,
        )
    } else {
        (
            Domain::IPV6,
            Protocol::ICMPV6,
            ICMPV6_ECHO_REQUEST,
            ICMPV6_ECHO_REPLY,
        )
    };
    let sock = Socket::new(domain, Type::RAW, Some(protocol))?;
    // The pid keeps two probes running at once apart.
    let id = (std::process::id() & 0xffff) as u16;
    sock.send_to(
        &message(request, id, ip.is_ipv4()),
        &SockAddr::from(SocketAddr::new(ip, 0)),
    )?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Ok(false);
        }
        sock.set_read_timeout(Some(left))?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: recv_from initialised the first `n` bytes.
        let got: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        if from.as_socket().map(|a| a.ip()) == Some(ip) && is_reply(&got, ip.is_ipv4(), reply, id) {
            return Ok(true);
        }
    }
}

/// An echo request: type, code, checksum, identifier, sequence, payload. The kernel computes the
/// ICMPv6 checksum itself (RFC 3542); the ICMP one is ours.
fn message(ty: u8, id: u16, v4: bool) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&SEQUENCE.to_be_bytes());
    m.extend_from_slice(b"bulkhead-ping");
    if v4 {
        let sum = checksum(&m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    m
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Is `packet` (IPv4: with its IP header, as a raw socket returns it) our echo reply?
fn is_reply(packet: &[u8], v4: bool, reply: u8, id: u16) -> bool {
    let icmp = if v4 {
        let ihl = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
        packet.get(ihl..).unwrap_or_default()
    } else {
        packet
    };
    icmp.len() >= 8
        && icmp[0] == reply
        && icmp[4..6] == id.to_be_bytes()
        && icmp[6..8] == SEQUENCE.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_of_a_message_with_its_checksum_is_zero() {
        let m = message(ICMP_ECHO_REQUEST, 0x1234, true);
        assert_eq!(checksum(&m), 0);
    }

    #[test]
    fn replies_are_recognised_by_type_id_and_sequence() {
        let mut v4 = vec![0x45u8; 1];
        v4.extend_from_slice(&[0; 19]);
        v4.extend_from_slice(&message(ICMP_ECHO_REPLY, 7, true));
        assert!(is_reply(&v4, true, ICMP_ECHO_REPLY, 7));
        assert!(!is_reply(&v4, true, ICMP_ECHO_REPLY, 8));
        let v6 = message(ICMPV6_ECHO_REPLY, 7, false);
        assert!(is_reply(&v6, false, ICMPV6_ECHO_REPLY, 7));
        assert!(!is_reply(&v6, false, ICMPV6_ECHO_REQUEST, 7));
    }
}
