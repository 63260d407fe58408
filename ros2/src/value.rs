//! The dynamic value tree of a ROS 2 message, field paths, and the JSON form.
//!
//! JSON form (shared with the Python test peers): a message is an object with
//! its fields in definition order; integers are JSON integers; floats are JSON
//! numbers except `"NaN"`, `"inf"`, `"-inf"`; strings are strings; arrays and
//! sequences (also of bytes) are JSON arrays.

use std::fmt;
use std::sync::Arc;

use crate::msg::{ArrayKind, Layout, LayoutField, LayoutType, Primitive};

/// A dynamically typed ROS 2 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    I8(i8),
    /// `uint8`, `byte` and `char`.
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
    /// `string` and `wstring`.
    String(String),
    /// An array or sequence of `uint8`/`byte`/`char`, kept compact.
    Bytes(Vec<u8>),
    /// Any other array or sequence.
    Array(Vec<Value>),
    /// A message: fields in definition order.
    Struct(Vec<(Arc<str>, Value)>),
}

/// A value that does not fit its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", if path.is_empty() { "value" } else { path.as_str() })]
pub struct ValueError {
    /// Where in the message (`pose.position.x`), empty for the root.
    pub path: String,
    pub message: String,
}

impl ValueError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            path: String::new(),
            message: message.into(),
        }
    }

    /// Prefixes the path with a field name or index.
    pub(crate) fn within(mut self, seg: &str) -> Self {
        self.path = match (self.path.is_empty(), seg.starts_with('[')) {
            (true, _) => seg.to_owned(),
            (false, true) => format!("{seg}{}", self.path),
            (false, false) if self.path.starts_with('[') => format!("{seg}{}", self.path),
            (false, false) => format!("{seg}.{}", self.path),
        };
        self
    }
}

impl Value {
    /// The zero value of a primitive.
    pub fn zero(p: Primitive) -> Self {
        match p {
            Primitive::Bool => Self::Bool(false),
            Primitive::Byte | Primitive::Char | Primitive::UInt8 => Self::U8(0),
            Primitive::Int8 => Self::I8(0),
            Primitive::Int16 => Self::I16(0),
            Primitive::UInt16 => Self::U16(0),
            Primitive::Int32 => Self::I32(0),
            Primitive::UInt32 => Self::U32(0),
            Primitive::Int64 => Self::I64(0),
            Primitive::UInt64 => Self::U64(0),
            Primitive::Float32 => Self::F32(0.0),
            Primitive::Float64 => Self::F64(0.0),
        }
    }

    /// The value as a float, for any numeric scalar (and bool as 0/1).
    pub fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Self::Bool(b) => f64::from(u8::from(b)),
            Self::I8(v) => v.into(),
            Self::U8(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I64(v) => v as f64,
            Self::U64(v) => v as f64,
            Self::F32(v) => v.into(),
            Self::F64(v) => v,
            _ => return None,
        })
    }

    /// The value as a signed integer, for integer scalars that fit.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Self::Bool(b) => i128::from(b),
            Self::I8(v) => v.into(),
            Self::U8(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I64(v) => v.into(),
            Self::U64(v) => v.into(),
            _ => return None,
        })
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// A field of a struct value.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Self::Struct(fields) => fields.iter().find(|(n, _)| &**n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    fn field_mut(&mut self, name: &str) -> Option<&mut Value> {
        match self {
            Self::Struct(fields) => fields
                .iter_mut()
                .find(|(n, _)| &**n == name)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value at a field path (`pose.pose.position.x`, `cells[3].temperature`).
    /// An index into a byte sequence yields a [`Value::U8`].
    pub fn get_path(&self, path: &FieldPath) -> Option<Value> {
        let mut cur = self;
        let segs = path.segments();
        for (i, seg) in segs.iter().enumerate() {
            cur = match (seg, cur) {
                (PathSegment::Field(name), v) => v.field(name)?,
                (PathSegment::Index(ix), Self::Array(items)) => items.get(*ix)?,
                (PathSegment::Index(ix), Self::Bytes(b)) if i + 1 == segs.len() => {
                    return b.get(*ix).map(|b| Self::U8(*b))
                }
                _ => return None,
            };
        }
        Some(cur.clone())
    }

    /// Replaces the value at a field path. The new value must already have
    /// the field's type (see [`Value::from_json_typed`] / [`Value::convert`]).
    pub fn set_path(&mut self, path: &FieldPath, value: Value) -> Result<(), ValueError> {
        let segs = path.segments();
        let mut cur = self;
        for (i, seg) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            let missing = || ValueError {
                path: path.to_string(),
                message: "no such field or element".into(),
            };
            cur = match seg {
                PathSegment::Field(name) => cur.field_mut(name).ok_or_else(missing)?,
                PathSegment::Index(ix) => match cur {
                    Self::Array(items) => items.get_mut(*ix).ok_or_else(missing)?,
                    Self::Bytes(b) if last => {
                        let slot = b.get_mut(*ix).ok_or_else(missing)?;
                        *slot = match value {
                            Self::U8(v) => v,
                            other => {
                                return Err(ValueError {
                                    path: path.to_string(),
                                    message: format!("expected a uint8, got {}", other.kind()),
                                })
                            }
                        };
                        return Ok(());
                    }
                    _ => return Err(missing()),
                },
            };
        }
        *cur = value;
        Ok(())
    }

    /// Equality where NaN equals NaN (of the same type): "the same reading".
    pub fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Self::F32(a), Self::F32(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Self::F64(a), Self::F64(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Self::Array(a), Self::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
            }
            (Self::Struct(a), Self::Struct(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((na, x), (nb, y))| na == nb && x.same(y))
            }
            (a, b) => a == b,
        }
    }

    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Bool(_) => "bool",
            Self::I8(_) => "int8",
            Self::U8(_) => "uint8",
            Self::I16(_) => "int16",
            Self::U16(_) => "uint16",
            Self::I32(_) => "int32",
            Self::U32(_) => "uint32",
            Self::I64(_) => "int64",
            Self::U64(_) => "uint64",
            Self::F32(_) => "float32",
            Self::F64(_) => "float64",
            Self::String(_) => "string",
            Self::Bytes(_) => "byte sequence",
            Self::Array(_) => "array",
            Self::Struct(_) => "message",
        }
    }

    /// Converts a scalar to primitive `p`, checking the range: a float
    /// target takes any number, an integer target takes integers (and
    /// integral floats) in range, bool takes bool.
    pub fn convert(&self, p: Primitive) -> Result<Value, ValueError> {
        let bad = || {
            ValueError::new(format!(
                "expected {}, got {} {}",
                p.name(),
                self.kind(),
                self.display_short()
            ))
        };
        if p.is_float() {
            let f = self
                .as_f64()
                .filter(|_| !matches!(self, Self::Bool(_)))
                .ok_or_else(bad)?;
            return Ok(if p == Primitive::Float32 {
                Self::F32(f as f32)
            } else {
                Self::F64(f)
            });
        }
        if p == Primitive::Bool {
            return self.as_bool().map(Self::Bool).ok_or_else(bad);
        }
        let i = match self {
            Self::F32(_) | Self::F64(_) => {
                let f = self.as_f64().ok_or_else(bad)?;
                if f.fract() != 0.0 || !f.is_finite() {
                    return Err(bad());
                }
                f as i128
            }
            Self::Bool(_) => return Err(bad()),
            _ => self.as_i128().ok_or_else(bad)?,
        };
        let out_of_range = || ValueError::new(format!("{i} is out of range for {}", p.name()));
        Ok(match p {
            Primitive::Byte | Primitive::Char | Primitive::UInt8 => {
                Self::U8(i.try_into().map_err(|_| out_of_range())?)
            }
            Primitive::Int8 => Self::I8(i.try_into().map_err(|_| out_of_range())?),
            Primitive::Int16 => Self::I16(i.try_into().map_err(|_| out_of_range())?),
            Primitive::UInt16 => Self::U16(i.try_into().map_err(|_| out_of_range())?),
            Primitive::Int32 => Self::I32(i.try_into().map_err(|_| out_of_range())?),
            Primitive::UInt32 => Self::U32(i.try_into().map_err(|_| out_of_range())?),
            Primitive::Int64 => Self::I64(i.try_into().map_err(|_| out_of_range())?),
            Primitive::UInt64 => Self::U64(i.try_into().map_err(|_| out_of_range())?),
            Primitive::Bool | Primitive::Float32 | Primitive::Float64 => return Err(bad()),
        })
    }

    fn display_short(&self) -> String {
        match self {
            Self::Array(a) => format!("of {} elements", a.len()),
            Self::Bytes(b) => format!("of {} bytes", b.len()),
            Self::Struct(_) => String::new(),
            other => format!("{}", other.to_json()),
        }
    }

    /// The JSON form of this value.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        let float = |f: f64| {
            if f.is_nan() {
                J::String("NaN".into())
            } else if f.is_infinite() {
                J::String(if f > 0.0 { "inf" } else { "-inf" }.into())
            } else {
                serde_json::Number::from_f64(f)
                    .map(J::Number)
                    .unwrap_or(J::Null)
            }
        };
        match self {
            Self::Bool(b) => J::Bool(*b),
            Self::I8(v) => (*v).into(),
            Self::U8(v) => (*v).into(),
            Self::I16(v) => (*v).into(),
            Self::U16(v) => (*v).into(),
            Self::I32(v) => (*v).into(),
            Self::U32(v) => (*v).into(),
            Self::I64(v) => (*v).into(),
            Self::U64(v) => (*v).into(),
            // The shortest decimal that reads back as this f32 ("0.99", not
            // "0.9900000095367432"), carried as the nearest f64.
            Self::F32(v) => float(v.to_string().parse::<f64>().unwrap_or(f64::from(*v))),
            Self::F64(v) => float(*v),
            Self::String(s) => J::String(s.clone()),
            Self::Bytes(b) => J::Array(b.iter().map(|x| (*x).into()).collect()),
            Self::Array(a) => J::Array(a.iter().map(Self::to_json).collect()),
            Self::Struct(fields) => J::Object(
                fields
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Builds a message value of `layout` from its JSON form. Fields missing
    /// from the object take their defaults; unknown keys are errors.
    pub fn from_json(layout: &Layout, json: &serde_json::Value) -> Result<Value, ValueError> {
        let obj = json.as_object().ok_or_else(|| {
            ValueError::new(format!(
                "expected a JSON object for {}, got {json}",
                layout.type_name
            ))
        })?;
        if let Some(k) = obj.keys().find(|k| layout.field(k).is_none()) {
            return Err(ValueError::new(format!(
                "{} has no field {k:?}",
                layout.type_name
            )));
        }
        let mut fields = Vec::with_capacity(layout.fields.len());
        for f in &layout.fields {
            let v = match obj.get(&*f.name) {
                Some(j) => Self::from_json_field(f, j).map_err(|e| e.within(&f.name))?,
                None => f.default.clone().unwrap_or_else(|| f.zero_value()),
            };
            fields.push((f.name.clone(), v));
        }
        Ok(Value::Struct(fields))
    }

    fn from_json_field(f: &LayoutField, j: &serde_json::Value) -> Result<Value, ValueError> {
        if !f.array.is_array() {
            return Self::from_json_typed(&f.ty, j);
        }
        let items = j
            .as_array()
            .ok_or_else(|| ValueError::new(format!("expected a JSON array, got {}", short(j))))?;
        check_len(f.array, items.len())?;
        if let LayoutType::Primitive(p) = f.ty {
            if p.is_octet() {
                let bytes = items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| match Self::from_json_typed(&f.ty, x) {
                        Ok(Value::U8(b)) => Ok(b),
                        Ok(_) => Err(ValueError::new("expected a byte").within(&format!("[{i}]"))),
                        Err(e) => Err(e.within(&format!("[{i}]"))),
                    })
                    .collect::<Result<Vec<u8>, _>>()?;
                return Ok(Value::Bytes(bytes));
            }
        }
        let values = items
            .iter()
            .enumerate()
            .map(|(i, x)| Self::from_json_typed(&f.ty, x).map_err(|e| e.within(&format!("[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Value::Array(values))
    }

    /// Builds one element of type `ty` from JSON.
    pub fn from_json_typed(ty: &LayoutType, j: &serde_json::Value) -> Result<Value, ValueError> {
        use serde_json::Value as J;
        match ty {
            LayoutType::Struct(l) => Self::from_json(l, j),
            LayoutType::String { bound } | LayoutType::WString { bound } => {
                let s = j.as_str().ok_or_else(|| {
                    ValueError::new(format!("expected a string, got {}", short(j)))
                })?;
                if let Some(b) = bound {
                    if s.chars().count() > *b {
                        return Err(ValueError::new(format!(
                            "string of {} characters exceeds its bound {b}",
                            s.chars().count()
                        )));
                    }
                }
                Ok(Value::String(s.to_owned()))
            }
            LayoutType::Primitive(p) => {
                let v = match j {
                    J::Bool(b) => Value::Bool(*b),
                    J::Number(n) => {
                        if let Some(u) = n.as_u64() {
                            Value::U64(u)
                        } else if let Some(i) = n.as_i64() {
                            Value::I64(i)
                        } else {
                            Value::F64(n.as_f64().unwrap_or(f64::NAN))
                        }
                    }
                    J::String(s) if p.is_float() => match s.as_str() {
                        "NaN" | "nan" => Value::F64(f64::NAN),
                        "inf" | "Infinity" => Value::F64(f64::INFINITY),
                        "-inf" | "-Infinity" => Value::F64(f64::NEG_INFINITY),
                        _ => return Err(ValueError::new(format!("expected a number, got {j}"))),
                    },
                    _ => {
                        return Err(ValueError::new(format!(
                            "expected {}, got {}",
                            p.name(),
                            short(j)
                        )))
                    }
                };
                // Keep the full f32 precision: a JSON number for a float32 field
                // is parsed as f64 and then rounded once.
                v.convert(*p)
            }
        }
    }
}

fn short(j: &serde_json::Value) -> String {
    let s = j.to_string();
    if s.len() > 40 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(40).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

/// Checks an array length against its kind.
pub(crate) fn check_len(array: ArrayKind, len: usize) -> Result<(), ValueError> {
    match array {
        ArrayKind::Fixed(n) if len != n => Err(ValueError::new(format!(
            "fixed array needs exactly {n} elements, got {len}"
        ))),
        ArrayKind::Bounded(n) if len > n => Err(ValueError::new(format!(
            "sequence of {len} elements exceeds its bound {n}"
        ))),
        _ => Ok(()),
    }
}

impl fmt::Display for Value {
    /// The compact JSON form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    Field(String),
    Index(usize),
}

/// A parsed field path such as `pose.pose.position.x` or `cells[3].temperature`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    text: String,
    segments: Vec<PathSegment>,
}

impl FieldPath {
    pub fn segments(&self) -> &[PathSegment] {
        &self.segments
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A field path that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field path {path:?}: {reason}")]
pub struct PathError {
    pub path: String,
    pub reason: &'static str,
}

impl std::str::FromStr for FieldPath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PathError {
            path: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        let mut segments = Vec::new();
        for part in s.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(i) => part.split_at(i),
                None => (part, ""),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err(
                    "each part must start with a field name of letters, digits and '_'",
                ));
            }
            segments.push(PathSegment::Field(name.to_owned()));
            while !rest.is_empty() {
                let close = rest.find(']').ok_or_else(|| err("unclosed '['"))?;
                let ix = rest[1..close]
                    .parse::<usize>()
                    .map_err(|_| err("an index must be a non-negative integer"))?;
                segments.push(PathSegment::Index(ix));
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(err("unexpected text after ']'"));
                }
            }
        }
        Ok(Self {
            text: s.to_owned(),
            segments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Registry;

    fn p(s: &str) -> FieldPath {
        s.parse().unwrap()
    }

    #[test]
    fn paths_parse_and_reject() {
        assert_eq!(
            p("cells[3].temperature").segments(),
            [
                PathSegment::Field("cells".into()),
                PathSegment::Index(3),
                PathSegment::Field("temperature".into())
            ]
        );
        assert_eq!(p("a[1][2]").segments().len(), 3);
        for bad in ["", ".a", "a.", "a[", "a[x]", "a[1]b", "a b", "[1]"] {
            assert!(bad.parse::<FieldPath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn get_and_set_paths() {
        let r = Registry::bundled();
        let l = r.layout_of("nav_msgs/msg/Odometry").unwrap();
        let mut v = l.default_value();
        assert_eq!(
            v.get_path(&p("pose.pose.orientation.w")),
            Some(Value::F64(1.0))
        );
        v.set_path(&p("pose.pose.position.x"), Value::F64(2.5))
            .unwrap();
        v.set_path(&p("pose.covariance[7]"), Value::F64(-1.0))
            .unwrap();
        assert_eq!(
            v.get_path(&p("pose.pose.position.x")),
            Some(Value::F64(2.5))
        );
        assert_eq!(v.get_path(&p("pose.covariance[7]")), Some(Value::F64(-1.0)));
        assert!(v.set_path(&p("pose.nope"), Value::F64(1.0)).is_err());
        assert_eq!(v.get_path(&p("pose.covariance[99]")), None);
    }

    #[test]
    fn json_round_trip_and_errors() {
        let r = Registry::bundled();
        let l = r.layout_of("sensor_msgs/msg/BatteryState").unwrap();
        let j = serde_json::json!({"voltage": 12.5, "percentage": "NaN", "cell_voltage": [3.5, 4], "location": "base",
            "power_supply_status": 4, "present": true});
        let v = Value::from_json(&l, &j).unwrap();
        assert_eq!(v.field("voltage"), Some(&Value::F32(12.5)));
        assert!(matches!(v.field("percentage"), Some(Value::F32(f)) if f.is_nan()));
        assert_eq!(v.to_json()["cell_voltage"], serde_json::json!([3.5, 4.0]));
        let back = Value::from_json(&l, &v.to_json()).unwrap();
        assert_eq!(back.to_json(), v.to_json());
        let e = Value::from_json(&l, &serde_json::json!({"power_supply_status": 300})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "power_supply_status: 300 is out of range for uint8"
        );
        let e = Value::from_json(&l, &serde_json::json!({"cell_voltage": [1, "x"]})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cell_voltage[1]: expected a number"),
            "{e}"
        );
        let e = Value::from_json(&l, &serde_json::json!({"bogus": 1})).unwrap_err();
        assert!(e.to_string().contains("no field \"bogus\""), "{e}");
        let e = Value::from_json(&l, &serde_json::json!({"header": {"stamp": {"sec": 1.5}}}))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("header.stamp.sec: expected int32"),
            "{e}"
        );
    }
}
