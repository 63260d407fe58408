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

/// `--healthcheck` (the image's HEALTHCHECK) asks `/healthz` at the config's `http.listen`:
/// exit 0 on `200`, 1 on another status or when nothing listens.
#[test]
fn healthcheck_asks_healthz() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let run = |port: u16| {
        let cfg = dir.path().join(format!("m{port}.yaml"));
        std::fs::write(
            &cfg,
            format!("backend: dmi\ndmi: {{}}\nhttp: {{listen: 0.0.0.0:{port}}}\n"),
        )
        .unwrap();
        mapper()
            .args(["--healthcheck", "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    };
    for (status, ok) in [("200 OK", true), ("503 Service Unavailable", false)] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 256];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the request ended early");
                req.extend_from_slice(&buf[..n]);
            }
            write!(s, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        let out = run(port);
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /healthz "), "{request}");
        assert_eq!(
            out.status.success(),
            ok,
            "{status}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(!run(port).status.success());
}
