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

/// What a handler needs of a request, read whole.
struct Request {
    method: Method,
    query: HashMap<String, String>,
    content_type: String,
    body: Bytes,
}

/// One object a request addresses (`.../{name}` or `.../{name}/status`).
struct Target<'a> {
    res: usize,
    def: &'static ResourceDef,
    /// `""` for cluster-scoped kinds.
    ns: &'a str,
    name: &'a str,
    /// The `/status` subresource.
    status: bool,
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let route = routes::parse(&path)
        .filter(|r| match r {
            Route::Collection { res, .. } | Route::Object { res, .. } => shared.installed(*res),
            _ => true,
        })
        .ok_or_else(|| ApiError::no_route(&path))?;
    let req = read_request(req).await?;
    match (route, &req.method) {
        (Route::Collection { res, ns }, &Method::GET) => list_or_watch(shared, res, ns, &req.query),
        (Route::Collection { res, ns }, &Method::POST) => create(shared, res, ns, &req.body),
        (
            Route::Object {
                res,
                ns,
                name,
                status,
            },
            _,
        ) => {
            let target = Target {
                res,
                def: &RESOURCES[res],
                ns: ns.as_deref().unwrap_or(""),
                name: &name,
                status,
            };
            object_verb(shared, &target, &req)
        }
        (route, &Method::GET) => {
            discovery(shared, route).ok_or_else(|| ApiError::method_not_allowed("GET"))
        }
        (_, m) => Err(ApiError::method_not_allowed(m.as_str())),
    }
}

/// The method, query, content type and (for writes) the body, at most [`MAX_BODY`] bytes.
async fn read_request(req: http::Request<hyper::body::Incoming>) -> Result<Request, ApiError> {
    let query = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
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
    Ok(Request {
        method,
        query,
        content_type,
        body,
    })
}

/// GET of the version, health and discovery paths; `None` for a route that is none of them.
fn discovery(shared: &Shared, route: Route) -> Option<Response<Body>> {
    Some(match route {
        Route::Version => value_response(
            200,
            &json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-bulkhead-emulator",
                    "gitCommit": "", "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
                    "goVersion": "none", "compiler": "rustc", "platform": "linux/amd64"}),
        ),
        Route::Health => {
            let mut r = json_response(200, Bytes::from_static(b"ok"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            r
        }
        Route::Api => value_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr().to_string()}]}),
        ),
        Route::Apis => value_response(200, &api_group_list()),
        Route::GroupVersion { group, version } => {
            value_response(200, &resource_list(&group, &version))
        }
        Route::Collection { .. } | Route::Object { .. } => return None,
    })
}

fn list_or_watch(
    shared: &Arc<Shared>,
    res: usize,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let filter = filter_from(q, &RESOURCES[res], ns)?;
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        watch_response(shared, res, filter, q)
    } else {
        let (rv, _, items) = shared
            .store
            .snapshot(res, filter.ns.as_deref(), |v| filter.matches(v));
        Ok(json_response(200, watch::list_body(res, rv, &items)))
    }
}

/// GET, PUT, PATCH or DELETE of one object; writes to `/status` only where the kind has it.
fn object_verb(
    shared: &Arc<Shared>,
    t: &Target<'_>,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let writes_status = matches!(req.method, Method::PUT | Method::PATCH) && t.status;
    if writes_status && !t.def.status {
        return Err(ApiError::no_route("status"));
    }
    match req.method {
        Method::GET => {
            let s = shared
                .store
                .get(t.res, t.ns, t.name)
                .ok_or_else(|| ApiError::not_found(t.def.plural, t.name))?;
            Ok(json_response(200, s.json.clone()))
        }
        Method::PUT => replace(shared, t, &req.body),
        Method::PATCH => patch_object(shared, t, &req.content_type, &req.body),
        Method::DELETE if !t.status => delete(shared, t, &req.body),
        ref m => Err(ApiError::method_not_allowed(m.as_str())),
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

fn replace(shared: &Arc<Shared>, t: &Target<'_>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let obj = parse_object(body)?;
    check_body(t.def, t.ns, &obj)?;
    if let Some(n) = body_name(&obj)
        && n != t.name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            t.name
        )));
    }
    let (stored, _) = shared.store.modify(t.res, t.ns, t.name, |existing| {
        let existing = existing.ok_or_else(|| ApiError::not_found(t.def.plural, t.name))?;
        Ok(merge_status(t.def, t.status, Some(existing), obj))
    })?;
    Ok(json_response(200, stored.json.clone()))
}

fn patch_object(
    shared: &Arc<Shared>,
    t: &Target<'_>,
    content_type: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let def = t.def;
    let kind = PatchKind::from_content_type(content_type)?;
    let p = patch::parse_body(kind, body)?;
    let (stored, created) = shared.store.modify(t.res, t.ns, t.name, |existing| {
        let mut doc = match (existing, kind) {
            (Some(e), _) => e.clone(),
            // Server-side apply creates.
            (None, PatchKind::Apply) if !t.status => {
                json!({"apiVersion": def.api_version(), "kind": def.kind, "metadata": {"name": t.name}})
            }
            (None, _) => return Err(ApiError::not_found(def.plural, t.name)),
        };
        patch::apply(kind, &mut doc, &p)?;
        if existing.is_none() && def.status {
            // A create through apply: no status, like POST.
            if let Some(m) = doc.as_object_mut() {
                m.remove("status");
            }
            return Ok(doc);
        }
        Ok(merge_status(def, t.status, existing, doc))
    })?;
    Ok(json_response(
        if created { 201 } else { 200 },
        stored.json.clone(),
    ))
}

fn delete(shared: &Arc<Shared>, t: &Target<'_>, body: &[u8]) -> Result<Response<Body>, ApiError> {
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
    match shared.store.delete(t.res, t.ns, t.name, pre)? {
        Some(gone) => Ok(json_response(200, gone.json.clone())),
        None => Err(ApiError::not_found(t.def.plural, t.name)),
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
