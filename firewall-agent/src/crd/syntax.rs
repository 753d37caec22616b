//! Kubernetes name and label syntax (apimachinery's validation rules), shared by the validators.

/// Why `s` is not a DNS-1123 label (namespace names), or `None` when it is one.
pub fn dns1123_label_error(s: &str) -> Option<&'static str> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    (!ok).then_some(
        "must be a DNS-1123 label (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)",
    )
}

/// Why `s` is not a DNS-1035 label (Service names), or `None` when it is one.
pub fn dns1035_label_error(s: &str) -> Option<&'static str> {
    let ok = dns1123_label_error(s).is_none()
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    (!ok).then_some(
        "must be a DNS-1035 label (at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit)",
    )
}

fn dns1123_subdomain_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| dns1123_label_error(l).is_none())
}

/// A label name part or value: alphanumerics with `-`, `_`, `.` inside, at most 63 characters.
fn qualified_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Why `s` is not a valid label key (`[prefix/]name`), or `None` when it is one.
pub fn label_key_error(s: &str) -> Option<&'static str> {
    let ok = match s.split_once('/') {
        Some((prefix, name)) => dns1123_subdomain_ok(prefix) && qualified_part_ok(name),
        None => qualified_part_ok(s),
    };
    (!ok).then_some(
        "must be an optional DNS subdomain prefix and '/' followed by a name of at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric",
    )
}

/// Why `s` is not a valid label value, or `None` when it is one (the empty value is valid).
pub fn label_value_error(s: &str) -> Option<&'static str> {
    (!s.is_empty() && !qualified_part_ok(s)).then_some(
        "must be empty or at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(dns1123_label_error("kube-system").is_none());
        assert!(dns1123_label_error("9lives").is_none());
        assert!(dns1123_label_error("Payments").is_some());
        assert!(dns1123_label_error("-a").is_some());
        assert!(dns1123_label_error(&"a".repeat(64)).is_some());
        assert!(dns1035_label_error("9lives").is_some());
        assert!(dns1035_label_error("api").is_none());
        assert!(label_key_error("bulkhead.dev/mode").is_none());
        assert!(label_key_error("tier").is_none());
        assert!(label_key_error("a b").is_some());
        assert!(label_key_error("/x").is_some());
        assert!(label_key_error("Ex.ample/x").is_some());
        assert!(label_value_error("").is_none());
        assert!(label_value_error("web_1.a-b").is_none());
        assert!(label_value_error("-web").is_some());
    }
}
