//! Status writes and Events against the API server.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use mapper_core::backend::Rejection;
use mapper_core::model::{Device, DeviceId, DeviceStatus};
use serde_json::{json, Value};
use tracing::{debug, info};

use crate::config::{KubeConfig, StatusMode, StatusSubresource};
use crate::status::{status_patch, Pending};
use crate::KubeError;

/// Attempts of one read-modify-write before giving up (each 409 Conflict retries).
pub const MAX_CONFLICT_RETRIES: usize = 5;

/// Writes statuses as read-modify-write merge patches with a
/// `resourceVersion` precondition.
pub struct Writer {
    client: Client,
    config: KubeConfig,
    resource: ApiResource,
    /// `auto` mode: what the server showed about the status subresource.
    subresource: Option<bool>,
    event_seq: u64,
}

fn api_err(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    api_err(e).is_some_and(|s| s.code == code)
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("resource", &self.resource.plural)
            .field("subresource", &self.subresource)
            .finish_non_exhaustive()
    }
}

impl Writer {
    pub fn new(client: Client, config: KubeConfig) -> Self {
        let resource = match config.status_mode {
            StatusMode::Device => ApiResource::erase::<Device>(&()),
            StatusMode::DeviceStatus => ApiResource::erase::<DeviceStatus>(&()),
        };
        let subresource = match config.status_subresource {
            StatusSubresource::Auto => None,
            StatusSubresource::Yes => Some(true),
            StatusSubresource::No => Some(false),
        };
        Self {
            client,
            config,
            resource,
            subresource,
            event_seq: 0,
        }
    }

    fn params(&self) -> PatchParams {
        PatchParams {
            field_manager: Some(self.config.field_manager.clone()),
            ..Default::default()
        }
    }

    /// Writes `pending` into the status of `device` (or of its DeviceStatus).
    pub async fn write(&mut self, device: &Device, pending: &Pending) -> Result<(), KubeError> {
        let id = DeviceId::of(device);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &id.namespace, &self.resource);
        for attempt in 1..=MAX_CONFLICT_RETRIES {
            let current = match api.get_opt(&id.name).await? {
                Some(obj) => obj,
                None if self.config.status_mode == StatusMode::DeviceStatus => {
                    self.create_device_status(&api, device).await?
                }
                None => return Err(KubeError::Gone(id)),
            };
            let rv = current.metadata.resource_version.clone();
            let patch = status_patch(current.data.get("status"), rv.as_deref(), pending);
            match self.patch(&api, &id.name, &patch).await {
                Ok(()) => {
                    debug!(device = %id, twins = pending.twins.len(), state = ?pending.state, attempt, "status written");
                    return Ok(());
                }
                Err(e) if is_code(&e, 409) => {
                    debug!(device = %id, attempt, "status write conflict: re-reading");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(KubeError::Conflict {
            device: id,
            attempts: MAX_CONFLICT_RETRIES,
        })
    }

    async fn patch(
        &mut self,
        api: &Api<DynamicObject>,
        name: &str,
        patch: &Value,
    ) -> Result<(), kube::Error> {
        let pp = self.params();
        let body = Patch::Merge(patch);
        if self.subresource != Some(false) {
            match api.patch_status(name, &pp, &body).await {
                Ok(_) => {
                    if self.subresource.is_none() {
                        info!(resource = %self.resource.plural, "status subresource found: writing to /status");
                        self.subresource = Some(true);
                    }
                    return Ok(());
                }
                // The object was just read, so a 404 here means no /status.
                Err(e) if self.subresource.is_none() && is_code(&e, 404) => {
                    info!(resource = %self.resource.plural, "no status subresource: writing status on the main resource");
                    self.subresource = Some(false);
                }
                Err(e) => return Err(e),
            }
        }
        api.patch(name, &pp, &body).await.map(|_| ())
    }

    async fn create_device_status(
        &self,
        api: &Api<DynamicObject>,
        device: &Device,
    ) -> Result<DynamicObject, KubeError> {
        let id = DeviceId::of(device);
        let owner = json!({
            "apiVersion": Device::api_version(&()),
            "kind": Device::kind(&()),
            "name": id.name,
            "uid": device.metadata.uid.clone().unwrap_or_default(),
            "controller": true,
            "blockOwnerDeletion": false,
        });
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": DeviceStatus::api_version(&()),
            "kind": DeviceStatus::kind(&()),
            "metadata": {"name": id.name, "namespace": id.namespace, "ownerReferences": [owner]},
            "spec": {},
        }))?;
        let pp = PostParams {
            field_manager: Some(self.config.field_manager.clone()),
            ..Default::default()
        };
        match api.create(&pp, &obj).await {
            Ok(created) => {
                info!(device = %id, "DeviceStatus created");
                Ok(created)
            }
            Err(e) if api_err(&e).is_some_and(|s| s.is_already_exists()) => {
                Ok(api.get(&id.name).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A core/v1 Event (`DesiredValueRejected`, Warning) on the Device.
    pub async fn reject_event(
        &mut self,
        device: &Device,
        rejection: &Rejection,
    ) -> Result<(), KubeError> {
        let id = DeviceId::of(device);
        self.event_seq += 1;
        let now = k8s_openapi::jiff::Timestamp::now();
        let name = format!(
            "{}.{:x}{:04x}",
            id.name,
            now.as_nanosecond() as u64,
            self.event_seq & 0xffff
        );
        let ev = Event {
            metadata: kube::api::ObjectMeta {
                name: Some(name),
                namespace: Some(id.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(Device::api_version(&()).into()),
                kind: Some(Device::kind(&()).into()),
                name: Some(id.name.clone()),
                namespace: Some(id.namespace.clone()),
                uid: device.metadata.uid.clone(),
                resource_version: device.metadata.resource_version.clone(),
                field_path: Some(format!("spec.properties{{{}}}.desired", rejection.property)),
            },
            reason: Some("DesiredValueRejected".into()),
            message: Some(format!(
                "desired value {:?} of property {} rejected: {}",
                rejection.value, rejection.property, rejection.reason
            )),
            type_: Some("Warning".into()),
            source: Some(EventSource {
                component: Some(self.config.field_manager.clone()),
                host: Some(self.config.node_name.clone()),
            }),
            reporting_component: Some(self.config.field_manager.clone()),
            reporting_instance: Some(self.config.node_name.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &id.namespace);
        api.create(
            &PostParams {
                field_manager: Some(self.config.field_manager.clone()),
                ..Default::default()
            },
            &ev,
        )
        .await?;
        Ok(())
    }
}
