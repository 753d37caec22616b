//! Prometheus metrics (`/metrics` on `--metrics-addr`), with the `prometheus-client` crate.
//!
//! Cardinality is bounded by construction: datapath counters are labelled by reason (a fixed
//! enum); violations by verdict, direction and namespace pair and allowed flows by namespace
//! pair, where at most [`MAX_PAIRS`] distinct pairs get their own series and the rest are
//! counted under `_other`; maps by name.
use std::{
    collections::HashSet,
    sync::{Mutex, atomic::AtomicU64},
    time::Duration,
};

use firewall_common::{COUNTERS_LEN, Counter as KernelCounter};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::Registry,
};

use crate::{
    datapath::LoadOptions,
    events::format::LogLine,
    model::{InForce, Rejection},
    source::Progress,
};

/// Namespace pairs with their own violation series; further pairs share `_other`.
pub const MAX_PAIRS: usize = 1000;

/// The state maps whose size, fill and apply failures are exported.
const STATE_MAPS: [&str; 5] = [
    firewall_common::maps::CGROUPS,
    firewall_common::maps::IPV4,
    firewall_common::maps::IPV6,
    firewall_common::maps::POLICY,
    firewall_common::maps::MODES,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    verdict: &'static str,
    direction: &'static str,
    src_namespace: String,
    dst_namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PairLabels {
    src_namespace: String,
    dst_namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InForceLabels {
    in_force: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the agent exports, updated by its loop and encoded on scrape.
pub struct Metrics {
    registry: Registry,
    datapath: Family<ReasonLabels, Counter>,
    kernel_seen: Mutex<[u64; COUNTERS_LEN as usize]>,
    violations: Family<ViolationLabels, Counter>,
    flows_allowed: Family<PairLabels, Counter>,
    pairs: Mutex<HashSet<(String, String)>>,
    events_lost: Counter,
    map_entries: Family<MapLabels, Gauge>,
    map_capacity: Family<MapLabels, Gauge>,
    map_fill: Family<MapLabels, FloatGauge>,
    policy_objects: Family<StateLabels, Gauge>,
    rejected_in_force: Family<InForceLabels, Gauge>,
    invalid_mode_labels: Gauge,
    apply_seconds: Histogram,
    last_apply: FloatGauge,
    source_synced: Gauge,
    source_errors: Counter,
    source_last_change: FloatGauge,
    apply_failures: Family<MapLabels, Counter>,
    node_known: Gauge,
    unmatched_pod_cgroups: Gauge,
}

impl Metrics {
    /// All metrics registered, capacities set from the load options.
    pub fn new(load: &LoadOptions) -> Self {
        let mut registry = Registry::with_prefix("bulkhead");
        let m = Self {
            registry: Registry::default(),
            datapath: Family::default(),
            kernel_seen: Mutex::new([0; COUNTERS_LEN as usize]),
            violations: Family::default(),
            flows_allowed: Family::default(),
            pairs: Mutex::default(),
            events_lost: Counter::default(),
            map_entries: Family::default(),
            map_capacity: Family::default(),
            map_fill: Family::default(),
            policy_objects: Family::default(),
            rejected_in_force: Family::default(),
            invalid_mode_labels: Gauge::default(),
            apply_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            last_apply: FloatGauge::default(),
            source_synced: Gauge::default(),
            source_errors: Counter::default(),
            source_last_change: FloatGauge::default(),
            apply_failures: Family::default(),
            node_known: Gauge::default(),
            unmatched_pod_cgroups: Gauge::default(),
        };
        m.register(&mut registry);
        registry.register(
            "build",
            "The agent's version and the commit it was built from",
            Info::new(vec![("version", crate::VERSION), ("commit", crate::COMMIT)]),
        );
        let m = Self { registry, ..m };
        m.set_capacities(load.capacities());
        m.export_zeros();
        m
    }

    /// Creates every labelled series with its known labels at 0, so a dashboard or an alert on
    /// `rate(...)` sees a counter before its first increment (an absent series reads as "no
    /// data", not as zero).
    fn export_zeros(&self) {
        for c in KernelCounter::ALL {
            let _ = self
                .datapath
                .get_or_create(&ReasonLabels { reason: c.name() });
        }
        for state in ["accepted", "rejected"] {
            let _ = self.policy_objects.get_or_create(&StateLabels { state });
        }
        for in_force in [InForce::LastAccepted, InForce::FailClosed] {
            let _ = self.rejected_in_force.get_or_create(&InForceLabels {
                in_force: in_force.reason(),
            });
        }
        for map in STATE_MAPS {
            let _ = self.apply_failures.get_or_create(&MapLabels { map });
            let _ = self.map_entries.get_or_create(&MapLabels { map });
            let _ = self.map_fill.get_or_create(&MapLabels { map });
        }
    }

    fn register(&self, registry: &mut Registry) {
        // Each metric: its field, its name (after the `bulkhead_` prefix) and its help.
        macro_rules! register {
            ($($field:ident: $name:literal, $help:literal;)*) => {
                $(registry.register($name, $help, self.$field.clone());)*
            };
        }
        register! {
            datapath: "datapath_packets",
                "Packets and connections seen by the eBPF programs, by verdict or reason (kernel per-CPU counters)";
            violations: "violations",
                "Denied (DENIED) or audited (AUDIT) connections, one per connection and node, by the line's direction and namespace pair; pairs beyond the first 1000 are counted as _other";
            flows_allowed: "flows_allowed",
                "Allowed new connections across namespaces or to the world, by namespace pair (with --flow-log all; pairs capped as for violations)";
            events_lost: "events_lost",
                "Violation events the ring buffer had no room for (still counted in the log from the fold map)";
            map_entries: "map_entries",
                "Entries in each state map (both slots)";
            map_capacity: "map_capacity",
                "Capacity of each state map";
            map_fill: "map_fill_ratio",
                "map_entries / map_capacity";
            policy_objects: "policy_objects",
                "Policy objects accepted into the applied policy or rejected whole";
            rejected_in_force: "rejected_policy_objects",
                "Rejected policy objects by what enforces them meanwhile: their last accepted version (LastAcceptedInForce) or their fail-closed stand-in (FailClosed)";
            invalid_mode_labels: "invalid_mode_labels",
                "Namespaces whose bulkhead.dev/mode label is no mode (each keeps its last valid mode, or the default)";
            apply_seconds: "policy_apply_seconds",
                "Time to compile the cluster model and write the difference into the maps";
            last_apply: "policy_last_applied_timestamp_seconds",
                "Unix time of the last successful policy apply (sync freshness)";
            source_synced: "source_synced",
                "1 once every watched kind has been listed completely (kube source) or the file parsed";
            source_errors: "source_watch_errors",
                "Failed lists or watches against the API server (each retried with backoff)";
            source_last_change: "source_last_change_timestamp_seconds",
                "Unix time of the last change seen from the source";
            node_known: "node_known",
                "1 when the cluster state names this node (--node-name) in a Node object or a Pod's spec.nodeName; 0 keeps /readyz at 503";
            unmatched_pod_cgroups: "pod_cgroups_unmatched",
                "Pod cgroups on this node that belong to no Pod of this node (a wrong --node-name, or API lag)";
            apply_failures: "policy_apply_failures",
                "Policies not applied (the previous one stayed in force), by the map that would overflow or whose write the kernel refused";
        }
    }

    /// Sets the capacity gauges (again, when adopted pinned maps keep a size other than the
    /// flags').
    pub fn set_capacities(&self, caps: crate::datapath::loader::Capacities) {
        let capacities = [caps.cgroups, caps.ipv4, caps.ipv6, caps.policy, caps.modes];
        for (map, cap) in STATE_MAPS.into_iter().zip(capacities) {
            self.map_capacity
                .get_or_create(&MapLabels { map })
                .set(i64::from(cap));
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Catches the datapath counters up with the kernel's (which only grow).
    pub fn observe_kernel(&self, read: impl Fn(KernelCounter) -> u64) {
        let Ok(mut seen) = self.kernel_seen.lock() else {
            return;
        };
        for c in KernelCounter::ALL {
            let now = read(c);
            let before = &mut seen[c as usize];
            let delta = now.saturating_sub(*before);
            *before = now.max(*before);
            if delta == 0 {
                continue;
            }
            if c == KernelCounter::EventsLost {
                self.events_lost.inc_by(delta);
            }
            self.datapath
                .get_or_create(&ReasonLabels { reason: c.name() })
                .inc_by(delta);
        }
    }

    /// Counts a log line's connections: a violation by verdict and direction, a flow as allowed.
    pub fn record(&self, line: &LogLine) {
        let (src_namespace, dst_namespace) = self.pair(line);
        if line.kind == "flow" {
            self.flows_allowed
                .get_or_create(&PairLabels {
                    src_namespace,
                    dst_namespace,
                })
                .inc_by(line.count);
            return;
        }
        self.violations
            .get_or_create(&ViolationLabels {
                verdict: line.verdict,
                direction: line.direction,
                src_namespace,
                dst_namespace,
            })
            .inc_by(line.count);
    }

    /// The line's namespace pair, or `_other` once [`MAX_PAIRS`] pairs have series.
    fn pair(&self, line: &LogLine) -> (String, String) {
        let src = line
            .src
            .namespace
            .clone()
            .unwrap_or_else(|| "_unknown".into());
        let dst = line
            .dst
            .namespace
            .clone()
            .unwrap_or_else(|| "_unknown".into());
        let (src, dst) = match self.pairs.lock() {
            Ok(mut pairs) => {
                let key = (src, dst);
                if pairs.contains(&key) || pairs.len() < MAX_PAIRS {
                    pairs.insert(key.clone());
                    key
                } else {
                    ("_other".into(), "_other".into())
                }
            }
            Err(_) => ("_other".into(), "_other".into()),
        };
        (src, dst)
    }

    /// Entries per state map (both slots). Conntrack (an LRU) is not counted: its pressure shows
    /// as the `conntrack_full` datapath reason.
    pub fn observe_maps(&self, entries: &[(&'static str, usize)]) {
        for (map, n) in entries {
            let n = *n as i64;
            self.map_entries.get_or_create(&MapLabels { map }).set(n);
            let cap = self.map_capacity.get_or_create(&MapLabels { map }).get();
            if cap > 0 {
                self.map_fill
                    .get_or_create(&MapLabels { map })
                    .set(n as f64 / cap as f64);
            }
        }
    }

    /// A policy was applied in `took`.
    pub fn applied(&self, took: Duration) {
        self.apply_seconds.observe(took.as_secs_f64());
        self.last_apply.set(crate::clock::unix_secs());
    }

    /// The policy in force has `accepted` objects and `rejected` ones, and `invalid_labels`
    /// mode labels that are no mode. Set after every compile whose result is in force,
    /// including one that changed no map entry (a rejection whose stand-in changes nothing).
    pub fn policy_objects(&self, accepted: usize, rejected: &[Rejection], invalid_labels: usize) {
        self.policy_objects
            .get_or_create(&StateLabels { state: "accepted" })
            .set(accepted as i64);
        self.policy_objects
            .get_or_create(&StateLabels { state: "rejected" })
            .set(rejected.len() as i64);
        for in_force in [InForce::LastAccepted, InForce::FailClosed] {
            let n = rejected.iter().filter(|r| r.in_force == in_force).count();
            self.rejected_in_force
                .get_or_create(&InForceLabels {
                    in_force: in_force.reason(),
                })
                .set(n as i64);
        }
        self.invalid_mode_labels.set(invalid_labels as i64);
    }

    pub fn node_known(&self, known: bool) {
        self.node_known.set(i64::from(known));
    }

    pub fn unmatched_pod_cgroups(&self, n: usize) {
        self.unmatched_pod_cgroups.set(n as i64);
    }

    /// A policy was not applied because map `map` would overflow (or `write`: the kernel refused).
    pub fn apply_failed(&self, map: &'static str) {
        self.apply_failures.get_or_create(&MapLabels { map }).inc();
    }

    /// Catches the source counters up with its progress.
    pub fn observe_source(&self, p: Progress) {
        self.source_synced.set(i64::from(p.synced));
        let before = self.source_errors.get();
        if p.errors > before {
            self.source_errors.inc_by(p.errors - before);
        }
        if p.last_change_ms > 0 {
            self.source_last_change.set(p.last_change_ms as f64 / 1e3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::format::Peer;

    fn line(src: &str, dst: &str) -> LogLine {
        LogLine {
            ts: String::new(),
            kind: "violation",
            verdict: "DENIED",
            direction: "egress",
            node: "n".into(),
            protocol: "TCP".into(),
            src: Peer {
                namespace: Some(src.into()),
                ..Default::default()
            },
            dst: Peer {
                namespace: Some(dst.into()),
                ..Default::default()
            },
            policy: None,
            sides: Vec::new(),
            count: 3,
        }
    }

    /// Asserts that the exposition `text` holds every one of `series` (a line or a line's end).
    fn assert_exports<S: AsRef<str>>(text: &str, series: impl IntoIterator<Item = S>) {
        for series in series {
            let series = series.as_ref();
            assert!(text.contains(series), "{series} missing in\n{text}");
        }
    }

    #[test]
    fn counters_follow_the_kernel_and_pairs_are_capped() {
        let m = Metrics::new(&LoadOptions {
            conntrack_entries: 100,
            policy_entries: 200,
            ..Default::default()
        });
        m.observe_kernel(|c| if c == KernelCounter::PolicyDrop { 5 } else { 0 });
        m.observe_kernel(|c| if c == KernelCounter::PolicyDrop { 7 } else { 0 });
        for i in 0..MAX_PAIRS + 5 {
            m.record(&line(&format!("a{i}"), "db"));
        }
        m.observe_maps(&[(firewall_common::maps::POLICY, 50)]);
        assert_exports(
            &m.encode(),
            [
                r#"bulkhead_datapath_packets_total{reason="policy_drop"} 7"#,
                r#"bulkhead_violations_total{verdict="DENIED",direction="egress",src_namespace="a0",dst_namespace="db"} 3"#,
                r#"src_namespace="_other",dst_namespace="_other"} 15"#,
                r#"bulkhead_map_fill_ratio{map="POLICY"} 0.25"#,
                r#"bulkhead_map_capacity{map="POLICY"} 200"#,
            ],
        );
    }

    #[test]
    fn every_counter_is_exported_from_zero_with_the_build() {
        let text = Metrics::new(&LoadOptions::default()).encode();
        assert_exports(
            &text,
            KernelCounter::ALL.map(|c| {
                format!(
                    r#"bulkhead_datapath_packets_total{{reason="{}"}} 0"#,
                    c.name()
                )
            }),
        );
        assert_exports(
            &text,
            [
                "bulkhead_events_lost_total 0",
                r#"bulkhead_policy_objects{state="rejected"} 0"#,
                r#"bulkhead_policy_apply_failures_total{map="POLICY"} 0"#,
                "bulkhead_source_watch_errors_total 0",
            ],
        );
        let build = format!(
            r#"bulkhead_build_info{{version="{}",commit="{}"}} 1"#,
            env!("CARGO_PKG_VERSION"),
            crate::COMMIT
        );
        assert_exports(&text, [build]);
    }

    #[test]
    fn policy_object_counts_follow_every_compile() {
        let m = Metrics::new(&LoadOptions::default());
        m.policy_objects(3, &[], 0);
        let kept = Rejection {
            in_force: InForce::LastAccepted,
            ..Rejection::default()
        };
        m.policy_objects(2, &[kept], 1);
        assert_exports(
            &m.encode(),
            [
                r#"bulkhead_rejected_policy_objects{in_force="LastAcceptedInForce"} 1"#,
                r#"bulkhead_rejected_policy_objects{in_force="FailClosed"} 0"#,
                "bulkhead_invalid_mode_labels 1",
                r#"bulkhead_policy_objects{state="accepted"} 2"#,
                r#"bulkhead_policy_objects{state="rejected"} 1"#,
            ],
        );
    }
}
