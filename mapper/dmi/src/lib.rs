//! The DMI gRPC twin backend of the `ros2` KubeEdge mapper (KubeEdge >= 1.15,
//! DMI `v1beta1`).
//!
//! Two sides, each on a Unix socket:
//! - [`client`]: calls edgecore's `DeviceManagerService`: `MapperRegister`
//!   (the device and model lists become [`BackendEvent::Sync`]),
//!   `ReportDeviceStatus` (all twins of a device in one call) and
//!   `ReportDeviceStates`, paced by the [`outbox`] (coalescing, token bucket,
//!   backoff on "too many request"), re-registering after edgecore restarts
//!   (`Sync` + [`BackendEvent::Resync`]).
//! - [`server`]: serves `DeviceMapperService` for edgecore: devices and models
//!   pushed down become `Upsert`/`Remove`; `GetDevice` answers with the
//!   device as last known and its latest reported twins.
//!
//! # Layout
//! - [`proto`]: the generated messages, clients and servers (`proto/dmi_v1beta1.proto`).
//! - [`config`]: the configuration, [`DmiConfig`].
//! - [`anyjson`]: `google.protobuf.Any` <-> JSON (how edgecore packs `configData`).
//! - [`convert`]: proto messages <-> `mapper_core::model`.
//! - [`outbox`]: the pure pacing state (injected clock).
//! - [`uds`]: gRPC over Unix sockets.
//!
//! [`BackendEvent::Sync`]: mapper_core::backend::BackendEvent::Sync
//! [`BackendEvent::Resync`]: mapper_core::backend::BackendEvent::Resync
#![forbid(unsafe_code)]

pub mod anyjson;
pub mod client;
pub mod config;
pub mod convert;
pub mod error;
pub mod outbox;
pub mod server;
mod tables;
pub mod uds;

/// The generated DMI code (package `v1beta1`).
pub mod proto {
    /// Messages, `device_manager_service_{client,server}` and
    /// `device_mapper_service_{client,server}`.
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_debug_implementations,
        rust_2018_idioms
    )]
    pub mod v1beta1 {
        tonic::include_proto!("v1beta1");
    }
}

use std::sync::Arc;
use std::time::Duration;

use mapper_core::backend::BackendIo;

pub use config::DmiConfig;
pub use error::{ConvertError, DmiError};
pub use tables::DmiStats;

/// How long the server may take to close its connections on shutdown.
const SERVER_GRACE: Duration = Duration::from_secs(2);

/// The DMI backend, before it runs (to get at its counters first).
#[derive(Debug)]
pub struct DmiBackend {
    config: Arc<DmiConfig>,
    stats: Arc<DmiStats>,
}

impl DmiBackend {
    /// Validates the configuration.
    pub fn new(config: DmiConfig) -> Result<Self, DmiError> {
        Ok(Self {
            config: Arc::new(config.validated()?),
            stats: Arc::default(),
        })
    }

    /// The backend's counters (shared; they keep counting while it runs).
    pub fn stats(&self) -> Arc<DmiStats> {
        self.stats.clone()
    }

    /// Runs both sides until `io.shutdown` is cancelled. Binds the mapper's
    /// socket first (edgecore dials it right after `MapperRegister`) and
    /// removes it at the end.
    pub async fn run(self, io: BackendIo) -> Result<(), DmiError> {
        let BackendIo {
            events,
            reports,
            shutdown,
        } = io;
        let cfg = self.config;
        let tables = Arc::new(tables::Tables::default());
        let listener = uds::bind(&cfg.socket)?;
        tracing::info!(socket = %cfg.socket.display(), edgecore = %cfg.edgecore_socket.display(), protocol = %cfg.protocol, "dmi backend starting");
        let server_stop = shutdown.child_token();
        let service = server::MapperService {
            protocol: cfg.protocol.clone(),
            tables: tables.clone(),
            events: events.clone(),
        };
        let mut server = tokio::spawn(server::serve(service, listener, server_stop.clone()));
        let client = client::Client {
            config: cfg.clone(),
            tables,
            stats: self.stats,
            events,
            reports,
            shutdown: shutdown.clone(),
        };
        let result = tokio::select! {
            r = client.run() => r,
            r = &mut server => {
                // The server ended by itself: that is an error unless we are stopping.
                let r = r.map_err(|e| DmiError::Task(e.to_string())).and_then(|r| r);
                uds::unlink(&cfg.socket);
                return if shutdown.is_cancelled() { r } else { r.and(Err(DmiError::Task("the DeviceMapperService server stopped".into()))) };
            }
        };
        server_stop.cancel();
        match tokio::time::timeout(SERVER_GRACE, &mut server).await {
            Ok(Ok(Err(error))) => tracing::warn!(%error, "DeviceMapperService server"),
            Ok(_) => {}
            Err(_) => {
                tracing::debug!("DeviceMapperService connections still open after the grace period; closing them");
                server.abort();
            }
        }
        uds::unlink(&cfg.socket);
        tracing::info!("dmi backend stopped");
        result
    }
}

/// Runs the DMI backend until `io.shutdown` is cancelled.
pub async fn run(config: DmiConfig, io: BackendIo) -> Result<(), DmiError> {
    DmiBackend::new(config)?.run(io).await
}
