//! One simulated robot in its own DDS domain: a *base* process (the sensor node and the
//! actuator node, which share the simulated body as drivers share hardware) and a *control*
//! process, each its own DDS participant, talking real ROS 2 topics:
//!
//! | topic | type | QoS | from -> to |
//! |---|---|---|---|
//! | `/battery_state` | `sensor_msgs/msg/BatteryState` (with temperature) | best effort | sensor -> control, mapper |
//! | `/odom` | `nav_msgs/msg/Odometry` | best effort | sensor -> control, mapper |
//! | `/points` | `sensor_msgs/msg/PointCloud2` (~200 KB, 2 Hz) | best effort | sensor -> (local consumers) |
//! | `/cmd_vel` | `geometry_msgs/msg/Twist` | reliable | control -> actuator |
//! | `/speed_limit` | `std_msgs/msg/Float64` | reliable, transient local | mapper -> actuator; the actuator echoes the limit it applied (the mapper's readback) |
//! | `/mission` | `std_msgs/msg/String` (JSON `{"id","goal":[x,y]}`) | reliable | fleet (via bridge) -> control |
//! | `/fleet_status` | `std_msgs/msg/String` (JSON) | reliable | control -> fleet (via bridge) |

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use ros2::dds::{Participant, ParticipantConfig, Qos};
use ros2::msg::Registry;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::topic::{Publisher, Subscription};

/// Speed the control node asks for while cruising (above the example's limits, so the
/// actuator has something to clamp).
pub const CRUISE_SPEED: f64 = 0.8;
/// The actuator's own limit until one arrives on `/speed_limit`.
pub const DEFAULT_LIMIT: f64 = 1.0;
/// Size of the simulated point cloud (points of 16 bytes).
pub const CLOUD_POINTS: usize = 12_800;

/// What the robot's nodes know, for the view and the checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RobotState {
    pub name: String,
    pub domain: u16,
    /// 0..=1.
    pub battery: f64,
    pub temperature: f64,
    pub x: f64,
    pub y: f64,
    pub yaw: f64,
    /// Linear speed the actuator applies now.
    pub speed: f64,
    /// Linear speed last commanded on `/cmd_vel`.
    pub commanded: f64,
    /// The limit last received on `/speed_limit`.
    pub applied_limit: Option<f64>,
    /// Commands clamped since the current limit arrived on `/speed_limit`.
    pub clamped: u64,
    /// Applied speeds above the applied limit (must stay 0).
    pub over_limit: u64,
    /// The mission the control node works on, and its state.
    pub mission: Option<String>,
    pub mission_state: String,
    pub missions_received: u64,
    /// Messages published by the sensor node.
    pub sensor_messages: u64,
    pub cloud_bytes: u64,
}

/// A running robot.
#[derive(Debug)]
pub struct Robot {
    pub name: String,
    pub domain: u16,
    state: Arc<Mutex<RobotState>>,
    tasks: Vec<JoinHandle<()>>,
    participants: Vec<Participant>,
}

fn lock(s: &Mutex<RobotState>) -> MutexGuard<'_, RobotState> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

fn stamp() -> Value {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    json!({"sec": d.as_secs() as i32, "nanosec": d.subsec_nanos()})
}

fn reliable() -> Qos {
    Qos::ros_default()
}

/// The `/speed_limit` QoS (what the example Device's `speed-limit` property writes).
pub fn speed_limit_qos() -> Qos {
    Qos::latched()
}

/// The clamp of the actuator: the applied speed for a commanded one.
pub fn clamp_speed(commanded: f64, limit: f64) -> f64 {
    commanded.clamp(-limit.abs(), limit.abs())
}

impl Robot {
    /// Starts the robot's nodes in `domain` (loopback only).
    pub async fn start(
        name: &str,
        domain: u16,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let state = Arc::new(Mutex::new(RobotState {
            name: name.to_owned(),
            domain,
            battery: 1.0,
            temperature: 25.0,
            mission_state: "patrol".into(),
            ..RobotState::default()
        }));
        let base = new_participant(domain).await?;
        let control = new_participant(domain).await?;
        let tasks = vec![
            tokio::spawn(log_err(
                "sensor",
                sensor_node(
                    name.to_owned(),
                    base.clone(),
                    registry.clone(),
                    state.clone(),
                    shutdown.clone(),
                ),
            )),
            tokio::spawn(log_err(
                "actuator",
                actuator_node(
                    base.clone(),
                    registry.clone(),
                    state.clone(),
                    shutdown.clone(),
                ),
            )),
            tokio::spawn(log_err(
                "control",
                control_node(
                    name.to_owned(),
                    control.clone(),
                    registry,
                    state.clone(),
                    shutdown,
                ),
            )),
        ];
        Ok(Self {
            name: name.to_owned(),
            domain,
            state,
            tasks,
            participants: vec![base, control],
        })
    }

    /// A copy of the state now.
    pub fn state(&self) -> RobotState {
        lock(&self.state).clone()
    }

    /// Waits for the nodes (after the shutdown token) and closes the participants.
    pub async fn stop(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        for p in self.participants {
            p.shutdown();
        }
    }
}

/// A loopback-only participant, made off the async threads (rustdds blocks while starting).
pub async fn new_participant(domain: u16) -> Result<Participant> {
    tokio::task::spawn_blocking(move || Participant::new(ParticipantConfig::localhost(domain)))
        .await
        .context("participant task")?
        .with_context(|| format!("DDS participant in domain {domain}"))
}

async fn log_err(node: &'static str, f: impl std::future::Future<Output = Result<()>>) {
    if let Err(e) = f.await {
        tracing::error!(node, error = %format!("{e:#}"), "node failed");
    }
}

/// The point cloud, encoded once (x, y, z, intensity as float32; a ring around the robot).
fn point_cloud(name: &str, publisher: &Publisher) -> Result<Vec<u8>> {
    let mut data = Vec::with_capacity(CLOUD_POINTS * 16);
    for i in 0..CLOUD_POINTS {
        let a = i as f32 * 0.01;
        let r = 2.0 + (i % 7) as f32 * 0.1;
        for v in [r * a.cos(), r * a.sin(), (i % 32) as f32 * 0.05, 1.0] {
            data.extend_from_slice(&v.to_le_bytes());
        }
    }
    let field = |n: &str, off: u32| json!({"name": n, "offset": off, "datatype": 7, "count": 1});
    publisher.encode(&json!({
        "header": {"frame_id": format!("{name}/lidar"), "stamp": stamp()},
        "height": 1, "width": CLOUD_POINTS as u32,
        "fields": [field("x", 0), field("y", 4), field("z", 8), field("intensity", 12)],
        "is_bigendian": false, "point_step": 16, "row_step": (CLOUD_POINTS * 16) as u32,
        "data": data, "is_dense": true,
    }))
}

async fn sensor_node(
    name: String,
    p: Participant,
    registry: Arc<Registry>,
    state: Arc<Mutex<RobotState>>,
    shutdown: CancellationToken,
) -> Result<()> {
    let sensor = Qos::sensor_data();
    let battery = Publisher::new(
        &p,
        &registry,
        "/battery_state",
        "sensor_msgs/msg/BatteryState",
        &sensor,
    )?;
    let odom = Publisher::new(&p, &registry, "/odom", "nav_msgs/msg/Odometry", &sensor)?;
    let points = Publisher::new(
        &p,
        &registry,
        "/points",
        "sensor_msgs/msg/PointCloud2",
        &sensor,
    )?;
    let cloud = bytes::Bytes::from(point_cloud(&name, &points)?);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        n += 1;
        let s = lock(&state).clone();
        let (qz, qw) = ((s.yaw / 2.0).sin(), (s.yaw / 2.0).cos());
        odom.publish(&json!({
            "header": {"frame_id": "odom", "stamp": stamp()},
            "child_frame_id": format!("{name}/base_link"),
            "pose": {"pose": {"position": {"x": s.x, "y": s.y},
                              "orientation": {"z": qz, "w": qw}}},
            "twist": {"twist": {"linear": {"x": s.speed}}},
        }))
        .await?;
        let mut sent = 1;
        let mut bytes = 0;
        if n.is_multiple_of(5) {
            battery
                .publish(&json!({
                    "header": {"frame_id": format!("{name}/battery"), "stamp": stamp()},
                    "voltage": 22.0 + 3.2 * s.battery, "temperature": s.temperature,
                    "current": -1.0 - 4.0 * s.speed.abs(), "percentage": s.battery,
                    "power_supply_status": 2, "present": true,
                    "cell_voltage": vec![3.6 + 0.5 * s.battery; 6],
                    "location": name, "serial_number": format!("{name}-pack"),
                }))
                .await?;
            points.publish_raw(cloud.clone()).await?;
            sent += 2;
            bytes = cloud.len() as u64;
        }
        let mut st = lock(&state);
        st.sensor_messages += sent;
        st.cloud_bytes += bytes;
    }
}

async fn actuator_node(
    p: Participant,
    registry: Arc<Registry>,
    state: Arc<Mutex<RobotState>>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut cmd = Subscription::new(
        &p,
        &registry,
        "/cmd_vel",
        "geometry_msgs/msg/Twist",
        &reliable(),
    )?;
    let mut limit = Subscription::new(
        &p,
        &registry,
        "/speed_limit",
        "std_msgs/msg/Float64",
        &speed_limit_qos(),
    )?;
    // The applied limit, echoed on `/speed_limit` (once per change): the mapper's readback of
    // the `speed-limit` property, from a participant other than the mapper's writer.
    let echo = Publisher::new(
        &p,
        &registry,
        "/speed_limit",
        "std_msgs/msg/Float64",
        &speed_limit_qos(),
    )?;
    let mut echoed: Option<f64> = None;
    let dt = 0.1;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut turn = 0.0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = cmd.recv() => {
                let Some(m) = m else { return Ok(()) };
                let v = m.pointer("/linear/x").and_then(Value::as_f64).unwrap_or(0.0);
                turn = m.pointer("/angular/z").and_then(Value::as_f64).unwrap_or(0.0);
                let mut s = lock(&state);
                s.commanded = v;
                let lim = s.applied_limit.unwrap_or(DEFAULT_LIMIT);
                s.speed = clamp_speed(v, lim);
                if s.applied_limit.is_some() && v.abs() > lim {
                    s.clamped += 1;
                }
            }
            m = limit.recv() => {
                let Some(m) = m else { return Ok(()) };
                if let Some(l) = m.get("data").and_then(Value::as_f64) {
                    {
                        let mut s = lock(&state);
                        if s.applied_limit != Some(l) {
                            tracing::info!(limit = l, "actuator: speed limit applied");
                            s.applied_limit = Some(l);
                            s.clamped = 0;
                        }
                        s.speed = clamp_speed(s.commanded, l);
                    }
                    if echoed != Some(l) {
                        echoed = Some(l);
                        echo.publish(&json!({"data": l})).await?;
                    }
                }
            }
            _ = tick.tick() => {
                let mut s = lock(&state);
                if let Some(l) = s.applied_limit {
                    if s.speed.abs() > l + 1e-9 {
                        s.over_limit += 1;
                    }
                }
                s.yaw = (s.yaw + turn * dt + std::f64::consts::PI)
                    .rem_euclid(2.0 * std::f64::consts::PI) - std::f64::consts::PI;
                s.x += s.speed * s.yaw.cos() * dt;
                s.y += s.speed * s.yaw.sin() * dt;
                s.battery = (s.battery - dt * (0.0004 + 0.003 * s.speed.abs())).max(0.0);
                s.temperature += (25.0 + 12.0 * s.speed.abs() - s.temperature) * 0.05;
            }
        }
    }
}

/// The control node's steering: (linear, angular) towards `goal` from the pose, `None` once
/// there (within 0.2 m).
pub fn steer(x: f64, y: f64, yaw: f64, goal: (f64, f64)) -> Option<(f64, f64)> {
    let (dx, dy) = (goal.0 - x, goal.1 - y);
    if dx.hypot(dy) < 0.2 {
        return None;
    }
    let mut err = dy.atan2(dx) - yaw;
    while err > std::f64::consts::PI {
        err -= 2.0 * std::f64::consts::PI;
    }
    while err < -std::f64::consts::PI {
        err += 2.0 * std::f64::consts::PI;
    }
    let v = if err.abs() > 1.2 { 0.0 } else { CRUISE_SPEED };
    Some((v, (2.0 * err).clamp(-1.5, 1.5)))
}

async fn control_node(
    name: String,
    p: Participant,
    registry: Arc<Registry>,
    state: Arc<Mutex<RobotState>>,
    shutdown: CancellationToken,
) -> Result<()> {
    let cmd = Publisher::new(
        &p,
        &registry,
        "/cmd_vel",
        "geometry_msgs/msg/Twist",
        &reliable(),
    )?;
    let status = Publisher::new(
        &p,
        &registry,
        "/fleet_status",
        "std_msgs/msg/String",
        &reliable(),
    )?;
    let mut mission = Subscription::new(
        &p,
        &registry,
        "/mission",
        "std_msgs/msg/String",
        &reliable(),
    )?;
    let mut odom = Subscription::new(
        &p,
        &registry,
        "/odom",
        "nav_msgs/msg/Odometry",
        &Qos::sensor_data(),
    )?;
    let mut battery = Subscription::new(
        &p,
        &registry,
        "/battery_state",
        "sensor_msgs/msg/BatteryState",
        &Qos::sensor_data(),
    )?;
    let mut pose = (0.0, 0.0, 0.0);
    let mut speed = 0.0;
    let mut charge = 1.0;
    let mut goal: Option<(String, (f64, f64))> = None;
    let mut drive = tokio::time::interval(Duration::from_millis(200));
    let mut report = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = mission.recv() => {
                let Some(m) = m else { return Ok(()) };
                let text = m.get("data").and_then(Value::as_str).unwrap_or_default();
                match parse_mission(text) {
                    Some((id, g)) => {
                        tracing::info!(robot = %name, mission = %id, "mission received");
                        let mut s = lock(&state);
                        s.mission = Some(id.clone());
                        s.mission_state = "driving".into();
                        s.missions_received += 1;
                        goal = Some((id, g));
                        drop(s);
                        report.reset_immediately();
                    }
                    None => tracing::warn!(robot = %name, text, "mission not understood"),
                }
            }
            m = odom.recv() => {
                let Some(m) = m else { return Ok(()) };
                let f = |p: &str| m.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
                let (qz, qw) = (f("/pose/pose/orientation/z"), f("/pose/pose/orientation/w"));
                pose = (f("/pose/pose/position/x"), f("/pose/pose/position/y"), 2.0 * qz.atan2(qw));
                speed = f("/twist/twist/linear/x");
            }
            m = battery.recv() => {
                let Some(m) = m else { return Ok(()) };
                charge = m.get("percentage").and_then(Value::as_f64).unwrap_or(charge);
            }
            _ = drive.tick() => {
                let (v, w) = match &goal {
                    Some((_, g)) => match steer(pose.0, pose.1, pose.2, *g) {
                        Some(vw) => vw,
                        None => {
                            lock(&state).mission_state = "arrived".into();
                            (0.0, 0.0)
                        }
                    },
                    None => (CRUISE_SPEED, 0.4),
                };
                cmd.publish(&json!({"linear": {"x": v}, "angular": {"z": w}})).await?;
            }
            _ = report.tick() => {
                let s = lock(&state).clone();
                let text = json!({
                    "robot": name, "mission": s.mission, "state": s.mission_state,
                    "battery": (charge * 1000.0).round() / 10.0,
                    "x": (pose.0 * 100.0).round() / 100.0, "y": (pose.1 * 100.0).round() / 100.0,
                    "speed": (speed * 100.0).round() / 100.0,
                }).to_string();
                status.publish(&json!({"data": text})).await?;
            }
        }
    }
}

/// Parses a mission (`{"id":"m1","goal":[x,y]}`).
pub fn parse_mission(text: &str) -> Option<(String, (f64, f64))> {
    let v: Value = serde_json::from_str(text).ok()?;
    let id = v.get("id")?.as_str()?.to_owned();
    let g = v.get("goal")?.as_array()?;
    Some((id, (g.first()?.as_f64()?, g.get(1)?.as_f64()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_both_ways() {
        assert_eq!(clamp_speed(0.8, 0.3), 0.3);
        assert_eq!(clamp_speed(-0.8, 0.3), -0.3);
        assert_eq!(clamp_speed(0.2, 0.3), 0.2);
    }

    #[test]
    fn missions_parse_or_are_refused() {
        assert_eq!(
            parse_mission(r#"{"id":"m1","goal":[1.5,-2]}"#),
            Some(("m1".into(), (1.5, -2.0)))
        );
        assert_eq!(parse_mission("go somewhere"), None);
        assert_eq!(parse_mission(r#"{"id":"m1"}"#), None);
    }

    #[test]
    fn steering_heads_for_the_goal_and_stops_there() {
        let (v, w) = steer(0.0, 0.0, 0.0, (2.0, 0.0)).unwrap_or_default();
        assert_eq!((v, w), (CRUISE_SPEED, 0.0));
        let (_, w) = steer(0.0, 0.0, 0.0, (0.0, 2.0)).unwrap_or_default();
        assert!(w > 0.0);
        assert_eq!(steer(1.0, 1.0, 0.0, (1.1, 1.0)), None);
    }
}
