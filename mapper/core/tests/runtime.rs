//! The mapper core end to end over real DDS on loopback (rustdds participants
//! restricted to 127.0.0.1): a simulated robot publishes BatteryState and
//! subscribes cmd_vel; the manager, fed backend events by the test, reports
//! twins and applies desired values.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use mapper_core::backend::{BackendEvent, DeviceBinding, DeviceState, Report};
use mapper_core::mapper::{Manager, ManagerConfig};
use mapper_core::metrics::Metrics;
use mapper_core::model::{Device, DeviceModel};
use mapper_core::visitor::PlanDefaults;
use ros2::cdr::{self, Endianness};
use ros2::dds::{DiscoveryRange, Participant, ParticipantConfig, Qos};
use ros2::msg::Registry;
use ros2::value::Value;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);

fn domain() -> u16 {
    (std::process::id() % 100) as u16 + 120
}

fn binding(domain: u16) -> DeviceBinding {
    let device: Device = serde_yaml::from_str(&format!(
        r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: robot1, namespace: default}}
spec:
  deviceModelRef: {{name: ros2-mobile-robot}}
  protocol: {{protocolName: ros2, configData: {{domainId: {domain}, namespace: /robot1, livenessCycles: 2}}}}
  properties:
    - name: battery
      collectCycle: 0
      visitors: {{protocolName: ros2, configData: {{topic: battery_state, type: sensor_msgs/msg/BatteryState, field: percentage, scale: 100}}}}
    - name: location
      collectCycle: 0
      visitors: {{protocolName: ros2, configData: {{topic: battery_state, type: sensor_msgs/msg/BatteryState, field: location}}}}
    - name: speed
      visitors:
        protocolName: ros2
        configData: {{direction: write, topic: cmd_vel, type: geometry_msgs/msg/Twist, field: linear.x, template: {{angular: {{z: 0.25}}}}}}
"#
    ))
    .unwrap();
    let model: DeviceModel = serde_yaml::from_str(
        r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: ros2-mobile-robot, namespace: default}
spec:
  protocol: ros2
  properties:
    - {name: battery, type: DOUBLE, accessMode: ReadOnly, minimum: "0", maximum: "100"}
    - {name: location, type: STRING, accessMode: ReadOnly}
    - {name: speed, type: DOUBLE, accessMode: ReadWrite, minimum: "0", maximum: "1.5"}
"#,
    )
    .unwrap();
    DeviceBinding {
        device,
        model: Some(model),
    }
}

async fn desire(
    tx: &mpsc::Sender<BackendEvent>,
    device: &mapper_core::model::DeviceId,
    property: &str,
    value: &str,
) {
    let ev = BackendEvent::Desired {
        device: device.clone(),
        property: property.into(),
        value: value.into(),
    };
    tx.send(ev).await.expect("manager gone");
}

async fn next_report(rx: &mut mpsc::Receiver<Report>, pred: impl Fn(&Report) -> bool) -> Report {
    timeout(T, async {
        loop {
            let r = rx.recv().await.expect("reports closed");
            if pred(&r) {
                return r;
            }
        }
    })
    .await
    .expect("no matching report in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_desired_values_and_liveness_over_loopback_dds() {
    let d = domain();
    let reg = Arc::new(Registry::bundled());
    let shutdown = CancellationToken::new();
    let (rep_tx, mut rep_rx) = mpsc::channel(64);
    let (ev_tx, ev_rx) = mpsc::channel(16);
    let metrics = Arc::new(Metrics::default());
    let manager = Manager::new(
        ManagerConfig {
            defaults: PlanDefaults::default(),
            discovery_range: DiscoveryRange::Localhost,
            only_networks: Some(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        },
        reg.clone(),
        rep_tx,
        None,
        metrics.clone(),
        shutdown.clone(),
    );
    let mut status = manager.status();
    let task = tokio::spawn(manager.run(ev_rx));
    ev_tx
        .send(BackendEvent::Sync(vec![binding(d)]))
        .await
        .unwrap();
    timeout(T, status.wait_for(|s| s.synced && s.devices.len() == 1))
        .await
        .unwrap()
        .unwrap();

    // Before any sample the device is unknown, then offline after the window.
    let r = next_report(&mut rep_rx, |r| r.state == Some(DeviceState::Offline)).await;
    assert_eq!(r.device.to_string(), "default/robot1");

    // The simulated robot.
    let robot = Participant::new(ParticipantConfig::localhost(d)).unwrap();
    let battery = reg.layout_of("sensor_msgs/msg/BatteryState").unwrap();
    let twist = reg.layout_of("geometry_msgs/msg/Twist").unwrap();
    let bw = robot
        .writer(
            "rt/robot1/battery_state",
            &battery.dds_type_name(),
            &Qos::ros_default(),
        )
        .unwrap();
    let mut cmd = robot
        .reader(
            "rt/robot1/cmd_vel",
            &twist.dds_type_name(),
            &Qos::ros_default(),
        )
        .unwrap();
    assert!(
        bw.wait_for_readers(1, T).await,
        "mapper never subscribed battery_state"
    );

    // A sample: both twins of the topic in one report, and the device is online.
    let msg = Value::from_json(
        &battery,
        &json!({"percentage": 0.875, "location": "dock 3"}),
    )
    .unwrap();
    bw.write(cdr::encode(&battery, &msg, Endianness::Little).unwrap())
        .unwrap();
    let r = next_report(&mut rep_rx, |r| !r.twins.is_empty()).await;
    let twin = |name: &str| {
        r.twins
            .iter()
            .find(|t| t.property == name)
            .map(|t| t.reported.clone())
    };
    assert_eq!(twin("battery").as_deref(), Some("87.5"));
    assert_eq!(
        twin("location").as_deref(),
        Some("b64:ZG9jayAz"),
        "a space is outside the twin charset"
    );
    assert_eq!(r.twins[0].value_type, "double");
    assert_eq!(r.state, Some(DeviceState::Online));

    // A desired speed reaches cmd_vel with the template's other fields.
    assert!(timeout(T, cmd.wait_for_writers(1, T)).await.unwrap());
    desire(&ev_tx, &r.device, "speed", "0.5").await;
    let s = timeout(T, cmd.recv()).await.unwrap().unwrap();
    let v = cdr::decode(&twist, &s.payload).unwrap();
    assert_eq!(
        v.get_path(&"linear.x".parse().unwrap()),
        Some(Value::F64(0.5))
    );
    assert_eq!(
        v.get_path(&"angular.z".parse().unwrap()),
        Some(Value::F64(0.25))
    );
    let r = next_report(&mut rep_rx, |r| {
        r.twins.iter().any(|t| t.property == "speed")
    })
    .await;
    let t = r.twins.iter().find(|t| t.property == "speed").unwrap();
    assert_eq!(
        (t.reported.as_str(), t.observed_desired.as_deref()),
        ("0.5", Some("0.5"))
    );

    // Out of range: rejected and reported, never published.
    desire(&ev_tx, &r.device, "speed", "9").await;
    let r = next_report(&mut rep_rx, |r| !r.rejections.is_empty()).await;
    assert!(
        r.rejections[0].reason.contains("above the maximum 1.5"),
        "{:?}",
        r.rejections
    );
    // Writing to a read-only property is rejected too.
    desire(&ev_tx, &r.device, "battery", "50").await;
    let r = next_report(&mut rep_rx, |r| !r.rejections.is_empty()).await;
    assert_eq!(r.rejections[0].property, "battery");
    // The next valid value is the next thing on cmd_vel (the 9 never went out).
    desire(&ev_tx, &r.device, "speed", "1.25").await;
    let s = timeout(T, cmd.recv()).await.unwrap().unwrap();
    let v = cdr::decode(&twist, &s.payload).unwrap();
    assert_eq!(
        v.get_path(&"linear.x".parse().unwrap()),
        Some(Value::F64(1.25))
    );

    // Garbage on the topic is counted, and the device carries on.
    bw.write(vec![0u8, 1, 0, 0, 0xff]).unwrap();
    let msg = Value::from_json(&battery, &json!({"percentage": 0.5, "location": "dock"})).unwrap();
    bw.write(cdr::encode(&battery, &msg, Endianness::Little).unwrap())
        .unwrap();
    let r = next_report(&mut rep_rx, |r| r.twins.iter().any(|t| t.reported == "50")).await;
    assert_eq!(
        r.twins
            .iter()
            .find(|t| t.property == "location")
            .unwrap()
            .reported,
        "dock"
    );

    // The robot stops publishing and unsubscribes cmd_vel (which kept the
    // write-only property live): offline after 2 cycles of 1 s.
    drop(cmd);
    let r = next_report(&mut rep_rx, |r| r.state == Some(DeviceState::Offline)).await;
    assert!(r.twins.is_empty());

    // A resync re-reports everything.
    ev_tx.send(BackendEvent::Resync).await.unwrap();
    let r = next_report(&mut rep_rx, |r| r.twins.len() == 3).await;
    assert_eq!(r.state, Some(DeviceState::Offline));

    ev_tx
        .send(BackendEvent::Remove(r.device.clone()))
        .await
        .unwrap();
    timeout(T, status.wait_for(|s| s.devices.is_empty()))
        .await
        .unwrap()
        .unwrap();
    shutdown.cancel();
    timeout(T, task).await.unwrap().unwrap();
    robot.shutdown();
}
