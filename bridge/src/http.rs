//! The HTTP endpoint of the bridge: `/metrics` (OpenMetrics text), `/healthz`, `/readyz`,
//! `/status` (JSON) and `/` (a small self-contained status page).
//!
//! The relay engine publishes a [`Status`] snapshot on a `watch` channel; [`serve`] reads the
//! latest snapshot on every request. The status carries names, addresses and counters only,
//! never configuration (no tokens, keys or certificate paths).

use std::net::SocketAddr;
use std::sync::Arc;

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
    /// Sessions re-established after a loss.
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

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    status: watch::Receiver<Status>,
}

/// Binds the HTTP listener (port 0 picks a free port; read it with `local_addr`).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The routes of the endpoint, without a listener (for [`serve`] and tests).
fn router(metrics: Arc<Metrics>, status: watch::Receiver<Status>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status_json))
        .with_state(AppState { metrics, status })
}

/// Serves `GET /metrics` (OpenMetrics text), `/healthz` (`ok`), `/readyz` (200 `ready` when
/// `status.borrow().ready`, else 503 `not ready`), `/status` (the [`Status`] as pretty JSON) and
/// `/` (an HTML page that polls `/status` every 2 s) on `listener` until `shutdown` is cancelled;
/// then stops accepting and waits for requests in flight. The bound address is
/// `listener.local_addr()`, known before calling.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    status: watch::Receiver<Status>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving / /metrics /healthz /readyz /status");
    axum::serve(listener, router(metrics, status))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
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
    // Serialize while holding the borrow (no clone); the watch lock is released right after.
    let body = serde_json::to_string_pretty(&*s.status.borrow());
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

/// The status page: no external assets; values are inserted as text (never as HTML).
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
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f3f3f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.connected { color: #080; } .connecting, .backoff { color: #a60; } .disconnected { color: #b00; }
#err { color: #b00; }
</style>
</head>
<body>
<h1>bridge <span id="mode"></span></h1>
<div id="summary"></div>
<div id="err"></div>
<h2>Links</h2>
<table><thead><tr><th>name</th><th>peer</th><th>namespace</th><th>state</th><th>since</th>
<th>session</th><th>reconnects</th><th>last error</th></tr></thead><tbody id="links"></tbody></table>
<h2>Routes</h2>
<table><thead><tr><th>link</th><th>route</th><th>dir</th><th>type</th><th>reliable</th>
<th>store &amp; forward</th><th>prio</th><th>messages</th><th>bytes</th><th>dropped</th>
<th>queue</th></tr></thead><tbody id="routes"></tbody></table>
<p><a href="metrics">metrics</a> · <a href="status">status (JSON)</a></p>
<script>
"use strict";
function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "" : String(value);
  if (cls) td.className = cls;
  row.appendChild(td);
}
function fill(id, items, cols) {
  const body = document.getElementById(id);
  const rows = items.map(item => {
    const tr = document.createElement("tr");
    cols(tr, item);
    return tr;
  });
  body.replaceChildren(...rows);
}
function when(ms) { return ms ? new Date(ms).toLocaleString() : ""; }
async function refresh() {
  try {
    const r = await fetch("status", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const s = await r.json();
    document.getElementById("mode").textContent = "(" + s.mode + (s.robot ? ": " + s.robot : "") + ")";
    document.getElementById("summary").textContent = s.ready ? "ready" : "not ready";
    document.getElementById("err").textContent = "";
    fill("links", s.links, (tr, l) => {
      cell(tr, l.name); cell(tr, l.peer); cell(tr, l.namespace); cell(tr, l.state, l.state);
      cell(tr, when(l.since_ms)); cell(tr, l.session); cell(tr, l.reconnects, "n"); cell(tr, l.last_error);
    });
    fill("routes", s.routes, (tr, x) => {
      cell(tr, x.link); cell(tr, x.route); cell(tr, x.direction); cell(tr, x.type_name);
      cell(tr, x.reliable ? "yes" : "no"); cell(tr, x.store_forward ? "yes" : "no");
      cell(tr, x.priority, "n"); cell(tr, x.messages, "n"); cell(tr, x.bytes, "n");
      cell(tr, x.dropped, "n"); cell(tr, x.queue_depth, "n");
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
