//! `/metrics` (Prometheus text), `/healthz`, `/readyz` and `/status` (JSON).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use mapper_core::mapper::ManagerStatus;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct AppState {
    registry: Arc<prometheus_client::registry::Registry>,
    status: watch::Receiver<ManagerStatus>,
    backend: &'static str,
}

/// Serves until `shutdown`; returns the bound address through `bound`.
pub async fn serve(
    listen: SocketAddr,
    registry: Arc<prometheus_client::registry::Registry>,
    status: watch::Receiver<ManagerStatus>,
    backend: &'static str,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status_json))
        .with_state(AppState {
            registry,
            status,
            backend,
        });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics /healthz /readyz /status");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            e.to_string(),
        ),
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.status.borrow().synced {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first device list from the backend",
        )
    }
}

async fn status_json(State(s): State<AppState>) -> impl IntoResponse {
    let st = s.status.borrow().clone();
    axum::Json(serde_json::json!({
        "backend": s.backend,
        "synced": st.synced,
        "devices": st.devices,
        "configErrors": st.errors,
    }))
}

/// `GET /healthz` on a running mapper listening on `listen` (an unspecified address is asked
/// on loopback); `Ok` only for `200`. Blocking, std only: this runs as a container HEALTHCHECK.
pub fn healthcheck(listen: SocketAddr, timeout: std::time::Duration) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200",
        "{addr}/healthz answered {:?}",
        String::from_utf8_lossy(&head)
    );
    Ok(())
}
