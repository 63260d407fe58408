//! The Kubernetes API twin backend of the `ros2` mapper, for K3s (or any
//! cluster) without KubeEdge: the mapper reads `devices.kubeedge.io/v1beta1`
//! Devices and DeviceModels from the API server and writes reported twins back.
//!
//! # What it does
//! - Watches Devices (all namespaces, or [`KubeConfig::namespace`]) with
//!   `kube::runtime::watcher` and keeps those with `spec.nodeName` == this
//!   node and `spec.protocol.protocolName` == `ros2`. The node filter is
//!   client-side: real API servers do not support field selectors on CRD spec
//!   fields. DeviceModels are watched too.
//! - Objects are watched untyped and decoded one by one, so a Device that does
//!   not decode (garbage in a property) is skipped with a warning and the
//!   others are served.
//! - The initial lists give one [`BackendEvent::Sync`] (each device with its
//!   model); later changes of a device's spec give `Upsert`/`Remove` (status-only
//!   changes, such as our own writes, give nothing); a model change re-Upserts
//!   the devices that use it; a relist (410 Gone, watch restart) gives a new `Sync`.
//! - Reports are coalesced per device ([`KubeConfig::min_status_interval_ms`],
//!   latest value of each twin wins) and written to `Device.status`
//!   (`statusMode: device`, KubeEdge <= 1.22) or to the `DeviceStatus` object
//!   of the same name (`deviceStatus`, >= 1.23), created with an owner
//!   reference to the Device when missing. Rejected desired values become
//!   core/v1 Events (reason `DesiredValueRejected`) on the Device.
//!
//! # Patch strategy: read-modify-write JSON merge patch with a precondition
//! Server-side apply would be the natural way to share `status` with other
//! writers, but KubeEdge's CRDs declare `status.twins` without
//! `x-kubernetes-list-type: map` / `x-kubernetes-list-map-keys`, so the list
//! is *atomic* for the API server: an apply of our twins would either conflict
//! with the manager that owns the list or (forced) take the whole list over and
//! drop other writers' twins. A plain merge patch replaces the list too. So
//! each write:
//! 1. GETs the object (creating the DeviceStatus if needed),
//! 2. builds `twins` from the list on the server, replacing only
//!    `reported`/`observedDesired` of the properties being reported and keeping
//!    every other twin (and any other key in a twin) as it is,
//! 3. sends a JSON merge patch that names only `status.twins`, `status.state`
//!    and `status.lastOnlineTime` (so `extensions`, `reportCycle`, ... of other
//!    writers are untouched) plus `metadata.resourceVersion` as a precondition,
//!    with `fieldManager` = [`KubeConfig::field_manager`] (so managedFields
//!    name us),
//! 4. on 409 Conflict re-reads and retries (up to
//!    [`writer::MAX_CONFLICT_RETRIES`]).
//!
//! The patch goes to `/status` when the CRD has the status subresource and to
//! the main resource when not (KubeEdge's own CRDs have none); `auto` tries
//! `/status` and falls back on 404, remembering the answer.
//!
//! # RBAC
//! `get, list, watch` on devices and devicemodels; `get, patch` on devices
//! (and `devices/status`) or devicestatuses (and `/status`), `create` on
//! devicestatuses in `deviceStatus` mode; `create` on events when `events: true`.
#![forbid(unsafe_code)]

pub mod config;
pub mod inventory;
pub mod status;
pub mod writer;

use futures::{Stream, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use mapper_core::backend::{now_ms, BackendEvent, BackendIo, Report};
use mapper_core::model::{Device, DeviceId, DeviceModel};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use config::{KubeConfig, StatusMode, StatusSubresource};
use inventory::Inventory;
use status::Coalescer;
use writer::Writer;

/// Errors of the Kubernetes backend.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// A configuration key has a bad value.
    #[error("kube backend config: {key}: {value:?} is not valid (expected {expected})")]
    Config {
        key: String,
        value: String,
        expected: String,
    },
    /// An API request failed.
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// JSON (de)serialisation of an object failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A status write kept conflicting with other writers.
    #[error("status of {device}: still conflicting after {attempts} attempts")]
    Conflict { device: DeviceId, attempts: usize },
    /// The Device is gone from the API server.
    #[error("device {0} no longer exists")]
    Gone(DeviceId),
    /// A watch stream ended (it should not: the watcher retries).
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

impl KubeError {
    /// Worth retrying later (network, server, conflict), as opposed to a
    /// request the server will refuse again (403, 422, ...).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api(kube::Error::Api(s)) => s.code == 409 || s.code == 429 || s.code >= 500,
            Self::Api(_) | Self::Conflict { .. } => true,
            _ => false,
        }
    }
}

/// Installs rustls' `ring` crypto provider as the process default, once (a
/// workspace that also links another provider, e.g. through rumqttc, makes
/// kube's client panic otherwise). Call before building a `kube::Client`.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Capacity of the channel from the watch tasks to the backend loop.
const WATCH_CHANNEL_CAPACITY: usize = 256;

enum Watched {
    Device(watcher::Event<DynamicObject>),
    Model(watcher::Event<DynamicObject>),
}

/// Runs the backend until `io.shutdown` is cancelled or the core goes away.
pub async fn run(config: KubeConfig, client: Client, io: BackendIo) -> Result<(), KubeError> {
    config.validate()?;
    install_crypto_provider();
    let BackendIo {
        events,
        mut reports,
        shutdown,
    } = io;
    info!(node = %config.node_name, namespace = ?config.namespace, mode = ?config.status_mode,
          subresource = ?config.status_subresource, "kube backend starting");

    let api = |ar: &ApiResource| match &config.namespace {
        Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, ar),
        None => Api::<DynamicObject>::all_with(client.clone(), ar),
    };
    let (watch_tx, mut watch_rx) = mpsc::channel(WATCH_CHANNEL_CAPACITY);
    let device_stream = watcher(
        api(&ApiResource::erase::<Device>(&())),
        watcher::Config::default(),
    )
    .default_backoff();
    let model_stream = watcher(
        api(&ApiResource::erase::<DeviceModel>(&())),
        watcher::Config::default(),
    )
    .default_backoff();
    let tasks = [
        tokio::spawn(pump(
            "devices",
            device_stream,
            Watched::Device,
            watch_tx.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(pump(
            "devicemodels",
            model_stream,
            Watched::Model,
            watch_tx,
            shutdown.clone(),
        )),
    ];

    let mut inventory = Inventory::new(config.node_name.clone());
    let mut coalescer = Coalescer::new(config.min_status_interval());
    let mut writer = Writer::new(client.clone(), config.clone());
    let result = loop {
        let next_write = coalescer.next_due();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            w = watch_rx.recv() => {
                let out = match w {
                    Some(Watched::Device(ev)) => inventory.on_device(ev),
                    Some(Watched::Model(ev)) => inventory.on_model(ev),
                    None => break Err(KubeError::WatchEnded("device or model")),
                };
                for ev in out {
                    if let BackendEvent::Remove(id) = &ev {
                        coalescer.remove(id);
                    }
                    log_event(&ev);
                    tokio::select! {
                        _ = shutdown.cancelled() => return finish(tasks, Ok(())).await,
                        sent = events.send(ev) => if sent.is_err() {
                            info!("core gone: kube backend stopping");
                            return finish(tasks, Ok(())).await;
                        }
                    }
                }
            }
            r = reports.recv() => match r {
                Some(report) => {
                    if !on_report(&config, &inventory, &mut writer, &mut coalescer, report, &shutdown).await {
                        break Ok(());
                    }
                }
                None => {
                    info!("report channel closed: kube backend stopping");
                    break Ok(());
                }
            },
            _ = sleep_until_opt(next_write) => {
                let now = Instant::now();
                for (id, pending) in coalescer.take_due(now.into_std()) {
                    let Some(device) = inventory.device(&id).cloned() else {
                        debug!(device = %id, "status for an unknown device dropped");
                        continue;
                    };
                    let res = tokio::select! {
                        _ = shutdown.cancelled() => return finish(tasks, Ok(())).await,
                        r = writer.write(&device, &pending) => r,
                    };
                    if let Err(error) = res {
                        if error.is_transient() {
                            warn!(device = %id, %error, "status write failed: will retry");
                            coalescer.requeue(id, pending, now.into_std());
                        } else {
                            warn!(device = %id, %error, "status write refused: dropped");
                        }
                    }
                }
            }
        }
    };
    finish(tasks, result).await
}

async fn finish(
    tasks: [tokio::task::JoinHandle<()>; 2],
    result: Result<(), KubeError>,
) -> Result<(), KubeError> {
    for t in tasks {
        t.abort();
        let _ = t.await;
    }
    info!(ok = result.is_ok(), "kube backend stopped");
    result
}

fn log_event(ev: &BackendEvent) {
    match ev {
        BackendEvent::Sync(b) => info!(devices = b.len(), "sync"),
        BackendEvent::Upsert(b) => info!(device = %b.id(), "upsert"),
        BackendEvent::Remove(id) => info!(device = %id, "remove"),
        _ => {}
    }
}

/// Handles one report: Events for rejections now, the rest to the coalescer.
/// Returns false when shutting down.
async fn on_report(
    config: &KubeConfig,
    inventory: &Inventory,
    writer: &mut Writer,
    coalescer: &mut Coalescer,
    report: Report,
    shutdown: &CancellationToken,
) -> bool {
    let Some(device) = inventory.device(&report.device) else {
        debug!(device = %report.device, "report for an unknown device dropped");
        return true;
    };
    if config.events {
        for rejection in &report.rejections {
            let res = tokio::select! {
                _ = shutdown.cancelled() => return false,
                r = writer.reject_event(device, rejection) => r,
            };
            match res {
                Ok(()) => {
                    info!(device = %report.device, property = %rejection.property, value = %rejection.value, "rejection event created")
                }
                Err(error) => {
                    warn!(device = %report.device, property = %rejection.property, %error, "rejection event not created")
                }
            }
        }
    }
    coalescer.push(&report, Instant::now().into_std(), now_ms());
    true
}

async fn sleep_until_opt(t: Option<std::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// Forwards a watcher stream into the bounded channel; errors are logged (the
/// watcher retries with backoff itself).
async fn pump<S, F>(
    what: &'static str,
    stream: S,
    wrap: F,
    tx: mpsc::Sender<Watched>,
    shutdown: CancellationToken,
) where
    S: Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Send + 'static,
    F: Fn(watcher::Event<DynamicObject>) -> Watched + Send + 'static,
{
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            item = stream.next() => match item {
                Some(Ok(ev)) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        sent = tx.send(wrap(ev)) => if sent.is_err() { return },
                    }
                }
                Some(Err(error)) => warn!(resource = what, %error, "watch error (retrying)"),
                None => {
                    warn!(resource = what, "watch stream ended");
                    return;
                }
            }
        }
    }
}
