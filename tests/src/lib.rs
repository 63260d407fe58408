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
//! - [`fake_kube`]: an in-process Kubernetes API server (REST + watch, bearer tokens, RBAC) for the K3s mode.
//! - [`rbac`]: RBAC as the API server's authorizer applies it (used by [`fake_kube`]).
//! - [`manifests`]: the deployment manifests rendered with `kubectl kustomize`, fed to [`fake_kube`].
//! - [`certs`]: test certificates (a CA and the leaves it signs).
//! - [`fleet`]: cloud + robot namespaces joined by veth pairs, for the bridge's multi-host tests.
//!
//! Prerequisites: a test that lacks one is skipped with a message saying what
//! it needs, except under CI (`CI=true`), where a missing prerequisite fails.

pub mod bridge_proc;
pub mod certs;
pub mod chromium;
pub mod dmi_edgecore;
pub mod edgecore;
pub mod fake_kube;
pub mod fleet;
pub mod manifests;
pub mod mosquitto;
pub mod netns;
pub mod prereq;
pub mod proc;
pub mod rbac;
pub mod robot;

use std::path::PathBuf;

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// A binary of this workspace, `target/<profile>/<name>`: beside the test executable's `deps`
/// directory (built by `cargo test --workspace`, or `cargo build -p <package>`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(std::path::Path::parent)
        .map(|p| p.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// [`workspace_bin`] when it is built, for [`prereq::require`]; `package` names the
/// `cargo build -p` that makes it.
pub fn workspace_bin_built(name: &str, package: &str) -> Result<PathBuf, String> {
    let b = workspace_bin(name);
    if b.is_file() {
        Ok(b)
    } else {
        Err(format!(
            "the {name} binary at {} (cargo build -p {package})",
            b.display()
        ))
    }
}

/// The Python test scripts (`tests/python`).
pub fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// Runs `tests/python/<script>` with the venv's Python (the caller checked
/// [`prereq::python`]); returns whether it succeeded, and its stdout and stderr.
pub fn run_python_script<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> (bool, String) {
    let py = prereq::python().expect("the caller checks prereq::python");
    let out = std::process::Command::new(py)
        .arg(python_dir().join(script))
        .args(args)
        .output()
        .expect("running the venv's python");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
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
