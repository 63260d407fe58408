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
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = listen else { return Ok(None) };
    let listener = crate::http::bind(addr)
        .await
        .with_context(|| format!("http.listen: cannot bind {addr}"))?;
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = crate::http::serve(listener, metrics, status, shutdown).await {
            tracing::warn!(error = %e, "HTTP endpoint failed");
        }
    })))
}

async fn drain(tasks: Vec<tokio::task::JoinHandle<()>>, timeout: Duration) {
    let all = futures::future::join_all(tasks);
    if tokio::time::timeout(timeout, all).await.is_err() {
        tracing::warn!(timeout_ms = timeout.as_millis() as u64, "drain timed out");
    }
}

/// Runs `bridge edge` until a signal.
pub async fn run_edge(cfg: EdgeConfig) -> anyhow::Result<()> {
    let metrics = Metrics::new("edge");
    let shutdown = CancellationToken::new();
    let rt = crate::edge::start(cfg.clone(), metrics.clone(), shutdown.clone()).await?;
    let (status_tx, status_rx) = watch::channel(Status::default());
    let http = serve_http(cfg.http.listen, metrics, status_rx, shutdown.clone()).await?;
    let robot = cfg.robot.clone();
    let links = rt.links.clone();
    let connectors = rt.connectors.clone();
    let status_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
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
                status_tx.send_replace(st);
            }
        }
    });
    tracing::info!(robot = %cfg.robot, upstreams = cfg.upstreams.len(), "edge running");
    signal().await;
    tracing::info!("signal received, draining");
    shutdown.cancel();
    let mut tasks = rt.tasks;
    tasks.push(status_task);
    tasks.extend(http);
    drain(tasks, Duration::from_millis(cfg.drain_timeout_ms)).await;
    rt.participant.shutdown();
    Ok(())
}

/// Runs `bridge hub` until a signal.
pub async fn run_hub(cfg: HubConfig) -> anyhow::Result<()> {
    let metrics = Metrics::new("hub");
    let shutdown = CancellationToken::new();
    let rt = Arc::new(crate::hub::start(cfg.clone(), metrics.clone(), shutdown.clone()).await?);
    let (status_tx, status_rx) = watch::channel(Status::default());
    let http = serve_http(cfg.http.listen, metrics, status_rx, shutdown.clone()).await?;
    let status_task = tokio::spawn({
        let shutdown = shutdown.clone();
        let rt = rt.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
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
                status_tx.send_replace(st);
            }
        }
    });
    tracing::info!(addr = %rt.local_addr, "hub running");
    signal().await;
    tracing::info!("signal received, draining");
    shutdown.cancel();
    let mut tasks = vec![status_task];
    tasks.extend(http);
    drain(tasks, Duration::from_millis(cfg.drain_timeout_ms)).await;
    Ok(())
}
