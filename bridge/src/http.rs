//! The HTTP endpoint of the bridge: `/metrics` (OpenMetrics text), `/healthz`, `/readyz`,
//! `/status` (JSON) and `/` (a small self-contained status page).
//!
//! The relay engine publishes a [`Status`] snapshot on a `watch` channel; [`serve`] reads the
//! latest snapshot on every request. The status carries names, addresses and counters only,
//! never configuration (no tokens, keys or certificate paths).
//!
//! Successive snapshots also feed a tracker (pure, time passed in) that `/status` and the page
//! show beside them: each link's last connects, reconnects and losses ([`LinkEvent`], at most
//! [`LINK_HISTORY`] per link) and each route's live rate ([`Rate`]: messages and bytes per
//! second over about [`RATE_WINDOW`]). These are fields added to the JSON; the fields of
//! [`Status`] stay as they are.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash as _, Hasher as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Direction, Metrics};

/// A snapshot of the bridge for `/status`, `/readyz` and the status page.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// `edge` or `hub`.
    pub mode: String,
    /// The robot name (edge); `None` on a hub.
    pub robot: Option<String>,
    /// Whether the bridge is ready (`/readyz` answers 200); the engine decides what that means.
    pub ready: bool,
    /// One entry per link (edge: per upstream; hub: per robot).
    pub links: Vec<LinkStatus>,
    /// One entry per route and direction.
    pub routes: Vec<RouteStatus>,
}

/// The state of one link.
#[derive(Clone, Debug, Serialize)]
pub struct LinkStatus {
    /// The upstream name (edge) or the robot (hub).
    pub name: String,
    /// The peer's address, when known.
    pub peer: Option<String>,
    /// The namespace the link's topics are mapped into, if any.
    pub namespace: Option<String>,
    /// Where the link is in its life cycle.
    pub state: LinkState,
    /// The current session id, while connected.
    pub session: Option<String>,
    /// Unix time in milliseconds of the last state change.
    pub since_ms: u64,
    /// Connection attempts after the first (edge: every retry after a failed attempt or a lost
    /// session; hub: sessions of this robot after its first).
    pub reconnects: u64,
    /// The last error seen on this link, if any.
    pub last_error: Option<String>,
}

/// The life-cycle state of a link (serialized in snake case).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Connecting or handshaking.
    Connecting,
    /// A session is up.
    Connected,
    /// Waiting before the next attempt.
    Backoff,
    /// Not connected and not trying (e.g. a hub's robot that left, or shutting down).
    Disconnected,
}

/// The counters and settings of one route.
#[derive(Clone, Debug, Serialize)]
pub struct RouteStatus {
    /// The link the route runs over.
    pub link: String,
    /// The route as displayed, e.g. `ROS:/odom -> hub:/robot1/odom`.
    pub route: String,
    /// Direction as seen from this process.
    pub direction: Direction,
    /// The ROS type, e.g. `nav_msgs/msg/Odometry`.
    pub type_name: String,
    /// Whether the route uses reliable delivery.
    pub reliable: bool,
    /// Whether messages are kept while the link is down.
    pub store_forward: bool,
    /// Send priority (higher first).
    pub priority: u8,
    /// Messages relayed.
    pub messages: u64,
    /// Payload bytes relayed.
    pub bytes: u64,
    /// Messages dropped, all reasons.
    pub dropped: u64,
    /// Messages waiting in the send queue or outbox.
    pub queue_depth: u64,
}

// ---------------------------------------------------------------------------------------------
// What successive snapshots tell: reconnect history per link, live rates per route.
// ---------------------------------------------------------------------------------------------

/// Link events kept per link (the newest; older ones are forgotten).
pub const LINK_HISTORY: usize = 8;
/// Rates are averaged over at least this span (the oldest sample kept is the newest one that is
/// at least this old), once that much history exists.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);
/// No rate is given over a shorter span than this (two snapshots in quick succession would
/// otherwise give wild numbers).
pub const MIN_RATE_SPAN: Duration = Duration::from_millis(250);
/// At most this many samples per route, whatever the snapshot cadence.
const RATE_SAMPLES: usize = 64;

/// What happened to a link between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkEventKind {
    /// Connected, the first time this server saw it connected.
    Connected,
    /// Connected again after a loss, or a new session replaced the previous one.
    Reconnected,
    /// The session was lost.
    Disconnected,
}

/// One entry of a link's history (`/status`: `links[].history`, newest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkEvent {
    /// Unix time in milliseconds: the link's `since_ms` when the engine reports it, else when
    /// this server saw the change.
    pub at_ms: u64,
    /// What happened.
    pub event: LinkEventKind,
    /// The session id after the event (the lost one for `disconnected`).
    pub session: Option<String>,
}

/// What is remembered of one link between snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct LinkTrack {
    connected: bool,
    ever_connected: bool,
    session: Option<String>,
    state: Option<LinkState>,
    /// When this server saw the current state begin (unix ms).
    state_seen_ms: u64,
    /// Newest last, at most [`LINK_HISTORY`].
    events: VecDeque<LinkEvent>,
}

/// The event that `cur` shows after `prev` (`None`: the link was not seen before). Pure.
fn link_event(prev: Option<&LinkTrack>, cur: &LinkStatus, now_ms: u64) -> Option<LinkEvent> {
    let connected = cur.state == LinkState::Connected;
    let at_ms = if cur.since_ms > 0 {
        cur.since_ms
    } else {
        now_ms
    };
    let event = |event, session: &Option<String>| {
        Some(LinkEvent {
            at_ms,
            event,
            session: session.clone(),
        })
    };
    match prev {
        None if connected => event(
            if cur.reconnects > 0 {
                LinkEventKind::Reconnected
            } else {
                LinkEventKind::Connected
            },
            &cur.session,
        ),
        None => None,
        Some(p) => match (p.connected, connected) {
            (false, true) if p.ever_connected || cur.reconnects > 0 => {
                event(LinkEventKind::Reconnected, &cur.session)
            }
            (false, true) => event(LinkEventKind::Connected, &cur.session),
            (true, false) => event(LinkEventKind::Disconnected, &p.session),
            // Lost and found again between two snapshots: the session id tells.
            (true, true) if cur.session.is_some() && cur.session != p.session => {
                event(LinkEventKind::Reconnected, &cur.session)
            }
            _ => None,
        },
    }
}

/// The track of a link after the snapshot `cur` (seen at `now_ms`). Pure.
fn next_track(prev: Option<LinkTrack>, cur: &LinkStatus, now_ms: u64) -> LinkTrack {
    let event = link_event(prev.as_ref(), cur, now_ms);
    let mut t = prev.unwrap_or_default();
    let connected = cur.state == LinkState::Connected;
    if t.state != Some(cur.state) {
        t.state = Some(cur.state);
        t.state_seen_ms = now_ms;
    }
    t.connected = connected;
    t.ever_connected |= connected;
    if cur.session.is_some() {
        t.session = cur.session.clone();
    }
    if let Some(e) = event {
        if t.events.len() == LINK_HISTORY {
            t.events.pop_front();
        }
        t.events.push_back(e);
    }
    t
}

/// One reading of a route's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RateSample {
    /// Monotonic time of the reading.
    at: Duration,
    messages: u64,
    bytes: u64,
}

/// A route's live rate (`/status`: `routes[].rate`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Rate {
    /// Messages per second.
    pub messages_per_s: f64,
    /// Payload bytes per second.
    pub bytes_per_s: f64,
    /// The span the rate was taken over, in milliseconds.
    pub span_ms: u64,
}

/// The rate over a window of samples (oldest first): `None` with fewer than two samples or a
/// span under [`MIN_RATE_SPAN`]. Pure.
fn window_rate(window: &VecDeque<RateSample>) -> Option<Rate> {
    let (first, last) = (window.front()?, window.back()?);
    let span = last.at.checked_sub(first.at)?;
    if span < MIN_RATE_SPAN {
        return None;
    }
    let secs = span.as_secs_f64();
    Some(Rate {
        messages_per_s: last.messages.saturating_sub(first.messages) as f64 / secs,
        bytes_per_s: last.bytes.saturating_sub(first.bytes) as f64 / secs,
        span_ms: u64::try_from(span.as_millis()).unwrap_or(u64::MAX),
    })
}

/// Adds `s` to `window` and keeps the window about [`RATE_WINDOW`] long: older samples are
/// dropped once a newer one is at least that old. Counters that went back (a route started
/// again) or a clock that went back restart the window. Pure.
fn push_sample(window: &mut VecDeque<RateSample>, s: RateSample) {
    if let Some(last) = window.back() {
        if s.messages < last.messages || s.bytes < last.bytes || s.at < last.at {
            window.clear();
        }
    }
    window.push_back(s);
    while window.len() > 2
        && window
            .get(1)
            .is_some_and(|w| s.at.saturating_sub(w.at) >= RATE_WINDOW)
    {
        window.pop_front();
    }
    while window.len() > RATE_SAMPLES {
        window.pop_front();
    }
}

/// The time of an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Now {
    /// Unix time in milliseconds (shown to people).
    unix_ms: u64,
    /// Monotonic time (for rates).
    mono: Duration,
}

/// Reconnect history and live rates, derived from successive [`Status`] snapshots.
#[derive(Debug, Default)]
struct StatusTracker {
    /// Per link name; links absent from the newest snapshot are forgotten.
    links: HashMap<String, LinkTrack>,
    /// Per route (a hash of link, route, direction and occurrence), aligned with the newest
    /// snapshot's `routes` by [`StatusTracker::route_keys`].
    routes: HashMap<u64, VecDeque<RateSample>>,
    route_keys: Vec<u64>,
}

impl StatusTracker {
    /// Takes in a snapshot. Pure (time is an argument).
    fn observe(&mut self, st: &Status, now: Now) {
        let mut links = HashMap::with_capacity(st.links.len());
        for l in &st.links {
            let prev = self.links.remove(&l.name);
            links.insert(l.name.clone(), next_track(prev, l, now.unix_ms));
        }
        self.links = links;

        let mut routes = HashMap::with_capacity(st.routes.len());
        self.route_keys.clear();
        for r in &st.routes {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&r.link, &r.route, r.direction).hash(&mut h);
            let mut key = h.finish();
            // The same route shown twice (e.g. one per publisher) gets its own window.
            while routes.contains_key(&key) {
                key = key.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
            }
            let mut window = self.routes.remove(&key).unwrap_or_default();
            push_sample(
                &mut window,
                RateSample {
                    at: now.mono,
                    messages: r.messages,
                    bytes: r.bytes,
                },
            );
            routes.insert(key, window);
            self.route_keys.push(key);
        }
        self.routes = routes;
    }

    /// `st` (the snapshot last observed) as JSON with what the tracker adds: `links[].history`
    /// (newest first), `links[].since_ms` filled in when the engine left it 0,
    /// `routes[].rate` (`null` until known) and `rate_window_ms`.
    fn render(&self, st: &Status) -> serde_json::Result<serde_json::Value> {
        let mut v = serde_json::to_value(st)?;
        if let Some(links) = v.get_mut("links").and_then(|l| l.as_array_mut()) {
            for (json, l) in links.iter_mut().zip(&st.links) {
                let Some(obj) = json.as_object_mut() else {
                    continue;
                };
                let track = self.links.get(&l.name);
                let history: Vec<&LinkEvent> = track
                    .map(|t| t.events.iter().rev().collect())
                    .unwrap_or_default();
                obj.insert("history".into(), serde_json::to_value(history)?);
                if l.since_ms == 0 {
                    if let Some(t) = track {
                        obj.insert("since_ms".into(), t.state_seen_ms.into());
                    }
                }
            }
        }
        if let Some(routes) = v.get_mut("routes").and_then(|r| r.as_array_mut()) {
            for (i, json) in routes.iter_mut().enumerate() {
                let rate = self
                    .route_keys
                    .get(i)
                    .and_then(|k| self.routes.get(k))
                    .and_then(window_rate);
                if let Some(obj) = json.as_object_mut() {
                    obj.insert("rate".into(), serde_json::to_value(rate)?);
                }
            }
        }
        if let Some(obj) = v.as_object_mut() {
            let ms = u64::try_from(RATE_WINDOW.as_millis()).unwrap_or(u64::MAX);
            obj.insert("rate_window_ms".into(), ms.into());
        }
        Ok(v)
    }
}

/// The tracker with its own view of the status channel (so it knows which snapshots it saw).
#[derive(Debug)]
struct Tracked {
    status: watch::Receiver<Status>,
    tracker: StatusTracker,
    started: Instant,
}

impl Tracked {
    fn new(mut status: watch::Receiver<Status>) -> Self {
        // The snapshot present at start counts as new.
        status.mark_changed();
        Tracked {
            status,
            tracker: StatusTracker::default(),
            started: Instant::now(),
        }
    }

    fn now(&self) -> Now {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Now {
            unix_ms,
            mono: self.started.elapsed(),
        }
    }

    /// Observes the newest snapshot if not yet seen, then returns `f` of it (the tracker and
    /// the snapshot it last observed stay consistent: both under the same borrow).
    fn with_latest<T>(&mut self, f: impl FnOnce(&StatusTracker, &Status) -> T) -> T {
        let now = self.now();
        let snap = self.status.borrow_and_update();
        if snap.has_changed() {
            self.tracker.observe(&snap, now);
        }
        f(&self.tracker, &snap)
    }
}

type SharedTracker = Arc<Mutex<Tracked>>;

fn lock(t: &SharedTracker) -> MutexGuard<'_, Tracked> {
    // Nothing in the critical sections can leave the tracker inconsistent: keep going.
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Observes every snapshot as it is published, so that history and rates do not depend on
/// anyone reading the page.
async fn track(tracker: SharedTracker, mut wake: watch::Receiver<Status>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = wake.changed() => {
                if changed.is_err() {
                    tracing::debug!("status channel closed, tracker stops");
                    break;
                }
                lock(&tracker).with_latest(|_, _| ());
            }
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    status: watch::Receiver<Status>,
    tracker: SharedTracker,
}

/// Binds the HTTP listener (port 0 picks a free port; read it with `local_addr`).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The routes of the endpoint, without a listener (for [`serve`] and tests).
fn router(
    metrics: Arc<Metrics>,
    status: watch::Receiver<Status>,
    tracker: SharedTracker,
) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status_json))
        .with_state(AppState {
            metrics,
            status,
            tracker,
        })
}

/// Serves `GET /metrics` (OpenMetrics text), `/healthz` (`ok`), `/readyz` (200 `ready` when
/// `status.borrow().ready`, else 503 `not ready`), `/status` (the [`Status`] as pretty JSON,
/// plus `links[].history`: the last [`LINK_HISTORY`] connects, reconnects and losses, newest
/// first; `routes[].rate`: messages and bytes per second over about [`RATE_WINDOW`], `null`
/// until known; `rate_window_ms`; and `links[].since_ms` filled in with the time this server
/// saw the state begin when the engine reports 0) and `/` (an HTML page that polls `/status`
/// every 2 s) on `listener` until `shutdown` is cancelled; then stops accepting and waits for
/// requests in flight. The bound address is `listener.local_addr()`, known before calling.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    status: watch::Receiver<Status>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving / /metrics /healthz /readyz /status");
    let tracker = Arc::new(Mutex::new(Tracked::new(status.clone())));
    let stop = shutdown.child_token();
    let tracking = tokio::spawn(track(tracker.clone(), status.clone(), stop.clone()));
    let served = axum::serve(listener, router(metrics, status, tracker))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    stop.cancel();
    if let Err(e) = tracking.await {
        tracing::warn!(error = %e, "status tracker failed");
    }
    served?;
    tracing::debug!(%addr, "http endpoint stopped");
    Ok(())
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, s.metrics.registry()) {
        Ok(()) => (
            [
                (
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            out,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "encoding the metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed").into_response()
        }
    }
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.status.borrow().ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn status_json(State(s): State<AppState>) -> Response {
    let body = lock(&s.tracker)
        .with_latest(|tracker, st| tracker.render(st))
        .and_then(|v| serde_json::to_string_pretty(&v));
    match body {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "serializing the status failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "serialization failed").into_response()
        }
    }
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        INDEX_HTML,
    )
}

/// The status page: no external assets; values are inserted as text (never as HTML). Rows
/// carry `data-link` / `data-state` (links) and `data-link` / `data-msg-rate` (routes) for
/// scripts and tests.
const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bridge</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.hist { font-size: .9em; white-space: pre-line; font-variant-numeric: tabular-nums; }
td.zero { color: #999; }
.connected { color: #080; font-weight: 600; } .connecting, .backoff { color: #a60; }
.disconnected { color: #b00; font-weight: 600; }
td.drops { color: #b00; }
#err { color: #b00; }
.note { color: #666; font-size: .9em; }
</style>
</head>
<body>
<h1>bridge <span id="mode"></span></h1>
<div><span id="summary"></span> <span class="note" id="updated"></span></div>
<div id="err"></div>
<h2>Links</h2>
<table><thead><tr><th>name</th><th>peer</th><th>namespace</th><th>state</th><th>since</th>
<th>session</th><th>reconnects</th><th>last reconnects</th><th>last error</th></tr></thead>
<tbody id="links"></tbody></table>
<h2>Routes</h2>
<p class="note" id="window"></p>
<table><thead><tr><th>link</th><th>route</th><th>dir</th><th>type</th><th>reliable</th>
<th>store &amp; forward</th><th>prio</th><th>msg/s</th><th>bytes/s</th><th>messages</th>
<th>bytes</th><th>dropped</th><th>queue</th></tr></thead><tbody id="routes"></tbody></table>
<p><a href="metrics">metrics</a> · <a href="status">status (JSON)</a></p>
<script>
"use strict";
function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "" : String(value);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function fill(id, items, cols) {
  const body = document.getElementById(id);
  const rows = (items || []).map(item => {
    const tr = document.createElement("tr");
    cols(tr, item);
    return tr;
  });
  body.replaceChildren(...rows);
}
function when(ms) { return ms ? new Date(ms).toLocaleString() : ""; }
function time(ms) { return ms ? new Date(ms).toLocaleTimeString() : ""; }
function rate(v) {
  if (v === null || v === undefined) return "";
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}
function bytes(v) {
  if (v === null || v === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}
function history(events) {
  return (events || []).slice(0, 5)
    .map(e => time(e.at_ms) + " " + e.event + (e.session ? " " + e.session : ""))
    .join("\n");
}
async function refresh() {
  try {
    const r = await fetch("status", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const s = await r.json();
    document.getElementById("mode").textContent = "(" + s.mode + (s.robot ? ": " + s.robot : "") + ")";
    document.getElementById("summary").textContent = s.ready ? "ready" : "not ready";
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.getElementById("err").textContent = "";
    if (s.rate_window_ms) {
      document.getElementById("window").textContent =
        "rates over the last " + (s.rate_window_ms / 1000) + " s";
    }
    fill("links", s.links, (tr, l) => {
      tr.dataset.link = l.name; tr.dataset.state = l.state;
      cell(tr, l.name); cell(tr, l.peer); cell(tr, l.namespace); cell(tr, l.state, l.state);
      cell(tr, when(l.since_ms)); cell(tr, l.session); cell(tr, l.reconnects, "n");
      cell(tr, history(l.history), "hist"); cell(tr, l.last_error);
    });
    fill("routes", s.routes, (tr, x) => {
      const mps = x.rate ? x.rate.messages_per_s : null;
      const bps = x.rate ? x.rate.bytes_per_s : null;
      tr.dataset.link = x.link;
      tr.dataset.msgRate = mps === null ? "" : String(mps);
      cell(tr, x.link); cell(tr, x.route); cell(tr, x.direction); cell(tr, x.type_name);
      cell(tr, x.reliable ? "yes" : "no"); cell(tr, x.store_forward ? "yes" : "no");
      cell(tr, x.priority, "n");
      cell(tr, rate(mps), mps ? "n rate" : "n rate zero");
      cell(tr, bps === null ? "" : bytes(bps) + "/s", bps ? "n" : "n zero");
      cell(tr, x.messages, "n"); cell(tr, bytes(x.bytes), "n");
      cell(tr, x.dropped, x.dropped ? "n drops" : "n"); cell(tr, x.queue_depth, "n");
    });
  } catch (e) {
    document.getElementById("err").textContent = "status unavailable: " + e.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{bail, Context as _};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;
    use tokio::task::JoinHandle;

    /// A response as read off the wire.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// A minimal HTTP/1.1 GET with `Connection: close`: reads until the server closes.
    async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Reply> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let raw = String::from_utf8(raw)?;
        let (head, body) = raw.split_once("\r\n\r\n").context("no end of headers")?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().context("no status line")?;
        let mut parts = status_line.splitn(3, ' ');
        if parts.next() != Some("HTTP/1.1") {
            bail!("bad status line {status_line:?}");
        }
        let status = parts.next().context("no status code")?.parse()?;
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (k, v) = l.split_once(':').context("bad header")?;
                Ok((k.trim().to_owned(), v.trim().to_owned()))
            })
            .collect::<anyhow::Result<_>>()?;
        let mut reply = Reply {
            status,
            headers,
            body: String::new(),
        };
        reply.body = if reply
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            dechunk(body)?
        } else {
            let len: usize = reply
                .header("content-length")
                .context("no content-length")?
                .parse()?;
            if body.len() != len {
                bail!("body is {} bytes, content-length {len}", body.len());
            }
            body.to_owned()
        };
        Ok(reply)
    }

    fn dechunk(mut rest: &str) -> anyhow::Result<String> {
        let mut out = String::new();
        loop {
            let (size, after) = rest.split_once("\r\n").context("chunk size")?;
            let size = usize::from_str_radix(size.trim(), 16)?;
            if size == 0 {
                return Ok(out);
            }
            out.push_str(after.get(..size).context("short chunk")?);
            rest = after
                .get(size..)
                .and_then(|r| r.strip_prefix("\r\n"))
                .context("chunk end")?;
        }
    }

    struct Server {
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        status: watch::Sender<Status>,
        shutdown: CancellationToken,
        task: JoinHandle<std::io::Result<()>>,
    }

    async fn start() -> anyhow::Result<Server> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let metrics = Metrics::new("edge");
        let (status, rx) = watch::channel(Status {
            mode: "edge".into(),
            robot: Some("robot1".into()),
            ..Status::default()
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, metrics.clone(), rx, shutdown.clone()));
        Ok(Server {
            addr,
            metrics,
            status,
            shutdown,
            task,
        })
    }

    impl Server {
        async fn stop(self) -> anyhow::Result<()> {
            self.shutdown.cancel();
            // The timeout only turns a hang into a failure.
            tokio::time::timeout(std::time::Duration::from_secs(10), self.task)
                .await
                .context("serve did not stop")???;
            Ok(())
        }
    }

    fn odom_route() -> RouteStatus {
        RouteStatus {
            link: "cloud".into(),
            route: "ROS:/odom -> hub:/robot1/odom".into(),
            direction: Direction::Out,
            type_name: "nav_msgs/msg/Odometry".into(),
            reliable: false,
            store_forward: true,
            priority: 3,
            messages: 42,
            bytes: 4200,
            dropped: 1,
            queue_depth: 2,
        }
    }

    fn link(state: LinkState, session: Option<&str>, reconnects: u64) -> LinkStatus {
        LinkStatus {
            name: "robot1".into(),
            peer: Some("10.0.0.2:40000".into()),
            namespace: Some("/robot1".into()),
            state,
            session: session.map(str::to_owned),
            since_ms: 0,
            reconnects,
            last_error: None,
        }
    }

    fn kinds(t: &LinkTrack) -> Vec<(u64, LinkEventKind, Option<&str>)> {
        t.events
            .iter()
            .map(|e| (e.at_ms, e.event, e.session.as_deref()))
            .collect()
    }

    #[test]
    fn link_history_records_connects_losses_and_session_changes() {
        use LinkEventKind as E;
        use LinkState as S;
        let steps = [
            (link(S::Connecting, None, 0), 1_000),
            (link(S::Connected, Some("s1"), 0), 2_000),
            (link(S::Connected, Some("s1"), 0), 3_000), // nothing new
            (link(S::Backoff, Some("s1"), 1), 4_000),
            (link(S::Connecting, Some("s1"), 2), 5_000), // still down: no event
            (link(S::Connected, Some("s2"), 2), 6_000),
            (link(S::Connected, Some("s3"), 3), 7_000), // lost and back between snapshots
            (link(S::Disconnected, None, 3), 8_000),    // the hub forgot the session id
        ];
        let mut t = None;
        for (l, now) in &steps {
            t = Some(next_track(t, l, *now));
        }
        let t = t.expect("track");
        assert_eq!(
            kinds(&t),
            vec![
                (2_000, E::Connected, Some("s1")),
                (4_000, E::Disconnected, Some("s1")),
                (6_000, E::Reconnected, Some("s2")),
                (7_000, E::Reconnected, Some("s3")),
                (8_000, E::Disconnected, Some("s3")),
            ]
        );
        assert!(t.ever_connected && !t.connected);
        assert_eq!((t.state, t.state_seen_ms), (Some(S::Disconnected), 8_000));
    }

    #[test]
    fn link_events_use_the_engines_time_and_first_sight() {
        // The engine's since_ms wins over the time of observation.
        let mut l = link(LinkState::Connected, Some("s9"), 0);
        l.since_ms = 1_700_000_000_123;
        let e = link_event(None, &l, 1_700_000_005_000).expect("event");
        assert_eq!(
            (e.at_ms, e.event),
            (1_700_000_000_123, LinkEventKind::Connected)
        );
        // First seen connected with reconnects behind it: a reconnect.
        let l = link(LinkState::Connected, Some("s2"), 4);
        let e = link_event(None, &l, 5).expect("event");
        assert_eq!((e.at_ms, e.event), (5, LinkEventKind::Reconnected));
        // First seen down: nothing to say yet.
        assert_eq!(
            link_event(None, &link(LinkState::Backoff, None, 3), 5),
            None
        );
        // Down before, never connected, reconnects counted (edge retries): still a reconnect.
        let prev = next_track(None, &link(LinkState::Backoff, None, 3), 5);
        let e = link_event(Some(&prev), &link(LinkState::Connected, Some("a"), 4), 6);
        assert_eq!(e.map(|e| e.event), Some(LinkEventKind::Reconnected));
    }

    #[test]
    fn link_history_is_bounded_newest_kept() {
        let mut t = None;
        for i in 0..(LINK_HISTORY as u64 * 3) {
            let (state, session) = if i % 2 == 0 {
                (LinkState::Connected, Some(format!("s{i}")))
            } else {
                (LinkState::Backoff, None)
            };
            let l = link(state, session.as_deref(), i / 2);
            t = Some(next_track(t, &l, 1_000 + i));
        }
        let t = t.expect("track");
        assert_eq!(t.events.len(), LINK_HISTORY);
        assert_eq!(
            t.events.back().map(|e| e.at_ms),
            Some(1_000 + LINK_HISTORY as u64 * 3 - 1)
        );
        assert_eq!(
            t.events.front().map(|e| e.at_ms),
            Some(1_000 + LINK_HISTORY as u64 * 2)
        );
    }

    fn sample(ms: u64, messages: u64, bytes: u64) -> RateSample {
        RateSample {
            at: Duration::from_millis(ms),
            messages,
            bytes,
        }
    }

    #[test]
    fn rates_over_the_window() {
        let mut w = VecDeque::new();
        push_sample(&mut w, sample(0, 0, 0));
        assert_eq!(window_rate(&w), None, "one sample");
        push_sample(&mut w, sample(100, 5, 500));
        assert_eq!(window_rate(&w), None, "under MIN_RATE_SPAN");
        push_sample(&mut w, sample(500, 25, 2_500));
        let r = window_rate(&w).expect("rate");
        assert_eq!(
            (r.messages_per_s, r.bytes_per_s, r.span_ms),
            (50.0, 5_000.0, 500)
        );
        // 100 msg/s for 10 s: the window keeps about RATE_WINDOW, the oldest samples go.
        for i in 1..=20u64 {
            push_sample(
                &mut w,
                sample(500 + i * 500, 25 + i * 50, 2_500 + i * 5_000),
            );
        }
        let r = window_rate(&w).expect("rate");
        assert_eq!((r.messages_per_s, r.bytes_per_s), (100.0, 10_000.0));
        let span = RATE_WINDOW.as_millis() as u64;
        assert!(
            (span..span + 500).contains(&r.span_ms),
            "span {} ms",
            r.span_ms
        );
        assert!(w.len() <= RATE_SAMPLES);
        // Idle: the rate falls to zero once the window holds no traffic.
        let last = *w.back().expect("sample");
        for i in 1..=12u64 {
            push_sample(
                &mut w,
                sample(
                    last.at.as_millis() as u64 + i * 500,
                    last.messages,
                    last.bytes,
                ),
            );
        }
        assert_eq!(window_rate(&w).map(|r| r.messages_per_s), Some(0.0));
    }

    #[test]
    fn rate_window_restarts_when_counters_or_clock_go_back() {
        let mut w = VecDeque::new();
        push_sample(&mut w, sample(0, 100, 1_000));
        push_sample(&mut w, sample(1_000, 200, 2_000));
        assert!(window_rate(&w).is_some());
        push_sample(&mut w, sample(2_000, 3, 30)); // the route started again
        assert_eq!(w.len(), 1);
        assert_eq!(window_rate(&w), None);
        push_sample(&mut w, sample(3_000, 13, 130));
        assert_eq!(window_rate(&w).map(|r| r.messages_per_s), Some(10.0));
        push_sample(&mut w, sample(1_000, 20, 200)); // clock went back
        assert_eq!(w.len(), 1);
        // Many samples in a short time stay bounded.
        for i in 0..(RATE_SAMPLES as u64 * 2) {
            push_sample(&mut w, sample(2_000 + i, 20 + i, 200 + i));
        }
        assert_eq!(w.len(), RATE_SAMPLES);
    }

    fn now(ms: u64) -> Now {
        Now {
            unix_ms: 1_700_000_000_000 + ms,
            mono: Duration::from_millis(ms),
        }
    }

    #[test]
    fn tracker_renders_history_rates_and_keeps_the_status_fields() -> anyhow::Result<()> {
        let mut st = Status {
            mode: "hub".into(),
            robot: None,
            ready: true,
            links: vec![link(LinkState::Connected, Some("s1"), 0)],
            routes: vec![odom_route(), odom_route()],
        };
        st.links.push(LinkStatus {
            name: "robot2".into(),
            ..link(LinkState::Backoff, None, 0)
        });
        let mut t = StatusTracker::default();
        t.observe(&st, now(0));
        let v = t.render(&st)?;
        // Every field of the snapshot is there unchanged (since_ms 0 is filled in).
        let mut plain = serde_json::to_value(&st)?;
        plain["links"][0]["since_ms"] = (1_700_000_000_000u64).into();
        plain["links"][1]["since_ms"] = (1_700_000_000_000u64).into();
        for (k, want) in plain.as_object().expect("object") {
            if k == "links" || k == "routes" {
                for (i, item) in want.as_array().expect("array").iter().enumerate() {
                    for (f, fv) in item.as_object().expect("object") {
                        assert_eq!(&v[k][i][f], fv, "{k}[{i}].{f}");
                    }
                }
            } else {
                assert_eq!(&v[k], want, "{k}");
            }
        }
        assert_eq!(v["rate_window_ms"], RATE_WINDOW.as_millis() as u64);
        assert_eq!(v["routes"][0]["rate"], serde_json::Value::Null);
        assert_eq!(v["links"][0]["history"][0]["event"], "connected");
        assert_eq!(v["links"][0]["history"][0]["session"], "s1");
        assert_eq!(v["links"][1]["history"], serde_json::json!([]));

        // One second later: the first of the two same-named routes moved, the second did not.
        st.routes[0].messages += 10;
        st.routes[0].bytes += 1_000;
        st.links[0].state = LinkState::Backoff;
        st.links[0].since_ms = 1_700_000_000_900;
        t.observe(&st, now(1_000));
        let v = t.render(&st)?;
        assert_eq!(v["routes"][0]["rate"]["messages_per_s"], 10.0);
        assert_eq!(v["routes"][0]["rate"]["bytes_per_s"], 1_000.0);
        assert_eq!(v["routes"][1]["rate"]["messages_per_s"], 0.0);
        assert_eq!(v["links"][0]["since_ms"], 1_700_000_000_900u64);
        let h = &v["links"][0]["history"];
        assert_eq!(h[0]["event"], "disconnected");
        assert_eq!(h[0]["at_ms"], 1_700_000_000_900u64);
        assert_eq!(h[1]["event"], "connected");

        // A link and a route that are gone are forgotten.
        st.links.truncate(1);
        st.routes.truncate(1);
        t.observe(&st, now(2_000));
        assert_eq!(t.links.len(), 1);
        assert_eq!(t.routes.len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn status_json_adds_history_and_rates() -> anyhow::Result<()> {
        let s = start().await?;
        s.status.send_modify(|st| {
            st.links.push(link(LinkState::Connected, Some("s1"), 0));
            st.routes.push(odom_route());
        });
        let r = get(s.addr, "/status").await?;
        let v: serde_json::Value = serde_json::from_str(&r.body)?;
        assert_eq!(v["links"][0]["history"][0]["event"], "connected");
        assert_ne!(v["links"][0]["since_ms"], 0);
        assert!(v["routes"][0]
            .as_object()
            .is_some_and(|o| o.contains_key("rate")));
        assert_eq!(v["routes"][0]["messages"], 42);
        s.stop().await
    }

    #[tokio::test]
    async fn healthz_and_unknown_path() -> anyhow::Result<()> {
        let s = start().await?;
        let r = get(s.addr, "/healthz").await?;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        assert_eq!(get(s.addr, "/nope").await?.status, 404);
        s.stop().await
    }

    #[tokio::test]
    async fn readyz_follows_the_watch() -> anyhow::Result<()> {
        let s = start().await?;
        let r = get(s.addr, "/readyz").await?;
        assert_eq!((r.status, r.body.as_str()), (503, "not ready"));
        s.status.send_modify(|st| st.ready = true);
        let r = get(s.addr, "/readyz").await?;
        assert_eq!((r.status, r.body.as_str()), (200, "ready"));
        s.status.send_modify(|st| st.ready = false);
        assert_eq!(get(s.addr, "/readyz").await?.status, 503);
        s.stop().await
    }

    #[tokio::test]
    async fn status_is_json() -> anyhow::Result<()> {
        let s = start().await?;
        s.status.send_modify(|st| {
            st.ready = true;
            st.links.push(LinkStatus {
                name: "cloud".into(),
                peer: Some("203.0.113.7:7447".into()),
                namespace: None,
                state: LinkState::Backoff,
                session: None,
                since_ms: 1_700_000_000_000,
                reconnects: 4,
                last_error: Some("connection refused".into()),
            });
            st.routes.push(odom_route());
        });
        let r = get(s.addr, "/status").await?;
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")));
        let v: serde_json::Value = serde_json::from_str(&r.body)?;
        assert_eq!(v["mode"], "edge");
        assert_eq!(v["robot"], "robot1");
        assert_eq!(v["ready"], true);
        assert_eq!(v["links"][0]["state"], "backoff");
        assert_eq!(v["links"][0]["reconnects"], 4);
        assert_eq!(v["links"][0]["namespace"], serde_json::Value::Null);
        let route = &v["routes"][0];
        assert_eq!(route["route"], "ROS:/odom -> hub:/robot1/odom");
        assert_eq!(route["direction"], "out");
        assert_eq!(route["type_name"], "nav_msgs/msg/Odometry");
        assert_eq!(route["store_forward"], true);
        assert_eq!(route["priority"], 3);
        assert_eq!(route["messages"], 42);
        assert_eq!(route["queue_depth"], 2);
        s.stop().await
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() -> anyhow::Result<()> {
        let s = start().await?;
        let route = s.metrics.route("cloud", "/odom", Direction::Out);
        for _ in 0..3 {
            route.message(100);
        }
        route.dropped(crate::metrics::DropReason::OutboxFull, 2);
        s.metrics.link("cloud").connected(true);
        let r = get(s.addr, "/metrics").await?;
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/openmetrics-text")));
        let lines: Vec<&str> = r.body.lines().collect();
        for want in [
            r#"bridge_route_messages_total{link="cloud",route="/odom",direction="out"} 3"#,
            r#"bridge_route_bytes_total{link="cloud",route="/odom",direction="out"} 300"#,
            r#"bridge_route_dropped_total{link="cloud",route="/odom",direction="out",reason="outbox_full"} 2"#,
            r#"bridge_link_up{link="cloud"} 1"#,
            "bridge_links 1",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{}", r.body);
        }
        assert_eq!(lines.last(), Some(&"# EOF"));
        s.stop().await
    }

    #[tokio::test]
    async fn index_is_self_contained_html() -> anyhow::Result<()> {
        let s = start().await?;
        let r = get(s.addr, "/").await?;
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/html")));
        assert!(r.body.starts_with("<!doctype html>"));
        assert!(r.body.contains("fetch(\"status\""));
        assert!(r.body.contains("setInterval(refresh, 2000)"));
        // No external assets and no HTML injection of status values.
        assert!(!r.body.contains("http://") && !r.body.contains("https://"));
        assert!(!r.body.contains(" src="));
        assert!(!r.body.contains("innerHTML"));
        s.stop().await
    }

    #[tokio::test]
    async fn stops_on_shutdown() -> anyhow::Result<()> {
        let s = start().await?;
        let addr = s.addr;
        assert_eq!(get(addr, "/healthz").await?.status, 200);
        s.stop().await?;
        // The listener is gone with the server.
        assert!(TcpStream::connect(addr).await.is_err());
        Ok(())
    }
}
