//! What the backend knows, shared by its client and server sides: the device
//! models, the `ros2` devices as last known, and the latest values reported
//! for each device (for `GetDevice`). Also the counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use mapper_core::backend::{DeviceBinding, DeviceState, Report};
use mapper_core::model::{Device, DeviceId, DeviceModel, DeviceStatusFields, Twin};

use crate::convert::twin_report_to_model;

/// Counters of the DMI backend (monotonic).
#[derive(Debug, Default)]
pub struct DmiStats {
    /// Successful `MapperRegister` calls.
    pub registrations: AtomicU64,
    /// Successful `ReportDeviceStatus` calls.
    pub status_calls: AtomicU64,
    /// Successful `ReportDeviceStates` calls.
    pub state_calls: AtomicU64,
    /// Calls answered "too many request".
    pub rate_limited: AtomicU64,
    /// Calls edgecore refused for another reason (dropped).
    pub refused: AtomicU64,
    /// Desired values the core rejected (DMI has no field for them: logged only).
    pub rejections: AtomicU64,
}

impl DmiStats {
    pub(crate) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Reported {
    twins: BTreeMap<String, Twin>,
    state: Option<DeviceState>,
}

#[derive(Debug, Default)]
struct Inner {
    models: BTreeMap<(String, String), DeviceModel>,
    devices: BTreeMap<DeviceId, Device>,
    reported: BTreeMap<DeviceId, Reported>,
}

/// The tables, behind one lock (never held across an await).
#[derive(Debug, Default)]
pub(crate) struct Tables {
    inner: Mutex<Inner>,
}

fn model_key(m: &DeviceModel) -> (String, String) {
    (
        m.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        m.metadata.name.clone().unwrap_or_default(),
    )
}

impl Inner {
    fn binding(&self, device: &Device) -> DeviceBinding {
        let ns = device
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let model = device
            .spec
            .device_model_ref
            .as_ref()
            .and_then(|r| self.models.get(&(ns, r.name.clone())))
            .cloned();
        DeviceBinding {
            device: device.clone(),
            model,
        }
    }

    fn bindings_using(&self, key: &(String, String)) -> Vec<DeviceBinding> {
        self.devices
            .values()
            .filter(|d| {
                d.metadata.namespace.as_deref().unwrap_or("default") == key.0
                    && d.spec
                        .device_model_ref
                        .as_ref()
                        .is_some_and(|r| r.name == key.1)
            })
            .map(|d| self.binding(d))
            .collect()
    }
}

impl Tables {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the tables down with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces everything with a registration answer; returns the bindings for `Sync`.
    pub fn replace_all(
        &self,
        devices: Vec<Device>,
        models: Vec<DeviceModel>,
    ) -> Vec<DeviceBinding> {
        let mut t = self.lock();
        t.models = models.into_iter().map(|m| (model_key(&m), m)).collect();
        t.devices = devices.into_iter().map(|d| (DeviceId::of(&d), d)).collect();
        let known: Vec<DeviceId> = t.devices.keys().cloned().collect();
        t.reported.retain(|id, _| known.contains(id));
        t.devices.values().map(|d| t.binding(d)).collect()
    }

    pub fn upsert_device(&self, device: Device) -> DeviceBinding {
        let mut t = self.lock();
        let b = t.binding(&device);
        t.devices.insert(DeviceId::of(&device), device);
        b
    }

    pub fn remove_device(&self, id: &DeviceId) -> bool {
        let mut t = self.lock();
        t.reported.remove(id);
        t.devices.remove(id).is_some()
    }

    /// Stores a model; returns the devices using it, re-bound.
    pub fn put_model(&self, model: DeviceModel) -> Vec<DeviceBinding> {
        let mut t = self.lock();
        let key = model_key(&model);
        t.models.insert(key.clone(), model);
        t.bindings_using(&key)
    }

    /// Drops a model; returns the devices that used it, now without a model.
    pub fn remove_model(&self, namespace: &str, name: &str) -> Vec<DeviceBinding> {
        let mut t = self.lock();
        let key = (namespace.to_string(), name.to_string());
        t.models.remove(&key);
        t.bindings_using(&key)
    }

    /// Keeps the latest reported twins and state of a device.
    pub fn record_report(&self, r: &Report) {
        let mut t = self.lock();
        let rep = t.reported.entry(r.device.clone()).or_default();
        for twin in &r.twins {
            rep.twins
                .insert(twin.property.clone(), twin_report_to_model(twin));
        }
        if r.state.is_some() {
            rep.state = r.state;
        }
    }

    /// The device as last known, with its latest reported twins and state in `status`.
    pub fn get_device(&self, id: &DeviceId) -> Option<Device> {
        let t = self.lock();
        let mut d = t.devices.get(id)?.clone();
        if let Some(rep) = t.reported.get(id) {
            let status = d.status.get_or_insert_with(DeviceStatusFields::default);
            let mut twins: BTreeMap<String, Twin> = status
                .twins
                .drain(..)
                .map(|tw| (tw.property_name.clone(), tw))
                .collect();
            for (k, v) in &rep.twins {
                twins.insert(k.clone(), v.clone());
            }
            status.twins = twins.into_values().collect();
            if let Some(s) = rep.state {
                status.state = Some(s.as_str().to_string());
            }
        }
        Some(d)
    }
}
