//! `firewall-agent validate FILE|DIR|-...`: checks policy objects offline with the agent's own
//! parser and validation (the same code that decides `Accepted` in a cluster), before they are
//! applied. Strict: an unknown kind or version of the `bulkhead.dev` group, a NetworkPolicy or
//! ClusterNetworkPolicy of a version the agent does not read, input without any policy object,
//! or any invalid object fails; every error of every object is printed once. Objects of other
//! kinds (a Kustomization, Namespaces) are skipped quietly.
use std::{fmt::Display, path::PathBuf};

use anyhow::bail;
use kube::ResourceExt as _;
use serde_json::Value;

use super::{
    inputs::{self, Input},
    structure::{self, PolicyKind},
};
use crate::{
    cnp,
    crd::{validate_cluster_firewall, validate_namespace_firewall},
    model::ClusterModel,
    netpol,
    source::file::{Position, documents, parse_objects},
};

/// The standard policy kinds the agent enforces, each with the one version it reads:
/// `(group, version, kind)`.
const STANDARD_KINDS: [(&str, &str, &str); 2] = [
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    (
        "policy.networking.k8s.io",
        "v1alpha2",
        "ClusterNetworkPolicy",
    ),
];

/// What to do with an object of `api_version` and `kind` that is not of the `bulkhead.dev`
/// group: `None` skips it (not a policy), `Some(Err(_))` names a version the agent does not read.
fn standard_kind(api_version: &str, kind: &str) -> Option<Result<(), String>> {
    let (group, version) = api_version.split_once('/')?;
    let (_, served, _) = STANDARD_KINDS
        .iter()
        .find(|(g, _, k)| *g == group && *k == kind)?;
    Some(if version == *served {
        Ok(())
    } else {
        Err(format!(
            "{api_version} is not read by the agent: it reads {kind} as {group}/{served}"
        ))
    })
}

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// YAML files (streams or `kind: List`), directories (their *.yaml, *.yml and *.json files,
    /// recursively) or `-` for standard input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Policy objects seen, valid ones, and error lines printed so far.
#[derive(Default)]
struct Tally {
    seen: usize,
    valid: usize,
    errors: usize,
}

impl Tally {
    fn error(&mut self, input: &str, e: impl Display) {
        println!("{input}: {e}");
        self.errors += 1;
    }

    fn object<T, E: Display>(&mut self, input: &str, r: Result<T, Vec<E>>) {
        match r {
            Ok(_) => self.valid += 1,
            Err(errs) => errs.into_iter().for_each(|e| self.error(input, e)),
        }
    }
}

/// Runs `validate`: prints every error and fails when there is any, or when no policy object
/// was found at all (a wrong path or an empty file must not pass as "valid").
pub fn run(args: ValidateArgs) -> anyhow::Result<()> {
    let kinds = structure::policy_kinds();
    let mut tally = Tally::default();
    for input in inputs::read(&args.files)? {
        check_input(&input, &kinds, &mut tally);
    }
    if tally.errors > 0 {
        bail!(
            "{} error(s); {} of {} policy object(s) valid",
            tally.errors,
            tally.valid,
            tally.seen
        );
    }
    if tally.seen == 0 {
        let mut names: Vec<String> = kinds.iter().map(|k| k.kind.clone()).collect();
        names.dedup();
        names.extend(STANDARD_KINDS.iter().map(|(_, _, k)| (*k).to_owned()));
        bail!("no policy object ({}) in the input", names.join(", "));
    }
    println!("{} policy object(s) valid", tally.valid);
    Ok(())
}

/// Checks one input: structure first (every error of every object), then the agent's own
/// validation of the objects whose structure is sound.
fn check_input(input: &Input, kinds: &[PolicyKind], tally: &mut Tally) {
    let objects = match documents(&input.text) {
        Ok(o) => o,
        Err(e) => return tally.error(&input.name, e),
    };
    let mut sound = Vec::new();
    for (pos, value) in objects {
        let api_version = value["apiVersion"].as_str().unwrap_or_default();
        let kind = value["kind"].as_str().unwrap_or_default();
        if !api_version.starts_with(&format!("{}/", structure::GROUP)) {
            // A standard kind: its typed parse and validation below name every error.
            match standard_kind(api_version, kind) {
                None => {}
                Some(Ok(())) => {
                    tally.seen += 1;
                    sound.push(value);
                }
                Some(Err(why)) => {
                    tally.seen += 1;
                    let what = describe(&pos, kind, &value);
                    tally.error(&input.name, format_args!("{what}: {why}"));
                }
            }
            continue;
        }
        tally.seen += 1;
        let what = describe(&pos, kind, &value);
        if let Some(why) = structure::unserved(kinds, api_version, kind) {
            tally.error(&input.name, format_args!("{what}: {why}"));
            continue;
        }
        let errors = structure::errors(kinds, kind, &value);
        if errors.is_empty() {
            sound.push(value);
        }
        for e in errors {
            tally.error(&input.name, format_args!("{what}: {e}"));
        }
    }
    if sound.is_empty() {
        return;
    }
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": sound});
    match serde_yaml::to_string(&list).map(|text| parse_objects(&text)) {
        Ok(Ok(model)) => validate(&input.name, &model, tally),
        Ok(Err(e)) => tally.error(&input.name, e),
        Err(e) => tally.error(&input.name, e),
    }
}

/// `Kind/namespace/name (document N)`, for structural errors.
fn describe(pos: &Position, kind: &str, value: &Value) -> String {
    let meta = &value["metadata"];
    let name = meta["name"].as_str().unwrap_or("<no name>");
    match meta["namespace"].as_str() {
        Some(ns) => format!("{kind}/{ns}/{name} ({pos})"),
        None => format!("{kind}/{name} ({pos})"),
    }
}

fn validate(input: &str, model: &ClusterModel, tally: &mut Tally) {
    for r in &model.rejected {
        tally.error(input, r);
    }
    for o in &model.namespace_firewalls {
        tally.object(input, validate_namespace_firewall(o));
    }
    let mut with_defaults = Vec::new();
    for o in &model.cluster_firewalls {
        if o.spec.defaults.is_some() {
            with_defaults.push(o.name_any());
        }
        tally.object(input, validate_cluster_firewall(o));
    }
    for o in &model.network_policies {
        tally.object(input, netpol::validate(o));
    }
    for o in &model.cluster_network_policies {
        tally.object(input, cnp::validate(o));
    }
    if with_defaults.len() > 1 {
        tally.error(
            input,
            format_args!(
                "ClusterFirewalls {} all set spec.defaults: only one object may (DefaultsConflict)",
                with_defaults.join(", ")
            ),
        );
    }
}
