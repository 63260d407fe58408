//! ROS 2 interface definitions: `.msg`/`.srv`/`.action` parsing, the bundled
//! interfaces, and the registry that resolves types into [`Layout`]s for the
//! CDR codec.
//!
//! # Layout
//! - `parse`: the `.msg` grammar (fields, defaults, constants, bounds, arrays).
//! - `registry`: [`Registry`] (bundled + user directories) and [`Layout`] resolution.
//! - `bundled`: the interfaces compiled into the crate (`ros2/interfaces/`).

mod bundled;
mod parse;
mod registry;

use std::path::PathBuf;

pub use bundled::bundled_files;
pub use parse::{parse_action, parse_message, parse_service};
pub use registry::{Layout, LayoutField, LayoutType, Registry};

use crate::names::TypeName;
use crate::value::Value;

/// A primitive (fixed-size) ROS 2 field type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Primitive {
    Bool,
    /// `byte`: an octet.
    Byte,
    /// `char`: an unsigned 8-bit character (`uint8` on the wire).
    Char,
    Int8,
    UInt8,
    Int16,
    UInt16,
    Int32,
    UInt32,
    Int64,
    UInt64,
    Float32,
    Float64,
}

impl Primitive {
    /// Parses the `.msg` spelling of a primitive.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "bool" => Self::Bool,
            "byte" => Self::Byte,
            "char" => Self::Char,
            "int8" => Self::Int8,
            "uint8" => Self::UInt8,
            "int16" => Self::Int16,
            "uint16" => Self::UInt16,
            "int32" => Self::Int32,
            "uint32" => Self::UInt32,
            "int64" => Self::Int64,
            "uint64" => Self::UInt64,
            "float32" => Self::Float32,
            "float64" => Self::Float64,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::Byte => "byte",
            Self::Char => "char",
            Self::Int8 => "int8",
            Self::UInt8 => "uint8",
            Self::Int16 => "int16",
            Self::UInt16 => "uint16",
            Self::Int32 => "int32",
            Self::UInt32 => "uint32",
            Self::Int64 => "int64",
            Self::UInt64 => "uint64",
            Self::Float32 => "float32",
            Self::Float64 => "float64",
        }
    }

    /// Size (and XCDR1 alignment) in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::Byte | Self::Char | Self::Int8 | Self::UInt8 => 1,
            Self::Int16 | Self::UInt16 => 2,
            Self::Int32 | Self::UInt32 | Self::Float32 => 4,
            Self::Int64 | Self::UInt64 | Self::Float64 => 8,
        }
    }

    /// Whether arrays of this type are held as [`Value::Bytes`].
    pub fn is_octet(self) -> bool {
        matches!(self, Self::Byte | Self::Char | Self::UInt8)
    }

    pub fn is_integer(self) -> bool {
        !matches!(self, Self::Bool | Self::Float32 | Self::Float64)
    }

    pub fn is_float(self) -> bool {
        matches!(self, Self::Float32 | Self::Float64)
    }
}

/// The element type of a field, before arrays.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BaseType {
    Primitive(Primitive),
    /// `string` or `string<=N`.
    String {
        bound: Option<usize>,
    },
    /// `wstring` or `wstring<=N`.
    WString {
        bound: Option<usize>,
    },
    /// Another message type.
    Nested(TypeName),
}

impl std::fmt::Display for BaseType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Primitive(p) => f.write_str(p.name()),
            Self::String { bound: None } => f.write_str("string"),
            Self::String { bound: Some(n) } => write!(f, "string<={n}"),
            Self::WString { bound: None } => f.write_str("wstring"),
            Self::WString { bound: Some(n) } => write!(f, "wstring<={n}"),
            Self::Nested(t) => write!(f, "{t}"),
        }
    }
}

/// Whether and how a field is an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArrayKind {
    /// A single value.
    Single,
    /// `T[N]`
    Fixed(usize),
    /// `T[<=N]`
    Bounded(usize),
    /// `T[]`
    Unbounded,
}

impl ArrayKind {
    pub fn is_array(self) -> bool {
        !matches!(self, Self::Single)
    }
}

/// A field of a message definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub base: BaseType,
    pub array: ArrayKind,
    /// The default value given in the definition, if any.
    pub default: Option<Value>,
}

/// A constant of a message definition (`uint8 STATUS_FULL=4`).
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    pub name: String,
    pub base: BaseType,
    pub value: Value,
}

/// One parsed `.msg` (or one half of a `.srv`).
#[derive(Debug, Clone, PartialEq)]
pub struct MessageDef {
    pub type_name: TypeName,
    pub fields: Vec<Field>,
    pub constants: Vec<Constant>,
}

/// A parsed `.srv`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDef {
    pub type_name: TypeName,
    pub request: MessageDef,
    pub response: MessageDef,
}

/// A parsed `.action` with its derived wire messages.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionDef {
    pub type_name: TypeName,
    /// `Name_Goal`, `Name_Result`, `Name_Feedback`, and the wire types
    /// `Name_SendGoal_Request/Response`, `Name_GetResult_Request/Response`,
    /// `Name_FeedbackMessage`.
    pub messages: Vec<MessageDef>,
}

/// Errors of definitions and the registry.
#[derive(Debug, thiserror::Error)]
pub enum MsgError {
    #[error("{type_name} line {line}: {message}")]
    Parse {
        type_name: String,
        line: usize,
        message: String,
    },
    #[error("unknown message type {missing}{}", referenced_by.as_ref().map(|r| format!(" (referenced by {r})")).unwrap_or_default())]
    UnknownType {
        missing: String,
        referenced_by: Option<String>,
    },
    #[error("type {chain} refers to itself; recursive messages cannot be serialized")]
    Recursive { chain: String },
    #[error("cannot read interface definitions at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("interface file {path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
}
