//! ROS-level QoS profiles and their rustdds form.

use std::time::Duration;

use rustdds::{policy, QosPolicies, QosPolicyBuilder};
use serde::{Deserialize, Serialize};

use super::{raw::WRITE_MAX_BLOCKING_TIME, DdsError};

/// Reliability (DDS `RELIABILITY` kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reliability {
    /// Retransmit until acknowledged.
    Reliable,
    /// Send once.
    BestEffort,
}

/// Durability (DDS `DURABILITY` kind). `TRANSIENT`/`PERSISTENT` from remote
/// endpoints are reported as [`TransientLocal`](Self::TransientLocal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Late joiners get nothing old.
    Volatile,
    /// The writer keeps its history for late joiners ("latched").
    TransientLocal,
}

/// History (DDS `HISTORY`).
///
/// Serialized as `{"keep_last": 10}` or `"keep_all"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum History {
    /// Keep the last `n` samples (`n >= 1`).
    KeepLast(u32),
    /// Keep everything; for our readers bounded to [`KEEP_ALL_SAMPLE_LIMIT`].
    KeepAll,
}

/// Upper bound on the samples a `KEEP_ALL` endpoint of ours buffers (DDS
/// `RESOURCE_LIMITS.max_samples`), so that a stalled consumer cannot grow
/// memory without bound.
pub const KEEP_ALL_SAMPLE_LIMIT: u32 = 1000;

/// Which side of a topic a QoS describes; DDS defaults differ (an absent
/// reliability means `RELIABLE` for writers and `BEST_EFFORT` for readers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    /// A DataWriter.
    Writer,
    /// A DataReader.
    Reader,
}

/// The QoS of a ROS 2 endpoint.
///
/// Serde form (snake_case, unknown fields rejected, missing fields take the
/// [`ros_default`](Self::ros_default) values; durations in seconds as a
/// number):
/// ```json
/// {"reliability": "best_effort", "durability": "volatile",
///  "history": {"keep_last": 5}, "deadline": 0.5, "lifespan": null}
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields, default)]
pub struct Qos {
    /// Reliability kind.
    pub reliability: Reliability,
    /// Durability kind.
    pub durability: Durability,
    /// History kind and depth.
    pub history: History,
    /// DDS `DEADLINE` period; `None` = infinite.
    #[serde(with = "opt_secs")]
    pub deadline: Option<Duration>,
    /// DDS `LIFESPAN`; `None` = infinite.
    #[serde(with = "opt_secs")]
    pub lifespan: Option<Duration>,
}

impl Default for Qos {
    fn default() -> Self {
        Self::ros_default()
    }
}

impl Qos {
    /// `rmw_qos_profile_default`: reliable, volatile, keep last 10.
    pub const fn ros_default() -> Self {
        Self {
            reliability: Reliability::Reliable,
            durability: Durability::Volatile,
            history: History::KeepLast(10),
            deadline: None,
            lifespan: None,
        }
    }

    /// `rmw_qos_profile_sensor_data`: best effort, volatile, keep last 5.
    pub const fn sensor_data() -> Self {
        Self {
            reliability: Reliability::BestEffort,
            durability: Durability::Volatile,
            history: History::KeepLast(5),
            deadline: None,
            lifespan: None,
        }
    }

    /// Latched topics (`/tf_static`, `/robot_description`): reliable,
    /// transient local, keep last 1.
    pub const fn latched() -> Self {
        Self {
            reliability: Reliability::Reliable,
            durability: Durability::TransientLocal,
            history: History::KeepLast(1),
            deadline: None,
            lifespan: None,
        }
    }

    /// `rmw_qos_profile_services_default`: reliable, volatile, keep last 10.
    pub const fn services() -> Self {
        Self::ros_default()
    }

    /// Builder-style setters.
    #[must_use]
    pub const fn with_reliability(mut self, r: Reliability) -> Self {
        self.reliability = r;
        self
    }

    /// Builder-style setter.
    #[must_use]
    pub const fn with_durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Builder-style setter.
    #[must_use]
    pub const fn with_history(mut self, h: History) -> Self {
        self.history = h;
        self
    }

    /// Check that the QoS can be expressed in DDS (`topic` only names the
    /// error).
    pub fn validate(&self, topic: &str) -> Result<(), DdsError> {
        match self.history {
            History::KeepLast(0) => Err(DdsError::InvalidQos {
                topic: topic.to_owned(),
                reason: "history keep_last depth must be at least 1",
            }),
            History::KeepLast(n) if i32::try_from(n).is_err() => Err(DdsError::InvalidQos {
                topic: topic.to_owned(),
                reason: "history keep_last depth does not fit DDS (max 2^31-1)",
            }),
            _ => Ok(()),
        }
    }

    /// The rustdds policies for one of our endpoints. Reliable endpoints get
    /// `max_blocking_time` = [`WRITE_MAX_BLOCKING_TIME`]; `KEEP_ALL` gets
    /// `RESOURCE_LIMITS` of [`KEEP_ALL_SAMPLE_LIMIT`]. Depths beyond `i32`
    /// saturate (call [`validate`](Self::validate) to reject them instead).
    pub fn to_rustdds(&self) -> QosPolicies {
        let mut b = QosPolicyBuilder::new()
            .reliability(match self.reliability {
                Reliability::Reliable => policy::Reliability::Reliable {
                    max_blocking_time: rustdds::Duration::from_std(WRITE_MAX_BLOCKING_TIME),
                },
                Reliability::BestEffort => policy::Reliability::BestEffort,
            })
            .durability(match self.durability {
                Durability::Volatile => policy::Durability::Volatile,
                Durability::TransientLocal => policy::Durability::TransientLocal,
            });
        b = match self.history {
            History::KeepLast(n) => b.history(policy::History::KeepLast {
                depth: i32::try_from(n.max(1)).unwrap_or(i32::MAX),
            }),
            History::KeepAll => {
                let limit = i32::try_from(KEEP_ALL_SAMPLE_LIMIT).unwrap_or(i32::MAX);
                b.history(policy::History::KeepAll)
                    .resource_limits(policy::ResourceLimits {
                        max_samples: limit,
                        max_instances: 1,
                        max_samples_per_instance: limit,
                    })
            }
        };
        if let Some(d) = self.deadline {
            b = b.deadline(policy::Deadline(rustdds::Duration::from_std(d)));
        }
        if let Some(d) = self.lifespan {
            b = b.lifespan(policy::Lifespan {
                duration: rustdds::Duration::from_std(d),
            });
        }
        b.build()
    }

    /// Our view of rustdds policies (typically a discovered endpoint's).
    /// Absent policies take their DDS defaults: reliability `RELIABLE` for
    /// writers / `BEST_EFFORT` for readers, durability `VOLATILE`, history
    /// `KEEP_LAST 1`, deadline and lifespan infinite. `TRANSIENT` and
    /// `PERSISTENT` durability are reported as `TransientLocal`; a non-positive
    /// depth as 1; infinite durations as `None`.
    pub fn from_rustdds(q: &QosPolicies, kind: EndpointKind) -> Self {
        let reliability = match q.reliability() {
            Some(policy::Reliability::Reliable { .. }) => Reliability::Reliable,
            Some(policy::Reliability::BestEffort) => Reliability::BestEffort,
            None => match kind {
                EndpointKind::Writer => Reliability::Reliable,
                EndpointKind::Reader => Reliability::BestEffort,
            },
        };
        let durability = match q.durability() {
            None | Some(policy::Durability::Volatile) => Durability::Volatile,
            Some(
                policy::Durability::TransientLocal
                | policy::Durability::Transient
                | policy::Durability::Persistent,
            ) => Durability::TransientLocal,
        };
        let history = match q.history() {
            None => History::KeepLast(1),
            Some(policy::History::KeepAll) => History::KeepAll,
            Some(policy::History::KeepLast { depth }) => {
                History::KeepLast(u32::try_from(depth).unwrap_or(1).max(1))
            }
        };
        Self {
            reliability,
            durability,
            history,
            deadline: q.deadline().and_then(|d| finite(d.0)),
            lifespan: q.lifespan().and_then(|l| finite(l.duration)),
        }
    }
}

impl From<&Qos> for QosPolicies {
    fn from(q: &Qos) -> Self {
        q.to_rustdds()
    }
}

fn finite(d: rustdds::Duration) -> Option<Duration> {
    if d == rustdds::Duration::INFINITE {
        None
    } else {
        Some(d.to_std())
    }
}

/// `Option<Duration>` as an optional number of seconds.
mod opt_secs {
    use std::time::Duration;

    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<f64>::deserialize(d)? {
            None => Ok(None),
            Some(secs) => Duration::try_from_secs_f64(secs)
                .map(Some)
                .map_err(|_| D::Error::custom("duration must be a non-negative number of seconds")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets() {
        assert_eq!(Qos::ros_default().history, History::KeepLast(10));
        assert_eq!(Qos::sensor_data().reliability, Reliability::BestEffort);
        assert_eq!(Qos::sensor_data().history, History::KeepLast(5));
        assert_eq!(Qos::latched().durability, Durability::TransientLocal);
        assert_eq!(Qos::latched().history, History::KeepLast(1));
        assert_eq!(Qos::services(), Qos::ros_default());
    }

    #[test]
    fn rustdds_round_trip() {
        for q in [
            Qos::ros_default(),
            Qos::sensor_data(),
            Qos::latched(),
            Qos {
                history: History::KeepAll,
                deadline: Some(Duration::from_millis(250)),
                lifespan: Some(Duration::from_secs(3)),
                ..Qos::ros_default()
            },
        ] {
            let dds = q.to_rustdds();
            assert_eq!(Qos::from_rustdds(&dds, EndpointKind::Writer), q);
            assert_eq!(Qos::from_rustdds(&dds, EndpointKind::Reader), q);
        }
    }

    #[test]
    fn absent_policies_are_dds_defaults() {
        let none = QosPolicies::qos_none();
        let w = Qos::from_rustdds(&none, EndpointKind::Writer);
        assert_eq!(w.reliability, Reliability::Reliable);
        assert_eq!(w.durability, Durability::Volatile);
        assert_eq!(w.history, History::KeepLast(1));
        assert_eq!(w.deadline, None);
        let r = Qos::from_rustdds(&none, EndpointKind::Reader);
        assert_eq!(r.reliability, Reliability::BestEffort);
        let inf = QosPolicyBuilder::new()
            .deadline(policy::Deadline(rustdds::Duration::INFINITE))
            .durability(policy::Durability::Persistent)
            .history(policy::History::KeepLast { depth: -1 })
            .build();
        let q = Qos::from_rustdds(&inf, EndpointKind::Reader);
        assert_eq!(q.deadline, None);
        assert_eq!(q.durability, Durability::TransientLocal);
        assert_eq!(q.history, History::KeepLast(1));
    }

    #[test]
    fn serde_form() {
        let q = Qos {
            deadline: Some(Duration::from_millis(500)),
            ..Qos::sensor_data()
        };
        let j = serde_json::to_value(q).unwrap();
        assert_eq!(
            j,
            serde_json::json!({
                "reliability": "best_effort", "durability": "volatile",
                "history": {"keep_last": 5}, "deadline": 0.5, "lifespan": null
            })
        );
        let back: Qos = serde_json::from_value(j).unwrap();
        assert_eq!(back, q);
        let partial: Qos =
            serde_json::from_str(r#"{"durability": "transient_local", "history": "keep_all"}"#)
                .unwrap();
        assert_eq!(partial.reliability, Reliability::Reliable);
        assert_eq!(partial.history, History::KeepAll);
        assert!(serde_json::from_str::<Qos>(r#"{"depth": 3}"#).is_err());
        assert!(serde_json::from_str::<Qos>(r#"{"deadline": -1}"#).is_err());
    }

    #[test]
    fn validate_depth() {
        let q = Qos::ros_default().with_history(History::KeepLast(0));
        let e = q.validate("rt/x").unwrap_err();
        assert!(e.to_string().contains("rt/x"), "{e}");
        assert!(Qos::ros_default().validate("rt/x").is_ok());
    }
}
