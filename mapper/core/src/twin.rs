//! Twin values: ROS 2 field values <-> KubeEdge's twin strings.
//!
//! KubeEdge accepts twin values matching `^[a-zA-Z0-9-_.,:/@#]{1,512}$`
//! (edgecore `dtcommon/util.go`). Values that fit are sent as they are:
//! numbers (`87.5`, `-3`, `1e-7` is written `0.0000001`), booleans (`true`),
//! enum labels, simple strings. Any other value — a string with spaces, a
//! whole array (as JSON), bytes — is sent as `b64:` followed by the unpadded
//! base64url (RFC 4648 §5) of its UTF-8 text, which uses only allowed
//! characters. Desired values in that form are decoded the same way. A value
//! whose encoding is longer than 512 characters is an error (not truncated).

use std::collections::BTreeMap;

use base64::Engine as _;
use ros2::msg::{LayoutType, Primitive};
use ros2::value::Value;

use crate::model::{AccessMode, ModelProperty, PropertyType};

/// Longest twin value KubeEdge accepts.
pub const MAX_TWIN_LEN: usize = 512;
/// Prefix of encoded twin values.
pub const B64_PREFIX: &str = "b64:";

/// Raw field value <-> twin value conversion of one property.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    /// twin = raw * scale + offset.
    pub scale: f64,
    pub offset: f64,
    /// Raw value (as text) -> label.
    pub enum_map: BTreeMap<String, String>,
}

impl Default for Conversion {
    fn default() -> Self {
        Self {
            scale: 1.0,
            offset: 0.0,
            enum_map: BTreeMap::new(),
        }
    }
}

impl Conversion {
    fn is_identity(&self) -> bool {
        self.scale == 1.0 && self.offset == 0.0
    }
}

/// A value that cannot become a twin, or a desired value that must not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwinError {
    #[error("value {value:?} is not a valid {expected}")]
    BadType {
        value: String,
        expected: &'static str,
    },
    #[error("value {value} is below the minimum {min}")]
    BelowMinimum { value: String, min: String },
    #[error("value {value} is above the maximum {max}")]
    AboveMaximum { value: String, max: String },
    #[error("property is ReadOnly in the DeviceModel")]
    ReadOnly,
    #[error("encoded value is {len} characters, more than KubeEdge's {MAX_TWIN_LEN}")]
    TooLong { len: usize },
    #[error("{0}")]
    Convert(String),
}

/// Whether KubeEdge takes `s` as a twin value unchanged.
pub fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TWIN_LEN
        && !s.starts_with(B64_PREFIX)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.,:/@#".contains(&b))
}

/// Encodes text for the twin charset (see the module docs).
pub fn encode_twin(s: &str) -> Result<String, TwinError> {
    if s.is_empty() || is_plain(s) {
        return Ok(s.to_owned());
    }
    let out = format!(
        "{B64_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s.as_bytes())
    );
    if out.len() > MAX_TWIN_LEN {
        return Err(TwinError::TooLong { len: out.len() });
    }
    Ok(out)
}

/// Decodes a twin value written by [`encode_twin`] (plain values pass through).
pub fn decode_twin(s: &str) -> Result<String, TwinError> {
    let Some(b) = s.strip_prefix(B64_PREFIX) else {
        return Ok(s.to_owned());
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b)
        .map_err(|e| TwinError::Convert(format!("bad b64: value: {e}")))?;
    String::from_utf8(bytes).map_err(|_| TwinError::Convert("b64: value is not UTF-8".into()))
}

fn fmt_f64(x: f64) -> String {
    // Display never uses an exponent and is the shortest round-trip form.
    format!("{x}")
}

fn fmt_f32(x: f32) -> String {
    format!("{x}")
}

/// The text of a raw scalar (the key for enum maps).
fn raw_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::F32(x) => fmt_f32(*x),
        Value::F64(x) => fmt_f64(*x),
        other => other.to_string(),
    }
}

/// A field value -> its twin value for a property of type `ty`.
pub fn to_twin(value: &Value, conv: &Conversion, ty: PropertyType) -> Result<String, TwinError> {
    if !conv.enum_map.is_empty() {
        if let Some(label) = conv.enum_map.get(&raw_text(value)) {
            return encode_twin(label);
        }
    }
    let numeric = value.as_f64().filter(|_| !matches!(value, Value::Bool(_)));
    let text = match ty {
        PropertyType::Int => {
            let x = numeric.ok_or_else(|| bad(value, "number"))? * conv.scale + conv.offset;
            if !x.is_finite() {
                return Err(bad(value, "finite number"));
            }
            format!("{}", x.round() as i64)
        }
        PropertyType::Float => {
            let x = numeric.ok_or_else(|| bad(value, "number"))?;
            match value {
                Value::F32(f) if conv.is_identity() => fmt_f32(*f),
                _ => fmt_f32((x * conv.scale + conv.offset) as f32),
            }
        }
        PropertyType::Double => {
            let x = numeric.ok_or_else(|| bad(value, "number"))?;
            match value {
                // A float32 field keeps its short form ("0.87", not "0.8700000047683716").
                Value::F32(f) if conv.is_identity() => fmt_f32(*f),
                _ => fmt_f64(x * conv.scale + conv.offset),
            }
        }
        PropertyType::Boolean => match value {
            Value::Bool(b) => b.to_string(),
            v => (numeric.ok_or_else(|| bad(v, "boolean"))? != 0.0).to_string(),
        },
        PropertyType::Bytes => {
            let bytes: Vec<u8> = match value {
                Value::Bytes(b) => b.clone(),
                Value::String(s) => s.as_bytes().to_vec(),
                v => return Err(bad(v, "byte sequence")),
            };
            let out = format!(
                "{B64_PREFIX}{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            );
            if out.len() > MAX_TWIN_LEN {
                return Err(TwinError::TooLong { len: out.len() });
            }
            return Ok(out);
        }
        PropertyType::String | PropertyType::Stream => match (value, numeric) {
            (Value::String(s), _) => s.clone(),
            (_, Some(x)) if !conv.is_identity() => fmt_f64(x * conv.scale + conv.offset),
            (v, _) => raw_text(v),
        },
    };
    encode_twin(&text)
}

fn bad(v: &Value, expected: &'static str) -> TwinError {
    TwinError::BadType {
        value: v.to_string(),
        expected,
    }
}

/// The property type to use when the DeviceModel does not say: from the field.
pub fn infer_type(leaf: &LayoutType, is_array: bool) -> PropertyType {
    if is_array {
        return match leaf {
            LayoutType::Primitive(p) if p.is_octet() => PropertyType::Bytes,
            _ => PropertyType::String,
        };
    }
    match leaf {
        LayoutType::Primitive(Primitive::Bool) => PropertyType::Boolean,
        LayoutType::Primitive(Primitive::Float32) => PropertyType::Float,
        LayoutType::Primitive(Primitive::Float64) => PropertyType::Double,
        LayoutType::Primitive(_) => PropertyType::Int,
        _ => PropertyType::String,
    }
}

/// Checks a desired twin value against the DeviceModel property and turns it
/// into the value of a field of type `leaf`. Nothing is published unless this
/// succeeds.
pub fn desired_to_field(
    desired: &str,
    conv: &Conversion,
    model: Option<&ModelProperty>,
    leaf: &LayoutType,
) -> Result<Value, TwinError> {
    if model.and_then(|m| m.access_mode) == Some(AccessMode::ReadOnly) {
        return Err(TwinError::ReadOnly);
    }
    let text = decode_twin(desired)?;
    // An enum label stands for its raw value; the map itself is the validation.
    if let Some((raw, _)) = conv.enum_map.iter().find(|(_, label)| **label == text) {
        return raw_to_field(
            raw.clone(),
            &Conversion {
                enum_map: BTreeMap::new(),
                scale: 1.0,
                offset: 0.0,
            },
            leaf,
        );
    }
    let ty = model
        .map(|m| m.type_)
        .unwrap_or_else(|| infer_type(leaf, false));
    // Validate against the model's type and limits, in twin units.
    let number = match ty {
        PropertyType::Int => Some(text.trim().parse::<i64>().map_err(|_| TwinError::BadType {
            value: text.clone(),
            expected: "integer",
        })? as f64),
        PropertyType::Float | PropertyType::Double => {
            let x = text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| TwinError::BadType {
                    value: text.clone(),
                    expected: "finite number",
                })?;
            Some(x)
        }
        PropertyType::Boolean => {
            if !matches!(text.as_str(), "true" | "false") {
                return Err(TwinError::BadType {
                    value: text,
                    expected: "boolean (true or false)",
                });
            }
            None
        }
        _ => None,
    };
    if let (Some(x), Some(m)) = (number, model) {
        if let Some(min) = m
            .minimum
            .as_deref()
            .and_then(|s| s.trim().parse::<f64>().ok())
        {
            if x < min {
                return Err(TwinError::BelowMinimum {
                    value: text,
                    min: m.minimum.clone().unwrap_or_default(),
                });
            }
        }
        if let Some(max) = m
            .maximum
            .as_deref()
            .and_then(|s| s.trim().parse::<f64>().ok())
        {
            if x > max {
                return Err(TwinError::AboveMaximum {
                    value: text,
                    max: m.maximum.clone().unwrap_or_default(),
                });
            }
        }
    }
    raw_to_field(text, conv, leaf)
}

/// Twin units -> raw field value of type `leaf`.
fn raw_to_field(
    raw_text: String,
    conv: &Conversion,
    leaf: &LayoutType,
) -> Result<Value, TwinError> {
    match leaf {
        LayoutType::String { .. } | LayoutType::WString { .. } => Ok(Value::String(raw_text)),
        LayoutType::Primitive(Primitive::Bool) => match raw_text.as_str() {
            "true" | "1" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => Err(TwinError::BadType {
                value: raw_text,
                expected: "boolean",
            }),
        },
        LayoutType::Primitive(p) => {
            let x: f64 = raw_text.trim().parse().map_err(|_| TwinError::BadType {
                value: raw_text.clone(),
                expected: "number",
            })?;
            let raw = (x - conv.offset) / conv.scale;
            let v = if p.is_float() {
                Value::F64(raw)
            } else {
                // Undo floating-point noise of the inverse scaling.
                let r = raw.round();
                if (raw - r).abs() > 1e-6 {
                    return Err(TwinError::Convert(format!(
                        "{raw} is not an integer for a {} field",
                        p.name()
                    )));
                }
                Value::F64(r)
            };
            v.convert(*p).map_err(|e| TwinError::Convert(e.message))
        }
        LayoutType::Struct(l) => Err(TwinError::Convert(format!(
            "the field is a message ({})",
            l.type_name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(
        ty: PropertyType,
        min: Option<&str>,
        max: Option<&str>,
        mode: AccessMode,
    ) -> ModelProperty {
        ModelProperty {
            name: "p".into(),
            type_: ty,
            access_mode: Some(mode),
            minimum: min.map(Into::into),
            maximum: max.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn numbers_become_short_twin_strings() {
        let c = Conversion::default();
        assert_eq!(
            to_twin(&Value::F32(0.87), &c, PropertyType::Float).unwrap(),
            "0.87"
        );
        assert_eq!(
            to_twin(&Value::F32(0.87), &c, PropertyType::Double).unwrap(),
            "0.87"
        );
        assert_eq!(
            to_twin(&Value::F64(1e-7), &c, PropertyType::Double).unwrap(),
            "0.0000001"
        );
        assert_eq!(
            to_twin(&Value::I32(-3), &c, PropertyType::Int).unwrap(),
            "-3"
        );
        assert_eq!(
            to_twin(&Value::Bool(true), &c, PropertyType::Boolean).unwrap(),
            "true"
        );
        let pct = Conversion {
            scale: 100.0,
            ..Default::default()
        };
        assert_eq!(
            to_twin(&Value::F32(0.5), &pct, PropertyType::Double).unwrap(),
            "50"
        );
        assert_eq!(
            to_twin(&Value::F64(0.875), &pct, PropertyType::Int).unwrap(),
            "88"
        );
    }

    #[test]
    fn enums_map_both_ways() {
        let c = Conversion {
            enum_map: [
                ("1".to_owned(), "charging".to_owned()),
                ("2".to_owned(), "discharging".to_owned()),
            ]
            .into(),
            ..Default::default()
        };
        assert_eq!(
            to_twin(&Value::U8(1), &c, PropertyType::String).unwrap(),
            "charging"
        );
        assert_eq!(
            to_twin(&Value::U8(9), &c, PropertyType::String).unwrap(),
            "9"
        );
        let leaf = LayoutType::Primitive(Primitive::UInt8);
        assert_eq!(
            desired_to_field("discharging", &c, None, &leaf).unwrap(),
            Value::U8(2)
        );
    }

    #[test]
    fn strings_outside_the_charset_are_encoded() {
        let c = Conversion::default();
        let t = to_twin(&Value::String("base link".into()), &c, PropertyType::String).unwrap();
        assert!(t.starts_with(B64_PREFIX) && is_plain(&t[4..]), "{t}");
        assert_eq!(decode_twin(&t).unwrap(), "base link");
        assert_eq!(
            to_twin(&Value::String("base_link".into()), &c, PropertyType::String).unwrap(),
            "base_link"
        );
        // A plain string that looks encoded is encoded itself.
        let t = encode_twin("b64:abc").unwrap();
        assert_eq!(decode_twin(&t).unwrap(), "b64:abc");
        assert!(matches!(
            encode_twin(&"x y".repeat(200)),
            Err(TwinError::TooLong { .. })
        ));
        let b = to_twin(&Value::Bytes(vec![0, 255, 7]), &c, PropertyType::Bytes).unwrap();
        assert_eq!(b, "b64:AP8H");
    }

    #[test]
    fn desired_values_are_checked_before_anything_is_sent() {
        let c = Conversion::default();
        let f64_leaf = LayoutType::Primitive(Primitive::Float64);
        let m = model(
            PropertyType::Double,
            Some("0"),
            Some("1.5"),
            AccessMode::ReadWrite,
        );
        assert_eq!(
            desired_to_field("0.5", &c, Some(&m), &f64_leaf).unwrap(),
            Value::F64(0.5)
        );
        assert!(matches!(
            desired_to_field("2", &c, Some(&m), &f64_leaf),
            Err(TwinError::AboveMaximum { .. })
        ));
        assert!(matches!(
            desired_to_field("-1", &c, Some(&m), &f64_leaf),
            Err(TwinError::BelowMinimum { .. })
        ));
        assert!(matches!(
            desired_to_field("fast", &c, Some(&m), &f64_leaf),
            Err(TwinError::BadType { .. })
        ));
        assert!(matches!(
            desired_to_field("NaN", &c, Some(&m), &f64_leaf),
            Err(TwinError::BadType { .. })
        ));
        let ro = model(PropertyType::Double, None, None, AccessMode::ReadOnly);
        assert_eq!(
            desired_to_field("0.5", &c, Some(&ro), &f64_leaf),
            Err(TwinError::ReadOnly)
        );
        let i = model(
            PropertyType::Int,
            Some("0"),
            Some("100"),
            AccessMode::ReadWrite,
        );
        let u8_leaf = LayoutType::Primitive(Primitive::UInt8);
        assert!(matches!(
            desired_to_field("1.5", &c, Some(&i), &u8_leaf),
            Err(TwinError::BadType { .. })
        ));
        assert_eq!(
            desired_to_field("42", &c, Some(&i), &u8_leaf).unwrap(),
            Value::U8(42)
        );
        // Scaled: twin percent -> raw fraction.
        let pct = Conversion {
            scale: 100.0,
            ..Default::default()
        };
        assert_eq!(
            desired_to_field("25", &pct, None, &f64_leaf).unwrap(),
            Value::F64(0.25)
        );
        let b = model(PropertyType::Boolean, None, None, AccessMode::ReadWrite);
        let bool_leaf = LayoutType::Primitive(Primitive::Bool);
        assert_eq!(
            desired_to_field("true", &c, Some(&b), &bool_leaf).unwrap(),
            Value::Bool(true)
        );
        assert!(desired_to_field("yes", &c, Some(&b), &bool_leaf).is_err());
        let s_leaf = LayoutType::String { bound: None };
        assert_eq!(
            desired_to_field(&encode_twin("go home").unwrap(), &c, None, &s_leaf).unwrap(),
            Value::String("go home".into())
        );
    }
}
