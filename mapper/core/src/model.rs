//! KubeEdge `devices.kubeedge.io/v1beta1` Device, DeviceModel and DeviceStatus,
//! as Rust types. Field names follow KubeEdge's CRDs; free-form parts
//! (`configData`, `pushMethod`, `metadata` maps) stay JSON.
//!
//! Status: up to KubeEdge 1.22 the twins live in `Device.status`; from 1.23
//! on in a separate `DeviceStatus` object of the same name. Both forms share
//! [`DeviceStatusFields`].

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The protocol name this mapper serves.
pub const PROTOCOL: &str = "ros2";

/// `Device.spec`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "Device",
    namespaced,
    status = "DeviceStatusFields",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSpec {
    /// The DeviceModel (same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_model_ref: Option<DeviceModelRef>,
    /// The node the device is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Device-level protocol configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<DeviceProperty>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<DeviceMethod>,
    /// KubeEdge >= 1.23: how the device state is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_report: Option<StateReport>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DeviceModelRef {
    pub name: String,
}

/// `protocol` of a Device (and `visitors` of a property): a name and free-form config.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolConfig {
    #[serde(default)]
    pub protocol_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub config_data: Option<serde_json::Value>,
}

/// A property of a Device: its visitor and reporting settings, and the
/// desired value set by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProperty {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<TwinProperty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitors: Option<ProtocolConfig>,
    /// Milliseconds between reports of this property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
    /// Milliseconds between reads of this property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_cycle: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_to_cloud: Option<bool>,
    /// Where else samples go (`mqtt: {address, topic, qos, retained}`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub push_method: Option<serde_json::Value>,
}

/// A value with metadata (`desired`, `reported`, `observedDesired`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TwinProperty {
    #[serde(default)]
    pub value: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceMethod {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub property_names: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_to_cloud: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
}

/// The status of a device: in `Device.status` (KubeEdge <= 1.22) or in the
/// `DeviceStatus` object (>= 1.23).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatusFields {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub twins: Vec<Twin>,
    /// online, offline, ok, unknown or unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_online_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_to_cloud: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub extensions: Option<serde_json::Value>,
}

/// One twin in a status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Twin {
    pub property_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<TwinProperty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_desired: Option<TwinProperty>,
}

/// `DeviceStatus.spec` is empty; the status carries the twins.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "DeviceStatus",
    plural = "devicestatuses",
    namespaced,
    status = "DeviceStatusFields"
)]
pub struct DeviceStatusSpec {}

/// `DeviceModel.spec`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "DeviceModel",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceModelSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub protocol_config_data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<ModelProperty>,
}

/// A property of a DeviceModel: type, access mode and limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelProperty {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, rename = "type")]
    pub type_: PropertyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<AccessMode>,
    /// A number, as a string (KubeEdge's CRD types it so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitors: Option<ProtocolConfig>,
}

/// `DeviceModel.spec.properties[].type`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum PropertyType {
    Int,
    Float,
    Double,
    #[default]
    String,
    Boolean,
    Bytes,
    Stream,
}

impl PropertyType {
    /// The lowercase name KubeEdge puts in twin `metadata.type`.
    pub fn twin_type(self) -> &'static str {
        match self {
            Self::Int => "int",
            Self::Float => "float",
            Self::Double => "double",
            Self::String => "string",
            Self::Boolean => "boolean",
            Self::Bytes => "bytes",
            Self::Stream => "stream",
        }
    }
}

/// `DeviceModel.spec.properties[].accessMode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum AccessMode {
    ReadWrite,
    ReadOnly,
}

fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// `namespace/name` of a device (the device ID of KubeEdge >= 1.17).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId {
    pub namespace: String,
    pub name: String,
}

impl DeviceId {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Parses `ns/name` (or a bare `name`, in namespace `default`).
    pub fn parse(s: &str) -> Self {
        match s.split_once('/') {
            Some((ns, name)) => Self::new(ns, name),
            None => Self::new("default", s),
        }
    }

    /// The id of a Device object.
    pub fn of(device: &Device) -> Self {
        Self::new(
            device
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            device.metadata.name.clone().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_yaml_parses_with_free_form_config() {
        let y = r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: robot1, namespace: default}
spec:
  deviceModelRef: {name: ros2-mobile-robot}
  nodeName: edge-node-1
  protocol:
    protocolName: ros2
    configData: {domainId: 3, namespace: /robot1}
  properties:
    - name: battery
      collectCycle: 1000
      reportCycle: 5000
      reportToCloud: true
      visitors:
        protocolName: ros2
        configData: {topic: battery_state, type: sensor_msgs/msg/BatteryState, field: percentage}
    - name: speed
      desired: {value: "0.5", metadata: {type: float}}
"#;
        let d: Device = serde_yaml::from_str(y).unwrap();
        assert_eq!(DeviceId::of(&d).to_string(), "default/robot1");
        assert_eq!(d.spec.properties[0].collect_cycle, Some(1000));
        assert_eq!(d.spec.properties[1].desired.as_ref().unwrap().value, "0.5");
        let cfg = d
            .spec
            .protocol
            .as_ref()
            .unwrap()
            .config_data
            .as_ref()
            .unwrap();
        assert_eq!(cfg["domainId"], 3);
        let back = serde_json::to_value(&d).unwrap();
        assert_eq!(
            back["spec"]["properties"][0]["visitors"]["configData"]["field"],
            "percentage"
        );
    }

    #[test]
    fn model_yaml_parses() {
        let y = r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: ros2-mobile-robot, namespace: default}
spec:
  protocol: ros2
  properties:
    - {name: battery, type: FLOAT, accessMode: ReadOnly, minimum: "0", maximum: "100", unit: percent}
    - {name: speed, type: DOUBLE, accessMode: ReadWrite, minimum: "0", maximum: "1.5"}
"#;
        let m: DeviceModel = serde_yaml::from_str(y).unwrap();
        assert_eq!(m.spec.properties[1].type_, PropertyType::Double);
        assert_eq!(
            m.spec.properties[1].access_mode,
            Some(AccessMode::ReadWrite)
        );
        assert!(serde_yaml::from_str::<DeviceModel>(&y.replace("FLOAT", "REAL")).is_err());
    }
}
