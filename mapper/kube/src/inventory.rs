//! The watched state: this node's `ros2` Devices and all DeviceModels, fed
//! by watcher events, turned into [`BackendEvent`]s. Pure (no I/O).

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use mapper_core::backend::{BackendEvent, DeviceBinding};
use mapper_core::model::{Device, DeviceId, DeviceModel, PROTOCOL};
use tracing::{debug, warn};

/// `(namespace, name)` of a DeviceModel.
type ModelKey = (String, String);

/// What a Device object means to this mapper.
#[derive(Debug)]
pub enum Parsed {
    /// A `ros2` device of this node.
    Ours(Box<Device>),
    /// Another node's, or another protocol's.
    NotOurs(DeviceId),
    /// Does not deserialize as a v1beta1 Device.
    Invalid(DeviceId, String),
}

fn id_of(obj: &DynamicObject) -> DeviceId {
    DeviceId::new(
        obj.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// Classifies a watched Device object.
pub fn parse_device(obj: &DynamicObject, node: &str) -> Parsed {
    let id = id_of(obj);
    let device: Device = match serde_json::to_value(obj).and_then(serde_json::from_value) {
        Ok(d) => d,
        Err(e) => return Parsed::Invalid(id, e.to_string()),
    };
    let node_ok = device.spec.node_name.as_deref() == Some(node);
    let proto_ok = device
        .spec
        .protocol
        .as_ref()
        .is_some_and(|p| p.protocol_name == PROTOCOL);
    if node_ok && proto_ok {
        Parsed::Ours(Box::new(device))
    } else {
        Parsed::NotOurs(id)
    }
}

fn parse_model(obj: &DynamicObject) -> Result<DeviceModel, String> {
    serde_json::to_value(obj)
        .and_then(serde_json::from_value)
        .map_err(|e| e.to_string())
}

fn model_key_of(obj: &DynamicObject) -> ModelKey {
    (
        obj.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// This node's devices and the models, with the relist bookkeeping.
#[derive(Debug)]
pub struct Inventory {
    node: String,
    devices: BTreeMap<DeviceId, Device>,
    models: BTreeMap<ModelKey, DeviceModel>,
    device_buf: Option<BTreeMap<DeviceId, Device>>,
    model_buf: Option<BTreeMap<ModelKey, DeviceModel>>,
    devices_listed: bool,
    models_listed: bool,
}

impl Inventory {
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            devices: BTreeMap::new(),
            models: BTreeMap::new(),
            device_buf: None,
            model_buf: None,
            devices_listed: false,
            models_listed: false,
        }
    }

    /// Both initial lists are in: events go to the core.
    pub fn ready(&self) -> bool {
        self.devices_listed && self.models_listed
    }

    /// A known device of this node.
    pub fn device(&self, id: &DeviceId) -> Option<&Device> {
        self.devices.get(id)
    }

    fn model_for(&self, device: &Device) -> Option<DeviceModel> {
        let ns = device
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = device.spec.device_model_ref.as_ref()?.name.clone();
        self.models.get(&(ns, name)).cloned()
    }

    fn binding(&self, device: &Device) -> DeviceBinding {
        DeviceBinding {
            device: device.clone(),
            model: self.model_for(device),
        }
    }

    fn sync(&self) -> BackendEvent {
        BackendEvent::Sync(self.devices.values().map(|d| self.binding(d)).collect())
    }

    /// A Device watcher event.
    pub fn on_device(&mut self, ev: Event<DynamicObject>) -> Vec<BackendEvent> {
        match ev {
            Event::Init => {
                debug!("device list started");
                self.device_buf = Some(BTreeMap::new());
                vec![]
            }
            Event::InitApply(obj) => {
                let node = self.node.clone();
                if let (Some(buf), Some(d)) = (self.device_buf.as_mut(), keep_ours(&obj, &node)) {
                    buf.insert(DeviceId::of(&d), d);
                }
                vec![]
            }
            Event::InitDone => {
                self.devices = self.device_buf.take().unwrap_or_default();
                self.devices_listed = true;
                debug!(devices = self.devices.len(), "device list done");
                if self.ready() {
                    vec![self.sync()]
                } else {
                    vec![]
                }
            }
            Event::Apply(obj) => {
                let (id, new) = match parse_device(&obj, &self.node) {
                    Parsed::Ours(d) => (DeviceId::of(&d), Some(*d)),
                    Parsed::NotOurs(id) => (id, None),
                    Parsed::Invalid(id, error) => {
                        warn!(device = %id, %error, "invalid Device object: skipped");
                        (id, None)
                    }
                };
                match new {
                    Some(d) => {
                        let changed = self.devices.get(&id).is_none_or(|old| {
                            old.spec != d.spec || old.metadata.uid != d.metadata.uid
                        });
                        // Keep the latest object (resourceVersion, uid) in any case.
                        self.devices.insert(id, d.clone());
                        if changed && self.ready() {
                            vec![BackendEvent::Upsert(self.binding(&d))]
                        } else {
                            vec![]
                        }
                    }
                    None => self.forget(&id),
                }
            }
            Event::Delete(obj) => self.forget(&id_of(&obj)),
        }
    }

    fn forget(&mut self, id: &DeviceId) -> Vec<BackendEvent> {
        if self.devices.remove(id).is_some() && self.ready() {
            vec![BackendEvent::Remove(id.clone())]
        } else {
            vec![]
        }
    }

    /// A DeviceModel watcher event.
    pub fn on_model(&mut self, ev: Event<DynamicObject>) -> Vec<BackendEvent> {
        match ev {
            Event::Init => {
                self.model_buf = Some(BTreeMap::new());
                vec![]
            }
            Event::InitApply(obj) => {
                let key = model_key_of(&obj);
                match parse_model(&obj) {
                    Ok(m) => {
                        if let Some(buf) = self.model_buf.as_mut() {
                            buf.insert(key, m);
                        }
                    }
                    Err(error) => {
                        warn!(model = %format!("{}/{}", key.0, key.1), %error, "invalid DeviceModel object: ignored")
                    }
                }
                vec![]
            }
            Event::InitDone => {
                self.models = self.model_buf.take().unwrap_or_default();
                self.models_listed = true;
                debug!(models = self.models.len(), "model list done");
                if self.ready() {
                    vec![self.sync()]
                } else {
                    vec![]
                }
            }
            Event::Apply(obj) => {
                let key = model_key_of(&obj);
                let new = match parse_model(&obj) {
                    Ok(m) => Some(m),
                    Err(error) => {
                        warn!(model = %format!("{}/{}", key.0, key.1), %error, "invalid DeviceModel object: treated as absent");
                        None
                    }
                };
                let changed = match (&new, self.models.get(&key)) {
                    (Some(n), Some(o)) => n.spec != o.spec,
                    (None, None) => false,
                    _ => true,
                };
                match new {
                    Some(m) => self.models.insert(key.clone(), m),
                    None => self.models.remove(&key),
                };
                if changed {
                    self.users_of(&key)
                } else {
                    vec![]
                }
            }
            Event::Delete(obj) => {
                let key = model_key_of(&obj);
                if self.models.remove(&key).is_some() {
                    self.users_of(&key)
                } else {
                    vec![]
                }
            }
        }
    }

    /// Upserts for the devices that use a model.
    fn users_of(&self, key: &ModelKey) -> Vec<BackendEvent> {
        if !self.ready() {
            return vec![];
        }
        self.devices
            .values()
            .filter(|d| {
                d.metadata.namespace.as_deref().unwrap_or("default") == key.0
                    && d.spec
                        .device_model_ref
                        .as_ref()
                        .is_some_and(|r| r.name == key.1)
            })
            .map(|d| BackendEvent::Upsert(self.binding(d)))
            .collect()
    }
}

fn keep_ours(obj: &DynamicObject, node: &str) -> Option<Device> {
    match parse_device(obj, node) {
        Parsed::Ours(d) => Some(*d),
        Parsed::NotOurs(_) => None,
        Parsed::Invalid(id, error) => {
            warn!(device = %id, %error, "invalid Device object: skipped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    fn device(name: &str, node: &str, proto: &str, desired: &str) -> DynamicObject {
        obj(json!({
            "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"nodeName": node, "deviceModelRef": {"name": "m"},
                     "protocol": {"protocolName": proto},
                     "properties": [{"name": "speed", "desired": {"value": desired}}]}
        }))
    }

    fn model(max: &str) -> DynamicObject {
        obj(json!({
            "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "m", "namespace": "default"},
            "spec": {"protocol": "ros2", "properties": [{"name": "speed", "type": "DOUBLE", "maximum": max}]}
        }))
    }

    fn listed(
        inv: &mut Inventory,
        devices: Vec<DynamicObject>,
        models: Vec<DynamicObject>,
    ) -> Vec<BackendEvent> {
        let mut out = vec![];
        out.extend(inv.on_device(Event::Init));
        for d in devices {
            out.extend(inv.on_device(Event::InitApply(d)));
        }
        out.extend(inv.on_device(Event::InitDone));
        out.extend(inv.on_model(Event::Init));
        for m in models {
            out.extend(inv.on_model(Event::InitApply(m)));
        }
        out.extend(inv.on_model(Event::InitDone));
        out
    }

    #[test]
    fn sync_after_both_lists_with_only_ours() {
        let mut inv = Inventory::new("n1");
        let mut garbage = device("bad", "n1", "ros2", "1");
        garbage.data["spec"]["properties"][0]["reportCycle"] = json!("fast");
        let ev = listed(
            &mut inv,
            vec![
                device("a", "n1", "ros2", "1"),
                device("b", "n2", "ros2", "1"),
                device("c", "n1", "modbus", "1"),
                garbage,
            ],
            vec![model("2")],
        );
        assert_eq!(ev.len(), 1);
        let BackendEvent::Sync(b) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].id(), DeviceId::new("default", "a"));
        assert_eq!(
            b[0].model.as_ref().unwrap().spec.properties[0]
                .maximum
                .as_deref(),
            Some("2")
        );
    }

    #[test]
    fn changes_upsert_remove_and_model_reupserts() {
        let mut inv = Inventory::new("n1");
        listed(
            &mut inv,
            vec![device("a", "n1", "ros2", "1")],
            vec![model("2")],
        );
        // Same spec (e.g. our own status write): nothing.
        assert!(inv
            .on_device(Event::Apply(device("a", "n1", "ros2", "1")))
            .is_empty());
        let ev = inv.on_device(Event::Apply(device("a", "n1", "ros2", "0.5")));
        assert!(
            matches!(&ev[..], [BackendEvent::Upsert(b)] if b.device.spec.properties[0].desired.as_ref().unwrap().value == "0.5")
        );
        let ev = inv.on_model(Event::Apply(model("3")));
        assert!(
            matches!(&ev[..], [BackendEvent::Upsert(b)] if b.model.as_ref().unwrap().spec.properties[0].maximum.as_deref() == Some("3"))
        );
        assert!(inv.on_model(Event::Apply(model("3"))).is_empty());
        // Moved to another node: removed.
        let ev = inv.on_device(Event::Apply(device("a", "n2", "ros2", "0.5")));
        assert!(matches!(&ev[..], [BackendEvent::Remove(id)] if id.name == "a"));
        assert!(inv
            .on_device(Event::Delete(device("a", "n2", "ros2", "0.5")))
            .is_empty());
        inv.on_device(Event::Apply(device("a", "n1", "ros2", "0.5")));
        let mut bad = device("a", "n1", "ros2", "0.5");
        bad.data["spec"]["properties"] = json!("garbage");
        let ev = inv.on_device(Event::Apply(bad));
        assert!(matches!(&ev[..], [BackendEvent::Remove(_)]));
        inv.on_device(Event::Apply(device("a", "n1", "ros2", "0.5")));
        let ev = inv.on_device(Event::Delete(device("a", "n1", "ros2", "0.5")));
        assert!(matches!(&ev[..], [BackendEvent::Remove(_)]));
    }

    #[test]
    fn relist_gives_new_sync() {
        let mut inv = Inventory::new("n1");
        listed(
            &mut inv,
            vec![device("a", "n1", "ros2", "1")],
            vec![model("2")],
        );
        assert!(inv.on_device(Event::Init).is_empty());
        assert!(inv
            .on_device(Event::InitApply(device("b", "n1", "ros2", "1")))
            .is_empty());
        let ev = inv.on_device(Event::InitDone);
        let [BackendEvent::Sync(b)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(b.iter().map(|b| b.id().name).collect::<Vec<_>>(), ["b"]);
    }
}
