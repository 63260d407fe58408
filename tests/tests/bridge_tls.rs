//! The `bridge` binary over TLS (rustls) with client certificates, across fleet namespaces:
//! robot1's edge presents a certificate signed by the hub's client CA and relays a topic;
//! robot2's edge has none and is refused at the TLS handshake, with a logged reason.
//! Certificates are made by the test (rcgen): a server CA signing the hub's certificate for
//! `hub.fleet.test`, and a client CA signing robot1's.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use integration_tests::bridge_proc::{bridge_built, start_bridge, start_hub};
use integration_tests::certs::{ca, issue};
use integration_tests::fleet::{fleet_capable, seq_report, seqpeer, Fleet, HUB_NAME};
use integration_tests::prereq::{python, require};

const T: Duration = Duration::from_secs(60);
const PORT: u16 = 17547;

fn write(dir: &Path, name: &str, text: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p.display().to_string())
}

#[test]
fn tls_with_client_certificates() {
    if require("root, iproute2 and nftables", fleet_capable()).is_none() {
        return;
    }
    let Some(py) = require("python venv", python()) else {
        return;
    };
    if require("the bridge binary", bridge_built()).is_none() {
        return;
    }
    integration_tests::init_tracing();
    let dir = integration_tests::out_dir("bridge_tls");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("output dir");
    if let Err(e) = run(&dir, &py) {
        let mut logs = String::new();
        for f in ["hub.log", "edge-robot1.log", "edge-robot2.log"] {
            logs.push_str(&format!(
                "==== {f} ====\n{}\n",
                std::fs::read_to_string(dir.join(f)).unwrap_or_default()
            ));
        }
        panic!("tls test failed: {e:#}\n{logs}");
    }
}

fn run(dir: &Path, py: &Path) -> Result<()> {
    let fleet = Fleet::new(&["robot1", "robot2"])?;
    let (server_ca, server_ca_key) = ca("fleet hub CA")?;
    let (client_ca, client_ca_key) = ca("fleet robots CA")?;
    let hub_cert = issue(&[HUB_NAME], &server_ca, &server_ca_key)?;
    let robot1 = issue(&["robot1"], &client_ca, &client_ca_key)?;
    let server_ca_file = write(dir, "server-ca.pem", &server_ca.pem())?;
    let client_ca_file = write(dir, "client-ca.pem", &client_ca.pem())?;
    let hub_cert_file = write(dir, "hub.pem", &hub_cert.cert)?;
    let hub_key_file = write(dir, "hub-key.pem", &hub_cert.key)?;
    let r1_cert = write(dir, "robot1.pem", &robot1.cert)?;
    let r1_key = write(dir, "robot1-key.pem", &robot1.key)?;

    let hub_yaml = format!(
        "listen: 0.0.0.0:{PORT}\n\
         tls: {{ cert_file: {hub_cert_file}, key_file: {hub_key_file}, client_ca_file: {client_ca_file} }}\n\
         dds: {{ domain_id: 1, only_networks: [127.0.0.1] }}\n\
         limits: {{ heartbeat_ms: 1000 }}\n\
         http: {{ listen: null }}\n\
         robots:\n  - {{ robot: robot1, namespace: /robot1, token: tok-robot1 }}\n  - {{ robot: robot2, namespace: /robot2, token: tok-robot2 }}\n"
    );
    let mut hub = start_hub(&fleet, &hub_yaml, dir)?;
    let edge = |robot: &str, client: &str| {
        format!(
            "robot: {robot}\n\
             dds: {{ domain_id: 0, only_networks: [127.0.0.1] }}\n\
             http: {{ listen: null }}\n\
             upstreams:\n  - name: cloud\n    address: {HUB_NAME}:{PORT}\n    token: tok-{robot}\n\
             \x20   reconnect: {{ initial_ms: 200, max_ms: 2000 }}\n\
             \x20   tls: {{ ca_file: {server_ca_file}{client} }}\n\
             \x20   up: {{ allow: [/seq] }}\n"
        )
    };
    let r1_yaml = edge(
        "robot1",
        &format!(", client_cert_file: {r1_cert}, client_key_file: {r1_key}"),
    );
    let r2_yaml = edge("robot2", "");
    let ns1 = &fleet.robot("robot1").ns;
    let ns2 = &fleet.robot("robot2").ns;
    let mut e1 = start_bridge(ns1, "edge", "edge-robot1", &r1_yaml, dir, &[])?;
    let e2 = start_bridge(ns2, "edge", "edge-robot2", &r2_yaml, dir, &[])?;
    e1.wait_log("session established", T)
        .context("robot1 (with a client certificate) never connected")?;
    hub.wait_log("TLS handshake failed", T)
        .context("the hub did not log robot2's refused TLS handshake")?;
    ensure!(
        !e2.log().contains("session established"),
        "robot2 without a client certificate got a session"
    );

    // Data flows over the TLS link.
    let sub = seqpeer(
        fleet.cloud(),
        py,
        &[
            "sub",
            "--topic",
            "rt/robot1/seq",
            "--expect",
            "20",
            "--timeout",
            "60",
            "--reliable",
            "--domain",
            "1",
        ],
        &[],
    )?;
    integration_tests::fleet::wait_line(&sub, |l| l.contains("ready"), T)?;
    let _publ = seqpeer(
        ns1,
        py,
        &[
            "pub",
            "--topic",
            "rt/seq",
            "--rate",
            "20",
            "--count",
            "20",
            "--reliable",
            "--wait-readers",
            "1",
            "--settle",
            "3",
            "--domain",
            "0",
            "--linger",
            "5",
        ],
        &[],
    )?;
    let report = seq_report(&sub, T)?;
    ensure!(report.is_clean(20), "over TLS: {report:?}");
    ensure!(
        !e2.log().contains("session established"),
        "robot2 without a client certificate got a session later"
    );
    Ok(())
}
