//! Prerequisites of the end-to-end tests, and the skip-or-fail rule.

use std::path::PathBuf;
use std::process::Command;

/// Whether this run is CI (`CI=true`), where every prerequisite must be met.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Returns the value, or skips the test (prints why and returns `None`);
/// under CI a missing prerequisite is a failure.
pub fn require<T>(what: &str, r: Result<T, String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(why) if in_ci() => panic!("prerequisite missing under CI: {what}: {why}"),
        Err(why) => {
            eprintln!("SKIPPED: needs {what}: {why}");
            None
        }
    }
}

/// Root (network namespaces) and the `ip` tool.
pub fn netns_capable() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("");
    if uid != "0" {
        return Err(
            "root, to create network namespaces (run the README test command as root)".into(),
        );
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("the `ip` tool from iproute2 (apt-get install iproute2)".into()),
    }
}

/// The harness venv's Python with `cyclonedds` and `rosbags` importable:
/// `$KE_ROS2_PYTHON`, else `<workspace>/.venv-test/bin/python` (made by `scripts/test`).
pub fn python() -> Result<PathBuf, String> {
    let py = std::env::var_os("KE_ROS2_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join(".venv-test/bin/python"));
    if !py.exists() {
        return Err(format!(
            "a Python venv with cyclonedds and rosbags at {} (scripts/test creates it, or set KE_ROS2_PYTHON)",
            py.display()
        ));
    }
    let ok = Command::new(&py)
        .args(["-c", "import cyclonedds, rosbags"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        return Err(format!("{} cannot import cyclonedds and rosbags (pip install -r tests/python/requirements.txt)", py.display()));
    }
    Ok(py)
}

/// `../shared/kubeedge` beside the project (KubeEdge's reference CRDs and
/// examples): present in CI and on the developers' machines, not on a user's.
pub fn shared_kubeedge() -> Result<PathBuf, String> {
    let p = crate::workspace_root()
        .join("..")
        .join("shared")
        .join("kubeedge");
    if p.join("crds").is_dir() {
        Ok(p)
    } else {
        Err(format!(
            "{} (KubeEdge's reference CRDs, present beside the project in CI)",
            p.display()
        ))
    }
}
