//! Request routing: discovery, then `/api/v1/...` and `/apis/{group}/{version}/...` paths,
//! namespaced or cluster-scoped, with the verbs the real server derives from method and query.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Shared;
use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::faults::RequestRecord;
use crate::gate::Gate;
use crate::managed::{self, Owner};
use crate::merge::{self, Mode};
use crate::selector::Selector;
use crate::store::Part;
use crate::watch::{self, WatchSpec};

/// A JSON response.
pub(crate) fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// What a resource path names.
struct Target {
    ty: usize,
    ns: Option<String>,
    name: Option<String>,
    status: bool,
    legacy_watch: bool,
}

fn parse_path(shared: &Shared, path: &str) -> Result<Target, ApiError> {
    let nf = || ApiError::not_found_path(path);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(nf()),
    };
    let store = shared.lock_store();
    let legacy_watch = rest.first() == Some(&"watch");
    if legacy_watch {
        rest = &rest[1..];
    }
    let mut ns = None;
    if rest.len() >= 3
        && rest[0] == "namespaces"
        && let Some(ty) = store.type_index(group, version, rest[2])
        && store.types[ty].namespaced
    {
        ns = Some(rest[1].to_string());
        rest = &rest[2..];
    }
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => return Err(nf()),
    };
    let ty = store.type_index(group, version, plural).ok_or_else(nf)?;
    let t = &store.types[ty];
    let status = match sub {
        None => false,
        Some("status") if t.has_status() => true,
        Some(_) => return Err(nf()),
    };
    if (!t.namespaced && ns.is_some()) || (t.namespaced && ns.is_none() && name.is_some()) {
        return Err(nf());
    }
    Ok(Target {
        ty,
        ns,
        name: name.map(str::to_string),
        status,
        legacy_watch,
    })
}

fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true" | "1"))
}

/// The manager of a write: `fieldManager`, else the User-Agent up to its first `/` (as the
/// real server derives it), at most 128 characters.
fn field_manager(q: &HashMap<String, String>, headers: &HeaderMap) -> String {
    let m = match q.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.clone(),
        None => headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .unwrap_or("unknown")
            .to_string(),
    };
    m.chars().take(128).collect()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let q: HashMap<String, String> = Query::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let path = uri.path();
    let mut rec = RequestRecord {
        verb: "unknown".into(),
        resource: String::new(),
        group: String::new(),
        namespace: None,
        name: None,
        patch_type: None,
        field_manager: q.get("fieldManager").cloned(),
        status: 0,
    };
    let user = if shared.knobs.is_503() {
        Ok(None)
    } else {
        shared.authenticate(&headers)
    };
    let resp = if shared.knobs.is_503() {
        ApiError::unavailable().into_response()
    } else if let Err(e) = &user {
        e.clone().into_response()
    } else {
        let user = user.ok().flatten();
        let doc = {
            let store = shared.lock_store();
            crate::discovery::document(path, &store.types, &shared.addr.to_string())
        };
        match doc {
            Some(doc) => {
                rec.verb = "discovery".into();
                json_response(StatusCode::OK, &doc)
            }
            None => match parse_path(&shared, path) {
                Ok(t) => serve(
                    &shared,
                    user.as_ref(),
                    &method,
                    t,
                    &q,
                    &headers,
                    body,
                    &mut rec,
                ),
                Err(e) => e.into_response(),
            },
        }
    };
    rec.status = resp.status().as_u16();
    shared.knobs.log(rec);
    resp
}

#[allow(clippy::too_many_arguments)]
fn serve(
    shared: &Arc<Shared>,
    user: Option<&UserInfo>,
    method: &Method,
    t: Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
    rec: &mut RequestRecord,
) -> Response {
    let (rt, names) = {
        let store = shared.lock_store();
        let rt = store.types[t.ty].clone();
        let names = vec![rt.plural.clone(), rt.group_resource()];
        (rt, names)
    };
    rec.resource = if t.status {
        format!("{}/status", rt.plural)
    } else {
        rt.plural.clone()
    };
    rec.group = rt.group.clone();
    rec.namespace = t.ns.clone();
    rec.name = t.name.clone();
    let ns = t.ns.clone().unwrap_or_default();
    let watching = t.legacy_watch || flag(q, "watch");
    rec.verb = match (method.as_str(), &t.name, watching) {
        ("GET", _, true) => "watch",
        ("GET", None, false) => "list",
        ("GET", Some(_), false) => "get",
        ("POST", None, _) => "create",
        ("PUT", Some(_), _) => "update",
        ("PATCH", Some(_), _) => "patch",
        ("DELETE", Some(_), _) => "delete",
        _ => return ApiError::method_not_allowed(method.as_str()).into_response(),
    }
    .into();
    let sub = if t.status { "status" } else { "" };
    let gate = Gate {
        user,
        ty: &rt,
        subresource: sub,
        namespace: &ns,
    };
    let name = t.name.as_deref().unwrap_or("");
    if let Err(e) = gate.authorize(shared, &rec.verb, name) {
        return e.into_response();
    }
    let is_write = !matches!(rec.verb.as_str(), "get" | "list" | "watch");
    if is_write && shared.knobs.take_conflict(&names) {
        let name = t.name.as_deref().unwrap_or("");
        return ApiError::conflict(&rt, name).into_response();
    }
    let part = if t.status { Part::Status } else { Part::Main };
    let owner = Owner::Update {
        manager: field_manager(q, headers),
        subresource: sub.to_string(),
    };
    let body_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parse_body = || {
        // kubectl's typed commands send protobuf, which this fake does not decode.
        if body_type.contains("protobuf") {
            return Err(ApiError::unsupported_media(body_type));
        }
        serde_json::from_slice::<Value>(&body)
            .map_err(|e| ApiError::bad_request(format!("error decoding the body: {e}")))
    };
    let result: Result<(StatusCode, Value), ApiError> = match rec.verb.as_str() {
        "watch" | "list" => {
            let labels = Selector::parse(q.get("labelSelector").map(String::as_str), false);
            let mut fs = q.get("fieldSelector").cloned().unwrap_or_default();
            if let Some(n) = &t.name {
                fs = format!("metadata.name={n},{fs}");
            }
            let fields = Selector::parse(Some(&fs), true);
            let (labels, fields) = match (labels, fields) {
                (Ok(l), Ok(f)) => (l, f),
                (Err(e), _) | (_, Err(e)) => return e.into_response(),
            };
            if let Err(e) = crate::fieldsel::check(&shared.lock_store(), t.ty, &fields) {
                return e.into_response();
            }
            if rec.verb == "watch" {
                let spec = WatchSpec {
                    ty: t.ty,
                    ns: t.ns.clone(),
                    labels,
                    fields,
                    from: q.get("resourceVersion").cloned().unwrap_or_default(),
                    timeout: q
                        .get("timeoutSeconds")
                        .and_then(|s| s.parse().ok())
                        .map(Duration::from_secs),
                    bookmarks: flag(q, "allowWatchBookmarks"),
                };
                return watch::respond(shared.clone(), spec);
            }
            let store = shared.lock_store();
            let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
            let cont = q.get("continue").map(String::as_str);
            crate::paging::list(&store, t.ty, t.ns.as_deref(), &labels, &fields, limit, cont)
                .map(|page| (StatusCode::OK, page.to_list(&rt)))
        }
        "get" => {
            let store = shared.lock_store();
            store
                .get(t.ty, &ns, t.name.as_deref().unwrap_or(""))
                .map(|o| (StatusCode::OK, o))
        }
        "create" => parse_body().and_then(|b| {
            let mut store = shared.lock_store();
            let check =
                |s: &_, old: Option<&Value>, new: Option<&Value>| gate.admit(s, "CREATE", old, new);
            store
                .create_checked(t.ty, &ns, b, &owner, &check)
                .map(|o| (StatusCode::CREATED, o))
        }),
        "update" => parse_body().and_then(|b| {
            let mut store = shared.lock_store();
            let name = t.name.as_deref().unwrap_or("");
            let check =
                |s: &_, old: Option<&Value>, new: Option<&Value>| gate.admit(s, "UPDATE", old, new);
            store
                .update_checked(t.ty, &ns, name, b, part, &owner, &check)
                .map(|o| (StatusCode::OK, o))
        }),
        "patch" => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            rec.patch_type = Some(ct.clone());
            let name = t.name.as_deref().unwrap_or("");
            let w = Write {
                ty: t.ty,
                ns: &ns,
                name,
                part,
                owner,
            };
            patch(shared, &gate, w, &ct, &body, q)
        }
        _ => {
            let mut store = shared.lock_store();
            let name = t.name.as_deref().unwrap_or("");
            let check =
                |s: &_, old: Option<&Value>, new: Option<&Value>| gate.admit(s, "DELETE", old, new);
            let policy = q
                .get("propagationPolicy")
                .cloned()
                .or_else(|| body_policy(&body));
            let policy = crate::gc::Propagation::parse(policy.as_deref());
            policy
                .and_then(|p| store.delete_with(t.ty, &ns, name, p, &check))
                .map(|o| {
                    let details = json!({"name": name, "group": rt.group, "kind": rt.plural,
                    "uid": o["metadata"]["uid"]});
                    let s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "details": details});
                    (StatusCode::OK, s)
                })
        }
    };
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => e.into_response(),
    }
}

/// `propagationPolicy` of a DeleteOptions body, if any.
fn body_policy(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("propagationPolicy")?.as_str().map(str::to_string)
}

/// The object a patch writes, and by whom.
struct Write<'a> {
    ty: usize,
    ns: &'a str,
    name: &'a str,
    part: Part,
    owner: Owner,
}

fn patch(
    shared: &Shared,
    gate: &Gate<'_>,
    w: Write<'_>,
    content_type: &str,
    body: &[u8],
    q: &HashMap<String, String>,
) -> Result<(StatusCode, Value), ApiError> {
    let Write {
        ty,
        ns,
        name,
        part,
        mut owner,
    } = w;
    let bad =
        |e: &dyn std::fmt::Display| ApiError::bad_request(format!("error decoding patch: {e}"));
    let mut store = shared.lock_store();
    let t = store.types[ty].clone();
    let builtin = t.group.is_empty() || t.group.ends_with(".k8s.io");
    let mut doc = match (store.get(ty, ns, name), content_type) {
        (Ok(d), _) => d,
        (Err(_), "application/apply-patch+yaml") if part == Part::Main => Value::Null,
        (Err(e), _) => return Err(e),
    };
    match content_type {
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| bad(&e))?;
            // The real server answers a failed operation (a `test` included) with 422.
            json_patch::patch(&mut doc, &p).map_err(|e| ApiError::invalid(e.to_string()))?;
        }
        "application/merge-patch+json" => {
            let p: Value = serde_json::from_slice(body).map_err(|e| bad(&e))?;
            json_patch::merge(&mut doc, &p);
        }
        "application/strategic-merge-patch+json" if builtin => {
            let p: Value = serde_json::from_slice(body).map_err(|e| bad(&e))?;
            merge::merge(&mut doc, &p, &store.shapes(ty), Mode::Strategic);
        }
        "application/apply-patch+yaml" => {
            if q.get("fieldManager").is_none_or(String::is_empty) {
                return Err(ApiError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
                ));
            }
            let p: Value = serde_yaml::from_slice(body).map_err(|e| bad(&e))?;
            let av = p.get("apiVersion").and_then(Value::as_str);
            let kind = p.get("kind").and_then(Value::as_str);
            if av != Some(t.api_version().as_str()) || kind != Some(t.kind.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "apply patch must name apiVersion {} and kind {} (got {av:?}, {kind:?})",
                    t.api_version(),
                    t.kind
                )));
            }
            let manager = q.get("fieldManager").cloned().unwrap_or_default();
            let has_status = t.has_status();
            let keeps = move |p: &crate::fieldset::FieldPath| {
                let status = p.first().is_some_and(|f| f == "f:status");
                match part {
                    Part::Status => status,
                    _ => !(has_status && status),
                }
            };
            let sub = if part == Part::Status { "status" } else { "" };
            let api_version = t.api_version();
            let req = managed::Apply {
                manager: &manager,
                subresource: sub,
                force: flag(q, "force"),
                api_version: &api_version,
                keeps: &keeps,
            };
            if doc.is_null() {
                // An apply that creates needs `create` too, and is admitted as a CREATE.
                drop(store);
                gate.authorize(shared, "create", name)?;
                let mut store = shared.lock_store();
                let check = |s: &_, old: Option<&Value>, new: Option<&Value>| {
                    gate.admit(s, "CREATE", old, new)
                };
                let live = json!({"metadata": {"name": name}});
                let fresh = managed::apply(&live, &p, &req, &store.shapes(ty))?;
                return store
                    .create_checked(ty, ns, fresh, &Owner::Applied, &check)
                    .map(|o| (StatusCode::CREATED, o));
            }
            doc = managed::apply(&doc, &p, &req, &store.shapes(ty))?;
            owner = Owner::Applied;
        }
        other => return Err(ApiError::unsupported_media(other)),
    }
    let check = |s: &_, old: Option<&Value>, new: Option<&Value>| gate.admit(s, "UPDATE", old, new);
    store
        .update_checked(ty, ns, name, doc, part, &owner, &check)
        .map(|o| (StatusCode::OK, o))
}
