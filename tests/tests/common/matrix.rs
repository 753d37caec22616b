//! The upstream shape of policy e2e tests (kubernetes `test/e2e/network/netpol`, network-policy-api
//! conformance): a grid of namespaces and pods, every pod serving TCP and UDP on the same ports
//! with named container ports (`serve-80-tcp`), every pair probed and compared with an expected
//! reachability matrix, printed as a truth table when they differ. One testbed and one agent per
//! test binary; cases swap the policy (and the namespaces' `bulkhead.dev/mode`) in the source file.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use bulkhead_tests::{Protocol, Target, source};
use serde_json::Value;

use super::{
    agent::{Agent, pretty},
    node::{Node, docs},
};

/// How long a probe waits for its answer.
const TIMEOUT: Duration = Duration::from_millis(800);
/// The kernel folds a flow's violations for 1 s: a flow probed again sooner logs late.
const FOLD_WINDOW: Duration = Duration::from_millis(1200);

/// Ephemeral ports per probe pass: more than one pass's sockets per pod (one per target).
const PORT_WINDOW: u32 = 128;

/// The agent flags that enforce both standard APIs.
pub const STANDARD_APIS: [&str; 2] = [
    "--policy-apis",
    "bulkhead,networkpolicy,clusternetworkpolicy",
];

/// A pod of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pod {
    pub ns: &'static str,
    pub name: &'static str,
}

impl Pod {
    /// `ns/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

/// One probed connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flow {
    pub from: Pod,
    pub to: Pod,
    pub proto: Protocol,
    pub port: u16,
}

impl Flow {
    /// Whether it is TCP or UDP to `port`.
    pub fn is(&self, proto: Protocol, port: u16) -> bool {
        self.proto == proto && self.port == port
    }
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b) = (self.from.key(), self.to.key());
        write!(f, "{a} -> {b} {}/{}", self.proto, self.port)
    }
}

/// Reachability: for every flow, whether it connects.
pub type Reach = BTreeMap<Flow, bool>;

/// Namespaces (with labels) and pods (with labels), all serving `ports`.
pub struct Grid {
    pub namespaces: Vec<(&'static str, &'static str)>,
    pub pods: Vec<(Pod, &'static str)>,
    pub ports: Vec<(Protocol, u16)>,
}

/// The container port name the grid gives (protocol, port): `serve-80-tcp`.
pub fn port_name(proto: Protocol, port: u16) -> String {
    format!("serve-{port}-{}", proto.as_str().to_lowercase())
}

impl Grid {
    /// Upstream netpol's grid: namespaces x, y, z (label `ns`), pods a, b, c (label `pod`) in
    /// each, serving TCP and UDP 80 and 81.
    pub fn xyz() -> Grid {
        let ns: [(&str, &str); 3] = [("x", "{ns: x}"), ("y", "{ns: y}"), ("z", "{ns: z}")];
        let pods = [("a", "{pod: a}"), ("b", "{pod: b}"), ("c", "{pod: c}")];
        Grid {
            namespaces: ns.to_vec(),
            pods: ns
                .iter()
                .flat_map(|(n, _)| pods.iter().map(|(p, l)| (Pod { ns: n, name: p }, *l)))
                .collect(),
            ports: [(Protocol::Tcp, 80), (Protocol::Tcp, 81)]
                .into_iter()
                .chain([(Protocol::Udp, 80), (Protocol::Udp, 81)])
                .collect(),
        }
    }

    /// The scenario's `namespaces:`, `pods:` and `services:`: the grid's plus `extra` items
    /// (flow-style YAML).
    pub fn scenario(&self, extra: &Extra) -> String {
        let Extra {
            namespaces: extra_ns,
            pods: extra_pods,
            services,
        } = *extra;
        let mut out = String::from("namespaces:\n");
        for (n, labels) in &self.namespaces {
            out.push_str(&format!("  - {{name: {n}, labels: {labels}}}\n"));
        }
        extra_ns
            .iter()
            .for_each(|e| out.push_str(&format!("  - {e}\n")));
        out.push_str("pods:\n");
        let serve: Vec<String> = (self.ports.iter())
            .map(|(p, n)| format!("{{protocol: {p}, port: {n}}}"))
            .collect();
        let names: Vec<String> = (self.ports.iter())
            .map(|(p, n)| format!("{}: {{protocol: {p}, port: {n}}}", port_name(*p, *n)))
            .collect();
        for (pod, labels) in &self.pods {
            out.push_str(&format!(
                "  - {{name: {}, namespace: {}, labels: {labels}, serve: [{}], portNames: {{{}}}}}\n",
                pod.name,
                pod.ns,
                serve.join(", "),
                names.join(", ")
            ));
        }
        extra_pods
            .iter()
            .for_each(|e| out.push_str(&format!("  - {e}\n")));
        out.push_str(if services.is_empty() {
            "services: []\n"
        } else {
            "services:\n"
        });
        services
            .iter()
            .for_each(|e| out.push_str(&format!("  - {e}\n")));
        out
    }

    /// Every flow between the grid's pods, with `allowed` saying whether it connects. A pod's
    /// connection to itself is never compared ([`hairpin`]).
    pub fn expect(&self, allowed: impl Fn(&Flow) -> bool) -> Reach {
        let mut reach = Reach::new();
        for (from, _) in &self.pods {
            for (to, _) in &self.pods {
                for &(proto, port) in &self.ports {
                    let f = Flow {
                        from: *from,
                        to: *to,
                        proto,
                        port,
                    };
                    reach.insert(f, from == to || allowed(&f));
                }
            }
        }
        reach
    }
}

/// Objects beside the grid's (flow-style YAML items of the scenario's lists).
#[derive(Clone, Copy, Default)]
pub struct Extra<'a> {
    pub namespaces: &'a [&'a str],
    pub pods: &'a [&'a str],
    pub services: &'a [&'a str],
}

/// Whether a flow goes from a pod to itself. Upstream never compares these ("never fail on
/// loopback, because its not yet defined", `Reachability.Summary(ignoreLoopback)`).
pub fn hairpin(f: &Flow) -> bool {
    f.from == f.to
}

/// The grid on a node, with its agent.
pub struct Harness {
    pub node: Node,
    pub agent: Agent,
    pub grid: Grid,
    last_monitor: std::sync::Mutex<Option<Instant>>,
    relabeled: std::sync::Mutex<Vec<(String, String, String)>>,
    next_port: AtomicU32,
}

impl Harness {
    /// Brings the grid up (scenario `name` on `subnet`) and starts the agent enforcing the
    /// standard APIs.
    pub fn up(name: &str, subnet: u8, grid: Grid, extra: &Extra) -> Self {
        let node = Node::up(name, subnet, &grid.scenario(extra), &[]);
        let agent = node.agent(&STANDARD_APIS);
        let last_monitor = std::sync::Mutex::new(None);
        Harness {
            node,
            agent,
            grid,
            last_monitor,
            relabeled: std::sync::Mutex::default(),
            next_port: AtomicU32::new(0),
        }
    }

    /// Replaces `{net}` (the node's /24), `{net6}` and `{ns/pod}` (a pod's IPv4) in `text`.
    pub fn fill(&self, text: &str) -> String {
        let tb = self.node.testbed();
        let n = tb.node_ipv4().octets();
        let mut out = text.replace("{net}", &format!("{}.{}.{}.0/24", n[0], n[1], n[2]));
        out = out.replace("{net6}", &format!("fd00:b1:{}::/64", n[2]));
        for p in tb.pods() {
            out = out.replace(&format!("{{{}}}", p.key), &p.ipv4.to_string());
        }
        out
    }

    /// Writes the source: every namespace labelled `bulkhead.dev/mode: MODE`, plus `policies`;
    /// waits until the agent applied it.
    pub fn apply(&self, mode: &str, policies: &[String]) {
        let mut s = self.node.testbed().scenario().clone();
        for ns in &mut s.namespaces {
            ns.labels.insert("bulkhead.dev/mode".into(), mode.into());
        }
        for (what, k, v) in self.relabeled.lock().expect("lock").iter() {
            let ns = s.namespaces.iter_mut().filter(|n| n.name == *what);
            let pods = s.pods.iter_mut().filter(|p| p.key() == *what);
            let labels = ns.map(|n| &mut n.labels).chain(pods.map(|p| &mut p.labels));
            labels.for_each(|l| drop(l.insert(k.clone(), v.clone())));
        }
        let refs: Vec<&str> = policies.iter().map(String::as_str).collect();
        let objects = source::scenario_objects(&s, &docs(&refs)).expect("objects");
        let applied = self.agent.logs_with("policy applied").len();
        source::write_objects(self.node.source(), &objects).expect("write source");
        self.agent
            .wait_for_log_count("policy applied", applied + 1, Duration::from_secs(10));
    }

    /// From the next [`Harness::apply`] on, namespace or pod (`ns/pod`) `what` also carries the
    /// label `key: value` (an edit of the object, as `kubectl label` makes); `None` forgets every
    /// such label.
    pub fn relabel(&self, change: Option<(&str, &str, &str)>) {
        let mut r = self.relabeled.lock().expect("lock");
        match change {
            Some((what, k, v)) => r.push((what.into(), k.into(), v.into())),
            None => r.clear(),
        }
    }

    /// Gives every pod a fresh window of [`PORT_WINDOW`] ephemeral ports, never used in the last
    /// minutes: a probe must be a new connection. (UDP has no handshake: a probe whose random
    /// source port repeats a tuple tracked in the last 60 s, from an earlier pass that allowed
    /// it, is the same flow to any stateful firewall and passes unjudged.)
    fn fresh_ports(&self) {
        let lo = self.next_port.fetch_add(PORT_WINDOW, Ordering::Relaxed);
        let lo = 10_000 + lo % (65_000 - 10_000 - PORT_WINDOW);
        let range = format!("net.ipv4.ip_local_port_range={lo} {}", lo + PORT_WINDOW - 1);
        for ns in self
            .node
            .testbed()
            .pods()
            .iter()
            .filter_map(|p| p.netns.as_deref())
        {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, "sysctl", "-qw", &range]);
            super::stdout_of(&mut cmd, "sysctl ip_local_port_range");
        }
    }

    /// Probes every flow of the grid, one thread per source pod.
    pub fn observe(&self) -> Reach {
        self.fresh_ports();
        let tb = self.node.testbed();
        let flows: Vec<Flow> = self.grid.expect(|_| true).into_keys().collect();
        let sources: Vec<Pod> = self.grid.pods.iter().map(|(p, _)| *p).collect();
        let results = thread::scope(|scope| {
            let handles: Vec<_> = (sources.iter())
                .map(|src| {
                    let mine: Vec<Flow> =
                        flows.iter().filter(|f| f.from == *src).copied().collect();
                    scope.spawn(move || {
                        let targets: Vec<Target> = mine.iter().map(|f| self.target(f)).collect();
                        let r = tb.probe(&src.key(), &targets, TIMEOUT).expect("probe");
                        mine.into_iter().zip(r).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("probe thread"))
                .collect::<Vec<_>>()
        });
        for (f, r) in &results {
            assert!(
                r.result != "refused",
                "{f}: nothing listens (testbed bug): {r:?}"
            );
        }
        results
            .into_iter()
            .map(|(f, r)| (f, r.result == "ok"))
            .collect()
    }

    fn target(&self, f: &Flow) -> Target {
        let ip = self.node.ip(&f.to.key());
        Target {
            ip,
            protocol: f.proto,
            port: f.port,
        }
    }

    /// Enforce mode: the observed matrix must be `expected`.
    pub fn check_enforce(&self, policies: &[String], expected: &Reach) -> Result<(), String> {
        self.apply("enforce", policies);
        match truth_tables(&self.grid, expected, &self.observe()) {
            None => Ok(()),
            Some(t) => Err(format!("enforce: reachability differs\n{t}")),
        }
    }

    /// Monitor mode: every probe connects, and the flows logged as violations (AUDIT) are
    /// exactly the denied flows of `expected`, each side naming one of `objects`.
    pub fn check_monitor(
        &self,
        policies: &[String],
        expected: &Reach,
        objects: &[String],
    ) -> Result<(), String> {
        self.apply("monitor", policies);
        self.monitor_pass(expected, objects)
    }

    fn monitor_pass(&self, expected: &Reach, objects: &[String]) -> Result<(), String> {
        if let Some(t) = *self.last_monitor.lock().expect("lock") {
            thread::sleep(FOLD_WINDOW.saturating_sub(t.elapsed()));
        }
        let mark = self.agent.violations().len();
        let observed = self.observe();
        *self.last_monitor.lock().expect("lock") = Some(Instant::now());
        let mut errors = Vec::new();
        let all_ok = self.grid.expect(|_| true);
        if let Some(t) = truth_tables(&self.grid, &all_ok, &observed) {
            errors.push(format!("monitor: some probes failed\n{t}"));
        }
        let denied: BTreeSet<String> = (expected.iter())
            .filter(|(_, ok)| !**ok)
            .map(|(f, _)| f.to_string())
            .collect();
        let lines: Vec<Value> = (self.audit_lines(mark, &denied).into_iter())
            .filter(|l| l["src"]["ip"] != l["dst"]["ip"])
            .collect();
        let logged: BTreeSet<String> = lines.iter().map(flow_of).collect();
        if logged != denied {
            let missing: Vec<_> = denied.difference(&logged).collect();
            let extra: Vec<_> = logged.difference(&denied).collect();
            errors.push(format!(
                "monitor: logged flows differ from the denied ones\n  not logged: {missing:?}\n  logged but allowed: {extra:?}"
            ));
        }
        errors.extend(lines.iter().filter_map(|l| misnamed(l, objects)));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }

    /// The AUDIT lines after `mark`, once every flow of `want` has one (or after 4 s), plus
    /// 300 ms for stragglers.
    pub fn audit_lines(&self, mark: usize, want: &BTreeSet<String>) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(4);
        let audit = |all: Vec<Value>| -> Vec<Value> {
            all.into_iter()
                .skip(mark)
                .filter(|l| l["verdict"] == "AUDIT")
                .collect()
        };
        loop {
            let got = audit(self.agent.violations());
            let flows: BTreeSet<String> = got.iter().map(flow_of).collect();
            if want.is_subset(&flows) || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(300));
        audit(self.agent.violations())
    }

    /// A probe from a grid pod to any address (a world server, a pod outside the grid).
    pub fn probe(&self, from: &str, ip: IpAddr, proto: Protocol, port: u16) -> bool {
        self.fresh_ports();
        self.node.probe(from, ip, proto, port).result == "ok"
    }
}

/// A violation line's flow, spelled as [`Flow`]'s `Display` (world ends by address).
pub fn flow_of(l: &Value) -> String {
    let end = |e: &Value| match (e["namespace"].as_str(), e["pod"].as_str()) {
        (Some(ns), Some(pod)) => format!("{ns}/{pod}"),
        _ => e["ip"].as_str().unwrap_or("?").to_owned(),
    };
    let proto = l["protocol"].as_str().unwrap_or("?");
    format!(
        "{} -> {} {proto}/{}",
        end(&l["src"]),
        end(&l["dst"]),
        l["dst"]["port"]
    )
}

/// Why a line's sides do not name their deciding objects right, if they don't: every side is
/// in monitor mode and names (comma-separated) only objects of `objects`, a NetworkPolicy of the
/// side's own namespace, a ClusterNetworkPolicy rule of the side's direction.
pub fn misnamed(l: &Value, objects: &[String]) -> Option<String> {
    let sides = l["sides"].as_array().filter(|s| !s.is_empty());
    let Some(sides) = sides else {
        return Some(format!("no sides: {l}"));
    };
    for s in sides {
        let (side, ns) = (s["side"].as_str().unwrap_or("?"), s["namespace"].as_str());
        let policy = s["policy"].as_str().unwrap_or("");
        let ok = s["mode"] == "monitor"
            && policy.split(',').all(|p| {
                objects
                    .iter()
                    .any(|o| match o.strip_prefix("ClusterNetworkPolicy/") {
                        Some(_) => p.starts_with(&format!("{o}:{side}[")),
                        None => {
                            p == o
                                && ns.is_some_and(|n| o.starts_with(&format!("NetworkPolicy/{n}/")))
                        }
                    })
            });
        if !ok {
            return Some(format!(
                "{}: side {side} names {policy:?}, not one of {objects:?}: {l}",
                flow_of(l)
            ));
        }
    }
    None
}

/// Upstream-style truth tables (expected, observed, and `X` where they differ), one per
/// (protocol, port) that differs; `None` when all agree. Hairpin flows are not compared.
pub fn truth_tables(grid: &Grid, expected: &Reach, observed: &Reach) -> Option<String> {
    let mut out = String::new();
    for &(proto, port) in &grid.ports {
        let differs = (expected.keys())
            .filter(|f| f.is(proto, port) && !hairpin(f))
            .any(|f| expected.get(f) != observed.get(f));
        if differs {
            out.push_str(&table(grid, proto, port, expected, observed));
        }
    }
    (!out.is_empty()).then_some(out)
}

fn table(grid: &Grid, proto: Protocol, port: u16, expected: &Reach, observed: &Reach) -> String {
    let mut out = format!(
        "{proto}/{port}: expected | observed | differs (. = connects, X = blocked, - = hairpin, not compared)\n"
    );
    let pods: Vec<Pod> = grid.pods.iter().map(|(p, _)| *p).collect();
    let width = pods.iter().map(|p| p.key().len()).max().unwrap_or(1);
    let header: String = (0..pods.len())
        .map(|i| char::from(b'0' + (i % 10) as u8))
        .collect();
    out.push_str(&format!("{:width$}   {header}   {header}   {header}\n", ""));
    let mark = |b: Option<&bool>| if b == Some(&true) { '.' } else { 'X' };
    for from in &pods {
        let cells = |m: &dyn Fn(&Flow) -> char| -> String {
            let flow = |to: &Pod| Flow {
                from: *from,
                to: *to,
                proto,
                port,
            };
            pods.iter().map(|to| m(&flow(to))).collect()
        };
        let e = cells(&|f| {
            if hairpin(f) {
                '-'
            } else {
                mark(expected.get(f))
            }
        });
        let o = cells(&|f| mark(observed.get(f)));
        let same = |f: &Flow| hairpin(f) || expected.get(f) == observed.get(f);
        let d = cells(&|f| if same(f) { '.' } else { 'X' });
        out.push_str(&format!("{:width$}   {e}   {o}   {d}\n", from.key()));
    }
    let legend: Vec<String> = (pods.iter().enumerate())
        .map(|(i, p)| format!("{}={}", i % 10, p.key()))
        .collect();
    out.push_str(&format!("columns: {}\n", legend.join(" ")));
    out
}

/// Prints a line for a case outside what this kernel can run (SCTP), to the real stderr so the
/// test harness does not swallow it.
pub fn skip_loudly(case: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!! SKIPPED case {case}: {why} !!!!!\n"
    );
}

/// Runs `cases` (name, policies, expected, deciding objects) in enforce then monitor mode;
/// prints each case's time; returns the failures.
pub fn run_cases(h: &Harness, cases: &[(String, Vec<String>, Reach, Vec<String>)]) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, policies, expected, objects) in cases {
        let started = Instant::now();
        let mut errs = Vec::new();
        errs.extend(h.check_enforce(policies, expected).err());
        errs.extend(h.check_monitor(policies, expected, objects).err());
        let ms = started.elapsed().as_millis();
        let verdict = if errs.is_empty() { "ok" } else { "FAILED" };
        eprintln!("case {name}: {verdict} ({ms} ms)");
        if !errs.is_empty() {
            failures.push(format!("case {name}:\n{}", errs.join("\n")));
        }
    }
    failures
}

/// Panics listing every failure, with the agent's lines for context.
pub fn assert_no_failures(failures: &[String], agent: &Agent) {
    if !failures.is_empty() {
        let lines = agent.violations();
        let tail = &lines[lines.len().saturating_sub(20)..];
        panic!(
            "{} case(s) failed:\n\n{}\n\nlast lines:\n{}",
            failures.len(),
            failures.join("\n\n"),
            pretty(tail)
        );
    }
}
