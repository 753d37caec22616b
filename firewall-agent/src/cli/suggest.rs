//! `firewall-agent suggest LOG...`: the NamespaceFirewall objects that allow exactly the
//! cross-namespace connections a log observed (docs/design.md#agent-cli), as a YAML stream on
//! stdout; notes (what no rule can allow) and the summary on stderr.
use std::{io::Write as _, path::PathBuf};

use anyhow::{Context as _, bail};

use super::cluster;
use crate::{
    compiler::CompileOptions,
    crd::syntax::dns1123_label_error,
    observed::{
        Flows, ReadStats, read_inputs,
        render::render,
        rules::RuleOptions,
        suggest::{SuggestOptions, Suggestion, suggest},
    },
    source::SourceSpec,
};

#[derive(clap::Args)]
pub struct SuggestArgs {
    /// Log files (plain or gzip) or `-` for standard input; lines of many nodes in any order.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// Only the objects of this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// `metadata.name` of the objects (more objects of one namespace get `-2`, `-3`, ...).
    #[arg(long, default_value = "suggested")]
    pub name: String,
    /// Write IPv4 destinations as prefixes of this length instead of /32 (widens the rule to
    /// the whole prefix).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=32), default_value_t = 32)]
    pub cidr_prefix: u8,
    /// Write IPv6 destinations as prefixes of this length instead of /128.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=128), default_value_t = 128)]
    pub cidr_prefix_v6: u8,
    /// Write ports as ranges: alone, consecutive ports (allows nothing more); `=N`, ports at most
    /// N apart (allows the ports in between).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "1", value_parser = clap::value_parser!(u16).range(1..))]
    pub merge_ports: Option<u16>,
    /// `file:PATH` or `kube`: the namespaces, pods and Services, to narrow ingress rules to a
    /// Service (`services:`).
    #[arg(long)]
    pub source: Option<SourceSpec>,
    /// `file:PATH` or `kube`: the policy in force; only what it does not allow yet is printed.
    #[arg(long)]
    pub against: Option<SourceSpec>,
    /// kubeconfig for `kube`.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The cluster DNS Service, as the agents are given it (for `--against`).
    #[arg(
        long,
        env = "BULKHEAD_DNS_SERVICE",
        default_value = "kube-system/kube-dns"
    )]
    pub dns_service: String,
    /// Skip lines that are not JSON or not well-formed records (counted on stderr).
    #[arg(long)]
    pub lenient: bool,
}

/// Reads the logs into flows and says on stderr what was skipped.
pub fn read_flows(logs: &[PathBuf], lenient: bool) -> anyhow::Result<(Flows, ReadStats)> {
    let mut flows = Flows::default();
    let stats = read_inputs(logs, lenient, |r| flows.add(&r))?;
    if stats.bad > 0 {
        eprintln!("skipped {} unreadable line(s) (--lenient)", stats.bad);
    }
    Ok((flows, stats))
}

fn options(args: &SuggestArgs) -> anyhow::Result<SuggestOptions> {
    let Some((ns, name)) = args.dns_service.split_once('/') else {
        bail!(
            "invalid --dns-service {:?}: expected NAMESPACE/NAME",
            args.dns_service
        );
    };
    // A name the API server would refuse fails here, not at `kubectl apply`. Labels of at most
    // 60 characters leave room for the `-N` of a split.
    let name_error = args
        .name
        .split('.')
        .find_map(dns1123_label_error)
        .or((args.name.len() > 60).then_some("must be at most 60 characters"));
    if let Some(why) = name_error {
        bail!("invalid --name {:?}: {why}", args.name);
    }
    Ok(SuggestOptions {
        namespace: args.namespace.clone(),
        rules: RuleOptions {
            name: args.name.clone(),
            cidr_prefix_v4: args.cidr_prefix,
            cidr_prefix_v6: args.cidr_prefix_v6,
            merge_gap: args.merge_ports,
        },
        compile: CompileOptions {
            dns_service: (ns.to_owned(), name.to_owned()),
            ..CompileOptions::default()
        },
    })
}

/// Runs `suggest`.
pub fn run(args: SuggestArgs) -> anyhow::Result<()> {
    let opts = options(&args)?;
    let kubeconfig = args.kubeconfig.as_deref();
    let (flows, stats) = read_flows(&args.logs, args.lenient)?;
    let against = match &args.against {
        Some(spec) => Some(cluster::read(spec, kubeconfig).context("--against")?),
        None => None,
    };
    let source = match &args.source {
        Some(spec) if Some(spec) == args.against.as_ref() => against.clone(),
        Some(spec) => Some(cluster::read(spec, kubeconfig).context("--source")?),
        None => None,
    };
    // The policy's own source knows the pods too when it is the cluster (`kube`, or a full file).
    let cluster = source.as_ref().or(against.as_ref());
    let Suggestion { objects, notes } = suggest(&flows, &opts, cluster, against.as_ref());
    for n in &notes {
        eprintln!("note: {n}");
    }
    let text = render(&objects)?;
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing standard output")?;
    if objects.is_empty() {
        let why = if args.against.is_some() {
            "the policy in force allows every observed cross-namespace connection a rule can express"
        } else {
            "no observed cross-namespace connection needs a rule a NamespaceFirewall can express"
        };
        eprintln!(
            "nothing to suggest: {why} ({} record(s) read)",
            stats.records
        );
    } else {
        eprintln!(
            "{} object(s) from {} record(s), {} flow(s)",
            objects.len(),
            stats.records,
            flows.flows.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{
        super::{Cli, Command, validate},
        *,
    };

    fn temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bulkhead-suggest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const LOG: &str = concat!(
        r#"{"ts":"2026-11-23T04:00:00.000001Z","type":"violation","verdict":"AUDIT","direction":"ingress","node":"n1","protocol":"TCP","src":{"namespace":"web","pod":"w","ip":"10.0.0.1","port":40000},"dst":{"namespace":"db","pod":"pg-0","ip":"10.0.1.9","port":5432},"policy":"default","count":3}"#,
        "\n",
        r#"{"ts":"2026-11-23T04:00:00.000002Z","type":"flow","verdict":"ALLOWED","direction":"egress","node":"n1","protocol":"UDP","src":{"namespace":"web","pod":"w","ip":"10.0.0.1","port":40001},"dst":{"namespace":null,"pod":null,"ip":"2001:db8::1","port":443},"policy":"default","count":1}"#,
        "\n",
        r#"{"ts":"2026-11-23T04:00:00.000003Z","type":"flow","verdict":"ALLOWED","direction":"egress","node":"n2","protocol":"TCP","src":{"namespace":"batch","pod":"b","ip":"10.0.2.1","port":40002},"dst":{"namespace":"db","pod":"pg-1","ip":"10.0.1.10","port":5432},"policy":"default","count":2}"#,
        "\n",
    );

    /// The output of `suggest` passes `validate`'s own code.
    #[test]
    fn the_suggestion_passes_validate() {
        let log = temp("log", LOG);
        let args = SuggestArgs::try_parse_from_log(&log);
        let opts = options(&args).unwrap();
        let (flows, _) = read_flows(&args.logs, false).unwrap();
        let s = suggest(&flows, &opts, None, None);
        let text = render(&s.objects).unwrap();
        assert_eq!(s.objects.len(), 3, "{text}");
        let out = temp("suggested.yaml", &text);
        let cli = Cli::try_parse_from(["firewall-agent", "validate", &out.display().to_string()])
            .unwrap();
        let Command::Validate(v) = cli.command else {
            unreachable!("parsed as validate")
        };
        validate::run(v).expect("the suggestion is valid");
    }

    #[test]
    fn a_name_the_api_server_would_refuse_is_an_error() {
        let log = temp("log", LOG);
        for bad in ["Suggested", "a_b", "-x", "", &"x".repeat(61)] {
            let mut args = SuggestArgs::try_parse_from_log(&log);
            args.name = bad.to_owned();
            assert!(options(&args).is_err(), "{bad:?}");
        }
        let mut args = SuggestArgs::try_parse_from_log(&log);
        args.name = "rollout.v2".to_owned();
        assert!(options(&args).is_ok());
    }

    #[test]
    fn merge_ports_takes_its_value_only_after_an_equals_sign() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Suggest(a) => (a.merge_ports, a.logs),
            _ => unreachable!("parsed as suggest"),
        };
        let logs = |l: &[&str]| l.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            parse(&["firewall-agent", "suggest", "--merge-ports", "a.log"]),
            (Some(1), logs(&["a.log"]))
        );
        assert_eq!(
            parse(&[
                "firewall-agent",
                "suggest",
                "--merge-ports=10",
                "a.log",
                "b.log"
            ]),
            (Some(10), logs(&["a.log", "b.log"]))
        );
        assert_eq!(
            parse(&["firewall-agent", "suggest", "a.log"]),
            (None, logs(&["a.log"]))
        );
    }

    impl SuggestArgs {
        fn try_parse_from_log(log: &std::path::Path) -> SuggestArgs {
            let cli =
                Cli::try_parse_from(["firewall-agent", "suggest", &log.display().to_string()])
                    .unwrap();
            match cli.command {
                Command::Suggest(a) => a,
                _ => unreachable!("parsed as suggest"),
            }
        }
    }
}
