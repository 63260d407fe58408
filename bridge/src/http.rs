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
