//! The edge between the mapper core and a twin backend (MQTT eventbus, DMI
//! gRPC, or the Kubernetes API).
//!
//! A backend runs as one task. It tells the core which devices this node has
//! and what their desired values are ([`BackendEvent`] over a bounded
//! channel), and takes the core's [`Report`]s (reported twins, device state,
//! rejected desired values) and delivers them in its own protocol. Batching,
//! coalescing and rate limits of the far side are the backend's job.

use std::fmt;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::{Device, DeviceId, DeviceModel};

/// Capacity of the channels between core and backend.
pub const CHANNEL_CAPACITY: usize = 1024;

/// A device as the backend knows it: the Device object and its model.
#[derive(Debug, Clone)]
pub struct DeviceBinding {
    pub device: Device,
    pub model: Option<DeviceModel>,
}

impl DeviceBinding {
    pub fn id(&self) -> DeviceId {
        DeviceId::of(&self.device)
    }
}

/// What a backend tells the core.
// Upsert carries a whole Device; events are rare (device changes), so the
// size difference between variants costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum BackendEvent {
    /// The complete set of this node's `ros2` devices (after a (re)connect or
    /// a full list): devices not in it are removed, the others added or updated.
    Sync(Vec<DeviceBinding>),
    /// A device was added or changed (spec, model, or desired values in the spec).
    Upsert(DeviceBinding),
    /// A device was removed from this node.
    Remove(DeviceId),
    /// A desired value arrived outside the Device spec (MQTT `twin/update/delta`).
    Desired {
        device: DeviceId,
        property: String,
        value: String,
    },
    /// The far side lost state (reconnect, edgecore restart): report everything again.
    Resync,
}

/// The state of a device, as KubeEdge names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceState {
    Online,
    Offline,
    Unknown,
}

impl DeviceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reported twin.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinReport {
    pub property: String,
    /// The reported value, in KubeEdge's twin charset (see [`crate::twin`]).
    pub reported: String,
    /// The desired value the mapper has seen and applied, if any.
    pub observed_desired: Option<String>,
    /// The lowercase twin type (`float`, `int`, ...), for `metadata.type`.
    pub value_type: &'static str,
    /// When the value was sampled, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

/// A desired value that was not applied, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub property: String,
    pub value: String,
    pub reason: String,
}

/// A batch for one device: every changed twin in one report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub device: DeviceId,
    /// Twins to report (empty when only the state changed).
    pub twins: Vec<TwinReport>,
    /// Set when the state changed, or on a full re-report.
    pub state: Option<DeviceState>,
    /// Desired values refused since the last report.
    pub rejections: Vec<Rejection>,
    /// The properties' `reportToCloud`: `false` means keep local (push only).
    pub report_to_cloud: bool,
}

/// A collected sample for a property with a `pushMethod` (data plane, e.g.
/// MQTT `pushMethod.mqtt`), independent of twin reporting.
#[derive(Debug, Clone, PartialEq)]
pub struct PushSample {
    pub device: DeviceId,
    pub property: String,
    pub value: String,
    pub value_type: &'static str,
    pub timestamp_ms: i64,
    /// The property's `pushMethod` object.
    pub method: serde_json::Value,
}

/// The core's side of a backend: the channels a backend task is given.
#[derive(Debug)]
pub struct BackendIo {
    pub events: mpsc::Sender<BackendEvent>,
    pub reports: mpsc::Receiver<Report>,
    pub shutdown: CancellationToken,
}

/// Creates the channels: the backend gets [`BackendIo`], the core the other ends.
pub fn channels(
    shutdown: CancellationToken,
) -> (
    BackendIo,
    mpsc::Receiver<BackendEvent>,
    mpsc::Sender<Report>,
) {
    let (ev_tx, ev_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (rep_tx, rep_rx) = mpsc::channel(CHANNEL_CAPACITY);
    (
        BackendIo {
            events: ev_tx,
            reports: rep_rx,
            shutdown,
        },
        ev_rx,
        rep_tx,
    )
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
