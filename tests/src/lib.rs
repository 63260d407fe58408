//! Harness for the end-to-end tests: real peers (Cyclone DDS and rosbags in a
//! Python venv, Mosquitto), network namespaces made by the test, and the
//! probe binaries that drive the project's own code.
//!
//! # Layout
//! - [`prereq`]: what a test needs (root, `ip`, the venv) and skip-or-fail rules.
//! - [`netns`]: a network namespace with multicast on `lo`, deleted on drop.
//! - [`proc`]: child processes killed on drop, with line readers for their output.
//! - [`mosquitto`]: a real Mosquitto broker on a free loopback port.
//! - [`edgecore`]: an edgecore stand-in for the MQTT eventbus (devicetwin rules).
//! - [`dmi_edgecore`]: an edgecore stand-in for DMI gRPC (`DeviceManagerService`).
//! - [`robot`]: the mapper end to end: a Cyclone DDS robot, the mapper binary, the robot's Device.
//! - [`fake_kube`]: an in-process Kubernetes API server (REST + watch) for the K3s mode.
//! - [`fleet`]: cloud + robot namespaces joined by veth pairs, for the bridge's multi-host tests.
//!
//! Prerequisites: a test that lacks one is skipped with a message saying what
//! it needs, except under CI (`CI=true`), where a missing prerequisite fails.

pub mod bridge_proc;
pub mod dmi_edgecore;
pub mod edgecore;
pub mod fake_kube;
pub mod fleet;
pub mod mosquitto;
pub mod netns;
pub mod prereq;
pub mod proc;
pub mod robot;

use std::path::PathBuf;

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The Python test scripts (`tests/python`).
pub fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// The bundled interface definitions (`ros2/interfaces`).
pub fn interfaces_dir() -> PathBuf {
    workspace_root().join("ros2").join("interfaces")
}

/// A directory for this test's output files (`tests/out/<name>`), kept after the run.
pub fn out_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("out")
        .join(name);
    let _ = std::fs::create_dir_all(&d);
    d
}

/// Logs to the test output (once per process).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rustdds=warn".into()),
        )
        .with_test_writer()
        .try_init();
}
