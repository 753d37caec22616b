//! `firewall-agent validate FILE...`: checks policy objects offline with the agent's own parser and
//! validation (the same code that decides `Accepted` in a cluster), before they are applied.
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use firewall_agent::{
    crd::{validate_cluster_firewall, validate_namespace_firewall},
    objects::parse_objects,
};
use kube::ResourceExt as _;

/// Arguments of `validate`.
#[derive(clap::Args)]
pub struct ValidateArgs {
    /// YAML files (streams or `kind: List`); objects of other kinds are skipped.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Runs `validate`: prints every field error and fails when there is any.
pub fn run(args: ValidateArgs) -> anyhow::Result<()> {
    let mut errors = 0usize;
    let mut valid = 0usize;
    for path in &args.files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let model = match parse_objects(&text) {
            Ok(m) => m,
            Err(e) => {
                println!("{}: {e}", path.display());
                errors += 1;
                continue;
            }
        };
        for r in &model.rejected {
            let ns = r
                .namespace
                .as_deref()
                .map(|n| format!("{n}/"))
                .unwrap_or_default();
            println!(
                "{}: {}/{ns}{}: {}: {}",
                path.display(),
                r.kind,
                r.name,
                r.reason,
                r.message
            );
            errors += 1;
        }
        for o in &model.namespace_firewalls {
            match validate_namespace_firewall(o) {
                Ok(_) => valid += 1,
                Err(errs) => {
                    for e in errs {
                        println!("{}: {e}", path.display());
                        errors += 1;
                    }
                }
            }
        }
        let mut with_defaults = Vec::new();
        for o in &model.cluster_firewalls {
            if o.spec.defaults.is_some() {
                with_defaults.push(o.name_any());
            }
            match validate_cluster_firewall(o) {
                Ok(_) => valid += 1,
                Err(errs) => {
                    for e in errs {
                        println!("{}: {e}", path.display());
                        errors += 1;
                    }
                }
            }
        }
        if with_defaults.len() > 1 {
            println!(
                "{}: ClusterFirewalls {} all set spec.defaults: only one object may (DefaultsConflict)",
                path.display(),
                with_defaults.join(", ")
            );
            errors += 1;
        }
    }
    if errors > 0 {
        bail!("{errors} error(s); {valid} valid policy object(s)");
    }
    println!("{valid} policy object(s) valid");
    Ok(())
}
