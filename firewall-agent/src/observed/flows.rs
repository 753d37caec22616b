//! Log records folded into flows: one tally per (source namespace, destination, protocol,
//! destination port), whatever node and second a line came from. Everything is kept in ordered
//! maps and summed or min/maxed, so the result does not depend on the order of the lines.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use firewall_common::Side;

use super::lines::{LogRecord, RecordKind, Verdict};

/// Where a flow goes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dest {
    /// A pod or cluster IP of a namespace.
    Namespace(String),
    /// An address outside every namespace (the log does not tell world from host: both have no
    /// namespace, and a NamespaceFirewall reaches both only through `cidrs`).
    World(IpAddr),
}

/// One flow: connections from pods of `src` to `dst` on `protocol` and `port`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub src: String,
    pub dst: Dest,
    /// The log's protocol name (`TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6` or a number).
    pub protocol: String,
    /// Destination port (`None` for ICMP).
    pub port: Option<u16>,
}

/// How many connections lines reported, and when the first and the last were.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub count: u64,
    /// The earliest `ts` (empty when nothing was seen).
    pub first: String,
    /// The latest `ts`.
    pub last: String,
}

impl Seen {
    fn add(&mut self, count: u64, ts: &str) {
        self.count += count;
        if self.first.is_empty() || ts < self.first.as_str() {
            self.first = ts.to_owned();
        }
        if ts > self.last.as_str() {
            self.last = ts.to_owned();
        }
    }

    /// Both tallies together.
    pub fn merge(&mut self, other: &Seen) {
        self.count += other.count;
        if !other.first.is_empty() && (self.first.is_empty() || other.first < self.first) {
            self.first.clone_from(&other.first);
        }
        if other.last > self.last {
            self.last.clone_from(&other.last);
        }
    }
}

/// What the lines said about one side of a flow that denied it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SideStats {
    pub seen: Seen,
    /// The deciding rule when it was a ClusterFirewall rule (no NamespaceFirewall can allow
    /// what one of those denies); the name sorting first when several were seen.
    pub cluster_rule: Option<String>,
}

/// Everything the lines said about one flow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Per verdict: every line (a connection judged on two nodes has a line on each).
    pub verdicts: BTreeMap<Verdict, Seen>,
    /// Sides that denied (violation lines: their `sides`, else their `direction`).
    pub denied: BTreeMap<Side, SideStats>,
    /// Destination pods named by the lines.
    pub dst_pods: BTreeSet<String>,
    /// Destination addresses.
    pub dst_ips: BTreeSet<IpAddr>,
}

impl FlowStats {
    /// Every line of the flow, whatever its verdict.
    pub fn total(&self) -> Seen {
        let mut all = Seen::default();
        for s in self.verdicts.values() {
            all.merge(s);
        }
        all
    }

    /// Whether any line said the flow was allowed on every side (a flow line).
    pub fn allowed(&self) -> bool {
        self.verdicts.contains_key(&Verdict::Allowed)
    }
}

/// Lines that name no cross-namespace flow, and why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Source and destination in one namespace (always allowed).
    pub same_namespace: u64,
    /// No source namespace: from world or host (never restricted).
    pub from_outside: u64,
    /// No destination namespace nor address.
    pub no_destination: u64,
}

/// The flows of a log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flows {
    pub flows: BTreeMap<FlowKey, FlowStats>,
    pub skipped: Skipped,
}

impl Flows {
    /// Folds one record in.
    pub fn add(&mut self, r: &LogRecord) {
        let Some(src) = r.src.namespace.clone() else {
            self.skipped.from_outside += 1;
            return;
        };
        let dst = match (&r.dst.namespace, r.dst.ip) {
            (Some(ns), _) if *ns == src => {
                self.skipped.same_namespace += 1;
                return;
            }
            (Some(ns), _) => Dest::Namespace(ns.clone()),
            (None, Some(ip)) => Dest::World(ip),
            (None, None) => {
                self.skipped.no_destination += 1;
                return;
            }
        };
        let key = FlowKey {
            src,
            dst,
            protocol: r.protocol.clone(),
            port: r.dst.port,
        };
        let stats = self.flows.entry(key).or_default();
        stats
            .verdicts
            .entry(r.verdict)
            .or_default()
            .add(r.count, &r.ts);
        if let Some(pod) = &r.dst.pod {
            stats.dst_pods.insert(pod.clone());
        }
        stats.dst_ips.extend(r.dst.ip);
        if r.kind == RecordKind::Violation {
            for (side, policy) in denying_sides(r) {
                let s = stats.denied.entry(side).or_default();
                s.seen.add(r.count, &r.ts);
                if let Some(p) = policy.filter(|p| p.starts_with("ClusterFirewall/"))
                    && s.cluster_rule.as_deref().is_none_or(|c| p < c)
                {
                    s.cluster_rule = Some(p.to_owned());
                }
            }
        }
    }
}

/// The sides a violation line says denied, with each side's rule: `sides` when the agent wrote
/// it, else `direction` and `policy`.
fn denying_sides(r: &LogRecord) -> Vec<(Side, Option<&str>)> {
    match (&r.sides, r.direction) {
        (Some(sides), _) => sides
            .iter()
            .map(|s| (s.side, s.policy.as_deref()))
            .collect(),
        (None, Some(d)) => vec![(d, r.policy.as_deref())],
        (None, None) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::format::Peer;

    fn rec(ts: &str, verdict: Verdict, dst_ns: Option<&str>, count: u64) -> LogRecord {
        LogRecord {
            ts: ts.into(),
            kind: if verdict == Verdict::Allowed {
                RecordKind::Flow
            } else {
                RecordKind::Violation
            },
            verdict,
            direction: Some(Side::Ingress),
            node: Some("n1".into()),
            protocol: "TCP".into(),
            src: Peer {
                namespace: Some("web".into()),
                pod: Some("w".into()),
                ip: "10.0.0.1".parse().ok(),
                port: Some(40000),
            },
            dst: Peer {
                namespace: dst_ns.map(Into::into),
                pod: Some("pg".into()),
                ip: "10.0.0.2".parse().ok(),
                port: Some(5432),
            },
            policy: Some("ClusterFirewall/b:rules[1]".into()),
            count,
            sides: None,
        }
    }

    #[test]
    fn folds_lines_of_one_flow_in_any_order() {
        let lines = [
            rec("2026-11-23T04:00:02.000000Z", Verdict::Audit, Some("db"), 2),
            rec("2026-11-23T04:00:01.000000Z", Verdict::Audit, Some("db"), 1),
            rec(
                "2026-11-23T04:00:03.000000Z",
                Verdict::Allowed,
                Some("db"),
                5,
            ),
            rec(
                "2026-11-23T04:00:00.000000Z",
                Verdict::Audit,
                Some("web"),
                9,
            ),
            rec("2026-11-23T04:00:00.000000Z", Verdict::Audit, None, 1),
        ];
        let mut a = Flows::default();
        lines.iter().for_each(|l| a.add(l));
        let mut b = Flows::default();
        lines.iter().rev().for_each(|l| b.add(l));
        assert_eq!(a, b);
        assert_eq!(a.skipped.same_namespace, 1);
        assert_eq!(a.flows.len(), 2);
        let db = &a.flows[&FlowKey {
            src: "web".into(),
            dst: Dest::Namespace("db".into()),
            protocol: "TCP".into(),
            port: Some(5432),
        }];
        let total = db.total();
        assert_eq!(total.count, 8);
        assert_eq!(total.first, "2026-11-23T04:00:01.000000Z");
        assert_eq!(total.last, "2026-11-23T04:00:03.000000Z");
        let ingress = &db.denied[&Side::Ingress];
        assert_eq!(ingress.seen.count, 3);
        assert_eq!(
            ingress.cluster_rule.as_deref(),
            Some("ClusterFirewall/b:rules[1]")
        );
        assert!(db.allowed());
        assert!(
            a.flows
                .keys()
                .any(|k| k.dst == Dest::World("10.0.0.2".parse().unwrap()))
        );
    }
}
