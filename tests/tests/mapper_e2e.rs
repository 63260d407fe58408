//! The mapper binary end to end, per backend: a simulated robot on Cyclone DDS
//! publishes BatteryState and Odometry and subscribes cmd_vel; the mapper
//! reports twins through the backend, desired speeds reach cmd_vel, values
//! out of range are refused, and the device goes offline and online with the
//! robot. See `integration_tests::robot` for how DDS stays on loopback.

use std::time::Duration;

use anyhow::Result;
use integration_tests::dmi_edgecore::DmiEdgecore;
use integration_tests::edgecore::EdgecoreStandIn;
use integration_tests::fake_kube::FakeKube;
use integration_tests::mosquitto::{self, Mosquitto, MqttProbe};
use integration_tests::prereq::{python, require};
use integration_tests::robot::{
    domain, free_port, http_get, robot_device, robot_model, start_mapper, Robot,
};
use mapper_core::model::DeviceId;
use mapper_mqtt::DeviceIdForm;

const T: Duration = Duration::from_secs(30);

fn setup() -> Option<std::path::PathBuf> {
    integration_tests::init_tracing();
    require("python venv", python())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmi_backend_with_a_cyclone_robot() -> Result<()> {
    let Some(py) = setup() else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let d = domain(1);
    let mut edgecore = DmiEdgecore::start(dir.path().join("dmi.sock"))?;
    let mut device = robot_device(d, "/robot1", "edge-1");
    edgecore.set_register_response(std::slice::from_ref(&device), &[robot_model()])?;
    let mut robot = Robot::start(&py, dir.path(), d, "/robot1")?;
    robot.command("set battery 0.5")?;
    robot.command("set x 2.25")?;
    let http = free_port()?;
    let config = format!(
        "backend: dmi\nros: {{discoveryRange: LOCALHOST}}\nhttp: {{listen: 127.0.0.1:{http}}}\n\
         dmi: {{edgecore_socket: {}, socket: {}, rate_limit: {{per_second: 20, burst: 20}}, min_report_interval_ms: 100}}\n",
        dir.path().join("dmi.sock").display(),
        dir.path().join("ros2.sock").display()
    );
    let mapper = start_mapper(dir.path(), &config, &[])?;

    // Registration, then the robot's values as reported twins.
    let reg = edgecore.wait_registrations(1).await?;
    assert_eq!(
        reg.mapper.as_ref().map(|m| m.protocol.as_str()),
        Some("ros2")
    );
    edgecore
        .wait_for("battery 50 and position 2.25", |r| {
            (r.latest_reported("default", "robot1", "battery").as_deref() == Some("50")
                && r.latest_reported("default", "robot1", "position-x")
                    .as_deref()
                    == Some("2.25"))
            .then_some(())
        })
        .await?;
    edgecore
        .wait_for("state online", |r| {
            r.state_reports
                .iter()
                .any(|s| s.state == "online")
                .then_some(())
        })
        .await?;
    let (status, body) = http_get(http, "/readyz")?;
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = http_get(http, "/metrics")?;
    assert!(
        metrics.contains("mapper_samples_total{device=\"default/robot1\"}"),
        "{metrics}"
    );

    // A desired speed (UpdateDevice, as edgecore sends after `kubectl patch`) reaches cmd_vel.
    robot.wait_cmd_vel_matched()?;
    let client = edgecore.mapper_client().await?;
    let set_speed = |device: &mut mapper_core::model::Device, v: &str| {
        let p = device
            .spec
            .properties
            .iter_mut()
            .find(|p| p.name == "speed")
            .expect("speed");
        p.desired = Some(mapper_core::model::TwinProperty {
            value: v.into(),
            metadata: Default::default(),
        });
    };
    set_speed(&mut device, "0.5");
    client.update_device(&device).await?;
    assert_eq!(robot.next_cmd_vel(T)?, (0.5, 0.1));
    edgecore
        .wait_for("speed reported with observedDesired", |r| {
            r.status_reports
                .iter()
                .rev()
                .flat_map(|s| s.reported_device.iter().flat_map(|d| d.twins.iter()))
                .find_map(|t| {
                    (t.property_name == "speed"
                        && t.observed_desired.as_ref().map(|o| o.value.as_str()) == Some("0.5")
                        && t.reported.as_ref().map(|o| o.value.as_str()) == Some("0.5"))
                    .then_some(())
                })
        })
        .await?;

    // Out of range (maximum 1.5): refused, never published; the next valid one is.
    set_speed(&mut device, "2");
    client.update_device(&device).await?;
    set_speed(&mut device, "1.25");
    client.update_device(&device).await?;
    assert_eq!(
        robot.next_cmd_vel(T)?,
        (1.25, 0.1),
        "2 must never reach cmd_vel"
    );
    mapper.wait_stderr("desired value rejected", T)?;

    // The robot goes quiet: offline; it comes back: online.
    robot.command("stop")?;
    edgecore
        .wait_for("state offline", |r| {
            (r.state_reports.last().map(|s| s.state.as_str()) == Some("offline")).then_some(())
        })
        .await?;
    robot.command("start")?;
    edgecore
        .wait_for("state online again", |r| {
            (r.state_reports.last().map(|s| s.state.as_str()) == Some("online")).then_some(())
        })
        .await?;

    // edgecore restarts: the mapper registers again and re-reports.
    let before = edgecore.recorded().status_reports.len();
    edgecore.restart().await?;
    edgecore.wait_registrations(2).await?;
    edgecore
        .wait_for("reports after the restart", |r| {
            (r.status_reports.len() > before).then_some(())
        })
        .await?;
    drop(mapper);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_backend_with_a_cyclone_robot() -> Result<()> {
    let Some(py) = setup() else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let d = domain(2);
    let kube = FakeKube::start(false).await;
    kube.apply_yaml(&serde_yaml::to_string(&robot_model())?)?;
    kube.apply_yaml(&serde_yaml::to_string(&robot_device(
        d,
        "/robot1",
        "robot-node",
    ))?)?;
    let mut robot = Robot::start(&py, dir.path(), d, "/robot1")?;
    robot.command("set battery 0.75")?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: u, user: {{}}}}]\ncontexts: [{{name: c, context: {{cluster: fake, user: u}}}}]\ncurrent-context: c\n",
            kube.url()
        ),
    )?;
    let config = "backend: kube\nnode: robot-node\nros: {discoveryRange: LOCALHOST}\nhttp: {enabled: false}\nkube: {statusMode: device}\n";
    let _mapper = start_mapper(
        dir.path(),
        config,
        &[("KUBECONFIG", &kubeconfig.display().to_string())],
    )?;

    let twin = |obj: &serde_json::Value, name: &str| -> Option<String> {
        obj["status"]["twins"]
            .as_array()?
            .iter()
            .find(|t| t["propertyName"] == name)?["reported"]["value"]
            .as_str()
            .map(str::to_owned)
    };
    kube.wait_for(
        "Device",
        "default",
        "robot1",
        |o| twin(o, "battery").as_deref() == Some("75") && o["status"]["state"] == "online",
        T,
    )
    .await?;

    // `kubectl patch` of the desired speed reaches cmd_vel.
    robot.wait_cmd_vel_matched()?;
    kube.patch_json(
        "Device",
        "default",
        "robot1",
        "kubectl",
        false,
        serde_json::json!({"spec": {"properties": [
            {"name": "battery", "collectCycle": 200, "reportCycle": 60000, "reportToCloud": true,
             "visitors": {"protocolName": "ros2", "configData": {"topic": "battery_state", "type": "sensor_msgs/msg/BatteryState", "field": "percentage", "scale": 100}}},
            {"name": "position-x", "collectCycle": 200, "reportCycle": 60000, "reportToCloud": true,
             "visitors": {"protocolName": "ros2", "configData": {"topic": "odom", "type": "nav_msgs/msg/Odometry", "field": "pose.pose.position.x"}}},
            {"name": "speed", "reportToCloud": true, "desired": {"value": "0.75"},
             "visitors": {"protocolName": "ros2", "configData": {"direction": "write", "topic": "cmd_vel", "type": "geometry_msgs/msg/Twist", "field": "linear.x", "template": "{\"angular\": {\"z\": 0.1}}"}}}
        ]}}),
    )?;
    assert_eq!(robot.next_cmd_vel(T)?, (0.75, 0.1));
    kube.wait_for(
        "Device",
        "default",
        "robot1",
        |o| twin(o, "speed").as_deref() == Some("0.75"),
        T,
    )
    .await?;

    robot.command("stop")?;
    kube.wait_for(
        "Device",
        "default",
        "robot1",
        |o| o["status"]["state"] == "offline",
        T,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_backend_with_a_cyclone_robot() -> Result<()> {
    let Some(py) = setup() else { return Ok(()) };
    if require("mosquitto", mosquitto::available()).is_none() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let d = domain(3);
    let mut broker = Mosquitto::start()?;
    let id = DeviceId::new("default", "robot1");
    let edgecore = EdgecoreStandIn::start(
        &broker.url(),
        "edge-1",
        vec![id.clone()],
        DeviceIdForm::Namespaced,
    )
    .await?;
    let devices = dir.path().join("devices.yaml");
    std::fs::write(
        &devices,
        format!(
            "{}---\n{}",
            serde_yaml::to_string(&robot_device(d, "/robot1", "edge-1"))?,
            serde_yaml::to_string(&robot_model())?
        ),
    )?;
    let mut robot = Robot::start(&py, dir.path(), d, "/robot1")?;
    robot.command("set battery 0.25")?;
    robot.command("set x -1.5")?;
    let config = format!(
        "backend: mqtt\nnode: edge-1\nros: {{discoveryRange: LOCALHOST}}\nhttp: {{enabled: false}}\n\
         mqtt: {{broker: \"{}\", devices: [{}], reconnectMinMs: 100, reconnectMaxMs: 1000}}\n",
        broker.url(),
        devices.display()
    );
    let mapper = start_mapper(dir.path(), &config, &[])?;

    edgecore
        .wait_actual(&id, "battery", |v| v == "25", T)
        .await?;
    edgecore
        .wait_actual(&id, "position-x", |v| v == "-1.5", T)
        .await?;
    edgecore.wait_state(&id, |s| s == "online", T).await?;

    // The cloud sets a desired speed: edgecore publishes a delta, cmd_vel gets it.
    robot.wait_cmd_vel_matched()?;
    edgecore.set_desired(&id, "speed", "0.5").await?;
    assert_eq!(robot.next_cmd_vel(T)?, (0.5, 0.1));
    edgecore
        .wait_actual(&id, "speed", |v| v == "0.5", T)
        .await?;

    // Out of range: refused (and published as a rejection), never sent.
    let mut probe =
        MqttProbe::start(&broker.url(), &["$ke/events/device/+/+/twin/rejected"]).await?;
    edgecore.set_desired(&id, "speed", "3").await?;
    let (topic, payload) = probe.recv(T).await?;
    let payload = String::from_utf8_lossy(&payload);
    assert!(
        topic.ends_with("default/robot1/twin/rejected") && payload.contains("maximum"),
        "{topic} {payload}"
    );
    edgecore.set_desired(&id, "speed", "1").await?;
    assert_eq!(
        robot.next_cmd_vel(T)?,
        (1.0, 0.1),
        "3 must never reach cmd_vel"
    );

    // Liveness: the robot stops publishing, then resumes.
    robot.command("stop")?;
    edgecore.wait_state(&id, |s| s == "offline", T).await?;
    robot.command("start")?;
    edgecore.wait_state(&id, |s| s == "online", T).await?;

    // Broker restart mid-test: the mapper reconnects and re-reports.
    robot.command("set battery 0.125")?;
    edgecore
        .wait_actual(&id, "battery", |v| v == "12.5", T)
        .await?;
    broker.restart()?;
    let edgecore = EdgecoreStandIn::start(
        &broker.url(),
        "edge-1",
        vec![id.clone()],
        DeviceIdForm::Namespaced,
    )
    .await?;
    edgecore
        .wait_actual(&id, "battery", |v| v == "12.5", T)
        .await?;
    edgecore
        .wait_actual(&id, "position-x", |v| v == "-1.5", T)
        .await?;
    edgecore.wait_state(&id, |s| s == "online", T).await?;
    drop(mapper);
    Ok(())
}
