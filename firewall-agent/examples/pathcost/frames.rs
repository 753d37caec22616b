//! The frames `pathcost` times, and the frames that open the connections the established paths
//! ride on. Checksums are valid (UDP through bulkhead-tests' [`UdpFrame`]) though the programs do
//! not read them.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bulkhead_tests::frames::UdpFrame;
use firewall_common::{Counter, programs};

/// The local pod (namespace a; this process sits in its cgroup).
const POD: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
];
/// A remote pod of namespace b, which admits a on port 80.
const PEER: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
];
/// A remote pod of namespace c, which a admits on everything.
const TRUSTED: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3)),
];
const ALLOWED: u16 = 80;
/// Source ports, one per flow, so no path rides on another's conntrack entry.
const SYN_PORT: u16 = 40_001;
const ACK_PORT: u16 = 40_002;
const UDP_PORT: u16 = 40_003;
const IN_PORT: u16 = 40_004;
const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;

/// One frame on one program, and the verdict reason each run of it must count.
pub struct Path {
    /// `tcp4-syn`, `udp6-reply`, ...
    pub key: String,
    /// `egress` or `ingress` (also picks the empty program of that hook).
    pub hook: &'static str,
    /// Bulkhead's program.
    pub program: &'static str,
    /// The Ethernet frame.
    pub frame: Vec<u8>,
    /// The counter every run must move (and no other).
    pub counts: Counter,
    /// For the report.
    pub what: &'static str,
}

fn egress(key: String, frame: Vec<u8>, counts: Counter, what: &'static str) -> Path {
    let (hook, program) = ("egress", programs::EGRESS);
    Path {
        key,
        hook,
        program,
        frame,
        counts,
        what,
    }
}

fn ingress(key: String, frame: Vec<u8>, counts: Counter, what: &'static str) -> Path {
    let (hook, program) = ("ingress", programs::INGRESS);
    Path {
        key,
        hook,
        program,
        frame,
        counts,
        what,
    }
}

/// Packets run once before timing: they open the TCP connection (SYN, SYN-ACK) and the UDP flow
/// that the established paths hit.
pub fn primes() -> anyhow::Result<Vec<Path>> {
    let mut out = Vec::new();
    for f in 0..2 {
        let v = if f == 0 { 4 } else { 6 };
        let syn = tcp(POD[f], PEER[f], ACK_PORT, ALLOWED, SYN)?;
        let syn_ack = tcp(PEER[f], POD[f], ALLOWED, ACK_PORT, SYN_ACK)?;
        let first = udp(POD[f], PEER[f], UDP_PORT, ALLOWED);
        out.extend([
            egress(
                format!("prime{v}-syn"),
                syn,
                Counter::PolicyAllow,
                "opening SYN",
            ),
            ingress(
                format!("prime{v}-synack"),
                syn_ack,
                Counter::ConntrackHit,
                "its SYN-ACK",
            ),
            egress(
                format!("prime{v}-udp"),
                first,
                Counter::PolicyAllow,
                "UDP first packet",
            ),
        ]);
    }
    Ok(out)
}

/// The timed paths, IPv4 then IPv6.
pub fn paths() -> anyhow::Result<Vec<Path>> {
    let mut out = Vec::new();
    for f in 0..2 {
        let v = if f == 0 { 4 } else { 6 };
        out.extend([
            egress(
                format!("tcp{v}-syn"),
                tcp(POD[f], PEER[f], SYN_PORT, ALLOWED, SYN)?,
                Counter::PolicyAllow,
                "first packet of a TCP connection (SYN) to another namespace: new-connection path",
            ),
            ingress(
                format!("tcp{v}-syn"),
                tcp(TRUSTED[f], POD[f], IN_PORT, 8080, SYN)?,
                Counter::PolicyAllow,
                "first packet of a TCP connection (SYN) from another namespace: new-connection path",
            ),
            egress(
                format!("tcp{v}-ack-request"),
                tcp(POD[f], PEER[f], ACK_PORT, ALLOWED, ACK)?,
                Counter::ConntrackHit,
                "established TCP ACK, opener's direction: conntrack hit, socket not cached",
            ),
            ingress(
                format!("tcp{v}-ack-reply"),
                tcp(PEER[f], POD[f], ALLOWED, ACK_PORT, ACK)?,
                Counter::ConntrackHit,
                "established TCP ACK, reply direction: conntrack hit, socket not cached",
            ),
            egress(
                format!("udp{v}-request"),
                udp(POD[f], PEER[f], UDP_PORT, ALLOWED),
                Counter::ConntrackHit,
                "established UDP flow, opener's direction: conntrack hit",
            ),
            ingress(
                format!("udp{v}-reply"),
                udp(PEER[f], POD[f], ALLOWED, UDP_PORT),
                Counter::ConntrackHit,
                "established UDP flow, reply direction: conntrack hit",
            ),
        ]);
    }
    Ok(out)
}

/// A UDP datagram with 4 bytes of payload.
fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    let l3 = if src.is_ipv4() { 20 } else { 40 };
    UdpFrame {
        dst_mac: [2, 0, 0, 0, 0, 1],
        src_mac: [2, 0, 0, 0, 0, 2],
        src,
        dst,
        sport,
        dport,
        frame_len: 14 + l3 + 8 + 4,
        dst_opts: false,
    }
    .build()
}

/// A TCP segment without options or payload (bulkhead-tests builds UDP frames only).
fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> anyhow::Result<Vec<u8>> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64_240u16.to_be_bytes()); // window
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&40u16.to_be_bytes());
            h[6] = 0x40; // don't fragment
            h[8] = 64;
            h[9] = 6;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            f.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86DDu16.to_be_bytes());
            let mut h = [0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&20u16.to_be_bytes());
            h[6] = 6;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            f.extend_from_slice(&h);
        }
        (s, d) => anyhow::bail!("mixed address families {s} -> {d}"),
    }
    f.extend_from_slice(&t);
    Ok(f)
}
