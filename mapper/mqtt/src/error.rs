//! The crate's errors.

use std::path::PathBuf;

/// What can go wrong in the MQTT backend. Broker trouble at run time is not an
/// error: the backend logs it and reconnects with backoff.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// A config value is out of range or malformed.
    #[error("config key `{key}`: value {value:?} is invalid, expected {expected}")]
    Config {
        key: String,
        value: String,
        expected: String,
    },
    /// The config document does not parse (unknown key, wrong type, ...).
    #[error("config: {0}")]
    ConfigSyntax(#[source] serde_yaml::Error),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A device file does not parse as Device / DeviceModel documents.
    #[error("device file {path}, document {index}: {message}")]
    DeviceFile {
        path: PathBuf,
        /// 0-based index of the YAML document in the file.
        index: usize,
        message: String,
    },
    /// The core dropped its ends of the channels without cancelling the shutdown token.
    #[error("the mapper core closed the backend channels")]
    CoreClosed,
}
