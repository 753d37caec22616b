//! Policy objects the end-to-end tests and the demo share, as YAML documents.

/// The ClusterFirewall every test starts from: no rules, cluster defaults only.
pub fn baseline(cross: &str, mode: &str) -> String {
    format!(
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: ClusterFirewall
metadata: {{name: baseline}}
spec:
  priority: 100
  rules: []
  defaults: {{crossNamespace: {cross}, mode: {mode}}}
"#
    )
}

/// A NamespaceFirewall `name` in `namespace` with one ingress rule: from the namespaces `from`,
/// only to the pods behind `services` when any are named, on `ports` (protocol, port; the port
/// is not checked here, so tests can write invalid ones).
pub fn ingress_from(
    name: &str,
    namespace: &str,
    from: &[&str],
    services: &[&str],
    ports: &[(&str, u32)],
) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|(protocol, port)| format!("{{protocol: {protocol}, port: {port}}}"))
        .collect();
    let services = if services.is_empty() {
        String::new()
    } else {
        format!("\n      services: [{}]", services.join(", "))
    };
    format!(
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ingress:
    - from: {{namespaces: [{from}]}}{services}
      ports: [{ports}]
"#,
        from = from.join(", "),
        ports = ports.join(", "),
    )
}

/// A NamespaceFirewall `from-<from>` in `namespace` admitting namespace `from` on TCP `port`.
pub fn admit(namespace: &str, from: &str, port: u16) -> String {
    let name = format!("from-{from}");
    ingress_from(&name, namespace, &[from], &[], &[("TCP", port.into())])
}

/// The SaaS scenario's `web-to-api`: frontend may reach the pods behind `payments-api` on 8443.
pub fn web_to_api() -> String {
    ingress_from(
        "web-to-api",
        "payments",
        &["frontend"],
        &["payments-api"],
        &[("TCP", 8443)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_parse_as_written() {
        let v: serde_yaml::Value = serde_yaml::from_str(&web_to_api()).expect("yaml");
        let rule = &v["spec"]["ingress"][0];
        assert_eq!(rule["from"]["namespaces"][0], "frontend");
        assert_eq!(rule["services"][0], "payments-api");
        assert_eq!(rule["ports"][0]["port"], 8443);
        let v: serde_yaml::Value = serde_yaml::from_str(&admit("b", "a", 80)).expect("yaml");
        assert_eq!(v["metadata"]["name"], "from-a");
        assert!(v["spec"]["ingress"][0].get("services").is_none());
    }
}
