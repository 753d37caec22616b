//! `firewall-agent check`: explains the verdict for a connection from a source file, naming the
//! deciding rule on each side (the first question when a flow is denied).
use std::{net::IpAddr, path::PathBuf};

use crate::{
    compiler::{CompileOptions, Destination, explain},
    source::file::parse_objects,
};
use anyhow::{Context as _, bail};
use firewall_common::IpProto;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// `file:PATH` with the cluster objects.
    #[arg(long)]
    source: String,
    /// Source namespace.
    #[arg(long)]
    from: String,
    /// Destination: a namespace, or an IP address.
    #[arg(long)]
    to: String,
    /// Only the pods behind these Services of the destination namespace (comma-separated).
    #[arg(long, value_delimiter = ',')]
    services: Vec<String>,
    /// Destination port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// TCP, UDP, SCTP, ICMP or ICMPv6.
    #[arg(long, default_value = "TCP")]
    protocol: String,
    /// The cluster DNS Service.
    #[arg(long, default_value = "kube-system/kube-dns")]
    dns_service: String,
}

fn proto_number(p: &str) -> anyhow::Result<u8> {
    match IpProto::ALL
        .iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(p))
    {
        Some(k) => Ok(*k as u8),
        None => bail!(
            "unknown --protocol {:?}: expected TCP, UDP, SCTP, ICMP or ICMPv6",
            p.to_ascii_uppercase()
        ),
    }
}

/// Runs `check`.
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let Some(path) = args.source.strip_prefix("file:").map(PathBuf::from) else {
        bail!("check needs --source file:PATH");
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let model = parse_objects(&text).with_context(|| format!("{}", path.display()))?;
    let Some((ns, name)) = args.dns_service.split_once('/') else {
        bail!(
            "invalid --dns-service {:?}: expected NAMESPACE/NAME",
            args.dns_service
        );
    };
    let opts = CompileOptions {
        dns_service: (ns.into(), name.into()),
        ..CompileOptions::default()
    };
    let dst = match args.to.parse::<IpAddr>() {
        Ok(ip) => Destination::Address(ip),
        Err(_) => Destination::Namespace {
            name: args.to.clone(),
            services: args.services.clone(),
        },
    };
    let e = explain(
        &model,
        &opts,
        &args.from,
        &dst,
        proto_number(&args.protocol)?,
        args.port,
    );
    println!("{e}");
    Ok(())
}
