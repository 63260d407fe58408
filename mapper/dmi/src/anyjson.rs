//! `google.protobuf.Any` <-> JSON, for `CustomizedValue.data` (the free-form
//! `configData` of protocols and visitors).
//!
//! # What edgecore sends
//! edgecore (`edge/pkg/devicetwin/dtcommon` `ConvertDevice` -> `dataToAny`)
//! wraps each *top-level* value of `configData` in a well-known wrapper and
//! packs it into an `Any` (type URL `type.googleapis.com/google.protobuf.<T>`,
//! bytes = the wrapper message, i.e. field 1 holds the value):
//!
//! | Go value (after `encoding/json`) | wrapper |
//! |---|---|
//! | string | `StringValue` |
//! | bool | `BoolValue` |
//! | float64 (**every** JSON number) | `FloatValue` (narrowed to float32!) |
//! | int8/16/32, int | `Int32Value` (only from typed Go code) |
//! | int64 | `Int64Value` (only from typed Go code) |
//! | object, array, null | none: the conversion fails with "... does not support converting to any" and the device is not sent at all |
//!
//! mapper-framework (`pkg/common/dataconverter.go` `DecodeAnyValue`) decodes
//! `Int32Value`, `Int64Value`, `StringValue`, `FloatValue` and `BoolValue`.
//!
//! # What this module does
//! [`any_to_json`] decodes every scalar wrapper (also `DoubleValue`,
//! `UInt32Value`, `UInt64Value`, `BytesValue` as base64) and, for forward
//! compatibility, `google.protobuf.Value` / `Struct` / `ListValue`. Because
//! edgecore turns `domainId: 3` into `FloatValue(3.0)`, an integral float
//! within ±2^53 becomes a JSON integer, and a `FloatValue` is printed at
//! float32 precision (`0.1f32` -> `0.1`, not `0.10000000149011612`).
//!
//! [`json_to_any`] is lossless for what it accepts: strings, bools, integers
//! (`Int64Value`, or `UInt64Value` above `i64::MAX`), other numbers
//! (`DoubleValue`); objects, arrays and null go as `google.protobuf.Value`.
//! [`json_to_any_like_edgecore`] reproduces edgecore exactly (test peers).

use prost::{Message, Name};
use prost_types::{value::Kind, Any, ListValue, Struct, Value as PbValue};
use serde_json::{Map, Number, Value};

use crate::error::ConvertError;

/// The largest integer a float carries exactly (2^53).
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

fn pack<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// The message name of a type URL (`type.googleapis.com/google.protobuf.StringValue`
/// -> `google.protobuf.StringValue`): everything after the last `/`.
fn message_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Decodes an `Any` holding a well-known wrapper (or `Value`/`Struct`/`ListValue`).
pub fn any_to_json(any: &Any) -> Result<Value, ConvertError> {
    let name = message_name(&any.type_url);
    let bad = |e: prost::DecodeError| ConvertError::AnyDecode {
        type_url: any.type_url.clone(),
        reason: e.to_string(),
    };
    let bytes = any.value.as_slice();
    Ok(match name {
        "google.protobuf.StringValue" => Value::String(String::decode(bytes).map_err(bad)?),
        "google.protobuf.BoolValue" => Value::Bool(bool::decode(bytes).map_err(bad)?),
        "google.protobuf.Int32Value" => Value::from(i32::decode(bytes).map_err(bad)?),
        "google.protobuf.Int64Value" => Value::from(i64::decode(bytes).map_err(bad)?),
        "google.protobuf.UInt32Value" => Value::from(u32::decode(bytes).map_err(bad)?),
        "google.protobuf.UInt64Value" => Value::from(u64::decode(bytes).map_err(bad)?),
        "google.protobuf.FloatValue" => float32_to_json(f32::decode(bytes).map_err(bad)?),
        "google.protobuf.DoubleValue" => float_to_json(f64::decode(bytes).map_err(bad)?),
        "google.protobuf.BytesValue" => {
            Value::String(base64_encode(&Vec::<u8>::decode(bytes).map_err(bad)?))
        }
        "google.protobuf.Value" => pb_value_to_json(&PbValue::decode(bytes).map_err(bad)?),
        "google.protobuf.Struct" => pb_struct_to_json(&Struct::decode(bytes).map_err(bad)?),
        "google.protobuf.ListValue" => pb_list_to_json(&ListValue::decode(bytes).map_err(bad)?),
        _ => {
            return Err(ConvertError::UnsupportedAny {
                type_url: any.type_url.clone(),
            })
        }
    })
}

/// Encodes a JSON value losslessly (see the module docs).
pub fn json_to_any(value: &Value) -> Any {
    match value {
        Value::String(s) => pack(s),
        Value::Bool(b) => pack(b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                pack(&i)
            } else if let Some(u) = n.as_u64() {
                pack(&u)
            } else {
                pack(&n.as_f64().unwrap_or(0.0))
            }
        }
        Value::Null | Value::Array(_) | Value::Object(_) => Any {
            type_url: "type.googleapis.com/google.protobuf.Value".into(),
            value: json_to_pb_value(value).encode_to_vec(),
        },
    }
}

/// Encodes a JSON value as edgecore does: every number as a float32
/// `FloatValue`; objects, arrays and null are refused.
pub fn json_to_any_like_edgecore(value: &Value) -> Result<Any, ConvertError> {
    match value {
        Value::String(s) => Ok(pack(s)),
        Value::Bool(b) => Ok(pack(b)),
        Value::Number(n) => Ok(pack(&(n.as_f64().unwrap_or(0.0) as f32))),
        other => Err(ConvertError::NotConvertibleToAny {
            kind: json_kind(other),
        }),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A float32 at its own precision: the shortest decimal that reads back as
/// the same float32, then as f64.
fn float32_to_json(f: f32) -> Value {
    let widened = if f.is_finite() {
        f.to_string().parse::<f64>().unwrap_or(f as f64)
    } else {
        f as f64
    };
    float_to_json(widened)
}

/// Integral floats within ±2^53 become JSON integers; NaN/inf become null
/// (JSON has no such numbers).
fn float_to_json(f: f64) -> Value {
    if f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_EXACT_INT {
        Value::from(f as i64)
    } else {
        Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn pb_value_to_json(v: &PbValue) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => float_to_json(*n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => pb_struct_to_json(s),
        Some(Kind::ListValue(l)) => pb_list_to_json(l),
    }
}

fn pb_struct_to_json(s: &Struct) -> Value {
    let mut keys: Vec<&String> = s.fields.keys().collect();
    keys.sort();
    let mut out = Map::new();
    for k in keys {
        out.insert(k.clone(), pb_value_to_json(&s.fields[k]));
    }
    Value::Object(out)
}

fn pb_list_to_json(l: &ListValue) -> Value {
    Value::Array(l.values.iter().map(pb_value_to_json).collect())
}

fn json_to_pb_value(v: &Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_pb_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(Struct {
            fields: o
                .iter()
                .map(|(k, v)| (k.clone(), json_to_pb_value(v)))
                .collect(),
        }),
    };
    PbValue { kind: Some(kind) }
}

/// Standard base64 with padding (as Go's `encoding/json` writes `[]byte`).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn any(type_name: &str, value: Vec<u8>) -> Any {
        Any {
            type_url: format!("type.googleapis.com/google.protobuf.{type_name}"),
            value,
        }
    }

    #[test]
    fn decodes_what_edgecore_sends() {
        // The bytes Go's anypb.New(wrapperspb.X(v)) produces.
        assert_eq!(
            any_to_json(&any("StringValue", b"\x0a\x07/robot1".to_vec())).unwrap(),
            json!("/robot1")
        );
        assert_eq!(
            any_to_json(&any("BoolValue", vec![0x08, 0x01])).unwrap(),
            json!(true)
        );
        // FloatValue 3.0 (fixed32 0x40400000): an integer in the CRD.
        assert_eq!(
            any_to_json(&any("FloatValue", vec![0x0d, 0x00, 0x00, 0x40, 0x40])).unwrap(),
            json!(3)
        );
        // FloatValue 0.1 (0x3dcccccd) keeps its float32 meaning.
        assert_eq!(
            any_to_json(&any("FloatValue", vec![0x0d, 0xcd, 0xcc, 0xcc, 0x3d])).unwrap(),
            json!(0.1)
        );
        assert_eq!(
            any_to_json(&any("Int32Value", vec![0x08, 0x07])).unwrap(),
            json!(7)
        );
        // Int64Value -1: ten-byte varint.
        let mut neg = vec![0x08];
        neg.extend([0xff; 9]);
        neg.push(0x01);
        assert_eq!(any_to_json(&any("Int64Value", neg)).unwrap(), json!(-1));
        // Default values are empty messages.
        assert_eq!(any_to_json(&any("StringValue", vec![])).unwrap(), json!(""));
        assert_eq!(any_to_json(&any("FloatValue", vec![])).unwrap(), json!(0));
    }

    #[test]
    fn type_url_prefix_does_not_matter() {
        let a = Any {
            type_url: "example.com/x/google.protobuf.BoolValue".into(),
            value: vec![0x08, 0x01],
        };
        assert_eq!(any_to_json(&a).unwrap(), json!(true));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(
            any_to_json(&any("Timestamp", vec![])),
            Err(ConvertError::UnsupportedAny { .. })
        ));
        assert!(matches!(
            any_to_json(&Any::default()),
            Err(ConvertError::UnsupportedAny { .. })
        ));
        assert!(matches!(
            any_to_json(&any("StringValue", vec![0x0a, 0x09, b'x'])),
            Err(ConvertError::AnyDecode { .. })
        ));
        assert!(matches!(
            any_to_json(&any("StringValue", vec![0x0a, 0x02, 0xff, 0xfe])),
            Err(ConvertError::AnyDecode { .. })
        ));
        for bytes in [vec![0xff], vec![0x0d, 0x00], vec![0x08]] {
            for t in [
                "BoolValue",
                "FloatValue",
                "DoubleValue",
                "Int64Value",
                "Value",
                "Struct",
            ] {
                let _ = any_to_json(&any(t, bytes.clone()));
            }
        }
    }

    #[test]
    fn lossless_round_trip() {
        for v in [
            json!("a b/c"),
            json!(true),
            json!(0),
            json!(-42),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(0.1),
            json!(-1.5e300),
            json!({"write": {"topic": "cmd_vel", "template": {"angular": {"z": 0.5}}}, "list": [1, "x", null, false]}),
            json!(null),
        ] {
            assert_eq!(any_to_json(&json_to_any(&v)).unwrap(), v, "{v}");
        }
    }

    #[test]
    fn like_edgecore() {
        let a = json_to_any_like_edgecore(&json!(3)).unwrap();
        assert_eq!(a.type_url, "type.googleapis.com/google.protobuf.FloatValue");
        assert_eq!(a.value, vec![0x0d, 0x00, 0x00, 0x40, 0x40]);
        assert_eq!(any_to_json(&a).unwrap(), json!(3));
        assert_eq!(
            any_to_json(&json_to_any_like_edgecore(&json!(2.5)).unwrap()).unwrap(),
            json!(2.5)
        );
        let s = json_to_any_like_edgecore(&json!("x")).unwrap();
        assert_eq!(
            (s.type_url.as_str(), s.value.as_slice()),
            (
                "type.googleapis.com/google.protobuf.StringValue",
                &b"\x0a\x01x"[..]
            )
        );
        assert!(json_to_any_like_edgecore(&json!({"a": 1})).is_err());
        assert!(json_to_any_like_edgecore(&json!([1])).is_err());
        assert!(json_to_any_like_edgecore(&json!(null)).is_err());
    }

    #[test]
    fn bytes_value_is_base64() {
        let a = pack(&b"hello".to_vec());
        assert_eq!(any_to_json(&a).unwrap(), json!("aGVsbG8="));
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64_encode(b"abc"), "YWJj");
    }
}
