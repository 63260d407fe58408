//! The manager: one loop that applies backend events to the set of running
//! devices, logging every decision. Devices are planned against the message
//! registry; a device whose plan fails is not started (and logged), a
//! property whose plan fails is left out of its device.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ros2::dds::{DiscoveryRange, Participant, ParticipantConfig};
use ros2::msg::Registry;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendEvent, DeviceBinding, PushSample, Report};
use crate::device::{spawn_device, DeviceCmd, DeviceHandle, DeviceOutputs};
use crate::metrics::Metrics;
use crate::model::DeviceId;
use crate::visitor::{plan_device, DevicePlan, PlanDefaults};

/// How the manager reaches DDS and plans devices.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub defaults: PlanDefaults,
    /// Discovery range and interfaces of the participants (one per domain).
    pub discovery_range: DiscoveryRange,
    pub only_networks: Option<Vec<std::net::IpAddr>>,
}

/// What the manager serves, for `/readyz` and status pages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagerStatus {
    /// Whether the backend has delivered its first device list.
    pub synced: bool,
    /// Devices served, with their property counts.
    pub devices: BTreeMap<String, usize>,
    /// Configuration errors of the current devices.
    pub errors: Vec<String>,
}

struct Running {
    plan: DevicePlan,
    handle: DeviceHandle,
    /// The desired value last forwarded per property.
    desired: HashMap<String, String>,
}

/// Devices by id, and the DDS participants they share.
pub struct Manager {
    config: ManagerConfig,
    registry: Arc<Registry>,
    participants: HashMap<u16, Participant>,
    devices: HashMap<DeviceId, Running>,
    outputs: DeviceOutputs,
    status: watch::Sender<ManagerStatus>,
    errors: BTreeMap<DeviceId, Vec<String>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

impl Manager {
    pub fn new(
        config: ManagerConfig,
        registry: Arc<Registry>,
        reports: mpsc::Sender<Report>,
        pushes: Option<mpsc::Sender<PushSample>>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            config,
            registry,
            participants: HashMap::new(),
            devices: HashMap::new(),
            outputs: DeviceOutputs {
                reports,
                pushes,
                metrics,
            },
            status: watch::Sender::new(ManagerStatus::default()),
            errors: BTreeMap::new(),
            shutdown,
        }
    }

    /// A receiver of status snapshots.
    pub fn status(&self) -> watch::Receiver<ManagerStatus> {
        self.status.subscribe()
    }

    /// Applies backend events until the channel closes or shutdown.
    pub async fn run(mut self, mut events: mpsc::Receiver<BackendEvent>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                ev = events.recv() => match ev {
                    Some(ev) => self.handle(ev).await,
                    None => break,
                },
            }
        }
        let ids: Vec<DeviceId> = self.devices.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
        for (_, p) in self.participants.drain() {
            let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        }
    }

    /// Applies one event.
    pub async fn handle(&mut self, ev: BackendEvent) {
        match ev {
            BackendEvent::Sync(list) => {
                let keep: Vec<DeviceId> = list.iter().map(DeviceBinding::id).collect();
                let gone: Vec<DeviceId> = self
                    .devices
                    .keys()
                    .filter(|id| !keep.contains(id))
                    .cloned()
                    .collect();
                for id in gone {
                    tracing::info!(device = %id, "device no longer on this node: stopping");
                    self.stop(&id).await;
                }
                self.errors.retain(|id, _| keep.contains(id));
                for b in list {
                    self.upsert(b).await;
                }
                self.status.send_modify(|s| s.synced = true);
            }
            BackendEvent::Upsert(b) => self.upsert(b).await,
            BackendEvent::Remove(id) => {
                tracing::info!(device = %id, "device removed: stopping");
                self.stop(&id).await;
                self.errors.remove(&id);
            }
            BackendEvent::Desired {
                device,
                property,
                value,
            } => match self.devices.get_mut(&device) {
                Some(r) => {
                    r.desired.insert(property.clone(), value.clone());
                    let _ = r
                        .handle
                        .cmd
                        .send(DeviceCmd::Desired { property, value })
                        .await;
                }
                None => {
                    tracing::warn!(%device, %property, "desired value for a device this mapper does not serve")
                }
            },
            BackendEvent::Resync => {
                tracing::info!(
                    devices = self.devices.len(),
                    "backend asked for a full re-report"
                );
                for r in self.devices.values() {
                    let _ = r.handle.cmd.send(DeviceCmd::Resync).await;
                }
            }
        }
        self.publish_status();
    }

    async fn upsert(&mut self, b: DeviceBinding) {
        let id = b.id();
        let (plan, errors) = plan_device(
            &b.device,
            b.model.as_ref(),
            &self.registry,
            &self.config.defaults,
        );
        for e in &errors {
            tracing::warn!(device = %id, error = %e, "configuration refused");
            self.outputs.metrics.config_errors.inc();
        }
        self.errors
            .insert(id.clone(), errors.iter().map(ToString::to_string).collect());
        let Some(plan) = plan else {
            self.stop(&id).await;
            return;
        };
        if let Some(r) = self.devices.get_mut(&id) {
            if r.plan.same_wiring(&plan) {
                // Only desired values may have changed.
                for p in &plan.properties {
                    if let Some(d) = &p.desired {
                        if r.desired.get(&p.name) != Some(d) {
                            r.desired.insert(p.name.clone(), d.clone());
                            let _ = r
                                .handle
                                .cmd
                                .send(DeviceCmd::Desired {
                                    property: p.name.clone(),
                                    value: d.clone(),
                                })
                                .await;
                        }
                    }
                }
                r.plan = plan;
                return;
            }
            tracing::info!(device = %id, "device configuration changed: restarting it");
            self.stop(&id).await;
        }
        let participant = match self.participant(plan.domain_id).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(device = %id, domain_id = plan.domain_id, error = %e, "no DDS participant; device not served");
                return;
            }
        };
        tracing::info!(device = %id, domain_id = plan.domain_id, namespace = %plan.namespace, properties = plan.properties.len(), "serving device");
        let desired = plan
            .properties
            .iter()
            .filter_map(|p| p.desired.clone().map(|d| (p.name.clone(), d)))
            .collect();
        let handle = spawn_device(
            plan.clone(),
            participant,
            self.outputs.clone(),
            &self.shutdown,
        );
        self.devices.insert(
            id,
            Running {
                plan,
                handle,
                desired,
            },
        );
        self.outputs.metrics.devices.set(self.devices.len() as i64);
    }

    async fn stop(&mut self, id: &DeviceId) {
        if let Some(r) = self.devices.remove(id) {
            r.handle.stop().await;
        }
        self.outputs.metrics.devices.set(self.devices.len() as i64);
    }

    async fn participant(&mut self, domain_id: u16) -> Result<Participant, ros2::dds::DdsError> {
        if let Some(p) = self.participants.get(&domain_id) {
            return Ok(p.clone());
        }
        let cfg = ParticipantConfig {
            domain_id,
            discovery_range: self.config.discovery_range,
            only_networks: self.config.only_networks.clone(),
        };
        // Creating a rustdds participant blocks briefly.
        let p = tokio::task::spawn_blocking(move || Participant::new(cfg))
            .await
            .map_err(|e| ros2::dds::DdsError::Write {
                topic: String::new(),
                reason: e.to_string(),
            })??;
        tracing::info!(domain_id, "DDS participant created");
        self.participants.insert(domain_id, p.clone());
        Ok(p)
    }

    fn publish_status(&self) {
        let devices = self
            .devices
            .iter()
            .map(|(id, r)| (id.to_string(), r.plan.properties.len()))
            .collect();
        let errors = self.errors.values().flatten().cloned().collect();
        self.status.send_modify(|s| {
            s.devices = devices;
            s.errors = errors;
        });
    }
}
