//! Stage 4: the same policies as iptables rules on the bridge path, the way iptables-based
//! enforcers do it: a dedicated chain jumped to from FORWARD (bridged pod traffic reaches it through
//! br_netfilter, `net.bridge.bridge-nf-call-iptables=1`), one ACCEPT per allowed (source namespace
//! CIDR, destination, port), the measured flow's rule last, then DROP. Two chains: `iptables`
//! accepts ESTABLISHED first (as Calico and kube-router do, so only new connections walk the
//! rules); `iptables-stateless` lets every client -> server packet walk them. Compared with the
//! agent in enforce mode holding the same rules, and with no firewall, interleaved per repeat.
use std::{collections::BTreeMap, io::Write as _, process::Command, time::Duration};

use anyhow::{Context as _, bail};
use bulkhead_tests::synthetic::{ns_net, pair};
use serde_json::{Value, json};

use super::{
    Plan,
    agent::Agent,
    interrupt,
    report::progress,
    setup::{CLIENT, ECHO_PORT, Env, IPERF_PORT, SERVER, Sysctl},
    source::{self, Spec},
    stats::{median, ratio, rotated},
};

/// The chain this stage creates (and removes).
const CHAIN: &str = "BULKHEAD-BENCH";
/// Traffic of the bench testbed, which the FORWARD jump selects.
const NET: &str = "198.18.40.0/24";

const SETUPS: [&str; 4] = ["none", "bulkhead", "iptables", "iptables-stateless"];

/// The chain, removed (with its FORWARD jump) on drop.
struct Chain {
    rules: usize,
}

fn ipt(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .output()
        .context("running iptables")?;
    if !out.status.success() {
        bail!(
            "iptables {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the jump and the chain if present (also leftovers of an interrupted run).
fn remove_chain() {
    while ipt(&["-D", "FORWARD", "-s", NET, "-d", NET, "-j", CHAIN]).is_ok() {}
    if ipt(&["-S", CHAIN]).is_ok() {
        let _ = ipt(&["-F", CHAIN]);
        let _ = ipt(&["-X", CHAIN]);
    }
}

impl Chain {
    fn install(env: &Env, n: usize, stateless: bool) -> anyhow::Result<Chain> {
        remove_chain();
        let client = env.ip(CLIENT)?;
        let server = env.ip(SERVER)?;
        let mut r = String::from("*filter\n");
        r.push_str(&format!(":{CHAIN} - [0:0]\n"));
        if stateless {
            r.push_str(&format!(
                "-A {CHAIN} -s {server}/32 -p tcp -m multiport --sports {IPERF_PORT},{ECHO_PORT} -j ACCEPT\n"
            ));
        } else {
            r.push_str(&format!(
                "-A {CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
            ));
        }
        for k in 0..n {
            let (ns, port) = pair(k);
            r.push_str(&format!(
                "-A {CHAIN} -s {}/24 -d {server}/32 -p tcp --dport {port} -j ACCEPT\n",
                ns_net(ns)
            ));
        }
        r.push_str(&format!(
            "-A {CHAIN} -s {client}/32 -d {server}/32 -p tcp -m multiport --dports {IPERF_PORT},{ECHO_PORT} -j ACCEPT\n"
        ));
        r.push_str(&format!("-A {CHAIN} -j DROP\n"));
        r.push_str(&format!("-I FORWARD 1 -s {NET} -d {NET} -j {CHAIN}\n"));
        r.push_str("COMMIT\n");
        let chain = Chain { rules: n };
        let mut child = Command::new("iptables-restore")
            .args(["-w", "5", "--noflush"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("running iptables-restore")?;
        child
            .stdin
            .take()
            .context("iptables-restore stdin")?
            .write_all(r.as_bytes())?;
        if !child.wait()?.success() {
            bail!("iptables-restore failed");
        }
        Ok(chain)
    }

    /// Packet counters of (first rule, the measured flow's rule, the final DROP).
    fn counters(&self) -> anyhow::Result<(u64, u64, u64)> {
        let text = ipt(&["-L", CHAIN, "-n", "-v", "-x", "--line-numbers"])?;
        let pkts = |num: usize| -> u64 {
            text.lines()
                .find_map(|l| {
                    let mut f = l.split_whitespace();
                    (f.next()?.parse::<usize>().ok()? == num)
                        .then(|| f.next()?.parse().ok())
                        .flatten()
                })
                .unwrap_or(0)
        };
        Ok((pkts(1), pkts(self.rules + 2), pkts(self.rules + 3)))
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        remove_chain();
    }
}

fn bridge_netfilter() -> anyhow::Result<Sysctl> {
    if !std::path::Path::new("/proc/sys/net/bridge").exists() {
        let _ = Command::new("modprobe").arg("br_netfilter").status();
    }
    Sysctl::set("net.bridge.bridge-nf-call-iptables", "1").context(
        "br_netfilter is needed for iptables to see bridged pod traffic (modprobe br_netfilter)",
    )
}

/// Runs stage 4.
pub fn run(env: &Env, plan: &Plan) -> anyhow::Result<Value> {
    remove_chain();
    let _brnf = bridge_netfilter()?;
    let mut by_rules = serde_json::Map::new();
    for &n in plan.rule_counts {
        let src = env.dir.join(format!("rules-{n}.yaml"));
        source::write(
            env,
            &src,
            &Spec {
                synthetic: true,
                pair_rules: n,
                ..Spec::default()
            },
        )?;
        let mut gbit: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut rate: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut p50: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut verified: BTreeMap<&str, Value> = BTreeMap::new();
        for r in 0..plan.repeats {
            for setup in rotated(&SETUPS, r) {
                interrupt::check()?;
                let agent = match setup {
                    "bulkhead" => Some(Agent::start(
                        env,
                        &src,
                        "enforce",
                        super::progcost::SCALE_AGENT_ARGS,
                        Duration::from_secs(120),
                    )?),
                    _ => None,
                };
                let chain = match setup {
                    "iptables" => Some(Chain::install(env, n, false)?),
                    "iptables-stateless" => Some(Chain::install(env, n, true)?),
                    _ => None,
                };
                let g = env.iperf(plan.iperf_secs)?;
                let c = env.rr("connect-each", plan.connects)?;
                let cr = c["rate_per_s"].as_f64().unwrap_or(0.0);
                let cp = c["p50_us"].as_f64().unwrap_or(0.0);
                let mut note = String::new();
                if let Some(ch) = &chain {
                    let (first, measured, dropped) = ch.counters()?;
                    if measured == 0 {
                        bail!(
                            "{setup} with {n} rules: the measured flow's rule counted no packets: \
                             traffic does not traverse the chain, the comparison would be meaningless"
                        );
                    }
                    note = format!(
                        " [chain pkts: first rule {first}, measured rule {measured}, drop {dropped}]"
                    );
                    verified.insert(
                        setup,
                        json!({"first_rule_pkts": first, "measured_rule_pkts": measured, "drop_pkts": dropped}),
                    );
                }
                drop(chain);
                if let Some(a) = agent {
                    a.stop()?;
                }
                progress(&format!(
                    "  {n} rules repeat {}/{} {setup:<18} {g:.2} Gbit/s, {cr:.0} conn/s (p50 {cp:.0} us){note}",
                    r + 1,
                    plan.repeats
                ));
                gbit.entry(setup).or_default().push(g);
                rate.entry(setup).or_default().push(cr);
                p50.entry(setup).or_default().push(cp);
            }
        }
        let m = |map: &BTreeMap<&str, Vec<f64>>, s: &str| {
            median(map.get(s).map(Vec::as_slice).unwrap_or(&[]))
        };
        let mut setups = serde_json::Map::new();
        for s in SETUPS {
            setups.insert(
                s.to_owned(),
                json!({
                    "gbit_s_median": m(&gbit, s), "conn_per_s_median": m(&rate, s),
                    "connect_p50_us_median": m(&p50, s),
                    "gbit_s": gbit.get(s), "conn_per_s": rate.get(s), "chain_counters_last_run": verified.get(s),
                }),
            );
        }
        by_rules.insert(
            n.to_string(),
            json!({
                "setups": setups,
                "bulkhead_over_iptables": {
                    "throughput": ratio(m(&gbit, "bulkhead"), m(&gbit, "iptables")),
                    "conn_rate": ratio(m(&rate, "bulkhead"), m(&rate, "iptables")),
                },
                "bulkhead_over_iptables_stateless": {
                    "throughput": ratio(m(&gbit, "bulkhead"), m(&gbit, "iptables-stateless")),
                    "conn_rate": ratio(m(&rate, "bulkhead"), m(&rate, "iptables-stateless")),
                },
            }),
        );
    }
    Ok(json!({"by_rules": by_rules}))
}
