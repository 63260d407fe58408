//! Property tests of the dynamic CDR codec over every bundled type:
//! random values round-trip in both byte orders, and random bytes never panic.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ros2::cdr::{decode, encode, Endianness};
use ros2::msg::{ArrayKind, Layout, LayoutField, LayoutType, Primitive, Registry};
use ros2::value::Value;

fn float64() -> impl Strategy<Value = f64> {
    use proptest::num::f64::*;
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO | INFINITE
}

fn float32() -> impl Strategy<Value = f32> {
    use proptest::num::f32::*;
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO | INFINITE
}

fn prim(p: Primitive) -> BoxedStrategy<Value> {
    match p {
        Primitive::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Primitive::Byte | Primitive::Char | Primitive::UInt8 => {
            any::<u8>().prop_map(Value::U8).boxed()
        }
        Primitive::Int8 => any::<i8>().prop_map(Value::I8).boxed(),
        Primitive::Int16 => any::<i16>().prop_map(Value::I16).boxed(),
        Primitive::UInt16 => any::<u16>().prop_map(Value::U16).boxed(),
        Primitive::Int32 => any::<i32>().prop_map(Value::I32).boxed(),
        Primitive::UInt32 => any::<u32>().prop_map(Value::U32).boxed(),
        Primitive::Int64 => any::<i64>().prop_map(Value::I64).boxed(),
        Primitive::UInt64 => any::<u64>().prop_map(Value::U64).boxed(),
        Primitive::Float32 => float32().prop_map(Value::F32).boxed(),
        Primitive::Float64 => float64().prop_map(Value::F64).boxed(),
    }
}

fn elem(ty: &LayoutType) -> BoxedStrategy<Value> {
    match ty {
        LayoutType::Primitive(p) => prim(*p),
        LayoutType::String { bound } | LayoutType::WString { bound } => {
            let max = bound.unwrap_or(8).min(8);
            proptest::string::string_regex(&format!("\\PC{{0,{max}}}"))
                .expect("regex")
                .prop_map(Value::String)
                .boxed()
        }
        LayoutType::Struct(l) => message(l),
    }
}

fn field(f: &LayoutField) -> BoxedStrategy<Value> {
    let (lo, hi) = match f.array {
        ArrayKind::Single => return elem(&f.ty),
        ArrayKind::Fixed(n) => (n, n),
        ArrayKind::Bounded(b) => (0, b.min(4)),
        ArrayKind::Unbounded => (0, 4),
    };
    match f.ty {
        LayoutType::Primitive(p) if p.is_octet() => proptest::collection::vec(any::<u8>(), lo..=hi)
            .prop_map(Value::Bytes)
            .boxed(),
        _ => proptest::collection::vec(elem(&f.ty), lo..=hi)
            .prop_map(Value::Array)
            .boxed(),
    }
}

fn message(l: &Arc<Layout>) -> BoxedStrategy<Value> {
    let names: Vec<Arc<str>> = l.fields.iter().map(|f| f.name.clone()).collect();
    let fields: Vec<BoxedStrategy<Value>> = l.fields.iter().map(field).collect();
    fields
        .prop_map(move |vals| Value::Struct(names.iter().cloned().zip(vals).collect()))
        .boxed()
}

#[test]
fn random_values_round_trip_for_every_bundled_type() {
    let reg = Registry::bundled();
    let mut types = 0;
    for t in reg.type_names() {
        let layout = reg.layout(t).unwrap();
        let mut runner = TestRunner::new(Config {
            cases: 48,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&message(&layout), |v| {
                for e in [Endianness::Little, Endianness::Big] {
                    let bytes = encode(&layout, &v, e)
                        .map_err(|err| TestCaseError::fail(format!("{t}: {err}")))?;
                    let back = decode(&layout, &bytes)
                        .map_err(|err| TestCaseError::fail(format!("{t}: {err}")))?;
                    prop_assert_eq!(&back, &v, "{} {:?}", t, e);
                }
                // The JSON form round-trips through the typed parser too.
                let j = Value::from_json(&layout, &v.to_json())
                    .map_err(|err| TestCaseError::fail(err.to_string()))?;
                prop_assert_eq!(&j, &v);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        types += 1;
    }
    assert!(types >= 100, "{types}");
}

#[test]
fn garbage_never_panics() {
    let reg = Registry::bundled();
    for t in reg.type_names() {
        let layout = reg.layout(t).unwrap();
        let mut runner = TestRunner::new(Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        });
        let garbage = (
            prop_oneof![Just(0u8), Just(1u8)],
            proptest::collection::vec(any::<u8>(), 0..200),
        );
        runner
            .run(&garbage, |(e, body)| {
                let mut p = vec![0, e, 0, 0];
                p.extend(body);
                let _ = decode(&layout, &p);
                Ok(())
            })
            .unwrap();
        // A valid payload cut anywhere is an error or a value, never a panic.
        let good = encode(&layout, &layout.default_value(), Endianness::Little).unwrap();
        for cut in 0..good.len() {
            let _ = decode(&layout, &good[..cut]);
        }
    }
}
