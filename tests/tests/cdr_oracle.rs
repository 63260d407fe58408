//! CDR oracle: for every bundled type, random values generated in Python and
//! serialized by rosbags (an independent implementation) decode to the same
//! values in Rust, and Rust's encoding is byte-identical, in both byte orders.
//! Also checks the bundled `.msg` files against rosbags' own ROS 2 Jazzy
//! definitions.

use std::collections::BTreeSet;
use std::process::Command;

use integration_tests::prereq::{python, require};
use integration_tests::{interfaces_dir, out_dir, python_dir};
use ros2::cdr::{decode, encode, Endianness};
use ros2::msg::Registry;
use ros2::value::Value;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn rosbags_bytes_match_for_every_bundled_type() {
    let Some(py) = require("python venv", python()) else {
        return;
    };
    let out = out_dir("cdr_oracle").join("cases.json");
    let status = Command::new(&py)
        .arg(python_dir().join("oracle.py"))
        .args([
            "gen",
            "--seed",
            "20261202",
            "--per-type",
            "6",
            "--strict",
            "--interfaces",
        ])
        .arg(interfaces_dir())
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run oracle.py");
    assert!(status.success(), "oracle.py failed");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let reg = Registry::bundled();
    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();
    let cases = doc["cases"].as_array().expect("cases");
    for (i, case) in cases.iter().enumerate() {
        let ty = case["type"].as_str().unwrap();
        covered.insert(ty.to_owned());
        let layout = match reg.layout_of(ty) {
            Ok(l) => l,
            Err(e) => {
                failures.push(format!("case {i} {ty}: {e}"));
                continue;
            }
        };
        let expected = match Value::from_json(&layout, &case["value"]) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!(
                    "case {i} {ty}: oracle value does not fit our layout: {e}"
                ));
                continue;
            }
        };
        for (key, endian) in [("le", Endianness::Little), ("be", Endianness::Big)] {
            let Some(h) = case[key].as_str() else {
                continue;
            };
            let bytes = hex(h);
            match decode(&layout, &bytes) {
                Ok(v) if v.same(&expected) => {}
                Ok(v) => failures.push(format!(
                    "case {i} {ty} {key}: decoded {v}, expected {expected}"
                )),
                Err(e) => failures.push(format!("case {i} {ty} {key}: decode failed: {e}")),
            }
            match encode(&layout, &expected, endian) {
                Ok(ours) if ours == bytes => {}
                Ok(ours) => failures.push(format!(
                    "case {i} {ty} {key}: encoding differs\n  rosbags {h}\n  ours    {}",
                    ours.iter().map(|b| format!("{b:02x}")).collect::<String>()
                )),
                Err(e) => failures.push(format!("case {i} {ty} {key}: encode failed: {e}")),
            }
        }
    }
    let bundled: BTreeSet<String> = reg.type_names().map(|t| t.to_string()).collect();
    let missing: Vec<_> = bundled.difference(&covered).collect();
    eprintln!(
        "oracle: {} cases over {} types, {} failures",
        cases.len(),
        covered.len(),
        failures.len()
    );
    assert!(
        missing.is_empty(),
        "bundled types without oracle cases: {missing:?}"
    );
    assert!(
        failures.is_empty(),
        "{} oracle failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn bundled_definitions_match_rosbags_jazzy() {
    let Some(py) = require("python venv", python()) else {
        return;
    };
    let out = Command::new(&py)
        .arg(python_dir().join("check_definitions.py"))
        .arg(interfaces_dir())
        .output()
        .expect("run check_definitions.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check_definitions.py failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" 0 failed"), "{text}");
}
