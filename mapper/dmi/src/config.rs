//! The DMI backend's configuration (the `dmi` section of the mapper config).
//!
//! ```yaml
//! edgecore_socket: /etc/kubeedge/dmi.sock   # edgecore's DeviceManagerService
//! socket: /etc/kubeedge/ros2.sock           # our DeviceMapperService (sent as MapperInfo.address)
//! name: ros2-mapper
//! version: v0.1.0
//! api_version: v1.0.0                       # what mapper-framework's config sends
//! protocol: ros2                            # must equal the devices' protocolName
//! rate_limit: {per_second: 1.0, burst: 10}  # our share of edgecore's 1/s, burst 100 (node-wide)
//! min_report_interval_ms: 1000              # per device, per kind of call
//! rate_limited_backoff: {initial_ms: 1000, max_ms: 60000}
//! reregister_backoff: {initial_ms: 1000, max_ms: 30000}
//! call_timeout_ms: 5000
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::DmiError;

/// Configuration of the DMI backend. Every key has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DmiConfig {
    /// edgecore's DMI socket. Default `/etc/kubeedge/dmi.sock`; a `unix://` prefix is accepted.
    pub edgecore_socket: PathBuf,
    /// The socket this mapper serves `DeviceMapperService` on, announced in
    /// `MapperInfo.address`. Default `/etc/kubeedge/ros2.sock`.
    pub socket: PathBuf,
    /// `MapperInfo.name`. Default `ros2-mapper`.
    pub name: String,
    /// `MapperInfo.version`. Default `v` + this crate's version.
    pub version: String,
    /// `MapperInfo.api_version`. Default `v1.0.0` (mapper-framework's config value).
    pub api_version: String,
    /// `MapperInfo.protocol`; edgecore routes devices whose
    /// `spec.protocol.protocolName` equals it to this mapper. Default `ros2`.
    pub protocol: String,
    /// Our token bucket for calls to edgecore. edgecore's own limiter (1/s,
    /// burst 100) is shared by every mapper on the node. Default 1/s, burst 10.
    pub rate_limit: RateLimit,
    /// The least time between two `ReportDeviceStatus` (and two
    /// `ReportDeviceStates`) calls for one device, ms. Default 1000.
    pub min_report_interval_ms: u64,
    /// Waiting after edgecore answered "too many request". Default 1 s doubling to 60 s.
    pub rate_limited_backoff: Backoff,
    /// Waiting between attempts to reach and register with edgecore. Default 1 s doubling to 30 s.
    pub reregister_backoff: Backoff,
    /// Deadline of one call to edgecore, ms. Default 5000.
    pub call_timeout_ms: u64,
}

/// A token bucket: `burst` calls at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    /// Sustained calls per second. Default 1.0.
    pub per_second: f64,
    /// Calls allowed at once. Default 10.
    pub burst: u32,
}

/// An exponential backoff: `initial_ms`, doubling, capped at `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 1.0,
            burst: 10,
        }
    }
}

impl Default for DmiConfig {
    fn default() -> Self {
        Self {
            edgecore_socket: PathBuf::from("/etc/kubeedge/dmi.sock"),
            socket: PathBuf::from("/etc/kubeedge/ros2.sock"),
            name: "ros2-mapper".into(),
            version: concat!("v", env!("CARGO_PKG_VERSION")).into(),
            api_version: "v1.0.0".into(),
            protocol: mapper_core::model::PROTOCOL.into(),
            rate_limit: RateLimit::default(),
            min_report_interval_ms: 1000,
            rate_limited_backoff: Backoff {
                initial_ms: 1000,
                max_ms: 60_000,
            },
            reregister_backoff: Backoff {
                initial_ms: 1000,
                max_ms: 30_000,
            },
            call_timeout_ms: 5000,
        }
    }
}

fn invalid(key: &'static str, value: impl std::fmt::Display, expected: &'static str) -> DmiError {
    DmiError::Config {
        key,
        value: value.to_string(),
        expected,
    }
}

fn strip_unix(p: &Path) -> PathBuf {
    let s = p.to_string_lossy();
    match s.strip_prefix("unix://") {
        Some(rest) => PathBuf::from(rest),
        None => p.to_path_buf(),
    }
}

impl Backoff {
    fn validate(&self, key_initial: &'static str, key_max: &'static str) -> Result<(), DmiError> {
        if self.initial_ms == 0 {
            return Err(invalid(
                key_initial,
                self.initial_ms,
                "a positive number of milliseconds",
            ));
        }
        if self.max_ms < self.initial_ms {
            return Err(invalid(
                key_max,
                self.max_ms,
                "at least the initial backoff",
            ));
        }
        Ok(())
    }

    pub fn initial(&self) -> Duration {
        Duration::from_millis(self.initial_ms)
    }

    pub fn max(&self) -> Duration {
        Duration::from_millis(self.max_ms)
    }
}

impl DmiConfig {
    /// Checks every value and normalizes the socket paths (drops `unix://`).
    pub fn validated(mut self) -> Result<Self, DmiError> {
        self.edgecore_socket = strip_unix(&self.edgecore_socket);
        self.socket = strip_unix(&self.socket);
        for (key, path) in [
            ("edgecore_socket", &self.edgecore_socket),
            ("socket", &self.socket),
        ] {
            if path.as_os_str().is_empty() || path.file_name().is_none() {
                return Err(invalid(key, path.display(), "a path to a Unix socket file"));
            }
        }
        if self.socket == self.edgecore_socket {
            return Err(invalid(
                "socket",
                self.socket.display(),
                "a path different from edgecore_socket",
            ));
        }
        for (key, value) in [("name", &self.name), ("protocol", &self.protocol)] {
            if value.trim().is_empty() {
                return Err(invalid(key, format!("{value:?}"), "a non-empty string"));
            }
        }
        if !(self.rate_limit.per_second.is_finite() && self.rate_limit.per_second > 0.0) {
            return Err(invalid(
                "rate_limit.per_second",
                self.rate_limit.per_second,
                "a positive number of calls per second",
            ));
        }
        if self.rate_limit.burst == 0 {
            return Err(invalid("rate_limit.burst", 0, "at least 1"));
        }
        if self.rate_limit.burst > 100 {
            // edgecore's own burst is 100 for the whole node: more can only fail.
            return Err(invalid(
                "rate_limit.burst",
                self.rate_limit.burst,
                "at most 100 (edgecore's burst for the whole node)",
            ));
        }
        self.rate_limited_backoff.validate(
            "rate_limited_backoff.initial_ms",
            "rate_limited_backoff.max_ms",
        )?;
        self.reregister_backoff
            .validate("reregister_backoff.initial_ms", "reregister_backoff.max_ms")?;
        if self.call_timeout_ms == 0 {
            return Err(invalid(
                "call_timeout_ms",
                0,
                "a positive number of milliseconds",
            ));
        }
        Ok(self)
    }

    pub fn min_report_interval(&self) -> Duration {
        Duration::from_millis(self.min_report_interval_ms)
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c: DmiConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c, DmiConfig::default());
        let c = c.validated().unwrap();
        assert_eq!(c.edgecore_socket, PathBuf::from("/etc/kubeedge/dmi.sock"));
        assert_eq!(c.socket, PathBuf::from("/etc/kubeedge/ros2.sock"));
        assert_eq!(
            (c.name.as_str(), c.protocol.as_str(), c.api_version.as_str()),
            ("ros2-mapper", "ros2", "v1.0.0")
        );
        assert_eq!(
            c.rate_limit,
            RateLimit {
                per_second: 1.0,
                burst: 10
            }
        );
        assert_eq!(c.min_report_interval(), Duration::from_secs(1));
    }

    #[test]
    fn partial_and_unix_prefix() {
        let c: DmiConfig = serde_yaml::from_str(
            "edgecore_socket: unix:///run/ke/dmi.sock\nrate_limit: {burst: 5}",
        )
        .unwrap();
        let c = c.validated().unwrap();
        assert_eq!(c.edgecore_socket, PathBuf::from("/run/ke/dmi.sock"));
        assert_eq!(
            c.rate_limit,
            RateLimit {
                per_second: 1.0,
                burst: 5
            }
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(serde_yaml::from_str::<DmiConfig>("edgecore_sock: /x").is_err());
        assert!(serde_yaml::from_str::<DmiConfig>("rate_limit: {rate: 1}").is_err());
    }

    #[test]
    fn validation_names_key_value_and_expectation() {
        let bad = |yaml: &str| {
            serde_yaml::from_str::<DmiConfig>(yaml)
                .unwrap()
                .validated()
                .unwrap_err()
                .to_string()
        };
        let e = bad("rate_limit: {per_second: 0}");
        assert!(
            e.contains("rate_limit.per_second") && e.contains("= 0") && e.contains("positive"),
            "{e}"
        );
        assert!(bad("rate_limit: {burst: 0}").contains("rate_limit.burst"));
        assert!(bad("rate_limit: {burst: 500}").contains("at most 100"));
        assert!(bad("protocol: ''").contains("`protocol`"));
        assert!(bad("socket: /etc/kubeedge/dmi.sock").contains("different"));
        assert!(bad("rate_limited_backoff: {initial_ms: 10, max_ms: 5}")
            .contains("rate_limited_backoff.max_ms"));
        assert!(bad("reregister_backoff: {initial_ms: 0, max_ms: 5}")
            .contains("reregister_backoff.initial_ms"));
        assert!(bad("call_timeout_ms: 0").contains("call_timeout_ms"));
        assert!(bad("socket: ''").contains("`socket`"));
    }
}
