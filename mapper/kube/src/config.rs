//! Configuration of the Kubernetes API backend.
//!
//! ```yaml
//! nodeName: edge-node-1        # required; usually from env NODE_NAME (downward API)
//! namespace: robots            # default: all namespaces
//! statusMode: device           # device (KubeEdge <= 1.22) | deviceStatus (>= 1.23); default device
//! statusSubresource: auto      # auto | true | false; default auto
//! fieldManager: ros2-mapper    # default ros2-mapper
//! minStatusIntervalMs: 1000    # default 1000 (min time between status writes of one device)
//! events: true                 # default true: a core/v1 Event per rejected desired value
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::KubeError;

/// Where reported twins are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StatusMode {
    /// `Device.status` (KubeEdge up to 1.22).
    #[default]
    #[serde(rename = "device")]
    Device,
    /// A `DeviceStatus` object with the Device's name and namespace, owned by
    /// the Device (KubeEdge 1.23 and later); created when missing.
    #[serde(rename = "deviceStatus")]
    DeviceStatus,
}

/// Whether the CRD has a `status` subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum StatusSubresource {
    /// Try `.../status`; on 404 fall back to the main resource (and remember).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// Always `.../status` (a CRD generated with the subresource).
    #[serde(rename = "true")]
    Yes,
    /// Always the main resource (KubeEdge's own CRDs declare no subresource).
    #[serde(rename = "false")]
    No,
}

impl<'de> Deserialize<'de> for StatusSubresource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Self::Yes),
            Raw::Bool(false) => Ok(Self::No),
            Raw::Str(s) => match s.as_str() {
                "auto" => Ok(Self::Auto),
                "true" => Ok(Self::Yes),
                "false" => Ok(Self::No),
                other => Err(serde::de::Error::custom(format!(
                    "statusSubresource: {other:?} is not one of auto, true, false"
                ))),
            },
        }
    }
}

/// The backend's configuration (the `kube` section of the mapper config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeConfig {
    /// The node whose devices this mapper serves (`spec.nodeName`). Required.
    #[serde(default)]
    pub node_name: String,
    /// Watch one namespace only; `None` (default) watches all namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Default `device`.
    #[serde(default)]
    pub status_mode: StatusMode,
    /// Default `auto`.
    #[serde(default)]
    pub status_subresource: StatusSubresource,
    /// Default `ros2-mapper`.
    #[serde(default = "default_field_manager")]
    pub field_manager: String,
    /// Minimum milliseconds between two status writes of one device; reports
    /// in between are coalesced (the latest value of each twin wins). Default 1000.
    #[serde(default = "default_interval_ms")]
    pub min_status_interval_ms: u64,
    /// Emit a core/v1 Event (reason `DesiredValueRejected`) per rejected
    /// desired value. Needs RBAC `create` on `events`. Default true.
    #[serde(default = "default_true")]
    pub events: bool,
}

fn default_field_manager() -> String {
    "ros2-mapper".into()
}
fn default_interval_ms() -> u64 {
    1000
}
fn default_true() -> bool {
    true
}

/// Upper bound of `minStatusIntervalMs` (one hour).
pub const MAX_STATUS_INTERVAL_MS: u64 = 3_600_000;

impl KubeConfig {
    /// The defaults, for `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            namespace: None,
            status_mode: StatusMode::default(),
            status_subresource: StatusSubresource::default(),
            field_manager: default_field_manager(),
            min_status_interval_ms: default_interval_ms(),
            events: true,
        }
    }

    /// The defaults, with the node name from the environment variable `NODE_NAME`.
    pub fn from_env() -> Result<Self, KubeError> {
        let node = std::env::var("NODE_NAME").unwrap_or_default();
        let c = Self::new(node);
        c.validate()?;
        Ok(c)
    }

    /// Minimum time between status writes of one device.
    pub fn min_status_interval(&self) -> Duration {
        Duration::from_millis(self.min_status_interval_ms)
    }

    /// Checks every key; the error names the key, the value and what was expected.
    pub fn validate(&self) -> Result<(), KubeError> {
        let bad = |key: &str, value: &str, expected: &str| KubeError::Config {
            key: key.into(),
            value: value.into(),
            expected: expected.into(),
        };
        if !is_dns_subdomain(&self.node_name) {
            return Err(bad(
                "nodeName",
                &self.node_name,
                "a node name (DNS subdomain: lowercase a-z, 0-9, '-', '.', at most 253 chars); set it from env NODE_NAME",
            ));
        }
        if let Some(ns) = &self.namespace {
            if !is_dns_label(ns) {
                return Err(bad(
                    "namespace",
                    ns,
                    "a namespace name (DNS label: lowercase a-z, 0-9, '-', at most 63 chars), or leave it out for all namespaces",
                ));
            }
        }
        if self.field_manager.is_empty()
            || self.field_manager.len() > 128
            || self.field_manager.chars().any(|c| c.is_control())
        {
            return Err(bad(
                "fieldManager",
                &self.field_manager,
                "a non-empty name of at most 128 printable characters",
            ));
        }
        if self.min_status_interval_ms > MAX_STATUS_INTERVAL_MS {
            return Err(bad(
                "minStatusIntervalMs",
                &self.min_status_interval_ms.to_string(),
                "milliseconds between 0 and 3600000",
            ));
        }
        Ok(())
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<KubeConfig, String> {
        serde_yaml::from_str::<KubeConfig>(y).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse("nodeName: edge-1").unwrap();
        assert_eq!(c, KubeConfig::new("edge-1"));
        assert_eq!(c.status_mode, StatusMode::Device);
        assert_eq!(c.status_subresource, StatusSubresource::Auto);
        assert_eq!(c.field_manager, "ros2-mapper");
        assert_eq!(c.min_status_interval(), Duration::from_secs(1));
        assert!(c.events);
        assert!(c.namespace.is_none());
        c.validate().unwrap();
    }

    #[test]
    fn all_keys() {
        let c = parse(
            "nodeName: edge-1\nnamespace: robots\nstatusMode: deviceStatus\nstatusSubresource: true\nfieldManager: m\nminStatusIntervalMs: 0\nevents: false\n",
        )
        .unwrap();
        assert_eq!(c.status_mode, StatusMode::DeviceStatus);
        assert_eq!(c.status_subresource, StatusSubresource::Yes);
        assert_eq!(c.namespace.as_deref(), Some("robots"));
        assert!(!c.events);
        c.validate().unwrap();
        assert_eq!(
            parse("nodeName: a\nstatusSubresource: false")
                .unwrap()
                .status_subresource,
            StatusSubresource::No
        );
        assert_eq!(
            parse("nodeName: a\nstatusSubresource: \"auto\"")
                .unwrap()
                .status_subresource,
            StatusSubresource::Auto
        );
    }

    #[test]
    fn unknown_and_bad_values_are_refused() {
        assert!(parse("nodeName: a\nnodename: b")
            .unwrap_err()
            .contains("unknown field"));
        assert!(parse("nodeName: a\nstatusMode: status").is_err());
        assert!(parse("nodeName: a\nstatusSubresource: maybe")
            .unwrap_err()
            .contains("maybe"));
    }

    #[test]
    fn validation_names_key_value_expected() {
        let e = KubeConfig::new("").validate().unwrap_err().to_string();
        assert!(e.contains("nodeName") && e.contains("NODE_NAME"), "{e}");
        let e = KubeConfig::new("Edge_1")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"Edge_1\""), "{e}");
        let mut c = KubeConfig::new("edge-1");
        c.namespace = Some("Bad NS".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("namespace") && e.contains("Bad NS") && e.contains("DNS label"),
            "{e}"
        );
        let mut c = KubeConfig::new("edge-1");
        c.min_status_interval_ms = 5_000_000;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("minStatusIntervalMs") && e.contains("5000000"),
            "{e}"
        );
        let mut c = KubeConfig::new("edge-1");
        c.field_manager = String::new();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("fieldManager"));
        assert!(KubeConfig::new("node-1.example.com").validate().is_ok());
    }
}
