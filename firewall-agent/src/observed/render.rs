//! The suggested objects as a YAML stream with a comment per rule. serde_yaml writes no
//! comments, so each rule is serialized on its own (by serde_yaml, from the CRD types) and the
//! document is put together around it: the text parses back to exactly the objects.
use std::fmt::Write as _;

use serde::Serialize;

use super::{flows::Seen, rules::Suggested};

/// Why an object could not be written (serde_yaml refused a value; not expected of CRD types).
#[derive(Debug, thiserror::Error)]
#[error("writing NamespaceFirewall/{namespace}/{name}: {source}")]
pub struct RenderError {
    namespace: String,
    name: String,
    #[source]
    source: serde_yaml::Error,
}

/// `# 3 connection(s), first seen ..., last seen ...`
fn comment(seen: &Seen) -> String {
    if seen.first.is_empty() {
        return format!("# {} connection(s)", seen.count);
    }
    format!(
        "# {} connection(s), first seen {}, last seen {}",
        seen.count, seen.first, seen.last
    )
}

/// `value` as YAML, every line indented by `indent` spaces.
fn indented<T: Serialize>(value: &T, indent: usize) -> Result<String, serde_yaml::Error> {
    let text = serde_yaml::to_string(value)?;
    let pad = " ".repeat(indent);
    Ok(text.lines().fold(String::new(), |mut out, l| {
        let _ = writeln!(out, "{pad}{l}");
        out
    }))
}

fn direction<R: Serialize>(
    out: &mut String,
    name: &str,
    rules: Option<&Vec<R>>,
    seen: &[Seen],
) -> Result<(), serde_yaml::Error> {
    let Some(rules) = rules else {
        return Ok(());
    };
    let _ = writeln!(out, "  {name}:");
    for (rule, seen) in rules.iter().zip(seen) {
        let _ = writeln!(out, "  {}", comment(seen));
        out.push_str(&indented(&[rule], 2)?);
    }
    Ok(())
}

/// One document: `---`, the object's header as serde_yaml writes it, then its rules.
fn document(s: &Suggested) -> Result<String, serde_yaml::Error> {
    let mut header = serde_yaml::to_value(&s.object)?;
    if let Some(m) = header.as_mapping_mut() {
        m.remove("spec");
        m.remove("status");
    }
    let mut out = String::from("---\n");
    for n in &s.notes {
        let _ = writeln!(out, "# note: {n}");
    }
    out.push_str(&serde_yaml::to_string(&header)?);
    out.push_str("spec:\n");
    let spec = &s.object.spec;
    direction(&mut out, "ingress", spec.ingress.as_ref(), &s.ingress)?;
    direction(&mut out, "egress", spec.egress.as_ref(), &s.egress)?;
    Ok(out)
}

/// The objects as one YAML stream (empty when there are none).
pub fn render(objects: &[Suggested]) -> Result<String, RenderError> {
    let mut out = String::new();
    for s in objects {
        let text = document(s).map_err(|source| RenderError {
            namespace: s.object.metadata.namespace.clone().unwrap_or_default(),
            name: s.object.metadata.name.clone().unwrap_or_default(),
            source,
        })?;
        out.push_str(&text);
    }
    Ok(out)
}
