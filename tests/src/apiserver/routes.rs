//! The REST paths: which kind, namespace, object and subresource a path names, and the answer to
//! every request but a watch's stream (LIST with selectors and pagination, GET, POST, PUT, PATCH,
//! DELETE, the status subresource).

use std::convert::Infallible;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::query::{Query, Selectors};
use super::store::{key_of, Key, Resource, StoreError};
use super::watch::{status_object, WatchSpec};
use super::{RecordedWrite, State};

pub(super) type Body = BoxBody<Bytes, Infallible>;

/// A request answered with a failure: the response to send.
type Refused = Box<Response<Body>>;

/// A request as the routes see it.
pub(super) struct Call<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub auth: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

pub(super) enum Answer {
    Done(Response<Body>),
    Watch(WatchSpec),
}

/// What a path names.
struct Target {
    res: &'static Resource,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let make = |res, namespace: Option<&str>, tail: &[&str]| -> Option<Target> {
        let (name, sub) = match tail {
            [] => (None, None),
            [name] => (Some(name.to_string()), None),
            [name, sub] => (Some(name.to_string()), Some(sub.to_string())),
            _ => return None,
        };
        Some(Target {
            res,
            version: version.to_string(),
            namespace: namespace.map(str::to_string),
            name,
            sub,
        })
    };
    if let ["namespaces", ns, plural, tail @ ..] = rest {
        if let Some(res) = Resource::by_path(group, version, plural).filter(|r| r.namespaced) {
            return make(res, Some(ns), tail);
        }
    }
    let [plural, tail @ ..] = rest else {
        return None;
    };
    let res = Resource::by_path(group, version, plural)?;
    if res.namespaced && !tail.is_empty() {
        return None;
    }
    make(res, None, tail)
}

pub(super) fn status(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    respond(code, &status_object(code.as_u16(), reason, &message))
}

pub(super) fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn bad_request(message: impl Into<String>) -> Response<Body> {
    status(StatusCode::BAD_REQUEST, "BadRequest", message.into())
}

fn store_error(res: &Resource, name: &str, e: StoreError) -> Response<Body> {
    let plural = res.plural;
    match e {
        StoreError::NotFound => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{plural} \"{name}\" not found"),
        ),
        StoreError::AlreadyExists => status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{plural} \"{name}\" already exists"),
        ),
        StoreError::Conflict => conflict(plural, name),
        StoreError::Invalid(m) => status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", m),
        e @ StoreError::Expired { .. } => status(StatusCode::GONE, "Expired", e.to_string()),
    }
}

fn conflict(plural: &str, name: &str) -> Response<Body> {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        format!("Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
    )
}

pub(super) fn answer(st: &mut State, call: &Call<'_>) -> Answer {
    answer_inner(st, call).unwrap_or_else(|r| Answer::Done(*r))
}

fn answer_inner(st: &mut State, call: &Call<'_>) -> Result<Answer, Refused> {
    if let Some(token) = &st.token {
        if call.auth != Some(format!("Bearer {token}").as_str()) {
            return Err(Box::new(status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized".into(),
            )));
        }
    }
    if !st.failures.is_empty() {
        let code = st.failures.remove(0);
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(Box::new(status(
            code,
            "InternalError",
            format!("injected {}", code.as_u16()),
        )));
    }
    let Some(t) = target(call.path).filter(|t| !st.unserved.iter().any(|p| p == t.res.plural))
    else {
        return Err(Box::new(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "the server could not find the requested resource {}",
                call.path
            ),
        )));
    };
    let Some(name) = t.name.clone() else {
        return collection(st, call, t);
    };
    let key: Key = (
        t.res.plural,
        t.namespace.clone().unwrap_or_default(),
        name.clone(),
    );
    let done = |r| Ok(Answer::Done(r));
    let present = |o: &Value| t.res.present(&t.version, o);
    let not_found = || store_error(t.res, &name, StoreError::NotFound);
    let status_sub = match t.sub.as_deref() {
        None => false,
        Some("status") if t.res.status => true,
        Some(_) => {
            if *call.method == Method::GET {
                return Err(Box::new(not_found()));
            }
            return Err(Box::new(not_allowed(call.method)));
        }
    };
    match *call.method {
        Method::GET => match st.store.get(&key) {
            Some(o) => done(respond(StatusCode::OK, &present(o))),
            None => Err(Box::new(not_found())),
        },
        Method::PUT if status_sub && t.res.plural == "pods" => {
            done(put_pod_status(st, call, t.res, key))
        }
        Method::PUT => {
            let mut sent = json_body(call.body)?;
            if sent["metadata"]["name"].as_str() != Some(name.as_str()) {
                return Err(Box::new(bad_request(
                    "metadata.name does not match the path",
                )));
            }
            if let Some(ns) = &t.namespace {
                sent["metadata"]["namespace"] = json!(ns);
            }
            let result = if status_sub {
                let stored = st.store.get(&key).ok_or_else(not_found)?.clone();
                let mut new = stored;
                new["metadata"]["resourceVersion"] = sent["metadata"]["resourceVersion"].clone();
                new["status"] = sent["status"].clone();
                st.store.replace(t.res, new, false)
            } else {
                st.store.replace(t.res, sent, t.res.status)
            };
            match result {
                Ok(o) => done(respond(StatusCode::OK, &present(&o))),
                Err(e) => Err(Box::new(store_error(t.res, &name, e))),
            }
        }
        Method::PATCH => {
            if call.content_type != Some("application/merge-patch+json") {
                return Err(Box::new(status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!(
                        "the stand-in takes only merge patches, not {:?}",
                        call.content_type
                    ),
                )));
            }
            let patch = json_body(call.body)?;
            let stored = st.store.get(&key).ok_or_else(not_found)?.clone();
            let mut new = stored.clone();
            merge_patch(&mut new, &patch);
            // The patch may carry a resourceVersion as a precondition; the name stays.
            new["metadata"]["name"] = json!(name);
            if let Some(ns) = &t.namespace {
                new["metadata"]["namespace"] = json!(ns);
            }
            if patch["metadata"]["resourceVersion"].is_null() {
                new["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
            }
            let result = if status_sub {
                let mut only_status = stored;
                only_status["metadata"]["resourceVersion"] =
                    new["metadata"]["resourceVersion"].clone();
                only_status["status"] = new["status"].clone();
                st.store.replace(t.res, only_status, false)
            } else {
                st.store.replace(t.res, new, t.res.status)
            };
            match result {
                Ok(o) => done(respond(StatusCode::OK, &present(&o))),
                Err(e) => Err(Box::new(store_error(t.res, &name, e))),
            }
        }
        Method::DELETE if !status_sub => match st.store.delete(key) {
            Ok(o) => done(respond(StatusCode::OK, &present(&o))),
            Err(e) => Err(Box::new(store_error(t.res, &name, e))),
        },
        _ => Err(Box::new(not_allowed(call.method))),
    }
}

fn not_allowed(method: &Method) -> Response<Body> {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{method} is not supported here"),
    )
}

fn json_body(body: &[u8]) -> Result<Value, Refused> {
    serde_json::from_slice::<Value>(body).map_err(|_| Box::new(bad_request("the body is not JSON")))
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// PUT pods/status as the CNI binary uses it: the sent resourceVersion must be the stored one,
/// metadata.annotations and status are taken, the spec stays; injected conflicts first move the
/// stored pod on as another writer would.
fn put_pod_status(st: &mut State, call: &Call<'_>, res: &Resource, key: Key) -> Response<Body> {
    let name = key.2.clone();
    let Ok(sent) = serde_json::from_slice::<Value>(call.body) else {
        return bad_request("the body is not JSON");
    };
    if sent["metadata"]["name"].as_str() != Some(name.as_str()) {
        return bad_request("metadata.name does not match the path");
    }
    let Some(stored) = st.store.get(&key).cloned() else {
        return store_error(res, &name, StoreError::NotFound);
    };
    if st.conflicts > 0 {
        st.conflicts -= 1;
        st.store.commit(key, Some(stored));
        return conflict("pods", &name);
    }
    if sent["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
        return conflict("pods", &name);
    }
    let mut new = stored;
    new["metadata"]["annotations"] = sent["metadata"]["annotations"].clone();
    new["status"] = sent["status"].clone();
    let out = st
        .store
        .commit(key.clone(), Some(new))
        .unwrap_or(Value::Null);
    st.writes.push(RecordedWrite {
        namespace: key.1,
        name,
        body: sent,
    });
    respond(StatusCode::OK, &out)
}

fn collection(st: &mut State, call: &Call<'_>, t: Target) -> Result<Answer, Refused> {
    let query = Query::parse(call.query);
    match *call.method {
        Method::GET => {
            let selectors = Selectors::parse(
                query.label_selector.as_deref(),
                query.field_selector.as_deref(),
            )
            .map_err(bad_request)?;
            if let Some(rv) = query.resource_version.as_deref() {
                if !rv.is_empty() && rv.parse::<u64>().is_err() {
                    return Err(Box::new(bad_request(format!(
                        "invalid resource version {rv:?}"
                    ))));
                }
            }
            if query.watch {
                st.watch_requests += 1;
                return Ok(Answer::Watch(WatchSpec {
                    res: t.res,
                    version: t.version,
                    namespace: t.namespace,
                    selectors,
                    query,
                }));
            }
            st.list_requests += 1;
            Ok(Answer::Done(list(st, &t, &query, &selectors)?))
        }
        Method::POST => {
            let mut sent = json_body(call.body)?;
            match (&t.namespace, t.res.namespaced) {
                (Some(ns), _) => sent["metadata"]["namespace"] = json!(ns),
                (None, true) => return Err(Box::new(not_allowed(call.method))),
                (None, false) => {}
            }
            if sent["metadata"]["name"].as_str().unwrap_or("").is_empty() {
                if let Some(prefix) = sent["metadata"]["generateName"].as_str() {
                    let suffix = format!("{:05x}", st.store.revision() + 1);
                    sent["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
                }
            }
            sent["apiVersion"] = json!(t.res.api_version(&t.version));
            sent["kind"] = json!(t.res.kind);
            let name = sent["metadata"]["name"].as_str().unwrap_or("").to_string();
            match st.store.create(t.res, sent) {
                Ok(o) => Ok(Answer::Done(respond(
                    StatusCode::CREATED,
                    &t.res.present(&t.version, &o),
                ))),
                Err(e) => Err(Box::new(store_error(t.res, &name, e))),
            }
        }
        _ => Err(Box::new(not_allowed(call.method))),
    }
}

/// Where the next page starts: the revision of the first page and the last key served.
fn encode_continue(rv: u64, key: &Key) -> String {
    let token = json!({"rv": rv, "namespace": key.1, "name": key.2}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
}

fn decode_continue(token: &str) -> Option<(u64, String, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    Some((
        v["rv"].as_u64()?,
        v["namespace"].as_str()?.to_string(),
        v["name"].as_str()?.to_string(),
    ))
}

/// A LIST: every page of one list is the snapshot at the first page's revision (410 once that is
/// compacted, as an expired continue token); `resourceVersionMatch=Exact` lists at the revision
/// asked for; anything else lists now (NotOlderThan any revision is satisfied by now).
fn list(
    st: &State,
    t: &Target,
    query: &Query,
    selectors: &Selectors,
) -> Result<Response<Body>, Refused> {
    let (at, after) = match &query.continue_token {
        Some(token) => {
            let (rv, ns, name) =
                decode_continue(token).ok_or_else(|| bad_request("invalid continue token"))?;
            (rv, Some((ns, name)))
        }
        None => {
            let exact = query.resource_version_match.as_deref() == Some("Exact");
            let asked = query
                .resource_version
                .as_deref()
                .and_then(|r| r.parse().ok());
            match asked {
                Some(rv) if exact && rv > 0 => (rv, None),
                _ => (st.store.revision(), None),
            }
        }
    };
    let snapshot = st
        .store
        .snapshot(t.res.plural, t.namespace.as_deref(), at)
        .map_err(|e| {
            let message = if query.continue_token.is_some() {
                format!("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. ({e})")
            } else {
                e.to_string()
            };
            status(StatusCode::GONE, "Expired", message)
        })?;
    let limit = query.limit.unwrap_or(usize::MAX);
    let mut matching = snapshot
        .iter()
        .filter(|(k, _)| {
            after
                .as_ref()
                .is_none_or(|(ns, name)| (&k.1, &k.2) > (ns, name))
        })
        .filter(|(_, o)| selectors.matches(o));
    let mut items = Vec::new();
    let mut last: Option<&Key> = None;
    for (k, o) in matching.by_ref().take(limit) {
        items.push(t.res.present(&t.version, o));
        last = Some(k);
    }
    let more = matching.next().is_some();
    let mut metadata = json!({"resourceVersion": at.to_string()});
    if let (true, Some(last)) = (more, last) {
        metadata["continue"] = json!(encode_continue(at, last));
    }
    let body = json!({
        "kind": format!("{}List", t.res.kind),
        "apiVersion": t.res.api_version(&t.version),
        "metadata": metadata,
        "items": items,
    });
    Ok(respond(StatusCode::OK, &body))
}

/// The key an object of a served kind would be stored at.
pub(super) fn key_for(object: &Value) -> Result<(&'static Resource, Key), String> {
    let res = Resource::of(object).ok_or_else(|| {
        format!(
            "the stand-in serves no {} {}",
            object["apiVersion"], object["kind"]
        )
    })?;
    let key = key_of(res, object).map_err(|e| e.to_string())?;
    Ok((res, key))
}
