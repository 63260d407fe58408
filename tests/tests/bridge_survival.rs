//! The bridge survives a hostile world: link cuts (store-and-forward keeps
//! every message, exactly once and in order), a hub restarted on a new
//! address (edges re-resolve the hub's name and every route comes back
//! without restarting them), and bad peers on the hub's port (refused with
//! the right REJECT, logged, while a good robot keeps relaying).
//!
//! Fleet: cloud (hub, DDS domain 1) + robot1 + robot2 (edges, DDS domain 0),
//! see `integration_tests::fleet`. Needs root, iproute2, nftables, curl, the
//! harness venv and the `bridge` binary (`cargo build -p bridge`).
//! Bridge logs: `tests/out/bridge_survival/<test>/*.log`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use integration_tests::bridge_proc::{
    bridge_built, link, link_connected, routes_matching, start_bridge, start_edge, start_hub,
    BridgeProc,
};
use integration_tests::fleet::{
    fleet_capable, seq_report, seqpeer, spawn_in, wait_line, Fleet, HUB_NAME,
};
use integration_tests::netns::Netns;
use integration_tests::prereq::{python, require};
use integration_tests::proc::Proc;
use serde_json::Value;

/// Generous timeout for a single wait on a loaded 2-core machine.
const T: Duration = Duration::from_secs(60);
const HUB_PORT: u16 = 7447;
const ROBOT_DOMAIN: &str = "0";
const CLOUD_DOMAIN: &str = "1";
const TOKEN1: &str = "secret-robot1-token";
const TOKEN2: &str = "secret-robot2-token";
/// The upstream name of every edge here.
const UP: &str = "cloud";

fn setup(robots: &[&str], test: &str) -> Option<(Fleet, PathBuf, PathBuf)> {
    require("root, iproute2 and nftables", fleet_capable())?;
    let py = require("python venv", python())?;
    require("the bridge binary", bridge_built())?;
    integration_tests::init_tracing();
    let dir = integration_tests::out_dir(&format!("bridge_survival/{test}"));
    // Logs are appended: start from an empty directory.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the output dir");
    let fleet = Fleet::new(robots).expect("create the fleet");
    Some((fleet, py, dir))
}

/// The hub config: robot1 and robot2, DDS domain 1 on lo, fast heartbeats,
/// HTTP on 127.0.0.1:9181 in the cloud namespace.
fn hub_config() -> String {
    format!(
        "listen: 0.0.0.0:{HUB_PORT}
dds: {{ domain_id: {CLOUD_DOMAIN}, only_networks: [127.0.0.1] }}
robots:
  - {{ robot: robot1, namespace: /robot1, token: {TOKEN1} }}
  - {{ robot: robot2, namespace: /robot2, token: {TOKEN2} }}
limits: {{ heartbeat_ms: 1000 }}
http: {{ listen: 127.0.0.1:9181 }}
"
    )
}

/// An edge config: one upstream `cloud` to `address`, DDS domain 0 on lo,
/// fast reconnects, HTTP on 127.0.0.1:9180 in the robot's namespace.
/// `up_topics` is the YAML flow list of `up.topics` entries.
fn edge_config(
    robot: &str,
    address: &str,
    token: &str,
    up: &[&str],
    down: &[&str],
    up_topics: &str,
) -> String {
    let list = |v: &[&str]| format!("[{}]", v.join(", "));
    format!(
        "robot: {robot}
dds: {{ domain_id: {ROBOT_DOMAIN}, only_networks: [127.0.0.1] }}
upstreams:
  - name: {UP}
    address: {address}
    token: {token}
    reconnect: {{ initial_ms: 200, max_ms: 2000 }}
    up:
      allow: {}
      topics: {up_topics}
    down:
      allow: {}
http: {{ listen: 127.0.0.1:9180 }}
",
        list(up),
        list(down)
    )
}

/// The `cloud` link's `(state, reconnects, session)` in an edge's /status.
fn up_link(s: &Value) -> (String, u64, String) {
    let l = link(s, UP).cloned().unwrap_or(Value::Null);
    (
        l["state"].as_str().unwrap_or("").to_owned(),
        l["reconnects"].as_u64().unwrap_or(0),
        l["session"].as_str().unwrap_or("").to_owned(),
    )
}

/// Sum of `field` over the routes whose text contains `needle`.
fn route_sum(s: &Value, needle: &str, field: &str) -> u64 {
    routes_matching(s, needle)
        .iter()
        .filter_map(|r| r[field].as_u64())
        .sum()
}

/// `link-proxy` in `ns` on 127.0.0.1:`port` to the hub, once listening.
fn start_proxy(ns: &Netns, port: u16) -> Result<Proc> {
    let listen = format!("127.0.0.1:{port}");
    let connect = format!("{HUB_NAME}:{HUB_PORT}");
    let p = spawn_in(
        ns,
        Path::new(env!("CARGO_BIN_EXE_link-proxy")),
        &["--listen", &listen, "--connect", &connect],
        &[],
    )?;
    let l = wait_line(&p, |l| l.starts_with("listening "), T)?;
    ensure!(l == format!("listening {listen}"), "link-proxy said {l:?}");
    Ok(p)
}

/// Panics with `msg`, the error and the logs of `bridges`.
fn fail(msg: &str, e: impl std::fmt::Display, bridges: &[&BridgeProc]) -> ! {
    let logs: Vec<String> = bridges.iter().map(|b| b.log_dump()).collect();
    panic!("{msg}: {e}\n{}", logs.join("\n"));
}

/// Unwraps, or fails with the bridges' logs.
trait OrLogs<T> {
    fn or_logs(self, msg: &str, bridges: &[&BridgeProc]) -> T;
}

impl<T, E: std::fmt::Display> OrLogs<T> for std::result::Result<T, E> {
    fn or_logs(self, msg: &str, bridges: &[&BridgeProc]) -> T {
        match self {
            Ok(v) => v,
            Err(e) => fail(msg, format!("{e:#}"), bridges),
        }
    }
}

/// Messages robot1 publishes on `/seq` during the link cuts (100 Hz).
const CUT_COUNT: u64 = 6000;
/// Messages robot2 publishes meanwhile (20 Hz).
const R2_COUNT: u64 = 1000;
/// Proxy kills (each followed by a wait for a new session).
const PROXY_CUTS: usize = 20;
/// Veth down/up flaps, interleaved with the proxy kills.
const FLAPS: usize = 4;

/// A cloud `seqpeer.py sub` on `topic` (reliable, keep-all), once ready.
fn cloud_seq_sub(
    fleet: &Fleet,
    py: &Path,
    topic: &str,
    expect: u64,
    timeout_s: u64,
) -> Result<Proc> {
    let expect = expect.to_string();
    let timeout = timeout_s.to_string();
    let p = seqpeer(
        fleet.cloud(),
        py,
        &[
            "sub",
            "--topic",
            topic,
            "--expect",
            &expect,
            "--timeout",
            &timeout,
            "--reliable",
            "--keep-all",
            "--domain",
            CLOUD_DOMAIN,
        ],
        &[],
    )?;
    wait_line(&p, |l| l == "ready", T)?;
    Ok(p)
}

/// A robot-side `seqpeer.py pub` on `rt/seq` (reliable, keep-all), waiting
/// for the edge's reader. `count = 0` makes a silent "primer" publisher
/// that only creates the route and stays (lingers) for `linger_s`.
fn robot_seq_pub(ns: &Netns, py: &Path, count: u64, rate: u32, linger_s: u32) -> Result<Proc> {
    let (count, rate, linger) = (count.to_string(), rate.to_string(), linger_s.to_string());
    seqpeer(
        ns,
        py,
        &[
            "pub",
            "--topic",
            "rt/seq",
            "--count",
            &count,
            "--rate",
            &rate,
            "--reliable",
            "--keep-all",
            "--wait-readers",
            "1",
            "--match-timeout",
            "60",
            "--linger",
            &linger,
            "--domain",
            ROBOT_DOMAIN,
        ],
        &[],
    )
}

/// robot1 relays `/seq` (100 Hz, store-and-forward) through a link-proxy
/// that is killed 20 times, with veth flaps in between; the cloud gets every
/// message exactly once and in order, robot2's link is never disturbed.
#[test]
fn link_cuts_lose_nothing() {
    let Some((fleet, py, dir)) = setup(&["robot1", "robot2"], "link_cuts") else {
        return;
    };
    let ns1 = &fleet.robot("robot1").ns;
    let ns2 = &fleet.robot("robot2").ns;
    let hub = start_hub(&fleet, &hub_config(), &dir).expect("start the hub");
    let mut proxy = start_proxy(ns1, 7000).expect("link-proxy");
    // Deep history on the hub's writer and a deep outbox: a burst of a few
    // hundred messages after an outage must not overflow either.
    let sf = "[{ match: /seq, store_forward: true, depth: 10000, outbox_messages: 10000 }]";
    let mut edge1 = start_edge(
        ns1,
        &edge_config("robot1", "127.0.0.1:7000", TOKEN1, &["/seq"], &[], sf),
        &dir,
    )
    .or_logs("start edge robot1", &[&hub]);
    let mut edge2 = start_edge(
        ns2,
        &edge_config(
            "robot2",
            &format!("{HUB_NAME}:{HUB_PORT}"),
            TOKEN2,
            &["/seq"],
            &[],
            "[{ match: /seq, store_forward: true, depth: 10000 }]",
        ),
        &dir,
    )
    .or_logs("start edge robot2", &[&hub]);
    for e in [&mut edge1, &mut edge2] {
        e.wait_status(|s| link_connected(s, UP), T)
            .or_logs("edge connected", &[&hub]);
    }

    let sub1 = cloud_seq_sub(&fleet, &py, "rt/robot1/seq", CUT_COUNT, 300).expect("sub robot1");
    let sub2 = cloud_seq_sub(&fleet, &py, "rt/robot2/seq", R2_COUNT, 300).expect("sub robot2");
    // Silent primers make the routes (and the hub's writers) before the
    // first counted sample, so nothing is lost to DDS discovery.
    let _primer1 = robot_seq_pub(ns1, &py, 0, 1, 600).expect("primer robot1");
    let _primer2 = robot_seq_pub(ns2, &py, 0, 1, 600).expect("primer robot2");
    sub1.wait_stderr("MATCHED 1", T).or_logs(
        "cloud sub matched the hub's /robot1/seq writer",
        &[&hub, &edge1],
    );
    sub2.wait_stderr("MATCHED 1", T).or_logs(
        "cloud sub matched the hub's /robot2/seq writer",
        &[&hub, &edge2],
    );

    let pub1 = robot_seq_pub(ns1, &py, CUT_COUNT, 100, 60).expect("pub robot1");
    let pub2 = robot_seq_pub(ns2, &py, R2_COUNT, 20, 60).expect("pub robot2");
    pub1.wait_stderr("MATCHED 1", T)
        .expect("pub robot1 matched");
    // Let some messages flow before the first cut.
    edge1
        .wait_status(|s| route_sum(s, "/seq", "messages") >= 100, T)
        .or_logs("robot1 /seq flowing", &[&hub]);

    let started = Instant::now();
    let mut cuts_while_publishing = 0;
    let total = PROXY_CUTS + FLAPS;
    for i in 0..total {
        let publishing = started.elapsed() < Duration::from_secs(CUT_COUNT / 100);
        let (_, _, session) = up_link(&edge1.status().or_logs("edge1 status", &[&hub]));
        if i % 6 == 2 {
            // Veth flap: the proxy's hub-side connection hangs; the session
            // either survives (TCP retransmits) or dies by heartbeat timeout.
            let hub_before = route_sum(
                &hub.status().or_logs("hub status", &[&hub]),
                "/seq",
                "messages",
            );
            fleet.link_down("robot1").expect("link down");
            std::thread::sleep(Duration::from_millis(1000 + 300 * (i as u64 % 3)));
            fleet.link_up("robot1").expect("link up");
            // Flowing again: the hub got more than before the flap and the
            // outbox drained.
            edge1
                .wait_status(
                    |s| {
                        link_connected(s, UP)
                            && route_sum(s, "/seq", "queue_depth") < 50
                            && hub
                                .status()
                                .map(|h| route_sum(&h, "/robot1/seq", "messages") > hub_before + 50)
                                .unwrap_or(false)
                    },
                    T,
                )
                .or_logs(&format!("cut {i}: flowing after a veth flap"), &[&hub]);
        } else {
            drop(proxy); // SIGKILL: both connections cut
                         // The outage: 0.3 .. 1 s.
            std::thread::sleep(Duration::from_millis(300 + (i as u64 * 263) % 700));
            proxy = start_proxy(ns1, 7000).expect("restart link-proxy");
            edge1
                .wait_status(
                    |s| {
                        let (state, _, sess) = up_link(s);
                        state == "connected" && sess != session
                    },
                    T,
                )
                .or_logs(
                    &format!("cut {i}: a new session after a proxy kill"),
                    &[&hub],
                );
        }
        if publishing {
            cuts_while_publishing += 1;
        }
    }
    eprintln!(
        "{total} cuts in {:.1} s, {cuts_while_publishing} while robot1 was publishing",
        started.elapsed().as_secs_f64()
    );

    let rep1 =
        seq_report(&sub1, Duration::from_secs(300)).or_logs("robot1 /seq report", &[&hub, &edge1]);
    let rep2 =
        seq_report(&sub2, Duration::from_secs(300)).or_logs("robot2 /seq report", &[&hub, &edge2]);
    assert_eq!(
        wait_line(&pub1, |l| l.starts_with('{'), T).expect("pub robot1 report"),
        format!(r#"{{"published": {CUT_COUNT}}}"#)
    );
    assert!(
        rep1.is_clean(CUT_COUNT),
        "robot1 /seq through {total} cuts: {rep1:?}\n{}\n{}",
        hub.log_dump(),
        edge1.log_dump()
    );
    assert!(
        rep2.is_clean(R2_COUNT),
        "robot2 /seq: {rep2:?}\n{}\n{}",
        hub.log_dump(),
        edge2.log_dump()
    );
    assert!(
        cuts_while_publishing >= 20,
        "only {cuts_while_publishing} of {total} cuts happened while robot1 published"
    );

    let s1 = edge1
        .wait_status(|s| link_connected(s, UP), T)
        .or_logs("edge1 connected at the end", &[&hub]);
    let (_, reconnects, _) = up_link(&s1);
    assert!(
        reconnects >= PROXY_CUTS as u64,
        "robot1 reconnects {reconnects} < {PROXY_CUTS}: {s1}"
    );
    let s2 = edge2.status().or_logs("edge2 status", &[&hub]);
    let (state2, reconnects2, _) = up_link(&s2);
    assert_eq!(
        (state2.as_str(), reconnects2),
        ("connected", 0),
        "robot2's link was disturbed: {s2}\n{}",
        edge2.log_dump()
    );
    drop(pub2);
}
