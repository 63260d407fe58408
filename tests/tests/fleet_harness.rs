//! Self-test of the fleet harness (`integration_tests::fleet`) that the
//! bridge's multi-host tests stand on: the hub's name and address, link
//! faults, `link-proxy`, and that DDS cannot cross between hosts except
//! through a bridge. Needs root, iproute2, nftables and the harness venv.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use integration_tests::fleet::{
    cyclone_iface_config, fleet_capable, seq_report, seqpeer, spawn_in, wait_line, Fleet, HUB_NAME,
};
use integration_tests::netns::Netns;
use integration_tests::prereq::{python, require};
use integration_tests::proc::Proc;
use integration_tests::robot::domain;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const HUB_PORT: u16 = 7447;

/// A TCP echo server on 0.0.0.0:<port>; prints `listening` once bound.
const ECHO_SERVER: &str = r#"
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', int(sys.argv[1])))
s.listen(16)
print('listening', flush=True)
def echo(c):
    with c:
        while True:
            b = c.recv(65536)
            if not b:
                return
            c.sendall(b)
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"#;

/// Connects to host:port (name resolved in the namespace), sends <size>
/// patterned bytes in 1000-byte writes and checks the echo; one JSON line.
const ECHO_CLIENT: &str = r#"
import json, socket, sys, time
host, port, timeout, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
payload = bytes((i * 7 + i // 251) % 256 for i in range(size))
try:
    c = socket.create_connection((host, port), timeout=timeout)
    c.settimeout(timeout)
    t1 = time.monotonic()
    for i in range(0, size, 1000):
        c.sendall(payload[i:i + 1000])
    got = bytearray()
    while len(got) < size:
        b = c.recv(65536)
        if not b:
            break
        got += b
    ok = bytes(got) == payload
    print(json.dumps({'ok': ok, 'rtt_ms': (time.monotonic() - t1) * 1000, 'got': len(got),
                      'peer': c.getpeername()[0]}))
    sys.exit(0 if ok else 1)
except OSError as e:
    print(json.dumps({'ok': False, 'error': str(e)}))
    sys.exit(1)
"#;

fn setup(robots: &[&str]) -> Option<(Fleet, PathBuf)> {
    require("root, iproute2 and nftables", fleet_capable())?;
    let py = require("python venv", python())?;
    integration_tests::init_tracing();
    let fleet = Fleet::new(robots).expect("create the fleet");
    Some((fleet, py))
}

/// The echo server in `ns` on `port`, once listening.
fn echo_server(ns: &Netns, py: &Path, port: u16) -> Result<Proc> {
    let p = spawn_in(ns, py, &["-c", ECHO_SERVER, &port.to_string()], &[])?;
    wait_line(&p, |l| l == "listening", T)?;
    Ok(p)
}

/// Runs the echo client in `ns`; Ok(report) if the echo came back intact,
/// Err(report) otherwise.
fn echo(
    ns: &Netns,
    py: &Path,
    host: &str,
    port: u16,
    timeout_s: f64,
    size: usize,
) -> Result<Value, Value> {
    let out = ns
        .command(py)
        .args([
            "-c",
            ECHO_CLIENT,
            host,
            &port.to_string(),
            &timeout_s.to_string(),
            &size.to_string(),
        ])
        .output()
        .map_err(|e| serde_json::json!({"spawn": e.to_string()}))?;
    let line = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(line.trim()).unwrap_or_else(
        |_| serde_json::json!({"stdout": line, "stderr": String::from_utf8_lossy(&out.stderr)}),
    );
    if out.status.success() && v["ok"] == true {
        Ok(v)
    } else {
        Err(v)
    }
}

/// `getent hosts <name>` inside `ns`: the first address.
fn resolve(ns: &Netns, name: &str) -> Result<String> {
    let out = ns.command("getent").args(["hosts", name]).output()?;
    ensure!(
        out.status.success(),
        "getent hosts {name} failed in {}",
        ns.name()
    );
    let s = String::from_utf8_lossy(&out.stdout);
    s.split_whitespace()
        .next()
        .map(str::to_owned)
        .context("getent printed nothing")
}

fn netns_exists(name: &str) -> bool {
    Path::new("/var/run/netns").join(name).exists()
}

/// link-proxy in `ns`, once listening on `listen`.
fn link_proxy(ns: &Netns, listen: &str, connect: &str, extra: &[&str]) -> Result<Proc> {
    let mut args = vec!["--listen", listen, "--connect", connect];
    args.extend_from_slice(extra);
    let p = spawn_in(ns, Path::new(env!("CARGO_BIN_EXE_link-proxy")), &args, &[])?;
    let l = wait_line(&p, |l| l.starts_with("listening "), T)?;
    ensure!(l == format!("listening {listen}"), "link-proxy said {l:?}");
    Ok(p)
}

#[test]
fn hub_name_link_faults_and_cleanup() {
    let Some((mut fleet, py)) = setup(&["robot1", "robot2"]) else {
        return;
    };
    let hub = format!("{}", fleet.hub_ip());
    assert_eq!(hub, "10.88.0.1");
    let r1 = fleet.robot("robot1");
    assert_eq!(r1.ip.to_string(), "10.77.1.2");
    assert_eq!(r1.cloud_side_ip.to_string(), "10.77.1.1");
    assert_eq!(fleet.robot("robot2").ip.to_string(), "10.77.2.2");
    assert!(fleet.try_robot("robot3").is_none());
    assert!(fleet.link_down("robot3").is_err());

    let _server = echo_server(fleet.cloud(), &py, HUB_PORT).expect("echo server");
    for ns in [
        &fleet.robot("robot1").ns,
        &fleet.robot("robot2").ns,
        fleet.cloud(),
    ] {
        assert_eq!(resolve(ns, HUB_NAME).unwrap(), hub, "{}", ns.name());
        assert_eq!(resolve(ns, "localhost").unwrap(), "127.0.0.1");
    }
    let ns1 = &fleet.robot("robot1").ns;
    let ok = echo(ns1, &py, HUB_NAME, HUB_PORT, 10.0, 10_000).expect("robot1 -> hub");
    assert_eq!(ok["peer"], hub);
    echo(
        &fleet.robot("robot2").ns,
        &py,
        HUB_NAME,
        HUB_PORT,
        10.0,
        100,
    )
    .expect("robot2 -> hub");

    // link down/up (both ends of the veth)
    fleet.link_down("robot1").unwrap();
    echo(ns1, &py, HUB_NAME, HUB_PORT, 2.0, 100).expect_err("connect while the link is down");
    echo(
        &fleet.robot("robot2").ns,
        &py,
        HUB_NAME,
        HUB_PORT,
        10.0,
        100,
    )
    .expect("robot2 unaffected by robot1's link");
    fleet.link_up("robot1").unwrap();
    echo(ns1, &py, HUB_NAME, HUB_PORT, 10.0, 100).expect("connect after link_up");

    // block/unblock (nftables drop of TCP: SYNs vanish, the connect times out)
    fleet.block("robot1").unwrap();
    fleet.block("robot1").expect("blocking twice");
    let err = echo(ns1, &py, HUB_NAME, HUB_PORT, 2.0, 100).expect_err("connect while blocked");
    assert!(
        err["error"].as_str().unwrap_or("").contains("timed out"),
        "{err}"
    );
    fleet.unblock("robot1").unwrap();
    echo(ns1, &py, HUB_NAME, HUB_PORT, 10.0, 100).expect("connect after unblock");
    fleet
        .unblock("robot1")
        .expect("unblocking when not blocked");

    // move the hub: a link-proxy started before the move resolves the name
    // again per connection, and must see the rewritten (same inode) hosts file.
    let connect = format!("{HUB_NAME}:{HUB_PORT}");
    let _proxy = link_proxy(ns1, "127.0.0.1:7000", &connect, &[]).expect("link-proxy");
    let via = echo(ns1, &py, "127.0.0.1", 7000, 10.0, 100).expect("via proxy before the move");
    assert_eq!(via["peer"], "127.0.0.1");
    let new_ip = fleet.move_hub().unwrap();
    assert_eq!(new_ip.to_string(), "10.88.0.2");
    assert_eq!(fleet.hub_ip(), new_ip);
    let ns1 = &fleet.robot("robot1").ns;
    for ns in [ns1, &fleet.robot("robot2").ns, fleet.cloud()] {
        assert_eq!(
            resolve(ns, HUB_NAME).unwrap(),
            new_ip.to_string(),
            "{}",
            ns.name()
        );
    }
    let ok = echo(ns1, &py, HUB_NAME, HUB_PORT, 10.0, 100).expect("robot1 -> moved hub");
    assert_eq!(ok["peer"], new_ip.to_string());
    echo(ns1, &py, &hub, HUB_PORT, 2.0, 100).expect_err("the old hub address is gone");
    echo(ns1, &py, "127.0.0.1", 7000, 10.0, 100).expect("running proxy finds the moved hub");
    assert_eq!(fleet.move_hub().unwrap().to_string(), "10.88.0.3");
    let ns1 = &fleet.robot("robot1").ns;
    echo(ns1, &py, HUB_NAME, HUB_PORT, 10.0, 100).expect("robot1 -> hub moved twice");

    // Drop removes the namespaces and the hosts dirs.
    let mut names = vec![fleet.cloud().name().to_owned()];
    names.extend(fleet.robots().iter().map(|r| r.ns.name().to_owned()));
    for n in &names {
        assert!(netns_exists(n), "{n}");
        assert!(
            Path::new("/etc/netns").join(n).join("hosts").is_file(),
            "{n}"
        );
    }
    drop(_proxy);
    drop(_server);
    drop(fleet);
    for n in &names {
        assert!(!netns_exists(n), "namespace {n} left behind");
        assert!(
            !Path::new("/etc/netns").join(n).exists(),
            "/etc/netns/{n} left behind"
        );
    }
}

#[test]
fn failed_new_leaves_nothing_behind() {
    if require("root, iproute2 and nftables", fleet_capable()).is_none() {
        return;
    }
    assert!(Fleet::new(&["dup", "dup"]).is_err());
    // The second robot's namespace cannot be made (bad name), after the
    // cloud and the first robot were.
    let tag = format!("leakcheck{}", std::process::id());
    let err = Fleet::new(&[&tag, "bad/name"]).expect_err("a bad namespace name");
    eprintln!("expected error: {err:#}");
    assert!(format!("{err:#}").contains("bad/name"), "{err:#}");
    let prefix = format!("ke-{tag}-");
    let netns: Vec<_> = std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(!netns.iter().any(|n| n.starts_with(&prefix)), "{netns:?}");
    let dirs: Vec<_> = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(!dirs.iter().any(|n| n.starts_with(&prefix)), "{dirs:?}");
}

#[test]
fn link_proxy_forwards_restarts_and_delays() {
    let Some((fleet, py)) = setup(&["robot1"]) else {
        return;
    };
    let _server = echo_server(fleet.cloud(), &py, HUB_PORT).expect("echo server");
    let ns1 = &fleet.robot("robot1").ns;
    let connect = format!("{HUB_NAME}:{HUB_PORT}");

    let proxy = link_proxy(ns1, "127.0.0.1:7000", &connect, &[]).expect("link-proxy");
    let ok = echo(ns1, &py, "127.0.0.1", 7000, 10.0, 200_000).expect("200 kB through the proxy");
    assert_eq!(ok["got"], 200_000);
    drop(proxy); // SIGKILL
    let err = echo(ns1, &py, "127.0.0.1", 7000, 2.0, 100).expect_err("proxy killed");
    assert!(
        err["error"].as_str().unwrap_or("").contains("refused"),
        "{err}"
    );
    let proxy =
        link_proxy(ns1, "127.0.0.1:7000", &connect, &[]).expect("link-proxy again, same port");
    echo(ns1, &py, "127.0.0.1", 7000, 10.0, 1000).expect("through the restarted proxy");
    drop(proxy);

    // --delay-ms: both directions held back, order kept (the echo compares bytes).
    let _slow = link_proxy(ns1, "127.0.0.1:7001", &connect, &["--delay-ms", "300"])
        .expect("delaying proxy");
    let ok = echo(ns1, &py, "127.0.0.1", 7001, 20.0, 50_000).expect("through the delaying proxy");
    let rtt = ok["rtt_ms"].as_f64().unwrap();
    assert!(
        rtt >= 590.0,
        "round trip {rtt} ms through two 300 ms delays"
    );
}

/// DDS stays inside a host: peers in one namespace talk, peers in different
/// namespaces do not (not on `lo`, and not on the veth either, where the UDP
/// guard drops it; the control without the guard shows it is the guard).
#[test]
fn dds_crosses_hosts_only_through_a_bridge() {
    let Some((fleet, py)) = setup(&["robot1"]) else {
        return;
    };
    let d = domain(1).to_string();
    let ns1 = &fleet.robot("robot1").ns;
    let veth = fleet.robot("robot1").veth().to_owned();
    let veth_cfg = cyclone_iface_config(&veth);
    let on_veth = [("CYCLONEDDS_URI", veth_cfg.as_str())];

    // Same host: everything arrives, in order.
    let sub = seqpeer(
        ns1,
        &py,
        &[
            "sub",
            "--topic",
            "rt/seq",
            "--expect",
            "200",
            "--timeout",
            "60",
            "--reliable",
            "--domain",
            &d,
        ],
        &[],
    )
    .unwrap();
    wait_line(&sub, |l| l == "ready", T).unwrap();
    let mut publ = seqpeer(
        ns1,
        &py,
        &[
            "pub",
            "--topic",
            "rt/seq",
            "--count",
            "200",
            "--rate",
            "200",
            "--wait-readers",
            "1",
            "--linger",
            "1",
            "--domain",
            &d,
        ],
        &[],
    )
    .unwrap();
    let rep = seq_report(&sub, T).unwrap();
    assert!(rep.is_clean(200), "{rep:?}");
    assert_eq!((rep.first, rep.last), (Some(1), Some(200)));
    assert_eq!(
        wait_line(&publ, |l| l.starts_with('{'), T).unwrap(),
        r#"{"published": 200}"#
    );
    publ.wait_success(T).unwrap();

    // Across hosts, on lo (spawn_in's default) and on the veth: nothing.
    let run_pair =
        |sub_env: &[(&str, &str)], pub_env: &[(&str, &str)], timeout: &str| -> Result<_> {
            let sub = seqpeer(
                fleet.cloud(),
                &py,
                &[
                    "sub",
                    "--topic",
                    "rt/x",
                    "--expect",
                    "300",
                    "--timeout",
                    timeout,
                    "--domain",
                    &d,
                ],
                sub_env,
            )?;
            wait_line(&sub, |l| l == "ready", T)?;
            let publ = seqpeer(
                ns1,
                &py,
                &[
                    "pub", "--topic", "rt/x", "--count", "300", "--rate", "50", "--linger", "0",
                    "--domain", &d,
                ],
                pub_env,
            )?;
            Ok((sub, publ))
        };
    let (sub_lo, _pub_lo) = run_pair(&[], &[], "4").unwrap();
    let (sub_veth, _pub_veth) = run_pair(&on_veth, &on_veth, "4").unwrap();
    let rep = seq_report(&sub_lo, T).unwrap();
    assert_eq!(rep.received, 0, "DDS on lo crossed hosts: {rep:?}");
    let rep = seq_report(&sub_veth, T).unwrap();
    assert_eq!(
        rep.received, 0,
        "DDS on the veth crossed the UDP guard: {rep:?}"
    );
    drop((sub_lo, _pub_lo, sub_veth, _pub_veth));

    // Control: without the guard, the same veth-bound peers do talk.
    fleet.set_udp_guard(false).unwrap();
    let (sub_veth, _pub_veth) = run_pair(&on_veth, &on_veth, "30").unwrap();
    let rep = seq_report(&sub_veth, T).unwrap();
    assert!(
        rep.received > 0,
        "control: veth-bound peers never met without the guard: {rep:?}"
    );
    fleet.set_udp_guard(true).unwrap();
}
