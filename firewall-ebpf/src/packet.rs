//! Packet parsing for cgroup_skb programs: the skb's data starts at the IP header.
//!
//! Two parsers, one result. The common packet (IPv4 without fragmentation, IPv6 without
//! extension headers, TCP or UDP, headers in the skb's linear area) is read in place with direct
//! packet access, which on this machine kind saves about 350-400 ns per packet over helper calls
//! (../shared/notes/datapath-cost.md). Everything else, and anything the fast parser is unsure
//! of, goes to the full parser, whose reads go through `bpf_skb_load_bytes`
//! (`SkBuffContext::load`): it checks bounds itself and reads past the linear area, so a
//! truncated or lying header yields `Err` rather than a wrong classification.
use core::ptr::read_unaligned;

use aya_ebpf::programs::SkBuffContext;
use firewall_common::{CtKey, IpProto};

/// Ethertypes as found in `__sk_buff.protocol` (network byte order).
pub const ETH_P_IP_BE: u32 = (0x0800u16).to_be() as u32;
/// IPv6 ethertype in network byte order.
pub const ETH_P_IPV6_BE: u32 = (0x86DDu16).to_be() as u32;

const ICMP: u8 = IpProto::Icmp as u8;
const ICMPV6: u8 = IpProto::Icmpv6 as u8;
const TCP: u8 = IpProto::Tcp as u8;
const UDP: u8 = IpProto::Udp as u8;
const SCTP: u8 = IpProto::Sctp as u8;

const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// Most IPv6 extension headers walked before giving up (treated as malformed): the walk reads
/// this many headers and then the transport protocol's number.
const MAX_IPV6_EXT: usize = 8;

/// ICMP and ICMPv6 message types the parser tells apart.
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// What kind of packet this is, for conntrack (docs/design.md#connections).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything that may open or continue a flow.
    Normal,
    /// TCP SYN without ACK: always a new connection, always checked.
    TcpSyn,
    /// ICMP echo request: the only ICMP message that opens a flow.
    EchoRequest,
    /// ICMP echo reply: continues the flow of its request, never opens one.
    EchoReply,
    /// An ICMP error quoting another flow (`inner`).
    IcmpError,
    /// ICMPv6 neighbour and router discovery, redirect and MLD: the link's own control traffic,
    /// which every neighbour needs whatever the policy says.
    IcmpNeighbor,
    /// Any other ICMP message (timestamp, information, router advertisement for IPv4, ...):
    /// opens nothing and continues nothing.
    IcmpControl,
    /// A non-first IP fragment: no transport header.
    Fragment,
}

impl Kind {
    /// An ICMP message that opens no flow and is no link control: an echo reply, an error or
    /// anything else that is no echo request. Only conntrack lets it through across namespaces.
    #[inline(always)]
    pub fn icmp_without_flow(self) -> bool {
        matches!(self, Kind::EchoReply | Kind::IcmpError | Kind::IcmpControl)
    }
}

/// The 5-tuple of a packet in packet orientation, as the conntrack key holds it (`side` is set
/// only when it keys the conntrack map). Ports are host order (ICMP: the echo id as the request's
/// source port and the reply's destination port); addresses network order, IPv4 in word 0.
pub type Tuple = CtKey;

/// A parsed packet.
pub struct Packet {
    /// Its tuple.
    pub tuple: Tuple,
    /// Its kind.
    pub kind: Kind,
    /// For ICMP errors: the quoted packet's tuple (in its own orientation).
    pub inner: Tuple,
}

/// Why a packet could not be classified.
pub enum ParseError {
    /// Not IPv4/IPv6: not ours to judge.
    NotIp,
    /// Truncated or inconsistent headers.
    Malformed,
}

#[inline(always)]
fn load<T>(ctx: &SkBuffContext, off: usize) -> Result<T, ParseError> {
    ctx.load::<T>(off).map_err(|_| ParseError::Malformed)
}

/// Parses the packet of `ctx` (family from `__sk_buff.protocol`).
#[inline(always)]
pub fn parse(ctx: &SkBuffContext, protocol_be: u32) -> Result<Packet, ParseError> {
    match parse_direct(ctx, protocol_be) {
        Some(pkt) => Ok(pkt),
        None => parse_loaded(ctx, protocol_be),
    }
}

/// Does `[p, p + len)` lie in the linear area ending at `end`? One check per header, not per
/// field: the verifier learns the range from it, and LLVM turns a one-byte check into a form
/// (`p >= end`) the verifier learns nothing from.
#[inline(always)]
fn fits(p: usize, len: usize, end: usize) -> bool {
    p + len <= end
}

/// `T` at `p`, which a preceding [`fits`] showed to be in the linear area.
///
/// # Safety
/// `[p, p + size_of::<T>())` must lie in the packet's linear area.
#[inline(always)]
unsafe fn read<T>(p: usize) -> T {
    // SAFETY: see the function's contract; packet data has no alignment.
    unsafe { read_unaligned(p as *const T) }
}

/// Does the packet carry TCP right after its IP header, as read in place? `false` as well when
/// the IP header is not in the linear area or IPv6 extension headers come first: the caller
/// (the socket cache) only uses it to skip work, never to let anything through.
#[inline(always)]
pub fn plain_tcp(ctx: &SkBuffContext, protocol_be: u32) -> bool {
    let (data, end) = (ctx.data(), ctx.data_end());
    // SAFETY (both reads): each follows the `fits` of its header.
    if protocol_be == ETH_P_IP_BE {
        fits(data, 20, end) && unsafe { read::<u8>(data + 9) } == TCP
    } else if protocol_be == ETH_P_IPV6_BE {
        fits(data, 40, end) && unsafe { read::<u8>(data + 6) } == TCP
    } else {
        false
    }
}

/// The fast parser: the common packet read in place, or `None` to leave it to [`parse_loaded`]
/// (also for every packet that may be malformed: the full parser decides that).
#[inline(always)]
fn parse_direct(ctx: &SkBuffContext, protocol_be: u32) -> Option<Packet> {
    let (data, end) = (ctx.data(), ctx.data_end());
    let mut t = Tuple::default();
    // SAFETY (every `read` below): each follows the `fits` of its header.
    let l4 = if protocol_be == ETH_P_IP_BE {
        if !fits(data, 20, end) {
            return None;
        }
        let vihl: u8 = unsafe { read(data) };
        let ihl = ((vihl & 0x0f) as usize) * 4;
        // Fragments (more-fragments flag or an offset) take the full parser.
        let frag = u16::from_be(unsafe { read(data + 6) });
        if vihl >> 4 != 4 || ihl < 20 || frag & 0x3fff != 0 {
            return None;
        }
        t.proto = unsafe { read(data + 9) };
        t.saddr[0] = unsafe { read(data + 12) };
        t.daddr[0] = unsafe { read(data + 16) };
        t.family = 4;
        data + ihl
    } else if protocol_be == ETH_P_IPV6_BE {
        if !fits(data, 40, end) {
            return None;
        }
        let v: u8 = unsafe { read(data) };
        if v >> 4 != 6 {
            return None;
        }
        // An extension header is not TCP or UDP: it takes the full parser below.
        t.proto = unsafe { read(data + 6) };
        t.saddr = unsafe { read(data + 8) };
        t.daddr = unsafe { read(data + 24) };
        t.family = 6;
        data + 40
    } else {
        return None;
    };
    let mut kind = Kind::Normal;
    match t.proto {
        TCP => {
            // Up to the flags, the 14th byte of the TCP header.
            if !fits(l4, 14, end) {
                return None;
            }
            let flags: u8 = unsafe { read(l4 + 13) };
            if flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN {
                kind = Kind::TcpSyn;
            }
        }
        UDP => {
            if !fits(l4, 4, end) {
                return None;
            }
        }
        _ => return None,
    }
    let ports: [u16; 2] = unsafe { read(l4) };
    t.sport = u16::from_be(ports[0]);
    t.dport = u16::from_be(ports[1]);
    Some(Packet {
        tuple: t,
        kind,
        inner: Tuple::default(),
    })
}

/// The full parser: every header the datapath understands, read with `bpf_skb_load_bytes`.
#[inline(always)]
fn parse_loaded(ctx: &SkBuffContext, protocol_be: u32) -> Result<Packet, ParseError> {
    let mut pkt = Packet {
        tuple: Tuple::default(),
        kind: Kind::Normal,
        inner: Tuple::default(),
    };
    let (l4, kind) = if protocol_be == ETH_P_IP_BE {
        parse_ipv4(ctx, 0, &mut pkt.tuple)?
    } else if protocol_be == ETH_P_IPV6_BE {
        parse_ipv6(ctx, 0, &mut pkt.tuple)?
    } else {
        return Err(ParseError::NotIp);
    };
    pkt.kind = kind;
    if pkt.kind == Kind::Fragment {
        return Ok(pkt);
    }
    parse_l4(ctx, l4, &mut pkt)?;
    Ok(pkt)
}

/// The first byte of an IP header at `off`, which must carry `version`.
#[inline(always)]
fn version_byte(ctx: &SkBuffContext, off: usize, version: u8) -> Result<u8, ParseError> {
    let b: u8 = load(ctx, off)?;
    if b >> 4 == version {
        Ok(b)
    } else {
        Err(ParseError::Malformed)
    }
}

/// Parses an IPv4 header at `off`: the transport header's offset, and `Fragment` for a
/// non-first fragment.
#[inline(always)]
fn parse_ipv4(ctx: &SkBuffContext, off: usize, t: &mut Tuple) -> Result<(usize, Kind), ParseError> {
    let vihl = version_byte(ctx, off, 4)?;
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(ParseError::Malformed);
    }
    let frag: u16 = u16::from_be(load(ctx, off + 6)?);
    t.proto = load(ctx, off + 9)?;
    t.saddr[0] = load(ctx, off + 12)?;
    t.daddr[0] = load(ctx, off + 16)?;
    t.family = 4;
    let kind = if frag & 0x1fff != 0 {
        Kind::Fragment
    } else {
        Kind::Normal
    };
    Ok((off + ihl, kind))
}

/// Parses an IPv6 header and its extension headers at `off`, as [`parse_ipv4`].
#[inline(always)]
fn parse_ipv6(ctx: &SkBuffContext, off: usize, t: &mut Tuple) -> Result<(usize, Kind), ParseError> {
    version_byte(ctx, off, 6)?;
    let mut next: u8 = load(ctx, off + 6)?;
    t.saddr = load(ctx, off + 8)?;
    t.daddr = load(ctx, off + 24)?;
    t.family = 6;
    let mut pos = off + 40;
    for _ in 0..=MAX_IPV6_EXT {
        match next {
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                let nh: u8 = load(ctx, pos)?;
                let len: u8 = load(ctx, pos + 1)?;
                next = nh;
                pos += (len as usize + 1) * 8;
            }
            // Fragment header: 8 bytes; offset in the upper 13 bits of bytes 2..4.
            44 => {
                let nh: u8 = load(ctx, pos)?;
                let offlg: u16 = u16::from_be(load(ctx, pos + 2)?);
                next = nh;
                pos += 8;
                if offlg & 0xfff8 != 0 {
                    t.proto = next;
                    return Ok((pos, Kind::Fragment));
                }
            }
            // Authentication header: (len + 2) * 4 bytes.
            51 => {
                let nh: u8 = load(ctx, pos)?;
                let len: u8 = load(ctx, pos + 1)?;
                next = nh;
                pos += (len as usize + 2) * 4;
            }
            _ => {
                t.proto = next;
                return Ok((pos, Kind::Normal));
            }
        }
    }
    Err(ParseError::Malformed)
}

/// The kind of an ICMP (`proto` ICMP) or ICMPv6 message of type `ty`.
#[inline(always)]
fn icmp_kind(proto: u8, ty: u8) -> Kind {
    if proto == ICMP {
        match ty {
            ICMP_ECHO_REQUEST => Kind::EchoRequest,
            ICMP_ECHO_REPLY => Kind::EchoReply,
            // Destination unreachable, source quench, redirect, time exceeded, parameter problem.
            3 | 4 | 5 | 11 | 12 => Kind::IcmpError,
            _ => Kind::IcmpControl,
        }
    } else {
        match ty {
            ICMPV6_ECHO_REQUEST => Kind::EchoRequest,
            ICMPV6_ECHO_REPLY => Kind::EchoReply,
            // Types below 128 are errors (RFC 4443 2.1).
            0..=127 => Kind::IcmpError,
            // MLD query/report/done, router and neighbour solicitation/advertisement, redirect,
            // MLDv2 report.
            130..=137 | 143 => Kind::IcmpNeighbor,
            _ => Kind::IcmpControl,
        }
    }
}

/// Parses the transport header at `off` into `pkt` (ports, TCP flags, ICMP kind).
#[inline(always)]
fn parse_l4(ctx: &SkBuffContext, off: usize, pkt: &mut Packet) -> Result<(), ParseError> {
    let t = &mut pkt.tuple;
    match t.proto {
        TCP | UDP | SCTP => {
            t.sport = u16::from_be(load(ctx, off)?);
            t.dport = u16::from_be(load(ctx, off + 2)?);
            if t.proto == TCP {
                let flags: u8 = load(ctx, off + 13)?;
                if flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN {
                    pkt.kind = Kind::TcpSyn;
                }
            }
        }
        ICMP | ICMPV6 => {
            let ty: u8 = load(ctx, off)?;
            pkt.kind = icmp_kind(t.proto, ty);
            match pkt.kind {
                Kind::EchoRequest => t.sport = u16::from_be(load(ctx, off + 4)?),
                Kind::EchoReply => t.dport = u16::from_be(load(ctx, off + 4)?),
                Kind::IcmpError => parse_inner(ctx, off + 8, t.family, &mut pkt.inner)?,
                _ => {}
            }
        }
        _ => {}
    }
    Ok(())
}

/// Parses the packet quoted by an ICMP error (IP header + first 8 bytes of its transport header).
#[inline(always)]
fn parse_inner(
    ctx: &SkBuffContext,
    off: usize,
    family: u8,
    inner: &mut Tuple,
) -> Result<(), ParseError> {
    let (l4, _) = if family == 4 {
        parse_ipv4(ctx, off, inner)?
    } else {
        parse_ipv6(ctx, off, inner)?
    };
    match inner.proto {
        TCP | UDP | SCTP => {
            inner.sport = u16::from_be(load(ctx, l4)?);
            inner.dport = u16::from_be(load(ctx, l4 + 2)?);
        }
        ICMP | ICMPV6 => {
            let ty: u8 = load(ctx, l4)?;
            let id = u16::from_be(load(ctx, l4 + 4)?);
            if ty == ICMP_ECHO_REQUEST || ty == ICMPV6_ECHO_REQUEST {
                inner.sport = id;
            } else {
                inner.dport = id;
            }
        }
        _ => {}
    }
    Ok(())
}
