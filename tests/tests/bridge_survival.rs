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

use anyhow::{ensure, Context, Result};
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

/// A continuous `seqpeer.py pub` (10 Hz, reliable) on `topic` in `ns`/`domain`.
fn stream_pub(ns: &Netns, py: &Path, topic: &str, domain: &str) -> Result<Proc> {
    seqpeer(
        ns,
        py,
        &[
            "pub",
            "--topic",
            topic,
            "--count",
            "1000000",
            "--rate",
            "10",
            "--reliable",
            "--depth",
            "100",
            "--linger",
            "0",
            "--domain",
            domain,
        ],
        &[],
    )
}

/// Receives `count` std_msgs/String samples on `topic` in `ns`/`domain`
/// (`ros2peer.py sub`) within `timeout_s` and returns their values.
fn receive_counters(
    ns: &Netns,
    py: &Path,
    topic: &str,
    domain: &str,
    count: usize,
    timeout_s: u64,
) -> Result<Vec<u64>> {
    let script = integration_tests::python_dir().join("ros2peer.py");
    let script = script.to_string_lossy().into_owned();
    let (n, t) = (count.to_string(), timeout_s.to_string());
    let mut p = spawn_in(
        ns,
        py,
        &[
            &script,
            "sub",
            "--topic",
            topic,
            "--type",
            "std_msgs/msg/String",
            "--count",
            &n,
            "--timeout",
            &t,
            "--depth",
            "100",
            "--domain",
            domain,
        ],
        &[],
    )?;
    let lines = p.read_lines(count, Duration::from_secs(timeout_s + 10))?;
    p.wait_success(T)?;
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).with_context(|| format!("sample {l:?}"))?;
            v["data"]
                .as_str()
                .and_then(|d| d.parse().ok())
                .with_context(|| format!("not a counter: {l}"))
        })
        .collect()
}

/// `hub` and `edges`, for failure messages.
fn all<'a>(hub: &'a BridgeProc, edges: &'a [BridgeProc]) -> Vec<&'a BridgeProc> {
    std::iter::once(hub).chain(edges.iter()).collect()
}

/// Every flow of the hub-restart test: (where the sub runs, its topic, the
/// flow's name), publishers started separately.
struct Flow {
    name: &'static str,
    topic: &'static str,
    /// Index into the fleet: None = cloud, Some(robot).
    sub_in: Option<&'static str>,
    domain: &'static str,
}

const FLOWS: [Flow; 4] = [
    Flow {
        name: "robot1 up",
        topic: "rt/robot1/up",
        sub_in: None,
        domain: CLOUD_DOMAIN,
    },
    Flow {
        name: "robot2 up",
        topic: "rt/robot2/up",
        sub_in: None,
        domain: CLOUD_DOMAIN,
    },
    Flow {
        name: "robot1 down",
        topic: "rt/cmd",
        sub_in: Some("robot1"),
        domain: ROBOT_DOMAIN,
    },
    Flow {
        name: "robot2 down",
        topic: "rt/cmd",
        sub_in: Some("robot2"),
        domain: ROBOT_DOMAIN,
    },
];

/// Runs a subscriber for every flow at once (5 samples each); returns the
/// highest value seen per flow (failing if a flow's values are not above
/// `after`).
fn check_flows(fleet: &Fleet, py: &Path, after: &[u64; 4], bridges: &[&BridgeProc]) -> [u64; 4] {
    let results: Vec<Result<Vec<u64>>> = std::thread::scope(|sc| {
        let hs: Vec<_> = FLOWS
            .iter()
            .map(|f| {
                let ns = match f.sub_in {
                    None => fleet.cloud(),
                    Some(r) => &fleet.robot(r).ns,
                };
                sc.spawn(move || receive_counters(ns, py, f.topic, f.domain, 5, 90))
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
            })
            .collect()
    });
    let mut max = [0; 4];
    for (i, (f, r)) in FLOWS.iter().zip(results).enumerate() {
        let vals = r.or_logs(&format!("flow {} ({})", f.name, f.topic), bridges);
        if vals.iter().any(|v| *v <= after[i]) {
            fail(
                &format!("flow {}: stale values", f.name),
                format!("{vals:?}, all must be > {}", after[i]),
                bridges,
            );
        }
        max[i] = vals.iter().copied().max().unwrap_or(0);
    }
    max
}

/// The hub is killed, moves to a new address (same name) and starts again:
/// both edges find it by name and every route (up and down, both robots)
/// works again without restarting the edges.
#[test]
fn hub_restart_on_new_address() {
    let Some((mut fleet, py, dir)) = setup(&["robot1", "robot2"], "hub_restart") else {
        return;
    };
    let mut hub = start_hub(&fleet, &hub_config(), &dir).expect("start the hub");
    let mut edges = Vec::new();
    for (robot, token) in [("robot1", TOKEN1), ("robot2", TOKEN2)] {
        let ns = &fleet.robot(robot).ns;
        let cfg = edge_config(
            robot,
            &format!("{HUB_NAME}:{HUB_PORT}"),
            token,
            &["/up"],
            &["/cmd"],
            "[]",
        );
        let mut e = start_edge(ns, &cfg, &dir).or_logs(&format!("start edge {robot}"), &[&hub]);
        e.wait_status(|s| link_connected(s, UP), T)
            .or_logs(&format!("edge {robot} connected"), &[&hub]);
        edges.push(e);
    }
    let mut _pubs = Vec::new();
    for robot in ["robot1", "robot2"] {
        let ns = &fleet.robot(robot).ns;
        _pubs.push(stream_pub(ns, &py, "rt/up", ROBOT_DOMAIN).expect("robot pub"));
        _pubs.push(
            stream_pub(fleet.cloud(), &py, &format!("rt/{robot}/cmd"), CLOUD_DOMAIN)
                .expect("cloud pub"),
        );
    }
    let before = check_flows(&fleet, &py, &[0; 4], &all(&hub, &edges));
    eprintln!("flows before the restart, last values: {before:?}");

    let sessions: Vec<String> = edges
        .iter()
        .map(|e| up_link(&e.status().or_logs("edge status", &all(&hub, &edges))).2)
        .collect();
    hub.kill();
    let old_ip = fleet.hub_ip();
    let new_ip = fleet.move_hub().expect("move the hub");
    eprintln!("hub moved {old_ip} -> {new_ip}");
    // The edges notice and retry (against the old address, then the new one).
    for e in edges.iter_mut() {
        e.wait_status(|s| up_link(s).0 != "connected", T)
            .or_logs("edge noticed the hub is gone", &[&hub]);
    }
    let hub2 = start_bridge(fleet.cloud(), "hub", "hub-moved", &hub_config(), &dir, &[])
        .expect("start the hub again");
    for (e, old) in edges.iter_mut().zip(&sessions) {
        let s = e
            .wait_status(
                |s| {
                    let (state, _, sess) = up_link(s);
                    state == "connected" && &sess != old
                },
                T,
            )
            .or_logs("edge reconnected to the moved hub", &[&hub2]);
        let peer = link(&s, UP).and_then(|l| l["peer"].as_str()).unwrap_or("");
        assert!(
            peer.starts_with(&format!("{new_ip}:")),
            "edge's peer is {peer:?}, not the moved hub {new_ip}: {s}"
        );
    }
    let after = check_flows(&fleet, &py, &before, &all(&hub2, &edges));
    eprintln!("flows after the restart, last values: {after:?}");
    let hs = hub2.status().or_logs("hub status", &[&hub2]);
    for robot in ["robot1", "robot2"] {
        assert!(
            link_connected(&hs, robot),
            "hub /status: {robot} not connected: {hs}"
        );
    }
}

/// Bad peers against the hub, one connection each, run inside a robot
/// namespace: `python -c BAD_PEERS <host> <port> <robot1 token>`. Prints one
/// JSON line per case: {case, kind (of the first frame back), reply (its
/// JSON), bytes, closed (the hub closed the connection), secs, errors}.
const BAD_PEERS: &str = r#"
import json, random, socket, struct, sys, time
host, port, good_token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def frame(kind, body):
    return struct.pack('>I', len(body) + 1) + bytes([kind]) + body
def hello(**over):
    h = {"magic": "kubeedge-ros2-link", "version": 1, "robot": "robot1",
         "token": "wrong-token", "max_frame_size": 1048576, "features": []}
    h.update(over)
    return frame(1, json.dumps(h).encode())
rng = random.Random(20240607)
cases = [
    ('bad_token', hello()),
    ('bad_token_robot2', hello(robot='robot2')),
    ('unsupported_version', hello(version=99, token=good_token)),
    ('frame_too_large', struct.pack('>I', 100 * 1024 * 1024) + b'\x01' + b'{' * 1000),
    ('garbage_frame', frame(1, bytes(rng.getrandbits(8) for _ in range(4091)))),
    ('garbage', bytes(rng.getrandbits(8) for _ in range(4096))),
    ('http', b'GET / HTTP/1.1\r\nHost: hub.fleet.test\r\nConnection: close\r\n\r\n'),
]
for name, data in cases:
    r = {'case': name, 'closed': False, 'bytes': 0}
    t0 = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout=15)
        s.settimeout(15)
        try:
            s.sendall(data)
        except OSError as e:
            r['send_error'] = str(e)
        buf = b''
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                r['timeout'] = True
                break
            except OSError as e:
                r['recv_error'] = str(e)
                r['closed'] = True
                break
            if not b:
                r['closed'] = True
                break
            buf += b
        r['bytes'] = len(buf)
        if len(buf) >= 5:
            (n,) = struct.unpack('>I', buf[:4])
            r['kind'] = buf[4]
            try:
                r['reply'] = json.loads(buf[5:4 + n])
            except ValueError:
                r['raw'] = buf[:64].hex()
        s.close()
    except OSError as e:
        r['connect_error'] = str(e)
    r['secs'] = round(time.monotonic() - t0, 3)
    print(json.dumps(r), flush=True)
"#;

/// Arrival times of the lines a process prints, collected by a thread.
struct Stamps {
    stop: Arc<AtomicBool>,
    stamps: Arc<Mutex<Vec<Instant>>>,
    thread: Option<std::thread::JoinHandle<Proc>>,
}

impl Stamps {
    fn watch(p: Proc) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stamps = Arc::new(Mutex::new(Vec::new()));
        let (st, sm) = (stop.clone(), stamps.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if p.read_lines(1, Duration::from_millis(100)).is_ok() {
                    if let Ok(mut v) = sm.lock() {
                        v.push(Instant::now());
                    }
                }
            }
            p
        });
        Self {
            stop,
            stamps,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.stamps.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// The longest time without a line within `[from, to]`.
    fn max_gap(&self, from: Instant, to: Instant) -> Duration {
        let v = self.stamps.lock().map(|v| v.clone()).unwrap_or_default();
        let mut prev = from;
        let mut gap = Duration::ZERO;
        for t in v.into_iter().filter(|t| *t > from && *t <= to).chain([to]) {
            gap = gap.max(t - prev);
            prev = t;
        }
        gap
    }

    fn stop(mut self) -> Option<Proc> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

/// Bad peers on the hub's port get the right REJECT (or a closed
/// connection) and are logged with their reason, while robot2 keeps
/// relaying without a gap and without reconnecting.
#[test]
fn bad_peers_are_refused() {
    let Some((fleet, py, dir)) = setup(&["robot1", "robot2"], "bad_peers") else {
        return;
    };
    let ns2 = &fleet.robot("robot2").ns;
    let hub = start_hub(&fleet, &hub_config(), &dir).expect("start the hub");
    let cfg = edge_config(
        "robot2",
        &format!("{HUB_NAME}:{HUB_PORT}"),
        TOKEN2,
        &["/chatter"],
        &[],
        "[]",
    );
    let mut edge2 = start_edge(ns2, &cfg, &dir).or_logs("start edge robot2", &[&hub]);
    edge2
        .wait_status(|s| link_connected(s, UP), T)
        .or_logs("edge robot2 connected", &[&hub]);
    let _pub = stream_pub(ns2, &py, "rt/chatter", ROBOT_DOMAIN).expect("robot2 pub");
    let script = integration_tests::python_dir().join("ros2peer.py");
    let script = script.to_string_lossy().into_owned();
    let sub = spawn_in(
        fleet.cloud(),
        &py,
        &[
            &script,
            "sub",
            "--topic",
            "rt/robot2/chatter",
            "--type",
            "std_msgs/msg/String",
            "--count",
            "1000000",
            "--timeout",
            "600",
            "--depth",
            "100",
            "--domain",
            CLOUD_DOMAIN,
        ],
        &[],
    )
    .expect("cloud sub");
    let stamps = Stamps::watch(sub);
    let deadline = Instant::now() + T;
    while stamps.count() < 10 {
        if Instant::now() > deadline {
            fail(
                "robot2's /chatter never reached the cloud",
                "",
                &[&hub, &edge2],
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let from = Instant::now();
    let out = fleet
        .robot("robot1")
        .ns
        .command(&py)
        .args(["-c", BAD_PEERS, HUB_NAME, &HUB_PORT.to_string(), TOKEN1])
        .output()
        .expect("run the bad peers");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("bad peers:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    // A tail after the last bad peer.
    std::thread::sleep(Duration::from_secs(3));
    let to = Instant::now();
    let results: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect();
    let case = |name: &str| -> Value {
        results
            .iter()
            .find(|r| r["case"] == name)
            .cloned()
            .unwrap_or_else(|| fail(&format!("no result for {name}"), &text, &[&hub]))
    };
    // (case, the REJECT codes accepted, whether a plain close is acceptable)
    let expect: [(&str, &[&str], bool); 7] = [
        ("bad_token", &["bad_token"], false),
        ("bad_token_robot2", &["bad_token"], false),
        ("unsupported_version", &["unsupported_version"], false),
        ("frame_too_large", &["frame_too_large"], true),
        ("garbage_frame", &["malformed"], true),
        ("garbage", &["malformed", "frame_too_large"], true),
        ("http", &["frame_too_large", "malformed"], true),
    ];
    let mut problems = Vec::new();
    for (name, codes, close_ok) in expect {
        let r = case(name);
        let rejected = r["kind"] == 3 && codes.iter().any(|c| r["reply"]["code"] == *c);
        let closed = r["closed"] == true && r["bytes"] == 0;
        let quick = r["secs"].as_f64().unwrap_or(99.0) < 5.0;
        if !(rejected || (close_ok && closed)) || r["closed"] != true || !quick {
            problems.push(format!(
                "{name}: expected REJECT {codes:?}{} and a close within 5 s, got {r}",
                if close_ok { " or a plain close" } else { "" }
            ));
        }
    }
    let gap = stamps.max_gap(from, to);
    let got = stamps.count();
    drop(stamps.stop());

    // Each refusal is logged with its reason.
    let log = hub.log();
    let logged = [
        ("bad_token", &["BadToken", "bad_token", "bad token"][..]),
        (
            "unsupported_version",
            &["UnsupportedVersion", "unsupported_version", "not supported"],
        ),
        (
            "frame_too_large",
            &["FrameTooLarge", "frame_too_large", "exceeds the maximum"],
        ),
        ("malformed", &["Malformed", "malformed"]),
    ];
    for (reason, needles) in logged {
        if !log.lines().any(|l| {
            (l.contains("WARN") || l.contains("warn")) && needles.iter().any(|n| l.contains(n))
        }) {
            problems.push(format!(
                "the hub log has no warning for {reason} (looked for {needles:?})"
            ));
        }
    }
    let m = hub.http_get("/metrics").unwrap_or_default();
    let failures: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("bridge_link_session_failures_total"))
        .collect();
    eprintln!("hub session failures:\n{}", failures.join("\n"));

    // robot2: no gap, no reconnect, on both sides.
    if gap > Duration::from_secs(2) {
        problems.push(format!(
            "robot2's /chatter had a gap of {gap:?} ({got} samples in all)"
        ));
    }
    let s2 = edge2.status().or_logs("edge2 status", &[&hub]);
    let (state, reconnects, _) = up_link(&s2);
    if state != "connected" || reconnects != 0 {
        problems.push(format!("robot2's edge was disturbed: {s2}"));
    }
    let hs = hub.status().or_logs("hub status", &[&hub]);
    let r2 = link(&hs, "robot2").cloned().unwrap_or(Value::Null);
    if r2["state"] != "connected" || r2["reconnects"].as_u64().unwrap_or(0) != 0 {
        problems.push(format!("the hub's robot2 link was disturbed: {r2}"));
    }
    if link_connected(&hs, "robot1") {
        problems.push(format!("a bad peer got a robot1 link: {hs}"));
    }
    if !problems.is_empty() {
        fail(&problems.join("\n"), "", &[&hub, &edge2]);
    }
}
