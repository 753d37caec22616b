//! `pathcost`: the per-packet cost of each datapath path alone, above an empty `cgroup_skb`
//! program (issue 14), for `cargo xtask bench --only paths` (stage 10). Root only.
//!
//! The `floor` stage times whole workloads with bpf_stats, where a connection's first packet is
//! drowned in the packets that follow it. Here each path is one crafted frame run `repeat` times
//! in one `BPF_PROG_TEST_RUN` (the kernel reports the average per run), on the real programs
//! loaded in-process exactly as `firewall-agent/tests/packets.rs` loads them, while this process
//! sits in the local pod's cgroup so the dummy skb socket belongs to that pod. The empty program
//! of the `bench-floor` object runs on the same frame on the same hook, interleaved with
//! Bulkhead's round by round (ABBA order), all pinned to one CPU; medians over the rounds.
//!
//! Only paths that repeat themselves can be timed so: a SYN never passes on conntrack, so every
//! run takes the full new-connection path (policy, identity lookups, conntrack insert); a UDP
//! flow's first packet is a conntrack hit from the second run on, so UDP is timed established, in
//! the opener's direction and in the reply direction. The dummy socket is no synchronized TCP
//! socket, so the socket cache never hits: the established TCP figures are those of a connection
//! whose socket is not cached yet (short connections).
//!
//! The same run times the pieces of the SYN path alone (`pieces`): the `bench-floor` object's
//! `piece_*` programs, one operation each, on maps holding copies of Bulkhead's entries.
//!
//! An example of firewall-agent, not a binary of bulkhead-tests: it needs both crates, and
//! bulkhead-tests must not depend on firewall-agent (firewall-agent's tests depend on it).
//! Prints one JSON object on stdout.
#![allow(
    unused_crate_dependencies,
    reason = "an example links all of its package's dependencies; the library target is where unused ones are caught"
)]
mod frames;
mod pieces;

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    programs::{CgroupSkb, TestRun as _, TestRunOptions},
};
use bulkhead_tests::cgroup::TempCgroup;
use clap::Parser;
use firewall_agent::{
    cgroups::cgroup2_root,
    compiler::{CompileOptions, IdAllocator, compile},
    datapath::{Datapath, LoadOptions, writer::MapWriter},
    events::reader::counter,
    source::file::parse_objects,
};
use firewall_common::Counter;
use frames::{Path, paths, primes};
use serde_json::{Value, json};

/// The cluster: the local pod (namespace a) may reach b on port 80 (a's egress to b, b's ingress
/// from a), and c may reach a on anything; every other crossing is denied (enforce).
const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Namespace
metadata: {name: b}
---
apiVersion: v1
kind: Namespace
metadata: {name: c}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: a, uid: test-pod}
spec: {nodeName: node-1, containers: []}
status: {phase: Running, podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: b, uid: remote-pod}
spec: {nodeName: node-2, containers: []}
status: {phase: Running, podIPs: [{ip: 10.0.0.2}, {ip: "fd00::2"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: trusted, namespace: c, uid: trusted-pod}
spec: {nodeName: node-2, containers: []}
status: {phase: Running, podIPs: [{ip: 10.0.0.3}, {ip: "fd00::3"}]}
---
apiVersion: bulkhead.dev/v1alpha1
kind: ClusterFirewall
metadata: {name: baseline}
spec: {rules: [], defaults: {crossNamespace: Deny, mode: Enforce}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: from-a, namespace: b}
spec:
  ingress:
    - from: {namespaces: [a]}
      ports: [{protocol: TCP, port: 80}, {protocol: UDP, port: 80}]
---
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: from-c, namespace: a}
spec:
  ingress:
    - from: {namespaces: [c]}
  egress:
    - to: {namespaces: [b]}
"#;

/// Arguments (the xtask stage passes them).
#[derive(Parser)]
struct Args {
    /// The `bench-floor` eBPF object (its `floor_empty_*` programs are the baseline).
    #[arg(long)]
    floor_object: PathBuf,
    /// Interleaved rounds per path (medians are over these).
    #[arg(long, default_value_t = 21)]
    rounds: usize,
    /// Runs per `BPF_PROG_TEST_RUN` (the kernel averages over them).
    #[arg(long, default_value_t = 100_000)]
    repeat: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !bulkhead_tests::is_root() {
        eprintln!("\n!!!!! SKIPPED pathcost: needs root (eBPF, cgroups) !!!!!\n");
        println!("{}", json!({"skipped": "needs root"}));
        return Ok(());
    }
    if args.rounds == 0 || args.repeat == 0 {
        bail!("--rounds and --repeat must be at least 1");
    }
    let cpu = pin_to_current_cpu()?;
    let (dp, state, events) = Datapath::load(&LoadOptions::default()).context("loading")?;
    let maps = pieces::Maps::open(&dp)?;
    let mut floor = pieces::load_floor(&floor_bytes(&args.floor_object)?, &maps)?;
    let cg = TempCgroup::enter(
        &cgroup2_root().context("no cgroup2 mount")?,
        &format!("bulkhead-pathcost-{}", std::process::id()),
    )?;
    let mut model = parse_objects(CLUSTER).context("the cluster")?;
    for p in &mut model.pods {
        if p.uid == "test-pod" {
            p.cgroup_ids = vec![cg.id()?];
        }
    }
    let opts = CompileOptions {
        node_name: "node-1".into(),
        ..Default::default()
    };
    let compiled = compile(&model, &opts, &mut IdAllocator::default());
    if !compiled.rejected.is_empty() {
        bail!("the cluster was rejected: {:?}", compiled.rejected);
    }
    MapWriter::new(state)
        .context("state maps")?
        .apply(&compiled.maps)
        .context("applying")?;

    let counted =
        |run: &mut dyn FnMut() -> anyhow::Result<()>, want: Counter, n: u64, what: &str| {
            let read = || Counter::ALL.map(|c| counter(&events.counters, c));
            let before = read();
            run()?;
            let after = read();
            let moved: Vec<String> = Counter::ALL
                .iter()
                .zip(before.iter().zip(&after))
                .filter(|(_, (b, a))| a != b)
                .map(|(c, (b, a))| format!("{} +{}", c.name(), a - b))
                .collect();
            if moved != [format!("{} +{n}", want.name())] {
                bail!(
                    "{what}: counted [{}], expected {} +{n}: not the path meant",
                    moved.join(", "),
                    want.name()
                );
            }
            Ok(())
        };
    // The conntrack entries the established paths ride on.
    for p in primes()? {
        counted(
            &mut || pass(&dp, p.program, &p.frame, 1).map(drop),
            p.counts,
            1,
            p.what,
        )?;
    }
    let paths = paths()?;
    for p in &paths {
        counted(
            &mut || pass(&dp, p.program, &p.frame, 1).map(drop),
            p.counts,
            1,
            p.what,
        )?;
    }
    // Every entry the timed paths see, copied for the pieces (tries of the same shape).
    let copied = pieces::copy_maps(&maps, &mut floor)?;
    let mut out = Vec::new();
    for p in &paths {
        let empty = floor_program(&floor, p)?;
        let (mut b, mut e) = (Vec::new(), Vec::new());
        let runs = args.rounds as u64 * u64::from(args.repeat);
        let mut measure = || -> anyhow::Result<()> {
            for round in 0..args.rounds {
                let bulkhead = || pass(&dp, p.program, &p.frame, args.repeat);
                let floor = || run_floor(empty, &p.frame, args.repeat);
                if round % 2 == 0 {
                    b.push(bulkhead()?);
                    e.push(floor()?);
                } else {
                    e.push(floor()?);
                    b.push(bulkhead()?);
                }
            }
            Ok(())
        };
        // Counted over all rounds: a conntrack entry that expired mid-way would show here.
        counted(&mut measure, p.counts, runs, p.what)?;
        out.push(summary(p, &b, &e));
    }
    let piece_rows = pieces::time(
        &mut floor,
        &maps,
        &paths,
        cg.id()?,
        args.rounds,
        args.repeat,
    )?;
    drop(cg);
    let stats = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    println!(
        "{}",
        json!({
            "rounds": args.rounds, "repeat": args.repeat, "cpu": cpu,
            "bpf_stats_enabled": stats.trim(),
            "paths": out,
            "pieces": piece_rows, "piece_maps_copied": copied,
        })
    );
    Ok(())
}

/// Bulkhead's program `name` on `frame`, `repeat` times: ns per run; it must pass.
fn pass(dp: &Datapath, name: &str, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
    let t = dp.test_run_repeat(name, frame, repeat)?;
    if t.return_value != 1 {
        bail!("{name} returned {} (expected 1, pass)", t.return_value);
    }
    Ok(t.per_run.as_secs_f64() * 1e9)
}

/// The `bench-floor` object's bytes (its empty programs are the baseline, its pieces are timed
/// too; see [`pieces::load_floor`]).
fn floor_bytes(object: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(object).with_context(|| format!("reading {}", object.display()))?;
    if bytes.is_empty() {
        bail!(
            "{} is empty (built with AYA_BUILD_SKIP=1?)",
            object.display()
        );
    }
    Ok(bytes)
}

/// The empty program on `p`'s hook.
fn floor_program<'a>(floor: &'a Ebpf, p: &Path) -> anyhow::Result<&'a CgroupSkb> {
    let name = format!("floor_empty_{}", p.hook);
    let prog = floor.program(&name).with_context(|| format!("no {name}"))?;
    prog.try_into()
        .with_context(|| format!("{name} is not a cgroup_skb program"))
}

fn run_floor(prog: &CgroupSkb, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::default()
    };
    let r = prog
        .test_run(opts)
        .context("test run of the empty program")?;
    Ok(r.duration.as_secs_f64() * 1e9)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// One path's figures: medians, the distance to the empty program and the ratio.
fn summary(p: &Path, b: &[f64], e: &[f64]) -> Value {
    let (mb, me) = (median(b), median(e));
    let paired: Vec<f64> = b.iter().zip(e).map(|(b, e)| b - e).collect();
    json!({
        "path": p.key, "hook": p.hook, "what": p.what, "counter": p.counts.name(),
        "program": p.program,
        "bulkhead_ns": b, "empty_ns": e,
        "bulkhead_ns_median": mb, "empty_ns_median": me,
        "above_empty_ns": mb - me, "above_empty_ns_paired": median(&paired),
        "ratio_to_empty": if me > 0.0 { mb / me } else { f64::NAN },
    })
}

/// Pins this thread to the CPU it runs on, so both programs are timed on the same core (a test
/// run stays on the CPU it starts on; two CPUs may differ).
fn pin_to_current_cpu() -> anyhow::Result<i32> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        bail!("sched_getcpu: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, size_of_val(&set), &set) } != 0 {
        bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    Ok(cpu)
}
