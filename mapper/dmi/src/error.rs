//! The errors of the DMI backend.

use std::path::PathBuf;

/// Everything that can go wrong in the DMI backend.
#[derive(Debug, thiserror::Error)]
pub enum DmiError {
    /// A configuration value is out of range or malformed.
    #[error("invalid dmi config: `{key}` = {value}: expected {expected}")]
    Config {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A socket file could not be prepared, bound or removed.
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The gRPC connection to edgecore could not be made.
    #[error("connecting to edgecore at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    /// The mapper's own gRPC server failed.
    #[error("serving DeviceMapperService: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// edgecore answered a call with an error.
    #[error("edgecore {call}: {code:?}: {message}")]
    Call {
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
    /// A proto message could not be converted.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// A task of the backend ended abnormally.
    #[error("dmi backend task failed: {0}")]
    Task(String),
}

impl DmiError {
    pub(crate) fn call(call: &'static str, status: &tonic::Status) -> Self {
        Self::Call {
            call,
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

/// Conversion between DMI proto messages and the mapper's model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    /// An `Any` whose type this mapper does not decode.
    #[error("unsupported Any type `{type_url}` (expected a google.protobuf wrapper, Value, Struct or ListValue)")]
    UnsupportedAny { type_url: String },
    /// An `Any` whose bytes do not decode as its type.
    #[error("malformed Any of type `{type_url}`: {reason}")]
    AnyDecode { type_url: String, reason: String },
    /// A JSON value edgecore cannot put into an `Any`.
    #[error("{kind} does not support converting to any (edgecore wraps only strings, numbers and bools)")]
    NotConvertibleToAny { kind: &'static str },
    /// A required field is missing or empty.
    #[error("{message}: missing `{field}`")]
    Missing {
        message: &'static str,
        field: &'static str,
    },
    /// A field has a value the model does not allow.
    #[error("{message}.{field}: {value:?} is not one of {expected}")]
    Invalid {
        message: &'static str,
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}
