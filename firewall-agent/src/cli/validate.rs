//! `firewall-agent validate FILE...`: checks policy objects offline with the agent's own parser and
//! validation (the same code that decides `Accepted` in a cluster), before they are applied.
use std::{
    fmt::Display,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use kube::ResourceExt as _;

use crate::{
    crd::{validate_cluster_firewall, validate_namespace_firewall},
    model::ClusterModel,
    source::file::parse_objects,
};

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// YAML files (streams or `kind: List`); objects of other kinds are skipped.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Valid policy objects and error lines printed so far.
#[derive(Default)]
struct Tally {
    valid: usize,
    errors: usize,
}

impl Tally {
    fn error(&mut self, path: &Path, e: impl Display) {
        println!("{}: {e}", path.display());
        self.errors += 1;
    }

    fn object<T, E: Display>(&mut self, path: &Path, r: Result<T, Vec<E>>) {
        match r {
            Ok(_) => self.valid += 1,
            Err(errs) => errs.into_iter().for_each(|e| self.error(path, e)),
        }
    }
}

/// Runs `validate`: prints every field error and fails when there is any.
pub fn run(args: ValidateArgs) -> anyhow::Result<()> {
    let mut tally = Tally::default();
    for path in &args.files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        match parse_objects(&text) {
            Ok(model) => validate(path, &model, &mut tally),
            Err(e) => tally.error(path, e),
        }
    }
    if tally.errors > 0 {
        bail!(
            "{} error(s); {} valid policy object(s)",
            tally.errors,
            tally.valid
        );
    }
    println!("{} policy object(s) valid", tally.valid);
    Ok(())
}

fn validate(path: &Path, model: &ClusterModel, tally: &mut Tally) {
    for r in &model.rejected {
        tally.error(path, r);
    }
    for o in &model.namespace_firewalls {
        tally.object(path, validate_namespace_firewall(o));
    }
    let mut with_defaults = Vec::new();
    for o in &model.cluster_firewalls {
        if o.spec.defaults.is_some() {
            with_defaults.push(o.name_any());
        }
        tally.object(path, validate_cluster_firewall(o));
    }
    if with_defaults.len() > 1 {
        tally.error(
            path,
            format_args!(
                "ClusterFirewalls {} all set spec.defaults: only one object may (DefaultsConflict)",
                with_defaults.join(", ")
            ),
        );
    }
}
