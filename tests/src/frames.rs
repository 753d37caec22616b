//! Hand-built UDP frames injected below the IP stack, and the pod-side sniffer that counts what
//! reaches the pod's sockets.
//!
//! Why: a frame of a page or more sent through an `AF_PACKET` socket is built by the kernel with
//! only its Ethernet header in the skb's linear area, the rest in page fragments. The receiving
//! stack pulls the IP header into the linear area, but a raw socket (with early demux off) gets its
//! copy before the UDP layer pulls the UDP header: its `cgroup_skb` ingress program then sees a
//! packet whose transport header is not in the linear area (beyond `data_end` for direct packet
//! access). A datapath must judge it exactly as the same packet laid out linearly.
use std::{
    collections::BTreeMap,
    ffi::CString,
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    thread,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// One UDP datagram to build as an Ethernet frame.
#[derive(Clone, Debug)]
pub struct UdpFrame {
    /// Destination MAC (the pod's `eth0`).
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Source address (both addresses of one family).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// The whole frame's length in bytes, Ethernet header included.
    pub frame_len: usize,
    /// IPv6 only: a destination options header (8 bytes) between the IPv6 and UDP headers.
    pub dst_opts: bool,
}

/// The ones' complement sum of `data` folded into 16 bits (not yet inverted).
fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        acc += u32::from(w);
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

fn checksum(acc: u32, data: &[u8]) -> u16 {
    let c = !(sum16(acc, data) as u16);
    if c == 0 { 0xffff } else { c }
}

impl UdpFrame {
    /// The frame's bytes, with valid IPv4 header and UDP checksums.
    pub fn build(&self) -> Vec<u8> {
        let (l3_fixed, ext) = match self.src {
            IpAddr::V4(_) => (20, 0),
            IpAddr::V6(_) => (40, if self.dst_opts { 8 } else { 0 }),
        };
        let udp_len = self.frame_len.saturating_sub(14 + l3_fixed + ext).max(8);
        let mut udp = vec![0u8; udp_len];
        udp[0..2].copy_from_slice(&self.sport.to_be_bytes());
        udp[2..4].copy_from_slice(&self.dport.to_be_bytes());
        udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        for (i, b) in udp[8..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let mut f = Vec::with_capacity(self.frame_len);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let mut h = vec![0u8; 20];
                h[0] = 0x45;
                h[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
                h[6] = 0x40; // don't fragment
                h[8] = 64;
                h[9] = 17;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                let c = checksum(0, &h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, 17]);
                pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
                let c = checksum(sum16(0, &pseudo), &udp);
                udp[6..8].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&h);
            }
            (s, d) => {
                let (IpAddr::V6(s), IpAddr::V6(d)) = (s, d) else {
                    panic!("mixed address families {s} -> {d}");
                };
                f.extend_from_slice(&0x86DDu16.to_be_bytes());
                let mut h = vec![0u8; 40];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&((ext + udp_len) as u16).to_be_bytes());
                h[6] = if self.dst_opts { 60 } else { 17 };
                h[7] = 64;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, 17]);
                let c = checksum(sum16(0, &pseudo), &udp);
                udp[6..8].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&h);
                if self.dst_opts {
                    // Next header UDP, length 0 (8 bytes), one PadN option of 4 zero bytes.
                    f.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
                }
            }
        }
        f.extend_from_slice(&udp);
        f
    }
}

/// Sends `frames` as they are out of interface `ifname` through an `AF_PACKET` socket.
pub fn inject(ifname: &str, frames: &[Vec<u8>]) -> io::Result<()> {
    let name = CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    let sock = socket2::Socket::new(
        socket2::Domain::PACKET,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(0)),
    )?;
    for frame in frames {
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and sll are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // Let the receiver drain: no drop for want of buffer space.
        thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Datagrams one socket of the sniffer received from one source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SniffCount {
    /// `raw4`, `raw6` (raw UDP sockets: the transport header unpulled) or `udp` (the bound UDP
    /// socket, after the UDP layer pulled it).
    pub socket: String,
    /// Source address and port.
    pub src: SocketAddr,
    /// Datagrams.
    pub count: u64,
    /// Length of the last one as the socket saw it.
    pub len: usize,
}

/// The output of `bulkhead-pod sniff`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SniffReport {
    /// Per socket and source, datagrams to the sniffed port.
    pub seen: Vec<SniffCount>,
    /// Errors opening or reading the sockets.
    pub errors: Vec<String>,
}

impl SniffReport {
    /// Datagrams from `src` that socket `socket` received.
    pub fn count(&self, socket: &str, src: SocketAddr) -> u64 {
        self.seen
            .iter()
            .filter(|c| c.socket == socket && c.src == src)
            .map(|c| c.count)
            .sum()
    }
}

/// Sniffer socket kinds: (name, domain, type, protocol).
fn sniff_sockets(port: u16) -> io::Result<Vec<(&'static str, UdpSocket)>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::new();
    for (name, domain, ty, proto) in [
        ("raw4", Domain::IPV4, Type::RAW, Some(Protocol::UDP)),
        ("raw6", Domain::IPV6, Type::RAW, Some(Protocol::UDP)),
        ("udp", Domain::IPV6, Type::DGRAM, None),
    ] {
        let s = Socket::new(domain, ty, proto)?;
        // Large frames are ~8 KiB of truesize each: room for all of them.
        let _ = s.set_recv_buffer_size(8 << 20);
        if name == "udp" {
            s.set_only_v6(false)?;
            let any = SocketAddr::from(([0u16; 8], port));
            s.bind(&any.into())?;
        }
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        out.push((name, UdpSocket::from(s)));
    }
    Ok(out)
}

/// The source port and destination port of what a socket received: raw IPv4 sockets get the IP
/// header too, raw IPv6 ones the UDP header onwards, the UDP socket the payload only.
fn ports(name: &str, buf: &[u8], from: SocketAddr, port: u16) -> Option<u16> {
    let udp = match name {
        "raw4" => &buf[usize::from(buf.first()? & 0x0f) * 4..],
        "raw6" => buf,
        _ => return Some(from.port()),
    };
    let sport = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    (dport == port).then_some(sport)
}

/// `bulkhead-pod sniff`: counts UDP datagrams to `port` on raw and bound sockets for `duration`,
/// after printing `READY`.
pub fn sniff(port: u16, duration: Duration) -> SniffReport {
    let mut report = SniffReport::default();
    let sockets = match sniff_sockets(port) {
        Ok(s) => s,
        Err(e) => {
            report.errors.push(format!("opening sockets: {e}"));
            println!("READY");
            return report;
        }
    };
    println!("READY");
    let deadline = Instant::now() + duration;
    let handles: Vec<_> = sockets
        .into_iter()
        .map(|(name, sock)| {
            thread::spawn(move || {
                let mut seen: BTreeMap<SocketAddr, (u64, usize)> = BTreeMap::new();
                let mut buf = vec![0u8; 65_536];
                while Instant::now() < deadline {
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            if let Some(sport) = ports(name, &buf[..n], from, port) {
                                let src = SocketAddr::new(from.ip().to_canonical(), sport);
                                let e = seen.entry(src).or_default();
                                e.0 += 1;
                                e.1 = n;
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock
                                    | io::ErrorKind::TimedOut
                                    | io::ErrorKind::Interrupted
                            ) => {}
                        Err(e) => return Err(format!("{name}: {e}")),
                    }
                }
                Ok((name, seen))
            })
        })
        .collect();
    for h in handles {
        match h.join() {
            Ok(Ok((name, seen))) => {
                report
                    .seen
                    .extend(seen.into_iter().map(|(src, (count, len))| SniffCount {
                        socket: name.to_owned(),
                        src,
                        count,
                        len,
                    }));
            }
            Ok(Err(e)) => report.errors.push(e),
            Err(_) => report.errors.push("a sniffer thread panicked".into()),
        }
    }
    report
}
