//! The `bridge` binary's command line: `--check` reads the tokens the config names, and
//! `--healthcheck` (the image's health command) asks the running bridge's `/healthz`.

use std::io::{Read, Write};
use std::process::{Command, Output};

fn bridge(args: &[&str], config: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("BRIDGE_ROBOT")
        .output()
        .unwrap()
}

#[test]
fn check_reads_every_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("robot1");
    let hub = dir.path().join("hub.yaml");
    std::fs::write(
        &hub,
        format!(
            "robots:\n  - robot: robot1\n    namespace: /robot1\n    token_file: {}\n",
            token.display()
        ),
    )
    .unwrap();
    let out = bridge(&["hub", "--check"], &hub);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("robots[robot=robot1].token_file") || err.contains("token_file"),
        "{err}"
    );
    assert!(err.contains("cannot read"), "{err}");

    std::fs::write(&token, "s3cret\n").unwrap();
    let out = bridge(&["hub", "--check"], &hub);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn healthcheck_asks_healthz() {
    let dir = tempfile::tempdir().unwrap();
    for (status, ok) in [("200 OK", true), ("503 Service Unavailable", false)] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hub = dir.path().join(format!("hub{port}.yaml"));
        std::fs::write(
            &hub,
            format!("robots: []\nhttp: {{listen: 0.0.0.0:{port}}}\n"),
        )
        .unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let (mut req, mut buf) = (Vec::new(), [0u8; 256]);
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the request ended early");
                req.extend_from_slice(&buf[..n]);
            }
            write!(s, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        let out = bridge(&["hub", "--healthcheck"], &hub);
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /healthz "), "{request}");
        assert_eq!(
            out.status.success(),
            ok,
            "{status}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
