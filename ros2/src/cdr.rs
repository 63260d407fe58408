//! XCDR1 (plain CDR) decode and encode of dynamic values, as ROS 2 puts
//! messages on the wire.
//!
//! A payload starts with the 4-byte encapsulation header: representation id
//! (`00 00` CDR big-endian, `00 01` CDR little-endian) and two option bytes.
//! Alignment of each primitive (1, 2, 4 or 8 bytes) is counted from the first
//! byte after the header. Strings are a `u32` length that counts the
//! terminating NUL, then the bytes and the NUL. Sequences are a `u32` count then
//! the elements; fixed arrays have no count. `wstring` is a `u32` count of
//! UTF-16 code units followed by the units (as rmw_cyclonedds writes it).
//! The encoder writes no trailing padding (as rosbags and Fast-CDR); the decoder
//! ignores trailing bytes (Cyclone pads to a multiple of 4).

use crate::msg::{ArrayKind, Layout, LayoutType, Primitive};
use crate::value::{check_len, Value, ValueError};

/// The byte order of a CDR payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endianness {
    Little,
    Big,
}

impl Endianness {
    /// The 4-byte encapsulation header for plain CDR in this byte order.
    pub fn header(self) -> [u8; 4] {
        match self {
            Self::Little => [0, 1, 0, 0],
            Self::Big => [0, 0, 0, 0],
        }
    }
}

/// A payload that is not valid CDR for its type, or a value that does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CDR {}: {kind}", if path.is_empty() { "payload".to_owned() } else { format!("at {path}") })]
pub struct CdrError {
    /// The field path where it went wrong (`header.frame_id`), empty at the root.
    pub path: String,
    pub kind: CdrErrorKind,
}

/// What went wrong in a [`CdrError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdrErrorKind {
    #[error("payload of {len} bytes is shorter than the 4-byte encapsulation header")]
    NoHeader { len: usize },
    #[error("unsupported encapsulation {id:#06x}: only plain CDR (XCDR1, 0x0000 big-endian / 0x0001 little-endian) is supported")]
    UnsupportedEncapsulation { id: u16 },
    #[error("truncated: needed {need} bytes at offset {offset}, only {have} left")]
    Truncated {
        need: usize,
        offset: usize,
        have: usize,
    },
    #[error("invalid bool byte {0:#04x} (expected 0 or 1)")]
    InvalidBool(u8),
    #[error("string is not terminated by NUL")]
    Unterminated,
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("length {len} exceeds the bound {bound}")]
    OverBound { len: usize, bound: usize },
    #[error("sequence claims {count} elements but only {remaining} bytes remain")]
    ImpossibleCount { count: usize, remaining: usize },
    #[error("{0}")]
    Value(String),
}

impl CdrError {
    fn new(kind: CdrErrorKind) -> Self {
        Self {
            path: String::new(),
            kind,
        }
    }

    fn within(mut self, seg: &str) -> Self {
        let e = ValueError {
            path: std::mem::take(&mut self.path),
            message: String::new(),
        }
        .within(seg);
        self.path = e.path;
        self
    }
}

impl From<ValueError> for CdrError {
    fn from(e: ValueError) -> Self {
        Self {
            path: e.path,
            kind: CdrErrorKind::Value(e.message),
        }
    }
}

/// Reads the encapsulation header: the byte order of the body.
pub fn encapsulation(payload: &[u8]) -> Result<Endianness, CdrError> {
    if payload.len() < 4 {
        return Err(CdrError::new(CdrErrorKind::NoHeader { len: payload.len() }));
    }
    match u16::from_be_bytes([payload[0], payload[1]]) {
        0x0000 => Ok(Endianness::Big),
        0x0001 => Ok(Endianness::Little),
        id => Err(CdrError::new(CdrErrorKind::UnsupportedEncapsulation { id })),
    }
}

/// Decodes a payload (header included) as a message of `layout`.
pub fn decode(layout: &Layout, payload: &[u8]) -> Result<Value, CdrError> {
    let endian = encapsulation(payload)?;
    decode_body(layout, &payload[4..], endian)
}

/// Decodes a body (no header) in the given byte order.
pub fn decode_body(layout: &Layout, body: &[u8], endian: Endianness) -> Result<Value, CdrError> {
    let mut r = Reader {
        buf: body,
        pos: 0,
        little: endian == Endianness::Little,
    };
    r.read_struct(layout)
}

/// Encodes a message value of `layout` (header included).
pub fn encode(layout: &Layout, value: &Value, endian: Endianness) -> Result<Vec<u8>, CdrError> {
    let mut out = Vec::with_capacity(64);
    encode_into(layout, value, endian, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `value` (header included) to `out`.
pub fn encode_into(
    layout: &Layout,
    value: &Value,
    endian: Endianness,
    out: &mut Vec<u8>,
) -> Result<(), CdrError> {
    out.extend_from_slice(&endian.header());
    let start = out.len();
    let mut w = Writer {
        out,
        start,
        little: endian == Endianness::Little,
    };
    let res = w.write_struct(layout, value);
    if res.is_err() {
        out.truncate(start - 4);
    }
    res
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    little: bool,
}

macro_rules! read_num {
    ($self:ident, $t:ty) => {{
        const N: usize = std::mem::size_of::<$t>();
        let b = $self.take_aligned(N, N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        if $self.little {
            <$t>::from_le_bytes(a)
        } else {
            <$t>::from_be_bytes(a)
        }
    }};
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take_aligned(&mut self, align: usize, n: usize) -> Result<&'a [u8], CdrError> {
        let aligned = self.pos.div_ceil(align) * align;
        let end = aligned
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| {
                CdrError::new(CdrErrorKind::Truncated {
                    need: n,
                    offset: aligned,
                    have: self.buf.len().saturating_sub(aligned),
                })
            })?;
        self.pos = end;
        Ok(&self.buf[aligned..end])
    }

    fn read_u32(&mut self) -> Result<u32, CdrError> {
        Ok(read_num!(self, u32))
    }

    fn read_prim(&mut self, p: Primitive) -> Result<Value, CdrError> {
        Ok(match p {
            Primitive::Bool => match self.take_aligned(1, 1)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(CdrError::new(CdrErrorKind::InvalidBool(b))),
            },
            Primitive::Byte | Primitive::Char | Primitive::UInt8 => {
                Value::U8(self.take_aligned(1, 1)?[0])
            }
            Primitive::Int8 => Value::I8(read_num!(self, i8)),
            Primitive::Int16 => Value::I16(read_num!(self, i16)),
            Primitive::UInt16 => Value::U16(read_num!(self, u16)),
            Primitive::Int32 => Value::I32(read_num!(self, i32)),
            Primitive::UInt32 => Value::U32(read_num!(self, u32)),
            Primitive::Int64 => Value::I64(read_num!(self, i64)),
            Primitive::UInt64 => Value::U64(read_num!(self, u64)),
            Primitive::Float32 => Value::F32(read_num!(self, f32)),
            Primitive::Float64 => Value::F64(read_num!(self, f64)),
        })
    }

    fn read_string(&mut self, bound: Option<usize>) -> Result<Value, CdrError> {
        let len = self.read_u32()? as usize;
        if len == 0 {
            // Not what ROS 2 writes for "", but some writers do.
            return Ok(Value::String(String::new()));
        }
        let bytes = self.take_aligned(1, len)?;
        let (body, nul) = bytes.split_at(len - 1);
        if nul != [0] {
            return Err(CdrError::new(CdrErrorKind::Unterminated));
        }
        let s = std::str::from_utf8(body).map_err(|_| CdrError::new(CdrErrorKind::InvalidUtf8))?;
        if let Some(b) = bound {
            let n = s.chars().count();
            if n > b {
                return Err(CdrError::new(CdrErrorKind::OverBound { len: n, bound: b }));
            }
        }
        Ok(Value::String(s.to_owned()))
    }

    fn read_wstring(&mut self, bound: Option<usize>) -> Result<Value, CdrError> {
        let n = self.read_u32()? as usize;
        self.check_count(n, 2)?;
        if let Some(b) = bound.filter(|b| n > *b) {
            return Err(CdrError::new(CdrErrorKind::OverBound { len: n, bound: b }));
        }
        let mut units = Vec::with_capacity(n);
        for _ in 0..n {
            units.push(read_num!(self, u16));
        }
        let s = String::from_utf16(&units).map_err(|_| CdrError::new(CdrErrorKind::InvalidUtf8))?;
        Ok(Value::String(s))
    }

    fn check_count(&self, count: usize, min_size: usize) -> Result<(), CdrError> {
        if count.saturating_mul(min_size) > self.remaining() {
            return Err(CdrError::new(CdrErrorKind::ImpossibleCount {
                count,
                remaining: self.remaining(),
            }));
        }
        Ok(())
    }

    fn read_elem(&mut self, ty: &LayoutType) -> Result<Value, CdrError> {
        match ty {
            LayoutType::Primitive(p) => self.read_prim(*p),
            LayoutType::String { bound } => self.read_string(*bound),
            LayoutType::WString { bound } => self.read_wstring(*bound),
            LayoutType::Struct(l) => self.read_struct(l),
        }
    }

    fn read_struct(&mut self, layout: &Layout) -> Result<Value, CdrError> {
        let mut fields = Vec::with_capacity(layout.fields.len());
        for f in &layout.fields {
            let v = match f.array {
                ArrayKind::Single => self.read_elem(&f.ty),
                ArrayKind::Fixed(n) => self.read_array(&f.ty, n),
                ArrayKind::Bounded(b) => self.read_u32().and_then(|n| {
                    let n = n as usize;
                    if n > b {
                        return Err(CdrError::new(CdrErrorKind::OverBound { len: n, bound: b }));
                    }
                    self.read_array(&f.ty, n)
                }),
                ArrayKind::Unbounded => self
                    .read_u32()
                    .and_then(|n| self.read_array(&f.ty, n as usize)),
            }
            .map_err(|e| e.within(&f.name))?;
            fields.push((f.name.clone(), v));
        }
        Ok(Value::Struct(fields))
    }

    fn read_array(&mut self, ty: &LayoutType, n: usize) -> Result<Value, CdrError> {
        let min_size = match ty {
            LayoutType::Primitive(p) => p.size(),
            LayoutType::String { .. } | LayoutType::WString { .. } => 4,
            LayoutType::Struct(_) => 1,
        };
        self.check_count(n, min_size)?;
        if let LayoutType::Primitive(p) = ty {
            if p.is_octet() {
                return Ok(Value::Bytes(self.take_aligned(1, n)?.to_vec()));
            }
        }
        let mut items = Vec::with_capacity(n);
        for i in 0..n {
            items.push(
                self.read_elem(ty)
                    .map_err(|e| e.within(&format!("[{i}]")))?,
            );
        }
        Ok(Value::Array(items))
    }
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    little: bool,
}

macro_rules! write_num {
    ($self:ident, $v:expr) => {{
        let v = $v;
        $self.align(std::mem::size_of_val(&v));
        if $self.little {
            $self.out.extend_from_slice(&v.to_le_bytes());
        } else {
            $self.out.extend_from_slice(&v.to_be_bytes());
        }
    }};
}

impl Writer<'_> {
    fn align(&mut self, n: usize) {
        let rel = self.out.len() - self.start;
        let pad = (n - rel % n) % n;
        self.out.resize(self.out.len() + pad, 0);
    }

    fn write_len(&mut self, n: usize) -> Result<(), CdrError> {
        let n = u32::try_from(n)
            .map_err(|_| CdrError::new(CdrErrorKind::Value(format!("length {n} exceeds u32"))))?;
        write_num!(self, n);
        Ok(())
    }

    fn write_prim(&mut self, p: Primitive, v: &Value) -> Result<(), CdrError> {
        match (p, v) {
            (Primitive::Bool, Value::Bool(b)) => self.out.push(u8::from(*b)),
            (Primitive::Byte | Primitive::Char | Primitive::UInt8, Value::U8(b)) => {
                self.out.push(*b)
            }
            (Primitive::Int8, Value::I8(x)) => self.out.push(x.to_ne_bytes()[0]),
            (Primitive::Int16, Value::I16(x)) => write_num!(self, *x),
            (Primitive::UInt16, Value::U16(x)) => write_num!(self, *x),
            (Primitive::Int32, Value::I32(x)) => write_num!(self, *x),
            (Primitive::UInt32, Value::U32(x)) => write_num!(self, *x),
            (Primitive::Int64, Value::I64(x)) => write_num!(self, *x),
            (Primitive::UInt64, Value::U64(x)) => write_num!(self, *x),
            (Primitive::Float32, Value::F32(x)) => write_num!(self, *x),
            (Primitive::Float64, Value::F64(x)) => write_num!(self, *x),
            // Any other numeric value is converted with a range check.
            (p, other) => {
                let conv = other.convert(p)?;
                if std::mem::discriminant(&conv) == std::mem::discriminant(other) {
                    return Err(mismatch(p.name(), other));
                }
                return self.write_prim(p, &conv);
            }
        }
        Ok(())
    }

    fn write_elem(&mut self, ty: &LayoutType, v: &Value) -> Result<(), CdrError> {
        match (ty, v) {
            (LayoutType::Primitive(p), v) => self.write_prim(*p, v),
            (LayoutType::String { bound }, Value::String(s)) => {
                check_bound(s.chars().count(), *bound)?;
                self.write_len(s.len() + 1)?;
                self.out.extend_from_slice(s.as_bytes());
                self.out.push(0);
                Ok(())
            }
            (LayoutType::WString { bound }, Value::String(s)) => {
                let units: Vec<u16> = s.encode_utf16().collect();
                check_bound(units.len(), *bound)?;
                self.write_len(units.len())?;
                for u in units {
                    write_num!(self, u);
                }
                Ok(())
            }
            (LayoutType::Struct(l), v) => self.write_struct(l, v),
            (ty, v) => Err(mismatch(&ty.to_string(), v)),
        }
    }

    fn write_struct(&mut self, layout: &Layout, value: &Value) -> Result<(), CdrError> {
        let Value::Struct(fields) = value else {
            return Err(mismatch(&layout.type_name.to_string(), value));
        };
        for (i, f) in layout.fields.iter().enumerate() {
            let v = match fields.get(i) {
                Some((n, v)) if *n == f.name => v,
                _ => fields
                    .iter()
                    .find(|(n, _)| *n == f.name)
                    .map(|(_, v)| v)
                    .ok_or_else(|| {
                        CdrError::new(CdrErrorKind::Value(format!(
                            "missing field {:?} of {}",
                            &*f.name, layout.type_name
                        )))
                    })?,
            };
            self.write_field(&f.ty, f.array, v)
                .map_err(|e| e.within(&f.name))?;
        }
        if let Some((n, _)) = fields.iter().find(|(n, _)| layout.field(n).is_none()) {
            return Err(CdrError::new(CdrErrorKind::Value(format!(
                "{} has no field {:?}",
                layout.type_name, &**n
            ))));
        }
        Ok(())
    }

    fn write_field(
        &mut self,
        ty: &LayoutType,
        array: ArrayKind,
        v: &Value,
    ) -> Result<(), CdrError> {
        if array == ArrayKind::Single {
            return self.write_elem(ty, v);
        }
        let len = match v {
            Value::Bytes(b) => b.len(),
            Value::Array(a) => a.len(),
            other => return Err(mismatch("an array", other)),
        };
        check_len(array, len)?;
        if array != ArrayKind::Fixed(len) {
            self.write_len(len)?;
        }
        match v {
            Value::Bytes(b) => match ty {
                LayoutType::Primitive(p) if p.is_octet() => self.out.extend_from_slice(b),
                LayoutType::Primitive(p) => {
                    for x in b {
                        self.write_prim(*p, &Value::U8(*x))?;
                    }
                }
                other => return Err(mismatch(&other.to_string(), v)),
            },
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.write_elem(ty, item)
                        .map_err(|e| e.within(&format!("[{i}]")))?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn check_bound(len: usize, bound: Option<usize>) -> Result<(), CdrError> {
    match bound {
        Some(b) if len > b => Err(CdrError::new(CdrErrorKind::OverBound { len, bound: b })),
        _ => Ok(()),
    }
}

fn mismatch(expected: &str, got: &Value) -> CdrError {
    CdrError::new(CdrErrorKind::Value(format!(
        "expected {expected}, got {}",
        got.kind()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Registry;

    fn enc(ty: &str, json: serde_json::Value, e: Endianness) -> Vec<u8> {
        let r = Registry::bundled();
        let l = r.layout_of(ty).unwrap();
        encode(&l, &Value::from_json(&l, &json).unwrap(), e).unwrap()
    }

    #[test]
    fn string_message_bytes() {
        assert_eq!(
            enc(
                "std_msgs/msg/String",
                serde_json::json!({"data": "hi"}),
                Endianness::Little
            ),
            [0, 1, 0, 0, 3, 0, 0, 0, b'h', b'i', 0]
        );
        assert_eq!(
            enc(
                "std_msgs/msg/String",
                serde_json::json!({"data": ""}),
                Endianness::Big
            ),
            [0, 0, 0, 0, 0, 0, 0, 1, 0]
        );
    }

    #[test]
    fn alignment_counts_from_after_the_header() {
        // Header{stamp{sec:i32,nanosec:u32}, frame_id:string "a"}, then float32 x.
        let b = enc(
            "sensor_msgs/msg/Temperature",
            serde_json::json!({"header": {"stamp": {"sec": 1, "nanosec": 2}, "frame_id": "a"}, "temperature": 1.5, "variance": 0.0}),
            Endianness::Little,
        );
        // body: sec(4) nsec(4) len(4) 'a' 0 pad(2) then f64 at body offset 16.
        assert_eq!(&b[4..18], &[1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, b'a', 0]);
        assert_eq!(b[18..20], [0, 0]);
        assert_eq!(b[20..28], 1.5f64.to_le_bytes());
        assert_eq!(b.len(), 4 + 16 + 16);
    }

    #[test]
    fn malformed_payloads_are_typed_errors() {
        let r = Registry::bundled();
        let l = r.layout_of("nav_msgs/msg/Odometry").unwrap();
        let good = encode(&l, &l.default_value(), Endianness::Little).unwrap();
        // Every truncation fails cleanly.
        for n in 0..good.len() {
            let e = decode(&l, &good[..n]).unwrap_err();
            assert!(!e.to_string().is_empty());
        }
        assert!(matches!(
            decode(&l, &[0, 1]).unwrap_err().kind,
            CdrErrorKind::NoHeader { len: 2 }
        ));
        assert!(matches!(
            decode(&l, &[0, 7, 0, 0, 1, 2]).unwrap_err().kind,
            CdrErrorKind::UnsupportedEncapsulation { id: 7 }
        ));
        // A huge sequence count must not allocate.
        let s = r.layout_of("sensor_msgs/msg/JointState").unwrap();
        let mut bad = encode(&s, &s.default_value(), Endianness::Little).unwrap();
        let name_count_at = bad.len() - 16;
        bad[name_count_at..name_count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = decode(&s, &bad).unwrap_err();
        assert_eq!(e.path, "name");
        assert!(
            matches!(e.kind, CdrErrorKind::ImpossibleCount { .. }),
            "{e}"
        );
        // Bad bool, bad UTF-8, missing NUL.
        let b = r.layout_of("std_msgs/msg/Bool").unwrap();
        assert!(matches!(
            decode(&b, &[0, 1, 0, 0, 2]).unwrap_err().kind,
            CdrErrorKind::InvalidBool(2)
        ));
        let st = r.layout_of("std_msgs/msg/String").unwrap();
        assert!(matches!(
            decode(&st, &[0, 1, 0, 0, 2, 0, 0, 0, 0xff, 0])
                .unwrap_err()
                .kind,
            CdrErrorKind::InvalidUtf8
        ));
        assert!(matches!(
            decode(&st, &[0, 1, 0, 0, 2, 0, 0, 0, b'a', b'b'])
                .unwrap_err()
                .kind,
            CdrErrorKind::Unterminated
        ));
        let e = decode(&l, &[0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0]).unwrap_err();
        assert_eq!(e.path, "header.frame_id");
        assert!(
            e.to_string()
                .starts_with("CDR at header.frame_id: truncated"),
            "{e}"
        );
    }

    #[test]
    fn encode_rejects_values_that_do_not_fit() {
        let r = Registry::bundled();
        let l = r.layout_of("geometry_msgs/msg/Twist").unwrap();
        let mut v = l.default_value();
        v.set_path(&"linear.x".parse().unwrap(), Value::String("fast".into()))
            .unwrap();
        let e = encode(&l, &v, Endianness::Little).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CDR at linear.x: expected float64, got string \"fast\""
        );
        let c = r.layout_of("sensor_msgs/msg/Imu").unwrap();
        let mut v = c.default_value();
        v.set_path(
            &"orientation_covariance".parse().unwrap(),
            Value::Array(vec![Value::F64(0.0)]),
        )
        .unwrap();
        let e = encode(&c, &v, Endianness::Big).unwrap_err();
        assert!(e.to_string().contains("exactly 9"), "{e}");
        // Integers widen into float fields, and fit-checked into narrower ones.
        let mut v = l.default_value();
        v.set_path(&"linear.x".parse().unwrap(), Value::I32(3))
            .unwrap();
        let b = encode(&l, &v, Endianness::Little).unwrap();
        assert_eq!(
            decode(&l, &b)
                .unwrap()
                .get_path(&"linear.x".parse().unwrap()),
            Some(Value::F64(3.0))
        );
    }
}
