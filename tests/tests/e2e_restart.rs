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
    policy::{admit, baseline},
    require_root,
};
use common::{
    agent::{Pins, cleanup, pretty},
    node::{CLIENT_AND_TWO_SERVERS, Node},
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
    pins: &Path,
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
    let bpffs = pins.display().to_string();
    let agent = node.agent(&["--bpffs", &bpffs]);
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
    if !require_root("kill9_and_upgrade_restarts_never_lapse_enforcement") {
        return;
    }
    let node = Node::up(
        "rstart",
        23,
        CLIENT_AND_TWO_SERVERS,
        &[&baseline("Deny", "Enforce"), &admit("beta", "alpha", 8080)],
    );
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/bulkhead-e2e-restart-{}",
        std::process::id()
    )));
    let bpffs = pins.0.display().to_string();
    let cgroup_root = node.testbed().cgroup_root().to_owned();
    let first = node.agent(&["--bpffs", &bpffs]);
    assert_eq!(node.tcp("alpha/a", "beta/b", 8080).result, "ok");
    assert_eq!(node.tcp("alpha/a", "gamma/c", 9090).result, "denied");
    assert_eq!(
        attached(&cgroup_root).len(),
        4,
        "{:?}",
        attached(&cgroup_root)
    );

    // Crash: SIGKILL, then a new agent adopts the pins.
    let second = restart_under_load(&node, &pins.0, |a| a.kill9(), first);
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
    let third = restart_under_load(&node, &pins.0, |a| a.term(), second);
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
