//! The `bridge` binary across hosts: a hub in the fleet's cloud namespace,
//! edges in robot namespaces, Cyclone DDS apps (`ros2peer.py`,
//! `ros2service.py`) on each side. DDS can only cross between hosts through
//! the bridge's TCP link (the fleet drops UDP on the veths).
//!
//! Robot-side DDS is domain 0, the hub's domain 1 (a second hub: domain 2).
//! Bridge logs are in `tests/out/bridge_fleet/<test>/*.log` and printed when
//! a test fails.
//!
//! Needs root, iproute2, nftables, curl, the harness venv and the built
//! `bridge` binary (`cargo build -p bridge`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use integration_tests::bridge_proc::{
    bridge_built, edge_yaml_with, hub_yaml, link, link_connected, route_messages, routes_matching,
    start_bridge, start_edge, start_hub, BridgeProc, UpstreamSpec,
};
use integration_tests::fleet::{fleet_capable, spawn_in, Fleet};
use integration_tests::netns::Netns;
use integration_tests::prereq::{python, require};
use integration_tests::proc::Proc;
use serde_json::{json, Value};

/// Generous wait for anything that should happen (loaded 2-core machines).
const T: Duration = Duration::from_secs(60);
/// How long a subscriber that must receive nothing listens, in seconds.
const QUIET_S: &str = "12";
const HUB_PORT: u16 = 17447;
const HUB2_PORT: u16 = 17448;
const ROBOT_DOMAIN: &str = "0";
const CLOUD_DOMAIN: &str = "1";
const CLOUD2_DOMAIN: &str = "2";
const TOK1: &str = "secret-robot1-token";
const TOK2: &str = "secret-robot2-token";

/// One test's world: the fleet, the venv's Python, its output directory.
struct Ctx {
    fleet: Fleet,
    py: PathBuf,
    dir: PathBuf,
    n: std::cell::Cell<u32>,
}

/// Runs `body` in a fresh fleet (skips when a prerequisite is missing); on
/// failure prints every bridge log of the test before panicking.
fn run(name: &str, robots: &[&str], body: impl FnOnce(&mut Ctx) -> Result<()>) {
    if require("root, iproute2 and nftables", fleet_capable()).is_none() {
        return;
    }
    let Some(py) = require("python venv", python()) else {
        return;
    };
    if require("the bridge binary", bridge_built()).is_none() {
        return;
    }
    if require(
        "curl",
        std::process::Command::new("curl")
            .arg("--version")
            .output()
            .map_err(|e| e.to_string())
            .map(|_| ()),
    )
    .is_none()
    {
        return;
    }
    integration_tests::init_tracing();
    let dir = integration_tests::out_dir(&format!("bridge_fleet/{name}"));
    // Fresh logs for every run.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("output dir");
    let fleet = Fleet::new(robots).expect("create the fleet");
    let mut ctx = Ctx {
        fleet,
        py,
        dir: dir.clone(),
        n: std::cell::Cell::new(0),
    };
    let r = body(&mut ctx);
    drop(ctx);
    if let Err(e) = r {
        let mut logs = String::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files
                .iter()
                .filter(|f| f.extension().is_some_and(|x| x == "log"))
            {
                logs.push_str(&format!(
                    "==== {} ====\n{}\n",
                    f.display(),
                    std::fs::read_to_string(f).unwrap_or_default()
                ));
            }
        }
        panic!("{name} failed: {e:#}\n\nbridge logs:\n{logs}");
    }
}

impl Ctx {
    fn ns(&self, robot: &str) -> &Netns {
        &self.fleet.robot(robot).ns
    }

    /// `hub.yaml` for hub 1 (domain 1, HTTP on 127.0.0.1:19181).
    fn hub1_yaml(&self, robots: &[(&str, &str, &str)], shared: &[&str]) -> String {
        hub_yaml(
            HUB_PORT,
            robots,
            shared,
            &format!(
                "dds: {{ domain_id: {CLOUD_DOMAIN}, only_networks: [127.0.0.1] }}\n\
                 limits: {{ heartbeat_ms: 1000 }}\n\
                 http: {{ listen: 127.0.0.1:19181 }}\n"
            ),
        )
    }

    /// An edge for `robot` (domain 0, HTTP on 127.0.0.1:`http_port`).
    fn edge(
        &self,
        ns: &Netns,
        robot: &str,
        ups: &[UpstreamSpec<'_>],
        http_port: u16,
    ) -> Result<BridgeProc> {
        let yaml = edge_yaml_with(
            robot,
            ups,
            &format!(
                "dds: {{ domain_id: {ROBOT_DOMAIN}, only_networks: [127.0.0.1] }}\n\
                 http: {{ listen: 127.0.0.1:{http_port} }}\n"
            ),
        );
        start_edge(ns, &yaml, &self.dir)
    }

    /// Writes `values` to a fresh JSON file in the test directory.
    fn values_file(&self, values: &[Value]) -> Result<String> {
        self.n.set(self.n.get() + 1);
        let f = self.dir.join(format!("values-{}.json", self.n.get()));
        std::fs::write(&f, serde_json::to_string(values)?)?;
        Ok(f.to_string_lossy().into_owned())
    }

    /// `ros2peer.py sub` in `ns` for `count` samples (within 60 s), once
    /// READY. Prints one JSON line per sample.
    fn sub(
        &self,
        ns: &Netns,
        domain: &str,
        topic: &str,
        ty: &str,
        count: usize,
        extra: &[&str],
    ) -> Result<Proc> {
        self.sub_for(ns, domain, topic, ty, count, "60", extra)
    }

    /// A subscriber that must receive nothing (see [`assert_quiet`]): one
    /// sample within [`QUIET_S`] seconds.
    fn quiet_sub(&self, ns: &Netns, domain: &str, topic: &str, ty: &str) -> Result<Proc> {
        self.sub_for(ns, domain, topic, ty, 1, QUIET_S, &[])
    }

    #[allow(clippy::too_many_arguments)]
    fn sub_for(
        &self,
        ns: &Netns,
        domain: &str,
        topic: &str,
        ty: &str,
        count: usize,
        timeout_s: &str,
        extra: &[&str],
    ) -> Result<Proc> {
        let script = peer_script("ros2peer.py");
        let count = count.to_string();
        let mut args = vec![
            script.as_str(),
            "sub",
            "--topic",
            topic,
            "--type",
            ty,
            "--domain",
            domain,
            "--count",
            &count,
            "--timeout",
            timeout_s,
        ];
        args.extend_from_slice(extra);
        let p = spawn_in(ns, &self.py, &args, &[])?;
        p.wait_stderr("READY", T)
            .with_context(|| format!("sub {topic} ready"))?;
        Ok(p)
    }

    /// `ros2peer.py pub` in `ns` that waits for one reader (the bridge's)
    /// and then for a line on stdin ([`go`]); returned once it says WAITING.
    fn gated_pub(
        &self,
        ns: &Netns,
        domain: &str,
        topic: &str,
        ty: &str,
        values: &[Value],
        extra: &[&str],
    ) -> Result<Proc> {
        let vf = self.values_file(values)?;
        let script = peer_script("ros2peer.py");
        let mut args = vec![
            script.as_str(),
            "pub",
            "--topic",
            topic,
            "--type",
            ty,
            "--domain",
            domain,
            "--values-file",
            &vf,
            "--wait-readers",
            "1",
            "--match-timeout",
            "60",
            "--start-on-stdin",
            "--interval-ms",
            "20",
            "--linger",
            "5",
        ];
        args.extend_from_slice(extra);
        let p = spawn_in(ns, &self.py, &args, &[])?;
        p.wait_stderr("WAITING", T)
            .with_context(|| format!("publisher on {topic}: the bridge's reader never matched"))?;
        Ok(p)
    }

    /// `ros2peer.py pub` in `ns` that publishes at once (no reader needed),
    /// `interval_ms` apart: for topics the bridge must not pick up.
    fn free_pub(
        &self,
        ns: &Netns,
        domain: &str,
        topic: &str,
        ty: &str,
        values: &[Value],
        interval_ms: u32,
    ) -> Result<Proc> {
        let vf = self.values_file(values)?;
        let script = peer_script("ros2peer.py");
        let interval = interval_ms.to_string();
        let args = [
            script.as_str(),
            "pub",
            "--topic",
            topic,
            "--type",
            ty,
            "--domain",
            domain,
            "--values-file",
            &vf,
            "--interval-ms",
            &interval,
            "--linger",
            "2",
        ];
        spawn_in(ns, &self.py, &args, &[])
    }
}

fn peer_script(name: &str) -> String {
    integration_tests::python_dir()
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Lets a gated publisher write, once `subs` have matched a writer (the
/// bridge's, whose samples would otherwise be lost before the match).
fn go(publ: &mut Proc, subs: &[&Proc]) -> Result<()> {
    for s in subs {
        s.wait_stderr("MATCHED 1", T)
            .context("subscriber never matched the bridge's writer")?;
    }
    // Discovery is asymmetric: give the writer side a moment to see the reader too.
    std::thread::sleep(Duration::from_millis(500));
    publ.send_line("go")
}

/// `n` samples (JSON) from a subscriber.
fn samples(sub: &Proc, n: usize) -> Result<Vec<Value>> {
    sub.read_lines(n, T)?
        .iter()
        .map(|l| serde_json::from_str(l).with_context(|| format!("sample {l:?}")))
        .collect()
}

/// A subscriber started with `--count 1 --timeout QUIET_S` received nothing:
/// it times out with 0 samples and printed no sample.
fn assert_quiet(sub: &Proc, what: &str) -> Result<()> {
    let r = sub.wait_stderr("TIMEOUT after 0/", T);
    let extra = sub.read_lines(1, Duration::from_millis(100));
    ensure!(
        r.is_ok() && extra.is_err(),
        "{what}: expected nothing, got {:?} / {:?}",
        extra.ok(),
        r.err().map(|e| format!("{e:#}"))
    );
    Ok(())
}

fn string(s: &str) -> Value {
    json!({ "data": s })
}

fn vec3(x: f64, y: f64, z: f64) -> Value {
    json!({ "x": x, "y": y, "z": z })
}

fn twist(lx: f64, az: f64) -> Value {
    json!({ "linear": vec3(lx, 0.0, 0.0), "angular": vec3(0.0, 0.0, az) })
}

fn header(frame: &str) -> Value {
    json!({ "stamp": { "sec": 1, "nanosec": 2 }, "frame_id": frame })
}

fn odom(robot: &str, x: f64) -> Value {
    json!({
        "header": header("odom"),
        "child_frame_id": format!("{robot}_base"),
        "pose": {
            "pose": { "position": vec3(x, 0.0, 0.0), "orientation": { "x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0 } },
            "covariance": vec![0.0; 36],
        },
        "twist": { "twist": twist(0.5, 0.0), "covariance": vec![0.0; 36] },
    })
}

fn battery(pct: f64) -> Value {
    json!({
        "header": header("battery"),
        "voltage": 24.0, "temperature": 30.0, "current": -1.0, "charge": 10.0,
        "capacity": 20.0, "design_capacity": 20.0, "percentage": pct,
        "power_supply_status": 2, "power_supply_health": 1, "power_supply_technology": 2,
        "present": true, "cell_voltage": [], "cell_temperature": [],
        "location": "base", "serial_number": "b1",
    })
}

fn tf_message(child: &str, x: f64) -> Value {
    json!({ "transforms": [{
        "header": header("base_link"),
        "child_frame_id": child,
        "transform": {
            "translation": vec3(x, 0.0, 0.0),
            "rotation": { "x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0 },
        },
    }]})
}

const STRING: &str = "std_msgs/msg/String";
const TWIST: &str = "geometry_msgs/msg/Twist";
const ODOM: &str = "nav_msgs/msg/Odometry";
const BATTERY: &str = "sensor_msgs/msg/BatteryState";
const TF: &str = "tf2_msgs/msg/TFMessage";

/// Waits until the edge's upstream `name` is connected.
fn wait_connected(edge: &mut BridgeProc, name: &str) -> Result<Value> {
    edge.wait_status(|s| link_connected(s, name), T)
        .with_context(|| format!("{} never connected upstream {name}", edge.name()))
}

/// Allowed topics cross, others do not; commands go down and acks come up.
#[test]
fn topic_scoping_and_commands() {
    run("topic_scoping", &["robot1", "robot2"], |c| {
        let _hub = start_hub(
            &c.fleet,
            &c.hub1_yaml(&[("robot1", "/robot1", TOK1)], &[]),
            &c.dir,
        )?;
        let ns1 = c.ns("robot1");
        let mut edge = c.edge(
            ns1,
            "robot1",
            &[UpstreamSpec {
                up: vec!["/status_out", "/cmd_ack"],
                down: vec!["/cmd_vel"],
                ..UpstreamSpec::to_hub("cloud", HUB_PORT, TOK1)
            }],
            19180,
        )?;
        wait_connected(&mut edge, "cloud")?;
        let cloud = c.fleet.cloud();

        // Not allowed: /battery stays on the robot (a local subscriber shows
        // it is really published meanwhile).
        let quiet = c.quiet_sub(cloud, CLOUD_DOMAIN, "rt/robot1/battery", BATTERY)?;
        let local = c.sub(ns1, ROBOT_DOMAIN, "rt/battery", BATTERY, 3, &[])?;
        let batt: Vec<Value> = (0..40).map(|i| battery(f64::from(i) / 40.0)).collect();
        let _batt_pub = c.free_pub(ns1, ROBOT_DOMAIN, "rt/battery", BATTERY, &batt, 200)?;

        // Allowed: /status_out arrives under /robot1, every sample.
        let st_sub = c.sub(cloud, CLOUD_DOMAIN, "rt/robot1/status_out", STRING, 5, &[])?;
        let vals: Vec<Value> = (0..5).map(|i| string(&format!("status {i}"))).collect();
        let mut st_pub = c.gated_pub(ns1, ROBOT_DOMAIN, "rt/status_out", STRING, &vals, &[])?;
        go(&mut st_pub, &[&st_sub])?;
        ensure!(samples(&st_sub, 5)? == vals, "status_out samples differ");
        ensure!(samples(&local, 3)?.len() == 3, "local battery subscriber");

        // Command down: the fleet manager's /robot1/cmd_vel reaches the robot's /cmd_vel.
        let cmd_sub = c.sub(ns1, ROBOT_DOMAIN, "rt/cmd_vel", TWIST, 3, &[])?;
        let cmds = vec![twist(0.1, 0.0), twist(0.2, 0.5), twist(0.0, -0.5)];
        let mut cmd_pub =
            c.gated_pub(cloud, CLOUD_DOMAIN, "rt/robot1/cmd_vel", TWIST, &cmds, &[])?;
        go(&mut cmd_pub, &[&cmd_sub])?;
        ensure!(samples(&cmd_sub, 3)? == cmds, "cmd_vel samples differ");

        // The robot acknowledges on /cmd_ack: the cloud sees /robot1/cmd_ack.
        let ack_sub = c.sub(cloud, CLOUD_DOMAIN, "rt/robot1/cmd_ack", STRING, 1, &[])?;
        let ack = vec![string("ack 3 commands")];
        let mut ack_pub = c.gated_pub(ns1, ROBOT_DOMAIN, "rt/cmd_ack", STRING, &ack, &[])?;
        go(&mut ack_pub, &[&ack_sub])?;
        ensure!(samples(&ack_sub, 1)? == ack, "cmd_ack sample differs");

        assert_quiet(&quiet, "cloud sub on rt/robot1/battery")?;
        let st = edge.status()?;
        ensure!(
            routes_matching(&st, "battery").is_empty(),
            "the edge made a route for /battery: {st}"
        );
        Ok(())
    });
}

/// Each robot's topics land under its own namespace; commands reach only
/// their robot; shared topics reach all; a robot cannot publish into
/// another's namespace nor connect as another robot.
#[test]
fn fleet_isolation() {
    run("fleet_isolation", &["robot1", "robot2"], |c| {
        let mut hub = start_hub(
            &c.fleet,
            &c.hub1_yaml(
                &[("robot1", "/robot1", TOK1), ("robot2", "/robot2", TOK2)],
                &["/fleet/mission"],
            ),
            &c.dir,
        )?;
        let (ns1, ns2) = (c.ns("robot1"), c.ns("robot2"));
        let mut edge1 = c.edge(
            ns1,
            "robot1",
            &[UpstreamSpec {
                up: vec!["/odom", "/robot2/cmd_vel"],
                down: vec!["/cmd_vel", "/fleet/mission"],
                ..UpstreamSpec::to_hub("cloud", HUB_PORT, TOK1)
            }],
            19180,
        )?;
        let mut edge2 = c.edge(
            ns2,
            "robot2",
            &[UpstreamSpec {
                up: vec!["/odom"],
                down: vec!["/cmd_vel", "/fleet/mission"],
                ..UpstreamSpec::to_hub("cloud", HUB_PORT, TOK2)
            }],
            19180,
        )?;
        wait_connected(&mut edge1, "cloud")?;
        wait_connected(&mut edge2, "cloud")?;
        let cloud = c.fleet.cloud();

        // /odom from both robots, apart.
        let o1 = c.sub(cloud, CLOUD_DOMAIN, "rt/robot1/odom", ODOM, 3, &[])?;
        let o2 = c.sub(cloud, CLOUD_DOMAIN, "rt/robot2/odom", ODOM, 3, &[])?;
        let v1: Vec<Value> = (0..3).map(|i| odom("robot1", 1.0 + f64::from(i))).collect();
        let v2: Vec<Value> = (0..3)
            .map(|i| odom("robot2", 10.0 + f64::from(i)))
            .collect();
        let mut p1 = c.gated_pub(ns1, ROBOT_DOMAIN, "rt/odom", ODOM, &v1, &[])?;
        let mut p2 = c.gated_pub(ns2, ROBOT_DOMAIN, "rt/odom", ODOM, &v2, &[])?;
        go(&mut p1, &[&o1])?;
        go(&mut p2, &[&o2])?;
        ensure!(samples(&o1, 3)? == v1, "rt/robot1/odom has other samples");
        ensure!(samples(&o2, 3)? == v2, "rt/robot2/odom has other samples");
        drop((p1, p2, o1, o2));

        // /robot2/cmd_vel reaches robot2 only.
        let quiet1 = c.quiet_sub(ns1, ROBOT_DOMAIN, "rt/cmd_vel", TWIST)?;
        let cmd2 = c.sub(ns2, ROBOT_DOMAIN, "rt/cmd_vel", TWIST, 2, &[])?;
        let cmds = vec![twist(0.3, 0.0), twist(0.0, 0.3)];
        let mut cp = c.gated_pub(cloud, CLOUD_DOMAIN, "rt/robot2/cmd_vel", TWIST, &cmds, &[])?;
        go(&mut cp, &[&cmd2])?;
        ensure!(
            samples(&cmd2, 2)? == cmds,
            "robot2's cmd_vel samples differ"
        );
        assert_quiet(&quiet1, "robot1's rt/cmd_vel (command for robot2)")?;
        drop((cp, cmd2));

        // The shared /fleet/mission reaches both.
        let m1 = c.sub(ns1, ROBOT_DOMAIN, "rt/fleet/mission", STRING, 1, &[])?;
        let m2 = c.sub(ns2, ROBOT_DOMAIN, "rt/fleet/mission", STRING, 1, &[])?;
        let mission = vec![string("explore sector 7")];
        let mut mp = c.gated_pub(
            cloud,
            CLOUD_DOMAIN,
            "rt/fleet/mission",
            STRING,
            &mission,
            &[],
        )?;
        go(&mut mp, &[&m1, &m2])?;
        ensure!(samples(&m1, 1)? == mission, "robot1's mission");
        ensure!(samples(&m2, 1)? == mission, "robot2's mission");
        drop((mp, m1, m2));

        // robot1 publishing "/robot2/cmd_vel" lands under /robot1, not on robot2's topic.
        let quiet_cloud = c.quiet_sub(cloud, CLOUD_DOMAIN, "rt/robot2/cmd_vel", TWIST)?;
        let quiet2 = c.quiet_sub(ns2, ROBOT_DOMAIN, "rt/cmd_vel", TWIST)?;
        let nested = c.sub(
            cloud,
            CLOUD_DOMAIN,
            "rt/robot1/robot2/cmd_vel",
            TWIST,
            2,
            &[],
        )?;
        let spoof = vec![twist(9.0, 9.0), twist(-9.0, -9.0)];
        let mut sp = c.gated_pub(ns1, ROBOT_DOMAIN, "rt/robot2/cmd_vel", TWIST, &spoof, &[])?;
        go(&mut sp, &[&nested])?;
        ensure!(
            samples(&nested, 2)? == spoof,
            "rt/robot1/robot2/cmd_vel samples differ"
        );
        assert_quiet(&quiet_cloud, "cloud rt/robot2/cmd_vel (robot1's spoof)")?;
        assert_quiet(&quiet2, "robot2's rt/cmd_vel (robot1's spoof)")?;
        drop((sp, nested));

        // robot1's host claiming to be robot2 with robot1's token: refused.
        let imp_yaml = edge_yaml_with(
            "robot2",
            &[UpstreamSpec {
                up: vec!["/odom"],
                ..UpstreamSpec::to_hub("cloud", HUB_PORT, TOK1)
            }],
            "dds: { domain_id: 5, only_networks: [127.0.0.1] }\nhttp: { listen: 127.0.0.1:19190 }\n",
        );
        let mut imp = start_bridge(ns1, "edge", "impostor", &imp_yaml, &c.dir, &[])?;
        hub.wait_log("bad token for robot \"robot2\"", T)
            .context("the hub did not log bad_token for the impostor")?;
        // After a bad_token REJECT the edge backs off slowly (at least 30 s,
        // docs/link-protocol.md §9), so one refused attempt is all there is.
        let st = imp.wait_status(
            |s| {
                link(s, "cloud").is_some_and(|l| {
                    l["reconnects"].as_u64().unwrap_or(0) >= 1
                        && l["last_error"]
                            .as_str()
                            .is_some_and(|e| e.contains("BadToken"))
                })
            },
            T,
        )?;
        let l = link(&st, "cloud").context("impostor link")?;
        ensure!(
            l["state"] == "backoff",
            "the impostor is not backing off: {st}"
        );
        ensure!(
            !imp.log().contains("session established"),
            "the impostor's log shows a session"
        );
        let metrics = imp.http_get("/metrics")?;
        ensure!(
            metrics
                .lines()
                .any(|m| m.starts_with("bridge_link_session_failures_total")
                    && m.contains("reason=\"bad_token\"")
                    && !m.ends_with(" 0")),
            "no bad_token session failure in the impostor's metrics:\n{metrics}"
        );
        // The real robot2 is still the one the hub knows as robot2.
        let hs = hub.status()?;
        let r2: Vec<&Value> = hs["links"]
            .as_array()
            .map(|ls| ls.iter().filter(|l| l["namespace"] == "/robot2").collect())
            .unwrap_or_default();
        ensure!(
            r2.len() == 1 && r2[0]["state"] == "connected",
            "hub links for /robot2: {hs}"
        );
        ensure!(
            r2[0]["peer"]
                .as_str()
                .is_some_and(|p| p.contains("10.77.2.2")),
            "robot2's link is not from robot2's host: {hs}"
        );
        Ok(())
    });
}

/// Two transient-local publishers on the robot: a late cloud subscriber
/// gets both latched samples.
#[test]
fn transient_local_late_joiner() {
    run("tl_late_joiner", &["robot1"], |c| {
        let mut hub = start_hub(
            &c.fleet,
            &c.hub1_yaml(&[("robot1", "/robot1", TOK1)], &[]),
            &c.dir,
        )?;
        let ns1 = c.ns("robot1");
        let mut edge = c.edge(
            ns1,
            "robot1",
            &[UpstreamSpec {
                up: vec!["/tf_static"],
                ..UpstreamSpec::to_hub("cloud", HUB_PORT, TOK1)
            }],
            19180,
        )?;
        wait_connected(&mut edge, "cloud")?;
        let tl = [
            "--durability",
            "transient_local",
            "--reliability",
            "reliable",
            "--depth",
            "1",
            "--linger",
            "600",
        ];
        let a = vec![tf_message("laser", 0.1)];
        let b = vec![tf_message("camera", 0.2)];
        let mut pa = c.gated_pub(ns1, ROBOT_DOMAIN, "rt/tf_static", TF, &a, &tl)?;
        pa.send_line("go")?;
        let mut pb = c.gated_pub(ns1, ROBOT_DOMAIN, "rt/tf_static", TF, &b, &tl)?;
        pb.send_line("go")?;
        pa.wait_stderr("ACKED", T)?;
        pb.wait_stderr("ACKED", T)?;
        // Both relayed to the hub.
        hub.wait_status(|s| route_messages(s, "tf_static") >= 2, T)
            .context("the hub never relayed both /tf_static samples")?;

        let late = c.sub(
            c.fleet.cloud(),
            CLOUD_DOMAIN,
            "rt/robot1/tf_static",
            TF,
            2,
            &["--durability", "transient_local", "--depth", "10"],
        )?;
        let mut got = samples(&late, 2)?;
        got.sort_by_key(|v| v["transforms"][0]["child_frame_id"].to_string());
        ensure!(
            got == vec![b[0].clone(), a[0].clone()],
            "late joiner got {got:?}"
        );
        Ok(())
    });
}

/// One edge, two hubs: each upstream carries only its own topics, into its
/// own hub's domain.
#[test]
fn two_upstreams() {
    run("two_upstreams", &["robot1"], |c| {
        let tok_a = "robot1-token-for-hub-a";
        let tok_b = "robot1-token-for-hub-b";
        let _hub1 = start_hub(
            &c.fleet,
            &c.hub1_yaml(&[("robot1", "/robot1", tok_a)], &[]),
            &c.dir,
        )?;
        let hub2_yaml = hub_yaml(
            HUB2_PORT,
            &[("robot1", "/robot1", tok_b)],
            &[],
            &format!(
                "dds: {{ domain_id: {CLOUD2_DOMAIN}, only_networks: [127.0.0.1] }}\n\
                 http: {{ listen: 127.0.0.1:19182 }}\n"
            ),
        );
        let _hub2 = start_bridge(c.fleet.cloud(), "hub", "hub2", &hub2_yaml, &c.dir, &[])?;
        let ns1 = c.ns("robot1");
        let mut edge = c.edge(
            ns1,
            "robot1",
            &[
                UpstreamSpec {
                    up: vec!["/a_topic"],
                    ..UpstreamSpec::to_hub("hub-a", HUB_PORT, tok_a)
                },
                UpstreamSpec {
                    up: vec!["/b_topic"],
                    ..UpstreamSpec::to_hub("hub-b", HUB2_PORT, tok_b)
                },
            ],
            19180,
        )?;
        wait_connected(&mut edge, "hub-a")?;
        wait_connected(&mut edge, "hub-b")?;
        let cloud = c.fleet.cloud();
        let a_quiet = c.quiet_sub(cloud, CLOUD2_DOMAIN, "rt/robot1/a_topic", STRING)?;
        let b_quiet = c.quiet_sub(cloud, CLOUD_DOMAIN, "rt/robot1/b_topic", STRING)?;
        let a_sub = c.sub(cloud, CLOUD_DOMAIN, "rt/robot1/a_topic", STRING, 3, &[])?;
        let b_sub = c.sub(cloud, CLOUD2_DOMAIN, "rt/robot1/b_topic", STRING, 3, &[])?;
        let av: Vec<Value> = (0..3).map(|i| string(&format!("a {i}"))).collect();
        let bv: Vec<Value> = (0..3).map(|i| string(&format!("b {i}"))).collect();
        let mut pa = c.gated_pub(ns1, ROBOT_DOMAIN, "rt/a_topic", STRING, &av, &[])?;
        let mut pb = c.gated_pub(ns1, ROBOT_DOMAIN, "rt/b_topic", STRING, &bv, &[])?;
        go(&mut pa, &[&a_sub])?;
        go(&mut pb, &[&b_sub])?;
        ensure!(samples(&a_sub, 3)? == av, "a_topic via hub 1");
        ensure!(samples(&b_sub, 3)? == bv, "b_topic via hub 2");
        assert_quiet(&a_quiet, "a_topic in hub 2's domain")?;
        assert_quiet(&b_quiet, "b_topic in hub 1's domain")?;
        Ok(())
    });
}

/// A robot's service is callable from the cloud under the robot's namespace.
#[test]
fn service_call_through_the_bridge() {
    run("service", &["robot1"], |c| {
        let _hub = start_hub(
            &c.fleet,
            &c.hub1_yaml(&[("robot1", "/robot1", TOK1)], &[]),
            &c.dir,
        )?;
        let ns1 = c.ns("robot1");
        let mut edge = c.edge(
            ns1,
            "robot1",
            &[UpstreamSpec {
                serve: vec!["/add_two_ints"],
                ..UpstreamSpec::to_hub("cloud", HUB_PORT, TOK1)
            }],
            19180,
        )?;
        wait_connected(&mut edge, "cloud")?;
        let script = peer_script("ros2service.py");
        let ty = "example_interfaces/srv/AddTwoInts";
        let mut server = spawn_in(
            ns1,
            &c.py,
            &[
                &script,
                "server",
                "--service",
                "/add_two_ints",
                "--type",
                ty,
                "--domain",
                ROBOT_DOMAIN,
                "--count",
                "5",
                "--timeout",
                "120",
            ],
            &[],
        )?;
        server.wait_stderr("READY", T)?;
        let mut client = spawn_in(
            c.fleet.cloud(),
            &c.py,
            &[
                &script,
                "client",
                "--service",
                "/robot1/add_two_ints",
                "--type",
                ty,
                "--domain",
                CLOUD_DOMAIN,
                "--calls",
                "5",
                "--a",
                "40",
                "--b",
                "2",
                "--b-step",
                "3",
                "--timeout",
                "20",
                "--wait-server",
                "60",
            ],
            &[],
        )?;
        let replies = samples(&client, 5)?;
        for (i, r) in replies.iter().enumerate() {
            let b = 2 + 3 * i as i64;
            ensure!(
                r["a"] == 40 && r["b"] == b && r["sum"] == 40 + b,
                "call {i}: {r}"
            );
        }
        client.wait_success(T)?;
        server.wait_success(T)?;
        Ok(())
    });
}

/// Robot clients calling cloud servers: one under the robot's namespace (`/robot1/plan` is
/// `/plan` for robot1), one shared with the fleet (`/fleet/where`). robot2 may call the shared
/// one but never sees robot1's `/plan`.
#[test]
fn robots_call_cloud_services() {
    run("cloud_services", &["robot1", "robot2"], |c| {
        let _hub = start_hub(
            &c.fleet,
            &c.hub1_yaml(
                &[("robot1", "/robot1", TOK1), ("robot2", "/robot2", TOK2)],
                &["/fleet/where"],
            ),
            &c.dir,
        )?;
        let mut edges = Vec::new();
        for (robot, tok, port) in [("robot1", TOK1, 19180), ("robot2", TOK2, 19182)] {
            let mut e = c.edge(
                c.ns(robot),
                robot,
                &[UpstreamSpec {
                    call: vec!["/plan", "/fleet/where"],
                    ..UpstreamSpec::to_hub("cloud", HUB_PORT, tok)
                }],
                port,
            )?;
            wait_connected(&mut e, "cloud")?;
            edges.push(e);
        }
        let script = peer_script("ros2service.py");
        let ty = "example_interfaces/srv/AddTwoInts";
        let server = |service: &str, count: &str| {
            spawn_in(
                c.fleet.cloud(),
                &c.py,
                &[
                    &script,
                    "server",
                    "--service",
                    service,
                    "--type",
                    ty,
                    "--domain",
                    CLOUD_DOMAIN,
                    "--count",
                    count,
                    "--timeout",
                    "120",
                ],
                &[],
            )
        };
        let mut plan = server("/robot1/plan", "3")?;
        let mut where_ = server("/fleet/where", "4")?;
        plan.wait_stderr("READY", T)?;
        where_.wait_stderr("READY", T)?;
        let client = |robot: &str, service: &str, calls: &str, wait: &str| {
            spawn_in(
                c.ns(robot),
                &c.py,
                &[
                    &script,
                    "client",
                    "--service",
                    service,
                    "--type",
                    ty,
                    "--domain",
                    ROBOT_DOMAIN,
                    "--calls",
                    calls,
                    "--a",
                    "7",
                    "--b",
                    "5",
                    "--timeout",
                    "20",
                    "--wait-server",
                    wait,
                ],
                &[],
            )
        };
        let mut c1 = client("robot1", "/plan", "3", "60")?;
        for r in samples(&c1, 3)? {
            ensure!(r["sum"] == 12, "robot1 /plan: {r}");
        }
        c1.wait_success(T)?;
        for robot in ["robot1", "robot2"] {
            let mut cl = client(robot, "/fleet/where", "2", "60")?;
            for r in samples(&cl, 2)? {
                ensure!(r["sum"] == 12, "{robot} /fleet/where: {r}");
            }
            cl.wait_success(T)?;
        }
        // robot2 has no /plan: robot1's /robot1/plan is not offered to it.
        let mut c2 = client("robot2", "/plan", "1", "10")?;
        ensure!(
            c2.wait_success(T).is_err(),
            "robot2 reached robot1's /plan service"
        );
        plan.wait_success(T)?;
        where_.wait_success(T)?;
        Ok(())
    });
}

/// Two bridges in one DDS domain never relay each other's writes (the loop rule): on robot1's
/// host, edge A writes the cloud's `/robot1/cmd` as `/cmd`; edge B (identity robot1b) relays
/// `/cmd` up, but not A's samples, only those of a real publisher.
#[test]
fn two_bridges_in_one_domain_do_not_echo() {
    run("two_bridges", &["robot1"], |c| {
        let _hub = start_hub(
            &c.fleet,
            &c.hub1_yaml(
                &[("robot1", "/robot1", TOK1), ("robot1b", "/robot1b", TOK2)],
                &[],
            ),
            &c.dir,
        )?;
        let ns1 = c.ns("robot1");
        let mut a = c.edge(
            ns1,
            "robot1",
            &[UpstreamSpec {
                down: vec!["/cmd"],
                ..UpstreamSpec::to_hub("cloud", HUB_PORT, TOK1)
            }],
            19180,
        )?;
        let mut b = c.edge(
            ns1,
            "robot1b",
            &[UpstreamSpec {
                up: vec!["/cmd"],
                ..UpstreamSpec::to_hub("cloud", HUB_PORT, TOK2)
            }],
            19182,
        )?;
        wait_connected(&mut a, "cloud")?;
        wait_connected(&mut b, "cloud")?;
        let cloud = c.fleet.cloud();
        // The cloud commands robot1; edge A writes /cmd on the robot.
        let echo = c.quiet_sub(cloud, CLOUD_DOMAIN, "rt/robot1b/cmd", STRING)?;
        let local = c.sub(ns1, ROBOT_DOMAIN, "rt/cmd", STRING, 3, &[])?;
        let cmds: Vec<Value> = (0..3).map(|i| string(&format!("cmd {i}"))).collect();
        let mut cmd_pub = c.gated_pub(cloud, CLOUD_DOMAIN, "rt/robot1/cmd", STRING, &cmds, &[])?;
        go(&mut cmd_pub, &[&local])?;
        ensure!(
            samples(&local, 3)? == cmds,
            "robot1 did not get its commands"
        );
        assert_quiet(&echo, "edge B relayed edge A's writes")?;
        ensure!(
            b.log().contains("another bridge in this DDS domain"),
            "edge B did not recognise edge A"
        );
        // A real publisher on /cmd is relayed by B as usual.
        let real_sub = c.sub(cloud, CLOUD_DOMAIN, "rt/robot1b/cmd", STRING, 2, &[])?;
        let vals: Vec<Value> = (0..2).map(|i| string(&format!("real {i}"))).collect();
        let mut real_pub = c.gated_pub(ns1, ROBOT_DOMAIN, "rt/cmd", STRING, &vals, &[])?;
        go(&mut real_pub, &[&real_sub])?;
        ensure!(
            samples(&real_sub, 2)? == vals,
            "edge B did not relay a real publisher"
        );
        Ok(())
    });
}
