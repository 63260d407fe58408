//! The fleet manager in the cloud domain: sends each robot a mission on `/<robot>/mission`
//! (which the hub relays to that robot's `/mission`) and reads `/<robot>/fleet_status` (relayed
//! up from the robot's control node). A mission is acknowledged when the robot's status names
//! it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Result;
use ros2::dds::{Participant, Qos};
use ros2::msg::Registry;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::topic::{Publisher, Subscription};

/// How often a new mission goes to each robot.
pub const MISSION_EVERY: Duration = Duration::from_secs(4);

/// The `/mission` QoS: reliable and latched, so a robot whose link comes up later still gets
/// the current mission.
pub fn mission_qos() -> Qos {
    Qos::latched()
}

/// What the fleet manager knows of one robot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RobotView {
    pub missions_sent: u64,
    pub last_sent: Option<String>,
    /// Missions acknowledged (named by a status after they were sent).
    pub acked: u64,
    pub last_acked: Option<String>,
    /// Send -> acknowledging status, in ms, of the last acknowledged mission.
    pub last_round_trip_ms: Option<u64>,
    pub statuses: u64,
    /// The last status (JSON).
    pub status: Option<Value>,
}

/// The running fleet manager.
#[derive(Debug)]
pub struct Fleet {
    robots: Arc<Mutex<BTreeMap<String, RobotView>>>,
    task: JoinHandle<()>,
}

fn lock(m: &Mutex<BTreeMap<String, RobotView>>) -> MutexGuard<'_, BTreeMap<String, RobotView>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The n-th goal: corners of a 3 m square, in turn.
pub fn goal(n: u64) -> (f64, f64) {
    [(3.0, 0.0), (3.0, 3.0), (0.0, 3.0), (0.0, 0.0)][(n % 4) as usize]
}

impl Fleet {
    /// Starts the manager on `participant` (the cloud domain) for `robots`.
    pub fn start(
        participant: &Participant,
        registry: &Registry,
        robots: &[String],
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let state: Arc<Mutex<BTreeMap<String, RobotView>>> = Arc::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Value)>(64);
        let mut publishers = Vec::new();
        for r in robots {
            publishers.push((
                r.clone(),
                Publisher::new(
                    participant,
                    registry,
                    &format!("/{r}/mission"),
                    "std_msgs/msg/String",
                    &mission_qos(),
                )?,
            ));
            let mut sub = Subscription::new(
                participant,
                registry,
                &format!("/{r}/fleet_status"),
                "std_msgs/msg/String",
                &Qos::ros_default(),
            )?;
            let (tx, shutdown) = (tx.clone(), shutdown.clone());
            let robot = r.clone();
            tokio::spawn(async move {
                loop {
                    let m = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        m = sub.recv() => m,
                    };
                    let Some(m) = m else { break };
                    let text = m.get("data").and_then(Value::as_str).unwrap_or_default();
                    let status = serde_json::from_str(text).unwrap_or(Value::Null);
                    if tx.send((robot.clone(), status)).await.is_err() {
                        break;
                    }
                }
            });
            lock(&state).insert(r.clone(), RobotView::default());
        }
        drop(tx);
        let robots_state = state.clone();
        let task = tokio::spawn(async move {
            let mut sent_at: BTreeMap<String, Instant> = BTreeMap::new();
            let mut tick = tokio::time::interval(MISSION_EVERY);
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        n += 1;
                        for (r, p) in &publishers {
                            let id = format!("{r}-m{n}");
                            let (gx, gy) = goal(n);
                            let text = json!({"id": id, "goal": [gx, gy]}).to_string();
                            if let Err(e) = p.publish(&json!({"data": text})).await {
                                tracing::warn!(robot = %r, error = %e, "mission not sent");
                                continue;
                            }
                            tracing::info!(robot = %r, mission = %id, "mission sent");
                            sent_at.insert(id.clone(), Instant::now());
                            let mut s = lock(&state);
                            let v = s.entry(r.clone()).or_default();
                            v.missions_sent += 1;
                            v.last_sent = Some(id);
                        }
                    }
                    m = rx.recv() => {
                        let Some((r, status)) = m else { break };
                        let mut s = lock(&state);
                        let v = s.entry(r).or_default();
                        v.statuses += 1;
                        let named = status.get("mission").and_then(Value::as_str).map(str::to_owned);
                        if let Some(id) = named {
                            if v.last_acked.as_deref() != Some(&id) {
                                if let Some(t) = sent_at.get(&id) {
                                    v.acked += 1;
                                    v.last_round_trip_ms = Some(t.elapsed().as_millis() as u64);
                                    v.last_acked = Some(id);
                                }
                            }
                        }
                        v.status = Some(status);
                    }
                }
            }
        });
        Ok(Self {
            robots: robots_state,
            task,
        })
    }

    /// What the manager knows now, by robot.
    pub fn view(&self) -> BTreeMap<String, RobotView> {
        lock(&self.robots).clone()
    }

    /// Waits for the manager (after the shutdown token).
    pub async fn stop(self) {
        let _ = self.task.await;
    }
}
