//! The backend's configuration, and the Device / DeviceModel files it serves.
//!
//! ```yaml
//! nodeName: edge-node-1                # required: this edge node's name
//! broker: tcp://127.0.0.1:1883         # default: KubeEdge's external mosquitto
//! clientId: ros2-mapper-edge-node-1    # default: ros2-mapper-<nodeName>
//! username: mapper                     # optional
//! password: secret                     # optional, needs username
//! deviceIdForm: namespaced             # `namespaced` ({ns}/{name}, KubeEdge >= 1.17, default)
//!                                      # or `name` ({name}, KubeEdge <= 1.15)
//! qos: 0                               # publish and subscribe QoS: 0 (default) or 1
//! keepaliveSecs: 30                    # MQTT keepalive; 0 switches it off
//! reconnectMinMs: 500                  # first reconnect delay (doubles, with jitter)
//! reconnectMaxMs: 30000                # longest reconnect delay
//! getRetryMs: 5000                    # re-send an unanswered membership/get or twin/get
//! publishDataTopic: false              # also publish twins to $ke/events/device/{id}/data/update
//! devices:                             # Device + DeviceModel YAML (as for kubectl apply)
//!   - /etc/ros2-mapper/robot1.yaml     # relative paths: against the config file's directory
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use mapper_core::backend::DeviceBinding;
use mapper_core::model::{Device, DeviceId, DeviceModel, PROTOCOL};
use serde::Deserialize;

use crate::error::MqttError;

/// The default broker: edgecore's default external broker (`mqttServerExternal`).
pub const DEFAULT_BROKER: &str = "tcp://127.0.0.1:1883";
/// The default MQTT keepalive, in seconds.
pub const DEFAULT_KEEPALIVE_SECS: u64 = 30;
/// The default first reconnect delay, in milliseconds.
pub const DEFAULT_RECONNECT_MIN_MS: u64 = 500;
/// The default longest reconnect delay, in milliseconds.
pub const DEFAULT_RECONNECT_MAX_MS: u64 = 30_000;
/// The default delay before an unanswered `membership/get` / `twin/get` is sent again.
pub const DEFAULT_GET_RETRY_MS: u64 = 5_000;

/// How a device is named inside `$hw/events/device/{id}/...` topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceIdForm {
    /// `{namespace}/{name}` (two topic levels): KubeEdge >= 1.17.
    #[default]
    Namespaced,
    /// `{name}` (one topic level): KubeEdge <= 1.15.
    Name,
}

/// MQTT quality of service this backend uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Qos {
    /// QoS 0, as the reference mappers.
    #[default]
    AtMostOnce,
    /// QoS 1.
    AtLeastOnce,
}

impl Qos {
    /// From the MQTT number (0 or 1; 2 is not used by this backend).
    pub fn from_u8(n: u8) -> Option<Self> {
        match n {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            _ => None,
        }
    }

    pub(crate) fn to_rumqttc(self) -> rumqttc::QoS {
        match self {
            Self::AtMostOnce => rumqttc::QoS::AtMostOnce,
            Self::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        }
    }
}

/// The configuration of the MQTT backend (camelCase keys; unknown keys are errors).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MqttConfig {
    /// This edge node's name (`$hw/events/node/{nodeName}/...`). Required.
    #[serde(default)]
    pub node_name: String,
    /// Broker URL: `tcp://host:port` or `mqtt://host:port` (port default 1883).
    #[serde(default = "default_broker")]
    pub broker: String,
    /// MQTT client id; default `ros2-mapper-<nodeName>`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Device id form in topics; default `namespaced`.
    #[serde(default)]
    pub device_id_form: DeviceIdForm,
    /// QoS of publishes and subscriptions: 0 (default) or 1.
    #[serde(default)]
    pub qos: u8,
    /// Keepalive in seconds (default 30; 0 = off).
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// First reconnect delay in ms (default 500).
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay in ms (default 30000).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// Re-send an unanswered `membership/get` / `twin/get` after this many ms
    /// (default 5000; at most 12 times per session).
    #[serde(default = "default_get_retry")]
    pub get_retry_ms: u64,
    /// Also publish reported twins as DeviceData to `$ke/events/device/{id}/data/update`.
    #[serde(default)]
    pub publish_data_topic: bool,
    /// Files of Device and DeviceModel documents (v1beta1) this backend serves.
    #[serde(default)]
    pub devices: Vec<PathBuf>,
}

fn default_broker() -> String {
    DEFAULT_BROKER.into()
}
fn default_keepalive() -> u64 {
    DEFAULT_KEEPALIVE_SECS
}
fn default_reconnect_min() -> u64 {
    DEFAULT_RECONNECT_MIN_MS
}
fn default_reconnect_max() -> u64 {
    DEFAULT_RECONNECT_MAX_MS
}
fn default_get_retry() -> u64 {
    DEFAULT_GET_RETRY_MS
}

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("node_name", &self.node_name)
            .field("broker", &self.broker)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("device_id_form", &self.device_id_form)
            .field("qos", &self.qos)
            .field("keepalive_secs", &self.keepalive_secs)
            .field("reconnect_min_ms", &self.reconnect_min_ms)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .field("get_retry_ms", &self.get_retry_ms)
            .field("publish_data_topic", &self.publish_data_topic)
            .field("devices", &self.devices)
            .finish()
    }
}

/// A broker address: host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn invalid(key: &str, value: impl fmt::Display, expected: &str) -> MqttError {
    MqttError::Config {
        key: key.into(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// Parses `tcp://host:port`, `mqtt://host:port`, `host:port` or `host` (port
/// 1883); IPv6 hosts in brackets. `key` names the config key in errors.
pub fn parse_broker_url(key: &str, url: &str) -> Result<BrokerAddr, MqttError> {
    const EXPECTED: &str = "tcp://HOST:PORT or mqtt://HOST:PORT (plain TCP; this build has no TLS)";
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "tcp" | "mqtt" => rest,
            _ => return Err(invalid(key, url, EXPECTED)),
        },
        None => url,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') || rest.contains('?') || rest.contains('@') {
        return Err(invalid(key, url, EXPECTED));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| invalid(key, url, EXPECTED))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| invalid(key, url, EXPECTED))?,
                ),
            ),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return Err(invalid(key, url, EXPECTED)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(invalid(key, url, EXPECTED));
    }
    let port = match port {
        None => 1883,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(invalid(key, url, "a port number 1..=65535 after the host")),
        },
    };
    Ok(BrokerAddr {
        host: host.into(),
        port,
    })
}

impl MqttConfig {
    /// A config with every default, for `nodeName`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            broker: default_broker(),
            client_id: None,
            username: None,
            password: None,
            device_id_form: DeviceIdForm::default(),
            qos: 0,
            keepalive_secs: DEFAULT_KEEPALIVE_SECS,
            reconnect_min_ms: DEFAULT_RECONNECT_MIN_MS,
            reconnect_max_ms: DEFAULT_RECONNECT_MAX_MS,
            get_retry_ms: DEFAULT_GET_RETRY_MS,
            publish_data_topic: false,
            devices: Vec::new(),
        }
    }

    /// Parses and validates a YAML (or JSON) document.
    pub fn from_yaml(text: &str) -> Result<Self, MqttError> {
        let c: Self = serde_yaml::from_str(text).map_err(MqttError::ConfigSyntax)?;
        c.validate()?;
        Ok(c)
    }

    /// Reads, parses and validates a config file; relative `devices` paths are
    /// taken against the file's directory.
    pub fn from_file(path: &Path) -> Result<Self, MqttError> {
        let text = std::fs::read_to_string(path).map_err(|source| MqttError::Read {
            path: path.into(),
            source,
        })?;
        let mut c = Self::from_yaml(&text)?;
        if let Some(dir) = path.parent() {
            for d in &mut c.devices {
                if d.is_relative() {
                    *d = dir.join(&*d);
                }
            }
        }
        Ok(c)
    }

    /// Checks every value; the error names the key, the value and what was expected.
    pub fn validate(&self) -> Result<(), MqttError> {
        if self.node_name.is_empty()
            || self.node_name.len() > 253
            || self
                .node_name
                .chars()
                .any(|c| matches!(c, '/' | '+' | '#') || c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "nodeName",
                &self.node_name,
                "a node name (1..=253 characters, no '/', '+', '#' or whitespace)",
            ));
        }
        parse_broker_url("broker", &self.broker)?;
        if let Some(id) = &self.client_id {
            if id.len() > 65535 || id.chars().any(char::is_control) {
                return Err(invalid(
                    "clientId",
                    id,
                    "at most 65535 bytes without control characters",
                ));
            }
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(invalid(
                "password",
                "<redacted>",
                "a `username` as well (MQTT 3.1.1 has no password without user name)",
            ));
        }
        if Qos::from_u8(self.qos).is_none() {
            return Err(invalid("qos", self.qos, "0 or 1"));
        }
        if self.keepalive_secs > u64::from(u16::MAX) {
            return Err(invalid(
                "keepaliveSecs",
                self.keepalive_secs,
                "0 (off) or 1..=65535 seconds",
            ));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > 3_600_000 {
            return Err(invalid(
                "reconnectMinMs",
                self.reconnect_min_ms,
                "1..=3600000 milliseconds",
            ));
        }
        if self.reconnect_max_ms < self.reconnect_min_ms || self.reconnect_max_ms > 3_600_000 {
            return Err(invalid(
                "reconnectMaxMs",
                self.reconnect_max_ms,
                &format!(
                    "reconnectMinMs ({}) ..= 3600000 milliseconds",
                    self.reconnect_min_ms
                ),
            ));
        }
        if !(100..=600_000).contains(&self.get_retry_ms) {
            return Err(invalid(
                "getRetryMs",
                self.get_retry_ms,
                "100..=600000 milliseconds",
            ));
        }
        Ok(())
    }

    /// The client id in use (`clientId`, else `ros2-mapper-<nodeName>`).
    pub fn effective_client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("ros2-mapper-{}", self.node_name))
    }

    /// The parsed broker address (call after [`validate`](Self::validate)).
    pub fn broker_addr(&self) -> Result<BrokerAddr, MqttError> {
        parse_broker_url("broker", &self.broker)
    }

    /// The QoS in use.
    pub fn qos(&self) -> Qos {
        Qos::from_u8(self.qos).unwrap_or_default()
    }

    /// Loads the `devices` files and binds each Device to its DeviceModel.
    pub fn load_devices(&self) -> Result<Vec<DeviceBinding>, MqttError> {
        let mut devices = Vec::new();
        let mut models = Vec::new();
        for path in &self.devices {
            let text = std::fs::read_to_string(path).map_err(|source| MqttError::Read {
                path: path.clone(),
                source,
            })?;
            parse_documents(path, &text, &mut devices, &mut models)?;
        }
        bind_devices(&self.node_name, self.device_id_form, devices, models)
    }
}

/// Splits a multi-document YAML text into Devices and DeviceModels (other
/// kinds are skipped with a log line).
pub fn parse_documents(
    path: &Path,
    text: &str,
    devices: &mut Vec<Device>,
    models: &mut Vec<DeviceModel>,
) -> Result<(), MqttError> {
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let err = |message: String| MqttError::DeviceFile {
            path: path.into(),
            index,
            message,
        };
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| err(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let api = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or("");
        if !matches!(kind, "Device" | "DeviceModel") {
            tracing::info!(path = %path.display(), index, kind, "skipping a document that is not a Device or DeviceModel");
            continue;
        }
        if api != "devices.kubeedge.io/v1beta1" {
            return Err(err(format!(
                "key `apiVersion`: value {api:?} is invalid, expected \"devices.kubeedge.io/v1beta1\""
            )));
        }
        // Through text again: serde_yaml's errors from text name the key path
        // (`spec.properties[0].name: ...`), errors from a Value do not.
        let text = serde_yaml::to_string(&value).map_err(|e| err(e.to_string()))?;
        let describe = |e: serde_yaml::Error| {
            let msg = e.to_string();
            // Line numbers refer to the re-serialized text: drop them.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
            err(format!(
                "{kind} {:?}: {msg}",
                value
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(|n| n.as_str())
                    .unwrap_or("")
            ))
        };
        if kind == "Device" {
            devices.push(serde_yaml::from_str(&text).map_err(describe)?);
        } else {
            models.push(serde_yaml::from_str(&text).map_err(describe)?);
        }
    }
    Ok(())
}

/// Keeps the `ros2` devices of `node` (or without a node), binds each to its
/// model (same namespace), and rejects duplicates (and, in the `name` id form,
/// one name in two namespaces).
pub fn bind_devices(
    node: &str,
    form: DeviceIdForm,
    devices: Vec<Device>,
    models: Vec<DeviceModel>,
) -> Result<Vec<DeviceBinding>, MqttError> {
    let mut by_model: HashMap<(String, String), DeviceModel> = HashMap::new();
    for m in models {
        let ns = m
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = m.metadata.name.clone().unwrap_or_default();
        by_model.insert((ns, name), m);
    }
    let mut out: BTreeMap<DeviceId, DeviceBinding> = BTreeMap::new();
    let mut names: HashMap<String, DeviceId> = HashMap::new();
    for device in devices {
        let id = DeviceId::of(&device);
        if id.name.is_empty() {
            return Err(invalid("metadata.name", "", "a device name"));
        }
        let protocol = device
            .spec
            .protocol
            .as_ref()
            .map(|p| p.protocol_name.as_str())
            .unwrap_or("");
        if protocol != PROTOCOL {
            tracing::warn!(device = %id, protocol, "skipping a device of another protocol");
            continue;
        }
        if let Some(n) = device.spec.node_name.as_deref() {
            if !n.is_empty() && n != node {
                tracing::info!(device = %id, device_node = n, node, "skipping a device bound to another node");
                continue;
            }
        }
        if out.contains_key(&id) {
            return Err(invalid(
                "devices",
                &id,
                "each device once across the device files",
            ));
        }
        if form == DeviceIdForm::Name {
            if let Some(other) = names.insert(id.name.clone(), id.clone()) {
                return Err(invalid(
                    "deviceIdForm",
                    "name",
                    &format!(
                        "`namespaced` when two devices share the name {:?} ({other} and {id})",
                        id.name
                    ),
                ));
            }
        }
        let model = device.spec.device_model_ref.as_ref().and_then(|r| {
            let m = by_model.get(&(id.namespace.clone(), r.name.clone())).cloned();
            if m.is_none() {
                tracing::warn!(device = %id, model = %r.name, "the device's DeviceModel is not in the device files");
            }
            m
        });
        out.insert(id, DeviceBinding { device, model });
    }
    Ok(out.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = MqttConfig::from_yaml("nodeName: edge-1").unwrap();
        assert_eq!(c, MqttConfig::new("edge-1"));
        assert_eq!(c.broker, "tcp://127.0.0.1:1883");
        assert_eq!(c.effective_client_id(), "ros2-mapper-edge-1");
        assert_eq!(c.device_id_form, DeviceIdForm::Namespaced);
        assert_eq!(c.qos(), Qos::AtMostOnce);
        assert_eq!(
            (c.keepalive_secs, c.reconnect_min_ms, c.reconnect_max_ms),
            (30, 500, 30_000)
        );
        assert!(!c.publish_data_topic);
        assert!(c.devices.is_empty());
    }

    #[test]
    fn full_config() {
        let c = MqttConfig::from_yaml(
            "nodeName: n\nbroker: mqtt://broker.local:11883\nclientId: me\nusername: u\npassword: p\n\
             deviceIdForm: name\nqos: 1\nkeepaliveSecs: 0\nreconnectMinMs: 10\nreconnectMaxMs: 10\n\
             publishDataTopic: true\ndevices: [a.yaml]\n",
        )
        .unwrap();
        assert_eq!(c.device_id_form, DeviceIdForm::Name);
        assert_eq!(c.qos(), Qos::AtLeastOnce);
        assert_eq!(
            c.broker_addr().unwrap(),
            BrokerAddr {
                host: "broker.local".into(),
                port: 11883
            }
        );
        assert!(!format!("{c:?}").contains("\"p\""));
    }

    #[test]
    fn errors_name_key_value_expected() {
        let e = MqttConfig::from_yaml("nodeName: n\nqos: 2")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`qos`") && e.contains('2') && e.contains("0 or 1"),
            "{e}"
        );
        let e = MqttConfig::from_yaml("nodeName: n\nbroker: ssl://x:8883")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`broker`") && e.contains("ssl://x:8883") && e.contains("tcp://"),
            "{e}"
        );
        let e = MqttConfig::from_yaml("nodeName: n\nreconnectMinMs: 100\nreconnectMaxMs: 50")
            .unwrap_err()
            .to_string();
        assert!(e.contains("reconnectMaxMs") && e.contains("50"), "{e}");
        let e = MqttConfig::from_yaml("nodeName: a/b")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nodeName"), "{e}");
        let e = MqttConfig::from_yaml("nodeName: n\nbrokr: x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("brokr"), "{e}");
        let e = MqttConfig::from_yaml("nodeName: n\ndeviceIdForm: uid")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("deviceIdForm") && e.contains("uid") && e.contains("namespaced"),
            "{e}"
        );
        assert!(MqttConfig::from_yaml("broker: tcp://x").is_err());
        assert!(MqttConfig::from_yaml("nodeName: n\npassword: p").is_err());
        assert!(MqttConfig::from_yaml("nodeName: n\nkeepaliveSecs: 70000").is_err());
        let e = MqttConfig::from_yaml("nodeName: n\ngetRetryMs: 5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("getRetryMs") && e.contains('5'), "{e}");
    }

    #[test]
    fn broker_urls() {
        let p = |s| parse_broker_url("broker", s);
        assert_eq!(p("tcp://127.0.0.1:1883").unwrap().port, 1883);
        assert_eq!(
            p("localhost").unwrap(),
            BrokerAddr {
                host: "localhost".into(),
                port: 1883
            }
        );
        assert_eq!(p("h:1").unwrap().port, 1);
        assert_eq!(
            p("tcp://[::1]:2000").unwrap(),
            BrokerAddr {
                host: "::1".into(),
                port: 2000
            }
        );
        assert_eq!(p("tcp://[::1]:2000").unwrap().to_string(), "[::1]:2000");
        for bad in [
            "",
            "tcp://",
            "tcp://h:0",
            "tcp://h:x",
            "tcp://h:70000",
            "ws://h:1",
            "::1:5",
            "tcp://u@h:1",
            "tcp://h/x",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    const FILE: &str = r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: robot-model, namespace: fleet}
spec:
  protocol: ros2
  properties: [{name: battery, type: FLOAT, accessMode: ReadOnly}]
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: robot1, namespace: fleet}
spec:
  deviceModelRef: {name: robot-model}
  nodeName: edge-1
  protocol: {protocolName: ros2}
  properties: [{name: battery}]
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: other-node, namespace: fleet}
spec:
  nodeName: edge-2
  protocol: {protocolName: ros2}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: modbus, namespace: fleet}
spec:
  protocol: {protocolName: modbus}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
"#;

    #[test]
    fn device_files_bind_models_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("robots.yaml");
        std::fs::write(&path, FILE).unwrap();
        let cfg_path = dir.path().join("mqtt.yaml");
        std::fs::write(&cfg_path, "nodeName: edge-1\ndevices: [robots.yaml]\n").unwrap();
        let c = MqttConfig::from_file(&cfg_path).unwrap();
        let b = c.load_devices().unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].id(), DeviceId::new("fleet", "robot1"));
        assert_eq!(
            b[0].model.as_ref().unwrap().spec.properties[0].name,
            "battery"
        );
    }

    #[test]
    fn device_file_errors() {
        let mut d = Vec::new();
        let mut m = Vec::new();
        let e = parse_documents(
            Path::new("f.yaml"),
            "apiVersion: devices.kubeedge.io/v1alpha2\nkind: Device\n",
            &mut d,
            &mut m,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("apiVersion") && e.contains("v1alpha2") && e.contains("v1beta1"),
            "{e}"
        );
        let e = parse_documents(
            Path::new("f.yaml"),
            "---\n---\napiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: a}\nspec: {properties: 3}\n",
            &mut d,
            &mut m,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("f.yaml") && e.contains("document 1") && e.contains("spec.properties"),
            "{e}"
        );
        let dev = |ns: &str| -> Device {
            serde_yaml::from_str(&format!(
                "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {{name: r, namespace: {ns}}}\nspec: {{protocol: {{protocolName: ros2}}}}\n"
            ))
            .unwrap()
        };
        assert!(bind_devices(
            "n",
            DeviceIdForm::Namespaced,
            vec![dev("a"), dev("b")],
            vec![]
        )
        .is_ok());
        let e = bind_devices("n", DeviceIdForm::Name, vec![dev("a"), dev("b")], vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("deviceIdForm"), "{e}");
        assert!(bind_devices(
            "n",
            DeviceIdForm::Namespaced,
            vec![dev("a"), dev("a")],
            vec![]
        )
        .is_err());
    }
}
