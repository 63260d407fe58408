//! The `ros2` protocol configuration: device-level `spec.protocol.configData`
//! and property-level `visitors.configData`, and their resolution against the
//! message registry into a [`DevicePlan`].
//!
//! A property names where its value comes from (`read`) and/or where desired
//! values go (`write`). The flat form covers the common case:
//!
//! ```yaml
//! visitors:
//!   protocolName: ros2
//!   configData:
//!     topic: battery_state              # relative to the device namespace
//!     type: sensor_msgs/msg/BatteryState
//!     field: percentage
//!     direction: read                   # read (default) | write | readwrite
//!     scale: 100                        # twin = raw * scale + offset
//! ```
//! Every key of the flat form is a scalar, because edgecore (DMI) passes only
//! scalar `configData` values to mappers: QoS is `reliability`/`durability`/
//! `depth`, a read-back on another topic is `readbackTopic`/`readbackType`/
//! `readbackField`, `template` may be a JSON string, and `enum` may be a
//! string `"1:charging,2:discharging"`.
//!
//! The split form (nested objects: MQTT and kube backends only) names both sides, e.g. a speed limit written as
//! `geometry_msgs/msg/Twist.linear.x` on `cmd_vel` and read back from `odom`:
//! ```yaml
//!     write: {topic: cmd_vel, type: geometry_msgs/msg/Twist, field: linear.x,
//!             template: {angular: {z: 0.0}}}
//!     read:  {topic: odom, type: nav_msgs/msg/Odometry, field: twist.twist.linear.x}
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ros2::dds::Qos;
use ros2::msg::{Layout, LayoutType, Registry};
use ros2::names::{Namespace, RosName, TypeName};
use ros2::value::{FieldPath, Value};
use serde::{Deserialize, Serialize};

use crate::model::{Device, DeviceId, DeviceModel, ModelProperty, PROTOCOL};
use crate::twin::Conversion;

/// Device-level `spec.protocol.configData` of a `ros2` device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceProtocolConfig {
    /// DDS domain of the robot. Default: the mapper's `ros.domainId`.
    #[serde(default)]
    pub domain_id: Option<u16>,
    /// Namespace that relative topic names are resolved in (`/robot1`). Default `/`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// A read property with no sample for this many collect cycles is stale;
    /// a device whose read properties are all stale is offline. Default 3.
    #[serde(default)]
    pub liveness_cycles: Option<u32>,
}

/// Which way a flat-form property goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A sensor: the field's value becomes the reported twin.
    #[default]
    Read,
    /// An actuator: desired values are published.
    Write,
    /// Both, on the same topic and field.
    ReadWrite,
}

/// Property-level `visitors.configData` of a `ros2` property.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ros2Visitor {
    /// Flat form: the topic (ROS name, relative to the device namespace).
    #[serde(default)]
    pub topic: Option<String>,
    /// Flat form: the message type, `pkg/msg/Name`.
    #[serde(default, rename = "type")]
    pub type_name: Option<String>,
    /// Flat form: the field path, e.g. `pose.pose.position.x`.
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub direction: Option<Direction>,
    /// Flat form: QoS of both sides.
    #[serde(default)]
    pub qos: Option<Qos>,
    /// Flat form, scalar QoS: `reliable` | `best_effort`.
    #[serde(default)]
    pub reliability: Option<ros2::dds::Reliability>,
    /// Flat form, scalar QoS: `volatile` | `transient_local`.
    #[serde(default)]
    pub durability: Option<ros2::dds::Durability>,
    /// Flat form, scalar QoS: history depth (keep last N).
    #[serde(default)]
    pub depth: Option<u32>,
    /// Flat form: the message written, before the field is set (JSON form,
    /// or a string holding it; missing fields take their defaults).
    #[serde(default)]
    pub template: Option<serde_json::Value>,
    /// Flat form, write direction: confirm on this topic (read-back).
    #[serde(default)]
    pub readback_topic: Option<String>,
    /// Read-back type (default: `type`).
    #[serde(default)]
    pub readback_type: Option<String>,
    /// Read-back field (default: `field`).
    #[serde(default)]
    pub readback_field: Option<String>,
    /// Split form: where the reported value comes from.
    #[serde(default)]
    pub read: Option<EndpointConfig>,
    /// Split form: where desired values go.
    #[serde(default)]
    pub write: Option<EndpointConfig>,
    /// twin = raw * scale + offset (and the inverse for desired values). Default 1.
    #[serde(default)]
    pub scale: Option<f64>,
    /// Default 0.
    #[serde(default)]
    pub offset: Option<f64>,
    /// Raw value -> twin label (`{"1": "charging"}`), inverted for desired values.
    #[serde(default, rename = "enum")]
    pub enum_map: Option<EnumMap>,
    /// On-change reporting: a numeric change smaller than this is not reported
    /// before the report cycle. Default 0 (any change).
    #[serde(default)]
    pub deadband: Option<f64>,
    /// Computes the twin from the read field: `yaw` turns a
    /// `geometry_msgs/msg/Quaternion` field into its yaw angle in radians.
    #[serde(default)]
    pub transform: Option<Transform>,
}

/// A computation applied to the read field before it becomes a twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Transform {
    /// Yaw (rotation about z, radians) of a quaternion.
    Yaw,
}

impl Transform {
    /// Applies the transform to the field value.
    pub fn apply(self, v: &Value) -> Option<Value> {
        match self {
            Self::Yaw => {
                let c = |n: &str| v.field(n).and_then(Value::as_f64);
                let (x, y, z, w) = (c("x")?, c("y")?, c("z")?, c("w")?);
                Some(Value::F64(
                    (2.0 * (w * z + x * y)).atan2(1.0 - 2.0 * (y * y + z * z)),
                ))
            }
        }
    }
}

/// An enum map as an object or as a `raw:label,raw:label` string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnumMap {
    Map(BTreeMap<String, String>),
    Text(String),
}

impl EnumMap {
    fn resolve(&self) -> Result<BTreeMap<String, String>, String> {
        match self {
            Self::Map(m) => Ok(m.clone()),
            Self::Text(t) => t
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|pair| {
                    pair.split_once(':')
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .ok_or_else(|| format!("{pair:?} is not raw:label"))
                })
                .collect(),
        }
    }
}

/// One side of a split-form visitor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointConfig {
    pub topic: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub field: String,
    #[serde(default)]
    pub qos: Option<Qos>,
    /// Write side only: the message before the field is set.
    #[serde(default)]
    pub template: Option<serde_json::Value>,
}

/// A configuration error that names the key, the bad value and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("device {device}{}: {key}: {message}", property.as_ref().map(|p| format!(" property {p}")).unwrap_or_default())]
pub struct ConfigError {
    pub device: DeviceId,
    pub property: Option<String>,
    /// The key, e.g. `visitors.configData.field`.
    pub key: String,
    pub message: String,
}

/// Defaults that come from the mapper's own configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanDefaults {
    pub domain_id: u16,
    pub collect_cycle: Duration,
    pub report_cycle: Duration,
    pub liveness_cycles: u32,
}

impl Default for PlanDefaults {
    fn default() -> Self {
        Self {
            domain_id: 0,
            collect_cycle: Duration::from_millis(1000),
            report_cycle: Duration::from_millis(10_000),
            liveness_cycles: 3,
        }
    }
}

/// A resolved topic side of a property.
#[derive(Debug, Clone)]
pub struct TopicBinding {
    pub ros_name: RosName,
    pub dds_topic: String,
    pub layout: Arc<Layout>,
    pub path: FieldPath,
    /// The element type at `path`.
    pub leaf: LayoutType,
    /// Whether `path` names a whole array or sequence.
    pub is_array: bool,
    pub qos: Qos,
}

impl TopicBinding {
    /// Topics sharing one DDS reader/writer: same DDS topic, type and QoS.
    pub fn key(&self) -> (String, String, String) {
        (
            self.dds_topic.clone(),
            self.layout.dds_type_name(),
            format!("{:?}", self.qos),
        )
    }
}

/// A resolved write side: the binding and the message template.
#[derive(Debug, Clone)]
pub struct WriteBinding {
    pub topic: TopicBinding,
    pub template: Value,
}

/// Everything the runtime needs for one property.
#[derive(Debug, Clone)]
pub struct PropertyPlan {
    pub name: String,
    pub read: Option<TopicBinding>,
    pub write: Option<WriteBinding>,
    pub conversion: Conversion,
    pub deadband: f64,
    pub collect_cycle: Duration,
    pub report_cycle: Duration,
    pub report_to_cloud: bool,
    pub model: Option<ModelProperty>,
    /// `pushMethod` of the property, if any.
    pub push_method: Option<serde_json::Value>,
    /// A computation on the read field (e.g. quaternion -> yaw).
    pub transform: Option<Transform>,
    /// The desired value in the Device spec, if any.
    pub desired: Option<String>,
}

/// A device resolved against the registry: what to subscribe and publish.
#[derive(Debug, Clone)]
pub struct DevicePlan {
    pub id: DeviceId,
    pub domain_id: u16,
    pub namespace: Namespace,
    pub liveness_cycles: u32,
    pub properties: Vec<PropertyPlan>,
}

impl DevicePlan {
    /// Whether two plans need the same DDS entities (so a Device update that
    /// changes only desired values keeps the running device).
    pub fn same_wiring(&self, other: &DevicePlan) -> bool {
        let wiring = |p: &DevicePlan| {
            format!(
                "{}|{}|{}|{:?}",
                p.domain_id,
                p.namespace,
                p.liveness_cycles,
                p.properties
                    .iter()
                    .map(|q| {
                        (
                            &q.name,
                            q.read.as_ref().map(|r| (r.key(), r.path.to_string())),
                            q.write.as_ref().map(|w| {
                                (
                                    w.topic.key(),
                                    w.topic.path.to_string(),
                                    w.template.to_string(),
                                )
                            }),
                            &q.conversion,
                            q.deadband.to_bits(),
                            q.collect_cycle,
                            q.report_cycle,
                            q.report_to_cloud,
                            &q.model,
                            &q.push_method,
                        )
                    })
                    .collect::<Vec<_>>()
            )
        };
        wiring(self) == wiring(other)
    }
}

/// Resolves a Device (and its DeviceModel) into a plan. Properties that do
/// not resolve are left out and returned as errors: one bad property never
/// takes down the rest of the device.
pub fn plan_device(
    device: &Device,
    model: Option<&DeviceModel>,
    registry: &Registry,
    defaults: &PlanDefaults,
) -> (Option<DevicePlan>, Vec<ConfigError>) {
    let id = DeviceId::of(device);
    let err = |property: Option<&str>, key: &str, message: String| ConfigError {
        device: id.clone(),
        property: property.map(str::to_owned),
        key: key.to_owned(),
        message,
    };
    let mut errors = Vec::new();
    let proto = device.spec.protocol.clone().unwrap_or_default();
    if !proto.protocol_name.is_empty() && proto.protocol_name != PROTOCOL {
        errors.push(err(
            None,
            "spec.protocol.protocolName",
            format!(
                "{:?} is not served by this mapper (expected {PROTOCOL:?})",
                proto.protocol_name
            ),
        ));
        return (None, errors);
    }
    let cfg: DeviceProtocolConfig = match proto
        .config_data
        .clone()
        .map(serde_json::from_value)
        .transpose()
    {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => {
            errors.push(err(
                None,
                "spec.protocol.configData",
                format!("{e} (expected domainId, namespace, livenessCycles)"),
            ));
            return (None, errors);
        }
    };
    if let Some(d) = cfg.domain_id.filter(|d| *d > ros2::dds::MAX_ROS_DOMAIN_ID) {
        errors.push(err(
            None,
            "spec.protocol.configData.domainId",
            format!(
                "{d} is out of range (expected 0..={})",
                ros2::dds::MAX_ROS_DOMAIN_ID
            ),
        ));
        return (None, errors);
    }
    let namespace = match Namespace::parse(cfg.namespace.as_deref().unwrap_or("/")) {
        Ok(n) => n,
        Err(e) => {
            errors.push(err(
                None,
                "spec.protocol.configData.namespace",
                e.to_string(),
            ));
            return (None, errors);
        }
    };
    let mut plan = DevicePlan {
        id: id.clone(),
        domain_id: cfg.domain_id.unwrap_or(defaults.domain_id),
        namespace,
        liveness_cycles: cfg
            .liveness_cycles
            .unwrap_or(defaults.liveness_cycles)
            .max(1),
        properties: Vec::new(),
    };
    for prop in &device.spec.properties {
        let model_prop = model
            .and_then(|m| m.spec.properties.iter().find(|p| p.name == prop.name))
            .cloned();
        match plan_property(prop, model_prop, &plan.namespace, registry, defaults) {
            Ok(p) => plan.properties.push(p),
            Err((key, message)) => errors.push(err(Some(&prop.name), &key, message)),
        }
    }
    (Some(plan), errors)
}

type PlanError = (String, String);

fn plan_property(
    prop: &crate::model::DeviceProperty,
    model: Option<ModelProperty>,
    ns: &Namespace,
    registry: &Registry,
    defaults: &PlanDefaults,
) -> Result<PropertyPlan, PlanError> {
    let visitors = prop
        .visitors
        .as_ref()
        .or(model.as_ref().and_then(|m| m.visitors.as_ref()))
        .ok_or_else(|| {
            (
                "visitors".to_owned(),
                "missing (expected protocolName: ros2 and configData)".to_owned(),
            )
        })?;
    if !visitors.protocol_name.is_empty() && visitors.protocol_name != PROTOCOL {
        return Err((
            "visitors.protocolName".into(),
            format!("{:?} is not {PROTOCOL:?}", visitors.protocol_name),
        ));
    }
    let raw = visitors
        .config_data
        .clone()
        .unwrap_or(serde_json::Value::Null);
    let v: Ros2Visitor = serde_json::from_value(raw)
        .map_err(|e| ("visitors.configData".to_owned(), e.to_string()))?;
    let flat = v.topic.is_some() || v.type_name.is_some() || v.field.is_some();
    if flat && (v.read.is_some() || v.write.is_some()) {
        return Err((
            "visitors.configData".into(),
            "use either topic/type/field (with direction) or read/write, not both".into(),
        ));
    }
    let scalar_qos = v.reliability.is_some() || v.durability.is_some() || v.depth.is_some();
    if scalar_qos && v.qos.is_some() {
        return Err((
            "visitors.configData.qos".into(),
            "give qos or reliability/durability/depth, not both".into(),
        ));
    }
    let template = match &v.template {
        Some(serde_json::Value::String(s)) => Some(serde_json::from_str(s).map_err(|e| {
            (
                "visitors.configData.template".to_owned(),
                format!("{s:?} is not JSON: {e}"),
            )
        })?),
        other => other.clone(),
    };
    let (read_cfg, write_cfg) = if flat {
        let qos = if scalar_qos {
            let mut q = match v.direction.unwrap_or_default() {
                Direction::Read => Qos::sensor_data(),
                _ => Qos::ros_default(),
            };
            if let Some(r) = v.reliability {
                q.reliability = r;
            }
            if let Some(d) = v.durability {
                q.durability = d;
            }
            if let Some(n) = v.depth {
                q.history = ros2::dds::History::KeepLast(n);
            }
            Some(q)
        } else {
            v.qos
        };
        let missing = |k: &str| (format!("visitors.configData.{k}"), "missing".to_owned());
        let ep = EndpointConfig {
            topic: v.topic.clone().ok_or_else(|| missing("topic"))?,
            type_name: v.type_name.clone().ok_or_else(|| missing("type"))?,
            field: v.field.clone().ok_or_else(|| missing("field"))?,
            qos,
            template,
        };
        let readback = v.readback_topic.clone().map(|topic| EndpointConfig {
            topic,
            type_name: v
                .readback_type
                .clone()
                .unwrap_or_else(|| ep.type_name.clone()),
            field: v.readback_field.clone().unwrap_or_else(|| ep.field.clone()),
            qos: None,
            template: None,
        });
        match v.direction.unwrap_or_default() {
            Direction::Read if readback.is_some() => {
                return Err((
                    "visitors.configData.readbackTopic".into(),
                    "needs direction write".into(),
                ))
            }
            Direction::Read => (Some(ep), None),
            Direction::Write => (readback, Some(ep)),
            Direction::ReadWrite => (Some(ep.clone()), Some(ep)),
        }
    } else {
        (v.read.clone(), v.write.clone())
    };
    if read_cfg.is_none() && write_cfg.is_none() {
        return Err((
            "visitors.configData".into(),
            "names no topic (expected topic/type/field or read/write)".into(),
        ));
    }
    let read = read_cfg
        .as_ref()
        .map(|c| {
            bind(
                c,
                ns,
                registry,
                Qos::sensor_data(),
                if flat {
                    "visitors.configData"
                } else {
                    "visitors.configData.read"
                },
            )
        })
        .transpose()?;
    if let Some(t) = v.transform {
        let quaternion = matches!(&read, Some(b) if !b.is_array
            && matches!(&b.leaf, LayoutType::Struct(l) if l.type_name.to_string() == "geometry_msgs/msg/Quaternion"));
        if !quaternion {
            return Err((
                "visitors.configData.transform".into(),
                format!("{t:?} needs a read field of type geometry_msgs/msg/Quaternion"),
            ));
        }
    }
    let write = write_cfg
        .as_ref()
        .map(|c| {
            let base = if flat {
                "visitors.configData"
            } else {
                "visitors.configData.write"
            };
            let topic = bind(c, ns, registry, Qos::ros_default(), base)?;
            let template = match &c.template {
                Some(t) => Value::from_json(&topic.layout, t)
                    .map_err(|e| (format!("{base}.template"), e.to_string()))?,
                None => topic.layout.default_value(),
            };
            if topic.is_array || matches!(topic.leaf, LayoutType::Struct(_)) {
                return Err((
                    format!("{base}.field"),
                    format!(
                        "{:?} is a message or an array; a desired value sets one scalar field",
                        c.field
                    ),
                ));
            }
            Ok(WriteBinding { topic, template })
        })
        .transpose()?;
    if let (Some(m), Some(_)) = (&model, &write) {
        if m.access_mode == Some(crate::model::AccessMode::ReadOnly) {
            return Err((
                "visitors.configData".into(),
                format!(
                    "writes to a property the DeviceModel declares ReadOnly ({})",
                    m.name
                ),
            ));
        }
    }
    let cycle = |ms: Option<i64>, key: &str, default: Duration| -> Result<Duration, PlanError> {
        match ms {
            None => Ok(default),
            Some(ms) if ms < 0 => Err((key.to_owned(), format!("{ms} is negative (expected milliseconds >= 0)"))),
            // KubeEdge uses milliseconds; some users give nanoseconds (kubeedge#6269).
            Some(ms) if ms > 86_400_000 => Err((
                key.to_owned(),
                format!("{ms} ms is more than a day; cycles are in milliseconds (did you give nanoseconds?)"),
            )),
            Some(ms) => Ok(Duration::from_millis(ms as u64)),
        }
    };
    let scale = v.scale.unwrap_or(1.0);
    if scale == 0.0 || !scale.is_finite() {
        return Err((
            "visitors.configData.scale".into(),
            format!("{scale} (expected a finite non-zero number)"),
        ));
    }
    Ok(PropertyPlan {
        name: prop.name.clone(),
        read,
        write,
        conversion: Conversion {
            scale,
            offset: v.offset.unwrap_or(0.0),
            enum_map: v
                .enum_map
                .as_ref()
                .map(EnumMap::resolve)
                .transpose()
                .map_err(|e| ("visitors.configData.enum".to_owned(), e))?
                .unwrap_or_default(),
        },
        deadband: v.deadband.unwrap_or(0.0).abs(),
        collect_cycle: cycle(prop.collect_cycle, "collectCycle", defaults.collect_cycle)?,
        report_cycle: cycle(prop.report_cycle, "reportCycle", defaults.report_cycle)?,
        report_to_cloud: prop.report_to_cloud.unwrap_or(true),
        model,
        push_method: prop.push_method.clone(),
        transform: v.transform,
        desired: prop
            .desired
            .as_ref()
            .map(|d| d.value.clone())
            .filter(|v| !v.is_empty()),
    })
}

fn bind(
    c: &EndpointConfig,
    ns: &Namespace,
    registry: &Registry,
    default_qos: Qos,
    base: &str,
) -> Result<TopicBinding, PlanError> {
    let ros_name = RosName::resolve(&c.topic, ns.as_str())
        .map_err(|e| (format!("{base}.topic"), e.to_string()))?;
    let dds_topic = ros_name
        .to_dds_topic()
        .map_err(|e| (format!("{base}.topic"), e.to_string()))?;
    let ty = TypeName::parse(&c.type_name).map_err(|e| (format!("{base}.type"), e.to_string()))?;
    let layout = registry
        .layout(&ty)
        .map_err(|e| (format!("{base}.type"), e.to_string()))?;
    let path: FieldPath = c
        .field
        .parse()
        .map_err(|e: ros2::value::PathError| (format!("{base}.field"), e.to_string()))?;
    let target = layout
        .resolve_path(&path)
        .map_err(|e| (format!("{base}.field"), e))?;
    let is_array = target.array.is_array();
    let leaf = target.ty;
    let qos = c.qos.unwrap_or(default_qos);
    qos.validate(&dds_topic)
        .map_err(|e| (format!("{base}.qos"), e.to_string()))?;
    Ok(TopicBinding {
        ros_name,
        dds_topic,
        layout,
        path,
        leaf,
        is_array,
        qos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(yaml: &str) -> Device {
        serde_yaml::from_str(yaml).unwrap()
    }

    const ROBOT: &str = r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: robot1, namespace: fleet}
spec:
  protocol: {protocolName: ros2, configData: {domainId: 7, namespace: /robot1}}
  properties:
    - name: battery
      collectCycle: 500
      visitors:
        protocolName: ros2
        configData: {topic: battery_state, type: sensor_msgs/msg/BatteryState, field: percentage, scale: 100}
    - name: speed
      desired: {value: "0.5"}
      visitors:
        protocolName: ros2
        configData:
          write: {topic: cmd_vel, type: geometry_msgs/msg/Twist, field: linear.x, template: {angular: {z: 0.1}}}
          read: {topic: /odom, type: nav_msgs/msg/Odometry, field: twist.twist.linear.x}
    - name: broken
      visitors:
        protocolName: ros2
        configData: {topic: battery_state, type: sensor_msgs/msg/BatteryState, field: percentag}
"#;

    #[test]
    fn plans_flat_and_split_properties_and_names_bad_keys() {
        let reg = Registry::bundled();
        let (plan, errors) = plan_device(&device(ROBOT), None, &reg, &PlanDefaults::default());
        let plan = plan.unwrap();
        assert_eq!(plan.domain_id, 7);
        assert_eq!(plan.properties.len(), 2);
        let battery = &plan.properties[0];
        let r = battery.read.as_ref().unwrap();
        assert_eq!(r.dds_topic, "rt/robot1/battery_state");
        assert_eq!(battery.collect_cycle, Duration::from_millis(500));
        assert_eq!(battery.conversion.scale, 100.0);
        let speed = &plan.properties[1];
        assert_eq!(
            speed.write.as_ref().unwrap().topic.dds_topic,
            "rt/robot1/cmd_vel"
        );
        assert_eq!(speed.read.as_ref().unwrap().dds_topic, "rt/odom");
        assert_eq!(speed.desired.as_deref(), Some("0.5"));
        assert_eq!(errors.len(), 1);
        let e = errors[0].to_string();
        assert!(
            e.starts_with("device fleet/robot1 property broken: visitors.configData.field:"),
            "{e}"
        );
        assert!(e.contains("no field \"percentag\""), "{e}");
    }

    #[test]
    fn bad_device_config_is_refused_with_the_key() {
        let reg = Registry::bundled();
        let d = device(&ROBOT.replace("domainId: 7", "domainId: 900"));
        let (plan, errors) = plan_device(&d, None, &reg, &PlanDefaults::default());
        assert!(plan.is_none());
        assert!(
            errors[0]
                .to_string()
                .contains("spec.protocol.configData.domainId: 900 is out of range"),
            "{}",
            errors[0]
        );
        let d = device(&ROBOT.replace("domainId: 7", "domainID: 7"));
        let (plan, errors) = plan_device(&d, None, &reg, &PlanDefaults::default());
        assert!(plan.is_none());
        assert!(
            errors[0].to_string().contains("unknown field `domainID`"),
            "{}",
            errors[0]
        );
        let d = device(&ROBOT.replace("collectCycle: 500", "collectCycle: 5000000000"));
        let (_, errors) = plan_device(&d, None, &reg, &PlanDefaults::default());
        assert!(errors.iter().any(|e| e
            .to_string()
            .contains("collectCycle: 5000000000 ms is more than a day")));
        let d = device(&ROBOT.replace(
            "protocolName: ros2, configData",
            "protocolName: modbus, configData",
        ));
        let (plan, errors) = plan_device(&d, None, &reg, &PlanDefaults::default());
        assert!(plan.is_none() && errors[0].key == "spec.protocol.protocolName");
    }

    #[test]
    fn scalar_only_form_for_dmi() {
        let reg = Registry::bundled();
        let y = r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: robot1, namespace: default}
spec:
  protocol: {protocolName: ros2, configData: {domainId: 3}}
  properties:
    - name: speed
      visitors:
        protocolName: ros2
        configData: {direction: write, topic: cmd_vel, type: geometry_msgs/msg/Twist, field: linear.x,
                     template: '{"angular": {"z": 0.5}}', reliability: reliable, durability: transient_local, depth: 1,
                     readbackTopic: odom, readbackType: nav_msgs/msg/Odometry, readbackField: twist.twist.linear.x}
    - name: status
      visitors:
        protocolName: ros2
        configData: {topic: battery_state, type: sensor_msgs/msg/BatteryState, field: power_supply_status,
                     enum: "1:charging,2:discharging", reliability: best_effort}
"#;
        let (plan, errors) = plan_device(&device(y), None, &reg, &PlanDefaults::default());
        assert!(errors.is_empty(), "{errors:?}");
        let plan = plan.unwrap();
        let speed = &plan.properties[0];
        let w = speed.write.as_ref().unwrap();
        assert_eq!(
            w.topic.qos.durability,
            ros2::dds::Durability::TransientLocal
        );
        assert_eq!(
            w.template.get_path(&"angular.z".parse().unwrap()),
            Some(Value::F64(0.5))
        );
        assert_eq!(speed.read.as_ref().unwrap().dds_topic, "rt/odom");
        assert_eq!(
            plan.properties[1]
                .conversion
                .enum_map
                .get("2")
                .map(String::as_str),
            Some("discharging")
        );
    }

    #[test]
    fn yaw_transform_needs_a_quaternion() {
        let reg = Registry::bundled();
        let y = |field: &str| {
            device(&format!(
                r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: r, namespace: default}}
spec:
  properties:
    - name: yaw
      visitors: {{protocolName: ros2, configData: {{topic: odom, type: nav_msgs/msg/Odometry, field: {field}, transform: yaw}}}}
"#
            ))
        };
        let (plan, errors) = plan_device(
            &y("pose.pose.orientation"),
            None,
            &reg,
            &PlanDefaults::default(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(plan.unwrap().properties[0].transform, Some(Transform::Yaw));
        let (_, errors) = plan_device(
            &y("pose.pose.position"),
            None,
            &reg,
            &PlanDefaults::default(),
        );
        assert_eq!(errors[0].key, "visitors.configData.transform");
        let q = Value::Struct(vec![
            ("x".into(), Value::F64(0.0)),
            ("y".into(), Value::F64(0.0)),
            ("z".into(), Value::F64(std::f64::consts::FRAC_1_SQRT_2)),
            ("w".into(), Value::F64(std::f64::consts::FRAC_1_SQRT_2)),
        ]);
        let yaw = Transform::Yaw.apply(&q).and_then(|v| v.as_f64()).unwrap();
        assert!((yaw - std::f64::consts::FRAC_PI_2).abs() < 1e-12, "{yaw}");
    }

    #[test]
    fn same_wiring_ignores_desired_values() {
        let reg = Registry::bundled();
        let (a, _) = plan_device(&device(ROBOT), None, &reg, &PlanDefaults::default());
        let (b, _) = plan_device(
            &device(&ROBOT.replace("\"0.5\"", "\"0.7\"")),
            None,
            &reg,
            &PlanDefaults::default(),
        );
        let (c, _) = plan_device(
            &device(&ROBOT.replace("scale: 100", "scale: 10")),
            None,
            &reg,
            &PlanDefaults::default(),
        );
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        assert!(a.same_wiring(&b));
        assert!(!a.same_wiring(&c));
    }
}
