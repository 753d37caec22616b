//! Label and field selectors, parsed from the `labelSelector` / `fieldSelector` query parameters
//! with the real API server's syntax, so clients can filter lists and watches as in a cluster.
use std::collections::BTreeSet;

use super::resources::{ResourceDef, field_value};

/// A selector the server cannot parse or does not support (a 400 for the client).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// One label requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector: every requirement must hold (comma = AND). Empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelReq>);

/// Splits at commas outside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, SelectorError> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError(format!("unbalanced ')' in {s:?}")));
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!("unbalanced '(' in {s:?}")));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253 + 1 + 63
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn key(k: &str, whole: &str) -> Result<String, SelectorError> {
    checked(k, whole, "key", valid_key)
}

fn value(v: &str, whole: &str) -> Result<String, SelectorError> {
    checked(v, whole, "value", valid_value)
}

/// `s` trimmed, if `valid`; else the API server's error naming the label `what` (key or value).
fn checked(
    s: &str,
    whole: &str,
    what: &str,
    valid: fn(&str) -> bool,
) -> Result<String, SelectorError> {
    let s = s.trim();
    if valid(s) {
        Ok(s.to_owned())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: invalid label {what} {s:?} in {whole:?}"
        )))
    }
}

/// `(a, b)` after `in`/`notin`.
fn value_set(rest: &str, whole: &str) -> Result<BTreeSet<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("expected '(values)' in {whole:?}")))?;
    inner.split(',').map(|v| value(v, whole)).collect()
}

/// `key in (...)` / `key notin (...)`: the operator word, surrounded by whitespace.
fn set_op<'a>(term: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let mut search = 0;
    while let Some(pos) = term[search..].find(op) {
        let at = search + pos;
        let before = term[..at].chars().last();
        let after = term[at + op.len()..].chars().next();
        if before.is_some_and(char::is_whitespace)
            && after.is_some_and(|c| c.is_whitespace() || c == '(')
        {
            return Some((&term[..at], &term[at + op.len()..]));
        }
        search = at + op.len();
    }
    None
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for term in split_top(s)? {
            let t = term.trim();
            if t.is_empty() {
                return Err(SelectorError(format!("empty requirement in {s:?}")));
            }
            let req = if let Some(k) = t.strip_prefix('!') {
                LabelReq::NotExists(key(k, s)?)
            } else if let Some((k, rest)) = set_op(t, "notin") {
                LabelReq::NotIn(key(k, s)?, value_set(rest, s)?)
            } else if let Some((k, rest)) = set_op(t, "in") {
                LabelReq::In(key(k, s)?, value_set(rest, s)?)
            } else if let Some((k, v)) = t.split_once("!=") {
                LabelReq::NotEq(key(k, s)?, value(v, s)?)
            } else if let Some((k, v)) = t.split_once("==") {
                LabelReq::Eq(key(k, s)?, value(v, s)?)
            } else if let Some((k, v)) = t.split_once('=') {
                LabelReq::Eq(key(k, s)?, value(v, s)?)
            } else {
                LabelReq::Exists(key(t, s)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object (its `metadata.labels`) satisfies every requirement.
    pub fn matches(&self, obj: &serde_json::Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.contains(x)),
            LabelReq::NotIn(k, vs) => !get(k).is_some_and(|x| vs.contains(x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`, comma = AND.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses and checks every field against what `res` supports (unknown field = error, as the
    /// real server answers 400 "field label not supported").
    pub fn parse(s: &str, res: &ResourceDef) -> Result<FieldSelector, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for term in s.split(',') {
            let t = term.trim();
            let (field, eq, v) = if let Some((f, v)) = t.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = t.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = t.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{t}'"
                )));
            };
            let field = field.trim();
            if !res.supports_field(field) {
                return Err(SelectorError(format!("field label not supported: {field}")));
            }
            reqs.push((field.to_owned(), eq, v.trim().to_owned()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the object satisfies every requirement.
    pub fn matches(&self, obj: &serde_json::Value) -> bool {
        self.0
            .iter()
            .all(|(f, eq, v)| (field_value(obj, f) == *v) == *eq)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apiserver::resources::{RESOURCES, by_plural};

    fn obj(labels: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selector_syntax() {
        let o = obj(json!({"app": "web", "tier": "front", "env": "prod"}));
        let m = |s: &str| LabelSelector::parse(s).expect(s).matches(&o);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app!=web"));
        assert!(m("app!=db"));
        assert!(m("missing!=x"));
        assert!(m("app in (web, db)"));
        assert!(m("app in(web,db)"));
        assert!(!m("app notin (web,db)"));
        assert!(m("tier notin (back)"));
        assert!(m("missing notin (x)"));
        assert!(!m("missing in (x)"));
        assert!(m("app"));
        assert!(!m("!app"));
        assert!(m("!missing"));
        assert!(m("app=web,tier in (front),!missing,env"));
        assert!(!m("app=web,tier=back"));
        // A key that merely contains "in" is not the operator.
        let o2 = obj(json!({"inside": "x"}));
        assert!(LabelSelector::parse("inside=x").expect("p").matches(&o2));
        assert!(
            LabelSelector::parse("kubernetes.io/metadata.name=ns")
                .expect("p")
                .matches(&obj(json!({"kubernetes.io/metadata.name": "ns"})))
        );
    }

    #[test]
    fn label_selector_errors() {
        for bad in ["a in (b", "a=b)", ",", "a=b,", "=x", "a=b c", "a in b"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn field_selectors() {
        let pods = &RESOURCES[by_plural("", "v1", "pods").expect("pods")];
        let o = obj(json!({}));
        let m = |s: &str| FieldSelector::parse(s, pods).expect(s).matches(&o);
        assert!(m("spec.nodeName=n1"));
        assert!(m("spec.nodeName==n1,status.phase=Running"));
        assert!(!m("spec.nodeName!=n1"));
        assert!(m("metadata.name=p,metadata.namespace=ns"));
        assert!(!m("spec.nodeName=n2"));
        assert!(FieldSelector::parse("spec.bogus=1", pods).is_err());
        assert!(FieldSelector::parse("spec.nodeName", pods).is_err());
        let ns = &RESOURCES[by_plural("", "v1", "namespaces").expect("ns")];
        assert!(FieldSelector::parse("spec.nodeName=x", ns).is_err());
        assert!(FieldSelector::parse("metadata.name=x", ns).is_ok());
    }
}
