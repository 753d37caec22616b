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
        out.push(Expect {
            line: line.trim().to_owned(),
            from: words[arrow - 1].to_owned(),
            to,
            protocol,
            port,
            ok,
        });
    }
    out
}

fn prove(example: &str) {
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
    let scenario = Scenario::load(&path).expect("scenario");
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
    let agent = Agent::start(&source, tb.cgroup_root(), &scenario.node_name, &[]);
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
        if passed != e.ok {
            wrong.push(format!("{}\n    got {}", e.line, got.as_str()));
        }
    }
    drop(agent);
    drop(worlds);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        wrong.is_empty(),
        "{example}: {} of {} flows not as the example says:\n{}",
        wrong.len(),
        expected.len(),
        wrong.join("\n")
    );
    eprintln!("{example}: {} flows as expected", expected.len());
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
fn security_zones_example() {
    if require_root("security_zones_example") {
        prove("security-zones");
    }
}
