//! The robots as KubeEdge devices: the shipped example (`manifests/examples/robot/
//! ros2-mobile-robot.yaml`: DeviceModel `ros2-mobile-robot` and Device `robot1`), robot2
//! derived from it in code, and one mapper per robot (the project's mapper core with its MQTT
//! backend) against the embedded broker.
//!
//! The example's Device reads `/robot1/...` in domain 0; here each robot has a domain of its
//! own and unprefixed topics, so the demo sets `configData.domainId` to the robot's domain and
//! `configData.namespace` to `/`, and nothing else.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use mapper_core::backend::{self, DeviceBinding};
use mapper_core::mapper::{Manager, ManagerConfig};
use mapper_core::metrics::Metrics;
use mapper_core::model::{Device, DeviceModel};
use mapper_core::visitor::PlanDefaults;
use mapper_mqtt::{DeviceIdForm, MqttBackend, MqttConfig};
use ros2::dds::DiscoveryRange;
use ros2::msg::Registry;
use serde_yaml::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The shipped example, embedded.
pub const EXAMPLE: &str = include_str!("../../manifests/examples/robot/ros2-mobile-robot.yaml");
/// Where it lives in the repository (for messages).
pub const EXAMPLE_PATH: &str = "manifests/examples/robot/ros2-mobile-robot.yaml";

/// A robot's Device, ready for its mapper.
#[derive(Debug, Clone)]
pub struct RobotDevice {
    /// The robot name (`robot1`).
    pub robot: String,
    /// The node it is bound to (`robot1-node`).
    pub node: String,
    /// `{namespace}/{name}`.
    pub id: String,
    /// `spec.properties[].desired.value` (property, value).
    pub desired: Vec<(String, String)>,
    pub binding: DeviceBinding,
}

fn set(v: &mut Value, path: &[&str], new: Value) -> Result<()> {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        cur = cur
            .get_mut(*k)
            .with_context(|| format!("{EXAMPLE_PATH}: no {}", path.join(".")))?;
    }
    let last = path[path.len() - 1];
    cur.as_mapping_mut()
        .with_context(|| format!("{EXAMPLE_PATH}: {} is not a mapping", path.join(".")))?
        .insert(Value::from(last), new);
    Ok(())
}

/// The example's Device for `robot` in `domain` (robot1 as shipped, others derived).
pub fn robot_device(robot: &str, domain: u16) -> Result<RobotDevice> {
    let mut device: Option<Value> = None;
    let mut model_text = String::new();
    for doc in serde_yaml::Deserializer::from_str(EXAMPLE) {
        let v = <Value as serde::Deserialize>::deserialize(doc)
            .with_context(|| format!("{EXAMPLE_PATH}: YAML"))?;
        match v.get("kind").and_then(Value::as_str) {
            Some("Device") => device = Some(v),
            Some("DeviceModel") => model_text = serde_yaml::to_string(&v)?,
            _ => {}
        }
    }
    let mut d = device.with_context(|| format!("{EXAMPLE_PATH}: no Device"))?;
    set(&mut d, &["metadata", "name"], Value::from(robot))?;
    set(
        &mut d,
        &["spec", "nodeName"],
        Value::from(format!("{robot}-node")),
    )?;
    set(
        &mut d,
        &["spec", "protocol", "configData", "domainId"],
        Value::from(u64::from(domain)),
    )?;
    set(
        &mut d,
        &["spec", "protocol", "configData", "namespace"],
        Value::from("/"),
    )?;
    let text = format!("{model_text}---\n{}", serde_yaml::to_string(&d)?);
    let (mut devices, mut models): (Vec<Device>, Vec<DeviceModel>) = (Vec::new(), Vec::new());
    mapper_mqtt::config::parse_documents(
        Path::new(EXAMPLE_PATH),
        &text,
        &mut devices,
        &mut models,
    )?;
    let node = format!("{robot}-node");
    let mut bindings =
        mapper_mqtt::config::bind_devices(&node, DeviceIdForm::Namespaced, devices, models)?;
    let binding = bindings
        .pop()
        .with_context(|| format!("{EXAMPLE_PATH}: no Device bound"))?;
    let id = binding.id();
    let desired = desired_values(&d);
    Ok(RobotDevice {
        robot: robot.to_owned(),
        node,
        id: format!("{}/{}", id.namespace, id.name),
        desired,
        binding,
    })
}

/// `spec.properties[].desired.value` by property name.
fn desired_values(device: &Value) -> Vec<(String, String)> {
    device
        .get("spec")
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_sequence)
        .map(|props| {
            props
                .iter()
                .filter_map(|p| {
                    let name = p.get("name")?.as_str()?;
                    let v = p.get("desired")?.get("value")?;
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other).ok()?.trim().to_owned(),
                    };
                    Some((name.to_owned(), v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A robot's mapper: the core manager and the MQTT backend, as `mapper` runs them.
#[derive(Debug)]
pub struct Mapper {
    tasks: Vec<JoinHandle<()>>,
}

impl Mapper {
    /// Starts the mapper of `device` (devices in `domain`) against the broker at `broker_url`.
    pub fn start(
        device: &RobotDevice,
        domain: u16,
        broker_url: &str,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let mut cfg = MqttConfig::new(device.node.clone());
        cfg.broker = broker_url.to_owned();
        cfg.client_id = Some(format!("ros2-mapper-{}", device.robot));
        cfg.get_retry_ms = 1000;
        cfg.reconnect_min_ms = 200;
        cfg.reconnect_max_ms = 2000;
        let backend = MqttBackend::with_devices(cfg, vec![device.binding.clone()])?;
        let (io, events, reports) = backend::channels(shutdown.clone());
        let manager = Manager::new(
            ManagerConfig {
                defaults: PlanDefaults {
                    domain_id: domain,
                    collect_cycle: Duration::from_millis(1000),
                    report_cycle: Duration::from_millis(10_000),
                    liveness_cycles: 3,
                },
                discovery_range: DiscoveryRange::Localhost,
                only_networks: Some(vec![std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)]),
            },
            registry,
            reports,
            None,
            Arc::new(Metrics::default()),
            shutdown,
        );
        let robot = device.robot.clone();
        let tasks = vec![
            tokio::spawn(manager.run(events)),
            tokio::spawn(async move {
                if let Err(e) = backend.run(io).await {
                    tracing::error!(robot, error = %e, "mapper MQTT backend failed");
                }
            }),
        ];
        Ok(Self { tasks })
    }

    /// Waits for the mapper's tasks (after the shutdown token).
    pub async fn stop(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_gives_both_robots() {
        let r1 = robot_device("robot1", 41).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(r1.id, "default/robot1");
        assert_eq!(r1.node, "robot1-node");
        assert!(r1
            .desired
            .contains(&("speed-limit".to_owned(), "0.5".to_owned())));
        let r2 = robot_device("robot2", 42).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(r2.id, "default/robot2");
        let cfg = r2
            .binding
            .device
            .spec
            .protocol
            .as_ref()
            .and_then(|p| p.config_data.clone())
            .unwrap_or_default();
        assert_eq!(cfg["domainId"], 42);
        assert_eq!(cfg["namespace"], "/");
    }
}
