//! The binary's two modes end to end: load config, start DDS, links and the HTTP endpoint,
//! drain on SIGTERM/SIGINT within `drain_timeout_ms`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{EdgeConfig, HubConfig};
use crate::http::{LinkState, LinkStatus, Status};
use crate::metrics::Metrics;
use crate::relay::LinkSnapshot;

/// Loads and validates the edge config (`None`: the defaults), with environment overrides.
pub fn load_edge(path: Option<&Path>) -> anyhow::Result<EdgeConfig> {
    let mut cfg = match path {
        Some(p) => EdgeConfig::load(p)?,
        None => EdgeConfig::from_yaml_str(EdgeConfig::default_yaml())?,
    };
    cfg.apply_env(|k| std::env::var(k).ok())?;
    cfg.validate()?;
    Ok(cfg)
}

/// Loads and validates the hub config.
pub fn load_hub(path: Option<&Path>) -> anyhow::Result<HubConfig> {
    let mut cfg = match path {
        Some(p) => HubConfig::load(p)?,
        None => HubConfig::from_yaml_str(HubConfig::default_yaml())?,
    };
    cfg.apply_env(|k| std::env::var(k).ok())?;
    cfg.validate()?;
    Ok(cfg)
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn link_status(name: &str, snap: &LinkSnapshot) -> LinkStatus {
    LinkStatus {
        name: name.to_owned(),
        peer: snap.peer.clone(),
        namespace: snap.namespace.clone(),
        state: if snap.connected {
            LinkState::Connected
        } else {
            LinkState::Disconnected
        },
        session: snap.session.clone(),
        since_ms: 0,
        reconnects: snap.sessions.saturating_sub(1),
        last_error: None,
    }
}

async fn serve_http(
    listen: Option<std::net::SocketAddr>,
    metrics: Arc<Metrics>,
    status: watch::Receiver<Status>,
    shutdown: CancellationToken,
) -> anyhow::Result<(
    Option<tokio::task::JoinHandle<()>>,
    Option<std::net::SocketAddr>,
)> {
    let Some(addr) = listen else {
        return Ok((None, None));
    };
    let listener = crate::http::bind(addr)
        .await
        .with_context(|| format!("http.listen: cannot bind {addr}"))?;
    let bound = listener.local_addr().ok();
    let task = tokio::spawn(async move {
        if let Err(e) = crate::http::serve(listener, metrics, status, shutdown).await {
            tracing::warn!(error = %e, "HTTP endpoint failed");
        }
    });
    Ok((Some(task), bound))
}

async fn drain(tasks: Vec<tokio::task::JoinHandle<()>>, timeout: Duration) {
    let all = futures::future::join_all(tasks);
    if tokio::time::timeout(timeout, all).await.is_err() {
        tracing::warn!(timeout_ms = timeout.as_millis() as u64, "drain timed out");
    }
}

/// A bridge (edge or hub) started under a caller's [`CancellationToken`]: where it serves, its
/// live status, and the task that drains it after the token is cancelled.
#[derive(Debug)]
pub struct Running {
    /// The bound address of the HTTP endpoint (`None` when `http.listen` is `null`).
    pub http_addr: Option<std::net::SocketAddr>,
    /// Hub only: the bound address robots connect to.
    pub link_addr: Option<std::net::SocketAddr>,
    /// The status snapshot `/status` serves, refreshed every 500 ms.
    pub status: watch::Receiver<Status>,
    /// Ends once the bridge has drained (at most `drain_timeout_ms` after cancellation).
    pub done: tokio::task::JoinHandle<()>,
}

/// The status feed and its HTTP server: a task that rebuilds the [`Status`] every 500 ms with
/// `make` until shutdown, and the server of `/`, `/status`, `/metrics`, `/healthz`, `/readyz`.
struct StatusServer {
    rx: watch::Receiver<Status>,
    http_addr: Option<std::net::SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl StatusServer {
    async fn start(
        listen: Option<std::net::SocketAddr>,
        metrics: Arc<Metrics>,
        shutdown: &CancellationToken,
        mut make: impl FnMut() -> Status + Send + 'static,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = watch::channel(Status::default());
        let (http, http_addr) = serve_http(listen, metrics, rx.clone(), shutdown.clone()).await?;
        let shutdown = shutdown.clone();
        let feed = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                tx.send_replace(make());
            }
        });
        let mut tasks = vec![feed];
        tasks.extend(http);
        Ok(Self {
            rx,
            http_addr,
            tasks,
        })
    }
}

/// Starts `bridge edge` and returns once it runs; it stops and drains when `shutdown` is
/// cancelled (await [`Running::done`]).
pub async fn start_edge(cfg: EdgeConfig, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let metrics = Metrics::new("edge");
    let rt = crate::edge::start(cfg.clone(), metrics.clone(), shutdown.clone()).await?;
    let robot = cfg.robot.clone();
    let links = rt.links.clone();
    let connectors = rt.connectors.clone();
    let status = StatusServer::start(cfg.http.listen, metrics, &shutdown, move || {
        let mut st = Status {
            mode: "edge".into(),
            robot: Some(robot.clone()),
            ready: true,
            links: Vec::new(),
            routes: Vec::new(),
        };
        for ((name, snap), (_, conn)) in links.iter().zip(connectors.iter()) {
            let snap = snap.borrow().clone();
            let c = conn.borrow().clone();
            let mut ls = link_status(name, &snap);
            ls.state = match c.state {
                "connected" => LinkState::Connected,
                "backoff" => LinkState::Backoff,
                _ => LinkState::Connecting,
            };
            ls.reconnects = c.reconnects;
            ls.last_error = c.last_error;
            ls.since_ms = c.since_ms;
            if c.peer.is_some() {
                ls.peer = c.peer;
            }
            st.links.push(ls);
            st.routes.extend(snap.routes);
        }
        st
    })
    .await?;
    tracing::info!(robot = %cfg.robot, upstreams = cfg.upstreams.len(), "edge running");
    let drain_timeout = Duration::from_millis(cfg.drain_timeout_ms);
    let done = tokio::spawn(async move {
        shutdown.cancelled().await;
        let mut tasks = rt.tasks;
        tasks.extend(status.tasks);
        drain(tasks, drain_timeout).await;
        rt.participant.shutdown();
    });
    Ok(Running {
        http_addr: status.http_addr,
        link_addr: None,
        status: status.rx,
        done,
    })
}

/// Starts `bridge hub` and returns once it listens; it stops and drains when `shutdown` is
/// cancelled (await [`Running::done`]).
pub async fn start_hub(cfg: HubConfig, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let metrics = Metrics::new("hub");
    let rt = Arc::new(crate::hub::start(cfg.clone(), metrics.clone(), shutdown.clone()).await?);
    let status = StatusServer::start(cfg.http.listen, metrics, &shutdown, {
        let rt = rt.clone();
        move || {
            let mut st = Status {
                mode: "hub".into(),
                robot: None,
                ready: true,
                links: Vec::new(),
                routes: Vec::new(),
            };
            for (_, snap) in rt.links() {
                st.links.push(link_status(&snap.name, &snap));
                st.routes.extend(snap.routes);
            }
            st
        }
    })
    .await?;
    tracing::info!(addr = %rt.local_addr, "hub running");
    let link_addr = Some(rt.local_addr);
    let drain_timeout = Duration::from_millis(cfg.drain_timeout_ms);
    let done = tokio::spawn(async move {
        shutdown.cancelled().await;
        drain(status.tasks, drain_timeout).await;
        drop(rt);
    });
    Ok(Running {
        http_addr: status.http_addr,
        link_addr,
        status: status.rx,
        done,
    })
}

/// Runs `bridge edge` until `shutdown` is cancelled, then drains.
pub async fn run_edge_until(cfg: EdgeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start_edge(cfg, shutdown).await?;
    running.done.await.context("edge task")?;
    Ok(())
}

/// Runs `bridge hub` until `shutdown` is cancelled, then drains.
pub async fn run_hub_until(cfg: HubConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start_hub(cfg, shutdown).await?;
    running.done.await.context("hub task")?;
    Ok(())
}

/// Cancels `shutdown` on SIGTERM/SIGINT.
fn cancel_on_signal(shutdown: &CancellationToken) {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = signal() => {
                tracing::info!("signal received, draining");
                shutdown.cancel();
            }
            _ = shutdown.cancelled() => {}
        }
    });
}

/// Runs `bridge edge` until a signal.
pub async fn run_edge(cfg: EdgeConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signal(&shutdown);
    run_edge_until(cfg, shutdown).await
}

/// Runs `bridge hub` until a signal.
pub async fn run_hub(cfg: HubConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signal(&shutdown);
    run_hub_until(cfg, shutdown).await
}
