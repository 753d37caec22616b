//! `firewall-agent check`: judges one connection as the agents would, from the live cluster or a
//! file, naming per side the deciding rule, the evaluation step and the mode
//! (docs/design.md#agent-cli). Its exit status says whether the flow is a violation, so scripts
//! and CI can rely on it.
use std::{fmt::Write as _, net::IpAddr, path::PathBuf, process::ExitCode, str::FromStr};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use firewall_common::{IpProto, Mode};
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    compiler::{
        CompileOptions, Destination, Evaluator, Judgement, MODE_LABEL, ModeSource, Outcome,
        SideDecision, Source, Step,
    },
    model::{ClusterModel, Pod, Rejection},
    source::SourceSpec,
};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// `kube` (the API server: --kubeconfig, KUBECONFIG or in-cluster) or `file:PATH`.
    #[arg(long, default_value = "kube")]
    source: SourceSpec,
    /// kubeconfig for `--source kube`.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Source: NAMESPACE (a pod of it), NAMESPACE/POD, or an IP address.
    #[arg(long)]
    from: String,
    /// Destination: NAMESPACE, NAMESPACE/POD, NAMESPACE/svc/SERVICE, an IP address or a CIDR.
    #[arg(long)]
    to: String,
    /// With a bare `--to NAMESPACE`: the Services selecting the destination pod (comma-separated).
    #[arg(long, value_delimiter = ',')]
    services: Vec<String>,
    /// TCP, UDP, SCTP, ICMP or ICMPv6.
    #[arg(long, default_value = "TCP")]
    protocol: String,
    /// Destination port (TCP, UDP and SCTP need one; ICMP has none).
    #[arg(long)]
    port: Option<u16>,
    /// The cluster DNS Service, as the agents are given it.
    #[arg(
        long,
        env = "BULKHEAD_DNS_SERVICE",
        default_value = "kube-system/kube-dns"
    )]
    dns_service: String,
    /// The agents' `--mode`: the mode of namespaces without a label or ClusterFirewall default.
    #[arg(long, env = "BULKHEAD_MODE", default_value = "monitor")]
    mode: String,
    /// Output: `text` or `json`.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// An endpoint as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Endpoint {
    /// `NAMESPACE`: a pod of it selected by no Service (or by `--services`).
    Namespace(String),
    /// `NAMESPACE/POD`.
    Pod { namespace: String, name: String },
    /// `NAMESPACE/svc/NAME`.
    Service { namespace: String, name: String },
    /// An IP address (or a /32, /128).
    Address(IpAddr),
    /// A CIDR with more than one address.
    Cidr(IpNet),
}

const FORMS: &str = "NAMESPACE, NAMESPACE/POD, NAMESPACE/svc/SERVICE, an IP address or a CIDR";

/// A DNS label (namespaces, Services), so a typo such as `Web` or `a b` is refused instead of
/// judged as an unknown namespace.
fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A DNS subdomain (pods): labels joined by dots.
fn valid_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(valid_label)
}

impl FromStr for Endpoint {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Endpoint::Address(ip));
        }
        if let Ok(net) = s.parse::<IpNet>() {
            if net.trunc() != net {
                bail!("{s:?} has host bits set: did you mean {}?", net.trunc());
            }
            return Ok(if net.prefix_len() == net.max_prefix_len() {
                Endpoint::Address(net.addr())
            } else {
                Endpoint::Cidr(net)
            });
        }
        let parts: Vec<&str> = s.split('/').collect();
        Ok(match parts.as_slice() {
            [ns] if valid_label(ns) => Endpoint::Namespace((*ns).to_owned()),
            [ns, pod] if valid_label(ns) && valid_subdomain(pod) => Endpoint::Pod {
                namespace: (*ns).to_owned(),
                name: (*pod).to_owned(),
            },
            [ns, "svc", name] if valid_label(ns) && valid_label(name) => Endpoint::Service {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            },
            _ => bail!("{s:?} is not an endpoint: expected {FORMS}"),
        })
    }
}

/// The exit status for a connection's fate: 0 allowed without a violation, 2 a violation
/// (logged in monitor or dropped in enforce). Errors are 1.
fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Allowed => ExitCode::SUCCESS,
        Outcome::Logged | Outcome::Dropped => ExitCode::from(2),
    }
}

/// The IP protocol number of `--protocol`, and whether it has ports.
fn protocol(p: &str) -> anyhow::Result<IpProto> {
    IpProto::ALL
        .iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(p))
        .copied()
        .with_context(|| {
            format!(
                "unknown --protocol {:?}: expected TCP, UDP, SCTP, ICMP or ICMPv6",
                p.to_ascii_uppercase()
            )
        })
}

fn port(proto: IpProto, port: Option<u16>) -> anyhow::Result<u16> {
    let ported = IpProto::WITH_PORTS.contains(&proto);
    match port {
        Some(0) if ported => bail!("--port 0: expected 1..=65535"),
        Some(p) if ported => Ok(p),
        None if ported => bail!("{} needs --port", proto.as_str()),
        Some(_) => bail!("{} has no port: leave --port out", proto.as_str()),
        None => Ok(0),
    }
}

fn parse_dns_service(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('/') {
        Some((ns, name)) if valid_label(ns) && valid_label(name) => Ok((ns.into(), name.into())),
        _ => bail!("invalid --dns-service {s:?}: expected NAMESPACE/NAME"),
    }
}

/// The arguments, checked before the source is read.
struct Query {
    from: Endpoint,
    to: Endpoint,
    proto: IpProto,
    port: u16,
    opts: CompileOptions,
}

fn query(args: &CheckArgs) -> anyhow::Result<Query> {
    let from: Endpoint = args.from.parse().context("--from")?;
    let to: Endpoint = args.to.parse().context("--to")?;
    match &from {
        Endpoint::Service { .. } => {
            bail!("--from: a Service opens no connections; name one of its pods (NAMESPACE/POD)")
        }
        Endpoint::Cidr(_) => bail!("--from: a CIDR is a destination only; give one address"),
        _ => {}
    }
    if !args.services.is_empty() && !matches!(to, Endpoint::Namespace(_)) {
        bail!("--services needs a bare --to NAMESPACE (or use --to NAMESPACE/svc/SERVICE)");
    }
    let proto = protocol(&args.protocol)?;
    let default_mode = Mode::from_name(&args.mode.to_ascii_lowercase()).with_context(|| {
        format!(
            "invalid --mode {:?}: expected monitor, enforce or off",
            args.mode
        )
    })?;
    Ok(Query {
        from,
        to,
        proto,
        port: port(proto, args.port)?,
        opts: CompileOptions {
            default_mode,
            dns_service: parse_dns_service(&args.dns_service)?,
            ..CompileOptions::default()
        },
    })
}

/// Reads the cluster once.
/// Runs `check`: prints the report and returns the exit status for its result.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let q = query(&args)?;
    let model = super::cluster::read(&args.source, args.kubeconfig.as_deref())?;
    let ev = Evaluator::new(&model, &q.opts);
    let report = report(&args, &q, &model, &ev);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    match args.output {
        Output::Text => print!("{}", report.text()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        ),
    }
    Ok(exit_code(report.outcome))
}

/// What `check` found: the stable JSON shape of `-o json` (docs/design.md#agent-cli).
#[derive(Serialize)]
struct Report {
    from: String,
    to: String,
    protocol: &'static str,
    /// `null` for ICMP.
    port: Option<u16>,
    /// One per destination identity: one, or one per part of a CIDR.
    judgements: Vec<JudgementReport>,
    /// `allowed`, `logged` or `dropped`: the worst judgement.
    result: &'static str,
    /// The result as the text output says it.
    result_text: String,
    #[serde(skip)]
    outcome: Outcome,
    warnings: Vec<String>,
    /// Rejected policy objects of either namespace, and every rejected ClusterFirewall, each
    /// judged fail closed (`inForce`: `FailClosed`, as for an object never accepted).
    rejected: Vec<Rejection>,
}

#[derive(Serialize)]
struct JudgementReport {
    source: String,
    destination: String,
    /// The address judged (an IP or a CIDR destination), else `null`.
    address: Option<IpAddr>,
    /// For a CIDR part: address-table entries of the CIDR with this identity (0: the addresses no
    /// entry claims).
    entries: Option<usize>,
    /// `null` when the source is world or host (nothing judges there).
    egress: Option<SideReport>,
    /// `null` when the destination is world or host (no ingress side).
    ingress: Option<SideReport>,
    result: &'static str,
    #[serde(skip)]
    outcome: Outcome,
}

#[derive(Serialize)]
struct SideReport {
    /// The side's namespace: the source's for egress, the destination's for ingress.
    namespace: String,
    /// `allow` or `deny`.
    verdict: &'static str,
    /// The log's `policy` string.
    policy: String,
    /// `SameNamespace`, `Dns`, `Unrestricted`, `ClusterRule`, `NamespaceRule`, `NoMatch`,
    /// `OtherSide` or `Default`.
    step: String,
    mode: &'static str,
    /// `Label`, `ClusterDefault` or `Flag` (`LastValidLabel` is for agents, which remember).
    mode_from: ModeSource,
    /// `allowed`, `logged` or `dropped`.
    result: &'static str,
    #[serde(skip)]
    text: String,
}

/// How an evaluation step reads.
fn step_text(step: Step) -> &'static str {
    match step {
        Step::SameNamespace => "always allowed: same namespace",
        Step::Dns => "always allowed: DNS to the cluster DNS Service",
        Step::Unrestricted => "always allowed: ingress from world or host",
        Step::ClusterRule => "step 1: a ClusterFirewall rule",
        Step::NamespaceRule => "step 2: a rule of this side's namespace",
        Step::NoMatch => "step 2: no rule of this side's namespace matched",
        Step::OtherSide => "step 3: a rule of the other side's namespace",
        Step::Default => "step 4: the default",
        Step::AdminTier => "step 1: a ClusterNetworkPolicy rule of the Admin tier",
        Step::NetworkPolicy => "step 2: a NetworkPolicy rule isolating this side's pod",
        Step::NetworkPolicyNoMatch => {
            "step 2: NetworkPolicies isolate this side's pod and none of their rules matched"
        }
        Step::BaselineTier => "step 3: a ClusterNetworkPolicy rule of the Baseline tier",
    }
}

fn side_report(namespace: &str, d: &SideDecision) -> SideReport {
    let outcome = d.outcome();
    let effect = match (outcome, d.mode) {
        (Outcome::Allowed, Mode::Off) if d.verdict == firewall_common::PolicyVerdict::Deny => {
            "allowed (mode off: neither logged nor dropped)".to_owned()
        }
        _ => outcome.to_string(),
    };
    SideReport {
        namespace: namespace.to_owned(),
        verdict: d.verdict.as_str(),
        policy: d.policy.clone(),
        step: format!("{:?}", d.step),
        mode: d.mode.as_str(),
        mode_from: d.mode_from,
        result: outcome.as_str(),
        text: format!(
            "{}{} ({}); mode {} (from {}): {effect}",
            d.verdict.as_str(),
            match d.step {
                // Exemptions are decided before any rule: no rule to name.
                Step::SameNamespace | Step::Dns | Step::Unrestricted => String::new(),
                _ => format!(" by {}", d.policy),
            },
            step_text(d.step),
            d.mode.as_str(),
            d.mode_from.as_str(),
        ),
    }
}

fn judgement_report(
    j: &Judgement,
    address: Option<IpAddr>,
    entries: Option<usize>,
) -> JudgementReport {
    let outcome = j.outcome();
    JudgementReport {
        source: j.source.0.clone(),
        destination: j.destination.0.clone(),
        address,
        entries,
        egress: j
            .egress
            .as_ref()
            .map(|d| side_report(j.source.1.as_deref().unwrap_or_default(), d)),
        ingress: j
            .ingress
            .as_ref()
            .map(|d| side_report(j.destination.1.as_deref().unwrap_or_default(), d)),
        result: outcome.as_str(),
        outcome,
    }
}

/// The model's answer to `--from`/`--to`, with warnings about what it does not know.
struct Resolver<'a> {
    model: &'a ClusterModel,
    ev: &'a Evaluator<'a>,
    warnings: Vec<String>,
    /// Namespaces the pair touches (for rejected objects that bear on it).
    namespaces: Vec<String>,
}

impl Resolver<'_> {
    /// Notes a namespace of the pair (once), warning about what the model does not know of it.
    fn namespace(&mut self, ns: &str) {
        if self.namespaces.iter().any(|n| n == ns) {
            return;
        }
        self.namespaces.push(ns.to_owned());
        if !self.model.namespaces.is_empty() && !self.model.namespaces.contains_key(ns) {
            self.warnings.push(format!(
                "unknown namespace {ns}: no such Namespace; judged with no labels and the default mode"
            ));
        }
        for l in self
            .ev
            .invalid_mode_labels()
            .iter()
            .filter(|l| l.namespace == ns)
        {
            self.warnings.push(format!(
                "namespace {ns}: {MODE_LABEL} label {:?} is no mode (expected enforce, monitor or off): the agents keep its last valid mode; judged alone, this answer uses {} (from {})",
                l.value,
                l.in_force.mode.as_str(),
                l.in_force.source.as_str()
            ));
        }
    }

    fn pod(&mut self, namespace: &str, name: &str) -> Option<&Pod> {
        self.namespace(namespace);
        let pod = self
            .model
            .pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name);
        match pod {
            None => self.warnings.push(format!(
                "unknown pod {namespace}/{name}: judged as a pod of {namespace} that no Service selects"
            )),
            Some(p) if p.terminal => self.warnings.push(format!(
                "pod {namespace}/{name} has finished (Succeeded or Failed): it is no endpoint"
            )),
            Some(_) => {}
        }
        pod
    }

    fn source(&mut self, e: &Endpoint) -> Source {
        match e {
            Endpoint::Namespace(ns) => {
                self.namespace(ns);
                Source::Namespace(ns.clone())
            }
            Endpoint::Pod { namespace, name } => {
                if self.pod(namespace, name).is_some_and(|p| p.host_network) {
                    self.warnings.push(format!(
                        "pod {namespace}/{name} uses the host network: its connections are the host's"
                    ));
                }
                Source::Pod {
                    namespace: namespace.clone(),
                    name: name.clone(),
                }
            }
            Endpoint::Address(ip) => Source::Address(*ip),
            Endpoint::Service { .. } | Endpoint::Cidr(_) => {
                unreachable!("refused by the argument checks")
            }
        }
    }

    /// The destinations to judge, each with the address judged and (CIDR parts) its entry count.
    fn destinations(
        &mut self,
        e: &Endpoint,
        services: &[String],
    ) -> Vec<(Destination, Option<IpAddr>, Option<usize>)> {
        match e {
            Endpoint::Namespace(ns) => {
                self.namespace(ns);
                for s in services {
                    self.service(ns, s);
                }
                let services = services.to_vec();
                vec![(
                    Destination::Namespace {
                        name: ns.clone(),
                        services,
                    },
                    None,
                    None,
                )]
            }
            Endpoint::Pod { namespace, name } => {
                if let Some(p) = self.pod(namespace, name)
                    && p.ips.is_empty()
                    && !p.host_network
                {
                    self.warnings.push(format!(
                        "pod {namespace}/{name} has no IP yet: judged as its own node identifies it (by cgroup)"
                    ));
                }
                let dst = Destination::Pod {
                    namespace: namespace.clone(),
                    name: name.clone(),
                };
                vec![(dst, None, None)]
            }
            Endpoint::Service { namespace, name } => {
                self.namespace(namespace);
                vec![self.service_destination(namespace, name)]
            }
            Endpoint::Address(ip) => vec![(Destination::Address(*ip), Some(*ip), None)],
            Endpoint::Cidr(net) => self
                .ev
                .cidr_parts(*net)
                .into_iter()
                .map(|p| {
                    (
                        Destination::Address(p.address),
                        Some(p.address),
                        Some(p.entries),
                    )
                })
                .collect(),
        }
    }

    /// Whether the Service exists (warns when not).
    fn service(&mut self, namespace: &str, name: &str) -> Option<&crate::model::Service> {
        let s = self
            .model
            .services
            .iter()
            .find(|s| s.namespace == namespace && s.name == name);
        if s.is_none() {
            self.warnings.push(format!(
                "unknown service {namespace}/svc/{name}: judged as a pod of {namespace} that no Service selects"
            ));
        }
        s
    }

    /// A Service: its cluster IP as the kernel resolves it; a headless one, a pod it selects.
    fn service_destination(
        &mut self,
        namespace: &str,
        name: &str,
    ) -> (Destination, Option<IpAddr>, Option<usize>) {
        let ip = self
            .service(namespace, name)
            .map(|s| s.cluster_ips.first().copied());
        match ip {
            Some(Some(ip)) => (Destination::Address(ip), Some(ip), None),
            found => {
                if found.is_some() {
                    self.warnings.push(format!(
                        "service {namespace}/svc/{name} is headless: judged as a pod it selects (name a pod as NAMESPACE/POD for its exact identity)"
                    ));
                }
                let services = match found {
                    Some(_) => vec![name.to_owned()],
                    None => vec![],
                };
                let dst = Destination::Namespace {
                    name: namespace.to_owned(),
                    services,
                };
                (dst, None, None)
            }
        }
    }
}

fn report(args: &CheckArgs, q: &Query, model: &ClusterModel, ev: &Evaluator<'_>) -> Report {
    let mut r = Resolver {
        model,
        ev,
        warnings: Vec::new(),
        namespaces: Vec::new(),
    };
    if model.namespaces.is_empty() {
        r.warnings.push(
            "the source has no Namespace objects: namespace labels and modes are unknown; this answer assumes no labels and the default mode"
                .to_owned(),
        );
    }
    let src = r.source(&q.from);
    let judgements: Vec<JudgementReport> = r
        .destinations(&q.to, &args.services)
        .into_iter()
        .map(|(dst, address, entries)| {
            let j = ev.judge(&src, &dst, q.proto as u8, q.port);
            // Addresses resolve to namespaces too.
            for ns in [&j.source.1, &j.destination.1].into_iter().flatten() {
                r.namespace(ns);
            }
            judgement_report(&j, address, entries)
        })
        .collect();
    if judgements.iter().all(|j| j.egress.is_none()) {
        r.warnings.push(format!(
            "the source {} is world or host: connections from world or host are not restricted in v1alpha1 (always allowed by design)",
            args.from
        ));
    }
    // Objects of either namespace, and every cluster-scoped one (a ClusterFirewall bears on
    // every pair).
    let bearing: Vec<&Rejection> = ev
        .rejected()
        .iter()
        .filter(|x| {
            x.namespace
                .as_ref()
                .is_none_or(|ns| r.namespaces.contains(ns))
        })
        .collect();
    r.warnings.extend(bearing.iter().map(|x| {
        format!(
            "rejected policy object {x}; judged fail closed here (the agents enforce its last accepted version instead if they accepted one)"
        )
    }));
    let rejected = bearing.into_iter().cloned().collect();
    let outcome = judgements
        .iter()
        .map(|j| j.outcome)
        .max()
        .unwrap_or(Outcome::Allowed);
    Report {
        from: args.from.clone(),
        to: args.to.clone(),
        protocol: q.proto.as_str(),
        port: IpProto::WITH_PORTS.contains(&q.proto).then_some(q.port),
        judgements,
        result: outcome.as_str(),
        result_text: outcome.to_string(),
        outcome,
        warnings: r.warnings,
        rejected,
    }
}

impl Report {
    fn text(&self) -> String {
        let mut out = String::new();
        let judged = match self.port {
            Some(p) => format!("{} port {p}", self.protocol),
            None => self.protocol.to_owned(),
        };
        let _ = writeln!(out, "{judged} from {} to {}:", self.from, self.to);
        let many = self.judgements.len() > 1;
        if many {
            let _ = writeln!(
                out,
                "  {} is judged per identity: {} parts, each by one of its addresses",
                self.to,
                self.judgements.len()
            );
        }
        for j in &self.judgements {
            let indent = if many { "    " } else { "  " };
            let _ = writeln!(out, "{}{} -> {}", &indent[2..], j.source, j.destination);
            match j.entries {
                Some(_) if !many => {
                    let _ = writeln!(
                        out,
                        "{indent}(every address of {} has this identity)",
                        self.to
                    );
                }
                Some(0) => {
                    let _ = writeln!(
                        out,
                        "{indent}(stands for the addresses no narrower entry claims)"
                    );
                }
                Some(n) => {
                    let s = if n == 1 { "y" } else { "ies" };
                    let _ = writeln!(
                        out,
                        "{indent}(stands for {n} address-table entr{s} of this identity)"
                    );
                }
                None => {}
            }
            match &j.egress {
                Some(e) => {
                    let _ = writeln!(out, "{indent}egress at {}: {}", e.namespace, e.text);
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{indent}egress: none (world or host source: not judged)"
                    );
                }
            }
            match &j.ingress {
                Some(i) => {
                    let _ = writeln!(out, "{indent}ingress at {}: {}", i.namespace, i.text);
                }
                None => {
                    let _ = writeln!(out, "{indent}ingress: none (world or host destination)");
                }
            }
            if many {
                let _ = writeln!(out, "{indent}result: {}", j.outcome);
            }
        }
        let _ = writeln!(out, "  result: {}", self.result_text);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e:#}"))
    }

    #[test]
    fn endpoints() {
        assert_eq!(ep("web"), Endpoint::Namespace("web".into()));
        assert_eq!(
            ep("frontend/web"),
            Endpoint::Pod {
                namespace: "frontend".into(),
                name: "web".into()
            }
        );
        assert_eq!(
            ep("db/svc/postgres"),
            Endpoint::Service {
                namespace: "db".into(),
                name: "postgres".into()
            }
        );
        // A pod may be called `svc`; only three parts name a Service.
        assert_eq!(
            ep("db/svc"),
            Endpoint::Pod {
                namespace: "db".into(),
                name: "svc".into()
            }
        );
        assert_eq!(
            ep("10.0.0.1"),
            Endpoint::Address("10.0.0.1".parse().unwrap())
        );
        assert_eq!(ep("fd00::1"), Endpoint::Address("fd00::1".parse().unwrap()));
        assert_eq!(
            ep("10.0.0.1/32"),
            Endpoint::Address("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            ep("10.0.0.0/8"),
            Endpoint::Cidr("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(ep("fd00::/8"), Endpoint::Cidr("fd00::/8".parse().unwrap()));
    }

    #[test]
    fn bad_endpoints_are_errors() {
        for s in [
            "",
            "Web",
            "a b",
            "a/",
            "/a",
            "a//b",
            "a/b/c",
            "a/x/b",
            "a/svc/b/c",
            "10.0.0.0/33",
            "a.b",
            "a/svc/b.c",
            "-a",
            "a/b..c",
        ] {
            let e = s.parse::<Endpoint>().unwrap_err().to_string();
            assert!(e.contains("expected NAMESPACE"), "{s:?}: {e}");
        }
        let e = "10.0.0.1/8".parse::<Endpoint>().unwrap_err().to_string();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(Outcome::Allowed), ExitCode::SUCCESS);
        assert_eq!(exit_code(Outcome::Logged), ExitCode::from(2));
        assert_eq!(exit_code(Outcome::Dropped), ExitCode::from(2));
    }

    #[test]
    fn ports_follow_the_protocol() {
        assert_eq!(port(IpProto::Tcp, Some(80)).unwrap(), 80);
        assert!(port(IpProto::Tcp, None).is_err());
        assert!(port(IpProto::Udp, Some(0)).is_err());
        assert_eq!(port(IpProto::Icmp, None).unwrap(), 0);
        assert!(port(IpProto::Icmpv6, Some(1)).is_err());
        assert_eq!(protocol("udp").unwrap(), IpProto::Udp);
        assert!(protocol("gre").is_err());
    }

    #[test]
    fn the_worst_side_decides() {
        use firewall_common::PolicyVerdict::{Allow, Deny};
        let side = |s: Option<(_, _)>| {
            s.map(|(verdict, mode)| SideDecision {
                verdict,
                policy: "default".into(),
                step: Step::Default,
                mode,
                mode_from: ModeSource::Flag,
            })
        };
        let (enforce, monitor, off) = (Mode::Enforce, Mode::Monitor, Mode::Off);
        // (egress, ingress, the connection's fate)
        let cases = [
            (
                Some((Allow, enforce)),
                Some((Allow, enforce)),
                Outcome::Allowed,
            ),
            (Some((Deny, off)), Some((Allow, enforce)), Outcome::Allowed),
            (
                Some((Deny, monitor)),
                Some((Allow, enforce)),
                Outcome::Logged,
            ),
            (
                Some((Deny, monitor)),
                Some((Deny, enforce)),
                Outcome::Dropped,
            ),
            (None, Some((Deny, monitor)), Outcome::Logged),
            (None, None, Outcome::Allowed),
        ];
        for (e, i, want) in cases {
            let j = Judgement {
                egress: side(e),
                ingress: side(i),
                source: Default::default(),
                destination: Default::default(),
            };
            assert_eq!(j.outcome(), want, "{e:?} {i:?}");
        }
    }
}
