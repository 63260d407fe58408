//! Participant configuration and the ROS 2 environment variables.

use std::net::{IpAddr, Ipv4Addr};

use super::DdsError;

/// The largest domain id ROS 2 accepts (`ROS_DOMAIN_ID`), see REP 2005 / the
/// ROS 2 "domain id" article: 0..=232 keeps all RTPS ports below 65535.
pub const MAX_ROS_DOMAIN_ID: u16 = 232;

/// How far discovery reaches, after `ROS_AUTOMATIC_DISCOVERY_RANGE`.
///
/// How each range maps onto rustdds:
/// - [`Off`](Self::Off): refused. [`Participant::new`](super::Participant::new)
///   fails with [`DdsError::DiscoveryOff`]. rustdds has no intra-process-only
///   transport, and its sockets are bound to `0.0.0.0` on the well-known
///   ports, so even a participant that advertises no locators still hears
///   same-host announcements and could then send to those peers. Not creating
///   a participant is the only faithful "OFF".
/// - [`Localhost`](Self::Localhost): only `127.0.0.1` is advertised and used
///   for multicast; participants on the same host still find each other via
///   rustdds' unicast SPDP announcements to `127.0.0.1:7400+250*domain+10+2*i`
///   (the loopback interface usually has no multicast). Note that rustdds binds
///   its unicast sockets to `0.0.0.0`, so this restricts what is announced and
///   where we send, not what a remote host could send to us.
/// - [`Subnet`](Self::Subnet) (the ROS 2 default) and
///   [`SystemDefault`](Self::SystemDefault): rustdds defaults, i.e. all
///   IPv4 interfaces with multicast discovery. rustdds has no TTL setting, so
///   the two are the same here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DiscoveryRange {
    /// No discovery at all.
    Off,
    /// Same host only.
    Localhost,
    /// The local subnet (ROS 2 default).
    #[default]
    Subnet,
    /// Whatever the middleware does by default.
    SystemDefault,
}

impl DiscoveryRange {
    /// The `ROS_AUTOMATIC_DISCOVERY_RANGE` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "OFF",
            Self::Localhost => "LOCALHOST",
            Self::Subnet => "SUBNET",
            Self::SystemDefault => "SYSTEM_DEFAULT",
        }
    }
}

impl std::fmt::Display for DiscoveryRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DiscoveryRange {
    type Err = DdsError;

    /// Parse a `ROS_AUTOMATIC_DISCOVERY_RANGE` value (ASCII case-insensitive,
    /// surrounding whitespace ignored).
    fn from_str(s: &str) -> Result<Self, DdsError> {
        let t = s.trim();
        [
            Self::Off,
            Self::Localhost,
            Self::Subnet,
            Self::SystemDefault,
        ]
        .into_iter()
        .find(|r| r.as_str().eq_ignore_ascii_case(t))
        .ok_or_else(|| DdsError::InvalidEnv {
            var: ParticipantConfig::VAR_DISCOVERY_RANGE,
            value: s.to_owned(),
            expected: "one of OFF, LOCALHOST, SUBNET, SYSTEM_DEFAULT",
        })
    }
}

/// What a [`Participant`](super::Participant) is built from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParticipantConfig {
    /// DDS domain id, 0..=[`MAX_ROS_DOMAIN_ID`].
    pub domain_id: u16,
    /// How far discovery reaches.
    pub discovery_range: DiscoveryRange,
    /// Explicit interface addresses to advertise and multicast on (rustdds
    /// `with_only_networks`). `None` derives them from
    /// [`discovery_range`](Self::discovery_range): `LOCALHOST` → `127.0.0.1`,
    /// `SUBNET`/`SYSTEM_DEFAULT` → all interfaces. Ignored for `OFF`.
    pub only_networks: Option<Vec<IpAddr>>,
}

impl ParticipantConfig {
    /// `ROS_DOMAIN_ID`.
    pub const VAR_DOMAIN_ID: &'static str = "ROS_DOMAIN_ID";
    /// `ROS_AUTOMATIC_DISCOVERY_RANGE`.
    pub const VAR_DISCOVERY_RANGE: &'static str = "ROS_AUTOMATIC_DISCOVERY_RANGE";
    /// `ROS_LOCALHOST_ONLY` (deprecated since ROS 2 Jazzy, still honoured).
    pub const VAR_LOCALHOST_ONLY: &'static str = "ROS_LOCALHOST_ONLY";

    /// A loopback-only configuration for `domain_id` (handy for tests).
    pub fn localhost(domain_id: u16) -> Self {
        Self {
            domain_id,
            discovery_range: DiscoveryRange::Localhost,
            only_networks: Some(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        }
    }

    /// Read the configuration from the process environment; see
    /// [`from_vars`](Self::from_vars).
    pub fn from_env() -> Result<Self, DdsError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Build the configuration from a variable lookup (pure; `lookup` is
    /// usually `std::env::var`).
    ///
    /// - `ROS_DOMAIN_ID`: unset or empty → 0; otherwise an integer in
    ///   0..=232.
    /// - `ROS_AUTOMATIC_DISCOVERY_RANGE`: unset or empty → not set; otherwise
    ///   `OFF`, `LOCALHOST`, `SUBNET` or `SYSTEM_DEFAULT`.
    /// - `ROS_LOCALHOST_ONLY`: `1` means `LOCALHOST` when
    ///   `ROS_AUTOMATIC_DISCOVERY_RANGE` is not set; `0` or empty means
    ///   nothing; anything else is an error.
    /// - Neither set: `SUBNET`, the ROS 2 default.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, DdsError> {
        let non_empty = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let domain_id = match non_empty(Self::VAR_DOMAIN_ID) {
            None => 0,
            Some(v) => v
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|d| *d <= MAX_ROS_DOMAIN_ID)
                .ok_or(DdsError::InvalidEnv {
                    var: Self::VAR_DOMAIN_ID,
                    value: v,
                    expected: "an integer in 0..=232",
                })?,
        };

        let range = non_empty(Self::VAR_DISCOVERY_RANGE)
            .map(|v| v.parse::<DiscoveryRange>())
            .transpose()?;

        let localhost_only = match non_empty(Self::VAR_LOCALHOST_ONLY) {
            None => false,
            Some(v) => match v.trim() {
                "1" => true,
                "0" => false,
                _ => {
                    return Err(DdsError::InvalidEnv {
                        var: Self::VAR_LOCALHOST_ONLY,
                        value: v,
                        expected: "0 or 1",
                    })
                }
            },
        };
        if localhost_only && range.is_some() {
            tracing::debug!(
                range = ?range,
                "ROS_LOCALHOST_ONLY is ignored because ROS_AUTOMATIC_DISCOVERY_RANGE is set"
            );
        }

        let discovery_range = match (range, localhost_only) {
            (Some(r), _) => r,
            (None, true) => DiscoveryRange::Localhost,
            (None, false) => DiscoveryRange::Subnet,
        };
        Ok(Self {
            domain_id,
            discovery_range,
            only_networks: None,
        })
    }

    /// The rustdds interface filter this configuration implies (`None`: all
    /// interfaces; `Some(empty)`: none).
    pub fn effective_networks(&self) -> Option<Vec<IpAddr>> {
        match self.discovery_range {
            DiscoveryRange::Off => Some(Vec::new()),
            DiscoveryRange::Localhost => Some(
                self.only_networks
                    .clone()
                    .unwrap_or_else(|| vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            ),
            DiscoveryRange::Subnet | DiscoveryRange::SystemDefault => self.only_networks.clone(),
        }
    }

    /// Check the domain id.
    pub fn validate(&self) -> Result<(), DdsError> {
        if self.domain_id > MAX_ROS_DOMAIN_ID {
            return Err(DdsError::InvalidDomainId {
                domain_id: self.domain_id,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_when_nothing_set() {
        let c = ParticipantConfig::from_vars(vars(&[])).unwrap();
        assert_eq!(c.domain_id, 0);
        assert_eq!(c.discovery_range, DiscoveryRange::Subnet);
        assert_eq!(c.only_networks, None);
        assert_eq!(c.effective_networks(), None);
    }

    #[test]
    fn range_parsing_is_case_insensitive() {
        assert_eq!(
            " localhost ".parse::<DiscoveryRange>().unwrap(),
            DiscoveryRange::Localhost
        );
        assert_eq!(
            "System_Default".parse::<DiscoveryRange>().unwrap(),
            DiscoveryRange::SystemDefault
        );
    }

    #[test]
    fn off_has_no_networks() {
        let c = ParticipantConfig {
            domain_id: 1,
            discovery_range: DiscoveryRange::Off,
            only_networks: Some(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        };
        assert_eq!(c.effective_networks(), Some(vec![]));
    }

    #[test]
    fn validate_domain() {
        assert!(ParticipantConfig::localhost(232).validate().is_ok());
        let e = ParticipantConfig::localhost(233).validate().unwrap_err();
        assert!(e.to_string().contains("233"), "{e}");
    }
}
