//! `firewall-agent status`: what is enforced on this node, from the pinned maps (which outlive
//! the agent) and from the running agent's `/status` (which alone knows namespace names, mode
//! sources, rejections and pods). Either may be missing; it says which and prints the other.
use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use serde::Serialize;

use crate::{
    agent::status::{MapFill, Snapshot},
    datapath::{
        pin::{self, PinDir},
        pinned::{self, Pinned},
    },
};

/// Where `status` looks for the agent unless told otherwise: the DaemonSet's `--metrics-addr`.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9090";
const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Pin directory [default: the running agent's, else /sys/fs/bpf/bulkhead].
    #[arg(long)]
    bpffs: Option<PathBuf>,
    /// The agent's metrics server (its `--metrics-addr`).
    #[arg(long, default_value = DEFAULT_ENDPOINT)]
    endpoint: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// One link generation as the pins show it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationView {
    tag: String,
    programs: Vec<String>,
    /// The agent that attached it (in its PID namespace).
    pid: Option<u32>,
    /// Whether a `firewall-agent` process with that pid runs here.
    running: bool,
}

/// What the pins show.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PinsView {
    generations: Vec<GenerationView>,
    active_slot: u8,
    /// The active slot's default mode.
    default_mode: String,
    /// The active slot's namespaces with a mode entry, by mode.
    namespaces_by_mode: BTreeMap<String, usize>,
    /// Containers of local pods in the active slot.
    pod_cgroups: usize,
    maps: Vec<MapFill>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    /// This command's build.
    version: String,
    commit: String,
    pin_dir: String,
    endpoint: String,
    /// The running agent's snapshot; `None` when none answers.
    agent: Option<Snapshot>,
    /// Why no agent's snapshot is shown.
    agent_error: Option<String>,
    pins: Option<PinsView>,
    /// Why the pins are not shown (nothing pinned, or reading them failed).
    pins_error: Option<String>,
}

/// Prints the node's status; fails when neither an agent answers nor anything is pinned.
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let (agent, agent_error) = match fetch_snapshot(&args.endpoint) {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let dir = args
        .bpffs
        .clone()
        .or_else(|| agent.as_ref()?.pin_dir.as_ref().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(pin::DEFAULT_DIR));
    let (pins, pins_error) = match pinned::read(&PinDir::new(&dir)) {
        Ok(Some(p)) => (Some(pins_view(&p)), None),
        Ok(None) => (None, Some(format!("nothing pinned at {}", dir.display()))),
        Err(e) => (None, Some(format!("reading the pins: {e}"))),
    };
    let report = Report {
        version: crate::VERSION.to_owned(),
        commit: crate::COMMIT.to_owned(),
        pin_dir: dir.display().to_string(),
        endpoint: args.endpoint,
        agent,
        agent_error,
        pins,
        pins_error,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print!("{}", text(&report)),
    }
    if report.agent.is_none() && report.pins.is_none() {
        bail!(
            "no agent answers at {} and nothing is pinned at {}: nothing is enforced by Bulkhead here that status can see",
            report.endpoint,
            report.pin_dir
        );
    }
    Ok(())
}

/// `GET <endpoint>/status` over plain HTTP/1.0 (a complete body, never chunked).
fn fetch_snapshot(endpoint: &str) -> anyhow::Result<Snapshot> {
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("no agent endpoint {endpoint} (expected http://HOST:PORT)"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("no agent answers at {endpoint}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let path = format!("/{}/status", prefix.trim_end_matches('/'));
    let path = path.replace("//", "/");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading {endpoint}{path}"))?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .with_context(|| format!("{endpoint}{path}: not an HTTP response"))?;
    let code = head.split_whitespace().nth(1).unwrap_or_default();
    match code {
        "200" => {}
        "503" => bail!("{endpoint}{path} answered 503: {}", body.trim()),
        _ => bail!("{endpoint}{path} answered {code} (an agent older than `status`?)"),
    }
    serde_json::from_str(body).with_context(|| format!("{endpoint}{path}: not a status snapshot"))
}

fn agent_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "firewall-agent")
}

fn pins_view(p: &Pinned) -> PinsView {
    let active = p.writer.active_contents();
    let mut namespaces_by_mode = BTreeMap::new();
    for m in active.modes.values() {
        *namespaces_by_mode.entry(mode_name(*m)).or_insert(0) += 1;
    }
    let mut maps = MapFill::list(&p.writer.fill());
    maps.extend(MapFill::list(&p.other_maps));
    PinsView {
        generations: p
            .generations
            .iter()
            .map(|g| {
                let pid = pin::generation_pid(&g.tag);
                GenerationView {
                    tag: g.tag.clone(),
                    programs: g.programs.clone(),
                    pid,
                    running: pid.is_some_and(agent_running),
                }
            })
            .collect(),
        active_slot: p.writer.active_slot(),
        default_mode: mode_name(active.default_mode),
        namespaces_by_mode,
        pod_cgroups: active.cgroups.len(),
        maps,
    }
}

fn mode_name(v: u32) -> String {
    firewall_common::Mode::try_from(v)
        .map_or_else(|_| format!("unknown ({v})"), |m| m.as_str().to_owned())
}

fn text(r: &Report) -> String {
    let mut out = format!(
        "status command: firewall-agent {} (commit {})\npin directory: {}\n",
        r.version, r.commit, r.pin_dir
    );
    match (&r.agent, &r.agent_error) {
        (Some(a), _) => out += &agent_text(a, &r.endpoint),
        (None, e) => {
            out += &format!(
                "agent: none answers ({}); what follows is what the pins show, without namespace names, mode sources, rejections or pods\n",
                e.as_deref().unwrap_or("unknown")
            );
        }
    }
    match (&r.pins, &r.pins_error) {
        (Some(p), _) => out += &pins_text(p, r.agent.is_some()),
        (None, e) => out += &format!("pins: {}\n", e.as_deref().unwrap_or("none")),
    }
    out
}

fn agent_text(a: &Snapshot, endpoint: &str) -> String {
    let mut out = format!(
        "agent: firewall-agent {} (commit {}), pid {}, node {}, {} (at {endpoint})\n",
        a.version,
        a.commit,
        a.pid,
        a.node,
        if a.ready { "ready" } else { "not ready" }
    );
    out += &format!(
        "  pinning: {}; link generation {}; active slot {}{}\n",
        a.pin_dir
            .as_deref()
            .unwrap_or("off (--no-pin: stopping the agent detaches everything)"),
        a.link_generation.as_deref().unwrap_or("-"),
        a.active_slot,
        if a.adopted {
            "; adopted pinned maps at start"
        } else {
            ""
        }
    );
    if !a.policy_apis.is_empty() {
        out += &format!("  policy APIs: {}\n", a.policy_apis);
    }
    if let Some(e) = &a.apply_error {
        out += &format!("  last apply FAILED (the previous policy stays in force): {e}\n");
    }
    match &a.policy {
        None => out += "  no policy compiled yet\n",
        Some(p) => {
            let src = p.default_source.map_or("", |s| s.as_str());
            out += &format!(
                "  default mode: {} ({src})\n  namespaces:\n",
                p.default_mode
            );
            for n in &p.namespaces {
                out += &format!("    {:<24} {:<8} {}\n", n.name, n.mode, n.source.as_str());
            }
            out += &list_text("invalid mode labels", &p.invalid_mode_labels, |l| {
                format!(
                    "{}: {:?} is no mode; the namespace keeps {} ({})",
                    l.namespace,
                    l.value,
                    l.mode,
                    l.source.as_str()
                )
            });
            out += &format!("  local pods found: {}\n", p.local_pods.len());
            for pod in &p.local_pods {
                out += &format!(
                    "    {}/{} ({} cgroup(s))\n",
                    pod.namespace, pod.name, pod.cgroups
                );
            }
        }
    }
    out += &list_text("rejected objects", &a.rejected, ToString::to_string);
    if a.unmatched_pod_cgroups > 0 {
        out += &format!(
            "  pod cgroups belonging to no local Pod: {} (is --node-name right?)\n",
            a.unmatched_pod_cgroups
        );
    }
    out += &maps_text(&a.maps);
    out
}

fn list_text<T>(what: &str, items: &[T], f: impl Fn(&T) -> String) -> String {
    if items.is_empty() {
        return format!("  {what}: none\n");
    }
    let mut out = format!("  {what}: {}\n", items.len());
    for i in items {
        out += &format!("    {}\n", f(i));
    }
    out
}

fn maps_text(maps: &[MapFill]) -> String {
    let mut out = "  map fill (entries/capacity, both slots):\n".to_owned();
    for m in maps {
        let pct = if m.capacity > 0 {
            m.entries as f64 * 100.0 / f64::from(m.capacity)
        } else {
            0.0
        };
        out += &format!(
            "    {:<10} {:>8}/{:<8} {pct:.1}%\n",
            m.name, m.entries, m.capacity
        );
    }
    out
}

fn pins_text(p: &PinsView, agent_runs: bool) -> String {
    let mut out = "pins:\n".to_owned();
    if p.generations.is_empty() {
        out += "  links: none (the programs are not attached by pins)\n";
    }
    for g in &p.generations {
        let by = match (g.pid, g.running) {
            (Some(pid), true) => format!("attached by pid {pid}, running"),
            (Some(pid), false) => format!("attached by pid {pid}, not running here"),
            (None, _) => "attached by an unknown process".to_owned(),
        };
        out += &format!(
            "  link generation {} ({}; {by})\n",
            g.tag,
            g.programs.join(", ")
        );
    }
    out += &format!(
        "  active slot {}; default mode {}; namespaces with a mode entry: {}\n  pod cgroups classified: {}\n",
        p.active_slot,
        p.default_mode,
        if p.namespaces_by_mode.is_empty() {
            "none".to_owned()
        } else {
            p.namespaces_by_mode
                .iter()
                .map(|(m, n)| format!("{n} {m}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        p.pod_cgroups
    );
    if !agent_runs {
        out += "  (no agent runs: the pinned programs enforce this policy; it is not updated until an agent starts)\n";
    }
    out += &maps_text(&p.maps);
    out
}
