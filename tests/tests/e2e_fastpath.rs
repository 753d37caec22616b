//! The datapath's guarantees on the paths an optimised datapath takes shortcuts on (issue 14),
//! proven with real packets between simulated pods and the real agent. Written from the
//! specification ([Connections](docs/design.md#connections), [Pinning and
//! restarts](docs/design.md#pinning-and-restarts)), not from the code:
//!
//! - a policy change applies to new connections at once, while established connections keep
//!   flowing (TCP until eviction, UDP until 60 s idle), whether the change is an edit or a
//!   monitor -> enforce switch;
//! - IPv6 extension headers (hop-by-hop, destination options) are walked: they neither break an
//!   allowed flow (from its first packet or switched on mid-connection) nor make a forbidden one
//!   look allowed;
//! - a packet whose transport header is not in the skb's linear area is judged like the same
//!   packet laid out linearly;
//! - after a kill -9 the restarted agent adopts the pinned state and open connections keep
//!   flowing; after `cleanup` and a fresh start nothing is adopted and an open connection of a
//!   now-forbidden pair is judged anew (dropped).
//!
//! Every check prints what it checks (`CHECK ...`) and fails naming the flow. Needs root.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
mod common;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use bulkhead_tests::{
    Protocol, Session,
    agent::Pinning,
    frames::UdpFrame,
    policy::{admit, baseline, ingress_from},
    skip_unless_root,
};
use common::{
    agent::{Agent, Pins, cleanup, pretty},
    node::{Node, THREE_PODS},
};
use serde_json::Value;

/// Budget of one round trip (and of connecting).
const RT: Duration = Duration::from_millis(1000);

/// A client `alpha/a` and a server `beta/b` (TCP and UDP 8080, and 8081 for the forbidden port).
const TWO_PODS: &str = r#"
namespaces:
  - {name: alpha}
  - {name: beta}
pods:
  - {name: a, namespace: alpha, labels: {app: a}}
  - {name: b, namespace: beta, labels: {app: b}, serve: [{protocol: TCP, port: 8080}, {protocol: UDP, port: 8080}, {protocol: TCP, port: 8081}, {protocol: UDP, port: 8081}]}
"#;

fn check(what: &str) {
    eprintln!("CHECK {what}");
}

/// beta admits alpha on TCP and UDP 8080.
fn beta_admits_alpha() -> String {
    ingress_from(
        "from-alpha",
        "beta",
        &["alpha"],
        &[],
        &[("TCP", 8080), ("UDP", 8080)],
    )
}

/// Opens a session that must connect.
fn open(node: &Node, from: &str, protocol: Protocol, to: SocketAddr, ext: &str) -> Session {
    let s = node
        .testbed()
        .session(from, protocol, to, ext, RT)
        .expect("session");
    assert!(
        s.opened.first_error.is_none(),
        "{} (extension headers: {ext}): could not connect: {:?}",
        s.what(),
        s.opened.first_error
    );
    s
}

/// `n` round trips on `s`, which must all succeed.
fn flows(s: &mut Session, n: u64, when: &str) {
    check(&format!(
        "{} keeps flowing {when}: {n} round trips",
        s.what()
    ));
    let r = s.round_trips(n).expect("round trips");
    assert!(
        r.ok == n && r.failed == 0,
        "{} {when}: the established connection stopped flowing: {} of {n} round trips failed (first: {:?})",
        s.what(),
        r.failed,
        r.first_error
    );
}

/// `n` round trips on `s`, none of which may succeed.
fn blocked(s: &mut Session, n: u64, when: &str) {
    check(&format!("{} is dropped {when}", s.what()));
    let r = s.round_trips(n).expect("round trips");
    assert_eq!(
        r.ok,
        0,
        "{} {when}: {} of {n} round trips got through a flow the policy forbids: {r:?}",
        s.what(),
        r.ok
    );
}

/// Applies `policies` and waits until the agent has.
fn change_policy(node: &Node, agent: &Agent, policies: &[&str]) {
    let applied = agent.logs_with("policy applied").len();
    node.set_policies(policies);
    agent.wait_for_log_count("policy applied", applied + 1, Duration::from_secs(10));
}

/// A new TCP connection from `from` to `to`:`port` must have `want` as its outcome.
fn new_tcp(node: &Node, from: &str, to: &str, port: u16, want: &str, when: &str) {
    check(&format!(
        "a new TCP connection {from} -> {to}:{port} is {want} {when}"
    ));
    let r = node.tcp(from, to, port);
    assert_eq!(
        r.result, want,
        "new TCP connection {from} -> {to}:{port} {when}: {r:?}"
    );
}

/// A new UDP exchange from `from` to `to`:`port` must not get through.
fn new_udp_dropped(node: &Node, from: &str, to: &str, port: u16, when: &str) {
    check(&format!(
        "a new UDP flow {from} -> {to}:{port} is dropped {when}"
    ));
    let r = node.udp(from, to, port);
    assert_ne!(
        r.result, "ok",
        "new UDP flow {from} -> {to}:{port} {when} got through: {r:?}"
    );
}

/// Waits for a violation line with `verdict` for `protocol` to `dst_pod`:`port`.
fn logged(agent: &Agent, verdict: &str, protocol: &str, dst_pod: &str, port: u16) -> Vec<Value> {
    check(&format!(
        "a {verdict} line is logged for {protocol} to {dst_pod}:{port}"
    ));
    agent.wait_violations(Duration::from_secs(5), |l| {
        l.iter().any(|v| {
            v["verdict"] == verdict
                && v["protocol"] == protocol
                && v["dst"]["pod"] == dst_pod
                && v["dst"]["port"] == port
        })
    })
}

/// After a change that forbids alpha -> beta 8080 (`change`): new TCP and UDP connections of the
/// pair are refused, the open `sessions` keep flowing (200 round trips each), and a new connection
/// is still refused after their traffic (nothing it did opened the pair), with a `DENIED` line.
fn open_flow_new_refused(node: &Node, agent: &Agent, sessions: &mut [Session], change: &str) {
    new_tcp(node, "alpha/a", "beta/b", 8080, "denied", change);
    new_udp_dropped(node, "alpha/a", "beta/b", 8080, change);
    for s in sessions.iter_mut() {
        flows(s, 200, &format!("{change} (opened before)"));
    }
    let after = format!("{change}, after the open connections kept flowing");
    new_tcp(node, "alpha/a", "beta/b", 8080, "denied", &after);
    let lines = logged(agent, "DENIED", "TCP", "b", 8080);
    eprintln!("violation lines:\n{}", pretty(&lines));
}

fn addr(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

#[test]
fn policy_edit_keeps_open_connections_and_applies_to_new_ones() {
    skip_unless_root!("policy_edit_keeps_open_connections_and_applies_to_new_ones");
    let node = Node::up(
        "fpedit",
        70,
        TWO_PODS,
        &[&baseline("Deny", "Enforce"), &beta_admits_alpha()],
    );
    let agent = node.agent(&[]);
    let b4 = node.ip("beta/b");
    let b6 = node.ip6("beta/b");
    let mut sessions = [
        open(&node, "alpha/a", Protocol::Tcp, addr(b4, 8080), "none"),
        open(&node, "alpha/a", Protocol::Tcp, addr(b6, 8080), "none"),
        open(&node, "alpha/a", Protocol::Udp, addr(b4, 8080), "none"),
        open(&node, "alpha/a", Protocol::Udp, addr(b6, 8080), "none"),
    ];
    for s in &mut sessions {
        flows(s, 20, "while the policy allows it");
    }

    // The edit: beta no longer admits alpha.
    change_policy(&node, &agent, &[&baseline("Deny", "Enforce")]);
    open_flow_new_refused(&node, &agent, &mut sessions, "after an edit forbade it");

    // And back: the pair is admitted again for new connections at once.
    change_policy(
        &node,
        &agent,
        &[&baseline("Deny", "Enforce"), &beta_admits_alpha()],
    );
    new_tcp(&node, "alpha/a", "beta/b", 8080, "ok", "once re-admitted");
    for s in &mut sessions {
        flows(s, 20, "after the pair was admitted again");
    }
}

#[test]
fn monitor_to_enforce_keeps_connections_opened_in_monitor() {
    skip_unless_root!("monitor_to_enforce_keeps_connections_opened_in_monitor");
    let node = Node::up("fpmode", 71, TWO_PODS, &[&baseline("Deny", "Monitor")]);
    let agent = node.agent(&[]);
    let b4 = node.ip("beta/b");
    let b6 = node.ip6("beta/b");
    let mut sessions = [
        open(&node, "alpha/a", Protocol::Tcp, addr(b4, 8080), "none"),
        open(&node, "alpha/a", Protocol::Tcp, addr(b6, 8080), "none"),
        open(&node, "alpha/a", Protocol::Udp, addr(b4, 8080), "none"),
    ];
    for s in &mut sessions {
        flows(s, 20, "in monitor mode (audited)");
    }
    logged(&agent, "AUDIT", "TCP", "b", 8080);
    logged(&agent, "AUDIT", "UDP", "b", 8080);

    change_policy(&node, &agent, &[&baseline("Deny", "Enforce")]);
    open_flow_new_refused(&node, &agent, &mut sessions, "after monitor -> enforce");
}

/// The port a datapath that did not skip our 8-byte padded extension header would read as the
/// destination port: its bytes 2..4 (PadN, length 4).
const MISREAD_PORT: u32 = 0x0104;

#[test]
fn ipv6_extension_headers_are_walked_on_new_and_established_flows() {
    skip_unless_root!("ipv6_extension_headers_are_walked_on_new_and_established_flows");
    // beta admits alpha on 8080 and on the port a parser that stopped at the extension header
    // would read instead of 8081: such a parser would let 8081 through.
    let policy = ingress_from(
        "from-alpha",
        "beta",
        &["alpha"],
        &[],
        &[
            ("TCP", 8080),
            ("UDP", 8080),
            ("TCP", MISREAD_PORT),
            ("UDP", MISREAD_PORT),
        ],
    );
    let node = Node::up(
        "fpext6",
        72,
        TWO_PODS,
        &[&baseline("Deny", "Enforce"), &policy],
    );
    let agent = node.agent(&[]);
    let b6 = node.ip6("beta/b");
    for ext in ["hbh", "dst", "both"] {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            check(&format!(
                "{protocol} to the allowed port with {ext} extension headers from the first packet"
            ));
            let mut s = open(&node, "alpha/a", protocol, addr(b6, 8080), ext);
            flows(&mut s, 50, &format!("with {ext} extension headers"));
        }
    }
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let mut s = open(&node, "alpha/a", protocol, addr(b6, 8080), "none");
        flows(&mut s, 10, "before extension headers");
        for ext in ["dst", "hbh", "both", "none"] {
            s.ext_headers(ext).expect("set extension headers");
            flows(
                &mut s,
                50,
                &format!("once {ext} extension headers are switched on mid-connection"),
            );
        }
    }
    for ext in ["hbh", "dst", "both"] {
        check(&format!(
            "UDP to the forbidden port 8081 with {ext} extension headers is dropped"
        ));
        let s = node
            .testbed()
            .session("alpha/a", Protocol::Udp, addr(b6, 8081), ext, RT)
            .expect("session");
        // A datapath may refuse the connected UDP socket at connect(); otherwise no echo comes.
        if s.opened.first_error.is_none() {
            let mut s = s;
            blocked(&mut s, 5, &format!("with {ext} extension headers"));
        }
        check(&format!(
            "TCP to the forbidden port 8081 with {ext} extension headers never connects"
        ));
        let s = node
            .testbed()
            .session("alpha/a", Protocol::Tcp, addr(b6, 8081), ext, RT)
            .expect("session");
        assert!(
            s.opened.first_error.is_some(),
            "{} with {ext} extension headers connected although beta does not admit alpha on 8081",
            s.what()
        );
    }
    let lines = logged(&agent, "DENIED", "UDP", "b", 8081);
    eprintln!("violation lines:\n{}", pretty(&lines));
    assert!(
        !lines
            .iter()
            .any(|v| v["dst"]["port"] == MISREAD_PORT || v["type"] == "flow"),
        "a line names the misread port:\n{}",
        pretty(&lines)
    );
}

const SNIFF_PORT: u16 = 7000;
/// Frames per (family, source, size).
const FRAMES: u64 = 10;
/// A frame this large is built by `AF_PACKET` with only its Ethernet header linear.
const LARGE: usize = 6000;
const SMALL: usize = 200;

#[test]
fn headers_outside_the_linear_area_are_judged_like_linear_ones() {
    skip_unless_root!("headers_outside_the_linear_area_are_judged_like_linear_ones");
    // alpha/a receives; beta/b is admitted on UDP 7000, gamma/c is not.
    let admit_beta = ingress_from(
        "from-beta",
        "alpha",
        &["beta"],
        &[],
        &[("UDP", SNIFF_PORT.into())],
    );
    let node = Node::up(
        "fpbig",
        73,
        THREE_PODS,
        &[&baseline("Deny", "Enforce"), &admit_beta],
    );
    let agent = node.agent(&[]);
    let tb = node.testbed();
    tb.jumbo_link("alpha/a", 9000).expect("jumbo link");
    let (pod_mac, host_mac) = tb.pod_macs("alpha/a").expect("macs");

    // (source pod, allowed?, family, size) -> its source port.
    let mut flows = Vec::new();
    let mut frames = Vec::new();
    let mut sport = 41_000;
    for (src_pod, allowed) in [("beta/b", true), ("gamma/c", false)] {
        for v6 in [false, true] {
            for size in [LARGE, SMALL] {
                let (src, dst) = if v6 {
                    (node.ip6(src_pod), node.ip6("alpha/a"))
                } else {
                    (node.ip(src_pod), node.ip("alpha/a"))
                };
                let frame = UdpFrame {
                    dst_mac: pod_mac,
                    src_mac: host_mac,
                    src,
                    dst,
                    sport,
                    dport: SNIFF_PORT,
                    frame_len: size,
                    dst_opts: v6,
                };
                for _ in 0..FRAMES {
                    frames.push(frame.build());
                }
                flows.push((src_pod, allowed, v6, size, SocketAddr::new(src, sport)));
                sport += 1;
            }
        }
    }
    let sniff = tb
        .spawn_sniff("alpha/a", SNIFF_PORT, Duration::from_secs(4))
        .expect("sniff");
    tb.inject("alpha/a", &frames).expect("inject");
    let report = sniff.wait().expect("sniff report");
    eprintln!("sniffed: {report:?}");
    assert!(
        report.errors.is_empty(),
        "sniffer errors: {:?}",
        report.errors
    );

    for (src_pod, allowed, v6, size, src) in flows {
        let raw = if v6 { "raw6" } else { "raw4" };
        let family = if v6 {
            "IPv6 + destination options"
        } else {
            "IPv4"
        };
        for socket in [raw, "udp"] {
            let want = if allowed { FRAMES } else { 0 };
            check(&format!(
                "{family} UDP {src_pod} {src} -> alpha/a:{SNIFF_PORT}, {size}-byte frames: the {socket} socket receives {want} of {FRAMES}"
            ));
            let got = report.count(socket, src);
            assert_eq!(
                got,
                want,
                "{family} UDP {src_pod} {src} -> alpha/a:{SNIFF_PORT} in {size}-byte frames ({}): the {socket} socket received {got} of {FRAMES}",
                if allowed {
                    "admitted: all must pass"
                } else {
                    "forbidden: none may pass"
                }
            );
        }
    }
    for ip in [node.ip("gamma/c"), node.ip6("gamma/c")] {
        check(&format!(
            "the forbidden flow from gamma/c {ip} is logged DENIED (ingress)"
        ));
        let lines = agent.wait_violations(Duration::from_secs(5), |l| {
            l.iter().any(|v| {
                v["verdict"] == "DENIED"
                    && v["direction"] == "ingress"
                    && v["src"]["ip"] == ip.to_string()
                    && v["dst"]["port"] == SNIFF_PORT
            })
        });
        eprintln!("violation lines:\n{}", pretty(&lines));
    }
}

/// Whether the agent's `datapath attached` line says it adopted pinned maps.
fn adopted(agent: &Agent) -> Option<bool> {
    agent
        .logs_with("datapath attached")
        .iter()
        .find_map(|l| l["fields"]["adopted"].as_bool().or(l["adopted"].as_bool()))
}

#[test]
fn kill9_adoption_keeps_connections_and_a_fresh_start_judges_anew() {
    skip_unless_root!("kill9_adoption_keeps_connections_and_a_fresh_start_judges_anew");
    let both = [
        baseline("Deny", "Enforce"),
        admit("beta", "alpha", 8080),
        admit("gamma", "alpha", 9090),
    ];
    let both: Vec<&str> = both.iter().map(String::as_str).collect();
    let only_beta = [baseline("Deny", "Enforce"), admit("beta", "alpha", 8080)];
    let only_beta: Vec<&str> = only_beta.iter().map(String::as_str).collect();
    let node = Node::up("fpkill", 74, THREE_PODS, &both);
    let pins = Pins::cleaned(PathBuf::from(format!(
        "/sys/fs/bpf/bulkhead-e2e-fastpath-{}",
        std::process::id()
    )));
    let pin = || Pinning::Dir(&pins.0);
    let first = node.agent_pinned(pin(), &[]);
    assert_eq!(
        adopted(&first),
        Some(false),
        "a fresh pin directory was adopted"
    );
    let mut to_b = open(
        &node,
        "alpha/a",
        Protocol::Tcp,
        addr(node.ip("beta/b"), 8080),
        "none",
    );
    let mut to_c = open(
        &node,
        "alpha/a",
        Protocol::Tcp,
        addr(node.ip6("gamma/c"), 9090),
        "none",
    );
    flows(&mut to_b, 20, "under the first agent");
    flows(&mut to_c, 20, "under the first agent");

    first.kill9();
    flows(&mut to_b, 20, "after kill -9, with no agent running");
    flows(&mut to_c, 20, "after kill -9, with no agent running");
    let second = node.agent_pinned(pin(), &[]);
    check("the restarted agent adopted the pinned state");
    assert_eq!(
        adopted(&second),
        Some(true),
        "the agent started after kill -9 did not adopt the pins"
    );
    flows(&mut to_b, 20, "under the agent that adopted the pins");
    flows(&mut to_c, 20, "under the agent that adopted the pins");
    new_tcp(&node, "alpha/a", "beta/b", 8080, "ok", "after adoption");

    // A policy edit on the adopted state: open connections keep flowing, new ones are judged.
    change_policy(&node, &second, &only_beta);
    flows(&mut to_c, 20, "after the adopted agent's edit forbade it");
    new_tcp(
        &node,
        "alpha/a",
        "gamma/c",
        9090,
        "denied",
        "after the adopted agent's edit",
    );
    second.kill9();
    let third = node.agent_pinned(pin(), &[]);
    assert_eq!(
        adopted(&third),
        Some(true),
        "the second restart did not adopt"
    );
    flows(&mut to_b, 20, "after a second kill -9 and adoption");
    flows(
        &mut to_c,
        20,
        "after a second kill -9 and adoption (opened while allowed)",
    );
    third.kill9();

    // Uninstall, then a fresh start: nothing is adopted, every connection is judged anew.
    eprintln!("{}", cleanup(&pins.0));
    new_tcp(
        &node,
        "alpha/a",
        "gamma/c",
        9090,
        "ok",
        "with nothing attached after cleanup",
    );
    let fresh = node.agent_pinned(pin(), &[]);
    check("the agent started after cleanup adopted nothing");
    assert_eq!(
        adopted(&fresh),
        Some(false),
        "the agent started after cleanup adopted state"
    );
    flows(
        &mut to_b,
        20,
        "after cleanup and a fresh start (judged anew: allowed)",
    );
    blocked(
        &mut to_c,
        3,
        "after cleanup and a fresh start (judged anew: forbidden)",
    );
    new_tcp(
        &node,
        "alpha/a",
        "gamma/c",
        9090,
        "denied",
        "after the fresh start",
    );
    new_tcp(
        &node,
        "alpha/a",
        "beta/b",
        8080,
        "ok",
        "after the fresh start",
    );
    let lines = logged(&fresh, "DENIED", "TCP", "c", 9090);
    eprintln!("fresh agent's violation lines:\n{}", pretty(&lines));
}

/// An old-layout conntrack key (agents up to `f9f3eda`): the tuple in the direction of the first
/// packet and the side that recorded it, as the bytes the kernel hashes: addresses in network
/// order, ports in host order, then proto, side, family and a zero pad (40 bytes).
fn old_layout_key(side: u8, src: SocketAddr, dst: SocketAddr, proto: u8) -> Vec<u8> {
    fn addr16(ip: IpAddr) -> [u8; 16] {
        match ip {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.octets());
                b
            }
            IpAddr::V6(a) => a.octets(),
        }
    }
    let family = if src.is_ipv4() { 4 } else { 6 };
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(&addr16(src.ip()));
    k.extend_from_slice(&addr16(dst.ip()));
    k.extend_from_slice(&src.port().to_ne_bytes());
    k.extend_from_slice(&dst.port().to_ne_bytes());
    k.extend_from_slice(&[proto, side, family, 0]);
    k
}

/// CLOCK_MONOTONIC in ns, the clock conntrack's timestamps are read from.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    u64::try_from(ts.tv_sec).expect("time") * 1_000_000_000 + u64::try_from(ts.tv_nsec).expect("ns")
}

fn bpftool(args: &[&str]) {
    let out = std::process::Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool (Debian package bpftool)");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hex(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|b| format!("0x{b:02x}")).collect()
}

/// An upgrade from an agent whose conntrack was keyed by side (docs/design.md#pinning-and-restarts):
/// the new agent migrates every entry, so connections the old agent let through keep flowing
/// even where the policy in force now forbids them (judged anew, they would be dropped), while
/// new connections are judged by that policy. The old agent's pins are made the way it left
/// them: its conntrack map, with the entries its egress and ingress sides wrote for the two open
/// connections, and no socket cache (so every packet asks conntrack).
#[test]
fn an_upgrade_migrates_the_earlier_conntrack_layout() {
    skip_unless_root!("an_upgrade_migrates_the_earlier_conntrack_layout");
    let allowed = [baseline("Deny", "Enforce"), beta_admits_alpha()];
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let node = Node::up("fpupgr", 75, TWO_PODS, &allowed);
    let pins = Pins::cleaned(PathBuf::from(format!(
        "/sys/fs/bpf/bulkhead-e2e-upgrade-{}",
        std::process::id()
    )));
    let pin = || Pinning::Dir(&pins.0);
    let first = node.agent_pinned(pin(), &[]);
    let server6 = addr(node.ip6("beta/b"), 8080);
    let server4 = addr(node.ip("beta/b"), 8080);
    let mut tcp6 = open(&node, "alpha/a", Protocol::Tcp, server6, "none");
    let mut udp4 = open(&node, "alpha/a", Protocol::Udp, server4, "none");
    flows(&mut tcp6, 5, "under the first agent");
    flows(&mut udp4, 5, "under the first agent");
    first.kill9();

    // The pins as an agent of the earlier layout leaves them: its attached programs keep
    // running on the maps they hold, whatever happens to the pins.
    check("the pinned conntrack is replaced by one of the earlier layout with both connections");
    let maps = pins.0.join("maps");
    for m in ["CONNTRACK", "SOCKETS"] {
        std::fs::remove_file(maps.join(m)).expect("remove a pin");
    }
    let old = maps.join("CONNTRACK");
    let old_s = old.to_str().expect("utf-8 path");
    bpftool(&[
        "map",
        "create",
        old_s,
        "type",
        "lru_hash",
        "key",
        "40",
        "value",
        "16",
        "entries",
        "262144",
        "name",
        "CONNTRACK",
    ]);
    let now = monotonic_ns();
    let mut value = now.to_ne_bytes().to_vec();
    value.extend_from_slice(&now.to_ne_bytes());
    for (session, proto) in [(&tcp6, 6u8), (&udp4, 17u8)] {
        let client = session.opened.local.expect("the session's local address");
        let server = if proto == 6 { server6 } else { server4 };
        // The client's egress side, and the server's ingress side (both on this node).
        for side in [1u8, 2u8] {
            let mut args = vec!["map", "update", "pinned", old_s, "key"];
            let key = hex(&old_layout_key(side, client, server, proto));
            let val = hex(&value);
            args.extend(key.iter().map(String::as_str));
            args.push("value");
            args.extend(val.iter().map(String::as_str));
            bpftool(&args);
        }
    }

    // The new agent starts under a policy that forbids the pair.
    let forbidden = [baseline("Deny", "Enforce")];
    let forbidden: Vec<&str> = forbidden.iter().map(String::as_str).collect();
    node.set_policies(&forbidden);
    let second = node.agent_pinned(pin(), &[]);
    flows(
        &mut tcp6,
        50,
        "after the upgrade (opened while allowed; the policy now forbids it)",
    );
    flows(
        &mut udp4,
        50,
        "after the upgrade (opened while allowed; the policy now forbids it)",
    );
    new_tcp(
        &node,
        "alpha/a",
        "beta/b",
        8080,
        "denied",
        "after the upgrade",
    );
    new_udp_dropped(&node, "alpha/a", "beta/b", 8080, "after the upgrade");
    check("the new agent migrated the 4 entries and unpinned the earlier map");
    let migrated = second.logs_with("conntrack of the earlier layout migrated");
    assert_eq!(
        migrated
            .first()
            .and_then(|l| l.get("fields").unwrap_or(l).get("copied").cloned()),
        Some(Value::from(4)),
        "migration log: {}",
        pretty(&migrated)
    );
    assert!(
        !maps.join("CONNTRACK_BY_SIDE").exists(),
        "the earlier layout's map is still pinned after the hand-over"
    );
    assert_eq!(adopted(&second), Some(true), "the pins were not adopted");
    second.kill9();
}
