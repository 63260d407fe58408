//! Runs the real demo binary for a short non-interactive run and checks its summary.

use std::process::Command;

#[test]
fn a_short_run_passes_every_check() {
    // A domain base of its own (40 is the default; 3 domains per run), per process.
    let base = 60 + (std::process::id() % 50) as u16 * 3;
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--duration", "15", "--domain-base", &base.to_string()])
        .args(["--hub-status", "127.0.0.1:0"])
        .env("RUST_LOG", "error,rustdds=off")
        .output()
        .unwrap_or_else(|e| panic!("cannot run the demo: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(out.status.success(), "exit {:?}\n{context}", out.status);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("hub status page: http://"))
            .count(),
        1,
        "{context}"
    );
    for n in 1..=4 {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("check {n}: PASS"))),
            "check {n} did not pass\n{context}"
        );
    }
    assert!(
        stdout.contains("4 of 4 checks passed: ALL PASS"),
        "{context}"
    );
}
