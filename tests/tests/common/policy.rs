//! Policy objects the end-to-end tests share, as YAML documents.

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

/// A NamespaceFirewall `from-<from>` in `namespace` admitting namespace `from` on TCP `port`.
pub fn admit(namespace: &str, from: &str, port: u16) -> String {
    format!(
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {{name: from-{from}, namespace: {namespace}}}
spec:
  ingress:
    - from: {{namespaces: [{from}]}}
      ports: [{{protocol: TCP, port: {port}}}]
"#
    )
}
