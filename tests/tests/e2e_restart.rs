//! Restarting the agent with pinned state (`--bpffs`): enforcement never lapses. While one client
//! keeps trying a denied flow and another keeps an allowed TCP connection busy, the agent is
//! killed with SIGKILL (then, in a second phase, stopped with SIGTERM as an upgrade would) and a
//! new one started on the same pin directory: not one denied attempt gets through, the allowed
//! connection never misses a round trip, the new agent's policy edits apply, and
//! `firewall-agent cleanup` leaves nothing attached. Needs root.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use bulkhead_tests::{
    Protocol, Target,
    agent::Pinning,
    policy::{admit, baseline},
    skip_unless_root,
};
use common::{
    agent::{Pins, agent_bin, cleanup, pretty},
    node::{Node, THREE_PODS},
    stdout_of,
};

/// Names of the programs `bpftool` lists as attached at `cgroup`.
fn attached(cgroup: &Path) -> Vec<String> {
    let text = stdout_of(
        Command::new("bpftool")
            .args(["-j", "cgroup", "show"])
            .arg(cgroup),
        "bpftool (apt-get install bpftool)",
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Repeated denied connection attempts in the background, counted by outcome.
struct Attempts {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<BTreeMap<String, u64>>>,
    thread: thread::JoinHandle<()>,
}

impl Attempts {
    fn start(node: &Node, from: &'static str, target: Target) -> Attempts {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(BTreeMap::new()));
        let tb_name = node.testbed().name().to_owned();
        let (s, r) = (stop.clone(), results.clone());
        let thread = thread::spawn(move || {
            let tb = bulkhead_tests::Testbed::attach(&tb_name).expect("attach testbed");
            while !s.load(Ordering::Relaxed) {
                let rep = tb
                    .storm(from, target, 5, Duration::from_millis(200))
                    .expect("storm");
                let mut all = r.lock().expect("lock");
                for (k, v) in rep.results {
                    *all.entry(k).or_insert(0) += v;
                }
                drop(all);
                thread::sleep(Duration::from_millis(20));
            }
            tb.keep_running();
        });
        Attempts {
            stop,
            results,
            thread,
        }
    }

    fn finish(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("attempts thread");
        self.results.lock().expect("lock").clone()
    }
}

/// One restart under load: `stop` ends the first agent (SIGKILL or SIGTERM), a new one starts on
/// the same pins. Returns the new agent.
fn restart_under_load(
    node: &Node,
    pin: Pinning<'_>,
    stop: impl FnOnce(common::agent::Agent),
    first: common::agent::Agent,
) -> common::agent::Agent {
    let tb = node.testbed();
    let b = tb.target("beta/b", Protocol::Tcp, 8080).expect("target b");
    let c = tb.target("gamma/c", Protocol::Tcp, 9090).expect("target c");
    let hold = tb
        .spawn_hold(
            "alpha/a",
            b,
            Duration::from_millis(20),
            Duration::from_secs(6),
        )
        .expect("hold");
    let attempts = Attempts::start(node, "alpha/a", c);
    thread::sleep(Duration::from_secs(1));
    stop(first);
    let stopped = Instant::now();
    // Nothing runs the firewall in user space now: only the pinned programs enforce.
    thread::sleep(Duration::from_secs(1));
    let agent = node.agent_pinned(pin, &[]);
    eprintln!(
        "new agent ready {:?} after the old one stopped",
        stopped.elapsed()
    );
    let report = hold.wait().expect("hold report");
    let results = attempts.finish();
    eprintln!("hold: {report:?}\ndenied attempts: {results:?}");
    assert!(
        !report.broke && report.failed == 0 && report.reconnects == 0,
        "the allowed connection broke: {report:?}"
    );
    assert!(report.ok >= 100, "too few round trips: {report:?}");
    let total: u64 = results.values().sum();
    assert!(total >= 50, "too few denied attempts: {results:?}");
    assert_eq!(
        results.get("ok"),
        None,
        "a denied attempt succeeded: {results:?}"
    );
    assert_eq!(results.get("denied").copied(), Some(total), "{results:?}");
    agent
}

#[test]
fn kill9_and_upgrade_restarts_never_lapse_enforcement() {
    skip_unless_root!("kill9_and_upgrade_restarts_never_lapse_enforcement");
    let node = Node::up(
        "rstart",
        23,
        THREE_PODS,
        &[&baseline("Deny", "Enforce"), &admit("beta", "alpha", 8080)],
    );
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/bulkhead-e2e-restart-{}",
        std::process::id()
    )));
    let cgroup_root = node.testbed().cgroup_root().to_owned();
    let first = node.agent_pinned(Pinning::Dir(&pins.0), &[]);
    assert_eq!(node.tcp("alpha/a", "beta/b", 8080).result, "ok");
    assert_eq!(node.tcp("alpha/a", "gamma/c", 9090).result, "denied");
    assert_eq!(
        attached(&cgroup_root).len(),
        4,
        "{:?}",
        attached(&cgroup_root)
    );

    // Crash: SIGKILL, then a new agent adopts the pins.
    let second = restart_under_load(&node, Pinning::Dir(&pins.0), |a| a.kill9(), first);
    assert_eq!(
        attached(&cgroup_root).len(),
        4,
        "the old generation was detached: {:?}",
        attached(&cgroup_root)
    );
    // The adopted writer keeps working: a policy edit opens alpha -> gamma.
    let applied = second.logs_with("policy applied").len();
    node.set_policies(&[
        &baseline("Deny", "Enforce"),
        &admit("beta", "alpha", 8080),
        &admit("gamma", "alpha", 9090),
    ]);
    second.wait_for_log_count("policy applied", applied + 1, Duration::from_secs(5));
    assert_eq!(node.tcp("alpha/a", "gamma/c", 9090).result, "ok");
    node.set_policies(&[&baseline("Deny", "Enforce"), &admit("beta", "alpha", 8080)]);
    second.wait_for_log_count("policy applied", applied + 2, Duration::from_secs(5));
    assert_eq!(node.tcp("alpha/a", "gamma/c", 9090).result, "denied");

    // The new agent reports the denied flow it sees (events from the pinned programs).
    let lines = second.wait_violations(Duration::from_secs(5), |l| {
        l.iter()
            .any(|v| v["verdict"] == "DENIED" && v["dst"]["pod"] == "c")
    });
    eprintln!("second agent's violation lines:\n{}", pretty(&lines));

    // Upgrade: SIGTERM leaves enforcement in place, a new agent takes over.
    let third = restart_under_load(&node, Pinning::Dir(&pins.0), |a| a.term(), second);
    assert_eq!(
        attached(&cgroup_root).len(),
        4,
        "{:?}",
        attached(&cgroup_root)
    );
    third.term();
    // Still enforced with no agent at all.
    assert_eq!(node.tcp("alpha/a", "gamma/c", 9090).result, "denied");
    assert_eq!(node.tcp("alpha/a", "beta/b", 8080).result, "ok");

    // Uninstall: nothing attached, the directory gone; a second run has nothing to do.
    let out = cleanup(&pins.0);
    eprintln!("{out}");
    assert!(out.contains("links/bulkhead_egress@"), "{out}");
    assert!(
        attached(&cgroup_root).is_empty(),
        "{:?}",
        attached(&cgroup_root)
    );
    assert!(!pins.0.exists());
    assert_eq!(node.tcp("alpha/a", "gamma/c", 9090).result, "ok");
    assert!(cleanup(&pins.0).contains("nothing to clean up"));
}

/// Where a plain `firewall-agent run` pins (the agent's default).
const DEFAULT_PINS: &str = "/sys/fs/bpf/bulkhead";

/// `firewall-agent status ARGS`: success, stdout, stderr.
fn status(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(agent_bin())
        .arg("status")
        .args(args)
        .output()
        .expect("run firewall-agent status");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `firewall-agent status -o json ARGS`, which must succeed.
fn status_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let (ok, out, err) = status(&all);
    assert!(ok, "status failed:\n{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status -o json ({e}):\n{out}"))
}

/// The namespaces of a status snapshot as `name -> (mode, source)`.
fn modes(agent: &serde_json::Value) -> BTreeMap<String, (String, String)> {
    let ns = agent["policy"]["namespaces"]
        .as_array()
        .expect("namespaces");
    ns.iter()
        .map(|n| {
            let s = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
            (s("name"), (s("mode"), s("source")))
        })
        .collect()
}

/// A plain `firewall-agent run` (no pin flag) pins under the default directory: stopped, its
/// policy keeps enforcing with no agent at all; a new plain `run` adopts the pins without a lapse;
/// `status` reports the node from the agent and, with none running, from the pins alone;
/// `cleanup` with its default removes everything.
#[test]
fn restart_without_flags_holds_enforcement() {
    skip_unless_root!("restart_without_flags_holds_enforcement");
    let default = PathBuf::from(DEFAULT_PINS);
    assert!(
        !default.exists(),
        "{DEFAULT_PINS} exists before the test: something on this machine pins there (remove it with `firewall-agent cleanup` if it is a leftover)"
    );
    let labelled = THREE_PODS
        .replace(
            "{name: alpha}",
            "{name: alpha, labels: {bulkhead.dev/mode: enforce}}",
        )
        .replace(
            "{name: beta}",
            "{name: beta, labels: {bulkhead.dev/mode: enforcing}}",
        );
    // A NamespaceFirewall that is never valid (port 0), in a namespace that admits nothing anyway.
    let broken =
        bulkhead_tests::policy::ingress_from("broken", "gamma", &["alpha"], &[], &[("TCP", 0)]);
    let node = Node::up(
        "rdeflt",
        27,
        &labelled,
        &[
            &baseline("Deny", "Enforce"),
            &admit("beta", "alpha", 8080),
            &broken,
        ],
    );
    let _pins = Pins(default.clone());
    let cgroup_root = node.testbed().cgroup_root().to_owned();
    let port = common::http::free_port();
    let (addr, endpoint) = (
        format!("127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}"),
    );
    let first = node.agent_pinned(Pinning::Default, &["--metrics-addr", &addr]);
    assert!(
        default.join("maps/POLICY").exists(),
        "a plain run pinned nothing"
    );
    assert_eq!(node.tcp("alpha/a", "beta/b", 8080).result, "ok");
    assert_eq!(node.tcp("alpha/a", "gamma/c", 9090).result, "denied");

    // status against the running agent: its view and the pins'.
    let s = status_json(&["--endpoint", &endpoint]);
    let agent = &s["agent"];
    assert_eq!(s["pinDir"], DEFAULT_PINS, "{s:#}");
    assert_eq!(agent["pinDir"], DEFAULT_PINS, "{s:#}");
    assert_eq!(agent["pid"], first.pid(), "{s:#}");
    assert_eq!(agent["ready"], true, "{s:#}");
    assert!(
        agent["commit"].as_str().is_some_and(|c| !c.is_empty()),
        "{s:#}"
    );
    let m = modes(agent);
    let mode = |ns: &str| m.get(ns).cloned().unwrap_or_default();
    let (enforce, label, cluster) = (
        "enforce".to_owned(),
        "Label".to_owned(),
        "ClusterDefault".to_owned(),
    );
    assert_eq!(mode("alpha"), (enforce.clone(), label), "{s:#}");
    // An invalid label keeps the cluster default (it never had a valid one) and is reported.
    assert_eq!(mode("beta"), (enforce.clone(), cluster.clone()), "{s:#}");
    assert_eq!(mode("gamma"), (enforce, cluster), "{s:#}");
    assert_eq!(
        agent["policy"]["invalidModeLabels"],
        serde_json::json!([{"namespace": "beta", "value": "enforcing", "mode": "enforce", "source": "ClusterDefault"}]),
        "{s:#}"
    );
    let rejected = agent["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 1, "{s:#}");
    assert_eq!(
        (
            &rejected[0]["kind"],
            &rejected[0]["namespace"],
            &rejected[0]["name"],
            &rejected[0]["inForce"]
        ),
        // Never accepted: enforced fail closed (docs/design.md#invalid-objects).
        (
            &"NamespaceFirewall".into(),
            &"gamma".into(),
            &"broken".into(),
            &"FailClosed".into()
        ),
        "{s:#}"
    );
    let pods = agent["policy"]["localPods"].as_array().expect("local pods");
    assert_eq!(pods.len(), 3, "{s:#}");
    assert!(
        pods.iter().all(|p| p["cgroups"].as_u64() >= Some(1)),
        "{s:#}"
    );
    let pins = &s["pins"];
    let gens = pins["generations"].as_array().expect("generations");
    assert_eq!(gens.len(), 1, "{s:#}");
    assert_eq!(gens[0]["tag"], agent["linkGeneration"], "{s:#}");
    assert_eq!(
        (&gens[0]["pid"], &gens[0]["running"]),
        (&first.pid().into(), &true.into()),
        "{s:#}"
    );
    assert_eq!(
        gens[0]["programs"].as_array().map(Vec::len),
        Some(4),
        "{s:#}"
    );
    assert_eq!(pins["activeSlot"], agent["activeSlot"], "{s:#}");
    let cgroups: u64 = pods.iter().filter_map(|p| p["cgroups"].as_u64()).sum();
    assert_eq!(pins["podCgroups"], cgroups, "{s:#}");
    let fill = |v: &serde_json::Value, map: &str| {
        v["maps"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["name"] == map).cloned())
    };
    for map in ["CGROUPS", "IPV4", "IPV6", "POLICY", "MODES"] {
        assert_eq!(fill(pins, map), fill(agent, map), "{map}: {s:#}");
    }
    assert_eq!(
        fill(pins, "CGROUPS").map(|m| m["capacity"].clone()),
        Some(65_536.into()),
        "{s:#}"
    );
    let (ok, text, _) = status(&["--endpoint", &endpoint]);
    eprintln!("status:\n{text}");
    assert!(ok && text.contains("beta: \"enforcing\""), "{text}");
    let slot = agent["activeSlot"].clone();
    let namespaces = m.len();

    // Stopped with no pin flag, then restarted with none: not one denied attempt gets through,
    // and while no agent runs, status says so and shows the policy the pins enforce.
    let without_agent = |a: common::agent::Agent| {
        let pid = a.pid();
        a.term();
        let s = status_json(&["--endpoint", &endpoint]);
        assert!(s["agent"].is_null(), "{s:#}");
        assert!(
            s["agentError"]
                .as_str()
                .is_some_and(|e| e.contains("no agent answers")),
            "{s:#}"
        );
        let pins = &s["pins"];
        assert_eq!(pins["activeSlot"], slot, "{s:#}");
        assert_eq!(pins["defaultMode"], "enforce", "{s:#}");
        assert_eq!(
            pins["namespacesByMode"],
            serde_json::json!({"enforce": namespaces}),
            "{s:#}"
        );
        assert_eq!(
            (
                &pins["generations"][0]["pid"],
                &pins["generations"][0]["running"]
            ),
            (&pid.into(), &false.into()),
            "{s:#}"
        );
        let (ok, text, _) = status(&["--endpoint", &endpoint]);
        eprintln!("status with no agent:\n{text}");
        assert!(ok && text.contains("agent: none answers"), "{text}");
        assert_eq!(node.tcp("alpha/a", "gamma/c", 9090).result, "denied");
    };
    let second = restart_under_load(&node, Pinning::Default, without_agent, first);
    let attached_line = second.logs_with("datapath attached");
    assert_eq!(attached_line[0]["adopted"], true, "{attached_line:?}");
    assert_eq!(
        second
            .logs_with("adopted the pinned policy; it stays in force until the first apply")
            .len(),
        1
    );
    second.term();
    assert_eq!(node.tcp("alpha/a", "gamma/c", 9090).result, "denied");

    // `cleanup` with no flag removes what a plain `run` pinned; then status has nothing to show.
    let out = Command::new(agent_bin())
        .arg("cleanup")
        .output()
        .expect("cleanup");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("removed {DEFAULT_PINS}/links/bulkhead_egress@")),
        "{text}"
    );
    assert!(!default.exists());
    assert!(
        attached(&cgroup_root).is_empty(),
        "{:?}",
        attached(&cgroup_root)
    );
    assert_eq!(node.tcp("alpha/a", "gamma/c", 9090).result, "ok");
    let (ok, _, err) = status(&["--endpoint", &endpoint]);
    assert!(
        !ok && err.contains("nothing is pinned at /sys/fs/bpf/bulkhead"),
        "{err}"
    );
}

/// `--no-pin` leaves nothing pinned, and `status` says the agent does not pin.
#[test]
fn no_pin_pins_nothing_and_status_says_so() {
    skip_unless_root!("no_pin_pins_nothing_and_status_says_so");
    let node = Node::up("rnopin", 28, THREE_PODS, &[&baseline("Deny", "Enforce")]);
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/bulkhead-e2e-nopin-{}",
        std::process::id()
    ));
    let _pins = Pins(dir.clone());
    let port = common::http::free_port();
    let (addr, endpoint) = (
        format!("127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}"),
    );
    let agent = node.agent(&["--metrics-addr", &addr]);
    let d = dir.display().to_string();
    let s = status_json(&["--endpoint", &endpoint, "--bpffs", &d]);
    assert!(s["agent"]["pinDir"].is_null(), "{s:#}");
    assert!(s["agent"]["linkGeneration"].is_null(), "{s:#}");
    assert!(s["pins"].is_null(), "{s:#}");
    assert_eq!(s["pinsError"], format!("nothing pinned at {d}"), "{s:#}");
    let (ok, text, _) = status(&["--endpoint", &endpoint, "--bpffs", &d]);
    assert!(ok && text.contains("pinning: off (--no-pin"), "{text}");
    assert!(!dir.exists());
    // --bpffs and --no-pin contradict each other.
    let out = Command::new(agent_bin())
        .args(["run", "--no-pin", "--bpffs", &d])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{out:?}"
    );
    agent.term();
}
