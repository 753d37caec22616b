//! A small kustomize renderer for `deploy/`, offline: follows `resources:` (files and directories)
//! recursively, concatenates the documents, then applies `patches:` entries of the JSON 6902 form
//! (`target: {kind, name}` plus an inline `patch:` list of operations). It implements nothing else
//! of kustomize and fails on any other field (`images`, generators, strategic merge patches...), so
//! a manifest never relies on something unchecked. `cargo xtask manifests` validates what it
//! renders; the container test (tests/tests/e2e_container.rs) runs the DaemonSet it renders.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use serde_yaml::Value;

/// A rendered object and the file it came from.
pub struct Object {
    /// The file that defined it.
    pub file: PathBuf,
    /// The object, with the patches applied.
    pub value: Value,
}

impl Object {
    /// `kind`, or "" when missing.
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    /// `metadata.name`, or "" when missing.
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Renders the kustomization in `dir`.
pub fn render(dir: &Path) -> anyhow::Result<Vec<Object>> {
    let path = dir.join("kustomization.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let k: Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let Some(map) = k.as_mapping() else {
        bail!("{}: not a mapping", path.display());
    };
    for key in map.keys() {
        let key = key.as_str().unwrap_or_default();
        if !matches!(key, "apiVersion" | "kind" | "resources" | "patches") {
            bail!(
                "{}: `{key}` is not implemented by this renderer (only `resources:` and JSON 6902 \
                 `patches:`); extend tests/src/kustomize.rs or keep the manifests plain",
                path.display()
            );
        }
    }
    let mut out = Vec::new();
    for r in k["resources"].as_sequence().into_iter().flatten() {
        let Some(r) = r.as_str() else {
            bail!("{}: resources: entries must be strings", path.display());
        };
        ensure!(
            !r.contains("://") && !r.starts_with("github.com/"),
            "{}: remote resource {r:?} is not supported",
            path.display()
        );
        let target = dir.join(r);
        if target.is_dir() {
            out.extend(render(&target)?);
        } else {
            out.extend(read_objects(&path, &target)?);
        }
    }
    for p in k["patches"].as_sequence().into_iter().flatten() {
        apply_patch(&path, p, &mut out)?;
    }
    Ok(out)
}

fn read_objects(kustomization: &Path, file: &Path) -> anyhow::Result<Vec<Object>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: reading {}", kustomization.display(), file.display()))?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = <Value as serde::Deserialize>::deserialize(doc)
            .with_context(|| format!("parsing {}", file.display()))?;
        if value.is_null() {
            continue;
        }
        let o = Object {
            file: file.to_owned(),
            value,
        };
        ensure!(
            !o.kind().is_empty() && !o.name().is_empty(),
            "{}: an object without kind or metadata.name",
            file.display()
        );
        out.push(o);
    }
    Ok(out)
}

/// One `patches:` entry: a JSON 6902 operation list applied to the one object it targets.
fn apply_patch(kustomization: &Path, entry: &Value, objs: &mut [Object]) -> anyhow::Result<()> {
    let at = kustomization.display();
    let (Some(kind), Some(name), Some(ops)) = (
        entry["target"]["kind"].as_str(),
        entry["target"]["name"].as_str(),
        entry["patch"].as_str(),
    ) else {
        bail!("{at}: a patch needs target.kind, target.name and an inline JSON 6902 `patch`");
    };
    let ops: Value = serde_yaml::from_str(ops).with_context(|| format!("{at}: patch of {name}"))?;
    let ops: json_patch::Patch = serde_json::from_value(serde_json::to_value(ops)?)
        .with_context(|| format!("{at}: patch of {kind} {name} is not a JSON 6902 patch"))?;
    let mut targets = objs
        .iter_mut()
        .filter(|o| o.kind() == kind && o.name() == name);
    let (Some(o), None) = (targets.next(), targets.next()) else {
        bail!("{at}: the patch must match exactly one {kind} {name}");
    };
    let mut doc = serde_json::to_value(&o.value)?;
    json_patch::patch(&mut doc, &ops).with_context(|| format!("{at}: patching {kind} {name}"))?;
    o.value = serde_json::from_value(doc)?;
    Ok(())
}
