//! The programs and their shared decision logic.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, bpf_sock_addr},
    helpers::{bpf_get_current_cgroup_id, bpf_skb_cgroup_id},
    macros::{cgroup_skb, cgroup_sock_addr},
    programs::{SkBuffContext, SockAddrContext},
};
use firewall_common::{
    Counter, EventVerdict, Hook, IDENTITY_F_CLUSTER_IP, Identity, IpProto, Mode, NS_FIRST,
    PolicyVerdict, Side, SideRecord, ViolationEvent, destination_judges, exemption, replies_judged,
    standard_judges,
};

use crate::{
    conntrack::{self, Clock},
    counters::count,
    events::report,
    identity,
    packet::{self, Kind, ParseError, Tuple},
    policy, sockets,
};

const PASS: i32 = 1;
const DROP: i32 = 0;

#[cgroup_skb(egress)]
pub fn bulkhead_egress(ctx: SkBuffContext) -> i32 {
    on_packet(&ctx, Side::Egress)
}

#[cgroup_skb(ingress)]
pub fn bulkhead_ingress(ctx: SkBuffContext) -> i32 {
    on_packet(&ctx, Side::Ingress)
}

#[cgroup_sock_addr(connect4)]
pub fn bulkhead_connect4(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, 4)
}

#[cgroup_sock_addr(connect6)]
pub fn bulkhead_connect6(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, 6)
}

/// The verdicts of both sides for a new connection, before anything is logged or counted.
struct Judgement {
    /// Deciding rule of this side.
    rule: u32,
    /// This side's mode (looked up only where it is used, see [`judge`]; [`Mode::Monitor`]
    /// otherwise, and then never read).
    local_mode: Mode,
    /// This side's policy denies (whatever its mode).
    denied: bool,
    /// This side denies and is not `off` (it logs).
    local_denies: bool,
    /// The destination's ingress side (looked up at the source) denies and is not `off`.
    peer_denies: bool,
    /// Mode of the destination's namespace (meaningful when `peer_denies`).
    peer_mode: Mode,
    /// Deciding rule of the destination's ingress side.
    peer_rule: u32,
    /// The destination's ingress program never sees this packet (an echo request: its kernel
    /// answers without a socket), so the source also tracks the connection for that side.
    peer_unseen: bool,
    /// Some denying side is in enforce mode.
    drop: bool,
}

/// Judges a new connection between `local` (the end whose cgroup runs this program) and `peer`.
/// `exempted`: what this side's exemption left to judge ([`Exempt::DestinationJudges`]: only the
/// destination's side, which is then known to judge).
///
/// On the egress side the destination pod's ingress side is also looked up: when it denies in
/// enforce mode the connection is dropped here, at the source, and either way the record names
/// that side too (see [`settle`]). A destination on another node judges its side again.
#[inline(always)]
fn judge(
    slot: u8,
    side: Side,
    local: &Identity,
    peer: &Identity,
    t: &Tuple,
    peer_unseen: bool,
    exempted: Exempt,
) -> Judgement {
    let local_exempt = exempted == Exempt::DestinationJudges;
    let (denied, rule) = if local_exempt {
        (false, 0)
    } else {
        let v = policy::lookup(slot, side, local.id, peer.id, t.proto, t.dport);
        (v.verdict == PolicyVerdict::Deny as u8, v.rule)
    };
    let mut j = Judgement {
        rule,
        local_mode: Mode::Monitor,
        denied,
        local_denies: false,
        peer_denies: false,
        peer_mode: Mode::Monitor,
        peer_rule: 0,
        peer_unseen: peer_unseen && side == Side::Egress && peer.ns >= NS_FIRST,
        drop: false,
    };
    // The destination's ingress side, looked up at the source (egress only), where the
    // destination's own exemptions do not cover it.
    if side == Side::Egress && (local_exempt || destination_judges(local, peer, t.proto, t.dport)) {
        let v2 = policy::lookup(slot, Side::Ingress, peer.id, local.id, t.proto, t.dport);
        if v2.verdict == PolicyVerdict::Deny as u8 {
            j.peer_mode = identity::mode(slot, peer.ns);
            j.peer_denies = j.peer_mode != Mode::Off;
            j.peer_rule = v2.rule;
            j.drop = j.peer_mode == Mode::Enforce;
        }
    }
    // This side's mode matters only where it denies (drop, audit or off) or where its record
    // is written (a line for the other side's denial, or the flow log): an allowed first packet
    // is spared the MODES lookup otherwise.
    if denied || j.peer_denies || identity::flow_log_all() {
        j.local_mode = identity::mode(slot, local.ns);
        j.local_denies = denied && j.local_mode != Mode::Off;
        j.drop |= denied && j.local_mode == Mode::Enforce;
    }
    j
}

/// The record of a side: its rule and mode, and whether it is one of the line's `sides`.
#[inline(always)]
fn side_record(rule: u32, mode: Mode, denies: bool) -> SideRecord {
    SideRecord {
        rule,
        mode: mode as u8,
        denied: denies as u8,
        pad: [0; 2],
    }
}

/// Logs and counts a judgement: one record per connection with every side this node judged
/// (docs/design.md#violation-log). On the egress side that is both: the destination's side was
/// looked up here too, and on this node its own program then lets the connection through
/// without judging it again (see [`on_packet`]). With the flow log, an allowed connection is
/// recorded as well.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn settle(
    j: &Judgement,
    slot: u8,
    side: Side,
    local: &Identity,
    peer: &Identity,
    t: &Tuple,
    cgroup_id: u64,
    hook: Hook,
) {
    let egress = side == Side::Egress;
    let (src, dst) = if egress { (local, peer) } else { (peer, local) };
    let local_record = side_record(j.rule, j.local_mode, j.local_denies);
    let peer_record = side_record(j.peer_rule, j.peer_mode, j.peer_denies);
    let (egress_record, ingress_record) = if egress {
        (local_record, peer_record)
    } else {
        (SideRecord::default(), local_record)
    };
    // The side the line names: the one that dropped it, else the first that denied.
    let local_drops = j.local_denies && j.local_mode == Mode::Enforce;
    let peer_named = j.peer_denies && !local_drops && (j.drop || !j.local_denies);
    let (named, rule) = if peer_named {
        (Side::Ingress, j.peer_rule)
    } else {
        (side, j.rule)
    };
    let denies = j.local_denies || j.peer_denies;
    let verdict = if j.drop {
        EventVerdict::Denied
    } else if denies {
        EventVerdict::Audit
    } else {
        EventVerdict::Allowed
    };
    if denies || identity::flow_log_all() {
        report(ViolationEvent {
            cgroup_id,
            saddr: t.saddr,
            daddr: t.daddr,
            src_id: src.id,
            dst_id: dst.id,
            src_ns: src.ns,
            dst_ns: dst.ns,
            rule,
            egress: egress_record,
            ingress: ingress_record,
            sport: t.sport,
            dport: t.dport,
            proto: t.proto,
            family: t.family,
            side: named as u8,
            verdict: verdict as u8,
            slot,
            hook: hook as u8,
            local_is_src: egress as u8,
            ..ViolationEvent::default()
        });
    }
    if j.denied && j.local_mode == Mode::Off {
        count(Counter::PolicyOff);
    }
    count(match verdict {
        EventVerdict::Denied => Counter::PolicyDrop,
        EventVerdict::Audit => Counter::PolicyAudit,
        EventVerdict::Allowed => Counter::PolicyAllow,
    });
}

/// What the "always allowed" rules (docs/design.md#always-allowed) leave to judge.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Exempt {
    /// No exemption holds: both sides are judged.
    No,
    /// This side is exempt and so is every side judged here: the connection passes.
    Settled,
    /// This side (an egress) is exempt, but the destination's ingress side, looked up here,
    /// is not: a standard policy there judges it.
    DestinationJudges,
}

/// This side's exemption, counted by reason.
#[inline(always)]
fn exempt(side: Side, local: &Identity, peer: &Identity, t: &Tuple) -> Exempt {
    let Some(e) = exemption(side, local, peer, t.proto, t.dport) else {
        return Exempt::No;
    };
    count(e.counter());
    if side == Side::Egress && destination_judges(local, peer, t.proto, t.dport) {
        Exempt::DestinationJudges
    } else {
        Exempt::Settled
    }
}

#[inline(always)]
fn on_packet(ctx: &SkBuffContext, side: Side) -> i32 {
    let skb = ctx.as_ptr() as *mut __sk_buff;
    // SAFETY: reading a context field.
    let protocol = unsafe { (*skb).protocol };
    // Step 0: a TCP socket conntrack already vouched for (see `sockets`); kept for step 2.
    let sock = sockets::socket(ctx, protocol);
    if sockets::vouched(&sock, side) {
        count(Counter::ConntrackHit);
        return PASS;
    }
    let pkt = match packet::parse(ctx, protocol) {
        Ok(p) => p,
        Err(ParseError::NotIp) => return PASS,
        Err(ParseError::Malformed) => return malformed(skb),
    };
    let t = &pkt.tuple;
    let egress = side == Side::Egress;
    let peer_addr = if egress { &t.daddr } else { &t.saddr };
    let loopback = identity::is_loopback(t.family, peer_addr);
    let mut clock = Clock::new();
    // Conntrack before any identity: an established packet needs none. A fragment cannot be
    // matched to a flow and a loopback peer is never tracked, so neither asks. A SYN always
    // opens a new connection, so it never passes on conntrack, neither as a later packet nor as
    // a "reply" to a tracked connection's reversed tuple: it is always judged (policy changes
    // apply at once), and it saves the SYN a lookup.
    if !loopback
        && pkt.kind != Kind::Fragment
        && pkt.kind != Kind::TcpSyn
        && conntrack::established(side, t, &mut clock)
    {
        count(Counter::ConntrackHit);
        if t.proto == IpProto::Tcp as u8 {
            sockets::remember(&sock, side);
        }
        return PASS;
    }
    // SAFETY: `skb` is the program's context pointer.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let slot = identity::active_slot();
    let local = match identity::local(slot, cgroup_id) {
        Some(l) => l,
        None => {
            // A container whose cgroup the agent has not discovered yet (it just started or
            // restarted): its pod's own address still names it, so it is never unclassified
            // while its Pod has an IP. Host processes resolve to `host` (or world) and pass.
            let own = if egress { &t.saddr } else { &t.daddr };
            let id = identity::remote(slot, t.family, own);
            if id.ns < NS_FIRST {
                count(Counter::NotPod);
                return PASS;
            }
            count(Counter::ByAddress);
            id
        }
    };
    if loopback {
        count(Counter::Unrestricted);
        return PASS;
    }
    if pkt.kind == Kind::Fragment {
        // No transport header: cannot be matched to a flow.
        let peer = identity::remote(slot, t.family, peer_addr);
        return unmatched(
            slot,
            &local,
            &peer,
            Counter::FragmentDrop,
            Counter::FragmentPass,
        );
    }
    if pkt.kind == Kind::IcmpError && conntrack::related(&pkt.inner, &mut clock) {
        count(Counter::ConntrackHit);
        return PASS;
    }
    // Both ends on this node: the source's egress program judged this connection for both
    // sides and let it through; judging it again would record it twice. Tracked on this side
    // too, as if judged here, so its replies and later packets pass as established.
    if side == Side::Ingress && conntrack::opened_by_source(t, &mut clock) {
        count(Counter::ConntrackHit);
        track(Side::Ingress, t, &mut clock);
        return PASS;
    }
    if pkt.kind == Kind::IcmpNeighbor {
        count(Counter::IcmpNeighbor);
        return PASS;
    }
    // The peer's identity (an LPM walk, the costliest lookup) only for packets conntrack did not
    // already vouch for: established traffic never pays it.
    let peer = identity::remote(slot, t.family, peer_addr);
    if pkt.kind.icmp_without_flow() {
        return icmp_unsolicited(slot, side, &local, &peer, &pkt, &mut clock);
    }
    let exempted = exempt(side, &local, &peer, t);
    if exempted == Exempt::Settled {
        // Replies of an exempt connection (a kubelet probe, a DNS answer, a reply to the world)
        // must not be judged as new connections from the other end: track it, unless its
        // replies are exempt themselves (not worth a map write).
        if replies_judged(&local, &peer) {
            track(side, t, &mut clock);
        }
        return PASS;
    }
    let hook = if egress {
        Hook::SkbEgress
    } else {
        Hook::SkbIngress
    };
    let echo = pkt.kind == Kind::EchoRequest;
    let j = judge(slot, side, &local, &peer, t, echo, exempted);
    settle(&j, slot, side, &local, &peer, t, cgroup_id, hook);
    if j.drop {
        return DROP;
    }
    track(side, t, &mut clock);
    if j.peer_unseen {
        // On this node, the destination's egress program then knows the reply (see
        // `request_admitted` for a destination on another node).
        track(Side::Ingress, t, &mut clock);
    }
    PASS
}

/// A packet the parser could not classify: a pod's is dropped when its namespace is in enforce
/// and passed otherwise ([Modes](docs/design.md#modes)); a non-pod's passes.
#[inline(always)]
fn malformed(skb: *mut __sk_buff) -> i32 {
    // SAFETY: `skb` is the program's context pointer.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let slot = identity::active_slot();
    let Some(local) = identity::local(slot, cgroup_id) else {
        count(Counter::NotPod);
        return PASS;
    };
    count(Counter::Malformed);
    if identity::mode(slot, local.ns) == Mode::Enforce {
        DROP
    } else {
        PASS
    }
}

/// Records that `side` let `t` through (counted when the map refuses).
#[inline(always)]
fn track(side: Side, t: &Tuple, clock: &mut Clock) {
    if !conntrack::insert(side, t, clock) {
        count(Counter::ConntrackFull);
    }
}

/// A packet no flow vouches for and that may open none (a non-first fragment, an ICMP message
/// that is no echo request): never classified as allowed across namespaces, so dropped in
/// enforce mode and passed otherwise, each counted by `drop` or `pass`. Never judged or logged.
#[inline(always)]
fn unmatched(slot: u8, local: &Identity, peer: &Identity, drop: Counter, pass: Counter) -> i32 {
    if peer.ns == local.ns {
        count(Counter::SameNamespace);
        return PASS;
    }
    if identity::mode(slot, local.ns) == Mode::Enforce {
        count(drop);
        return DROP;
    }
    count(pass);
    PASS
}

/// An echo reply, ICMP error or other ICMP message conntrack did not vouch for.
#[inline(always)]
fn icmp_unsolicited(
    slot: u8,
    side: Side,
    local: &Identity,
    peer: &Identity,
    pkt: &packet::Packet,
    clock: &mut Clock,
) -> i32 {
    if side == Side::Egress
        && let Some(request) = answered(pkt)
        && request_admitted(slot, local, peer, &request, clock)
    {
        return PASS;
    }
    unmatched(
        slot,
        local,
        peer,
        Counter::IcmpUnsolicitedDrop,
        Counter::IcmpUnsolicitedPass,
    )
}

/// The packet that an echo reply or ICMP error leaving the local pod answers, when the pod
/// received it (a quoted packet addressed to the pod, from the error's destination).
#[inline(always)]
fn answered(pkt: &packet::Packet) -> Option<Tuple> {
    let t = &pkt.tuple;
    match pkt.kind {
        Kind::EchoReply => Some(t.reversed()),
        Kind::IcmpError if pkt.inner.saddr == t.daddr && pkt.inner.daddr == t.saddr => {
            Some(pkt.inner)
        }
        _ => None,
    }
}

/// Does the local pod's ingress side admit the packet `req` its kernel answers (an echo request,
/// or a packet to a port nothing listens on)? The kernel answered without a socket, so the pod's
/// ingress program never saw `req` (for an echo request the source judged and logged this side
/// instead, see [`Judgement::peer_unseen`]), and a source on another node left no conntrack entry
/// here. When it admits it, the side's verdict is recorded as if its program had seen `req`, so
/// later answers are conntrack hits.
#[inline(always)]
fn request_admitted(
    slot: u8,
    local: &Identity,
    peer: &Identity,
    req: &Tuple,
    clock: &mut Clock,
) -> bool {
    if let Some(e) = exemption(Side::Ingress, local, peer, req.proto, req.dport) {
        count(e.counter());
    } else {
        let v = policy::lookup(slot, Side::Ingress, local.id, peer.id, req.proto, req.dport);
        if v.verdict == PolicyVerdict::Deny as u8 {
            return false;
        }
        count(Counter::PolicyAllow);
    }
    if replies_judged(local, peer) {
        track(Side::Ingress, req, clock);
    }
    true
}

#[inline(always)]
fn on_connect(ctx: &SockAddrContext, family: u8) -> i32 {
    let sa = ctx.as_ptr() as *mut bpf_sock_addr;
    // SAFETY: reading context fields of a sock_addr program.
    let (proto, port_be, ip4, ip6) = unsafe {
        (
            (*sa).protocol,
            (*sa).user_port,
            (*sa).user_ip4,
            (*sa).user_ip6,
        )
    };
    if proto != IpProto::Tcp as u32 {
        return PASS;
    }
    // SAFETY: helper without preconditions.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let slot = identity::active_slot();
    let Some(local) = identity::local(slot, cgroup_id) else {
        return PASS;
    };
    let daddr = if family == 4 { [ip4, 0, 0, 0] } else { ip6 };
    if identity::is_loopback(family, &daddr) {
        return PASS;
    }
    let t = Tuple {
        saddr: [0; 4],
        daddr,
        sport: 0,
        dport: u16::from_be(port_be as u16),
        proto: IpProto::Tcp as u8,
        family,
        ..Tuple::default()
    };
    let peer = identity::remote(slot, family, &daddr);
    if standard_at_cluster_ip(&local, &peer) {
        return PASS;
    }
    let exempted = exempt(Side::Egress, &local, &peer, &t);
    if exempted == Exempt::Settled {
        return PASS;
    }
    // Only a drop is decided here; an allowed or audited connect is judged again on its SYN,
    // which logs monitor-mode violations with the real source port.
    let j = judge(slot, Side::Egress, &local, &peer, &t, false, exempted);
    if !j.drop {
        return PASS;
    }
    settle(
        &j,
        slot,
        Side::Egress,
        &local,
        &peer,
        &t,
        cgroup_id,
        Hook::Connect,
    );
    count(Counter::ConnectDenied);
    DROP
}

/// A `connect()` to a Service cluster IP where a standard policy may judge a side: the port
/// here is the Service's, while NetworkPolicy and ClusterNetworkPolicy name the backend's
/// (target) port, so a decision here could refuse an allowed connection or pass a refused one.
/// The first packet, after the DNAT, carries the backend's address and port and is judged.
#[inline(always)]
fn standard_at_cluster_ip(local: &Identity, peer: &Identity) -> bool {
    peer.flags & IDENTITY_F_CLUSTER_IP != 0
        && (standard_judges(Side::Egress, local) || standard_judges(Side::Ingress, peer))
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible licence: needed for some helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
