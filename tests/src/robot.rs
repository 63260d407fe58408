//! End-to-end pieces for the mapper: a simulated robot on Cyclone DDS
//! (`tests/python/robot.py`), the mapper binary with a generated config, and
//! the robot's Device and DeviceModel.
//!
//! DDS stays on the host's loopback with unicast peers: the mapper runs with
//! `discoveryRange: LOCALHOST` (rustdds announces to 127.0.0.1 only) and
//! Cyclone gets a config with `lo` only, multicast off and peer 127.0.0.1.
//! (The backends' far sides — Mosquitto, the edgecore stand-ins, the fake API
//! server — listen on loopback or Unix sockets, which a network namespace
//! would cut off from the test process.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use mapper_core::model::{Device, DeviceModel};

use crate::proc::Proc;

/// Cyclone DDS on loopback only, unicast discovery to 127.0.0.1.
pub const CYCLONE_LOOPBACK: &str = r#"<CycloneDDS><Domain Id="any"><General><Interfaces><NetworkInterface name="lo"/></Interfaces><AllowMulticast>false</AllowMulticast></General><Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>30</MaxAutoParticipantIndex><Peers><Peer address="127.0.0.1"/></Peers></Discovery></Domain></CycloneDDS>"#;

/// A domain id for this test process and test number.
pub fn domain(n: u16) -> u16 {
    (std::process::id() % 40) as u16 * 5 + 20 + n
}

/// The simulated robot (Cyclone DDS): BatteryState and Odometry at 10 Hz,
/// subscribes cmd_vel.
#[derive(Debug)]
pub struct Robot {
    pub proc: Proc,
}

impl Robot {
    pub fn start(py: &Path, dir: &Path, domain: u16, namespace: &str) -> Result<Self> {
        let cfg = dir.join("cyclonedds.xml");
        std::fs::write(&cfg, CYCLONE_LOOPBACK)?;
        let mut c = Command::new(py);
        c.arg(crate::python_dir().join("robot.py"))
            .args([
                "--domain",
                &domain.to_string(),
                "--namespace",
                namespace,
                "--rate",
                "10",
            ])
            .env("CYCLONEDDS_URI", format!("file://{}", cfg.display()));
        let proc = Proc::spawn("robot", c)?;
        proc.wait_stderr("READY", Duration::from_secs(30))?;
        Ok(Self { proc })
    }

    /// Sends a command (`set battery 0.5`, `stop`, `start`) and waits for its echo.
    pub fn command(&mut self, line: &str) -> Result<()> {
        self.proc.send_line(line)?;
        self.proc
            .wait_stderr(&format!("OK {line}"), Duration::from_secs(10))?;
        Ok(())
    }

    /// Waits until a cmd_vel writer (the mapper) is matched.
    pub fn wait_cmd_vel_matched(&self) -> Result<()> {
        self.proc
            .wait_stderr("MATCHED cmd_vel 1", Duration::from_secs(30))?;
        Ok(())
    }

    /// The next cmd_vel received: (linear.x, angular.z).
    pub fn next_cmd_vel(&self, timeout: Duration) -> Result<(f64, f64)> {
        let line = self.proc.read_lines(1, timeout)?.remove(0);
        let v: serde_json::Value = serde_json::from_str(&line).context("robot stdout")?;
        Ok((
            v["linear_x"].as_f64().unwrap_or(f64::NAN),
            v["angular_z"].as_f64().unwrap_or(f64::NAN),
        ))
    }
}

/// The robot as a Device (scalar-only visitor config, so DMI can carry it).
pub fn robot_device(domain: u16, namespace: &str, node: &str) -> Device {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: robot1, namespace: default}}
spec:
  deviceModelRef: {{name: ros2-mobile-robot}}
  nodeName: {node}
  protocol:
    protocolName: ros2
    configData: {{domainId: {domain}, namespace: {namespace}, livenessCycles: 2}}
  properties:
    - name: battery
      collectCycle: 200
      reportCycle: 60000
      reportToCloud: true
      visitors:
        protocolName: ros2
        configData: {{topic: battery_state, type: sensor_msgs/msg/BatteryState, field: percentage, scale: 100}}
    - name: position-x
      collectCycle: 200
      reportCycle: 60000
      reportToCloud: true
      visitors:
        protocolName: ros2
        configData: {{topic: odom, type: nav_msgs/msg/Odometry, field: pose.pose.position.x}}
    - name: speed
      reportToCloud: true
      visitors:
        protocolName: ros2
        configData: {{direction: write, topic: cmd_vel, type: geometry_msgs/msg/Twist, field: linear.x,
                      template: '{{"angular": {{"z": 0.1}}}}'}}
"#
    ))
    .expect("robot device yaml")
}

/// The robot's DeviceModel: battery (percent), position, speed limit 0..1.5.
pub fn robot_model() -> DeviceModel {
    serde_yaml::from_str(
        r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: ros2-mobile-robot, namespace: default}
spec:
  protocol: ros2
  properties:
    - {name: battery, type: DOUBLE, accessMode: ReadOnly, minimum: "0", maximum: "100", unit: percent}
    - {name: position-x, type: DOUBLE, accessMode: ReadOnly, unit: m}
    - {name: speed, type: DOUBLE, accessMode: ReadWrite, minimum: "0", maximum: "1.5", unit: m/s}
"#,
    )
    .expect("robot model yaml")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The mapper binary with `config` (YAML) written into `dir`.
pub fn start_mapper(dir: &Path, config: &str, extra_env: &[(&str, &str)]) -> Result<Proc> {
    let path: PathBuf = dir.join("mapper.yaml");
    std::fs::write(&path, config)?;
    let mut c = Command::new(mapper_bin());
    c.arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info,rustdds=error");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let p = Proc::spawn("mapper", c)?;
    p.wait_stderr("mapper started", Duration::from_secs(30))?;
    Ok(p)
}

/// The `mapper` binary of this workspace (see [`crate::workspace_bin`]).
pub fn mapper_bin() -> PathBuf {
    crate::workspace_bin("mapper")
}

/// GETs `http://127.0.0.1:port/path` and returns (status, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
