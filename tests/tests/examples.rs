//! The example Device/DeviceModel the project ships: they parse into the
//! mapper's types, every property resolves, and they validate against
//! KubeEdge's real CRD schemas (`../shared/kubeedge/crds`), as do KubeEdge's
//! own examples; a broken object is caught (the validator can fail).

use integration_tests::prereq::{python, require, shared_kubeedge};
use integration_tests::{run_python_script, workspace_root};
use mapper_core::model::{Device, DeviceModel};
use mapper_core::visitor::{plan_device, PlanDefaults};
use ros2::msg::Registry;

fn example() -> std::path::PathBuf {
    workspace_root().join("manifests/examples/robot/ros2-mobile-robot.yaml")
}

#[test]
fn example_robot_parses_and_every_property_resolves() {
    let text = std::fs::read_to_string(example()).unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let model: DeviceModel = serde_yaml::from_value(docs[0].clone()).unwrap();
    let device: Device = serde_yaml::from_value(docs[1].clone()).unwrap();
    let (plan, errors) = plan_device(
        &device,
        Some(&model),
        &Registry::bundled(),
        &PlanDefaults::default(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    let plan = plan.unwrap();
    assert_eq!(plan.properties.len(), 7);
    for p in &plan.properties {
        assert!(p.model.is_some(), "{} has no DeviceModel property", p.name);
    }
}

fn validate(objects: &[std::path::PathBuf]) -> (bool, String) {
    let crds = shared_kubeedge()
        .expect("checked by the caller")
        .join("crds");
    validate_with(&crds, objects)
}

/// Validates `objects` against the CRDs in `crds` (a directory or file).
fn validate_with(crds: &std::path::Path, objects: &[std::path::PathBuf]) -> (bool, String) {
    let mut args = vec![
        std::ffi::OsStr::new("--crds"),
        crds.as_os_str(),
        "--objects".as_ref(),
    ];
    args.extend(objects.iter().map(|o| o.as_os_str()));
    run_python_script("validate_crd.py", &args)
}

#[test]
fn examples_validate_against_kubeedge_crds() {
    let (Some(_), Some(shared)) = (
        require("python venv", python()),
        require("../shared/kubeedge", shared_kubeedge()),
    ) else {
        return;
    };
    let mut objects = vec![example()];
    for f in [
        "new-counter-demo_counter-instance.yaml",
        "new-counter-demo_counter-model.yaml",
    ] {
        objects.push(shared.join("examples").join(f));
    }
    let (ok, out) = validate(&objects);
    assert!(ok, "{out}");
    assert!(
        out.contains("ros2-mobile-robot.yaml#1 Device robot1 against devices_v1beta1_device.yaml"),
        "{out}"
    );

    // The validator can fail: a wrong enum value and an unknown field.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replacen("type: DOUBLE", "type: REAL", 1)
        .replacen(
            "  deviceModelRef:",
            "  deviceModelReference: {name: x}\n  deviceModelRef:",
            1,
        );
    std::fs::write(&bad, text).unwrap();
    let (ok, out) = validate(&[bad]);
    assert!(!ok, "{out}");
    assert!(out.contains("'REAL' is not one of"), "{out}");
    assert!(out.contains("deviceModelReference"), "{out}");
}

/// The CRDs the bundle generates (`manifests/crds`, from `mapper_core::model`) accept the
/// bundle's example and KubeEdge's own examples, and reject a malformed Device.
#[test]
fn examples_validate_against_the_generated_crds() {
    if require("python venv", python()).is_none() {
        return;
    }
    let crds = workspace_root().join("manifests/crds");
    let mut objects = vec![example()];
    // KubeEdge's own examples when ../shared is there (CI); the bundle's example alone elsewhere.
    if let Some(shared) = require("../shared/kubeedge", shared_kubeedge()) {
        for f in [
            "new-counter-demo_counter-instance.yaml",
            "new-counter-demo_counter-model.yaml",
        ] {
            objects.push(shared.join("examples").join(f));
        }
    }
    let (ok, out) = validate_with(&crds, &objects);
    assert!(ok, "{out}");
    assert!(
        out.contains("Device robot1 against devices.kubeedge.io_devices.yaml"),
        "{out}"
    );
    assert!(out.contains("DeviceModel"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(example()).unwrap().replacen(
        "  nodeName:",
        "  nodeName: [1, 2]\n  x-old-nodeName:",
        1,
    );
    std::fs::write(&bad, text).unwrap();
    let (ok, out) = validate_with(&crds, &[bad]);
    assert!(!ok, "a list as nodeName passed the generated schema: {out}");
}
