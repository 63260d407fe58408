//! The `mapper` binary's command line: the documented default config, and
//! configuration errors that name the key, the value and what was expected.

use std::process::Command;

fn mapper() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mapper"))
}

#[test]
fn prints_the_documented_default_config() {
    let out = mapper().arg("--print-default-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("backend: dmi") && text.contains("collectCycleMs: 1000"),
        "{text}"
    );
}

#[test]
fn check_accepts_good_and_names_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "backend: dmi\ndmi: {}\n").unwrap();
    let out = mapper()
        .args(["--check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "backend: mqtt\nmqtt: {}\nreporting: {livenessCycles: 0}\n",
    )
    .unwrap();
    let out = mapper()
        .args(["--check", "--config"])
        .arg(&bad)
        .env("NODE_NAME", "edge-1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reporting.livenessCycles: \"0\" is invalid: expected at least 1"),
        "{err}"
    );

    let out = mapper()
        .args(["--check", "--config"])
        .arg(&good)
        .env("ROS_DOMAIN_ID", "300")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("ros.domainId: \"300\" is invalid: expected 0..=232"),
        "{err}"
    );

    let out = mapper()
        .args(["--check", "--config"])
        .arg(dir.path().join("missing.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
}
