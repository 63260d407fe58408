//! The `.msg` grammar of ROS 2 (rosidl): one field or constant per line,
//! `#` comments, `TYPE NAME [DEFAULT]` and `TYPE NAME=VALUE`.

use super::{
    ActionDef, ArrayKind, BaseType, Constant, Field, MessageDef, MsgError, Primitive, ServiceDef,
};
use crate::names::{InterfaceKind, TypeName};
use crate::value::Value;

/// Parses the text of a `.msg` file as the type `type_name`.
pub fn parse_message(type_name: &TypeName, text: &str) -> Result<MessageDef, MsgError> {
    parse_lines(type_name, text.lines().enumerate().map(|(i, l)| (i + 1, l)))
}

/// Parses a `.srv` file (request `---` response) of service `pkg/srv/Name`.
pub fn parse_service(type_name: &TypeName, text: &str) -> Result<ServiceDef, MsgError> {
    let sections = split_sections(text);
    if sections.len() != 2 {
        return Err(MsgError::Parse {
            type_name: type_name.to_string(),
            line: 1,
            message: format!(
                "a .srv needs exactly one '---' separator, found {}",
                sections.len() - 1
            ),
        });
    }
    let mut it = sections.into_iter();
    let (req, resp) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
    Ok(ServiceDef {
        type_name: type_name.clone(),
        request: parse_lines(&type_name.service_request(), req.into_iter())?,
        response: parse_lines(&type_name.service_response(), resp.into_iter())?,
    })
}

/// Parses a `.action` file (goal `---` result `---` feedback) of action
/// `pkg/action/Name`, deriving the messages ROS 2 puts on the wire.
pub fn parse_action(type_name: &TypeName, text: &str) -> Result<ActionDef, MsgError> {
    let sections = split_sections(text);
    if sections.len() != 3 {
        return Err(MsgError::Parse {
            type_name: type_name.to_string(),
            line: 1,
            message: format!(
                "an .action needs exactly two '---' separators, found {}",
                sections.len() - 1
            ),
        });
    }
    let sub = |suffix: &str| TypeName {
        package: type_name.package.clone(),
        kind: InterfaceKind::Action,
        name: format!("{}_{suffix}", type_name.name),
    };
    let mut it = sections.into_iter();
    let goal = parse_lines(&sub("Goal"), it.next().unwrap_or_default().into_iter())?;
    let result = parse_lines(&sub("Result"), it.next().unwrap_or_default().into_iter())?;
    let feedback = parse_lines(&sub("Feedback"), it.next().unwrap_or_default().into_iter())?;
    let nested = |t: &TypeName| BaseType::Nested(t.clone());
    let field = |name: &str, base: BaseType| Field {
        name: name.into(),
        base,
        array: ArrayKind::Single,
        default: None,
    };
    let uuid = BaseType::Nested(TypeName {
        package: "unique_identifier_msgs".into(),
        kind: InterfaceKind::Msg,
        name: "UUID".into(),
    });
    let time = BaseType::Nested(TypeName {
        package: "builtin_interfaces".into(),
        kind: InterfaceKind::Msg,
        name: "Time".into(),
    });
    let msg = |t: TypeName, fields: Vec<Field>| MessageDef {
        type_name: t,
        fields,
        constants: vec![],
    };
    let derived = vec![
        msg(
            sub("SendGoal_Request"),
            vec![
                field("goal_id", uuid.clone()),
                field("goal", nested(&goal.type_name)),
            ],
        ),
        msg(
            sub("SendGoal_Response"),
            vec![
                field("accepted", BaseType::Primitive(Primitive::Bool)),
                field("stamp", time),
            ],
        ),
        msg(
            sub("GetResult_Request"),
            vec![field("goal_id", uuid.clone())],
        ),
        msg(
            sub("GetResult_Response"),
            vec![
                field("status", BaseType::Primitive(Primitive::Int8)),
                field("result", nested(&result.type_name)),
            ],
        ),
        msg(
            sub("FeedbackMessage"),
            vec![
                field("goal_id", uuid),
                field("feedback", nested(&feedback.type_name)),
            ],
        ),
    ];
    let mut messages = vec![goal, result, feedback];
    messages.extend(derived);
    Ok(ActionDef {
        type_name: type_name.clone(),
        messages,
    })
}

type NumberedLine<'a> = (usize, &'a str);

fn split_sections(text: &str) -> Vec<Vec<NumberedLine<'_>>> {
    let mut sections = vec![Vec::new()];
    for (i, line) in text.lines().enumerate() {
        if line.trim() == "---" {
            sections.push(Vec::new());
        } else if let Some(last) = sections.last_mut() {
            last.push((i + 1, line));
        }
    }
    sections
}

fn parse_lines<'a>(
    type_name: &TypeName,
    lines: impl Iterator<Item = NumberedLine<'a>>,
) -> Result<MessageDef, MsgError> {
    let mut def = MessageDef {
        type_name: type_name.clone(),
        fields: vec![],
        constants: vec![],
    };
    for (line_no, raw) in lines {
        let err = |message: String| MsgError::Parse {
            type_name: type_name.to_string(),
            line: line_no,
            message,
        };
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        parse_line(type_name, line, &mut def).map_err(err)?;
    }
    Ok(def)
}

fn parse_line(owner: &TypeName, line: &str, def: &mut MessageDef) -> Result<(), String> {
    let (type_tok, rest) = line
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("expected 'TYPE NAME', got {line:?}"))?;
    let rest = rest.trim_start();
    let name_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (name, after) = rest.split_at(name_len);
    if name.is_empty() {
        return Err(format!("expected a field name after type {type_tok:?}"));
    }
    let (base, array) = parse_type(owner, type_tok)?;
    let after = after.trim();
    if let Some(value) = after.strip_prefix('=') {
        validate_constant_name(name)?;
        if array.is_array() {
            return Err(format!("constant {name} cannot be an array"));
        }
        if matches!(base, BaseType::Nested(_)) {
            return Err(format!(
                "constant {name} must have a primitive or string type, not {base}"
            ));
        }
        if def.constants.iter().any(|c| c.name == name) {
            return Err(format!("duplicate constant {name}"));
        }
        let value = parse_literal(&base, ArrayKind::Single, value.trim())
            .map_err(|e| format!("constant {name}: {e}"))?;
        def.constants.push(Constant {
            name: name.to_owned(),
            base,
            value,
        });
        return Ok(());
    }
    if !after.is_empty() && !rest[name_len..].starts_with(char::is_whitespace) {
        let word = rest.split_whitespace().next().unwrap_or(rest);
        return Err(format!(
            "invalid field name {word:?}: unexpected character after {name:?}"
        ));
    }
    validate_field_name(name)?;
    if def.fields.iter().any(|f| f.name == name) {
        return Err(format!("duplicate field {name}"));
    }
    let default = if after.is_empty() {
        None
    } else {
        if matches!(base, BaseType::Nested(_)) {
            return Err(format!(
                "field {name} of message type {base} cannot have a default value"
            ));
        }
        Some(parse_literal(&base, array, after).map_err(|e| format!("default of {name}: {e}"))?)
    };
    def.fields.push(Field {
        name: name.to_owned(),
        base,
        array,
        default,
    });
    Ok(())
}

/// Removes a `#` comment that is not inside a quoted string.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return &line[..i],
            None => {}
        }
    }
    line
}

fn parse_type(owner: &TypeName, tok: &str) -> Result<(BaseType, ArrayKind), String> {
    let (base_tok, array) = match tok.find('[') {
        None => (tok, ArrayKind::Single),
        Some(i) => {
            let inner = tok[i + 1..]
                .strip_suffix(']')
                .ok_or_else(|| format!("unterminated array in type {tok:?}"))?;
            let array = if inner.is_empty() {
                ArrayKind::Unbounded
            } else if let Some(n) = inner.strip_prefix("<=") {
                ArrayKind::Bounded(parse_bound(n, tok)?)
            } else {
                ArrayKind::Fixed(parse_bound(inner, tok)?)
            };
            (&tok[..i], array)
        }
    };
    let (head, bound) = match base_tok.split_once("<=") {
        Some((h, b)) => (h, Some(parse_bound(b, tok)?)),
        None => (base_tok, None),
    };
    let base = match head {
        "string" => BaseType::String { bound },
        "wstring" => BaseType::WString { bound },
        _ if bound.is_some() => {
            return Err(format!(
                "only string and wstring take a <= bound, not {head:?}"
            ))
        }
        // Aliases of ROS 1 still accepted by rosidl.
        "duration" | "time" => {
            let name = if head == "time" { "Time" } else { "Duration" };
            BaseType::Nested(TypeName {
                package: "builtin_interfaces".into(),
                kind: InterfaceKind::Msg,
                name: name.into(),
            })
        }
        _ => match Primitive::from_name(head) {
            Some(p) => BaseType::Primitive(p),
            None => BaseType::Nested(parse_nested(owner, head)?),
        },
    };
    Ok((base, array))
}

fn parse_bound(s: &str, tok: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "bad size {s:?} in type {tok:?}: expected a positive integer"
        )),
    }
}

fn parse_nested(owner: &TypeName, head: &str) -> Result<TypeName, String> {
    let unknown = || {
        format!("unknown type {head:?}: not a primitive, string, or Name / pkg/Name / pkg/msg/Name")
    };
    let t = match head.split('/').count() {
        1 => TypeName::new(&owner.package, InterfaceKind::Msg, head),
        2 | 3 => TypeName::parse(head),
        _ => return Err(unknown()),
    };
    let t = t.map_err(|_| unknown())?;
    if t.kind != InterfaceKind::Msg {
        return Err(format!(
            "field type {head:?} must be a message type (pkg/msg/Name)"
        ));
    }
    Ok(t)
}

fn validate_field_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__")
        && !name.ends_with('_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid field name {name:?}: expected lowercase letters, digits and single '_', starting with a letter"
        ))
    }
}

fn validate_constant_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid constant name {name:?}: expected UPPER_CASE"
        ))
    }
}

/// Parses a default or constant literal for `base` / `array`.
pub(crate) fn parse_literal(
    base: &BaseType,
    array: ArrayKind,
    text: &str,
) -> Result<Value, String> {
    if !array.is_array() {
        return parse_scalar(base, text);
    }
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| format!("array default must be written [a, b, ...], got {text:?}"))?;
    let items = split_items(inner)?;
    match array {
        ArrayKind::Fixed(n) if items.len() != n => {
            return Err(format!(
                "array default has {} elements, the type needs exactly {n}",
                items.len()
            ))
        }
        ArrayKind::Bounded(n) if items.len() > n => {
            return Err(format!(
                "array default has {} elements, the bound is {n}",
                items.len()
            ))
        }
        _ => {}
    }
    let values = items
        .iter()
        .map(|i| parse_scalar(base, i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match base {
        BaseType::Primitive(p) if p.is_octet() => Value::Bytes(
            values
                .into_iter()
                .map(|v| if let Value::U8(b) = v { b } else { 0 })
                .collect(),
        ),
        _ => Value::Array(values),
    })
}

fn split_items(inner: &str) -> Result<Vec<String>, String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in inner.chars() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q && !cur.ends_with("\\\"") {
                    quote = None;
                }
            }
            None if c == ',' => items.push(std::mem::take(&mut cur)),
            None => {
                if c == '"' || c == '\'' {
                    quote = Some(c);
                }
                cur.push(c);
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated string in array default".into());
    }
    if !cur.trim().is_empty() || !items.is_empty() {
        items.push(cur);
    }
    Ok(items.into_iter().map(|s| s.trim().to_owned()).collect())
}

fn parse_scalar(base: &BaseType, text: &str) -> Result<Value, String> {
    let text = text.trim();
    match base {
        BaseType::String { bound } | BaseType::WString { bound } => {
            let s = unquote(text)?;
            if let Some(b) = bound {
                if s.chars().count() > *b {
                    return Err(format!("string {s:?} is longer than its bound {b}"));
                }
            }
            Ok(Value::String(s))
        }
        BaseType::Nested(t) => Err(format!("message type {t} has no literal form")),
        BaseType::Primitive(p) => parse_primitive(*p, text),
    }
}

fn unquote(text: &str) -> Result<String, String> {
    let Some(q) = text.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return Ok(text.to_owned());
    };
    let body = text[1..]
        .strip_suffix(q)
        .ok_or_else(|| format!("unterminated string {text:?}"))?;
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Ok(out)
}

/// Parses a primitive literal with a range check.
pub(crate) fn parse_primitive(p: Primitive, text: &str) -> Result<Value, String> {
    let int = || -> Result<i128, String> {
        let t = text.replace('_', "");
        let (neg, digits) = match t.strip_prefix('-') {
            Some(d) => (true, d.to_owned()),
            None => (false, t.trim_start_matches('+').to_owned()),
        };
        let v = if let Some(h) = digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
        {
            i128::from_str_radix(h, 16)
        } else {
            digits.parse::<i128>()
        }
        .map_err(|_| format!("{text:?} is not an integer"))?;
        Ok(if neg { -v } else { v })
    };
    let range = |v: i128, lo: i128, hi: i128| {
        if v < lo || v > hi {
            Err(format!(
                "{v} is out of range for {} ({lo}..={hi})",
                p.name()
            ))
        } else {
            Ok(v)
        }
    };
    Ok(match p {
        Primitive::Bool => match text {
            "true" | "True" | "TRUE" | "1" => Value::Bool(true),
            "false" | "False" | "FALSE" | "0" => Value::Bool(false),
            _ => return Err(format!("{text:?} is not a bool (true/false/1/0)")),
        },
        Primitive::Byte | Primitive::Char | Primitive::UInt8 => {
            Value::U8(range(int()?, 0, u8::MAX.into())? as u8)
        }
        Primitive::Int8 => Value::I8(range(int()?, i8::MIN.into(), i8::MAX.into())? as i8),
        Primitive::Int16 => Value::I16(range(int()?, i16::MIN.into(), i16::MAX.into())? as i16),
        Primitive::UInt16 => Value::U16(range(int()?, 0, u16::MAX.into())? as u16),
        Primitive::Int32 => Value::I32(range(int()?, i32::MIN.into(), i32::MAX.into())? as i32),
        Primitive::UInt32 => Value::U32(range(int()?, 0, u32::MAX.into())? as u32),
        Primitive::Int64 => Value::I64(range(int()?, i64::MIN.into(), i64::MAX.into())? as i64),
        Primitive::UInt64 => Value::U64(range(int()?, 0, u64::MAX.into())? as u64),
        Primitive::Float32 => Value::F32(parse_float(text)? as f32),
        Primitive::Float64 => Value::F64(parse_float(text)?),
    })
}

fn parse_float(text: &str) -> Result<f64, String> {
    match text {
        "nan" | "NaN" => Ok(f64::NAN),
        "inf" | "Inf" | "+inf" => Ok(f64::INFINITY),
        "-inf" | "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("{text:?} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(s: &str) -> TypeName {
        TypeName::parse(s).unwrap()
    }

    #[test]
    fn parses_fields_constants_defaults_and_arrays() {
        let text = r#"
# A comment line
uint8 POWER_SUPPLY_STATUS_FULL = 4   # trailing comment
string GREETING="hi # not a comment"
std_msgs/Header header
float32 voltage
float64 w 1
string<=10 short_name "abc"
int32[3] fixed [1, -2, 3]
uint8[] data
float32[<=4] bounded
Point32 local
string[] names ["a", "b,c"]
"#;
        let d = parse_message(&ty("pkg/msg/Test"), text).unwrap();
        assert_eq!(d.constants.len(), 2);
        assert_eq!(d.constants[0].value, Value::U8(4));
        assert_eq!(
            d.constants[1].value,
            Value::String("hi # not a comment".into())
        );
        let names: Vec<_> = d.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "header",
                "voltage",
                "w",
                "short_name",
                "fixed",
                "data",
                "bounded",
                "local",
                "names"
            ]
        );
        assert_eq!(
            d.fields[0].base,
            BaseType::Nested(ty("std_msgs/msg/Header"))
        );
        assert_eq!(d.fields[2].default, Some(Value::F64(1.0)));
        assert_eq!(d.fields[3].base, BaseType::String { bound: Some(10) });
        assert_eq!(d.fields[4].array, ArrayKind::Fixed(3));
        assert_eq!(
            d.fields[4].default,
            Some(Value::Array(vec![
                Value::I32(1),
                Value::I32(-2),
                Value::I32(3)
            ]))
        );
        assert_eq!(d.fields[5].array, ArrayKind::Unbounded);
        assert_eq!(d.fields[6].array, ArrayKind::Bounded(4));
        assert_eq!(d.fields[7].base, BaseType::Nested(ty("pkg/msg/Point32")));
        assert_eq!(
            d.fields[8].default,
            Some(Value::Array(vec![
                Value::String("a".into()),
                Value::String("b,c".into())
            ]))
        );
    }

    #[test]
    fn parses_services_and_actions() {
        let s = parse_service(
            &ty("example_interfaces/srv/AddTwoInts"),
            "int64 a\nint64 b\n---\nint64 sum\n",
        )
        .unwrap();
        assert_eq!(
            s.request.type_name.to_string(),
            "example_interfaces/srv/AddTwoInts_Request"
        );
        assert_eq!(s.response.fields[0].name, "sum");
        assert!(parse_service(&ty("p/srv/X"), "int64 a\n").is_err());
        let a = parse_action(
            &ty("p/action/Fib"),
            "int32 order\n---\nint32[] sequence\n---\nint32[] partial\n",
        )
        .unwrap();
        let names: Vec<_> = a
            .messages
            .iter()
            .map(|m| m.type_name.name.clone())
            .collect();
        assert!(names.contains(&"Fib_SendGoal_Request".to_string()));
        assert!(names.contains(&"Fib_FeedbackMessage".to_string()));
    }

    #[test]
    fn bad_syntax_is_a_typed_error_with_line() {
        let cases = [
            ("flaot32 x", "unknown type"),
            ("float32", "expected 'TYPE NAME'"),
            ("uint8 X=300", "out of range"),
            ("int32[0] a", "bad size"),
            ("int32[3 a", "unterminated array"),
            ("float32 Bad", "invalid field name"),
            ("int32 a\nint32 a", "duplicate field"),
            ("bool b maybe", "not a bool"),
            ("int32[2] a [1, 2, 3]", "exactly 2"),
            ("int32<=3 a", "only string"),
            ("string<=2 s \"abc\"", "longer than its bound"),
            ("uint8 lower=1", "UPPER_CASE"),
            ("Point p 3", "cannot have a default"),
        ];
        for (text, needle) in cases {
            let err = parse_message(&ty("pkg/msg/Bad"), text).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(needle), "{text:?}: {msg}");
            assert!(msg.starts_with("pkg/msg/Bad line "), "{msg}");
        }
    }
}
