//! DMI proto messages <-> the mapper's model (`devices.kubeedge.io/v1beta1`).
//!
//! edgecore builds its proto `Device` by JSON round trip of the Go CRD type
//! (`dtcommon.ConvertDevice`): proto3 cannot tell an absent field from its
//! zero value, so on the way in an empty string, a zero cycle and a
//! `desired` with no value and no metadata mean "not set". `reportToCloud`
//! is taken as sent (`false` when the CRD omits it, as in mapper-framework).
//! The free-form `configData` maps go through [`crate::anyjson`]; a key whose
//! `Any` cannot be decoded is skipped with a warning (as mapper-framework
//! does), not fatal for the device.

use std::collections::{BTreeMap, HashMap};

use mapper_core::backend::{DeviceState, TwinReport};
use mapper_core::model::{
    AccessMode, Device, DeviceMethod, DeviceModel, DeviceModelRef, DeviceModelSpec, DeviceProperty,
    DeviceSpec, DeviceStatusFields, ModelProperty, PropertyType, ProtocolConfig, Twin,
    TwinProperty,
};
use prost_types::Any;
use serde_json::{json, Map, Value};

use crate::anyjson::{any_to_json, json_to_any, json_to_any_like_edgecore};
use crate::error::ConvertError;
use crate::proto::v1beta1 as pb;

/// How JSON values are put into `Any`s on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnyEncoding {
    /// Lossless: `Int64Value`/`DoubleValue`, nested values as `google.protobuf.Value`.
    #[default]
    Lossless,
    /// As edgecore does it: every number a float32 `FloatValue`, nesting refused.
    Edgecore,
}

/// The namespace of a proto object: `default` when empty (edgecore < 1.16 sends none).
pub fn namespace_or_default(ns: &str) -> String {
    if ns.is_empty() {
        "default".into()
    } else {
        ns.into()
    }
}

fn non_empty(s: &str) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

fn non_zero(v: i64) -> Option<i64> {
    if v == 0 {
        None
    } else {
        Some(v)
    }
}

// ---------------------------------------------------------------- Any maps

/// `CustomizedValue.data` -> a JSON object. Undecodable keys are skipped and
/// returned as the second element (key, reason) for the caller to log.
pub fn customized_to_json(
    data: &HashMap<String, Any>,
) -> (Map<String, Value>, Vec<(String, ConvertError)>) {
    let mut keys: Vec<&String> = data.keys().collect();
    keys.sort();
    let mut out = Map::new();
    let mut skipped = Vec::new();
    for k in keys {
        match any_to_json(&data[k]) {
            Ok(v) => {
                out.insert(k.clone(), v);
            }
            Err(e) => skipped.push((k.clone(), e)),
        }
    }
    (out, skipped)
}

/// A JSON object -> `CustomizedValue.data`. A non-object becomes `{"value": it}`.
pub fn json_to_customized(
    value: &Value,
    enc: AnyEncoding,
) -> Result<HashMap<String, Any>, ConvertError> {
    let encode = |v: &Value| match enc {
        AnyEncoding::Lossless => Ok(json_to_any(v)),
        AnyEncoding::Edgecore => json_to_any_like_edgecore(v),
    };
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), encode(v)?)))
            .collect(),
        Value::Null => Ok(HashMap::new()),
        other => Ok(HashMap::from([("value".to_string(), encode(other)?)])),
    }
}

fn log_skipped(what: &str, skipped: Vec<(String, ConvertError)>) {
    for (key, error) in skipped {
        tracing::warn!(what, key = %key, %error, "skipping a configData key that cannot be decoded");
    }
}

fn protocol_from_proto(
    name: &str,
    data: Option<&pb::CustomizedValue>,
    what: &str,
) -> ProtocolConfig {
    ProtocolConfig {
        protocol_name: name.to_string(),
        config_data: data.map(|c| {
            let (map, skipped) = customized_to_json(&c.data);
            log_skipped(what, skipped);
            Value::Object(map)
        }),
    }
}

fn customized_to_proto(
    config_data: &Option<Value>,
    enc: AnyEncoding,
) -> Result<Option<pb::CustomizedValue>, ConvertError> {
    config_data
        .as_ref()
        .map(|v| {
            Ok(pb::CustomizedValue {
                data: json_to_customized(v, enc)?,
            })
        })
        .transpose()
}

// ---------------------------------------------------------------- twins

fn twin_property_from_proto(t: &pb::TwinProperty) -> TwinProperty {
    TwinProperty {
        value: t.value.clone(),
        metadata: t
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn twin_property_to_proto(t: &TwinProperty) -> pb::TwinProperty {
    pb::TwinProperty {
        value: t.value.clone(),
        metadata: t
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A reported twin as edgecore expects it (mapper-framework `ConvMsgTwinToGrpc`):
/// `reported` and `observedDesired`, each with metadata `type` and `timestamp`.
/// edgecore refuses a report whose `reported.metadata.type` is missing.
pub fn twin_report_to_proto(t: &TwinReport) -> pb::Twin {
    let metadata = || {
        HashMap::from([
            ("type".to_string(), t.value_type.to_string()),
            ("timestamp".to_string(), t.timestamp_ms.to_string()),
        ])
    };
    pb::Twin {
        property_name: t.property.clone(),
        reported: Some(pb::TwinProperty {
            value: t.reported.clone(),
            metadata: metadata(),
        }),
        observed_desired: Some(pb::TwinProperty {
            value: t.observed_desired.clone().unwrap_or_default(),
            metadata: metadata(),
        }),
    }
}

/// A reported twin as the model's status twin.
pub fn twin_report_to_model(t: &TwinReport) -> Twin {
    let metadata = || {
        BTreeMap::from([
            ("type".to_string(), t.value_type.to_string()),
            ("timestamp".to_string(), t.timestamp_ms.to_string()),
        ])
    };
    Twin {
        property_name: t.property.clone(),
        reported: Some(TwinProperty {
            value: t.reported.clone(),
            metadata: metadata(),
        }),
        observed_desired: t.observed_desired.as_ref().map(|v| TwinProperty {
            value: v.clone(),
            metadata: metadata(),
        }),
    }
}

/// The `state` string of `ReportDeviceStates`.
pub fn state_to_proto(state: DeviceState) -> String {
    state.as_str().to_string()
}

fn status_from_proto(s: &pb::DeviceStatus) -> DeviceStatusFields {
    DeviceStatusFields {
        twins: s
            .twins
            .iter()
            .map(|t| Twin {
                property_name: t.property_name.clone(),
                reported: t.reported.as_ref().map(twin_property_from_proto),
                observed_desired: t.observed_desired.as_ref().map(twin_property_from_proto),
            })
            .collect(),
        report_to_cloud: Some(s.report_to_cloud),
        report_cycle: non_zero(s.report_cycle),
        ..Default::default()
    }
}

/// The model's status as a proto `DeviceStatus` (twins, reportToCloud, reportCycle).
pub fn status_to_proto(s: &DeviceStatusFields) -> pb::DeviceStatus {
    pb::DeviceStatus {
        twins: s
            .twins
            .iter()
            .map(|t| pb::Twin {
                property_name: t.property_name.clone(),
                reported: t.reported.as_ref().map(twin_property_to_proto),
                observed_desired: t.observed_desired.as_ref().map(twin_property_to_proto),
            })
            .collect(),
        report_to_cloud: s.report_to_cloud.unwrap_or(false),
        report_cycle: s.report_cycle.unwrap_or(0),
    }
}

// ---------------------------------------------------------------- push methods

/// Case-insensitive key lookup (Go's `encoding/json` matches keys so).
fn get_ci<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn str_ci(obj: &Value, key: &str) -> String {
    get_ci(obj, key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn int_ci(obj: &Value, key: &str) -> i64 {
    get_ci(obj, key)
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .unwrap_or(0)
}

fn bool_ci(obj: &Value, key: &str) -> bool {
    get_ci(obj, key).and_then(Value::as_bool).unwrap_or(false)
}

fn insert_non_empty(map: &mut Map<String, Value>, key: &str, v: Value) {
    let empty = match &v {
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Bool(b) => !b,
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    if !empty {
        map.insert(key.to_string(), v);
    }
}

fn object(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        insert_non_empty(&mut m, k, v);
    }
    Value::Object(m)
}

/// A proto `PushMethod` as the CRD's JSON (`http.hostName`, `mqtt.topic`, `dbMethod.TDEngine`, ...).
pub fn push_method_to_json(p: &pb::PushMethod) -> Value {
    let mut out = Map::new();
    if let Some(h) = &p.http {
        out.insert(
            "http".into(),
            object(vec![
                ("hostName", json!(h.hostname)),
                ("port", json!(h.port)),
                ("requestPath", json!(h.requestpath)),
                ("timeout", json!(h.timeout)),
            ]),
        );
    }
    if let Some(m) = &p.mqtt {
        // qos and retained are kept even when zero/false: they are meaningful.
        out.insert(
            "mqtt".into(),
            json!({"address": m.address, "topic": m.topic, "qos": m.qos, "retained": m.retained}),
        );
    }
    if let Some(o) = &p.otel {
        out.insert(
            "otel".into(),
            object(vec![("endpointURL", json!(o.endpoint_url))]),
        );
    }
    if let Some(db) = &p.db_method {
        let mut d = Map::new();
        if let Some(i) = &db.influxdb2 {
            let client = i.influxdb2_client_config.as_ref().map(|c| {
                object(vec![
                    ("url", json!(c.url)),
                    ("org", json!(c.org)),
                    ("bucket", json!(c.bucket)),
                ])
            });
            let data = i.influxdb2_data_config.as_ref().map(|c| {
                let tag: BTreeMap<&String, &String> = c.tag.iter().collect();
                object(vec![
                    ("measurement", json!(c.measurement)),
                    ("tag", json!(tag)),
                    ("fieldKey", json!(c.field_key)),
                ])
            });
            d.insert(
                "influxdb2".into(),
                object(vec![
                    ("influxdb2ClientConfig", client.unwrap_or(Value::Null)),
                    ("influxdb2DataConfig", data.unwrap_or(Value::Null)),
                ]),
            );
        }
        if let Some(r) = &db.redis {
            let c = r.redis_client_config.as_ref().map(|c| {
                object(vec![
                    ("addr", json!(c.addr)),
                    ("db", json!(c.db)),
                    ("poolsize", json!(c.poolsize)),
                    ("minIdleConns", json!(c.min_idle_conns)),
                ])
            });
            d.insert(
                "redis".into(),
                object(vec![("redisClientConfig", c.unwrap_or(Value::Null))]),
            );
        }
        if let Some(t) = &db.tdengine {
            let c = t
                .td_engine_client_config
                .as_ref()
                .map(|c| object(vec![("addr", json!(c.addr)), ("dbName", json!(c.dbname))]));
            d.insert(
                "TDEngine".into(),
                object(vec![("TDEngineClientConfig", c.unwrap_or(Value::Null))]),
            );
        }
        if let Some(m) = &db.mysql {
            let c = m.mysql_client_config.as_ref().map(|c| {
                object(vec![
                    ("addr", json!(c.addr)),
                    ("database", json!(c.database)),
                    ("userName", json!(c.user_name)),
                ])
            });
            d.insert(
                "mysql".into(),
                object(vec![("mysqlClientConfig", c.unwrap_or(Value::Null))]),
            );
        }
        out.insert("dbMethod".into(), Value::Object(d));
    }
    if let Some(a) = &p.anomaly_detection {
        let (map, skipped) = customized_to_json(&a.data);
        log_skipped("pushMethod.anomalyDetection", skipped);
        out.insert("anomalyDetection".into(), Value::Object(map));
    }
    Value::Object(out)
}

/// The CRD's `pushMethod` JSON as a proto `PushMethod` (keys matched case-insensitively).
pub fn push_method_to_proto(v: &Value, enc: AnyEncoding) -> Result<pb::PushMethod, ConvertError> {
    let http = get_ci(v, "http").map(|h| pb::PushMethodHttp {
        hostname: str_ci(h, "hostName"),
        port: int_ci(h, "port"),
        requestpath: str_ci(h, "requestPath"),
        timeout: int_ci(h, "timeout"),
    });
    let mqtt = get_ci(v, "mqtt").map(|m| pb::PushMethodMqtt {
        address: str_ci(m, "address"),
        topic: str_ci(m, "topic"),
        qos: int_ci(m, "qos") as i32,
        retained: bool_ci(m, "retained"),
    });
    let otel = get_ci(v, "otel").map(|o| pb::PushMethodOtel {
        endpoint_url: str_ci(o, "endpointURL"),
    });
    let db_method = get_ci(v, "dbMethod").map(|d| pb::DbMethod {
        influxdb2: get_ci(d, "influxdb2").map(|i| pb::DbMethodInfluxdb2 {
            influxdb2_client_config: get_ci(i, "influxdb2ClientConfig").map(|c| {
                pb::Influxdb2ClientConfig {
                    url: str_ci(c, "url"),
                    org: str_ci(c, "org"),
                    bucket: str_ci(c, "bucket"),
                }
            }),
            influxdb2_data_config: get_ci(i, "influxdb2DataConfig").map(|c| {
                pb::Influxdb2DataConfig {
                    measurement: str_ci(c, "measurement"),
                    tag: get_ci(c, "tag")
                        .and_then(Value::as_object)
                        .map(|t| {
                            t.iter()
                                .map(|(k, v)| {
                                    (k.clone(), v.as_str().unwrap_or_default().to_string())
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    field_key: str_ci(c, "fieldKey"),
                }
            }),
        }),
        redis: get_ci(d, "redis").map(|r| pb::DbMethodRedis {
            redis_client_config: get_ci(r, "redisClientConfig").map(|c| pb::RedisClientConfig {
                addr: str_ci(c, "addr"),
                db: int_ci(c, "db") as i32,
                poolsize: int_ci(c, "poolsize") as i32,
                min_idle_conns: int_ci(c, "minIdleConns") as i32,
            }),
        }),
        tdengine: get_ci(d, "TDEngine").map(|t| pb::DbMethodTdEngine {
            td_engine_client_config: get_ci(t, "TDEngineClientConfig").map(|c| {
                pb::TdEngineClientConfig {
                    addr: str_ci(c, "addr"),
                    dbname: str_ci(c, "dbName"),
                }
            }),
        }),
        mysql: get_ci(d, "mysql").map(|m| pb::DbMethodMySql {
            mysql_client_config: get_ci(m, "mysqlClientConfig").map(|c| pb::MySqlClientConfig {
                addr: str_ci(c, "addr"),
                database: str_ci(c, "database"),
                user_name: str_ci(c, "userName"),
            }),
        }),
    });
    let anomaly_detection = get_ci(v, "anomalyDetection")
        .map(|a| json_to_customized(a, enc).map(|data| pb::AnomalyDetection { data }))
        .transpose()?;
    Ok(pb::PushMethod {
        http,
        mqtt,
        db_method,
        otel,
        anomaly_detection,
    })
}

// ---------------------------------------------------------------- devices

/// A proto `Device` as the model's `Device`.
pub fn device_from_proto(d: &pb::Device) -> Result<Device, ConvertError> {
    if d.name.is_empty() {
        return Err(ConvertError::Missing {
            message: "Device",
            field: "name",
        });
    }
    let spec = d.spec.clone().unwrap_or_default();
    let properties = spec
        .properties
        .iter()
        .map(|p| DeviceProperty {
            name: p.name.clone(),
            desired: p
                .desired
                .as_ref()
                .filter(|t| !(t.value.is_empty() && t.metadata.is_empty()))
                .map(twin_property_from_proto),
            visitors: p.visitors.as_ref().map(|v| {
                protocol_from_proto(
                    &v.protocol_name,
                    v.config_data.as_ref(),
                    "visitors.configData",
                )
            }),
            report_cycle: non_zero(p.report_cycle),
            collect_cycle: non_zero(p.collect_cycle),
            report_to_cloud: Some(p.report_to_cloud),
            push_method: p
                .push_method
                .as_ref()
                .map(push_method_to_json)
                .filter(|v| v.as_object().is_some_and(|o| !o.is_empty())),
        })
        .collect();
    let model_spec = DeviceSpec {
        device_model_ref: non_empty(&spec.device_model_reference)
            .map(|name| DeviceModelRef { name }),
        node_name: None,
        protocol: spec.protocol.as_ref().map(|p| {
            protocol_from_proto(
                &p.protocol_name,
                p.config_data.as_ref(),
                "protocol.configData",
            )
        }),
        properties,
        methods: spec
            .methods
            .iter()
            .map(|m| DeviceMethod {
                name: m.name.clone(),
                description: non_empty(&m.description),
                property_names: m.property_names.clone(),
            })
            .collect(),
        state_report: None,
    };
    let mut device = Device::new(&d.name, model_spec);
    device.metadata.namespace = Some(namespace_or_default(&d.namespace));
    device.status = d
        .status
        .as_ref()
        .filter(|s| !s.twins.is_empty())
        .map(status_from_proto);
    Ok(device)
}

/// The model's `Device` as a proto `Device` (spec and status).
pub fn device_to_proto(d: &Device, enc: AnyEncoding) -> Result<pb::Device, ConvertError> {
    let properties = d
        .spec
        .properties
        .iter()
        .map(|p| {
            Ok(pb::DeviceProperty {
                name: p.name.clone(),
                desired: Some(
                    p.desired
                        .as_ref()
                        .map(twin_property_to_proto)
                        .unwrap_or_default(),
                ),
                visitors: p
                    .visitors
                    .as_ref()
                    .map(|v| {
                        Ok::<_, ConvertError>(pb::VisitorConfig {
                            protocol_name: v.protocol_name.clone(),
                            config_data: customized_to_proto(&v.config_data, enc)?,
                        })
                    })
                    .transpose()?,
                report_cycle: p.report_cycle.unwrap_or(0),
                collect_cycle: p.collect_cycle.unwrap_or(0),
                report_to_cloud: p.report_to_cloud.unwrap_or(false),
                push_method: p
                    .push_method
                    .as_ref()
                    .map(|v| push_method_to_proto(v, enc))
                    .transpose()?,
            })
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    let protocol = d
        .spec
        .protocol
        .as_ref()
        .map(|p| {
            Ok::<_, ConvertError>(pb::ProtocolConfig {
                protocol_name: p.protocol_name.clone(),
                config_data: customized_to_proto(&p.config_data, enc)?,
            })
        })
        .transpose()?;
    Ok(pb::Device {
        name: d.metadata.name.clone().unwrap_or_default(),
        namespace: d.metadata.namespace.clone().unwrap_or_default(),
        spec: Some(pb::DeviceSpec {
            device_model_reference: d
                .spec
                .device_model_ref
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_default(),
            protocol,
            properties,
            methods: d
                .spec
                .methods
                .iter()
                .map(|m| pb::DeviceMethod {
                    name: m.name.clone(),
                    description: m.description.clone().unwrap_or_default(),
                    property_names: m.property_names.clone(),
                })
                .collect(),
        }),
        status: d.status.as_ref().map(status_to_proto),
    })
}

// ---------------------------------------------------------------- models

fn property_type_from_proto(s: &str) -> Result<PropertyType, ConvertError> {
    Ok(match s.to_ascii_uppercase().as_str() {
        "" | "STRING" => PropertyType::String,
        "INT" | "INTEGER" => PropertyType::Int,
        "FLOAT" => PropertyType::Float,
        "DOUBLE" => PropertyType::Double,
        "BOOLEAN" | "BOOL" => PropertyType::Boolean,
        "BYTES" => PropertyType::Bytes,
        "STREAM" => PropertyType::Stream,
        _ => {
            return Err(ConvertError::Invalid {
                message: "ModelProperty",
                field: "type",
                value: s.into(),
                expected: "INT, FLOAT, DOUBLE, STRING, BOOLEAN, BYTES or STREAM",
            })
        }
    })
}

fn property_type_to_proto(t: PropertyType) -> &'static str {
    match t {
        PropertyType::Int => "INT",
        PropertyType::Float => "FLOAT",
        PropertyType::Double => "DOUBLE",
        PropertyType::String => "STRING",
        PropertyType::Boolean => "BOOLEAN",
        PropertyType::Bytes => "BYTES",
        PropertyType::Stream => "STREAM",
    }
}

fn access_mode_from_proto(s: &str) -> Result<Option<AccessMode>, ConvertError> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "" => None,
        "readwrite" => Some(AccessMode::ReadWrite),
        "readonly" => Some(AccessMode::ReadOnly),
        _ => {
            return Err(ConvertError::Invalid {
                message: "ModelProperty",
                field: "accessMode",
                value: s.into(),
                expected: "ReadWrite or ReadOnly",
            })
        }
    })
}

/// A proto `DeviceModel` as the model's `DeviceModel`.
pub fn model_from_proto(m: &pb::DeviceModel) -> Result<DeviceModel, ConvertError> {
    if m.name.is_empty() {
        return Err(ConvertError::Missing {
            message: "DeviceModel",
            field: "name",
        });
    }
    let properties = m
        .spec
        .as_ref()
        .map(|s| s.properties.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            Ok(ModelProperty {
                name: p.name.clone(),
                description: non_empty(&p.description),
                type_: property_type_from_proto(&p.r#type)?,
                access_mode: access_mode_from_proto(&p.access_mode)?,
                minimum: non_empty(&p.minimum),
                maximum: non_empty(&p.maximum),
                unit: non_empty(&p.unit),
                visitors: None,
            })
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    let mut model = DeviceModel::new(
        &m.name,
        DeviceModelSpec {
            protocol: None,
            protocol_config_data: None,
            properties,
        },
    );
    model.metadata.namespace = Some(namespace_or_default(&m.namespace));
    Ok(model)
}

/// The model's `DeviceModel` as a proto `DeviceModel`.
pub fn model_to_proto(m: &DeviceModel) -> pb::DeviceModel {
    pb::DeviceModel {
        name: m.metadata.name.clone().unwrap_or_default(),
        namespace: m.metadata.namespace.clone().unwrap_or_default(),
        spec: Some(pb::DeviceModelSpec {
            properties: m
                .spec
                .properties
                .iter()
                .map(|p| pb::ModelProperty {
                    name: p.name.clone(),
                    description: p.description.clone().unwrap_or_default(),
                    r#type: property_type_to_proto(p.type_).into(),
                    access_mode: match p.access_mode {
                        Some(AccessMode::ReadWrite) => "ReadWrite".into(),
                        Some(AccessMode::ReadOnly) => "ReadOnly".into(),
                        None => String::new(),
                    },
                    minimum: p.minimum.clone().unwrap_or_default(),
                    maximum: p.maximum.clone().unwrap_or_default(),
                    unit: p.unit.clone().unwrap_or_default(),
                })
                .collect(),
            commands: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapper_core::model::DeviceId;

    fn robot() -> Device {
        let y = r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: robot1, namespace: fleet}
spec:
  deviceModelRef: {name: ros2-mobile-robot}
  protocol:
    protocolName: ros2
    configData: {domainId: 3, namespace: /robot1, livenessCycles: 5}
  properties:
    - name: battery
      collectCycle: 1000
      reportCycle: 5000
      reportToCloud: true
      visitors:
        protocolName: ros2
        configData: {topic: battery_state, type: sensor_msgs/msg/BatteryState, field: percentage, scale: 0.5}
      pushMethod:
        mqtt: {address: "tcp://127.0.0.1:1883", topic: battery, qos: 1, retained: false}
    - name: speed
      reportToCloud: false
      desired: {value: "0.5", metadata: {type: double}}
      visitors:
        protocolName: ros2
        configData: {topic: cmd_vel, type: geometry_msgs/msg/Twist, field: linear.x, direction: write}
  methods:
    - {name: drive, description: set the speed, propertyNames: [speed]}
"#;
        serde_yaml::from_str(y).unwrap()
    }

    fn model() -> DeviceModel {
        serde_yaml::from_str(
            r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: ros2-mobile-robot, namespace: fleet}
spec:
  properties:
    - {name: battery, type: FLOAT, accessMode: ReadOnly, minimum: "0", maximum: "100", unit: percent}
    - {name: speed, type: DOUBLE, accessMode: ReadWrite}
"#,
        )
        .unwrap()
    }

    #[test]
    fn device_round_trips_both_encodings() {
        let d = robot();
        for enc in [AnyEncoding::Lossless, AnyEncoding::Edgecore] {
            let p = device_to_proto(&d, enc).unwrap();
            assert_eq!(p.name, "robot1");
            assert_eq!(p.namespace, "fleet");
            let back = device_from_proto(&p).unwrap();
            assert_eq!(DeviceId::of(&back), DeviceId::new("fleet", "robot1"));
            assert_eq!(back.spec, d.spec, "{enc:?}");
        }
    }

    #[test]
    fn edgecore_encoding_puts_floats_in_any_and_they_come_back_as_integers() {
        let p = device_to_proto(&robot(), AnyEncoding::Edgecore).unwrap();
        let cfg = &p
            .spec
            .as_ref()
            .unwrap()
            .protocol
            .as_ref()
            .unwrap()
            .config_data
            .as_ref()
            .unwrap()
            .data;
        assert_eq!(
            cfg["domainId"].type_url,
            "type.googleapis.com/google.protobuf.FloatValue"
        );
        let back = device_from_proto(&p).unwrap();
        assert_eq!(
            back.spec.protocol.unwrap().config_data.unwrap()["domainId"],
            json!(3)
        );
    }

    #[test]
    fn nested_config_is_lossless_only() {
        let mut d = robot();
        d.spec.properties[1].visitors.as_mut().unwrap().config_data =
            Some(json!({"write": {"topic": "cmd_vel", "field": "linear.x"}}));
        assert!(device_to_proto(&d, AnyEncoding::Edgecore).is_err());
        let back = device_from_proto(&device_to_proto(&d, AnyEncoding::Lossless).unwrap()).unwrap();
        assert_eq!(back.spec, d.spec);
    }

    #[test]
    fn proto_zero_values_mean_unset() {
        let p = pb::Device {
            name: "d".into(),
            namespace: String::new(),
            spec: Some(pb::DeviceSpec {
                device_model_reference: String::new(),
                protocol: None,
                properties: vec![pb::DeviceProperty {
                    name: "x".into(),
                    desired: Some(pb::TwinProperty::default()),
                    ..Default::default()
                }],
                methods: vec![],
            }),
            status: None,
        };
        let d = device_from_proto(&p).unwrap();
        assert_eq!(DeviceId::of(&d), DeviceId::new("default", "d"));
        assert!(d.spec.device_model_ref.is_none());
        let prop = &d.spec.properties[0];
        assert_eq!(
            (
                prop.desired.as_ref(),
                prop.report_cycle,
                prop.collect_cycle,
                prop.report_to_cloud
            ),
            (None, None, None, Some(false))
        );
        assert!(device_from_proto(&pb::Device::default()).is_err());
    }

    #[test]
    fn undecodable_config_keys_are_skipped() {
        let mut p = device_to_proto(&robot(), AnyEncoding::Edgecore).unwrap();
        let data = &mut p
            .spec
            .as_mut()
            .unwrap()
            .protocol
            .as_mut()
            .unwrap()
            .config_data
            .as_mut()
            .unwrap()
            .data;
        data.insert(
            "weird".into(),
            Any {
                type_url: "type.googleapis.com/foo.Bar".into(),
                value: vec![1, 2, 3],
            },
        );
        let d = device_from_proto(&p).unwrap();
        let cfg = d.spec.protocol.unwrap().config_data.unwrap();
        assert!(cfg.get("weird").is_none());
        assert_eq!(cfg["namespace"], json!("/robot1"));
    }

    #[test]
    fn model_round_trips() {
        let m = model();
        let p = model_to_proto(&m);
        assert_eq!(p.spec.as_ref().unwrap().properties[0].r#type, "FLOAT");
        let back = model_from_proto(&p).unwrap();
        assert_eq!(back.spec, m.spec);
        assert_eq!(back.metadata.namespace.as_deref(), Some("fleet"));
        let mut bad = p.clone();
        bad.spec.as_mut().unwrap().properties[0].r#type = "REAL".into();
        assert!(matches!(
            model_from_proto(&bad),
            Err(ConvertError::Invalid { field: "type", .. })
        ));
        let mut lower = p;
        lower.spec.as_mut().unwrap().properties[1].r#type = "double".into();
        lower.spec.as_mut().unwrap().properties[1].access_mode = "readwrite".into();
        assert_eq!(model_from_proto(&lower).unwrap().spec, m.spec);
    }

    #[test]
    fn push_method_round_trips_with_crd_keys() {
        let v = json!({
            "http": {"hostName": "h", "port": 80, "requestPath": "/p", "timeout": 5},
            "mqtt": {"address": "tcp://b:1883", "topic": "t", "qos": 0, "retained": false},
            "otel": {"endpointURL": "http://o"},
            "dbMethod": {
                "influxdb2": {"influxdb2ClientConfig": {"url": "u", "org": "o", "bucket": "b"},
                              "influxdb2DataConfig": {"measurement": "m", "tag": {"a": "1"}, "fieldKey": "f"}},
                "redis": {"redisClientConfig": {"addr": "r:6379", "db": 1, "poolsize": 2, "minIdleConns": 3}},
                "TDEngine": {"TDEngineClientConfig": {"addr": "td", "dbName": "d"}},
                "mysql": {"mysqlClientConfig": {"addr": "my", "database": "db", "userName": "u"}}
            }
        });
        let p = push_method_to_proto(&v, AnyEncoding::Lossless).unwrap();
        assert_eq!(p.http.as_ref().unwrap().hostname, "h");
        assert_eq!(
            p.db_method
                .as_ref()
                .unwrap()
                .tdengine
                .as_ref()
                .unwrap()
                .td_engine_client_config
                .as_ref()
                .unwrap()
                .dbname,
            "d"
        );
        assert_eq!(push_method_to_json(&p), v);
        // Go-style case-insensitive keys.
        let lower = push_method_to_proto(
            &json!({"http": {"hostname": "h", "requestpath": "/p"}}),
            AnyEncoding::Lossless,
        )
        .unwrap();
        assert_eq!(lower.http.unwrap().requestpath, "/p");
    }

    #[test]
    fn twin_report_carries_type_and_timestamp() {
        let t = TwinReport {
            property: "battery".into(),
            reported: "87.5".into(),
            observed_desired: None,
            value_type: "float",
            timestamp_ms: 1_700_000_000_000,
        };
        let p = twin_report_to_proto(&t);
        let r = p.reported.unwrap();
        assert_eq!(r.value, "87.5");
        assert_eq!(r.metadata["type"], "float");
        assert_eq!(r.metadata["timestamp"], "1700000000000");
        assert_eq!(p.observed_desired.unwrap().value, "");
        let m = twin_report_to_model(&TwinReport {
            observed_desired: Some("1".into()),
            ..t
        });
        assert_eq!(m.observed_desired.unwrap().value, "1");
    }
}
