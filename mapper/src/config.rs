//! The mapper's configuration file (YAML), environment overrides, and
//! validation up front with errors that name the key, the bad value and what
//! was expected. `config/default.yaml` documents every key and its default.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ros2::dds::{DiscoveryRange, MAX_ROS_DOMAIN_ID};
use serde::{Deserialize, Serialize};

/// The documented default configuration.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.yaml");

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("{key}: {value:?} is invalid: expected {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
}

fn invalid(key: &str, value: impl ToString, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_string(),
        expected: expected.to_owned(),
    }
}

/// Which twin backend to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// KubeEdge's MQTT eventbus (`$hw/events/...`), KubeEdge <= 1.14 style.
    Mqtt,
    /// KubeEdge's DMI gRPC over Unix sockets, KubeEdge >= 1.15.
    Dmi,
    /// The Kubernetes API directly (Device CRDs), K3s without KubeEdge.
    Kube,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MapperConfig {
    /// This node's name (env `NODE_NAME`).
    #[serde(default)]
    pub node: Option<String>,
    /// mqtt | dmi | kube (env `MAPPER_BACKEND`).
    pub backend: BackendKind,
    #[serde(default)]
    pub ros: RosConfig,
    #[serde(default)]
    pub reporting: ReportingConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Seconds to drain on SIGTERM before exiting anyway.
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: u64,
    #[serde(default)]
    pub mqtt: Option<mapper_mqtt::MqttConfig>,
    #[serde(default)]
    pub dmi: Option<mapper_dmi::DmiConfig>,
    #[serde(default)]
    pub kube: Option<mapper_kube::KubeConfig>,
}

fn default_grace() -> u64 {
    5
}

/// ROS 2 / DDS settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RosConfig {
    /// Domain of devices that do not set `domainId` (env `ROS_DOMAIN_ID`). Default 0.
    #[serde(default)]
    pub domain_id: Option<u16>,
    /// OFF | LOCALHOST | SUBNET | SYSTEM_DEFAULT (env `ROS_AUTOMATIC_DISCOVERY_RANGE`,
    /// `ROS_LOCALHOST_ONLY=1`). Default SUBNET.
    #[serde(default)]
    pub discovery_range: Option<String>,
    /// Only these interface addresses (default: all, or 127.0.0.1 for LOCALHOST).
    #[serde(default)]
    pub interfaces: Vec<IpAddr>,
    /// Extra interface definitions: directories of `<pkg>/msg/*.msg` packages.
    #[serde(default)]
    pub interface_dirs: Vec<PathBuf>,
}

/// Defaults of properties that do not set their cycles.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReportingConfig {
    #[serde(default = "default_collect")]
    pub collect_cycle_ms: u64,
    #[serde(default = "default_report")]
    pub report_cycle_ms: u64,
    #[serde(default = "default_liveness")]
    pub liveness_cycles: u32,
}

fn default_collect() -> u64 {
    1000
}
fn default_report() -> u64 {
    10_000
}
fn default_liveness() -> u32 {
    3
}

impl Default for ReportingConfig {
    fn default() -> Self {
        Self {
            collect_cycle_ms: default_collect(),
            report_cycle_ms: default_report(),
            liveness_cycles: default_liveness(),
        }
    }
}

/// Metrics and probes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpConfig {
    /// `/metrics`, `/healthz`, `/readyz`, `/status` (env `MAPPER_HTTP_LISTEN`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9464))
}
fn yes() -> bool {
    true
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            enabled: true,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogConfig {
    /// text | json (env `MAPPER_LOG_FORMAT`).
    #[serde(default = "default_format")]
    pub format: String,
    /// An `EnvFilter` directive; `RUST_LOG` wins.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_format() -> String {
    "text".into()
}
fn default_level() -> String {
    "info,rustdds=warn".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: default_format(),
            level: default_level(),
        }
    }
}

impl MapperConfig {
    /// Parses YAML text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_owned(),
            source,
        })
    }

    /// Reads a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Applies environment overrides from `lookup` (usually `std::env::var`).
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(n) = lookup("NODE_NAME").filter(|s| !s.is_empty()) {
            self.node = Some(n);
        }
        // The top-level node name fills the backends' own where they leave it out.
        if let Some(n) = self.node.clone() {
            if let Some(m) = self.mqtt.as_mut().filter(|m| m.node_name.is_empty()) {
                m.node_name = n.clone();
            }
            if let Some(k) = self.kube.as_mut().filter(|k| k.node_name.is_empty()) {
                k.node_name = n;
            }
        }
        if let Some(b) = lookup("MAPPER_BACKEND").filter(|s| !s.is_empty()) {
            self.backend = serde_yaml::from_str(&b)
                .map_err(|_| invalid("MAPPER_BACKEND", &b, "mqtt, dmi or kube"))?;
        }
        if let Some(d) = lookup("ROS_DOMAIN_ID").filter(|s| !s.is_empty()) {
            let v = d
                .trim()
                .parse::<u16>()
                .map_err(|_| invalid("ROS_DOMAIN_ID", &d, "an integer 0..=232"))?;
            self.ros.domain_id = Some(v);
        }
        if let Some(r) = lookup("ROS_AUTOMATIC_DISCOVERY_RANGE").filter(|s| !s.is_empty()) {
            self.ros.discovery_range = Some(r);
        } else if lookup("ROS_LOCALHOST_ONLY").as_deref() == Some("1")
            && self.ros.discovery_range.is_none()
        {
            self.ros.discovery_range = Some("LOCALHOST".into());
        }
        if let Some(l) = lookup("MAPPER_HTTP_LISTEN").filter(|s| !s.is_empty()) {
            self.http.listen = l
                .parse()
                .map_err(|_| invalid("MAPPER_HTTP_LISTEN", &l, "ADDRESS:PORT"))?;
        }
        if let Some(f) = lookup("MAPPER_LOG_FORMAT").filter(|s| !s.is_empty()) {
            self.log.format = f;
        }
        Ok(())
    }

    /// Checks everything that can be checked before starting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(d) = self.ros.domain_id {
            if d > MAX_ROS_DOMAIN_ID {
                return Err(invalid("ros.domainId", d, "0..=232"));
            }
        }
        self.discovery_range()?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", &self.log.format, "text or json"));
        }
        if self.reporting.liveness_cycles == 0 {
            return Err(invalid("reporting.livenessCycles", 0, "at least 1"));
        }
        if self.reporting.collect_cycle_ms > 86_400_000 {
            return Err(invalid(
                "reporting.collectCycleMs",
                self.reporting.collect_cycle_ms,
                "milliseconds, at most a day",
            ));
        }
        if self.reporting.report_cycle_ms == 0 || self.reporting.report_cycle_ms > 86_400_000 {
            return Err(invalid(
                "reporting.reportCycleMs",
                self.reporting.report_cycle_ms,
                "milliseconds, 1..=86400000",
            ));
        }
        let node_required = matches!(self.backend, BackendKind::Mqtt | BackendKind::Kube);
        if node_required && self.node.as_deref().unwrap_or("").is_empty() {
            return Err(invalid("node", "", "this node's name (or env NODE_NAME)"));
        }
        let missing = |k: &str| invalid(k, "", "a section for the chosen backend");
        match self.backend {
            BackendKind::Mqtt if self.mqtt.is_none() => return Err(missing("mqtt")),
            BackendKind::Dmi if self.dmi.is_none() => return Err(missing("dmi")),
            BackendKind::Kube if self.kube.is_none() => return Err(missing("kube")),
            _ => {}
        }
        Ok(())
    }

    /// The discovery range, from the key or the ROS 2 default.
    pub fn discovery_range(&self) -> Result<DiscoveryRange, ConfigError> {
        match &self.ros.discovery_range {
            None => Ok(DiscoveryRange::Subnet),
            Some(s) => s.parse().map_err(|_| {
                invalid(
                    "ros.discoveryRange",
                    s,
                    "OFF, LOCALHOST, SUBNET or SYSTEM_DEFAULT",
                )
            }),
        }
    }

    /// Default cycles of properties.
    pub fn plan_defaults(&self) -> mapper_core::visitor::PlanDefaults {
        mapper_core::visitor::PlanDefaults {
            domain_id: self.ros.domain_id.unwrap_or(0),
            collect_cycle: Duration::from_millis(self.reporting.collect_cycle_ms),
            report_cycle: Duration::from_millis(self.reporting.report_cycle_ms),
            liveness_cycles: self.reporting.liveness_cycles,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_default_parses_and_validates() {
        let mut c = MapperConfig::parse(DEFAULT_CONFIG, "default.yaml").unwrap();
        c.apply_env(|k| (k == "NODE_NAME").then(|| "edge-1".to_owned()))
            .unwrap();
        c.validate().unwrap();
        assert_eq!(c.backend, BackendKind::Dmi);
        assert_eq!(c.reporting.collect_cycle_ms, 1000);
    }

    #[test]
    fn errors_name_the_key_the_value_and_the_expectation() {
        let base = "backend: dmi\ndmi: {}\n";
        let e = MapperConfig::parse("backend: modbus\n", "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.yaml:") && e.contains("modbus"), "{e}");
        let e = MapperConfig::parse(&format!("{base}reporting: {{collectCycle: 5}}\n"), "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `collectCycle`"), "{e}");
        let c =
            MapperConfig::parse(&format!("{base}ros: {{discoveryRange: WIDE}}\n"), "x").unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "ros.discoveryRange: \"WIDE\" is invalid: expected OFF, LOCALHOST, SUBNET or SYSTEM_DEFAULT"
        );
        let mut c = MapperConfig::parse(base, "x").unwrap();
        let e = c
            .apply_env(|k| (k == "ROS_DOMAIN_ID").then(|| "abc".to_owned()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "ROS_DOMAIN_ID: \"abc\" is invalid: expected an integer 0..=232"
        );
        c.apply_env(|k| (k == "MAPPER_BACKEND").then(|| "kube".to_owned()))
            .unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("node:"));
    }
}
