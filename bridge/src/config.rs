//! The edge and hub configuration files (YAML), validated up front.
//!
//! - [`EdgeConfig`]: the robot side: identity, DDS, the hubs to link to ([`UpstreamConfig`]) with
//!   their topic rules ([`RouteRules`], [`ServiceRules`]).
//! - [`HubConfig`]: the cloud side: listen address, the robots allowed in ([`RobotConfig`]) and
//!   the namespaces their tokens grant, fleet-wide topics, limits.
//!
//! The commented default files are `bridge/config/edge.yaml` and `bridge/config/hub.yaml`
//! ([`EdgeConfig::default_yaml`], [`HubConfig::default_yaml`]); they show every key and its
//! default.
//!
//! Loading is three steps, done together by [`EdgeConfig::load_with_env`] /
//! [`HubConfig::load_with_env`]: parse ([`load`](EdgeConfig::load) or
//! [`from_yaml_str`](EdgeConfig::from_yaml_str); unknown keys and wrong types are refused here),
//! environment overrides ([`apply_env`](EdgeConfig::apply_env)), then
//! [`validate`](EdgeConfig::validate). Validation is pure: it neither resolves DNS names nor
//! reads files; tokens are read by [`SecretSource::resolve`] and [`HubConfig::token_table`].
//!
//! Every [`ConfigError`] names the key (`upstreams[1].address`), the bad value and what was
//! expected. Tokens never appear in errors or `Debug` output.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ros2::dds::{DdsError, DiscoveryRange, ParticipantConfig, MAX_ROS_DOMAIN_ID};
use ros2::names::Namespace;
use serde::{Deserialize, Deserializer, Serialize};

use crate::filter::{Filter, Pattern};
use crate::link::frame::{
    Compression, Token, DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_SIZE_CEILING, MIN_FRAME_SIZE,
};
use crate::link::reliable::{DEFAULT_OUTBOX_BYTES, DEFAULT_OUTBOX_MESSAGES};
use crate::session::{Grant, TokenTable};

/// Environment variable replacing [`EdgeConfig::robot`].
pub const ENV_ROBOT: &str = "BRIDGE_ROBOT";
/// Environment variable (edge) setting `tls.ca_file` of every upstream (turning TLS on).
pub const ENV_TLS_CA_FILE: &str = "BRIDGE_TLS_CA_FILE";
/// Environment variables (hub) setting `tls.cert_file` and `tls.key_file` (both or neither).
pub const ENV_TLS_CERT_FILE: &str = "BRIDGE_TLS_CERT_FILE";
/// See [`ENV_TLS_CERT_FILE`].
pub const ENV_TLS_KEY_FILE: &str = "BRIDGE_TLS_KEY_FILE";
/// Environment variable (hub) setting `tls.client_ca_file` (with the two above).
pub const ENV_TLS_CLIENT_CA_FILE: &str = "BRIDGE_TLS_CLIENT_CA_FILE";
/// Written in an upstream's `token_file`, replaced by the robot name (see
/// [`EdgeConfig::apply_env`]).
pub const ROBOT_PLACEHOLDER: &str = "{robot}";
/// Environment variable replacing [`HttpConfig::listen`] (`host:port`, or `off`).
pub const ENV_HTTP_LISTEN: &str = "BRIDGE_HTTP_LISTEN";
/// Environment variable replacing [`HubConfig::listen`].
pub const ENV_LISTEN: &str = "BRIDGE_LISTEN";
/// `ROS_DOMAIN_ID`, used when [`DdsConfig::domain_id`] is not set.
pub const ENV_ROS_DOMAIN_ID: &str = ParticipantConfig::VAR_DOMAIN_ID;

/// Default edge HTTP listen address.
pub const DEFAULT_EDGE_HTTP_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9180);
/// Default hub HTTP listen address.
pub const DEFAULT_HUB_HTTP_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9181);
/// Default hub listen address for robot links.
pub const DEFAULT_HUB_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7447);
/// Default drain timeout on shutdown (ms).
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 5000;
/// Default connect timeout per attempt (ms).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5000;
/// Default service call timeout (ms).
pub const DEFAULT_SERVICE_TIMEOUT_MS: u64 = 10_000;
/// Default hub linger for a disconnected robot's routes (s).
pub const DEFAULT_LINK_LINGER_S: u64 = 300;
/// Default route priority (0 = most urgent, 7 = bulk).
pub const DEFAULT_PRIORITY: u8 = 4;
/// Lowest priority (bulk).
pub const MAX_PRIORITY: u8 = 7;
/// History depth used when neither the settings nor the publisher give one.
pub const DEFAULT_DEPTH: u32 = 10;
/// Largest configurable history depth.
pub const MAX_DEPTH: u32 = 10_000;
/// Longest robot identity / upstream name.
pub const MAX_NAME_LEN: usize = 63;
/// Largest token file read (bytes).
pub const MAX_TOKEN_FILE_LEN: u64 = 64 * 1024;

/// Upper bound of most millisecond durations (1 hour); keeps deadlines far from overflow.
const MAX_MS: u64 = 3_600_000;
/// Upper bound of [`HubConfig::link_linger_s`] (1 week).
const MAX_LINGER_S: u64 = 7 * 24 * 3600;

/// A configuration that cannot be used. Never contains a token.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid YAML, a wrong type, a missing or unknown key (serde's message names the key).
    #[error("{}{message}", origin.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Parse {
        /// The file, if parsed from one.
        origin: Option<PathBuf>,
        /// The parser's message, e.g. ``upstreams[0]: unknown field `tokn` …``.
        message: String,
    },
    /// A value out of its allowed set or range.
    #[error("{key}: {value} {problem} (expected {expected})")]
    Invalid {
        /// The key path, e.g. `upstreams[1].address` or `$BRIDGE_LISTEN`.
        key: String,
        /// The bad value as written (strings quoted).
        value: String,
        /// What is wrong with it, e.g. `is not host:port`.
        problem: String,
        /// What would be accepted.
        expected: String,
    },
    /// A problem that has no single value to show (missing, conflicting keys, token problems).
    #[error("{key}: {problem} (expected {expected})")]
    Problem {
        /// The key path.
        key: String,
        /// What is wrong.
        problem: String,
        /// What would be accepted.
        expected: String,
    },
}

impl ConfigError {
    /// The key path the error is about (`None` for read and parse errors).
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } | Self::Problem { key, .. } => Some(key),
            Self::Read { .. } | Self::Parse { .. } => None,
        }
    }
}

fn invalid(
    key: impl Into<String>,
    value: impl fmt::Display,
    problem: impl Into<String>,
    expected: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        problem: problem.into(),
        expected: expected.into(),
    }
}

fn problem(
    key: impl Into<String>,
    problem: impl Into<String>,
    expected: impl Into<String>,
) -> ConfigError {
    ConfigError::Problem {
        key: key.into(),
        problem: problem.into(),
        expected: expected.into(),
    }
}

/// `prefix.key`, or `key` without a prefix.
fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

fn check_range<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
    unit: &str,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            key,
            &value,
            "is out of range",
            format!("{min}..={max}{unit}"),
        ));
    }
    Ok(())
}

/// Whether `s` is a valid robot identity: `[a-z0-9]([-a-z0-9_]*[a-z0-9])?`, at most 63 chars.
pub fn is_valid_robot_name(s: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            b.len() <= MAX_NAME_LEN
                && alnum(first)
                && alnum(last)
                && b.iter().all(|&c| alnum(c) || c == b'-' || c == b'_')
        }
        _ => false,
    }
}

/// Whether `s` is a valid upstream name: `[a-z0-9-_]{1,63}`.
pub fn is_valid_upstream_name(s: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

const ROBOT_NAME_RULE: &str = "lowercase letters, digits, '-' and '_', starting and ending with a \
                               letter or digit, at most 63 characters, e.g. robot1";

/// Whether `host` is a DNS name (labels of letters, digits and `-`) or an IPv4 address.
fn is_valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let labels_ok = host.split('.').all(|l| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
    });
    let all_numeric = host
        .split('.')
        .all(|l| l.bytes().all(|c| c.is_ascii_digit()));
    labels_ok && (!all_numeric || host.parse::<Ipv4Addr>().is_ok())
}

/// Splits `host:port`: the host is a DNS name, an IPv4 address or `[IPv6]` (returned without
/// brackets), the port 1..=65535. `None` if `s` is not of that form.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, port) = rest.split_once("]:")?;
        v6.parse::<Ipv6Addr>().ok()?;
        (v6, port)
    } else {
        let (host, port) = s.rsplit_once(':')?;
        if !is_valid_host(host) {
            return None;
        }
        (host, port)
    };
    if port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    Some((host, port))
}

fn parse_socket_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim().parse::<SocketAddr>().map_err(|_| {
        invalid(
            key,
            quoted(s),
            "is not an IP address and port",
            "e.g. 0.0.0.0:7447 or [::]:7447",
        )
    })
}

/// Deserializes an `Option` whose key must be present (`null` allowed).
fn required_option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

/// Deserializes an inline token; errors never echo the value.
fn de_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Token>, D::Error> {
    struct V;
    const NOT_STRING: &str = "a token must be a string (quote it)";
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Token>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a token string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Token::new(v)))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Token::new(v)))
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V)
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::custom(NOT_STRING))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom(NOT_STRING))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::custom(NOT_STRING))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom(NOT_STRING))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(serde::de::Error::custom(NOT_STRING))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(serde::de::Error::custom(NOT_STRING))
        }
        fn visit_enum<A: serde::de::EnumAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(serde::de::Error::custom(NOT_STRING))
        }
    }
    d.deserialize_option(V)
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// Where a token comes from: exactly one of the keys `token`, `token_file`, `token_env`.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Key `token`: the token inline.
    Inline(Token),
    /// Key `token_file`: a file holding the token (trailing newlines are ignored).
    File(PathBuf),
    /// Key `token_env`: an environment variable holding the token.
    Env(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Env(v) => f.debug_tuple("Env").field(v).finish(),
        }
    }
}

impl SecretSource {
    /// The configuration key this source is written as.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Inline(_) => "token",
            Self::File(_) => "token_file",
            Self::Env(_) => "token_env",
        }
    }

    /// Reads the token: inline as is, a file's content without trailing newlines, or the
    /// environment variable through `env`. An empty token is an error.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Token, ConfigError> {
        self.resolve_at("", env)
    }

    fn resolve_at(
        &self,
        prefix: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Token, ConfigError> {
        let key = join(prefix, self.key());
        let secret = match self {
            Self::Inline(t) => t.expose().to_owned(),
            Self::File(path) => read_token_file(&key, path)?,
            Self::Env(var) => env(var).ok_or_else(|| {
                problem(
                    &key,
                    format!("environment variable {var} is not set"),
                    "the variable to hold the token",
                )
            })?,
        };
        let secret = secret.trim_end_matches(['\n', '\r']);
        if secret.is_empty() {
            return Err(problem(&key, "the token is empty", "a non-empty token"));
        }
        Ok(Token::new(secret))
    }
}

fn read_token_file(key: &str, path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let unreadable = |e: &dyn fmt::Display| {
        problem(
            key,
            format!("cannot read {}: {e}", path.display()),
            "a readable file holding the token",
        )
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(&e))?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(&e))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_LEN {
        return Err(problem(
            key,
            format!(
                "{} is larger than {MAX_TOKEN_FILE_LEN} bytes",
                path.display()
            ),
            "a file holding only the token",
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        problem(
            key,
            format!("{} is not UTF-8 text", path.display()),
            "a file holding the token as text",
        )
    })
}

/// Checks the three token keys and returns the one source.
fn secret_source(
    prefix: &str,
    token: Option<&Token>,
    token_file: Option<&PathBuf>,
    token_env: Option<&String>,
) -> Result<SecretSource, ConfigError> {
    const EXPECTED: &str = "exactly one of token, token_file, token_env";
    let given: Vec<&str> = [
        token.map(|_| "token"),
        token_file.map(|_| "token_file"),
        token_env.map(|_| "token_env"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        return Err(problem(
            prefix,
            format!(
                "{} are {} set",
                given.join(" and "),
                if given.len() == 2 { "both" } else { "all" }
            ),
            EXPECTED,
        ));
    }
    if let Some(t) = token {
        if t.expose().is_empty() {
            return Err(problem(
                join(prefix, "token"),
                "the token is empty",
                "a non-empty token",
            ));
        }
        return Ok(SecretSource::Inline(t.clone()));
    }
    if let Some(p) = token_file {
        if p.as_os_str().is_empty() {
            return Err(invalid(
                join(prefix, "token_file"),
                "\"\"",
                "is empty",
                "a file path",
            ));
        }
        return Ok(SecretSource::File(p.clone()));
    }
    if let Some(v) = token_env {
        if v.is_empty() || v.contains(['=', '\0']) {
            return Err(invalid(
                join(prefix, "token_env"),
                quoted(v),
                "is not an environment variable name",
                "e.g. BRIDGE_TOKEN",
            ));
        }
        return Ok(SecretSource::Env(v.clone()));
    }
    Err(problem(
        join(prefix, "token"),
        "no token is given",
        EXPECTED,
    ))
}

// ---------------------------------------------------------------------------------------------
// DDS and HTTP

/// The DDS participant. All keys optional; the defaults follow the ROS 2 environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdsConfig {
    /// DDS domain id, 0..=232. Default `null`: `$ROS_DOMAIN_ID`, else 0.
    pub domain_id: Option<u16>,
    /// `localhost`, `subnet` or `system_default` (case-insensitive). Default `null`:
    /// `$ROS_AUTOMATIC_DISCOVERY_RANGE` / `$ROS_LOCALHOST_ONLY`, else `subnet`. `off` is refused:
    /// the bridge needs discovery.
    pub discovery_range: Option<String>,
    /// Interface addresses to advertise and multicast on. Default `[]`: derived from the
    /// discovery range.
    pub only_networks: Vec<IpAddr>,
}

const RANGE_EXPECTED: &str = "localhost, subnet or system_default; \"off\" is not possible: the \
                              bridge needs DDS discovery to find the topics it relays";

fn parse_range(key: &str, s: &str) -> Result<DiscoveryRange, ConfigError> {
    match s.parse::<DiscoveryRange>() {
        Ok(DiscoveryRange::Off) => Err(invalid(
            key,
            quoted(s),
            "turns discovery off",
            RANGE_EXPECTED,
        )),
        Ok(r) => Ok(r),
        Err(_) => Err(invalid(
            key,
            quoted(s),
            "is not a discovery range",
            RANGE_EXPECTED,
        )),
    }
}

fn dds_error(e: DdsError) -> ConfigError {
    match e {
        DdsError::InvalidEnv {
            var,
            value,
            expected,
        } => invalid(format!("${var}"), quoted(&value), "is not valid", expected),
        other => problem("dds", other.to_string(), "a valid DDS configuration"),
    }
}

impl DdsConfig {
    /// Checks the keys set in the file (`prefix` is the key path, e.g. `dds`).
    fn validate_at(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(d) = self.domain_id {
            check_range(&join(prefix, "domain_id"), d, 0, MAX_ROS_DOMAIN_ID, "")?;
        }
        if let Some(r) = &self.discovery_range {
            parse_range(&join(prefix, "discovery_range"), r)?;
        }
        Ok(())
    }

    /// The participant configuration: file values first, then the ROS 2 variables from `env`
    /// for keys left `null` (a variable is not even read when the file sets its key).
    pub fn participant_config(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ParticipantConfig, ConfigError> {
        self.validate_at("dds")?;
        let masked = |var: &str| {
            let from_file = match var {
                ParticipantConfig::VAR_DOMAIN_ID => self.domain_id.is_some(),
                ParticipantConfig::VAR_DISCOVERY_RANGE | ParticipantConfig::VAR_LOCALHOST_ONLY => {
                    self.discovery_range.is_some()
                }
                _ => false,
            };
            if from_file {
                None
            } else {
                env(var)
            }
        };
        let mut pc = ParticipantConfig::from_vars(masked).map_err(dds_error)?;
        if let Some(d) = self.domain_id {
            pc.domain_id = d;
        }
        if let Some(r) = &self.discovery_range {
            pc.discovery_range = parse_range("dds.discovery_range", r)?;
        }
        if pc.discovery_range == DiscoveryRange::Off {
            return Err(invalid(
                format!("${}", ParticipantConfig::VAR_DISCOVERY_RANGE),
                quoted(&env(ParticipantConfig::VAR_DISCOVERY_RANGE).unwrap_or_default()),
                "turns discovery off",
                RANGE_EXPECTED,
            ));
        }
        if !self.only_networks.is_empty() {
            pc.only_networks = Some(self.only_networks.clone());
        }
        pc.validate().map_err(dds_error)?;
        Ok(pc)
    }

    /// `ROS_DOMAIN_ID` from `env` fills [`domain_id`](Self::domain_id) when the file left it
    /// `null` (empty counts as unset).
    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if self.domain_id.is_some() {
            return Ok(());
        }
        let Some(v) = env(ENV_ROS_DOMAIN_ID).filter(|v| !v.trim().is_empty()) else {
            return Ok(());
        };
        let d = v
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|d| *d <= MAX_ROS_DOMAIN_ID)
            .ok_or_else(|| {
                invalid(
                    format!("${ENV_ROS_DOMAIN_ID}"),
                    quoted(&v),
                    "is not a domain id",
                    format!("an integer in 0..={MAX_ROS_DOMAIN_ID}"),
                )
            })?;
        tracing::debug!(domain_id = d, "DDS domain id from ${ENV_ROS_DOMAIN_ID}");
        self.domain_id = Some(d);
        Ok(())
    }
}

/// The health and metrics endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address; `null` disables the endpoint. The key must be written when `http` is
    /// (default when `http` is left out: `0.0.0.0:9180` on the edge, `0.0.0.0:9181` on the hub).
    #[serde(deserialize_with = "required_option")]
    pub listen: Option<SocketAddr>,
}

impl HttpConfig {
    /// The edge default: `0.0.0.0:9180`.
    pub fn edge_default() -> Self {
        Self {
            listen: Some(DEFAULT_EDGE_HTTP_LISTEN),
        }
    }

    /// The hub default: `0.0.0.0:9181`.
    pub fn hub_default() -> Self {
        Self {
            listen: Some(DEFAULT_HUB_HTTP_LISTEN),
        }
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let Some(v) = env(ENV_HTTP_LISTEN).filter(|v| !v.trim().is_empty()) else {
            return Ok(());
        };
        self.listen = if v.trim().eq_ignore_ascii_case("off") {
            None
        } else {
            Some(
                parse_socket_addr(&format!("${ENV_HTTP_LISTEN}"), &v).map_err(|e| match e {
                    ConfigError::Invalid {
                        key,
                        value,
                        problem,
                        ..
                    } => ConfigError::Invalid {
                        key,
                        value,
                        problem,
                        expected: "e.g. 0.0.0.0:9180, or off".into(),
                    },
                    other => other,
                })?,
            )
        };
        tracing::debug!(listen = ?self.listen, "HTTP listen address from ${ENV_HTTP_LISTEN}");
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Routes and services

/// Per-topic settings; in a list, the first entry whose `match` matches a topic applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// Key `match`: the topics these settings apply to.
    #[serde(rename = "match")]
    pub pattern: Pattern,
    /// 0 (most urgent: commands) ..= 7 (bulk such as point clouds). Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Acknowledged delivery. Default `null`: follow the DDS publisher's reliability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reliable: Option<bool>,
    /// Keep messages during an outage and deliver them after it. Default false; `true` needs
    /// `reliable` not `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_forward: Option<bool>,
    /// `none` or `zstd`. Default `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Downsample to at most this rate (> 0, finite). Default `null`: every message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate_hz: Option<f64>,
    /// History depth on the far side and of the latched cache, 1..=10000. Default `null`: the
    /// publisher's depth, else 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    /// Reliable routes: unacknowledged messages kept. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_messages: Option<usize>,
    /// Reliable routes: unacknowledged bytes kept. Default 16 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_bytes: Option<usize>,
}

impl TopicSettings {
    /// Settings for `pattern` with every value at its default.
    pub fn new(pattern: Pattern) -> Self {
        Self {
            pattern,
            priority: None,
            reliable: None,
            store_forward: None,
            compression: None,
            max_rate_hz: None,
            depth: None,
            outbox_messages: None,
            outbox_bytes: None,
        }
    }

    fn validate_at(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(p) = self.priority {
            check_range(
                &join(prefix, "priority"),
                p,
                0,
                MAX_PRIORITY,
                " (0 = most urgent)",
            )?;
        }
        if self.store_forward == Some(true) && self.reliable == Some(false) {
            return Err(problem(
                join(prefix, "store_forward"),
                "store_forward is true but reliable is false",
                "reliable: true or null with store_forward",
            ));
        }
        if let Some(r) = self.max_rate_hz {
            if !(r.is_finite() && r > 0.0) {
                return Err(invalid(
                    join(prefix, "max_rate_hz"),
                    r,
                    "is not a positive rate",
                    "a finite number > 0, e.g. 10.0",
                ));
            }
        }
        if let Some(d) = self.depth {
            check_range(&join(prefix, "depth"), d, 1, MAX_DEPTH, "")?;
        }
        if let Some(m) = self.outbox_messages {
            check_range(&join(prefix, "outbox_messages"), m, 1, usize::MAX, "")?;
        }
        if let Some(b) = self.outbox_bytes {
            check_range(&join(prefix, "outbox_bytes"), b, 1, usize::MAX, "")?;
        }
        Ok(())
    }
}

/// Route settings with the defaults applied (from an optional [`TopicSettings`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteSettings {
    /// 0 (most urgent) ..= 7.
    pub priority: u8,
    /// `None`: follow the DDS publisher's reliability.
    pub reliable: Option<bool>,
    /// Keep messages during an outage.
    pub store_forward: bool,
    /// Compression of the route.
    pub compression: Compression,
    /// Downsampling rate; `None`: every message.
    pub max_rate_hz: Option<f64>,
    /// History depth; `None`: the publisher's, else [`DEFAULT_DEPTH`].
    pub depth: Option<u32>,
    /// Outbox limit in messages.
    pub outbox_messages: usize,
    /// Outbox limit in bytes.
    pub outbox_bytes: usize,
}

impl Default for RouteSettings {
    fn default() -> Self {
        Self {
            priority: DEFAULT_PRIORITY,
            reliable: None,
            store_forward: false,
            compression: Compression::None,
            max_rate_hz: None,
            depth: None,
            outbox_messages: DEFAULT_OUTBOX_MESSAGES,
            outbox_bytes: DEFAULT_OUTBOX_BYTES,
        }
    }
}

impl From<Option<&TopicSettings>> for RouteSettings {
    fn from(s: Option<&TopicSettings>) -> Self {
        let d = Self::default();
        let Some(s) = s else { return d };
        Self {
            priority: s.priority.unwrap_or(d.priority),
            reliable: s.reliable,
            store_forward: s.store_forward.unwrap_or(d.store_forward),
            compression: s.compression.unwrap_or(d.compression),
            max_rate_hz: s.max_rate_hz,
            depth: s.depth,
            outbox_messages: s.outbox_messages.unwrap_or(d.outbox_messages),
            outbox_bytes: s.outbox_bytes.unwrap_or(d.outbox_bytes),
        }
    }
}

fn first_match<'a>(topics: &'a [TopicSettings], name: &str) -> Option<&'a TopicSettings> {
    topics.iter().find(|t| t.pattern.matches(name))
}

fn validate_topics(prefix: &str, topics: &[TopicSettings]) -> Result<(), ConfigError> {
    topics
        .iter()
        .enumerate()
        .try_for_each(|(i, t)| t.validate_at(&format!("{prefix}[{i}]")))
}

/// Which topics cross in one direction, and their settings. Default: nothing crosses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteRules {
    /// Topics that may cross. Default `[]`: none.
    pub allow: Vec<Pattern>,
    /// Topics that never cross, even when allowed. Default `[]`.
    pub deny: Vec<Pattern>,
    /// Per-topic settings, first match wins. Default `[]`.
    pub topics: Vec<TopicSettings>,
}

impl RouteRules {
    /// The allow/deny lists as a [`Filter`].
    pub fn filter(&self) -> Filter {
        Filter::new(self.allow.clone(), self.deny.clone())
    }

    /// Whether `name` crosses (deny wins, empty allow allows nothing).
    pub fn allows(&self, name: &str) -> bool {
        !self.deny.iter().any(|p| p.matches(name)) && self.allow.iter().any(|p| p.matches(name))
    }

    /// The first [`TopicSettings`] whose `match` matches `name`.
    pub fn settings_for(&self, name: &str) -> Option<&TopicSettings> {
        first_match(&self.topics, name)
    }

    /// The settings of `name` with defaults applied.
    pub fn route_settings(&self, name: &str) -> RouteSettings {
        self.settings_for(name).into()
    }

    fn validate_at(&self, prefix: &str) -> Result<(), ConfigError> {
        validate_topics(&join(prefix, "topics"), &self.topics)
    }
}

/// A timeout for the services matching `match`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTimeout {
    /// Key `match`: the services this timeout applies to.
    #[serde(rename = "match")]
    pub pattern: Pattern,
    /// Timeout in milliseconds, 1..=3600000.
    pub timeout_ms: u64,
}

fn default_service_timeout_ms() -> u64 {
    DEFAULT_SERVICE_TIMEOUT_MS
}

/// ROS 2 services relayed over an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRules {
    /// Services served on the robot that the cloud may call. Default: none.
    #[serde(default)]
    pub serve: Filter,
    /// Services served in the cloud (by the hub's side) that this robot's clients may call, by
    /// the name the robot uses. Default: none.
    #[serde(default)]
    pub call: Filter,
    /// Timeout of a relayed call in milliseconds, 1..=3600000. Default 10000.
    #[serde(default = "default_service_timeout_ms")]
    pub timeout_ms: u64,
    /// Per-service timeouts, first match wins. Default `[]`.
    #[serde(default)]
    pub timeouts: Vec<ServiceTimeout>,
}

impl Default for ServiceRules {
    fn default() -> Self {
        Self {
            serve: Filter::default(),
            call: Filter::default(),
            timeout_ms: DEFAULT_SERVICE_TIMEOUT_MS,
            timeouts: Vec::new(),
        }
    }
}

impl ServiceRules {
    /// The timeout for service `name`: the first matching entry of `timeouts`, else
    /// `timeout_ms`.
    pub fn timeout_for(&self, name: &str) -> Duration {
        let ms = self
            .timeouts
            .iter()
            .find(|t| t.pattern.matches(name))
            .map_or(self.timeout_ms, |t| t.timeout_ms);
        Duration::from_millis(ms)
    }

    fn validate_at(&self, prefix: &str) -> Result<(), ConfigError> {
        check_range(
            &join(prefix, "timeout_ms"),
            self.timeout_ms,
            1,
            MAX_MS,
            " ms",
        )?;
        for (i, t) in self.timeouts.iter().enumerate() {
            let key = join(prefix, &format!("timeouts[{i}].timeout_ms"));
            check_range(&key, t.timeout_ms, 1, MAX_MS, " ms")?;
        }
        Ok(())
    }
}

/// Reconnection back-off: the delay starts at `initial_ms` and doubles up to `max_ms`, each
/// delay varied by ±`jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    /// First delay in milliseconds, >= 10. Default 1000.
    pub initial_ms: u64,
    /// Largest delay in milliseconds, initial_ms..=3600000. Default 30000.
    pub max_ms: u64,
    /// Random variation as a fraction of the delay, 0..=1. Default 0.2.
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial_ms: 1000,
            max_ms: 30_000,
            jitter: 0.2,
        }
    }
}

impl BackoffConfig {
    /// The first delay.
    pub fn initial(&self) -> Duration {
        Duration::from_millis(self.initial_ms)
    }

    /// The largest delay.
    pub fn max(&self) -> Duration {
        Duration::from_millis(self.max_ms)
    }

    fn validate_at(&self, prefix: &str) -> Result<(), ConfigError> {
        check_range(
            &join(prefix, "initial_ms"),
            self.initial_ms,
            10,
            MAX_MS,
            " ms",
        )?;
        if self.max_ms < self.initial_ms {
            return Err(invalid(
                join(prefix, "max_ms"),
                self.max_ms,
                format!("is less than initial_ms ({})", self.initial_ms),
                format!("{}..={MAX_MS} ms", self.initial_ms),
            ));
        }
        check_range(
            &join(prefix, "max_ms"),
            self.max_ms,
            self.initial_ms,
            MAX_MS,
            " ms",
        )?;
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(invalid(
                join(prefix, "jitter"),
                self.jitter,
                "is out of range",
                "a fraction in 0.0..=1.0",
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Edge

/// TLS from the edge to a hub.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// PEM CA bundle that signs the hub's certificate. Required: no system or webpki roots are
    /// built in.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name checked against the hub's certificate. Default `null`: the host of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM client certificate chain; with `client_key_file`, both or neither. Default `null`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM client private key; with `client_cert_file`, both or neither. Default `null`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl TlsClientConfig {
    fn validate_at(&self, prefix: &str) -> Result<(), ConfigError> {
        match &self.ca_file {
            None => {
                return Err(problem(
                    join(prefix, "ca_file"),
                    "missing",
                    "a PEM CA bundle for the hub's certificate (no built-in roots are available)",
                ))
            }
            Some(p) if p.as_os_str().is_empty() => {
                return Err(invalid(
                    join(prefix, "ca_file"),
                    "\"\"",
                    "is empty",
                    "a file path",
                ))
            }
            Some(_) => {}
        }
        if let Some(n) = &self.server_name {
            if !is_valid_host(n) && n.parse::<IpAddr>().is_err() {
                return Err(invalid(
                    join(prefix, "server_name"),
                    quoted(n),
                    "is not a DNS name or IP address",
                    "e.g. ros2-hub.example.com",
                ));
            }
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(_), None) => Err(problem(
                join(prefix, "client_key_file"),
                "missing while client_cert_file is set",
                "both client_cert_file and client_key_file, or neither",
            )),
            (None, Some(_)) => Err(problem(
                join(prefix, "client_cert_file"),
                "missing while client_key_file is set",
                "both client_cert_file and client_key_file, or neither",
            )),
            _ => Ok(()),
        }
    }
}

fn default_max_frame_size() -> u32 {
    DEFAULT_MAX_FRAME_SIZE
}

fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}

fn default_drain_timeout_ms() -> u64 {
    DEFAULT_DRAIN_TIMEOUT_MS
}

/// One hub the edge links to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name used in logs and metrics, `[a-z0-9-_]{1,63}`. Required.
    pub name: String,
    /// The hub as `host:port`; host is a DNS name, IPv4 or `[IPv6]`. Resolved anew at every
    /// connection attempt. Required.
    pub address: String,
    /// The token inline (one of `token`, `token_file`, `token_env`).
    #[serde(
        default,
        deserialize_with = "de_token",
        skip_serializing_if = "Option::is_none"
    )]
    pub token: Option<Token>,
    /// A file holding the token (one of `token`, `token_file`, `token_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token (one of `token`, `token_file`, `token_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// TLS. Default `null`: plain TCP.
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
    /// Robot -> cloud topics. Default: none.
    #[serde(default)]
    pub up: RouteRules,
    /// Cloud -> robot topics. Default: none.
    #[serde(default)]
    pub down: RouteRules,
    /// Services. Default: none served.
    #[serde(default)]
    pub services: ServiceRules,
    /// Reconnection back-off. Default 1000 ms doubling to 30000 ms, jitter 0.2.
    #[serde(default)]
    pub reconnect: BackoffConfig,
    /// Largest frame accepted, 4118..=16777216 bytes. Default 1048576.
    #[serde(default = "default_max_frame_size")]
    pub max_frame_size: u32,
    /// Timeout of one connection attempt (DNS, TCP, TLS) in ms, 1..=3600000. Default 5000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

impl UpstreamConfig {
    /// The one token source (errors name the keys under `upstreams[name=…]`).
    pub fn token_source(&self) -> Result<SecretSource, ConfigError> {
        self.token_source_at(&format!("upstreams[name={}]", self.name))
    }

    fn token_source_at(&self, prefix: &str) -> Result<SecretSource, ConfigError> {
        secret_source(
            prefix,
            self.token.as_ref(),
            self.token_file.as_ref(),
            self.token_env.as_ref(),
        )
    }

    /// Reads the token (see [`SecretSource::resolve`]).
    pub fn resolve_token(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Token, ConfigError> {
        let prefix = format!("upstreams[name={}]", self.name);
        self.token_source_at(&prefix)?.resolve_at(&prefix, env)
    }

    /// Host (without IPv6 brackets) and port of [`address`](Self::address).
    pub fn host_port(&self) -> Result<(&str, u16), ConfigError> {
        split_host_port(&self.address).ok_or_else(|| {
            invalid(
                format!("upstreams[name={}].address", self.name),
                quoted(&self.address),
                "is not host:port",
                "e.g. ros2-hub.fleet.svc:7447",
            )
        })
    }

    /// The name checked against the hub's certificate: `tls.server_name`, else the host of
    /// `address`. `None` without TLS.
    pub fn tls_server_name(&self) -> Option<String> {
        let tls = self.tls.as_ref()?;
        match &tls.server_name {
            Some(n) => Some(n.clone()),
            None => split_host_port(&self.address).map(|(h, _)| h.to_owned()),
        }
    }

    /// Timeout of one connection attempt.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    fn validate_at(&self, prefix: &str) -> Result<(), ConfigError> {
        if !is_valid_upstream_name(&self.name) {
            return Err(invalid(
                join(prefix, "name"),
                quoted(&self.name),
                "is not a valid upstream name",
                "1 to 63 of a-z, 0-9, '-', '_', e.g. cloud",
            ));
        }
        if split_host_port(&self.address).is_none() {
            return Err(invalid(
                join(prefix, "address"),
                quoted(&self.address),
                "is not host:port",
                "e.g. ros2-hub.fleet.svc:7447, 10.0.0.5:7447 or [fd00::5]:7447",
            ));
        }
        self.token_source_at(prefix)?;
        if let Some(tls) = &self.tls {
            tls.validate_at(&join(prefix, "tls"))?;
        }
        self.up.validate_at(&join(prefix, "up"))?;
        self.down.validate_at(&join(prefix, "down"))?;
        self.services.validate_at(&join(prefix, "services"))?;
        self.reconnect.validate_at(&join(prefix, "reconnect"))?;
        check_range(
            &join(prefix, "max_frame_size"),
            self.max_frame_size,
            MIN_FRAME_SIZE,
            MAX_FRAME_SIZE_CEILING,
            " bytes",
        )?;
        check_range(
            &join(prefix, "connect_timeout_ms"),
            self.connect_timeout_ms,
            1,
            MAX_MS,
            " ms",
        )
    }
}

/// The edge (robot) configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// This robot's identity, `[a-z0-9]([-a-z0-9_]*[a-z0-9])?`, at most 63 characters.
    /// Required, in the file or through `$BRIDGE_ROBOT` (empty until then).
    #[serde(default)]
    pub robot: String,
    /// The DDS participant. Default: from the ROS 2 environment variables.
    #[serde(default)]
    pub dds: DdsConfig,
    /// The hubs to link to; at least one, unique names. Required.
    pub upstreams: Vec<UpstreamConfig>,
    /// Health and metrics endpoint. Default listen `0.0.0.0:9180`.
    #[serde(default = "HttpConfig::edge_default")]
    pub http: HttpConfig,
    /// How long to flush reliable messages on shutdown, in ms, 0..=3600000. Default 5000.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

fn parse_yaml<T: serde::de::DeserializeOwned>(
    s: &str,
    origin: Option<&Path>,
) -> Result<T, ConfigError> {
    serde_yaml::from_str(s).map_err(|e| ConfigError::Parse {
        origin: origin.map(Path::to_path_buf),
        message: e.to_string(),
    })
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl EdgeConfig {
    /// The commented default file (`bridge/config/edge.yaml`).
    pub fn default_yaml() -> &'static str {
        include_str!("../config/edge.yaml")
    }

    /// Reads and parses a file (no environment overrides, no validation).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        parse_yaml(&read_file(path)?, Some(path))
    }

    /// Parses YAML text (no environment overrides, no validation).
    pub fn from_yaml_str(s: &str) -> Result<Self, ConfigError> {
        parse_yaml(s, None)
    }

    /// [`load`](Self::load), [`apply_env`](Self::apply_env), [`validate`](Self::validate).
    pub fn load_with_env(
        path: impl AsRef<Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut c = Self::load(path)?;
        c.apply_env(env)?;
        c.validate()?;
        Ok(c)
    }

    /// Environment overrides; empty values count as unset:
    /// `BRIDGE_ROBOT` replaces `robot`, `BRIDGE_HTTP_LISTEN` replaces `http.listen` (`off`
    /// disables), `ROS_DOMAIN_ID` fills `dds.domain_id` when that is `null`. Then `{robot}` in
    /// an upstream's `token_file` becomes the robot name, and `BRIDGE_TLS_CA_FILE` sets every
    /// upstream's `tls.ca_file` (turning TLS on).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(robot) = env(ENV_ROBOT).filter(|v| !v.trim().is_empty()) {
            let robot = robot.trim();
            if !is_valid_robot_name(robot) {
                return Err(invalid(
                    format!("${ENV_ROBOT}"),
                    quoted(robot),
                    "is not a valid robot name",
                    ROBOT_NAME_RULE,
                ));
            }
            tracing::debug!(robot, "robot identity from ${ENV_ROBOT}");
            self.robot = robot.to_owned();
        }
        self.expand_robot_placeholder();
        if let Some(ca) = env(ENV_TLS_CA_FILE).filter(|v| !v.trim().is_empty()) {
            for up in &mut self.upstreams {
                up.tls.get_or_insert_with(TlsClientConfig::default).ca_file =
                    Some(PathBuf::from(&ca));
            }
            tracing::debug!(ca_file = %ca, "every upstream's tls.ca_file from ${ENV_TLS_CA_FILE}");
        }
        self.http.apply_env(&env)?;
        self.dds.apply_env(&env)
    }

    /// Replaces `{robot}` in every upstream's `token_file` with the robot name, so one
    /// DaemonSet config serves every robot: each reads its own key of a mounted Secret
    /// (`/var/run/secrets/kubeedge-ros2/tokens/{robot}`).
    fn expand_robot_placeholder(&mut self) {
        for up in &mut self.upstreams {
            let Some(path) = up.token_file.as_ref().and_then(|p| p.to_str()) else {
                continue;
            };
            if path.contains(ROBOT_PLACEHOLDER) {
                up.token_file = Some(PathBuf::from(path.replace(ROBOT_PLACEHOLDER, &self.robot)));
            }
        }
    }

    /// Checks everything that can be checked without I/O.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.robot.is_empty() {
            return Err(problem(
                "robot",
                "missing",
                format!("this robot's identity in the file or in ${ENV_ROBOT}, {ROBOT_NAME_RULE}"),
            ));
        }
        if !is_valid_robot_name(&self.robot) {
            return Err(invalid(
                "robot",
                quoted(&self.robot),
                "is not a valid robot name",
                ROBOT_NAME_RULE,
            ));
        }
        self.dds.validate_at("dds")?;
        if self.upstreams.is_empty() {
            return Err(invalid(
                "upstreams",
                "[]",
                "is empty",
                "at least one upstream (hub) to link to",
            ));
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            let prefix = format!("upstreams[{i}]");
            u.validate_at(&prefix)?;
            if let Some(j) = self.upstreams[..i].iter().position(|o| o.name == u.name) {
                return Err(invalid(
                    format!("{prefix}.name"),
                    quoted(&u.name),
                    format!("is already the name of upstreams[{j}]"),
                    "a unique name per upstream",
                ));
            }
        }
        check_range("drain_timeout_ms", self.drain_timeout_ms, 0, MAX_MS, " ms")
    }

    /// The upstream called `name`.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// How long to flush reliable messages on shutdown.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

// ---------------------------------------------------------------------------------------------
// Hub

/// TLS on the hub's listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM certificate chain of the hub. Required.
    pub cert_file: PathBuf,
    /// PEM private key of the hub. Required.
    pub key_file: PathBuf,
    /// PEM CA bundle for client certificates; when set, robots must present one signed by it.
    /// Default `null`: no client certificates.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

impl TlsServerConfig {
    fn validate_at(&self, prefix: &str) -> Result<(), ConfigError> {
        for (key, p) in [
            ("cert_file", Some(&self.cert_file)),
            ("key_file", Some(&self.key_file)),
            ("client_ca_file", self.client_ca_file.as_ref()),
        ] {
            if p.is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(invalid(
                    join(prefix, key),
                    "\"\"",
                    "is empty",
                    "a file path",
                ));
            }
        }
        Ok(())
    }
}

/// A robot allowed to connect to the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotConfig {
    /// The identity the robot sends (same rule as [`EdgeConfig::robot`]); unique. Required.
    pub robot: String,
    /// Absolute ROS namespace its topics get on the hub, e.g. `/robot1`; unique, and no
    /// namespace may contain another. Required.
    pub namespace: String,
    /// The token inline (one of `token`, `token_file`, `token_env`).
    #[serde(
        default,
        deserialize_with = "de_token",
        skip_serializing_if = "Option::is_none"
    )]
    pub token: Option<Token>,
    /// A file holding the token (one of `token`, `token_file`, `token_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token (one of `token`, `token_file`, `token_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

impl RobotConfig {
    /// The one token source (errors name the keys under `robots[robot=…]`).
    pub fn token_source(&self) -> Result<SecretSource, ConfigError> {
        self.token_source_at(&format!("robots[robot={}]", self.robot))
    }

    fn token_source_at(&self, prefix: &str) -> Result<SecretSource, ConfigError> {
        secret_source(
            prefix,
            self.token.as_ref(),
            self.token_file.as_ref(),
            self.token_env.as_ref(),
        )
    }

    /// The namespace, parsed (fails if it is not a valid absolute non-root namespace).
    pub fn parsed_namespace(&self) -> Result<Namespace, ConfigError> {
        parse_robot_namespace(
            &format!("robots[robot={}].namespace", self.robot),
            &self.namespace,
        )
    }
}

fn parse_robot_namespace(key: &str, ns: &str) -> Result<Namespace, ConfigError> {
    const EXPECTED: &str = "an absolute ROS namespace other than /, e.g. /robot1";
    if !ns.starts_with('/') {
        return Err(invalid(key, quoted(ns), "is not absolute", EXPECTED));
    }
    let parsed = Namespace::parse(ns).map_err(|e| {
        let reason = match e {
            ros2::names::NameError::InvalidName { reason, .. } => reason.to_owned(),
            other => other.to_string(),
        };
        invalid(
            key,
            quoted(ns),
            format!("is not a valid namespace ({reason})"),
            EXPECTED,
        )
    })?;
    if parsed.is_root() {
        return Err(invalid(key, quoted(ns), "is the root namespace", EXPECTED));
    }
    if parsed.as_str() != ns {
        return Err(invalid(
            key,
            quoted(ns),
            "has a trailing /",
            format!("{:?}", parsed.as_str()),
        ));
    }
    Ok(parsed)
}

/// Whether namespace `inner` is `outer` or below it (`/a/b` is below `/a`, `/ab` is not).
fn ns_contains(outer: &str, inner: &str) -> bool {
    inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Resource limits of the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubLimits {
    /// Robot links open at once, >= 1. Default 1000.
    pub max_links: usize,
    /// Routes per link, >= 1. Default 256.
    pub max_routes_per_link: usize,
    /// Largest frame accepted, 4118..=16777216 bytes. Default 1048576.
    pub max_frame_size: u32,
    /// Time for TLS and the handshake of a new connection, in ms, 1..=3600000. Default 10000.
    pub handshake_timeout_ms: u64,
    /// Heartbeat interval, 100..=600000 ms. Default 5000.
    pub heartbeat_ms: u32,
    /// Send queue per link in bytes, >= max_frame_size. Default 8 MiB.
    pub queue_bytes: usize,
    /// Largest reassembled or decompressed message in bytes, >= 1. Default 64 MiB.
    pub max_message_size: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            max_links: 1000,
            max_routes_per_link: 256,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            handshake_timeout_ms: 10_000,
            heartbeat_ms: 5000,
            queue_bytes: 8 * 1024 * 1024,
            max_message_size: 64 * 1024 * 1024,
        }
    }
}

impl HubLimits {
    fn validate_at(&self, prefix: &str) -> Result<(), ConfigError> {
        check_range(
            &join(prefix, "max_links"),
            self.max_links,
            1,
            usize::MAX,
            "",
        )?;
        check_range(
            &join(prefix, "max_routes_per_link"),
            self.max_routes_per_link,
            1,
            usize::MAX,
            "",
        )?;
        check_range(
            &join(prefix, "max_frame_size"),
            self.max_frame_size,
            MIN_FRAME_SIZE,
            MAX_FRAME_SIZE_CEILING,
            " bytes",
        )?;
        check_range(
            &join(prefix, "handshake_timeout_ms"),
            self.handshake_timeout_ms,
            1,
            MAX_MS,
            " ms",
        )?;
        check_range(
            &join(prefix, "heartbeat_ms"),
            self.heartbeat_ms,
            100,
            600_000,
            " ms",
        )?;
        if self.queue_bytes < self.max_frame_size as usize {
            return Err(invalid(
                join(prefix, "queue_bytes"),
                self.queue_bytes,
                format!("is less than max_frame_size ({})", self.max_frame_size),
                format!("at least {} bytes", self.max_frame_size),
            ));
        }
        check_range(
            &join(prefix, "max_message_size"),
            self.max_message_size,
            1,
            usize::MAX,
            " bytes",
        )
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(u64::from(self.heartbeat_ms))
    }
}

fn default_hub_listen() -> SocketAddr {
    DEFAULT_HUB_LISTEN
}

fn default_link_linger_s() -> u64 {
    DEFAULT_LINK_LINGER_S
}

/// The hub (cloud) configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Address robots connect to. Default `0.0.0.0:7447`.
    #[serde(default = "default_hub_listen")]
    pub listen: SocketAddr,
    /// TLS. Default `null`: plain TCP.
    #[serde(default)]
    pub tls: Option<TlsServerConfig>,
    /// The DDS participant. Default: from the ROS 2 environment variables.
    #[serde(default)]
    pub dds: DdsConfig,
    /// The robots allowed to connect. Required (may be empty).
    pub robots: Vec<RobotConfig>,
    /// Cloud topics delivered to every robot (fleet topics like `/fleet/mission`). Default `[]`.
    #[serde(default)]
    pub shared: Vec<Pattern>,
    /// Per-topic settings of hub -> robot routes, matched on the cloud-side name, first match
    /// wins. Default `[]`.
    #[serde(default)]
    pub topics: Vec<TopicSettings>,
    /// Resource limits.
    #[serde(default)]
    pub limits: HubLimits,
    /// Health and metrics endpoint. Default listen `0.0.0.0:9181`.
    #[serde(default = "HttpConfig::hub_default")]
    pub http: HttpConfig,
    /// How long to flush reliable messages on shutdown, in ms, 0..=3600000. Default 5000.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// How long a disconnected robot's routes and DDS writers are kept, in s, 0..=604800.
    /// Default 300.
    #[serde(default = "default_link_linger_s")]
    pub link_linger_s: u64,
    /// Cloud services robots may call (their timeouts). Which services reach a robot follows
    /// the topic rules: under its namespace, or listed in `shared`, and asked for by the robot
    /// (`services.call` in its edge config).
    #[serde(default)]
    pub services: HubServices,
}

/// Calls from robots to services served in the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubServices {
    /// Timeout of a relayed call in milliseconds, 1..=3600000. Default 10000.
    #[serde(default = "default_service_timeout_ms")]
    pub timeout_ms: u64,
    /// Per-service timeouts (cloud-side names), first match wins. Default `[]`.
    #[serde(default)]
    pub timeouts: Vec<ServiceTimeout>,
}

impl Default for HubServices {
    fn default() -> Self {
        Self {
            timeout_ms: DEFAULT_SERVICE_TIMEOUT_MS,
            timeouts: Vec::new(),
        }
    }
}

impl HubServices {
    /// The timeout for service `name`.
    pub fn timeout_for(&self, name: &str) -> Duration {
        let ms = self
            .timeouts
            .iter()
            .find(|t| t.pattern.matches(name))
            .map_or(self.timeout_ms, |t| t.timeout_ms);
        Duration::from_millis(ms)
    }

    fn validate_at(&self, prefix: &str) -> Result<(), ConfigError> {
        check_range(
            &join(prefix, "timeout_ms"),
            self.timeout_ms,
            1,
            MAX_MS,
            " ms",
        )?;
        for (i, t) in self.timeouts.iter().enumerate() {
            let key = join(prefix, &format!("timeouts[{i}].timeout_ms"));
            check_range(&key, t.timeout_ms, 1, MAX_MS, " ms")?;
        }
        Ok(())
    }
}

impl HubConfig {
    /// The commented default file (`bridge/config/hub.yaml`).
    pub fn default_yaml() -> &'static str {
        include_str!("../config/hub.yaml")
    }

    /// Reads and parses a file (no environment overrides, no validation).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        parse_yaml(&read_file(path)?, Some(path))
    }

    /// Parses YAML text (no environment overrides, no validation).
    pub fn from_yaml_str(s: &str) -> Result<Self, ConfigError> {
        parse_yaml(s, None)
    }

    /// [`load`](Self::load), [`apply_env`](Self::apply_env), [`validate`](Self::validate).
    pub fn load_with_env(
        path: impl AsRef<Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut c = Self::load(path)?;
        c.apply_env(env)?;
        c.validate()?;
        Ok(c)
    }

    /// Environment overrides; empty values count as unset: `BRIDGE_LISTEN` replaces `listen`,
    /// `BRIDGE_HTTP_LISTEN` replaces `http.listen` (`off` disables), `ROS_DOMAIN_ID` fills
    /// `dds.domain_id` when that is `null`; `BRIDGE_TLS_CERT_FILE` with `BRIDGE_TLS_KEY_FILE`
    /// (and optionally `BRIDGE_TLS_CLIENT_CA_FILE`) replace `tls`, so a mounted
    /// `kubernetes.io/tls` Secret turns TLS on without another config file.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env(ENV_LISTEN).filter(|v| !v.trim().is_empty()) {
            self.listen = parse_socket_addr(&format!("${ENV_LISTEN}"), &v)?;
            tracing::debug!(listen = %self.listen, "listen address from ${ENV_LISTEN}");
        }
        let set = |var: &str| env(var).filter(|v| !v.trim().is_empty());
        match (set(ENV_TLS_CERT_FILE), set(ENV_TLS_KEY_FILE)) {
            (Some(cert), Some(key)) => {
                self.tls = Some(TlsServerConfig {
                    cert_file: cert.into(),
                    key_file: key.into(),
                    client_ca_file: set(ENV_TLS_CLIENT_CA_FILE).map(PathBuf::from),
                });
                tracing::debug!("tls from ${ENV_TLS_CERT_FILE} and ${ENV_TLS_KEY_FILE}");
            }
            (None, None) if set(ENV_TLS_CLIENT_CA_FILE).is_none() => {}
            (cert, _) => {
                let (missing, given) = if cert.is_some() {
                    (ENV_TLS_KEY_FILE, ENV_TLS_CERT_FILE)
                } else {
                    (ENV_TLS_CERT_FILE, "another BRIDGE_TLS_* variable")
                };
                return Err(problem(
                    format!("${missing}"),
                    "is not set",
                    format!("${missing} too, since {given} is set"),
                ));
            }
        }
        self.http.apply_env(&env)?;
        self.dds.apply_env(&env)
    }

    /// Checks everything that can be checked without I/O.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(tls) = &self.tls {
            tls.validate_at("tls")?;
        }
        self.dds.validate_at("dds")?;
        self.services.validate_at("services")?;
        let mut namespaces: Vec<Namespace> = Vec::with_capacity(self.robots.len());
        for (i, r) in self.robots.iter().enumerate() {
            let prefix = format!("robots[{i}]");
            if !is_valid_robot_name(&r.robot) {
                return Err(invalid(
                    format!("{prefix}.robot"),
                    quoted(&r.robot),
                    "is not a valid robot name",
                    ROBOT_NAME_RULE,
                ));
            }
            if let Some(j) = self.robots[..i].iter().position(|o| o.robot == r.robot) {
                return Err(invalid(
                    format!("{prefix}.robot"),
                    quoted(&r.robot),
                    format!("is already the robot of robots[{j}]"),
                    "a unique robot identity per entry",
                ));
            }
            let key = format!("{prefix}.namespace");
            let ns = parse_robot_namespace(&key, &r.namespace)?;
            for (j, other) in namespaces.iter().enumerate() {
                let (a, b) = (other.as_str(), ns.as_str());
                let relation = if a == b {
                    "is already the namespace of"
                } else if ns_contains(a, b) {
                    "is inside the namespace of"
                } else if ns_contains(b, a) {
                    "contains the namespace of"
                } else {
                    continue;
                };
                return Err(invalid(
                    key,
                    quoted(b),
                    format!("{relation} robots[{j}] ({a:?})"),
                    "namespaces that neither equal nor contain each other",
                ));
            }
            namespaces.push(ns);
            r.token_source_at(&prefix)?;
        }
        validate_topics("topics", &self.topics)?;
        self.limits.validate_at("limits")?;
        check_range("drain_timeout_ms", self.drain_timeout_ms, 0, MAX_MS, " ms")?;
        check_range("link_linger_s", self.link_linger_s, 0, MAX_LINGER_S, " s")
    }

    /// Reads every robot's token and builds the handshake's token table (token -> namespace,
    /// bound to the robot identity). Duplicate tokens are an error naming both robots.
    pub fn token_table(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<TokenTable, ConfigError> {
        let mut table = TokenTable::new();
        let mut seen: Vec<(Token, usize)> = Vec::with_capacity(self.robots.len());
        for (i, r) in self.robots.iter().enumerate() {
            let prefix = format!("robots[{i}]");
            let source = r.token_source_at(&prefix)?;
            let token = source.resolve_at(&prefix, &env)?;
            let key = join(&prefix, source.key());
            if let Some((_, j)) = seen.iter().find(|(t, _)| t.verify(&token)) {
                return Err(problem(
                    key,
                    format!(
                        "robot {:?} has the same token as robot {:?} (robots[{j}])",
                        r.robot, self.robots[*j].robot
                    ),
                    "a different token for every robot",
                ));
            }
            let namespace = parse_robot_namespace(&format!("{prefix}.namespace"), &r.namespace)?;
            table
                .insert(
                    token.clone(),
                    Grant {
                        namespace,
                        robot: Some(r.robot.clone()),
                    },
                )
                .map_err(|e| problem(&key, e.to_string(), "a usable token and namespace"))?;
            seen.push((token, i));
        }
        Ok(table)
    }

    /// Whether cloud topic `name` is delivered to every robot.
    pub fn is_shared(&self, name: &str) -> bool {
        self.shared.iter().any(|p| p.matches(name))
    }

    /// The first [`TopicSettings`] whose `match` matches cloud-side `name`.
    pub fn settings_for(&self, name: &str) -> Option<&TopicSettings> {
        first_match(&self.topics, name)
    }

    /// The settings of cloud-side `name` with defaults applied.
    pub fn route_settings(&self, name: &str) -> RouteSettings {
        self.settings_for(name).into()
    }

    /// The robot entry with identity `robot`.
    pub fn robot(&self, robot: &str) -> Option<&RobotConfig> {
        self.robots.iter().find(|r| r.robot == robot)
    }

    /// How long to flush reliable messages on shutdown.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// How long a disconnected robot's routes are kept.
    pub fn link_linger(&self) -> Duration {
        Duration::from_secs(self.link_linger_s)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use super::*;

    const SECRET: &str = "s3cr3t-T0KEN-value";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn edge() -> EdgeConfig {
        EdgeConfig::from_yaml_str(EdgeConfig::default_yaml()).unwrap()
    }

    fn hub() -> HubConfig {
        HubConfig::from_yaml_str(HubConfig::default_yaml()).unwrap()
    }

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    /// Validation fails at `key`, and the message starts with the key.
    #[track_caller]
    fn fails_at(r: Result<(), ConfigError>, key: &str) -> String {
        let e = r.expect_err("validation should fail");
        assert_eq!(e.key(), Some(key), "{e}");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{key}: ")), "{msg}");
        assert!(msg.contains("(expected "), "{msg}");
        msg
    }

    #[track_caller]
    fn parse_fails_edge(yaml: &str, needles: &[&str]) -> String {
        let e = EdgeConfig::from_yaml_str(yaml).expect_err("parse should fail");
        assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
        let msg = e.to_string();
        for n in needles {
            assert!(msg.contains(n), "{n:?} not in {msg}");
        }
        msg
    }

    const MIN_EDGE: &str = "robot: r1\nupstreams:\n  - name: a\n    address: hub:7447\n    \
                            token_env: TOK\n";

    #[test]
    fn default_files_parse_validate_and_round_trip() {
        let e = edge();
        e.validate().unwrap();
        let h = hub();
        h.validate().unwrap();

        let as_value = |y: &str| serde_yaml::from_str::<serde_yaml::Value>(y).unwrap();
        assert_eq!(
            serde_yaml::to_value(&e).unwrap(),
            as_value(EdgeConfig::default_yaml())
        );
        assert_eq!(
            serde_yaml::to_value(&h).unwrap(),
            as_value(HubConfig::default_yaml())
        );
        // And the serialized text parses back to the same configuration.
        let again = EdgeConfig::from_yaml_str(&serde_yaml::to_string(&e).unwrap()).unwrap();
        assert_eq!(again, e);
        let again = HubConfig::from_yaml_str(&serde_yaml::to_string(&h).unwrap()).unwrap();
        assert_eq!(again, h);
    }

    #[test]
    fn default_files_content() {
        let e = edge();
        assert_eq!(e.robot, "robot1");
        assert_eq!(e.upstreams.len(), 1);
        let u = &e.upstreams[0];
        assert_eq!(u.name, "cloud");
        assert_eq!(
            u.host_port().unwrap(),
            ("ros2-hub.kubeedge-ros2.svc.cluster.local", 7447)
        );
        assert_eq!(
            u.token_source().unwrap(),
            SecretSource::File("/var/run/secrets/kubeedge-ros2/token".into())
        );
        for t in [
            "/odom",
            "/battery_state",
            "/tf",
            "/tf_static",
            "/diagnostics",
            "/diagnostics/x",
        ] {
            assert!(u.up.allows(t), "{t}");
            assert!(!u.down.allows(t), "{t}");
        }
        assert!(!u.up.allows("/diagnostics_agg"));
        assert!(u.down.allows("/cmd_vel") && u.down.allows("/fleet/mission"));
        assert_eq!(u.down.route_settings("/cmd_vel").priority, 0);
        assert_eq!(
            u.down.route_settings("/fleet/mission").priority,
            DEFAULT_PRIORITY
        );
        assert!(u.services.serve.allows("/reset_odometry"));
        assert!(!u.services.serve.allows("/other"));
        assert_eq!(e.http.listen, Some(DEFAULT_EDGE_HTTP_LISTEN));

        let h = hub();
        assert_eq!(h.listen, DEFAULT_HUB_LISTEN);
        assert_eq!(h.robots.len(), 2);
        assert_eq!(h.robot("robot2").unwrap().namespace, "/robot2");
        assert!(h.is_shared("/fleet/mission") && !h.is_shared("/robot1/odom"));
        let s = h.route_settings("/fleet/mission");
        assert_eq!((s.priority, s.reliable), (1, Some(true)));
        assert_eq!(h.http.listen, Some(DEFAULT_HUB_HTTP_LISTEN));
        assert_eq!(h.limits, HubLimits::default());
    }

    #[test]
    fn defaults_apply() {
        let e = EdgeConfig::from_yaml_str(MIN_EDGE).unwrap();
        e.validate().unwrap();
        assert_eq!(e.dds, DdsConfig::default());
        assert_eq!(e.http, HttpConfig::edge_default());
        assert_eq!(e.drain_timeout(), Duration::from_secs(5));
        let u = &e.upstreams[0];
        assert!(u.tls.is_none());
        assert_eq!(u.up, RouteRules::default());
        assert_eq!(u.down, RouteRules::default());
        assert!(!u.up.allows("/odom"), "empty rules let nothing cross");
        assert_eq!(u.services, ServiceRules::default());
        assert_eq!(u.services.timeout_for("/x"), Duration::from_secs(10));
        assert_eq!(u.reconnect, BackoffConfig::default());
        assert_eq!(u.reconnect.initial(), Duration::from_secs(1));
        assert_eq!(u.reconnect.max(), Duration::from_secs(30));
        assert_eq!(u.max_frame_size, 1_048_576);
        assert_eq!(u.connect_timeout(), Duration::from_secs(5));
        assert_eq!(u.up.route_settings("/odom"), RouteSettings::default());
        let d = RouteSettings::default();
        assert_eq!(d.priority, 4);
        assert_eq!(d.outbox_messages, 1000);
        assert_eq!(d.outbox_bytes, 16 * 1024 * 1024);
        assert_eq!(d.compression, Compression::None);
        assert!(!d.store_forward);

        let h = HubConfig::from_yaml_str("robots: []\n").unwrap();
        h.validate().unwrap();
        assert_eq!(h.listen.to_string(), "0.0.0.0:7447");
        assert_eq!(h.http.listen.unwrap().to_string(), "0.0.0.0:9181");
        assert_eq!(h.link_linger(), Duration::from_secs(300));
        assert_eq!(h.drain_timeout(), Duration::from_secs(5));
        assert!(h.tls.is_none() && h.shared.is_empty() && h.topics.is_empty());
        let l = h.limits;
        assert_eq!(
            (l.max_links, l.max_routes_per_link, l.max_frame_size),
            (1000, 256, 1_048_576)
        );
        assert_eq!(l.handshake_timeout(), Duration::from_secs(10));
        assert_eq!(l.heartbeat(), Duration::from_secs(5));
        assert_eq!((l.queue_bytes, l.max_message_size), (8 << 20, 64 << 20));
        assert_eq!(h.token_table(no_env).unwrap().len(), 0);
    }

    #[test]
    fn required_keys() {
        parse_fails_edge("robot: r1\n", &["upstreams"]);
        parse_fails_edge(
            "robot: r1\nupstreams:\n  - name: a\n    token_env: T\n",
            &["upstreams[0]", "address"],
        );
        let e = HubConfig::from_yaml_str("listen: 0.0.0.0:1\n").unwrap_err();
        assert!(e.to_string().contains("robots"), "{e}");
        // `http` given without `listen` is an error rather than a silent "disabled".
        parse_fails_edge(&format!("{MIN_EDGE}http: {{}}\n"), &["http", "listen"]);
        let e = EdgeConfig::from_yaml_str(&format!("{MIN_EDGE}http:\n  listen: null\n")).unwrap();
        assert_eq!(e.http.listen, None);
    }

    #[test]
    fn unknown_keys_are_refused_and_named() {
        parse_fails_edge(&format!("{MIN_EDGE}robto: x\n"), &["robto"]);
        parse_fails_edge(
            &format!("{MIN_EDGE}    tokn: x\n"),
            &["upstreams[0]", "tokn"],
        );
        parse_fails_edge(
            &format!("{MIN_EDGE}    tls:\n      ca_fil: /x\n"),
            &["upstreams[0].tls", "ca_fil"],
        );
        parse_fails_edge(
            &format!("{MIN_EDGE}    up:\n      alow: [/odom]\n"),
            &["upstreams[0].up", "alow"],
        );
        parse_fails_edge(
            &format!(
                "{MIN_EDGE}    down:\n      topics:\n        - match: /x\n          prio: 1\n"
            ),
            &["upstreams[0].down.topics", "prio"],
        );
        parse_fails_edge(
            &format!("{MIN_EDGE}    services:\n      serve:\n        allw: []\n"),
            &["upstreams[0].services.serve", "allw"],
        );
        parse_fails_edge(
            &format!("{MIN_EDGE}    reconnect:\n      initial: 5\n"),
            &["upstreams[0].reconnect", "initial"],
        );
        parse_fails_edge(
            &format!("{MIN_EDGE}dds:\n  domain: 3\n"),
            &["dds", "domain"],
        );
        parse_fails_edge(
            &format!("{MIN_EDGE}http:\n  listen: null\n  port: 1\n"),
            &["http", "port"],
        );
        for (yaml, needles) in [
            ("robots: []\nlimit: {}\n", &["limit"][..]),
            (
                "robots: []\nlimits:\n  max_link: 3\n",
                &["limits", "max_link"],
            ),
            (
                "robots:\n  - robot: a\n    namespace: /a\n    token_env: T\n    ns: /b\n",
                &["robots[0]", "ns"],
            ),
            (
                "robots: []\ntls:\n  cert_file: a\n  key_file: b\n  ca: c\n",
                &["tls", "ca"],
            ),
            (
                "robots: []\ntopics:\n  - match: /a\n    reliability: true\n",
                &["topics", "reliability"],
            ),
        ] {
            let e = HubConfig::from_yaml_str(yaml).unwrap_err();
            for n in needles {
                assert!(e.to_string().contains(n), "{n:?} not in {e}");
            }
        }
    }

    #[test]
    fn bad_patterns_are_parse_errors_naming_the_key() {
        let msg = parse_fails_edge(
            &format!("{MIN_EDGE}    up:\n      allow: [odom]\n"),
            &["upstreams[0].up.allow", "\"odom\"", "absolute"],
        );
        assert!(msg.contains("re:"), "{msg}");
        parse_fails_edge(
            &format!("{MIN_EDGE}    up:\n      deny: ['re:(']\n"),
            &["upstreams[0].up.deny", "regex"],
        );
        let e = HubConfig::from_yaml_str("robots: []\nshared: [fleet]\n").unwrap_err();
        assert!(e.to_string().contains("shared"), "{e}");
    }

    #[test]
    fn address_forms() {
        for ok in [
            ("hub:7447", "hub", 7447),
            ("ros2-hub.fleet.svc:7447", "ros2-hub.fleet.svc", 7447),
            ("10.0.0.5:1", "10.0.0.5", 1),
            ("[fd00::5]:65535", "fd00::5", 65535),
            ("[::1]:7447", "::1", 7447),
            ("Hub-1.Example.COM:80", "Hub-1.Example.COM", 80),
        ] {
            assert_eq!(split_host_port(ok.0), Some((ok.1, ok.2)), "{}", ok.0);
        }
        for bad in [
            "hub",
            "hub:",
            "hub:0",
            "hub:70000",
            ":7447",
            "fd00::5:7447",
            "[fd00::5]",
            "[hub]:1",
            "-hub:1",
            "hub-:1",
            "hub_x:1",
            "999.1.1.1:1",
            "hub: 1",
            "hub:+1",
            "a..b:1",
            "http://hub:1",
            "",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
        let mut e = edge();
        let mut second = e.upstreams[0].clone();
        second.name = "site".into();
        second.address = "hub".into();
        e.upstreams.push(second);
        let msg = fails_at(e.validate(), "upstreams[1].address");
        assert!(
            msg.starts_with(
                "upstreams[1].address: \"hub\" is not host:port (expected e.g. \
                 ros2-hub.fleet.svc:7447"
            ),
            "{msg}"
        );
        assert!(e.upstreams[1].host_port().is_err());
    }

    #[test]
    fn edge_validation_names_the_key() {
        type Mutation = fn(&mut EdgeConfig);
        let cases: Vec<(Mutation, &str)> = vec![
            (|c| c.robot = String::new(), "robot"),
            (|c| c.robot = "Robot1".into(), "robot"),
            (|c| c.robot = "robot-".into(), "robot"),
            (|c| c.robot = "a".repeat(64), "robot"),
            (|c| c.dds.domain_id = Some(233), "dds.domain_id"),
            (
                |c| c.dds.discovery_range = Some("off".into()),
                "dds.discovery_range",
            ),
            (
                |c| c.dds.discovery_range = Some("lan".into()),
                "dds.discovery_range",
            ),
            (|c| c.upstreams.clear(), "upstreams"),
            (
                |c| c.upstreams[0].name = "Cloud".into(),
                "upstreams[0].name",
            ),
            (|c| c.upstreams[0].name = String::new(), "upstreams[0].name"),
            (
                |c| {
                    let u = c.upstreams[0].clone();
                    c.upstreams.push(u);
                },
                "upstreams[1].name",
            ),
            (
                |c| c.upstreams[0].address = "hub:0".into(),
                "upstreams[0].address",
            ),
            (|c| c.upstreams[0].token_file = None, "upstreams[0].token"),
            (
                |c| c.upstreams[0].token_env = Some("X".into()),
                "upstreams[0]",
            ),
            (
                |c| c.upstreams[0].token_file = Some("".into()),
                "upstreams[0].token_file",
            ),
            (
                |c| {
                    c.upstreams[0].token_file = None;
                    c.upstreams[0].token_env = Some("A=B".into());
                },
                "upstreams[0].token_env",
            ),
            (
                |c| {
                    c.upstreams[0].token_file = None;
                    c.upstreams[0].token = Some(Token::new(""));
                },
                "upstreams[0].token",
            ),
            (
                |c| c.upstreams[0].tls = Some(TlsClientConfig::default()),
                "upstreams[0].tls.ca_file",
            ),
            (
                |c| {
                    c.upstreams[0].tls = Some(TlsClientConfig {
                        ca_file: Some("/ca".into()),
                        client_cert_file: Some("/c".into()),
                        ..Default::default()
                    })
                },
                "upstreams[0].tls.client_key_file",
            ),
            (
                |c| {
                    c.upstreams[0].tls = Some(TlsClientConfig {
                        ca_file: Some("/ca".into()),
                        client_key_file: Some("/k".into()),
                        ..Default::default()
                    })
                },
                "upstreams[0].tls.client_cert_file",
            ),
            (
                |c| {
                    c.upstreams[0].tls = Some(TlsClientConfig {
                        ca_file: Some("/ca".into()),
                        server_name: Some("bad name".into()),
                        ..Default::default()
                    })
                },
                "upstreams[0].tls.server_name",
            ),
            (
                |c| c.upstreams[0].down.topics[0].priority = Some(8),
                "upstreams[0].down.topics[0].priority",
            ),
            (
                |c| {
                    let mut t = TopicSettings::new(p("/x"));
                    t.store_forward = Some(true);
                    t.reliable = Some(false);
                    c.upstreams[0].up.topics.push(t);
                },
                "upstreams[0].up.topics[0].store_forward",
            ),
            (
                |c| {
                    let mut t = TopicSettings::new(p("/x"));
                    t.max_rate_hz = Some(0.0);
                    c.upstreams[0].up.topics.push(t);
                },
                "upstreams[0].up.topics[0].max_rate_hz",
            ),
            (
                |c| {
                    let mut t = TopicSettings::new(p("/x"));
                    t.max_rate_hz = Some(f64::INFINITY);
                    c.upstreams[0].up.topics.push(t);
                },
                "upstreams[0].up.topics[0].max_rate_hz",
            ),
            (
                |c| {
                    let mut t = TopicSettings::new(p("/x"));
                    t.depth = Some(0);
                    c.upstreams[0].up.topics.push(t);
                },
                "upstreams[0].up.topics[0].depth",
            ),
            (
                |c| {
                    let mut t = TopicSettings::new(p("/x"));
                    t.depth = Some(10_001);
                    c.upstreams[0].up.topics.push(t);
                },
                "upstreams[0].up.topics[0].depth",
            ),
            (
                |c| {
                    let mut t = TopicSettings::new(p("/x"));
                    t.outbox_messages = Some(0);
                    c.upstreams[0].up.topics.push(t);
                },
                "upstreams[0].up.topics[0].outbox_messages",
            ),
            (
                |c| {
                    let mut t = TopicSettings::new(p("/x"));
                    t.outbox_bytes = Some(0);
                    c.upstreams[0].up.topics.push(t);
                },
                "upstreams[0].up.topics[0].outbox_bytes",
            ),
            (
                |c| c.upstreams[0].services.timeout_ms = 0,
                "upstreams[0].services.timeout_ms",
            ),
            (
                |c| {
                    c.upstreams[0].services.timeouts.push(ServiceTimeout {
                        pattern: p("/x"),
                        timeout_ms: u64::MAX,
                    })
                },
                "upstreams[0].services.timeouts[0].timeout_ms",
            ),
            (
                |c| c.upstreams[0].reconnect.initial_ms = 9,
                "upstreams[0].reconnect.initial_ms",
            ),
            (
                |c| c.upstreams[0].reconnect.max_ms = 999,
                "upstreams[0].reconnect.max_ms",
            ),
            (
                |c| c.upstreams[0].reconnect.max_ms = MAX_MS + 1,
                "upstreams[0].reconnect.max_ms",
            ),
            (
                |c| c.upstreams[0].reconnect.jitter = 1.5,
                "upstreams[0].reconnect.jitter",
            ),
            (
                |c| c.upstreams[0].reconnect.jitter = f64::NAN,
                "upstreams[0].reconnect.jitter",
            ),
            (
                |c| c.upstreams[0].max_frame_size = 4117,
                "upstreams[0].max_frame_size",
            ),
            (
                |c| c.upstreams[0].max_frame_size = 16 * 1024 * 1024 + 1,
                "upstreams[0].max_frame_size",
            ),
            (
                |c| c.upstreams[0].connect_timeout_ms = 0,
                "upstreams[0].connect_timeout_ms",
            ),
            (|c| c.drain_timeout_ms = u64::MAX, "drain_timeout_ms"),
        ];
        for (mutate, key) in cases {
            let mut c = edge();
            mutate(&mut c);
            fails_at(c.validate(), key);
        }
        // The boundaries themselves are fine.
        let mut c = edge();
        c.upstreams[0].max_frame_size = 4118;
        c.upstreams[0].reconnect = BackoffConfig {
            initial_ms: 10,
            max_ms: 10,
            jitter: 1.0,
        };
        c.dds.domain_id = Some(232);
        c.robot = "a".repeat(63);
        c.validate().unwrap();
        c.upstreams[0].max_frame_size = 16 * 1024 * 1024;
        c.validate().unwrap();
    }

    #[test]
    fn error_messages_show_value_and_expectation() {
        let mut c = edge();
        c.upstreams[0].reconnect.jitter = 1.5;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "upstreams[0].reconnect.jitter: 1.5 is out of range (expected a fraction in 0.0..=1.0)"
        );
        let mut c = edge();
        c.upstreams[0].max_frame_size = 100;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "upstreams[0].max_frame_size: 100 is out of range (expected 4118..=16777216 bytes)"
        );
        let mut c = edge();
        c.dds.discovery_range = Some("OFF".into());
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("\"OFF\"") && msg.contains("needs DDS discovery"),
            "{msg}"
        );
        let mut c = edge();
        c.upstreams[0].token_env = Some("X".into());
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("token_file and token_env"), "{msg}");
    }

    #[test]
    fn hub_validation_names_the_key() {
        let robot = |name: &str, ns: &str| RobotConfig {
            robot: name.into(),
            namespace: ns.into(),
            token: None,
            token_file: None,
            token_env: Some("T".into()),
        };
        type Mutation = Box<dyn Fn(&mut HubConfig)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|c| c.robots[1].robot = "Robot2".into()),
                "robots[1].robot",
            ),
            (
                Box::new(|c| c.robots[1].robot = "robot1".into()),
                "robots[1].robot",
            ),
            (
                Box::new(|c| c.robots[1].namespace = "robot2".into()),
                "robots[1].namespace",
            ),
            (
                Box::new(|c| c.robots[1].namespace = "/".into()),
                "robots[1].namespace",
            ),
            (
                Box::new(|c| c.robots[1].namespace = "/robot2/".into()),
                "robots[1].namespace",
            ),
            (
                Box::new(|c| c.robots[1].namespace = "/robot 2".into()),
                "robots[1].namespace",
            ),
            (
                Box::new(|c| c.robots[1].namespace = "/robot1".into()),
                "robots[1].namespace",
            ),
            (
                Box::new(move |c| c.robots.push(robot("r3", "/robot1/sub"))),
                "robots[2].namespace",
            ),
            (
                Box::new(move |c| c.robots.insert(0, robot("r0", "/robot2/x"))),
                "robots[2].namespace",
            ),
            (
                Box::new(|c| c.robots[0].token_file = None),
                "robots[0].token",
            ),
            (
                Box::new(|c| c.robots[0].token = Some(Token::new("x"))),
                "robots[0]",
            ),
            (
                Box::new(|c| {
                    c.tls = Some(TlsServerConfig {
                        cert_file: "".into(),
                        key_file: "/k".into(),
                        client_ca_file: None,
                    })
                }),
                "tls.cert_file",
            ),
            (Box::new(|c| c.dds.domain_id = Some(500)), "dds.domain_id"),
            (
                Box::new(|c| c.topics[0].priority = Some(9)),
                "topics[0].priority",
            ),
            (Box::new(|c| c.limits.max_links = 0), "limits.max_links"),
            (
                Box::new(|c| c.limits.max_routes_per_link = 0),
                "limits.max_routes_per_link",
            ),
            (
                Box::new(|c| c.limits.max_frame_size = 1),
                "limits.max_frame_size",
            ),
            (
                Box::new(|c| c.limits.handshake_timeout_ms = 0),
                "limits.handshake_timeout_ms",
            ),
            (
                Box::new(|c| c.limits.heartbeat_ms = 99),
                "limits.heartbeat_ms",
            ),
            (
                Box::new(|c| c.limits.heartbeat_ms = 600_001),
                "limits.heartbeat_ms",
            ),
            (
                Box::new(|c| c.limits.queue_bytes = 1000),
                "limits.queue_bytes",
            ),
            (
                Box::new(|c| c.limits.max_message_size = 0),
                "limits.max_message_size",
            ),
            (
                Box::new(|c| c.drain_timeout_ms = MAX_MS + 1),
                "drain_timeout_ms",
            ),
            (Box::new(|c| c.link_linger_s = u64::MAX), "link_linger_s"),
        ];
        for (mutate, key) in cases {
            let mut c = hub();
            mutate(&mut c);
            fails_at(c.validate(), key);
        }
        // Sibling namespaces that only share a string prefix are fine.
        let mut c = hub();
        c.robots.push(robot("r3", "/robot10"));
        c.robots.push(robot("r4", "/fleet/a/b"));
        c.validate().unwrap();
        let mut c = hub();
        c.robots[1].namespace = "/robot1/x".into();
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("inside the namespace of robots[0] (\"/robot1\")"),
            "{msg}"
        );
    }

    #[test]
    fn tls_from_env() {
        let mut h = HubConfig::from_yaml_str("robots: []\n").unwrap();
        h.apply_env(vars(&[
            (ENV_TLS_CERT_FILE, "/tls/tls.crt"),
            (ENV_TLS_KEY_FILE, "/tls/tls.key"),
        ]))
        .unwrap();
        let tls = h.tls.clone().unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("/tls/tls.crt"));
        assert_eq!(tls.key_file, PathBuf::from("/tls/tls.key"));
        assert_eq!(tls.client_ca_file, None);
        h.validate().unwrap();
        // One without the other names the missing variable.
        let mut h = HubConfig::from_yaml_str("robots: []\n").unwrap();
        fails_at(
            h.apply_env(vars(&[(ENV_TLS_CERT_FILE, "/tls/tls.crt")])),
            "$BRIDGE_TLS_KEY_FILE",
        );
        fails_at(
            h.apply_env(vars(&[(ENV_TLS_CLIENT_CA_FILE, "/ca.crt")])),
            "$BRIDGE_TLS_CERT_FILE",
        );

        let mut e = EdgeConfig::from_yaml_str(
            "robot: r1\nupstreams:\n  - name: a\n    address: hub:1\n    token: t\n",
        )
        .unwrap();
        e.apply_env(vars(&[(ENV_TLS_CA_FILE, "/ca/ca.crt")]))
            .unwrap();
        e.validate().unwrap();
        let tls = e.upstreams[0].tls.clone().unwrap();
        assert_eq!(tls.ca_file, Some(PathBuf::from("/ca/ca.crt")));
        assert_eq!(tls.server_name, None);
    }

    #[test]
    fn token_file_robot_placeholder() {
        let mut c = EdgeConfig::from_yaml_str(
            "upstreams:\n  - name: a\n    address: hub:1\n    token_file: /t/{robot}\n  - name: b\n    address: hub:2\n    token_file: /t/fixed\n",
        )
        .unwrap();
        c.apply_env(vars(&[(ENV_ROBOT, "robot7")])).unwrap();
        c.validate().unwrap();
        assert_eq!(c.upstreams[0].token_file, Some(PathBuf::from("/t/robot7")));
        assert_eq!(c.upstreams[1].token_file, Some(PathBuf::from("/t/fixed")));
    }

    #[test]
    fn env_overrides_edge() {
        let mut c = EdgeConfig::from_yaml_str(
            "upstreams:\n  - name: a\n    address: hub:1\n    token_env: T\n",
        )
        .unwrap();
        fails_at(c.validate(), "robot");
        c.apply_env(vars(&[
            (ENV_ROBOT, "robot7"),
            (ENV_HTTP_LISTEN, "127.0.0.1:9999"),
            (ENV_ROS_DOMAIN_ID, "42"),
        ]))
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.robot, "robot7");
        assert_eq!(c.http.listen, Some("127.0.0.1:9999".parse().unwrap()));
        assert_eq!(c.dds.domain_id, Some(42));

        // The file's domain id wins over ROS_DOMAIN_ID; "off" disables HTTP; empty is unset.
        let mut c = edge();
        c.dds.domain_id = Some(3);
        c.apply_env(vars(&[
            (ENV_ROBOT, ""),
            (ENV_HTTP_LISTEN, "off"),
            (ENV_ROS_DOMAIN_ID, "42"),
        ]))
        .unwrap();
        assert_eq!(c.robot, "robot1");
        assert_eq!(c.http.listen, None);
        assert_eq!(c.dds.domain_id, Some(3));

        let mut c = edge();
        c.apply_env(no_env).unwrap();
        assert_eq!(c, edge());

        for (var, value) in [
            (ENV_ROBOT, "Not A Robot"),
            (ENV_HTTP_LISTEN, "localhost"),
            (ENV_ROS_DOMAIN_ID, "233"),
            (ENV_ROS_DOMAIN_ID, "x"),
        ] {
            let e = edge().apply_env(vars(&[(var, value)])).unwrap_err();
            let key = format!("${var}");
            assert_eq!(e.key(), Some(key.as_str()), "{e}");
            assert!(e.to_string().contains(&format!("{value:?}")), "{e}");
        }
    }

    #[test]
    fn env_overrides_hub() {
        let mut c = hub();
        c.apply_env(vars(&[
            (ENV_LISTEN, "[::]:8000"),
            (ENV_HTTP_LISTEN, "0.0.0.0:1"),
            (ENV_ROS_DOMAIN_ID, "7"),
            (ENV_ROBOT, "ignored"),
        ]))
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen, "[::]:8000".parse().unwrap());
        assert_eq!(c.http.listen, Some("0.0.0.0:1".parse().unwrap()));
        assert_eq!(c.dds.domain_id, Some(7));
        let e = hub()
            .apply_env(vars(&[(ENV_LISTEN, "hub:7447")]))
            .unwrap_err();
        assert_eq!(e.key(), Some("$BRIDGE_LISTEN"), "{e}");
    }

    #[test]
    fn participant_config_from_file_and_env() {
        let d = DdsConfig::default();
        let pc = d.participant_config(no_env).unwrap();
        assert_eq!(
            (pc.domain_id, pc.discovery_range, pc.only_networks),
            (0, DiscoveryRange::Subnet, None)
        );
        let pc = d
            .participant_config(vars(&[("ROS_DOMAIN_ID", "9"), ("ROS_LOCALHOST_ONLY", "1")]))
            .unwrap();
        assert_eq!(
            (pc.domain_id, pc.discovery_range),
            (9, DiscoveryRange::Localhost)
        );

        // File values win; the masked variables are not even parsed.
        let d = DdsConfig {
            domain_id: Some(5),
            discovery_range: Some("System_Default".into()),
            only_networks: vec!["10.1.2.3".parse().unwrap()],
        };
        let pc = d
            .participant_config(vars(&[
                ("ROS_DOMAIN_ID", "garbage"),
                ("ROS_AUTOMATIC_DISCOVERY_RANGE", "OFF"),
                ("ROS_LOCALHOST_ONLY", "garbage"),
            ]))
            .unwrap();
        assert_eq!(pc.domain_id, 5);
        assert_eq!(pc.discovery_range, DiscoveryRange::SystemDefault);
        assert_eq!(pc.only_networks, Some(vec!["10.1.2.3".parse().unwrap()]));

        let e = DdsConfig::default()
            .participant_config(vars(&[("ROS_AUTOMATIC_DISCOVERY_RANGE", "off")]))
            .unwrap_err();
        assert_eq!(e.key(), Some("$ROS_AUTOMATIC_DISCOVERY_RANGE"), "{e}");
        let e = DdsConfig::default()
            .participant_config(vars(&[("ROS_DOMAIN_ID", "300")]))
            .unwrap_err();
        assert_eq!(e.key(), Some("$ROS_DOMAIN_ID"), "{e}");
        let e = DdsConfig {
            discovery_range: Some("off".into()),
            ..Default::default()
        }
        .participant_config(no_env)
        .unwrap_err();
        assert_eq!(e.key(), Some("dds.discovery_range"), "{e}");
    }

    #[test]
    fn secret_sources_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{SECRET}\n")).unwrap();
        let t = SecretSource::File(path.clone()).resolve(no_env).unwrap();
        assert_eq!(t.expose(), SECRET);
        std::fs::write(&path, format!("{SECRET}\r\n\n")).unwrap();
        assert_eq!(
            SecretSource::File(path.clone())
                .resolve(no_env)
                .unwrap()
                .expose(),
            SECRET
        );

        let t = SecretSource::Env("TOK".into())
            .resolve(vars(&[("TOK", SECRET)]))
            .unwrap();
        assert_eq!(t.expose(), SECRET);
        let t = SecretSource::Inline(Token::new(SECRET))
            .resolve(no_env)
            .unwrap();
        assert_eq!(t.expose(), SECRET);

        let e = SecretSource::Env("TOK".into()).resolve(no_env).unwrap_err();
        assert_eq!(e.key(), Some("token_env"));
        assert!(e.to_string().contains("TOK is not set"), "{e}");
        let e = SecretSource::Env("TOK".into())
            .resolve(vars(&[("TOK", "\n")]))
            .unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");

        std::fs::write(&path, "\n").unwrap();
        let e = SecretSource::File(path.clone())
            .resolve(no_env)
            .unwrap_err();
        assert_eq!(e.key(), Some("token_file"));
        assert!(e.to_string().contains("empty"), "{e}");
        let missing = dir.path().join("missing");
        let e = SecretSource::File(missing.clone())
            .resolve(no_env)
            .unwrap_err();
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![b'a'; MAX_TOKEN_FILE_LEN as usize + 1])
            .unwrap();
        drop(f);
        let e = SecretSource::File(path).resolve(no_env).unwrap_err();
        assert!(e.to_string().contains("larger"), "{e}");

        let mut c = edge();
        c.upstreams[0].token_file = None;
        c.upstreams[0].token_env = Some("CLOUD_TOKEN".into());
        let e = c.upstreams[0].resolve_token(no_env).unwrap_err();
        assert_eq!(e.key(), Some("upstreams[name=cloud].token_env"), "{e}");
        let t = c.upstreams[0]
            .resolve_token(vars(&[("CLOUD_TOKEN", SECRET)]))
            .unwrap();
        assert_eq!(t.expose(), SECRET);
    }

    #[test]
    fn tokens_never_shown() {
        // Debug of configurations and sources.
        let yaml = format!(
            "robot: r1\nupstreams:\n  - name: a\n    address: hub:1\n    token: {SECRET}\n"
        );
        let c = EdgeConfig::from_yaml_str(&yaml).unwrap();
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains(SECRET));
        assert!(!format!("{:?}", c.upstreams[0].token_source().unwrap()).contains(SECRET));
        let h = HubConfig::from_yaml_str(&format!(
            "robots:\n  - robot: a\n    namespace: /a\n    token: {SECRET}\n"
        ))
        .unwrap();
        assert!(!format!("{h:?}").contains(SECRET));

        // A token of the wrong type: the parse error does not echo it.
        for bad in ["123456789", "[x123456789]", "{a: x123456789}", "true"] {
            let y = format!(
                "robot: r1\nupstreams:\n  - name: a\n    address: hub:1\n    token: {bad}\n"
            );
            let e = EdgeConfig::from_yaml_str(&y).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("123456789"), "{shown}");
            assert!(shown.contains("token"), "{shown}");
        }

        // Errors about tokens, including a duplicate in the token table.
        let h = HubConfig::from_yaml_str(&format!(
            "robots:\n  - robot: a\n    namespace: /a\n    token: {SECRET}\n  - robot: b\n    \
             namespace: /b\n    token_env: B_TOKEN\n"
        ))
        .unwrap();
        h.validate().unwrap();
        let e = h.token_table(vars(&[("B_TOKEN", SECRET)])).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert_eq!(e.key(), Some("robots[1].token_env"));
        assert!(
            shown.contains("\"a\"") && shown.contains("\"b\""),
            "{shown}"
        );
        let mut h2 = h.clone();
        h2.robots[0].token_env = Some("X".into());
        let e = h2.validate().unwrap_err();
        assert!(!format!("{e} {e:?}").contains(SECRET));
    }

    #[test]
    fn token_table_grants_namespaces() {
        let h = HubConfig::from_yaml_str(
            "robots:\n  - robot: robot1\n    namespace: /fleet/robot1\n    token_env: T1\n  \
             - robot: robot2\n    namespace: /robot2\n    token: 'tok-2'\n",
        )
        .unwrap();
        h.validate().unwrap();
        let t = h.token_table(vars(&[("T1", "tok-1")])).unwrap();
        assert_eq!(t.len(), 2);
        let g = t.lookup(&Token::new("tok-1")).unwrap();
        assert_eq!(g.namespace.as_str(), "/fleet/robot1");
        assert_eq!(g.robot.as_deref(), Some("robot1"));
        let g = t.lookup(&Token::new("tok-2")).unwrap();
        assert_eq!(g.namespace.as_str(), "/robot2");
        assert_eq!(g.robot.as_deref(), Some("robot2"));
        assert!(t.lookup(&Token::new("tok-3")).is_none());

        let e = h.token_table(no_env).unwrap_err();
        assert_eq!(e.key(), Some("robots[0].token_env"), "{e}");

        // The default hub file points at files that do not exist here.
        let e = hub().token_table(no_env).unwrap_err();
        assert_eq!(e.key(), Some("robots[0].token_file"), "{e}");
    }

    #[test]
    fn settings_first_match_wins() {
        let rules: RouteRules = serde_yaml::from_str(
            "allow: ['re:/scan.*']\ntopics:\n  - match: /scan/front\n    priority: 2\n    \
             compression: zstd\n    store_forward: true\n    depth: 5\n  \
             - match: 're:/scan.*'\n    priority: 7\n    max_rate_hz: 2.5\n    \
             outbox_messages: 10\n    outbox_bytes: 100\n",
        )
        .unwrap();
        rules.validate_at("up").unwrap();
        let s = rules.route_settings("/scan/front");
        assert_eq!(
            (s.priority, s.compression, s.store_forward, s.depth),
            (2, Compression::Zstd, true, Some(5))
        );
        assert_eq!(s.outbox_messages, DEFAULT_OUTBOX_MESSAGES);
        let s = rules.route_settings("/scan/back");
        assert_eq!((s.priority, s.max_rate_hz), (7, Some(2.5)));
        assert_eq!((s.outbox_messages, s.outbox_bytes), (10, 100));
        assert!(rules.settings_for("/odom").is_none());
        assert_eq!(
            rules.filter().decide("/scan").to_string(),
            "allowed by re:/scan.*"
        );
        assert!(rules.allows("/scan") && !rules.allows("/odom"));

        let services: ServiceRules = serde_yaml::from_str(
            "serve:\n  allow: ['re:.*']\n  deny: [/x]\ntimeout_ms: 100\ntimeouts:\n  \
             - match: /slow\n    timeout_ms: 60000\n",
        )
        .unwrap();
        services.validate_at("services").unwrap();
        assert_eq!(services.timeout_for("/slow"), Duration::from_secs(60));
        assert_eq!(services.timeout_for("/fast"), Duration::from_millis(100));
        assert!(services.serve.allows("/fast") && !services.serve.allows("/x"));
    }

    #[test]
    fn tls_server_name_defaults_to_host() {
        let mut c = edge();
        assert_eq!(c.upstreams[0].tls_server_name(), None);
        c.upstreams[0].tls = Some(TlsClientConfig {
            ca_file: Some("/ca.crt".into()),
            ..Default::default()
        });
        c.validate().unwrap();
        assert_eq!(
            c.upstreams[0].tls_server_name().as_deref(),
            Some("ros2-hub.kubeedge-ros2.svc.cluster.local")
        );
        c.upstreams[0].address = "[fd00::1]:7447".into();
        assert_eq!(c.upstreams[0].tls_server_name().as_deref(), Some("fd00::1"));
        c.upstreams[0].tls.as_mut().unwrap().server_name = Some("hub.example.com".into());
        c.validate().unwrap();
        assert_eq!(
            c.upstreams[0].tls_server_name().as_deref(),
            Some("hub.example.com")
        );
    }

    #[test]
    fn load_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.yaml");
        std::fs::write(&path, EdgeConfig::default_yaml()).unwrap();
        let c = EdgeConfig::load_with_env(&path, vars(&[(ENV_ROBOT, "robot9")])).unwrap();
        assert_eq!(c.robot, "robot9");
        assert_eq!(EdgeConfig::load(&path).unwrap(), edge());

        let hpath = dir.path().join("hub.yaml");
        std::fs::write(&hpath, HubConfig::default_yaml()).unwrap();
        assert_eq!(HubConfig::load_with_env(&hpath, no_env).unwrap(), hub());

        let e = EdgeConfig::load(dir.path().join("nope.yaml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.yaml"), "{e}");

        std::fs::write(&path, "robot: r1\nupstreams: []\nextra: 1\n").unwrap();
        let e = EdgeConfig::load(&path).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        assert!(msg.contains("extra"), "{msg}");

        std::fs::write(&path, "robot: r1\nupstreams: []\n").unwrap();
        let e = EdgeConfig::load_with_env(&path, no_env).unwrap_err();
        assert_eq!(e.key(), Some("upstreams"), "{e}");

        let e = EdgeConfig::from_yaml_str("robot: [").unwrap_err();
        assert!(
            matches!(e, ConfigError::Parse { origin: None, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn names() {
        for ok in ["robot1", "a", "r-1_x", "0"] {
            assert!(is_valid_robot_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "_a", "a_", "A", "a.b", "a b", "é"] {
            assert!(!is_valid_robot_name(bad), "{bad}");
        }
        for ok in ["cloud", "-", "_x-", "a1"] {
            assert!(is_valid_upstream_name(ok), "{ok}");
        }
        for bad in ["", "Cloud", "a.b", &"a".repeat(64)] {
            assert!(!is_valid_upstream_name(bad), "{bad}");
        }
    }
}
