//! Packet robustness on the real, verifier-accepted programs (root only): crafted packets go
//! through `BPF_PROG_TEST_RUN` while this test process sits in a pod's cgroup, and none that policy
//! denies may come out allowed — truncated headers, bogus lengths, IPv4 options, IPv6 extension
//! header chains, non-first fragments dressed up as an allowed port, ICMP errors quoting flows
//! that were never tracked, unsolicited ICMP. Control cases (the allowed port, through the same options and
//! extension headers) must pass, so a parser that dropped everything would fail too.
//!
//! Every run must also count exactly one verdict reason (`COUNTERS`, docs/design.md#counters),
//! the one the specification names for the case where it names one; a frame the kernel refuses
//! counts nothing. `BPF_PROG_TEST_RUN` builds a linear skb (the whole frame in the head), so
//! headers outside the linear area are proven with real packets in `tests/tests/e2e_fastpath.rs`.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU16, Ordering},
};

use bulkhead_tests::{cgroup::TempCgroup, skip_unless_root};
use firewall_agent::events::reader::counter;
use firewall_agent::{
    cgroups::cgroup2_root,
    compiler::{CompileOptions, IdAllocator, compile},
    datapath::{Datapath, LoadOptions, test_run::TestRunError, writer::MapWriter},
    source::file::parse_objects,
};
use firewall_common::{Counter, Mode, programs};

const PASS: u32 = 1;
const DROP: u32 = 0;
/// The kernel refuses to build an skb from the frame (`BPF_PROG_TEST_RUN` fails with EINVAL):
/// an IP header shorter than its fixed part never reaches a `cgroup_skb` program at all.
const KERNEL_REFUSES: u32 = u32::MAX;

const POD: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// A pod of namespace c, which a admits on every protocol.
const TRUSTED: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
/// A pod of namespace a, like the test pod.
const SIBLING: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 4);
/// An address no object claims.
const WORLD: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const WORLD6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
const TRUSTED6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
/// Allowed a -> b; every other port is denied (enforce).
const ALLOWED: u16 = 80;
const DENIED: u16 = 81;

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Namespace
metadata: {name: b}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: a, uid: test-pod}
spec: {nodeName: node-1, containers: []}
status: {phase: Running, podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: b, uid: remote-pod}
spec: {nodeName: node-2, containers: []}
status: {phase: Running, podIPs: [{ip: 10.0.0.2}, {ip: "fd00::2"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: trusted, namespace: c, uid: trusted-pod}
spec: {nodeName: node-2, containers: []}
status: {phase: Running, podIPs: [{ip: 10.0.0.3}, {ip: "fd00::3"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: sibling, namespace: a, uid: sibling-pod}
spec: {nodeName: node-2, containers: []}
status: {phase: Running, podIPs: [{ip: 10.0.0.4}, {ip: "fd00::4"}]}
---
apiVersion: bulkhead.dev/v1alpha1
kind: ClusterFirewall
metadata: {name: baseline}
spec: {rules: [], defaults: {crossNamespace: Deny, mode: Enforce}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: from-a, namespace: b}
spec:
  ingress:
    - from: {namespaces: [a]}
      ports: [{protocol: TCP, port: 80}, {protocol: UDP, port: 80}]
---
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: from-c, namespace: a}
spec:
  ingress:
    - from: {namespaces: [c]}
  # Egress only to b: the world is denied, so a reply to the world passes only when tracked.
  egress:
    - to: {namespaces: [b]}
"#;

// ---------- packet building (checksums are irrelevant to the programs) ----------

static SPORT: AtomicU16 = AtomicU16::new(40_000);

/// A fresh source port, so no case rides on an earlier case's conntrack entry.
fn sport() -> u16 {
    SPORT.fetch_add(1, Ordering::Relaxed)
}

fn eth(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f[0] = 0x02;
    f[6] = 0x02;
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02; // SYN
    t
}

/// An ICMP or ICMPv6 message: type, code, checksum, then `rest` (the echo id and sequence, the
/// neighbour discovery target, ...).
fn icmp(ty: u8, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend_from_slice(rest);
    m
}

/// An echo request or reply body: identifier `id`, sequence 1.
fn echo_body(id: u16) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(&[0, 1]);
    b
}

/// A port unreachable error quoting a UDP datagram from `src` to `dst`.
fn unreachable_for(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let quoted = V4::new(src, dst, 17).packet(&udp(sport(), DENIED, 0));
    let mut m = icmp(3, &[0; 4]);
    m[1] = 3;
    m.extend_from_slice(&quoted[14..]);
    m
}

/// A neighbour solicitation/advertisement body: reserved/flags, then the target address.
fn nd_body(target: Ipv6Addr) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    b.extend_from_slice(&target.octets());
    b
}

fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = vec![0u8; 8 + payload];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    u
}

/// IPv4 header fields a case may bend.
#[derive(Clone)]
struct V4 {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: Vec<u8>,
    /// Overrides the IHL nibble (header length in 32-bit words).
    ihl: Option<u8>,
    /// Overrides total length.
    total_len: Option<u16>,
    /// More-fragments flag and fragment offset (8-byte units).
    mf: bool,
    frag_offset: u16,
}

impl V4 {
    fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            options: Vec::new(),
            ihl: None,
            total_len: None,
            mf: false,
            frag_offset: 0,
        }
    }

    fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let hlen = 20 + self.options.len();
        let mut h = vec![0u8; 20];
        h[0] = 0x40 | self.ihl.unwrap_or((hlen / 4) as u8);
        let total = self.total_len.unwrap_or((hlen + payload.len()) as u16);
        h[2..4].copy_from_slice(&total.to_be_bytes());
        let frag = (u16::from(self.mf) << 13) | self.frag_offset;
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[8] = 64;
        h[9] = self.proto;
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        h.extend_from_slice(&self.options);
        h.extend_from_slice(payload);
        eth(0x0800, &h)
    }
}

/// An IPv6 packet: `exts` are (next-header value of the extension, its bytes), chained in order.
fn v6(src: Ipv6Addr, dst: Ipv6Addr, exts: &[(u8, Vec<u8>)], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (_, bytes)) in exts.iter().enumerate() {
        let mut b = bytes.clone();
        b[0] = exts.get(i + 1).map_or(proto, |(nh, _)| *nh);
        body.extend_from_slice(&b);
    }
    body.extend_from_slice(payload);
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
    h[6] = exts.first().map_or(proto, |(nh, _)| *nh);
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(&body);
    eth(0x86DD, &h)
}

/// An 8-byte options-style extension header (hop-by-hop 0, destination options 60).
fn opts_ext() -> Vec<u8> {
    vec![0, 0, 1, 4, 0, 0, 0, 0] // next header (filled in), length 0, PadN
}

/// A routing header (43), type 0 segments left 0, 8 bytes.
fn routing_ext() -> Vec<u8> {
    vec![0, 0, 0, 0, 0, 0, 0, 0]
}

/// A TCP segment with `flags` (SYN 0x02, ACK 0x10, ...).
fn tcp_flags(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = tcp_syn(sport, dport);
    t[13] = flags;
    t
}

/// An authentication header (51): 12 bytes, length field 1 ((1 + 2) * 4).
fn ah_ext() -> Vec<u8> {
    vec![0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]
}

/// A fragment header (44) with `offset` (8-byte units) and the M flag.
fn frag_ext(offset: u16, more: bool) -> Vec<u8> {
    let v = (offset << 3) | u16::from(more);
    let b = v.to_be_bytes();
    vec![0, 0, b[0], b[1], 0, 0, 0, 1]
}

// ---------- the harness ----------

/// Either outcome of a frame that must not pass: dropped by the program, or refused by the kernel
/// before any program runs.
const NOT_PASS: u32 = u32::MAX - 1;

struct Case {
    what: String,
    program: &'static str,
    frame: Vec<u8>,
    want: u32,
    /// The verdict reasons the specification allows for this case (one is counted); `None`: any
    /// reason whose verdict is `want`.
    reasons: Option<&'static [Counter]>,
}

impl Case {
    /// The specification names the reason (or the reasons it leaves open).
    fn because(mut self, reasons: &'static [Counter]) -> Case {
        self.reasons = Some(reasons);
        self
    }
}

fn egress(what: impl Into<String>, frame: Vec<u8>, want: u32) -> Case {
    Case {
        what: what.into(),
        program: programs::EGRESS,
        frame,
        want,
        reasons: None,
    }
}

fn ingress(what: impl Into<String>, frame: Vec<u8>, want: u32) -> Case {
    Case {
        what: what.into(),
        program: programs::INGRESS,
        frame,
        want,
        reasons: None,
    }
}

/// Verdict reasons of a passed packet (docs/design.md#counters): each run counts one of these or
/// one of [`DROPPED`].
const PASSED: &[Counter] = &[
    Counter::NotPod,
    Counter::ConntrackHit,
    Counter::SameNamespace,
    Counter::Dns,
    Counter::Unrestricted,
    Counter::PolicyAllow,
    Counter::PolicyAudit,
    Counter::PolicyOff,
    Counter::FragmentPass,
    Counter::IcmpNeighbor,
    Counter::IcmpUnsolicitedPass,
];
/// Verdict reasons of a dropped packet (the test pod's namespace is in enforce).
const DROPPED: &[Counter] = &[
    Counter::PolicyDrop,
    Counter::FragmentDrop,
    Counter::Malformed,
    Counter::IcmpUnsolicitedDrop,
];
const ALLOW: &[Counter] = &[Counter::PolicyAllow];
const POLICY_DROP: &[Counter] = &[Counter::PolicyDrop];
const CT_HIT: &[Counter] = &[Counter::ConntrackHit];
const FRAG_DROP: &[Counter] = &[Counter::FragmentDrop];
const MALFORMED: &[Counter] = &[Counter::Malformed];
/// A header that lies about a length or is cut short: malformed, or (when the parser found the
/// ports anyway) denied by policy.
const MALFORMED_OR_DENIED: &[Counter] = &[Counter::Malformed, Counter::PolicyDrop];

fn cases() -> Vec<Case> {
    let tcp = |dport| tcp_syn(sport(), dport);
    let base = V4::new(POD, PEER, 6);
    let mut out = vec![
        // Controls: the policy itself.
        egress(
            "IPv4 TCP SYN to the allowed port",
            base.packet(&tcp(ALLOWED)),
            PASS,
        ),
        egress(
            "IPv4 TCP SYN to a denied port",
            base.packet(&tcp(DENIED)),
            DROP,
        ),
        egress(
            "IPv4 UDP to the allowed port",
            V4::new(POD, PEER, 17).packet(&udp(sport(), ALLOWED, 4)),
            PASS,
        ),
        egress(
            "IPv4 UDP to a denied port",
            V4::new(POD, PEER, 17).packet(&udp(sport(), DENIED, 4)),
            DROP,
        ),
    ];
    // IPv4 options: the transport header moves; the allowed port must still be found.
    let mut with_opts = base.clone();
    with_opts.options = vec![1; 40]; // 40 NOPs: the longest IPv4 header (IHL 15)
    out.push(egress(
        "IPv4 with 40 bytes of options, allowed port",
        with_opts.packet(&tcp(ALLOWED)),
        PASS,
    ));
    out.push(egress(
        "IPv4 with 40 bytes of options, denied port",
        with_opts.packet(&tcp(DENIED)),
        DROP,
    ));
    // Truncated and bogus headers.
    let full = base.packet(&tcp(DENIED));
    out.push(egress(
        "IPv4 header cut at 12 bytes",
        full[..14 + 12].to_vec(),
        KERNEL_REFUSES,
    ));
    out.push(egress(
        "IPv4 header only, no transport header",
        full[..14 + 20].to_vec(),
        DROP,
    ));
    out.push(egress(
        "TCP header cut at 3 bytes (half a port)",
        full[..14 + 20 + 3].to_vec(),
        DROP,
    ));
    let mut short_ihl = base.clone();
    short_ihl.ihl = Some(4);
    out.push(egress(
        "IHL 4 (shorter than an IPv4 header)",
        short_ihl.packet(&tcp(DENIED)),
        DROP,
    ));
    let mut long_ihl = base.clone();
    long_ihl.ihl = Some(15);
    out.push(egress(
        "IHL 15 but no options: the 'transport header' is the real one shifted",
        long_ihl.packet(&tcp(DENIED)),
        DROP,
    ));
    let mut big_total = base.clone();
    big_total.total_len = Some(1500);
    out.push(egress(
        "total length beyond the packet",
        big_total.packet(&tcp(DENIED)),
        DROP,
    ));
    let mut small_total = base.clone();
    small_total.total_len = Some(20);
    out.push(egress(
        "total length covering only the IP header",
        small_total.packet(&tcp(DENIED)),
        DROP,
    ));
    // Fragments: a non-first fragment has no transport header; bytes that look like one with
    // the allowed port must not open the flow.
    let mut later = base.clone();
    later.frag_offset = 3;
    out.push(egress(
        "IPv4 non-first fragment whose payload looks like a SYN to the allowed port",
        later.packet(&tcp(ALLOWED)),
        DROP,
    ));
    let mut first = base;
    first.mf = true;
    out.push(egress(
        "IPv4 first fragment to a denied port",
        first.packet(&tcp(DENIED)),
        DROP,
    ));
    // ICMP: an echo across namespaces is denied; an error quoting a flow never tracked is too.
    let icmp_echo = {
        let mut p = vec![0u8; 8];
        p[0] = 8;
        p
    };
    out.push(egress(
        "ICMP echo request across namespaces",
        V4::new(POD, PEER, 1).packet(&icmp_echo),
        DROP,
    ));
    let quoted = V4::new(PEER, POD, 6).packet(&tcp_syn(ALLOWED, sport()))[14..].to_vec();
    let mut unreachable = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    unreachable.extend_from_slice(&quoted);
    out.push(egress(
        "ICMP port unreachable quoting a flow that was never tracked",
        V4::new(POD, PEER, 1).packet(&unreachable),
        DROP,
    ));
    let mut truncated_quote = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    truncated_quote.extend_from_slice(&quoted[..10]);
    out.push(egress(
        "ICMP error whose quoted header is cut short",
        V4::new(POD, PEER, 1).packet(&truncated_quote),
        DROP,
    ));

    out.extend(icmp_cases());

    // IPv6.
    out.push(egress(
        "IPv6 TCP SYN to the allowed port",
        v6(POD6, PEER6, &[], 6, &tcp(ALLOWED)),
        PASS,
    ));
    out.push(egress(
        "IPv6 TCP SYN to a denied port",
        v6(POD6, PEER6, &[], 6, &tcp(DENIED)),
        DROP,
    ));
    let chain = vec![(0u8, opts_ext()), (43, routing_ext()), (60, opts_ext())];
    out.push(egress(
        "IPv6 hop-by-hop + routing + destination options, allowed port",
        v6(POD6, PEER6, &chain, 6, &tcp(ALLOWED)),
        PASS,
    ));
    out.push(egress(
        "IPv6 hop-by-hop + routing + destination options, denied port",
        v6(POD6, PEER6, &chain, 6, &tcp(DENIED)),
        DROP,
    ));
    let long_chain: Vec<(u8, Vec<u8>)> = (0..12).map(|_| (60u8, opts_ext())).collect();
    out.push(egress(
        "IPv6 with 12 destination-options headers (beyond the parser's walk) to the allowed port",
        v6(POD6, PEER6, &long_chain, 6, &tcp(ALLOWED)),
        DROP,
    ));
    out.push(egress(
        "IPv6 non-first fragment whose payload looks like a SYN to the allowed port",
        v6(POD6, PEER6, &[(44, frag_ext(3, false))], 6, &tcp(ALLOWED)),
        DROP,
    ));
    out.push(egress(
        "IPv6 first fragment to a denied port",
        v6(POD6, PEER6, &[(44, frag_ext(0, true))], 6, &tcp(DENIED)),
        DROP,
    ));
    let cut_ext = v6(POD6, PEER6, &chain, 6, &tcp(DENIED));
    out.push(egress(
        "IPv6 extension header cut short",
        cut_ext[..14 + 40 + 12].to_vec(),
        DROP,
    ));
    out.push(egress(
        "IPv6 header cut at 30 bytes",
        cut_ext[..14 + 30].to_vec(),
        KERNEL_REFUSES,
    ));
    let mut bogus_ext_len = v6(POD6, PEER6, &[(60, opts_ext())], 6, &tcp(DENIED));
    bogus_ext_len[14 + 40 + 1] = 255; // claims 2 KiB of options
    out.push(egress(
        "IPv6 extension header length beyond the packet",
        bogus_ext_len,
        DROP,
    ));

    // Ingress into the pod: another namespace is denied (a has no rule admitting b), the world
    // is not restricted.
    out.push(ingress(
        "ingress from another namespace's pod",
        V4::new(PEER, POD, 6).packet(&tcp_syn(sport(), DENIED)),
        DROP,
    ));
    let mut ingress_frag = V4::new(PEER, POD, 6);
    ingress_frag.frag_offset = 5;
    out.push(ingress(
        "ingress non-first fragment from another namespace",
        ingress_frag.packet(&tcp_syn(sport(), DENIED)),
        DROP,
    ));
    out.push(ingress(
        "ingress truncated IPv4 header from another namespace",
        V4::new(PEER, POD, 6).packet(&tcp_syn(sport(), DENIED))[..14 + 16].to_vec(),
        KERNEL_REFUSES,
    ));
    out.push(ingress(
        "ingress from the world (not restricted)",
        V4::new(WORLD, POD, 6).packet(&tcp_syn(sport(), DENIED)),
        PASS,
    ));
    out.extend(truncation_cases());
    out.extend(option_cases());
    out.extend(fragment_cases());
    out.extend(ext_header_cases());
    out.extend(reply_cases());
    out
}

/// Every prefix of a frame whose ports the policy denies must not pass (the kernel may refuse the
/// shortest ones); nor may a prefix of an allowed frame cut before its ports are whole.
fn truncation_cases() -> Vec<Case> {
    let v4 = |proto, l4: &[u8]| V4::new(POD, PEER, proto).packet(l4);
    let chain = vec![(0u8, opts_ext()), (43, routing_ext()), (60, opts_ext())];
    let frames: Vec<(&str, Vec<u8>, usize)> = vec![
        (
            "IPv4 TCP SYN to a denied port",
            v4(6, &tcp_syn(sport(), DENIED)),
            0,
        ),
        (
            "IPv4 UDP to a denied port",
            v4(17, &udp(sport(), DENIED, 4)),
            0,
        ),
        (
            "IPv6 TCP SYN to a denied port",
            v6(POD6, PEER6, &[], 6, &tcp_syn(sport(), DENIED)),
            0,
        ),
        (
            "IPv6 UDP through hop-by-hop + routing + destination options to a denied port",
            v6(POD6, PEER6, &chain, 17, &udp(sport(), DENIED, 4)),
            0,
        ),
        // Allowed: only the cuts before the ports are whole (IP header + 4 bytes) count.
        (
            "IPv4 TCP SYN to the allowed port",
            v4(6, &tcp_syn(sport(), ALLOWED)),
            20 + 4,
        ),
        (
            "IPv6 UDP through three extension headers to the allowed port",
            v6(POD6, PEER6, &chain, 17, &udp(sport(), ALLOWED, 4)),
            40 + 24 + 4,
        ),
    ];
    let mut out = Vec::new();
    for (what, frame, ports_end) in frames {
        let l3 = frame.len() - 14;
        let end = if ports_end == 0 { l3 } else { ports_end };
        for cut in 0..end {
            out.push(
                egress(
                    format!("{what}, cut to {cut} of {l3} bytes"),
                    frame[..14 + cut].to_vec(),
                    NOT_PASS,
                )
                .because(MALFORMED_OR_DENIED),
            );
        }
    }
    out
}

/// The allowed port (passes, `policy_allow`) and a denied one (dropped, `policy_drop`).
const BOTH_PORTS: [(u16, u32, &[Counter]); 2] =
    [(ALLOWED, PASS, ALLOW), (DENIED, DROP, POLICY_DROP)];

/// A first packet to `port`: a TCP SYN (`proto` 6) or a UDP datagram.
fn first_packet(proto: u8, port: u16) -> Vec<u8> {
    if proto == 6 {
        tcp_syn(sport(), port)
    } else {
        udp(sport(), port, 4)
    }
}

/// IPv4 options of every length move the transport header; it must be found behind them.
fn option_cases() -> Vec<Case> {
    let mut out = Vec::new();
    for words in 1..=10usize {
        for (proto, name) in [(6u8, "TCP"), (17, "UDP")] {
            let mut h = V4::new(POD, PEER, proto);
            // Record-route-like bytes, then NOPs: the parser must skip options, not read them.
            h.options = vec![1; words * 4];
            h.options[0] = 7;
            h.options[1] = (words * 4) as u8;
            h.options[2] = 4;
            for (port, want, reasons) in BOTH_PORTS {
                let l4 = first_packet(proto, port);
                out.push(
                    egress(
                        format!(
                            "IPv4 {name} with {} bytes of options (IHL {}) to port {port}",
                            words * 4,
                            5 + words
                        ),
                        h.packet(&l4),
                        want,
                    )
                    .because(reasons),
                );
            }
        }
    }
    out
}

/// Non-first fragments are never classified as allowed: dropped across namespaces in enforce
/// (`fragment_drop`), even when their bytes look like an allowed or tracked flow's, even from the
/// world (step 5 comes before the always-allowed cases); passed within one namespace. A first
/// fragment carries its ports and is judged like any packet.
fn fragment_cases() -> Vec<Case> {
    let mut out = Vec::new();
    let tracked = sport();
    out.push(
        egress(
            "IPv4 TCP SYN to the allowed port (opens the flow the next fragment imitates)",
            V4::new(POD, PEER, 6).packet(&tcp_syn(tracked, ALLOWED)),
            PASS,
        )
        .because(ALLOW),
    );
    for (offset, mf, what) in [
        (1u16, false, "IPv4 last fragment at offset 8"),
        (1, true, "IPv4 middle fragment at offset 8"),
        (0x1fff, false, "IPv4 fragment at the largest offset"),
    ] {
        for (proto, l4, flow) in [
            (
                6u8,
                tcp_flags(tracked, ALLOWED, 0x10),
                "a tracked TCP flow's ACK",
            ),
            (17, udp(sport(), ALLOWED, 4), "UDP to the allowed port"),
        ] {
            let mut h = V4::new(POD, PEER, proto);
            h.frag_offset = offset;
            h.mf = mf;
            out.push(
                egress(
                    format!("{what} whose payload looks like {flow}"),
                    h.packet(&l4),
                    DROP,
                )
                .because(FRAG_DROP),
            );
        }
    }
    let mut first = V4::new(POD, PEER, 17);
    first.mf = true;
    out.push(
        egress(
            "IPv4 first fragment of UDP to a denied port",
            first.packet(&udp(sport(), DENIED, 4)),
            DROP,
        )
        .because(POLICY_DROP),
    );
    let mut sibling = V4::new(POD, SIBLING, 6);
    sibling.frag_offset = 3;
    out.push(
        egress(
            "IPv4 non-first fragment to a pod of the same namespace",
            sibling.packet(&tcp_syn(sport(), DENIED)),
            PASS,
        )
        .because(&[Counter::SameNamespace, Counter::FragmentPass]),
    );
    let mut from_world = V4::new(WORLD, POD, 6);
    from_world.frag_offset = 3;
    out.push(
        ingress(
            "IPv4 non-first fragment from the world",
            from_world.packet(&tcp_syn(sport(), ALLOWED)),
            DROP,
        )
        .because(FRAG_DROP),
    );
    let hbh = (0u8, opts_ext());
    for (exts, what) in [
        (
            vec![hbh.clone(), (44, frag_ext(3, true))],
            "IPv6 middle fragment after hop-by-hop",
        ),
        (
            vec![(60, opts_ext()), (44, frag_ext(1, false))],
            "IPv6 last fragment after destination options",
        ),
        (
            vec![(44, frag_ext(0x1fff, false))],
            "IPv6 fragment at the largest offset",
        ),
    ] {
        out.push(
            egress(
                format!("{what} whose payload looks like UDP to the allowed port"),
                v6(POD6, PEER6, &exts, 17, &udp(sport(), ALLOWED, 4)),
                DROP,
            )
            .because(FRAG_DROP),
        );
    }
    out.push(
        ingress(
            "IPv6 non-first fragment from another namespace's pod",
            v6(
                PEER6,
                POD6,
                &[(44, frag_ext(2, false))],
                6,
                &tcp_syn(sport(), ALLOWED),
            ),
            DROP,
        )
        .because(FRAG_DROP),
    );
    out.push(
        egress(
            "IPv6 first fragment of UDP to a denied port behind hop-by-hop",
            v6(
                POD6,
                PEER6,
                &[hbh, (44, frag_ext(0, true))],
                17,
                &udp(sport(), DENIED, 4),
            ),
            DROP,
        )
        .because(POLICY_DROP),
    );
    out
}

/// Builds one extension header's bytes.
type ExtBuilder = fn() -> Vec<u8>;

/// Each IPv6 extension header type, alone and chained, on both hooks: the transport header behind
/// it decides. Headers the parser may not walk (ESP, mobility, HIP, shim6, experimental, no next
/// header) hide the ports: whatever the parser does, a denied port must not pass.
fn ext_header_cases() -> Vec<Case> {
    let mut out = Vec::new();
    let walked: [(u8, ExtBuilder, &str); 4] = [
        (0, opts_ext, "hop-by-hop"),
        (43, routing_ext, "routing"),
        (60, opts_ext, "destination options"),
        (51, ah_ext, "authentication header"),
    ];
    for (nh, ext, name) in walked {
        for (proto, pname) in [(6u8, "TCP"), (17, "UDP")] {
            for (port, want, reasons) in BOTH_PORTS {
                let l4 = first_packet(proto, port);
                out.push(
                    egress(
                        format!("IPv6 {name} then {pname} to port {port}"),
                        v6(POD6, PEER6, &[(nh, ext())], proto, &l4),
                        want,
                    )
                    .because(reasons),
                );
            }
        }
        out.push(
            ingress(
                format!("ingress IPv6 {name} then TCP from the admitted namespace"),
                v6(TRUSTED6, POD6, &[(nh, ext())], 6, &tcp_syn(sport(), DENIED)),
                PASS,
            )
            .because(ALLOW),
        );
        out.push(
            ingress(
                format!("ingress IPv6 {name} then TCP from another namespace's pod"),
                v6(PEER6, POD6, &[(nh, ext())], 6, &tcp_syn(sport(), ALLOWED)),
                DROP,
            )
            .because(POLICY_DROP),
        );
    }
    // Chains of up to 8 headers (the design's limit) of every walked kind.
    let chain: Vec<(u8, Vec<u8>)> = vec![
        (0, opts_ext()),
        (60, opts_ext()),
        (43, routing_ext()),
        (51, ah_ext()),
        (60, opts_ext()),
        (43, routing_ext()),
        (60, opts_ext()),
        (51, ah_ext()),
    ];
    for n in 2..=chain.len() {
        for (port, want, reasons) in BOTH_PORTS {
            out.push(
                egress(
                    format!("IPv6 chain of {n} extension headers then UDP to port {port}"),
                    v6(POD6, PEER6, &chain[..n], 17, &udp(sport(), port, 4)),
                    want,
                )
                .because(reasons),
            );
        }
    }
    let long: Vec<(u8, Vec<u8>)> = (0..9).map(|_| (60u8, opts_ext())).collect();
    out.push(
        egress(
            "IPv6 with 9 destination-options headers (more than the 8 the parser walks) to the allowed port",
            v6(POD6, PEER6, &long, 17, &udp(sport(), ALLOWED, 4)),
            DROP,
        )
        .because(MALFORMED),
    );
    for (nh, name) in [
        (50u8, "ESP"),
        (135, "mobility"),
        (139, "HIP"),
        (140, "shim6"),
        (253, "experimental 253"),
        (254, "experimental 254"),
    ] {
        out.push(egress(
            format!("IPv6 {name} header then TCP to a denied port"),
            v6(
                POD6,
                PEER6,
                &[(nh, opts_ext())],
                6,
                &tcp_syn(sport(), DENIED),
            ),
            DROP,
        ));
    }
    out.push(
        egress(
            "IPv6 no next header (59) after destination options",
            v6(POD6, PEER6, &[(60, opts_ext())], 59, &[]),
            DROP,
        )
        .because(MALFORMED_OR_DENIED),
    );
    out
}

/// Replies: of an allowed connection, and of an exempt one (ingress from the world is always
/// allowed and tracked, so its replies pass although the pod's egress to the world is denied).
fn reply_cases() -> Vec<Case> {
    let mut out = Vec::new();
    let (c, w) = (sport(), sport());
    out.extend([
        ingress(
            "TCP SYN from the world (exempt: tracked)",
            V4::new(WORLD, POD, 6).packet(&tcp_syn(w, 8080)),
            PASS,
        )
        .because(&[Counter::Unrestricted]),
        egress(
            "the pod's SYN-ACK to the world's SYN",
            V4::new(POD, WORLD, 6).packet(&tcp_flags(8080, w, 0x12)),
            PASS,
        )
        .because(CT_HIT),
        egress(
            "the pod's ACK on the world's connection",
            V4::new(POD, WORLD, 6).packet(&tcp_flags(8080, w, 0x10)),
            PASS,
        )
        .because(CT_HIT),
        ingress(
            "the world's ACK on its connection",
            V4::new(WORLD, POD, 6).packet(&tcp_flags(w, 8080, 0x10)),
            PASS,
        )
        .because(CT_HIT),
        egress(
            "a new TCP SYN from the pod to the world (denied by its egress rules)",
            V4::new(POD, WORLD, 6).packet(&tcp_syn(sport(), 8080)),
            DROP,
        )
        .because(POLICY_DROP),
        ingress(
            "UDP from the world over IPv6 (exempt: tracked)",
            v6(WORLD6, POD6, &[], 17, &udp(w, 53, 4)),
            PASS,
        )
        .because(&[Counter::Unrestricted]),
        egress(
            "the pod's UDP reply to the world over IPv6, behind destination options",
            v6(POD6, WORLD6, &[(60, opts_ext())], 17, &udp(53, w, 4)),
            PASS,
        )
        .because(CT_HIT),
        egress(
            "new UDP from the pod to the world over IPv6 (denied by its egress rules)",
            v6(POD6, WORLD6, &[], 17, &udp(sport(), 53, 4)),
            DROP,
        )
        .because(POLICY_DROP),
        egress(
            "TCP SYN to the allowed port (opens the connection)",
            V4::new(POD, PEER, 6).packet(&tcp_syn(c, ALLOWED)),
            PASS,
        )
        .because(ALLOW),
        ingress(
            "its SYN-ACK",
            V4::new(PEER, POD, 6).packet(&tcp_flags(ALLOWED, c, 0x12)),
            PASS,
        )
        .because(CT_HIT),
        egress(
            "its ACK",
            V4::new(POD, PEER, 6).packet(&tcp_flags(c, ALLOWED, 0x10)),
            PASS,
        )
        .because(CT_HIT),
        ingress(
            "a bare SYN on its reversed tuple (from the peer's port to the pod's): judged, not a reply",
            V4::new(PEER, POD, 6).packet(&tcp_syn(ALLOWED, c)),
            DROP,
        )
        .because(POLICY_DROP),
        egress(
            "UDP to the allowed port behind hop-by-hop (opens the flow)",
            v6(POD6, PEER6, &[(0, opts_ext())], 17, &udp(c, ALLOWED, 4)),
            PASS,
        )
        .because(ALLOW),
        egress(
            "its next datagram, without the extension header",
            v6(POD6, PEER6, &[], 17, &udp(c, ALLOWED, 4)),
            PASS,
        )
        .because(CT_HIT),
        ingress(
            "its reply behind routing + destination options",
            v6(
                PEER6,
                POD6,
                &[(43, routing_ext()), (60, opts_ext())],
                17,
                &udp(ALLOWED, c, 4),
            ),
            PASS,
        )
        .because(CT_HIT),
    ]);
    out
}

/// ICMP other than echo requests opens no flow: the link's own control messages (ICMPv6 neighbour
/// and router discovery, MLD) pass whatever the policy says; replies and other messages that no
/// tracked flow vouches for are dropped across namespaces (enforce), unless the local side's
/// ingress policy admits the request an echo reply answers (its kernel answered without a socket).
fn icmp_cases() -> Vec<Case> {
    let nd = |ty, src, dst, target| v6(src, dst, &[], 58, &icmp(ty, &nd_body(target)));
    let all_routers: Ipv6Addr = "ff02::2".parse().expect("address");
    let mld_routers: Ipv6Addr = "ff02::16".parse().expect("address");
    let id = || sport();
    let mut out = Vec::new();
    for (ty, to, from) in [
        (
            135,
            "ICMPv6 neighbour solicitation to another namespace's pod",
            "ICMPv6 neighbour solicitation from another namespace's pod",
        ),
        (
            136,
            "ICMPv6 neighbour advertisement to another namespace's pod",
            "ICMPv6 neighbour advertisement from another namespace's pod",
        ),
    ] {
        out.push(egress(to, nd(ty, POD6, PEER6, PEER6), PASS));
        out.push(ingress(from, nd(ty, PEER6, POD6, POD6), PASS));
    }
    out.extend([
        egress(
            "ICMPv6 router solicitation",
            v6(POD6, all_routers, &[], 58, &icmp(133, &[0; 4])),
            PASS,
        ),
        ingress(
            "ICMPv6 router solicitation from another namespace's pod",
            v6(PEER6, POD6, &[], 58, &icmp(133, &[0; 4])),
            PASS,
        ),
        egress(
            "ICMPv6 MLDv2 report",
            v6(POD6, mld_routers, &[], 58, &icmp(143, &[0; 4])),
            PASS,
        ),
        egress(
            "ICMP echo reply no request opened (to another namespace)",
            V4::new(POD, PEER, 1).packet(&icmp(0, &echo_body(id()))),
            DROP,
        ),
        ingress(
            "ICMP echo reply no request opened (from another namespace)",
            V4::new(PEER, POD, 1).packet(&icmp(0, &echo_body(id()))),
            DROP,
        ),
        ingress(
            "ICMPv6 echo reply no request opened (from another namespace)",
            v6(PEER6, POD6, &[], 58, &icmp(129, &echo_body(id()))),
            DROP,
        ),
        egress(
            "ICMP timestamp request across namespaces",
            V4::new(POD, PEER, 1).packet(&icmp(13, &[0; 16])),
            DROP,
        ),
        ingress(
            "ICMP timestamp request from another namespace",
            V4::new(PEER, POD, 1).packet(&icmp(13, &[0; 16])),
            DROP,
        ),
        egress(
            "ICMP echo reply answering a request the local ingress policy admits",
            V4::new(POD, TRUSTED, 1).packet(&icmp(0, &echo_body(id()))),
            PASS,
        ),
        egress(
            "ICMP port unreachable answering UDP the local ingress policy admits",
            V4::new(POD, TRUSTED, 1).packet(&unreachable_for(TRUSTED, POD)),
            PASS,
        ),
        egress(
            "ICMP port unreachable answering UDP from the world (ingress not restricted)",
            V4::new(POD, WORLD, 1).packet(&unreachable_for(WORLD, POD)),
            PASS,
        ),
        egress(
            "ICMP port unreachable answering UDP the local ingress policy denies",
            V4::new(POD, PEER, 1).packet(&unreachable_for(PEER, POD)),
            DROP,
        ),
        egress(
            "ICMP timestamp reply to a namespace the local ingress policy admits",
            V4::new(POD, TRUSTED, 1).packet(&icmp(14, &[0; 16])),
            DROP,
        ),
    ]);
    out
}

/// Checks the counter deltas of one run: none when the kernel refused the frame; else exactly one
/// verdict reason, one of those the case allows.
fn counted_as_specified(
    case: &Case,
    ran: bool,
    before: &[u64; Counter::ALL.len()],
    after: &[u64; Counter::ALL.len()],
) -> Result<(), String> {
    let moved: Vec<(Counter, u64)> = Counter::ALL
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a != b)
        .map(|(c, (b, a))| (*c, a - b))
        .collect();
    let names = |v: &[(Counter, u64)]| {
        v.iter()
            .map(|(c, n)| format!("{} +{n}", c.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !ran {
        return if moved.is_empty() {
            Ok(())
        } else {
            Err(format!("never ran, yet counted {}", names(&moved)))
        };
    }
    let verdicts: Vec<(Counter, u64)> = moved
        .iter()
        .copied()
        .filter(|(c, _)| PASSED.contains(c) || DROPPED.contains(c))
        .collect();
    let allowed = case
        .reasons
        .unwrap_or(if case.want == PASS { PASSED } else { DROPPED });
    match verdicts.as_slice() {
        [(c, 1)] if allowed.contains(c) => Ok(()),
        _ => Err(format!(
            "counted {} (all counters that moved: {}); expected exactly one of {}",
            names(&verdicts),
            names(&moved),
            allowed
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(" | ")
        )),
    }
}

#[test]
fn crafted_packets_are_never_allowed_where_policy_denies() {
    skip_unless_root!("crafted_packets_are_never_allowed_where_policy_denies");
    let (dp, state, events) = Datapath::load(&LoadOptions::default()).expect("load");
    let cg = TempCgroup::enter(
        &cgroup2_root().expect("a cgroup2 mount"),
        &format!("bulkhead-packets-test-{}", std::process::id()),
    )
    .expect("test cgroup");
    let mut model = parse_objects(CLUSTER).expect("cluster");
    for p in &mut model.pods {
        if p.uid == "test-pod" {
            p.cgroup_ids = vec![cg.id().expect("cgroup id")];
        }
    }
    let opts = CompileOptions {
        node_name: "node-1".into(),
        ..Default::default()
    };
    let compiled = compile(&model, &opts, &mut IdAllocator::default());
    assert!(compiled.rejected.is_empty(), "{:?}", compiled.rejected);
    assert!(
        compiled
            .maps
            .modes
            .values()
            .all(|m| *m == Mode::Enforce as u32)
            || compiled.maps.default_mode == Mode::Enforce as u32
    );
    let mut writer = MapWriter::new(state).expect("maps");
    writer.apply(&compiled.maps).expect("apply");
    assert!(
        compiled
            .maps
            .ipv4
            .keys()
            .any(|(a, _)| IpAddr::V4(*a) == IpAddr::V4(PEER))
    );

    let mut wrong = Vec::new();
    let all = cases();
    let read = || Counter::ALL.map(|c| counter(&events.counters, c));
    for case in &all {
        let before = read();
        let ran = match dp.test_run(case.program, &case.frame) {
            Ok(got) if got == case.want || (case.want == NOT_PASS && got == DROP) => true,
            Err(TestRunError::Run { source, .. })
                if matches!(case.want, KERNEL_REFUSES | NOT_PASS)
                    && source.raw_os_error() == Some(libc::EINVAL) =>
            {
                false
            }
            Ok(got) => {
                wrong.push(format!(
                    "{}: {} returned {got}, expected {}",
                    case.what, case.program, case.want
                ));
                continue;
            }
            Err(e) => {
                wrong.push(format!("{}: {e}", case.what));
                continue;
            }
        };
        if let Err(e) = counted_as_specified(case, ran, &before, &read()) {
            wrong.push(format!("{}: {} {e}", case.what, case.program));
        }
    }
    drop(cg);
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        all.len(),
        wrong.join("\n")
    );
    eprintln!("{} crafted packets judged as expected", all.len());
}
