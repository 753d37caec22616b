//! Request handling: one function per verb on top of the store, answering as the real API server
//! does (status codes, v1 Status errors, status-subresource rules).
use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::UnsyncBoxBody};
use serde_json::{Value, json};

use super::{
    Shared,
    patch::{self, PatchKind},
    resources::{RESOURCES, ResourceDef, group_versions},
    routes::{self, Route},
    selector::{FieldSelector, LabelSelector},
    status::ApiError,
    watch::{self, Filter, WatchParams},
};

/// Response body: whole JSON documents or a watch stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted.
const MAX_BODY: usize = 16 << 20;

fn json_response(code: u16, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn value_response(code: u16, v: &Value) -> Response<Body> {
    json_response(code, Bytes::from(v.to_string()))
}

fn error_response(e: &ApiError) -> Response<Body> {
    value_response(e.code, &e.to_status())
}

/// Serves one request; never fails (errors become Status responses).
pub async fn handle(
    shared: Arc<Shared>,
    req: http::Request<hyper::body::Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let resp = match dispatch(&shared, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    shared.record(method.as_str(), &path, &query, resp.status().as_u16());
    resp
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let q: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let route = routes::parse(&path).ok_or_else(|| ApiError::no_route(&path))?;
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = if matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
        limited
            .collect()
            .await
            .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
            .to_bytes()
    } else {
        Bytes::new()
    };
    match (route, &method) {
        (Route::Version, &Method::GET) => Ok(value_response(
            200,
            &json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-bulkhead-emulator",
                    "gitCommit": "", "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
                    "goVersion": "none", "compiler": "rustc", "platform": "linux/amd64"}),
        )),
        (Route::Health, &Method::GET) => {
            let mut r = json_response(200, Bytes::from_static(b"ok"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            Ok(r)
        }
        (Route::Api, &Method::GET) => Ok(value_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr().to_string()}]}),
        )),
        (Route::Apis, &Method::GET) => Ok(value_response(200, &api_group_list())),
        (Route::GroupVersion { group, version }, &Method::GET) => {
            Ok(value_response(200, &resource_list(&group, &version)))
        }
        (Route::Collection { res, ns }, &Method::GET) => {
            let filter = filter_from(&q, &RESOURCES[res], ns)?;
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                watch_response(shared, res, filter, &q)
            } else {
                let (rv, _, items) = shared
                    .store
                    .snapshot(res, filter.ns.as_deref(), |v| filter.matches(v));
                Ok(json_response(200, watch::list_body(res, rv, &items)))
            }
        }
        (Route::Collection { res, ns }, &Method::POST) => create(shared, res, ns, &body),
        (Route::Object { res, ns, name, .. }, &Method::GET) => {
            let s = shared
                .store
                .get(res, ns.as_deref().unwrap_or(""), &name)
                .ok_or_else(|| ApiError::not_found(RESOURCES[res].plural, &name))?;
            Ok(json_response(200, s.json.clone()))
        }
        (
            Route::Object {
                res,
                ns,
                name,
                status,
            },
            &Method::PUT,
        ) => replace(
            shared,
            res,
            ns.as_deref().unwrap_or(""),
            &name,
            status,
            &body,
        ),
        (
            Route::Object {
                res,
                ns,
                name,
                status,
            },
            &Method::PATCH,
        ) => patch_object(
            shared,
            res,
            ns.as_deref().unwrap_or(""),
            &name,
            status,
            &content_type,
            &body,
        ),
        (
            Route::Object {
                res,
                ns,
                name,
                status: false,
            },
            &Method::DELETE,
        ) => delete(shared, res, ns.as_deref().unwrap_or(""), &name, &body),
        (_, m) => Err(ApiError::method_not_allowed(m.as_str())),
    }
}

fn filter_from(
    q: &HashMap<String, String>,
    def: &ResourceDef,
    ns: Option<String>,
) -> Result<Filter, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(e.0))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), def)
        .map_err(|e| ApiError::bad_request(e.0))?;
    Ok(Filter { ns, labels, fields })
}

fn watch_response(
    shared: &Arc<Shared>,
    res: usize,
    filter: Filter,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let rv = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {s:?}")))?,
        ),
    };
    let timeout = match q.get("timeoutSeconds") {
        None => Duration::from_secs(1800),
        Some(s) => Duration::from_secs(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
        ),
    };
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let params = WatchParams {
        rv,
        timeout,
        bookmarks: flag("allowWatchBookmarks"),
        send_initial_events: flag("sendInitialEvents"),
    };
    let stream = watch::start(
        shared.store.clone(),
        res,
        filter,
        &params,
        shared.bookmark_interval(),
    );
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| ApiError::bad_request(format!("invalid object: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be an object"));
    }
    Ok(v)
}

fn body_name(v: &Value) -> Option<&str> {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Checks the body's kind and namespace against the URL.
fn check_body(def: &ResourceDef, ns: &str, v: &Value) -> Result<(), ApiError> {
    if let Some(k) = v.get("kind").and_then(Value::as_str)
        && k != def.kind
    {
        return Err(ApiError::bad_request(format!(
            "kind {k:?} does not match the resource {:?}",
            def.plural
        )));
    }
    if let Some(n) = v.pointer("/metadata/namespace").and_then(Value::as_str)
        && def.namespaced
        && !n.is_empty()
        && n != ns
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({n}) does not match the namespace sent on the request ({ns})"
        )));
    }
    Ok(())
}

/// The status rule for HTTP writes: main resource keeps the stored status, `/status` keeps
/// everything but the status.
fn merge_status(
    def: &ResourceDef,
    status_write: bool,
    existing: Option<&Value>,
    mut new: Value,
) -> Value {
    if !def.status {
        return new;
    }
    let old_status = existing.and_then(|e| e.get("status")).cloned();
    if status_write {
        let Some(existing) = existing else { return new };
        let mut out = existing.clone();
        let rv = new.pointer("/metadata/resourceVersion").cloned();
        match (new.get_mut("status").map(Value::take), out.as_object_mut()) {
            (Some(st), Some(m)) => {
                m.insert("status".into(), st);
            }
            (None, Some(m)) => {
                m.remove("status");
            }
            _ => {}
        }
        if let (Some(rv), Some(m)) = (rv, out.get_mut("metadata").and_then(Value::as_object_mut)) {
            m.insert("resourceVersion".into(), rv);
        }
        out
    } else {
        if let Some(m) = new.as_object_mut() {
            match old_status {
                Some(s) => {
                    m.insert("status".into(), s);
                }
                None => {
                    m.remove("status");
                }
            }
        }
        new
    }
}

fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let uid = super::store::new_uid();
    let suffix: String = uid
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .take(5)
        .map(|b| ALPHABET[(b as usize) % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

fn create(
    shared: &Arc<Shared>,
    res: usize,
    ns: Option<String>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let def = &RESOURCES[res];
    let ns = match (def.namespaced, ns) {
        (true, Some(ns)) => ns,
        (false, None) => String::new(),
        _ => return Err(ApiError::method_not_allowed("POST")),
    };
    let mut obj = parse_object(body)?;
    check_body(def, &ns, &obj)?;
    let name = match body_name(&obj) {
        Some(n) => n.to_owned(),
        None => match obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(prefix) => generate_name(prefix),
            None => {
                return Err(ApiError::invalid(format!(
                    "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                    def.plural
                )));
            }
        },
    };
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("uid");
        m.remove("creationTimestamp");
    }
    if def.status {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
        if def.kind == "Namespace" {
            obj["status"] = json!({"phase": "Active"});
        }
    }
    let (stored, _) = shared.store.modify(res, &ns, &name, |existing| {
        if existing.is_some() {
            return Err(ApiError::already_exists(def.plural, &name));
        }
        Ok(obj)
    })?;
    Ok(json_response(201, stored.json.clone()))
}

fn replace(
    shared: &Arc<Shared>,
    res: usize,
    ns: &str,
    name: &str,
    status_write: bool,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let def = &RESOURCES[res];
    if status_write && !def.status {
        return Err(ApiError::no_route("status"));
    }
    let obj = parse_object(body)?;
    check_body(def, ns, &obj)?;
    if let Some(n) = body_name(&obj)
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    let (stored, _) = shared.store.modify(res, ns, name, |existing| {
        let existing = existing.ok_or_else(|| ApiError::not_found(def.plural, name))?;
        Ok(merge_status(def, status_write, Some(existing), obj))
    })?;
    Ok(json_response(200, stored.json.clone()))
}

fn patch_object(
    shared: &Arc<Shared>,
    res: usize,
    ns: &str,
    name: &str,
    status_write: bool,
    content_type: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let def = &RESOURCES[res];
    if status_write && !def.status {
        return Err(ApiError::no_route("status"));
    }
    let kind = PatchKind::from_content_type(content_type)?;
    let p = patch::parse_body(kind, body)?;
    let (stored, created) = shared.store.modify(res, ns, name, |existing| {
        let mut doc = match (existing, kind) {
            (Some(e), _) => e.clone(),
            // Server-side apply creates.
            (None, PatchKind::Apply) if !status_write => {
                json!({"apiVersion": def.api_version(), "kind": def.kind, "metadata": {"name": name}})
            }
            (None, _) => return Err(ApiError::not_found(def.plural, name)),
        };
        patch::apply(kind, &mut doc, &p)?;
        if existing.is_none() && def.status {
            // A create through apply: no status, like POST.
            if let Some(m) = doc.as_object_mut() {
                m.remove("status");
            }
            return Ok(doc);
        }
        Ok(merge_status(def, status_write, existing, doc))
    })?;
    Ok(json_response(
        if created { 201 } else { 200 },
        stored.json.clone(),
    ))
}

fn delete(
    shared: &Arc<Shared>,
    res: usize,
    ns: &str,
    name: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let def = &RESOURCES[res];
    // DeleteOptions may carry a resourceVersion precondition.
    let opts: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let pre = opts
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str);
    match shared.store.delete(res, ns, name, pre)? {
        Some(gone) => Ok(json_response(200, gone.json.clone())),
        None => Err(ApiError::not_found(def.plural, name)),
    }
}

fn api_group_list() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for (g, v) in group_versions() {
        if g.is_empty() {
            continue;
        }
        let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
        match groups.iter_mut().find(|x| x["name"] == g) {
            Some(x) => {
                if let Some(vs) = x["versions"].as_array_mut() {
                    vs.push(gv);
                }
            }
            None => {
                groups.push(json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv}));
            }
        }
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Value {
    let verbs = json!([
        "create", "delete", "get", "list", "patch", "update", "watch"
    ]);
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(
            json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                              "kind": r.kind, "verbs": verbs, "shortNames": r.short_names()}),
        );
        if r.status {
            resources.push(json!({"name": format!("{}/status", r.plural), "singularName": "",
                                  "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::by_kind;

    #[test]
    fn status_rules() {
        let nf = &RESOURCES[by_kind("bulkhead.dev/v1alpha1", "NamespaceFirewall").expect("nf")];
        let old = json!({"metadata": {"name": "a", "resourceVersion": "3"}, "spec": {"x": 1}, "status": {"s": "old"}});
        let new = json!({"metadata": {"name": "a", "resourceVersion": "3"}, "spec": {"x": 2}, "status": {"s": "new"}});
        let main = merge_status(nf, false, Some(&old), new.clone());
        assert_eq!(main["spec"]["x"], 2);
        assert_eq!(main["status"]["s"], "old");
        let st = merge_status(nf, true, Some(&old), new);
        assert_eq!(st["spec"]["x"], 1);
        assert_eq!(st["status"]["s"], "new");
        let cm = &RESOURCES[by_kind("v1", "ConfigMap").expect("cm")];
        let v = json!({"status": 1});
        assert_eq!(merge_status(cm, false, None, v.clone()), v);
    }
}
