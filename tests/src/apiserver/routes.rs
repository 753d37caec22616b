//! URL paths to what they address, with the real API server's layout
//! (`/api/v1/namespaces/{ns}/pods/{name}/status`, `/apis/{group}/{version}/...`).
use super::resources::{RESOURCES, by_plural};

/// What a request path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/version`.
    Version,
    /// `/healthz`, `/readyz`, `/livez`.
    Health,
    /// `/api` (core versions).
    Api,
    /// `/apis` (group list).
    Apis,
    /// `/api/v1`, `/apis/{g}/{v}`: resource list.
    GroupVersion {
        /// Group (`""` for core).
        group: String,
        /// Version.
        version: String,
    },
    /// A collection, optionally limited to one namespace.
    Collection {
        /// Resource id.
        res: usize,
        /// Namespace from the path.
        ns: Option<String>,
    },
    /// One object or its `/status`.
    Object {
        /// Resource id.
        res: usize,
        /// Namespace from the path (`None` for cluster-scoped kinds).
        ns: Option<String>,
        /// Name.
        name: String,
        /// The `/status` subresource.
        status: bool,
    },
}

/// Parses a request path; `None` = nothing there (404).
pub fn parse(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "readyz" | "livez", ..] => return Some(Route::Health),
        ["api"] => return Some(Route::Api),
        ["apis"] => return Some(Route::Apis),
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let known = RESOURCES
        .iter()
        .any(|r| r.group == group && r.version == version);
    if !known {
        return None;
    }
    let res = |plural: &str| by_plural(group, version, plural);
    let ns_res = |plural: &str| res(plural).filter(|&i| RESOURCES[i].namespaced);
    let cluster_res = |plural: &str| res(plural).filter(|&i| !RESOURCES[i].namespaced);
    let object = |res, ns: Option<&str>, name: &str, status| {
        (!name.is_empty()).then(|| Route::Object {
            res,
            ns: ns.map(str::to_owned),
            name: name.to_owned(),
            status,
        })
    };
    match rest {
        [] => Some(Route::GroupVersion {
            group: group.to_owned(),
            version: version.to_owned(),
        }),
        // `/namespaces/{name}/status` is the Namespace's status, not a resource called "status".
        ["namespaces", name, "status"] if group.is_empty() => {
            object(cluster_res("namespaces")?, None, name, true)
        }
        ["namespaces", ns, plural] if !ns.is_empty() => Some(Route::Collection {
            res: ns_res(plural)?,
            ns: Some((*ns).to_owned()),
        }),
        ["namespaces", ns, plural, name] if !ns.is_empty() => {
            object(ns_res(plural)?, Some(ns), name, false)
        }
        ["namespaces", ns, plural, name, "status"] if !ns.is_empty() => {
            object(ns_res(plural)?, Some(ns), name, true)
        }
        [plural] => Some(Route::Collection {
            res: res(plural)?,
            ns: None,
        }),
        [plural, name] => object(cluster_res(plural)?, None, name, false),
        [plural, name, "status"] => object(cluster_res(plural)?, None, name, true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let pods = by_plural("", "v1", "pods").expect("pods");
        let nss = by_plural("", "v1", "namespaces").expect("ns");
        let nf = by_plural("bulkhead.dev", "v1alpha1", "namespacefirewalls").expect("nf");
        assert_eq!(
            parse("/api/v1/pods"),
            Some(Route::Collection {
                res: pods,
                ns: None
            })
        );
        assert_eq!(
            parse("/api/v1/namespaces/a/pods"),
            Some(Route::Collection {
                res: pods,
                ns: Some("a".into())
            })
        );
        assert_eq!(
            parse("/api/v1/namespaces/a/pods/p/status"),
            Some(Route::Object {
                res: pods,
                ns: Some("a".into()),
                name: "p".into(),
                status: true
            })
        );
        assert_eq!(
            parse("/api/v1/namespaces/a"),
            Some(Route::Object {
                res: nss,
                ns: None,
                name: "a".into(),
                status: false
            })
        );
        assert_eq!(
            parse("/api/v1/namespaces/a/status"),
            Some(Route::Object {
                res: nss,
                ns: None,
                name: "a".into(),
                status: true
            })
        );
        assert_eq!(
            parse("/apis/bulkhead.dev/v1alpha1/namespaces/x/namespacefirewalls/f"),
            Some(Route::Object {
                res: nf,
                ns: Some("x".into()),
                name: "f".into(),
                status: false
            })
        );
        assert_eq!(parse("/api/v1/pods/p"), None, "namespaced kind without ns");
        assert_eq!(parse("/api/v1/namespaces/a/nodes"), None);
        assert_eq!(parse("/api/v2/pods"), None);
        assert_eq!(parse("/apis/nope/v1"), None);
        assert_eq!(parse("/version"), Some(Route::Version));
        assert!(matches!(
            parse("/apis/coordination.k8s.io/v1"),
            Some(Route::GroupVersion { .. })
        ));
    }
}
