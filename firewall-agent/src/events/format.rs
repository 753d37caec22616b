//! The violation log line (docs/design.md#violation-log): one JSON object per line on stdout.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use firewall_common::{EventVerdict, FoldKey, IpProto, Mode, Side, ViolationEvent};
use serde::Serialize;
use time::{OffsetDateTime, format_description::BorrowedFormatItem, macros::format_description};

use super::names::NameTables;

const TS_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// One end of a flow. Unknown fields are `null`. Read back by `suggest` and `report`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Peer {
    /// Namespace, when the address belongs to one.
    pub namespace: Option<String>,
    /// Pod name, when the address is a pod's.
    pub pod: Option<String>,
    pub ip: Option<IpAddr>,
    /// Port (none for ICMP, or a source port not yet chosen at connect()).
    pub port: Option<u16>,
}

/// One side that denied a connection, as the line's `sides` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SideLine {
    /// "egress" (at the source) or "ingress" (at the destination).
    pub side: &'static str,
    /// The side's namespace.
    pub namespace: Option<String>,
    /// "monitor" or "enforce"; `null` when only the fold map knew of the connection.
    pub mode: Option<&'static str>,
    /// The side's deciding object and rule.
    pub policy: Option<String>,
}

/// A log line: one connection as this node judged it, fields in the documented order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// RFC 3339 UTC with microseconds.
    pub ts: String,
    /// "violation" (some side denied) or "flow" (allowed, with `--flow-log all`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// "DENIED" (dropped), "AUDIT" (a side denied, none in enforce: it would be dropped) or
    /// "ALLOWED" (a flow line).
    pub verdict: &'static str,
    /// The side that dropped it, else the first side that denied, else the side that judged:
    /// "egress" or "ingress".
    pub direction: &'static str,
    pub node: String,
    /// "TCP", "UDP", "SCTP", "ICMP", "ICMPv6" or the protocol number.
    pub protocol: String,
    pub src: Peer,
    pub dst: Peer,
    /// `direction`'s deciding object and rule, or "default".
    pub policy: Option<String>,
    /// Every side that denied, egress first (empty on a flow line).
    pub sides: Vec<SideLine>,
    /// Events folded into this line.
    pub count: u64,
}

/// Formats a wall-clock time in nanoseconds since the epoch.
pub fn format_ts(unix_ns: i128) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
        .ok()
        .and_then(|t| t.format(TS_FORMAT).ok())
        .unwrap_or_default()
}

/// Protocol name for the log.
pub fn protocol_name(proto: u8) -> String {
    match IpProto::try_from(proto) {
        Ok(p) => p.as_str().into(),
        Err(_) => proto.to_string(),
    }
}

/// The address stored in an event's `[u32; 4]` (network order), if set.
pub fn addr(family: u8, words: &[u32; 4]) -> Option<IpAddr> {
    if family == 4 {
        let a = Ipv4Addr::from(words[0].to_ne_bytes());
        (!a.is_unspecified()).then_some(IpAddr::V4(a))
    } else {
        let mut b = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        let a = Ipv6Addr::from(b);
        (!a.is_unspecified()).then_some(IpAddr::V6(a))
    }
}

fn peer(
    names: &NameTables,
    ns: u32,
    family: u8,
    ip: Option<IpAddr>,
    port: u16,
    local_cgroup: Option<u64>,
) -> Peer {
    let pod = local_cgroup
        .and_then(|cg| names.by_cgroup.get(&cg))
        .or_else(|| ip.and_then(|ip| names.by_ip.get(&ip)));
    let ip = ip.or_else(|| {
        // The source address is unknown at connect(): use the pod's address of the same family.
        pod.and_then(|p| p.ips.iter().copied().find(|a| a.is_ipv4() == (family == 4)))
    });
    Peer {
        namespace: names
            .namespaces
            .get(&ns)
            .cloned()
            .or_else(|| pod.map(|p| p.namespace.clone())),
        pod: pod.map(|p| p.name.clone()),
        ip,
        port: (port != 0).then_some(port),
    }
}

/// Builds a line from a kernel event.
pub fn from_event(
    ev: &ViolationEvent,
    names: &NameTables,
    node: &str,
    ts: String,
    count: u64,
) -> LogLine {
    let (src_cg, dst_cg) = if ev.local_is_src == 1 {
        (Some(ev.cgroup_id), None)
    } else {
        (None, Some(ev.cgroup_id))
    };
    // ICMP has no ports: the kernel keys its flows by the echo id in the source port's place.
    let (sport, dport) = if IpProto::WITH_PORTS.iter().any(|p| *p as u8 == ev.proto) {
        (ev.sport, ev.dport)
    } else {
        (0, 0)
    };
    let verdict = EventVerdict::try_from(ev.verdict).unwrap_or(EventVerdict::Audit);
    let mut line = LogLine {
        ts,
        kind: if verdict == EventVerdict::Allowed {
            "flow"
        } else {
            "violation"
        },
        verdict: verdict.as_str(),
        direction: side_name(ev.side).as_str(),
        node: node.to_owned(),
        protocol: protocol_name(ev.proto),
        src: peer(
            names,
            ev.src_ns,
            ev.family,
            addr(ev.family, &ev.saddr),
            sport,
            src_cg,
        ),
        dst: peer(
            names,
            ev.dst_ns,
            ev.family,
            addr(ev.family, &ev.daddr),
            dport,
            dst_cg,
        ),
        policy: names.rules.get(ev.rule as usize).cloned(),
        sides: Vec::new(),
        count,
    };
    line.sides = sides(ev, &line, names);
    line
}

fn side_name(side: u8) -> Side {
    if side == Side::Egress as u8 {
        Side::Egress
    } else {
        Side::Ingress
    }
}

/// The sides that denied, from the record's two sides. A record known only by its fold key has
/// neither: its named side stands alone, its mode and policy unknown.
fn sides(ev: &ViolationEvent, line: &LogLine, names: &NameTables) -> Vec<SideLine> {
    if line.kind == "flow" {
        return Vec::new();
    }
    let namespace = |side: Side| match side {
        Side::Egress => line.src.namespace.clone(),
        Side::Ingress => line.dst.namespace.clone(),
    };
    let mut out: Vec<SideLine> = [(Side::Egress, ev.egress), (Side::Ingress, ev.ingress)]
        .into_iter()
        .filter(|(_, r)| r.denied == 1)
        .map(|(side, r)| SideLine {
            side: side.as_str(),
            namespace: namespace(side),
            mode: Mode::try_from(u32::from(r.mode)).ok().map(Mode::as_str),
            policy: names.rules.get(r.rule as usize).cloned(),
        })
        .collect();
    if out.is_empty() {
        let side = side_name(ev.side);
        out.push(SideLine {
            side: side.as_str(),
            namespace: namespace(side),
            mode: None,
            policy: line.policy.clone(),
        });
    }
    out
}

/// Builds a line for a flow whose first event never reached user space (ring buffer full).
pub fn from_fold_key(
    key: &FoldKey,
    names: &NameTables,
    node: &str,
    ts: String,
    count: u64,
) -> LogLine {
    let ev = ViolationEvent {
        cgroup_id: key.cgroup_id,
        saddr: key.saddr,
        daddr: key.daddr,
        dport: key.dport,
        proto: key.proto,
        family: key.family,
        side: key.side,
        verdict: key.verdict,
        rule: u32::MAX,
        ..Default::default()
    };
    let src_ip = addr(key.family, &key.saddr);
    let dst_ip = addr(key.family, &key.daddr);
    let mut line = from_event(&ev, names, node, ts, count);
    // The key's cgroup is the deciding side's own pod: the source on egress (whose address is
    // unknown for a connect() denied at the syscall), the destination on ingress.
    let (src_cg, dst_cg) = if key.side == Side::Egress as u8 {
        (Some(key.cgroup_id), None)
    } else {
        (None, Some(key.cgroup_id))
    };
    line.src = peer(names, u32::MAX, key.family, src_ip, 0, src_cg);
    line.dst = peer(names, u32::MAX, key.family, dst_ip, key.dport, dst_cg);
    line.sides = sides(&ev, &line, names);
    line
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use firewall_common::SideRecord;

    use super::*;
    use crate::events::names::PodName;

    fn tables() -> NameTables {
        let web = Arc::new(PodName {
            namespace: "web".into(),
            name: "web-5d9c".into(),
            ips: vec!["10.244.1.5".parse().unwrap()],
        });
        let pg = Arc::new(PodName {
            namespace: "db".into(),
            name: "postgres-0".into(),
            ips: vec!["10.244.2.9".parse().unwrap()],
        });
        NameTables {
            rules: vec!["default".into(), "NamespaceFirewall/db/default".into()],
            namespaces: HashMap::from([(2, "web".into()), (3, "db".into())]),
            by_ip: HashMap::from([
                ("10.244.2.9".parse().unwrap(), pg.clone()),
                ("10.244.1.5".parse().unwrap(), web.clone()),
            ]),
            by_cgroup: HashMap::from([(77, web), (88, pg)]),
        }
    }

    /// A side that denied by `rule` in `mode`.
    fn denying(rule: u32, mode: Mode) -> SideRecord {
        SideRecord {
            rule,
            mode: mode as u8,
            denied: 1,
            pad: [0; 2],
        }
    }

    /// web-5d9c (cgroup 77) connecting from 10.244.1.5:43122 to postgres-0 at 10.244.2.9:5432,
    /// audited on egress by rule 1.
    fn web_to_postgres() -> ViolationEvent {
        ViolationEvent {
            cgroup_id: 77,
            saddr: [u32::from_ne_bytes([10, 244, 1, 5]), 0, 0, 0],
            daddr: [u32::from_ne_bytes([10, 244, 2, 9]), 0, 0, 0],
            src_ns: 2,
            dst_ns: 3,
            rule: 1,
            sport: 43122,
            dport: 5432,
            proto: 6,
            family: 4,
            side: Side::Egress as u8,
            verdict: EventVerdict::Audit as u8,
            local_is_src: 1,
            egress: denying(1, Mode::Monitor),
            ..Default::default()
        }
    }

    #[test]
    fn a_fold_remainder_names_the_deciding_sides_own_pod_by_cgroup() {
        let names = tables();
        // A connect() denied at the syscall: no source address, only the source's cgroup.
        let egress = FoldKey {
            saddr: [0; 4],
            verdict: EventVerdict::Denied as u8,
            ..web_to_postgres().fold_key()
        };
        let line = from_fold_key(&egress, &names, "node-1", String::new(), 3);
        assert_eq!(line.src.namespace.as_deref(), Some("web"));
        assert_eq!(line.src.pod.as_deref(), Some("web-5d9c"));
        assert_eq!(line.src.ip, "10.244.1.5".parse().ok());
        assert_eq!(line.dst.pod.as_deref(), Some("postgres-0"));
        // On ingress the cgroup is the destination's.
        let ingress = FoldKey {
            cgroup_id: 88,
            saddr: [u32::from_ne_bytes([10, 244, 1, 5]), 0, 0, 0],
            side: Side::Ingress as u8,
            ..egress
        };
        let line = from_fold_key(&ingress, &names, "node-1", String::new(), 3);
        assert_eq!(line.dst.namespace.as_deref(), Some("db"));
        assert_eq!(line.src.pod.as_deref(), Some("web-5d9c"));
    }

    #[test]
    fn line_matches_the_documented_shape() {
        let names = tables();
        let line = from_event(
            &web_to_postgres(),
            &names,
            "node-1",
            format_ts(1_795_406_400_123_456_000),
            1,
        );
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"ts":"2026-11-23T04:00:00.123456Z","type":"violation","verdict":"AUDIT","direction":"egress","node":"node-1","protocol":"TCP","src":{"namespace":"web","pod":"web-5d9c","ip":"10.244.1.5","port":43122},"dst":{"namespace":"db","pod":"postgres-0","ip":"10.244.2.9","port":5432},"policy":"NamespaceFirewall/db/default","sides":[{"side":"egress","namespace":"web","mode":"monitor","policy":"NamespaceFirewall/db/default"}],"count":1}"#
        );
        // An echo request's id sits in the source port's place: ICMP lines have no ports.
        for proto in [IpProto::Icmp, IpProto::Icmpv6] {
            let icmp = ViolationEvent {
                proto: proto as u8,
                dport: 0,
                ..web_to_postgres()
            };
            let line = from_event(&icmp, &names, "node-1", String::new(), 1);
            assert_eq!((line.src.port, line.dst.port), (None, None));
        }
    }

    /// docs/design.md#violation-log: one record per connection; `verdict` DENIED iff dropped,
    /// `direction` the side that dropped it, `sides` every side that denied.
    #[test]
    fn one_line_names_both_sides_of_a_connection_dropped_at_the_source() {
        let names = tables();
        let ev = ViolationEvent {
            verdict: EventVerdict::Denied as u8,
            side: Side::Ingress as u8,
            rule: 0,
            ingress: denying(0, Mode::Enforce),
            ..web_to_postgres()
        };
        let line = from_event(&ev, &names, "node-1", String::new(), 2);
        assert_eq!(
            (
                line.kind,
                line.verdict,
                line.direction,
                line.policy.as_deref()
            ),
            ("violation", "DENIED", "ingress", Some("default"))
        );
        let sides: Vec<_> = line
            .sides
            .iter()
            .map(|s| (s.side, s.namespace.as_deref(), s.mode, s.policy.as_deref()))
            .collect();
        assert_eq!(
            sides,
            [
                (
                    "egress",
                    Some("web"),
                    Some("monitor"),
                    Some("NamespaceFirewall/db/default")
                ),
                ("ingress", Some("db"), Some("enforce"), Some("default")),
            ]
        );
    }

    #[test]
    fn an_allowed_connection_is_a_flow_line_without_sides() {
        let ev = ViolationEvent {
            verdict: EventVerdict::Allowed as u8,
            egress: SideRecord::default(),
            rule: 0,
            ..web_to_postgres()
        };
        let line = from_event(&ev, &tables(), "node-1", String::new(), 1);
        assert_eq!(
            (
                line.kind,
                line.verdict,
                line.policy.as_deref(),
                line.sides.len()
            ),
            ("flow", "ALLOWED", Some("default"), 0)
        );
    }
}
