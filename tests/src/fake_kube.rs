//! An in-process fake Kubernetes API server for the K3s mode of the mapper
//! (`mapper-kube`), speaking the REST + watch protocol the way kube-rs talks
//! to a real server, over plain HTTP on `127.0.0.1:0`.
//!
//! HTTP, not HTTPS: what the tests check is the API protocol (lists, watches,
//! patches, preconditions, subresources); TLS is kube-rs' and hyper-rustls'
//! own path and would only add a CA + leaf certificate pair (a self-signed
//! leaf is rejected) and a certificate generator dependency.
//!
//! # What it reproduces
//! - Resources: `devices`, `devicemodels`, `devicestatuses`
//!   (`/apis/devices.kubeedge.io/v1beta1`) and core/v1 `events` (`/api/v1`),
//!   cluster-wide (`/apis/G/V/{plural}`) and per namespace
//!   (`/apis/G/V/namespaces/{ns}/{plural}[/{name}[/status]]`).
//! - One global `resourceVersion` counter bumped on every change (as etcd's
//!   revision); `uid`, `creationTimestamp`, `generation` (bumped when anything
//!   outside `metadata`/`status` changes); a no-op write changes nothing and
//!   sends no watch event.
//! - LIST with `metadata.resourceVersion`, `labelSelector` (`k=v`, `k==v`,
//!   `k!=v`, `k`, `!k`), `fieldSelector` on `metadata.name` / `metadata.namespace`
//!   only (any other field gives 400 BadRequest, as a real server does for a CRD's
//!   `spec.nodeName`); `limit` is ignored (everything in one page, no `continue`).
//! - WATCH (`?watch=true`): newline-delimited `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":…}`,
//!   replayed from `resourceVersion=N` out of a bounded history
//!   ([`HISTORY_LIMIT`] events); `N` older than the history gives what a real
//!   watch cache gives: HTTP 200 with one `ERROR` event carrying a `Status`
//!   with code 410 / reason `Expired`, then the end of the stream. No (or `0`)
//!   `resourceVersion` starts with synthetic `ADDED`s of the current objects.
//!   `allowWatchBookmarks=true` gives a `BOOKMARK` with the current
//!   resourceVersion after the replay; `timeoutSeconds` ends the stream.
//!   [`FakeKube::truncate_history`] drops the history and closes the open
//!   watches (as an API server restart with compaction would), so the next
//!   resume gets the 410.
//! - GET, POST (create; `generateName`; 409 AlreadyExists), PUT (replace),
//!   DELETE (with background garbage collection of objects whose
//!   `ownerReferences` name the deleted uid), PATCH as
//!   `application/merge-patch+json` (RFC 7386) and `application/apply-patch+yaml`
//!   (server-side apply, see below). `json-patch+json` and
//!   `strategic-merge-patch+json` get 415 (kube-rs only sends them when asked;
//!   strategic merge is refused for custom resources by real servers too).
//! - `metadata.resourceVersion` in a PUT or patch body is a precondition: a
//!   mismatch gives 409 Conflict (reason `Conflict`).
//! - The `status` subresource of devices and devicestatuses when started with
//!   `status_subresource = true`: writes to the main resource ignore `status`,
//!   writes to `/status` ignore everything but `status`, create drops `status`.
//!   With `false`, `/status` is 404 (like KubeEdge's own CRDs, which declare none).
//! - Server-side apply, "managedFields-lite": ownership is tracked per field
//!   manager at depth two (`spec.<key>`, `status.<key>`, `metadata.labels.<key>`,
//!   `metadata.annotations.<key>`); lists are atomic, like `status.twins` in
//!   KubeEdge's CRDs (no list-map markers). An apply sets its fields, removes
//!   fields it applied before and no longer applies (unless another manager
//!   owns them), and conflicts (409) on fields another manager owns with a
//!   different value unless `force=true`. Merge patches / PUT / create with
//!   `fieldManager` record `Update` ownership of the keys they touch (taking
//!   them from others without conflict). Rendered into `metadata.managedFields`
//!   (FieldsV1) so tests can see who owns what.
//!
//! - Authentication and RBAC: bearer tokens registered by the test
//!   ([`FakeKube::add_token`], [`FakeKube::add_service_account_token`]) map to
//!   users; their requests are authorized by the Roles, ClusterRoles and
//!   bindings fed with [`FakeKube::feed`] ([`crate::rbac`]: verbs as the API
//!   server derives them, subresources, `resourceNames`, wildcards). A denied
//!   request gets 403 with a `Status` (reason `Forbidden`, a real server's
//!   message and details) and is recorded ([`FakeKube::forbidden`]); every
//!   authenticated request's attributes are recorded ([`FakeKube::accesses`]).
//!   An unknown token gets 401. Requests without a token are served as an
//!   admin (no authorization), as before.
//! - Any other object ([`FakeKube::feed`]: CRDs, Namespaces, ServiceAccounts,
//!   ConfigMaps, DaemonSets, ...) is kept in a generic store
//!   ([`FakeKube::stored`]), not served over HTTP.
//! - Besides TCP, the same server on a Unix socket ([`FakeKube::serve_unix`]),
//!   for clients in a network namespace reached through a forwarder.
//!
//! # What it does not
//! No schema validation or defaulting (so a Device with garbage in it can be
//! stored, as it could with a schema-less or skewed CRD), no admission,
//! finalizers, pagination, `sendInitialEvents`, deep (nested-map) SSA
//! ownership, list-map merge keys, json-patch, or protobuf; no REST for the
//! kinds of the generic store; RBAC objects are fed, not written over HTTP.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::rbac::{self, Attributes, Rbac, UserInfo};

/// Watch events kept for resuming watches.
pub const HISTORY_LIMIT: usize = 1000;

const KUBEEDGE_GV: &str = "devices.kubeedge.io/v1beta1";

#[derive(Debug, Clone, Copy)]
struct ResourceInfo {
    plural: &'static str,
    group_version: &'static str,
    kind: &'static str,
    /// Devices and DeviceStatuses have a status (subresource when configured).
    has_status: bool,
}

const RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        plural: "devices",
        group_version: KUBEEDGE_GV,
        kind: "Device",
        has_status: true,
    },
    ResourceInfo {
        plural: "devicemodels",
        group_version: KUBEEDGE_GV,
        kind: "DeviceModel",
        has_status: false,
    },
    ResourceInfo {
        plural: "devicestatuses",
        group_version: KUBEEDGE_GV,
        kind: "DeviceStatus",
        has_status: true,
    },
    ResourceInfo {
        plural: "events",
        group_version: "v1",
        kind: "Event",
        has_status: false,
    },
];

/// A resource by plural, kind or singular name (case-insensitive).
fn resource(name: &str) -> Option<ResourceInfo> {
    let n = name.to_ascii_lowercase();
    RESOURCES
        .iter()
        .find(|r| r.plural == n || r.kind.to_ascii_lowercase() == n)
        .copied()
}

type Key = (&'static str, String, String);

#[derive(Debug)]
struct Record {
    rv: u64,
    plural: &'static str,
    namespace: String,
    type_: &'static str,
    object: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ManagerKey {
    manager: String,
    operation: &'static str,
    subresource: Option<&'static str>,
}

#[derive(Debug)]
struct StateInner {
    rv: u64,
    uid_seq: u64,
    objects: BTreeMap<Key, Value>,
    managed: BTreeMap<Key, BTreeMap<ManagerKey, BTreeSet<String>>>,
    history: VecDeque<Arc<Record>>,
    /// A watch from a resourceVersion below this one gets 410.
    oldest_rv: u64,
    watch_epoch: CancellationToken,
    requests: Vec<String>,
}

/// One authenticated request, as the authorizer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The user's name (`system:serviceaccount:<ns>:<name>` for a service account).
    pub user: String,
    /// What was asked.
    pub attributes: Attributes,
    /// Whether RBAC allowed it.
    pub allowed: bool,
}

/// A request refused with 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// `METHOD /path`.
    pub request: String,
    /// The user's name.
    pub user: String,
    /// What was asked.
    pub attributes: Attributes,
    /// The `Status.message` sent (a real server's wording).
    pub message: String,
}

/// Authentication and authorization state.
#[derive(Debug, Default)]
struct AuthState {
    tokens: BTreeMap<String, UserInfo>,
    rbac: Rbac,
    accesses: Vec<Access>,
    denials: Vec<Denial>,
}

/// Objects of kinds the fake does not serve, by (apiVersion, kind, namespace, name).
type OtherKey = (String, String, String, String);

#[derive(Debug)]
struct Inner {
    state: Mutex<StateInner>,
    auth: Mutex<AuthState>,
    others: Mutex<BTreeMap<OtherKey, Value>>,
    status_subresource: bool,
    feed: broadcast::Sender<Arc<Record>>,
    changed: watch::Sender<u64>,
}

/// The fake API server; stops when dropped.
#[derive(Debug)]
pub struct FakeKube {
    inner: Arc<Inner>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    /// Servers on Unix sockets ([`FakeKube::serve_unix`]).
    unix_servers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.server.abort();
        if let Ok(servers) = self.unix_servers.get_mut() {
            for s in servers.drain(..) {
                s.abort();
            }
        }
        self.inner.lock().watch_epoch.cancel();
    }
}

/// An API error: HTTP code, reason and message, sent as a `Status` object.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }
    fn not_found(r: &ResourceInfo, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{}.{} \"{name}\" not found", r.plural, group(r)),
        )
    }
    fn status(&self) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            self.status().to_string(),
        )
            .into_response()
    }
}

fn group(r: &ResourceInfo) -> &'static str {
    r.group_version
        .split_once('/')
        .map(|(g, _)| g)
        .unwrap_or("")
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The depth-two field paths of a body (see the module docs).
fn field_paths(body: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(obj) = body.as_object() else {
        return out;
    };
    for (k, v) in obj {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                for sec in ["labels", "annotations"] {
                    if let Some(m) = v.get(sec).and_then(Value::as_object) {
                        out.extend(m.keys().map(|l| format!("metadata.{sec}.{l}")));
                    }
                }
            }
            _ => match v.as_object() {
                Some(m) if !m.is_empty() => out.extend(m.keys().map(|s| format!("{k}.{s}"))),
                _ => {
                    out.insert(k.clone());
                }
            },
        }
    }
    out
}

fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    match path.strip_prefix("metadata.") {
        Some(rest) => {
            let (sec, key) = rest.split_once('.')?;
            v.get("metadata")?.get(sec)?.get(key)
        }
        None => match path.split_once('.') {
            Some((a, b)) => v.get(a)?.get(b),
            None => v.get(path),
        },
    }
}

fn set_path(v: &mut Value, path: &str, value: Option<Value>) {
    let (parent, key): (Vec<&str>, &str) = match path.strip_prefix("metadata.") {
        Some(rest) => match rest.split_once('.') {
            Some((sec, key)) => (vec!["metadata", sec], key),
            None => return,
        },
        None => match path.split_once('.') {
            Some((a, b)) => (vec![a], b),
            None => (vec![], path),
        },
    };
    let mut cur = v;
    for p in parent {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m
            .entry(p.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Value::Object(m) = cur {
        match value {
            Some(val) => {
                m.insert(key.to_owned(), val);
            }
            None => {
                m.remove(key);
            }
        }
    }
}

fn fields_v1(paths: &BTreeSet<String>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for part in p.split('.') {
            let next = cur
                .entry(format!("f:{part}"))
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(m) = next else { break };
            cur = m;
        }
    }
    Value::Object(root)
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Label selector matching: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated.
fn labels_match(obj: &Value, selector: &str) -> bool {
    let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    selector
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                label(k.trim()) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                label(k.trim()) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                label(k.trim()).is_none()
            } else {
                label(term).is_some()
            }
        })
}

/// Field selector on `metadata.name` / `metadata.namespace`; others are refused.
fn fields_match(obj: &Value, selector: &str) -> Result<bool, ApiError> {
    let mut ok = true;
    for term in selector.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (field, value, neg) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, true)
        } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (f, v, false)
        } else {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("invalid field selector term {term:?}"),
            ));
        };
        let actual = match field.trim() {
            "metadata.name" => obj.pointer("/metadata/name"),
            "metadata.namespace" => obj.pointer("/metadata/namespace"),
            other => {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!("field label not supported: {other}"),
                ));
            }
        }
        .and_then(Value::as_str);
        ok &= (actual == Some(value.trim())) != neg;
    }
    Ok(ok)
}

/// A parsed request path.
#[derive(Debug)]
struct Target {
    res: ResourceInfo,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest): (String, &[&str]) = match segs.as_slice() {
        ["api", v, rest @ ..] => ((*v).to_owned(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, status) = match rest {
        [p] => (*p, None, false),
        [p, n] => (*p, Some((*n).to_owned()), false),
        [p, n, "status"] => (*p, Some((*n).to_owned()), true),
        _ => return None,
    };
    let res = RESOURCES
        .iter()
        .find(|r| r.plural == plural && r.group_version == gv)?;
    if name.is_some() && namespace.is_none() {
        return None;
    }
    Some(Target {
        res: *res,
        namespace,
        name,
        status,
    })
}

/// Who applies (server-side apply) and how.
#[derive(Debug, Clone, Copy)]
pub struct ApplyAs<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// To the `/status` subresource.
    pub status: bool,
    /// `force=true`: take over conflicting fields.
    pub force: bool,
}

/// How a write treats the status.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    /// The main resource.
    Main,
    /// The `/status` subresource.
    Status,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, StateInner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subresource_on(&self, r: &ResourceInfo) -> bool {
        self.status_subresource && r.has_status
    }

    /// Records a change: bumps the RV, stores the history, feeds watchers.
    fn commit(&self, st: &mut StateInner, key: Key, type_: &'static str, mut obj: Value) -> Value {
        st.rv += 1;
        let rv = st.rv;
        let api_version = obj.get("apiVersion").cloned().unwrap_or(Value::Null);
        let managed: Vec<Value> = st
            .managed
            .get(&key)
            .map(|mgrs| {
                mgrs.iter()
                    .filter(|(_, p)| !p.is_empty())
                    .map(|(k, p)| {
                        let mut e = json!({"manager": k.manager, "operation": k.operation,
                            "apiVersion": api_version, "fieldsType": "FieldsV1", "fieldsV1": fields_v1(p)});
                        if let Some(s) = k.subresource {
                            e["subresource"] = Value::String(s.into());
                        }
                        e
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(m) = obj.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), Value::String(rv.to_string()));
            if managed.is_empty() || type_ == "DELETED" {
                m.remove("managedFields");
            } else {
                m.insert("managedFields".into(), Value::Array(managed));
            }
        }
        let rec = Arc::new(Record {
            rv,
            plural: key.0,
            namespace: key.1.clone(),
            type_,
            object: obj.clone(),
        });
        if type_ == "DELETED" {
            st.objects.remove(&key);
            st.managed.remove(&key);
        } else {
            st.objects.insert(key, obj.clone());
        }
        st.history.push_back(rec.clone());
        while st.history.len() > HISTORY_LIMIT {
            if let Some(old) = st.history.pop_front() {
                st.oldest_rv = old.rv;
            }
        }
        let _ = self.feed.send(rec);
        self.changed.send_replace(rv);
        obj
    }

    fn record_update(
        st: &mut StateInner,
        key: &Key,
        manager: Option<&str>,
        part: Part,
        touched: BTreeSet<String>,
    ) {
        let Some(manager) = manager else { return };
        let mgrs = st.managed.entry(key.clone()).or_default();
        for (k, paths) in mgrs.iter_mut() {
            if k.manager != manager {
                paths.retain(|p| !touched.contains(p));
            }
        }
        let mk = ManagerKey {
            manager: manager.to_owned(),
            operation: "Update",
            subresource: (part == Part::Status).then_some("status"),
        };
        mgrs.entry(mk).or_default().extend(touched);
    }

    fn create(
        &self,
        res: ResourceInfo,
        ns: &str,
        mut body: Value,
        manager: Option<&str>,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the body is not an object",
            ));
        }
        let mut st = self.lock();
        let name = match body.pointer("/metadata/name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => match body
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
            {
                Some(g) => format!("{g}{:05x}", st.rv + st.uid_seq + 1),
                None => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        "metadata.name: Required value",
                    ))
                }
            },
        };
        if let Some(body_ns) = body.pointer("/metadata/namespace").and_then(Value::as_str) {
            if body_ns != ns {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    "the namespace of the object does not match the namespace on the request",
                ));
            }
        }
        let key: Key = (res.plural, ns.to_owned(), name.clone());
        if st.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{}.{} \"{name}\" already exists", res.plural, group(&res)),
            ));
        }
        st.uid_seq += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", st.uid_seq);
        if self.subresource_on(&res) {
            if let Some(m) = body.as_object_mut() {
                m.remove("status");
            }
        }
        body["apiVersion"] = Value::String(res.group_version.into());
        body["kind"] = Value::String(res.kind.into());
        set_path(&mut body, "metadata.name", None);
        if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("name".into(), Value::String(name));
            m.insert("namespace".into(), Value::String(ns.into()));
            m.insert("uid".into(), Value::String(uid));
            m.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
            m.insert("generation".into(), json!(1));
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        Self::record_update(&mut st, &key, manager, Part::Main, field_paths(&body));
        Ok(self.commit(&mut st, key, "ADDED", body))
    }

    /// Stores `new` over `old` (both full objects) as a write to `part`, with
    /// the subresource rules, preconditions and no-op detection.
    fn update_with(
        &self,
        st: &mut StateInner,
        res: ResourceInfo,
        key: Key,
        old: &Value,
        mut new: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        if self.subresource_on(&res) {
            match part {
                Part::Main => match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                },
                Part::Status => {
                    let status = new.get("status").cloned();
                    new = old.clone();
                    match status {
                        Some(s) => new["status"] = s,
                        None => {
                            if let Some(m) = new.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
            }
        }
        // What the server owns.
        for k in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "generation",
            "managedFields",
        ] {
            let v = old.pointer(&format!("/metadata/{k}")).cloned();
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                match v {
                    Some(v) => m.insert(k.into(), v),
                    None => m.remove(k),
                };
            }
        }
        new["apiVersion"] = Value::String(res.group_version.into());
        new["kind"] = Value::String(res.kind.into());
        set_path(
            &mut new,
            "metadata.resourceVersion",
            old.pointer("/metadata/resourceVersion").cloned(),
        );
        if &new == old {
            return Ok(new);
        }
        let spec_of = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
                m.remove("status");
            }
            v
        };
        if spec_of(&new) != spec_of(old) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            set_path(&mut new, "metadata.generation", Some(json!(g + 1)));
        }
        Ok(self.commit(st, key, "MODIFIED", new))
    }

    fn existing(st: &StateInner, res: &ResourceInfo, key: &Key) -> Result<Value, ApiError> {
        st.objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, &key.2))
    }

    fn check_precondition(old: &Value, body: &Value, res: &ResourceInfo) -> Result<(), ApiError> {
        if let Some(want) = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            let have = old
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            if want != have {
                let name = old
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        res.plural,
                        group(res)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn status_part(&self, res: &ResourceInfo, status: bool) -> Result<Part, ApiError> {
        match (status, self.subresource_on(res)) {
            (false, _) => Ok(Part::Main),
            (true, true) => Ok(Part::Status),
            (true, false) => Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )),
        }
    }

    fn merge(
        &self,
        res: ResourceInfo,
        ns: &str,
        name: &str,
        status: bool,
        patch: &Value,
        manager: Option<&str>,
    ) -> Result<Value, ApiError> {
        let part = self.status_part(&res, status)?;
        let mut st = self.lock();
        let key: Key = (res.plural, ns.to_owned(), name.to_owned());
        let old = Self::existing(&st, &res, &key)?;
        Self::check_precondition(&old, patch, &res)?;
        let mut new = old.clone();
        merge_patch(&mut new, patch);
        let mut touched = field_paths(patch);
        touched.retain(|p| match part {
            Part::Status => p.starts_with("status"),
            Part::Main => !(self.subresource_on(&res) && p.starts_with("status")),
        });
        let deleted: BTreeSet<String> = touched
            .iter()
            .filter(|p| get_path(&new, p).is_none())
            .cloned()
            .collect();
        Self::record_update(
            &mut st,
            &key,
            manager,
            part,
            touched.difference(&deleted).cloned().collect(),
        );
        if let Some(mgrs) = st.managed.get_mut(&key) {
            for paths in mgrs.values_mut() {
                paths.retain(|p| !deleted.contains(p));
            }
        }
        self.update_with(&mut st, res, key, &old, new, part)
    }

    fn replace(
        &self,
        res: ResourceInfo,
        ns: &str,
        name: &str,
        status: bool,
        body: Value,
        manager: Option<&str>,
    ) -> Result<Value, ApiError> {
        let part = self.status_part(&res, status)?;
        let mut st = self.lock();
        let key: Key = (res.plural, ns.to_owned(), name.to_owned());
        let old = Self::existing(&st, &res, &key)?;
        Self::check_precondition(&old, &body, &res)?;
        Self::record_update(&mut st, &key, manager, part, field_paths(&body));
        self.update_with(&mut st, res, key, &old, body, part)
    }

    /// Server-side apply, managedFields-lite (see the module docs).
    fn apply(
        &self,
        res: ResourceInfo,
        ns: &str,
        name: &str,
        body: &Value,
        by: ApplyAs<'_>,
    ) -> Result<Value, ApiError> {
        let ApplyAs {
            manager,
            status,
            force,
        } = by;
        let part = self.status_part(&res, status)?;
        let exists =
            self.lock()
                .objects
                .contains_key(&(res.plural, ns.to_owned(), name.to_owned()));
        if !exists {
            if part == Part::Status {
                return Err(ApiError::not_found(&res, name));
            }
            let mut b = body.clone();
            set_path(&mut b, "metadata.name", None);
            b["metadata"]["name"] = Value::String(name.into());
            self.create(res, ns, b, None)?;
        }
        let mut st = self.lock();
        let key: Key = (res.plural, ns.to_owned(), name.to_owned());
        let old = Self::existing(&st, &res, &key)?;
        Self::check_precondition(&old, body, &res)?;
        let mut applied = field_paths(body);
        applied.retain(|p| match part {
            Part::Status => p.starts_with("status"),
            Part::Main => !(self.subresource_on(&res) && p.starts_with("status")),
        });
        let me = ManagerKey {
            manager: manager.to_owned(),
            operation: "Apply",
            subresource: (part == Part::Status).then_some("status"),
        };
        let mgrs = st.managed.entry(key.clone()).or_default();
        // Conflicts: fields another manager owns, with a different value.
        let mut conflicts = Vec::new();
        for p in &applied {
            for (k, paths) in mgrs.iter() {
                if k.manager != manager
                    && paths.contains(p)
                    && get_path(&old, p) != get_path(body, p)
                {
                    conflicts.push(format!("conflict with \"{}\": .{p}", k.manager));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflicts: {}",
                    conflicts.len(),
                    conflicts.join("; ")
                ),
            ));
        }
        for (k, paths) in mgrs.iter_mut() {
            if k.manager != manager {
                paths.retain(|p| !applied.contains(p));
            }
        }
        let before = mgrs.remove(&me).unwrap_or_default();
        let others: BTreeSet<String> = mgrs.values().flatten().cloned().collect();
        mgrs.insert(me, applied.clone());
        let mut new = old.clone();
        for p in before.difference(&applied) {
            if !others.contains(p) {
                set_path(&mut new, p, None);
            }
        }
        for p in &applied {
            set_path(&mut new, p, get_path(body, p).cloned());
        }
        self.update_with(&mut st, res, key, &old, new, part)
    }

    fn delete(&self, res: ResourceInfo, ns: &str, name: &str) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let key: Key = (res.plural, ns.to_owned(), name.to_owned());
        let old = Self::existing(&st, &res, &key)?;
        let uid = old
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let gone = self.commit(&mut st, key, "DELETED", old);
        // Background garbage collection of dependents.
        let dependents: Vec<(Key, Value)> = st
            .objects
            .iter()
            .filter(|(_, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid.as_str()))
                    })
            })
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        for (k, o) in dependents {
            self.commit(&mut st, k, "DELETED", o);
        }
        Ok(gone)
    }

    fn list(
        &self,
        res: ResourceInfo,
        ns: Option<&str>,
        q: &BTreeMap<String, String>,
    ) -> Result<(u64, Vec<Value>), ApiError> {
        let st = self.lock();
        let mut items = Vec::new();
        for ((plural, ons, _), obj) in &st.objects {
            if *plural != res.plural || ns.is_some_and(|n| n != ons) {
                continue;
            }
            if !Self::selected(obj, q)? {
                continue;
            }
            items.push(obj.clone());
        }
        Ok((st.rv, items))
    }

    fn selected(obj: &Value, q: &BTreeMap<String, String>) -> Result<bool, ApiError> {
        let labels = q.get("labelSelector").is_none_or(|s| labels_match(obj, s));
        let fields = match q.get("fieldSelector") {
            Some(s) => fields_match(obj, s)?,
            None => true,
        };
        Ok(labels && fields)
    }
}

fn watch_line(type_: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": type_, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

async fn watch(
    inner: Arc<Inner>,
    res: ResourceInfo,
    ns: Option<String>,
    q: BTreeMap<String, String>,
) -> Response {
    let from: Option<u64> = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(s) => match s.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                return ApiError::new(400, "BadRequest", format!("invalid resourceVersion {s:?}"))
                    .into_response()
            }
        },
    };
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let matches = {
        let ns = ns.clone();
        let q = q.clone();
        move |plural: &str, rns: &str, obj: &Value| {
            plural == res.plural
                && ns.as_deref().is_none_or(|n| n == rns)
                && Inner::selected(obj, &q).unwrap_or(false)
        }
    };
    if let Some(s) = q.get("fieldSelector") {
        if let Err(e) = fields_match(&json!({}), s) {
            return e.into_response();
        }
    }
    // Under the lock: the backlog and the subscription, so nothing falls between.
    let (backlog, mut feed, epoch, current) = {
        let st = inner.lock();
        let mut backlog = Vec::new();
        match from {
            Some(n) if n < st.oldest_rv => {
                let status = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {n} ({})", st.oldest_rv),
                )
                .status();
                backlog.push(watch_line("ERROR", &status));
                let body = Body::from_stream(futures::stream::iter(
                    backlog.into_iter().map(Ok::<_, Infallible>),
                ));
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response();
            }
            Some(n) => {
                for r in st.history.iter().filter(|r| r.rv > n) {
                    if matches(r.plural, &r.namespace, &r.object) {
                        backlog.push(watch_line(r.type_, &r.object));
                    }
                }
            }
            None => {
                for ((plural, rns, _), obj) in &st.objects {
                    if matches(plural, rns, obj) {
                        backlog.push(watch_line("ADDED", obj));
                    }
                }
            }
        }
        (
            backlog,
            inner.feed.subscribe(),
            st.watch_epoch.clone(),
            st.rv,
        )
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let kind = res.kind;
    let api_version = res.group_version;
    tokio::spawn(async move {
        for line in backlog {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if bookmarks {
            let bm = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": current.to_string()}});
            if tx.send(watch_line("BOOKMARK", &bm)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                // A cut (truncate_history) wins over events that follow it.
                biased;
                _ = epoch.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                r = feed.recv() => match r {
                    Ok(rec) => {
                        if matches(rec.plural, &rec.namespace, &rec.object) && tx.send(watch_line(rec.type_, &rec.object)).await.is_err() {
                            return;
                        }
                    }
                    // Lagged or closed: end the stream; the client resumes from its last RV.
                    Err(_) => return,
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    inner.lock().requests.push(
        format!("{method} {} {ctype}", uri.path())
            .trim_end()
            .to_owned(),
    );
    if let Some(refused) = inner.authorize(&method, &uri, &headers, &q) {
        return refused;
    }
    match route(&inner, &method, &uri, &ctype, &q, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

impl Inner {
    fn auth(&self) -> MutexGuard<'_, AuthState> {
        self.auth.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Authentication (bearer token) and RBAC. `None` to serve the request:
    /// no token (admin), or a known token whose user RBAC allows; else the
    /// 401 or 403 response.
    fn authorize(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        q: &BTreeMap<String, String>,
    ) -> Option<Response> {
        let auth = headers.get(header::AUTHORIZATION)?;
        let token = auth
            .to_str()
            .ok()
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        let mut st = self.auth();
        let Some(user) = token.and_then(|t| st.tokens.get(t)).cloned() else {
            tracing::info!(path = %uri.path(), "fake kube: unknown bearer token");
            return Some(ApiError::new(401, "Unauthorized", "Unauthorized").into_response());
        };
        let attributes = Attributes::from_request(method.as_str(), uri.path(), q);
        let allowed = st.rbac.authorize(&user, &attributes);
        st.accesses.push(Access {
            user: user.name.clone(),
            attributes: attributes.clone(),
            allowed,
        });
        if allowed {
            return None;
        }
        let message = rbac::forbidden_message(&user.name, &attributes);
        tracing::info!(user = %user.name, verb = %attributes.verb, resource = %attributes.full_resource(),
            namespace = %attributes.namespace, name = %attributes.name, "fake kube: forbidden");
        let mut status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "Forbidden", "code": 403});
        if attributes.resource_request {
            let mut details = json!({"group": attributes.api_group, "kind": attributes.resource});
            if !attributes.name.is_empty() {
                details["name"] = Value::String(attributes.name.clone());
            }
            status["details"] = details;
        }
        st.denials.push(Denial {
            request: format!("{method} {}", uri.path()),
            user: user.name,
            attributes,
            message,
        });
        drop(st);
        // Wake `wait_until` checks (a denial changes no object).
        self.changed.send_modify(|_| ());
        Some(json_response(StatusCode::FORBIDDEN, &status))
    }
}

fn parse_body(body: &Bytes, yaml: bool) -> Result<Value, ApiError> {
    let r = if yaml {
        serde_yaml::from_slice::<Value>(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())
    };
    r.map_err(|e| ApiError::new(400, "BadRequest", format!("cannot parse the body: {e}")))
}

async fn route(
    inner: &Arc<Inner>,
    method: &Method,
    uri: &Uri,
    ctype: &str,
    q: &BTreeMap<String, String>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let t = parse_path(uri.path()).ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    })?;
    let manager = q.get("fieldManager").map(String::as_str);
    let res = t.res;
    match (method.clone(), t.name.as_deref(), t.namespace.as_deref()) {
        (Method::GET, None, ns) => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return Ok(watch(inner.clone(), res, ns.map(str::to_owned), q.clone()).await);
            }
            let (rv, items) = inner.list(res, ns, q)?;
            let list = json!({"kind": format!("{}List", res.kind), "apiVersion": res.group_version,
                              "metadata": {"resourceVersion": rv.to_string()}, "items": items});
            Ok(json_response(StatusCode::OK, &list))
        }
        (Method::POST, None, Some(ns)) => {
            let created = inner.create(res, ns, parse_body(body, false)?, manager)?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (Method::GET, Some(name), Some(ns)) => {
            inner.status_part(&res, t.status)?;
            let st = inner.lock();
            let obj = Inner::existing(&st, &res, &(res.plural, ns.to_owned(), name.to_owned()))?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::PUT, Some(name), Some(ns)) => {
            let obj = inner.replace(res, ns, name, t.status, parse_body(body, false)?, manager)?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::PATCH, Some(name), Some(ns)) => {
            let obj = match ctype {
                "application/merge-patch+json" => {
                    inner.merge(res, ns, name, t.status, &parse_body(body, false)?, manager)?
                }
                "application/apply-patch+yaml" => {
                    let manager = manager.ok_or_else(|| {
                        ApiError::new(400, "BadRequest", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
                    })?;
                    let force = q.get("force").is_some_and(|f| f == "true");
                    let by = ApplyAs {
                        manager,
                        status: t.status,
                        force,
                    };
                    inner.apply(res, ns, name, &parse_body(body, true)?, by)?
                }
                other => {
                    return Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/apply-patch+yaml (got {other:?})")));
                }
            };
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::DELETE, Some(name), Some(ns)) => {
            if t.status {
                return Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ));
            }
            let obj = inner.delete(res, ns, name)?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    }
}

impl FakeKube {
    /// Starts the server on `127.0.0.1:0`; `status_subresource` says whether
    /// devices and devicestatuses have the `status` subresource.
    pub async fn start(status_subresource: bool) -> FakeKube {
        let (feed, _) = broadcast::channel(4096);
        let (changed, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            auth: Mutex::new(AuthState::default()),
            others: Mutex::new(BTreeMap::new()),
            state: Mutex::new(StateInner {
                rv: 1,
                uid_seq: 0,
                objects: BTreeMap::new(),
                managed: BTreeMap::new(),
                history: VecDeque::new(),
                oldest_rv: 0,
                watch_epoch: CancellationToken::new(),
                requests: Vec::new(),
            }),
            status_subresource,
            feed,
            changed,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "fake kube server ended");
            }
        });
        FakeKube {
            inner,
            addr,
            server,
            unix_servers: Mutex::new(Vec::new()),
        }
    }

    /// Serves the same API on a Unix socket at `path` too (until dropped).
    pub async fn serve_unix(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("binding {}", path.display()))?;
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(self.inner.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "fake kube unix server ended");
            }
        });
        self.unix_servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(server);
        Ok(())
    }

    /// A kubeconfig (YAML) for `server` with `token` as bearer token (none:
    /// the admin path of this fake).
    pub fn kubeconfig(server: &str, token: Option<&str>) -> String {
        let user = match token {
            Some(t) => json!({"token": t}),
            None => json!({}),
        };
        let cfg = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "c", "context": {"cluster": "fake", "user": "u"}}],
            "current-context": "c",
        });
        // JSON is YAML.
        cfg.to_string()
    }

    /// Registers a bearer token for `user`.
    pub fn add_token(&self, token: &str, user: UserInfo) {
        self.inner.auth().tokens.insert(token.to_owned(), user);
    }

    /// Registers a token for the service account `namespace/name` (as the
    /// token controller would mint one) and returns it.
    pub fn add_service_account_token(&self, namespace: &str, name: &str) -> String {
        let token = format!("fake-sa-token.{namespace}.{name}");
        self.add_token(&token, UserInfo::service_account(namespace, name));
        token
    }

    /// Feeds one object as `kubectl apply` would create it: Devices,
    /// DeviceModels, DeviceStatuses and Events into the served store; Roles,
    /// ClusterRoles and bindings into the authorizer (and the generic store);
    /// anything else into the generic store ([`FakeKube::stored`]).
    pub fn feed(&self, obj: &Value) -> anyhow::Result<()> {
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("object without kind: {obj}"))?;
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("object without apiVersion: {obj}"))?;
        if let Some(res) = resource(kind).filter(|r| r.group_version == api_version) {
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{kind} without a name"))?;
            if self.get(kind, ns, name).is_some() {
                bail!("{kind} {ns}/{name} fed twice");
            }
            self.inner
                .create(res, ns, obj.clone(), Some("kubectl-client-side-apply"))?;
            return Ok(());
        }
        self.inner
            .auth()
            .rbac
            .add_object(obj)
            .with_context(|| format!("{kind} as RBAC"))?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{kind} without a name"))?;
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let key = (
            api_version.to_owned(),
            kind.to_owned(),
            ns.to_owned(),
            name.to_owned(),
        );
        let mut others = self.inner.others.lock().unwrap_or_else(|p| p.into_inner());
        if others.insert(key, obj.clone()).is_some() {
            bail!("{kind} {ns}/{name} fed twice");
        }
        Ok(())
    }

    /// The objects of the generic store (every fed object the fake does not serve).
    pub fn stored(&self) -> Vec<Value> {
        self.inner
            .others
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The authorizer's roles and bindings (a copy).
    pub fn rbac(&self) -> Rbac {
        self.inner.auth().rbac.clone()
    }

    /// Every authenticated request so far, allowed or not.
    pub fn accesses(&self) -> Vec<Access> {
        self.inner.auth().accesses.clone()
    }

    /// Every request refused with 403 so far.
    pub fn forbidden(&self) -> Vec<Denial> {
        self.inner.auth().denials.clone()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server (installs the rustls provider first).
    pub fn client(&self) -> kube::Client {
        mapper_kube::install_crypto_provider();
        let uri = self.url().parse().expect("valid url");
        kube::Client::try_from(kube::Config::new(uri)).expect("kube client")
    }

    /// Creates or updates objects as `kubectl apply` would (multi-document
    /// YAML; `kind` names the resource; an existing object gets the document
    /// as a merge patch, by field manager `kubectl-client-side-apply`).
    pub fn apply_yaml(&self, yaml: &str) -> anyhow::Result<()> {
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v: Value = serde::Deserialize::deserialize(doc).context("yaml")?;
            if v.is_null() {
                continue;
            }
            let kind = v
                .get("kind")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("document without kind"))?;
            let res = resource(kind).ok_or_else(|| anyhow!("unknown kind {kind}"))?;
            let ns = v
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_owned();
            let name = v
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("document without name"))?
                .to_owned();
            let manager = Some("kubectl-client-side-apply");
            if self.get(kind, &ns, &name).is_some() {
                self.inner.merge(res, &ns, &name, false, &v, manager)?;
            } else {
                self.inner.create(res, &ns, v, manager)?;
            }
        }
        Ok(())
    }

    fn res(kind: &str) -> anyhow::Result<ResourceInfo> {
        resource(kind).ok_or_else(|| anyhow!("unknown kind {kind}"))
    }

    /// One object (kind: `Device`, `devices`, `DeviceStatus`, `events`, ...).
    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let res = resource(kind)?;
        self.inner
            .lock()
            .objects
            .get(&(res.plural, ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// A JSON merge patch by field manager `manager` (e.g. the cloud console
    /// changing a desired value) on the main resource, or on `/status` with
    /// `status = true` (404 without the subresource, as on a real server).
    pub fn patch_json(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        manager: &str,
        status: bool,
        patch: Value,
    ) -> anyhow::Result<Value> {
        Ok(self
            .inner
            .merge(Self::res(kind)?, ns, name, status, &patch, Some(manager))?)
    }

    /// A status merge patch where status lives: `/status` with the
    /// subresource, the main resource without.
    pub fn patch_status_json(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        manager: &str,
        patch: Value,
    ) -> anyhow::Result<Value> {
        let res = Self::res(kind)?;
        let status = self.inner.subresource_on(&res);
        Ok(self
            .inner
            .merge(res, ns, name, status, &patch, Some(manager))?)
    }

    /// Server-side apply by `manager` (to `/status` with `status = true`).
    pub fn apply(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        by: ApplyAs<'_>,
        body: Value,
    ) -> anyhow::Result<Value> {
        Ok(self.inner.apply(Self::res(kind)?, ns, name, &body, by)?)
    }

    /// Deletes an object (and, as the garbage collector would, its dependents).
    pub fn delete(&self, kind: &str, ns: &str, name: &str) -> anyhow::Result<()> {
        self.inner.delete(Self::res(kind)?, ns, name)?;
        Ok(())
    }

    /// All objects of a kind.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let Some(res) = resource(kind) else {
            return vec![];
        };
        self.inner
            .list(res, None, &BTreeMap::new())
            .map(|(_, v)| v)
            .unwrap_or_default()
    }

    /// All core/v1 Events.
    pub fn events(&self) -> Vec<Value> {
        self.list("events")
    }

    /// The requests served so far: `METHOD /path content-type`.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().requests.clone()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().rv
    }

    /// Drops the watch history and closes open watches: the next watch resume
    /// from an older resourceVersion gets 410 Expired, and the client relists.
    pub fn truncate_history(&self) {
        let mut st = self.inner.lock();
        st.history.clear();
        st.rv += 1;
        st.oldest_rv = st.rv;
        st.watch_epoch.cancel();
        st.watch_epoch = CancellationToken::new();
    }

    /// Waits until `pred` holds for the object (re-checked on every change).
    pub async fn wait_for(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let mut last = None;
        self.wait_until(
            |f| {
                last = f.get(kind, ns, name);
                last.as_ref().is_some_and(&pred)
            },
            timeout,
        )
        .await
        .with_context(|| {
            format!(
                "{kind} {ns}/{name}: last seen {}",
                last.as_ref().map(Value::to_string).unwrap_or("none".into())
            )
        })?;
        self.get(kind, ns, name)
            .ok_or_else(|| anyhow!("{kind} {ns}/{name} vanished"))
    }

    /// Waits until `check` holds for the server (re-checked on every change
    /// and every 403).
    pub async fn wait_until(
        &self,
        mut check: impl FnMut(&FakeKube) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let mut rx = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if check(self) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("fake kube stopped"),
                Err(_) => bail!("timed out after {timeout:?}"),
            }
        }
    }
}
