//! The deployable examples (`deploy/examples/*`) proved with packets: each example's testbed
//! scenario (`tests/scenarios/<example>.yaml`, whose `objects` are exactly the example's policies,
//! as `cargo xtask manifests` checks) lists its expected verdicts in its header comment, one per
//! line (`#   ns/pod -> ns/pod|world IP  TCP|UDP PORT  ok|denied  (why)`). This test brings the
//! scenario up, runs the real agent on it and probes every listed flow. Needs root.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
mod common;

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, time::Duration};

use bulkhead_tests::{
    Options, Protocol, Scenario, Target, Testbed, require_root, scenario::PortSpec,
};
use common::agent::Agent;

/// One expected verdict from a scenario header.
#[derive(Debug)]
struct Expect {
    line: String,
    from: String,
    to: To,
    protocol: Protocol,
    port: u16,
    ok: bool,
    /// The line's parenthesised note: for examples of the standard APIs, the deciding rule as
    /// the violation log names it.
    why: String,
}

#[derive(Debug)]
enum To {
    Pod(String),
    World(IpAddr),
}

/// The expectations in a scenario file's header comment.
fn expectations(text: &str) -> Vec<Expect> {
    let mut out = Vec::new();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        let words: Vec<&str> = line.trim_start_matches('#').split_whitespace().collect();
        let Some(arrow) = words.iter().position(|w| *w == "->") else {
            continue;
        };
        let (to, rest) = match words.get(arrow + 1) {
            Some(&"world") => match words.get(arrow + 2).and_then(|ip| ip.parse().ok()) {
                Some(ip) => (To::World(ip), &words[arrow + 3..]),
                None => continue,
            },
            Some(pod) => (To::Pod((*pod).to_owned()), &words[arrow + 2..]),
            None => continue,
        };
        let (Some(proto), Some(port), Some(verdict)) = (rest.first(), rest.get(1), rest.get(2))
        else {
            continue;
        };
        let protocol = match *proto {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            _ => continue,
        };
        let Ok(port) = port.trim_end_matches(':').parse() else {
            continue;
        };
        let ok = match *verdict {
            "ok" => true,
            "denied" => false,
            _ => continue,
        };
        let why = note(&rest[3..].join(" "));
        out.push(Expect {
            line: line.trim().to_owned(),
            from: words[arrow - 1].to_owned(),
            to,
            protocol,
            port,
            ok,
            why,
        });
    }
    out
}

/// The first word of a header line's parenthesised note (parentheses inside it kept), e.g.
/// `ClusterNetworkPolicy/p:ingress[0](scrape)` of `(ClusterNetworkPolicy/p:ingress[0](scrape), ...)`.
fn note(rest: &str) -> String {
    let inner = rest.strip_prefix('(').unwrap_or_default();
    let mut depth = 0usize;
    inner
        .chars()
        .take_while(|c| match c {
            '(' => {
                depth += 1;
                true
            }
            ')' if depth == 0 => false,
            ')' => {
                depth -= 1;
                true
            }
            ',' | ' ' => depth > 0,
            _ => true,
        })
        .collect()
}

/// Proves an example's header with the agent's default flags.
fn prove(example: &str) {
    let (flows, _) = run(example, &[], false);
    eprintln!("{example}: {flows} flows as expected");
}

/// Brings the example's scenario up, runs the agent with `flags` and probes every flow of the
/// header. With `monitor`, every namespace the scenario puts in a mode is put in monitor first:
/// every flow must pass. Returns the number of flows and the agent's log lines.
fn run(example: &str, flags: &[&str], monitor: bool) -> (usize, Vec<serde_json::Value>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{example}.yaml"));
    let text = std::fs::read_to_string(&path).expect("scenario file");
    let expected = expectations(&text);
    assert!(
        expected.len() >= 5,
        "{example}: only {} expectations parsed from the header",
        expected.len()
    );
    let mut scenario = Scenario::load(&path).expect("scenario");
    if monitor {
        for ns in &mut scenario.namespaces {
            if let Some(mode) = ns.labels.get_mut("bulkhead.dev/mode") {
                "monitor".clone_into(mode);
            }
        }
    }
    let tb = Testbed::up(
        &scenario,
        &Options {
            pod_binary: PathBuf::from(env!("CARGO_BIN_EXE_bulkhead-pod")),
        },
    )
    .expect("testbed up");
    // World servers for the world addresses the header names (host number = last octet).
    let mut ports: BTreeMap<u8, Vec<PortSpec>> = BTreeMap::new();
    for e in &expected {
        if let To::World(IpAddr::V4(ip)) = e.to {
            let spec = PortSpec {
                protocol: e.protocol,
                port: e.port,
            };
            let host = ports.entry(ip.octets()[3]).or_default();
            if !host.contains(&spec) {
                host.push(spec);
            }
        }
    }
    let worlds: Vec<_> = ports
        .iter()
        .map(|(host, serve)| tb.world_server(&[*host], serve).expect("world server"))
        .collect();
    let dir = std::env::temp_dir().join(format!("bulkhead-e2e-{example}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let source = dir.join("cluster.yaml");
    tb.write_source(&source, &[]).expect("source");
    let agent = Agent::start(&source, tb.cgroup_root(), &scenario.node_name, flags);
    let mut wrong = Vec::new();
    for e in &expected {
        let target = match &e.to {
            To::Pod(key) => tb.target(key, e.protocol, e.port).expect("target"),
            To::World(ip) => Target {
                ip: *ip,
                protocol: e.protocol,
                port: e.port,
            },
        };
        let got = tb
            .probe_one(&e.from, target, Duration::from_millis(1500))
            .expect("probe")
            .result;
        let passed = got.as_str() == "ok";
        if passed != (e.ok || monitor) {
            wrong.push(format!("{}\n    got {}", e.line, got.as_str()));
        }
    }
    let denied = expected.iter().filter(|e| !e.ok).count();
    if monitor {
        agent.wait_violations(Duration::from_secs(5), |l| l.len() >= denied);
    }
    let lines = agent.stop();
    drop(worlds);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        wrong.is_empty(),
        "{example}: {} of {} flows not as the example says:\n{}",
        wrong.len(),
        expected.len(),
        wrong.join("\n")
    );
    (expected.len(), lines)
}

/// The flows an example's header denies, each logged once as an `AUDIT` line naming the rule
/// in its parentheses, and nothing else logged.
fn logged_as_the_header_says(example: &str, lines: &[serde_json::Value]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{example}.yaml"));
    let text = std::fs::read_to_string(&path).expect("scenario file");
    let denied: Vec<Expect> = expectations(&text).into_iter().filter(|e| !e.ok).collect();
    let all = common::agent::pretty(lines);
    for e in &denied {
        let To::Pod(to) = &e.to else {
            panic!("{}: only pod destinations are checked in monitor", e.line);
        };
        let matching = common::find(lines, |l| {
            format!(
                "{}/{}",
                l["src"]["namespace"].as_str().unwrap_or(""),
                l["src"]["pod"].as_str().unwrap_or("")
            ) == e.from
                && format!(
                    "{}/{}",
                    l["dst"]["namespace"].as_str().unwrap_or(""),
                    l["dst"]["pod"].as_str().unwrap_or("")
                ) == *to
                && l["dst"]["port"] == e.port
        });
        assert_eq!(
            matching.len(),
            1,
            "{}: logged {} times in\n{all}",
            e.line,
            matching.len()
        );
        assert_eq!(
            (&matching[0]["verdict"], matching[0]["policy"].as_str()),
            (&serde_json::json!("AUDIT"), Some(e.why.as_str())),
            "{}",
            e.line
        );
    }
    assert_eq!(lines.len(), denied.len(), "{all}");
}

#[test]
fn multi_tenant_example() {
    if require_root("multi_tenant_example") {
        prove("multi-tenant");
    }
}

#[test]
fn team_segmentation_example() {
    if require_root("team_segmentation_example") {
        prove("team-segmentation");
    }
}

#[test]
fn standard_policies_example_rolled_out_from_monitor_to_enforce() {
    if require_root("standard_policies_example_rolled_out_from_monitor_to_enforce") {
        let example = "standard-policies";
        let apis = [
            "--policy-apis",
            "bulkhead,networkpolicy,clusternetworkpolicy",
        ];
        // Monitor first: every flow passes, and the log names exactly the flows to be denied.
        let (flows, lines) = run(example, &apis, true);
        logged_as_the_header_says(example, &lines);
        // Then enforce: the header's verdicts.
        run(example, &apis, false);
        eprintln!("{example}: {flows} flows as expected in monitor, then in enforce");
    }
}

#[test]
fn security_zones_example() {
    if require_root("security_zones_example") {
        prove("security-zones");
    }
}
