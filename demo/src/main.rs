//! The demo: for now, a robot and a console on this host's loopback talking
//! ROS 2 through the project's own layer. A simulated robot publishes
//! `sensor_msgs/msg/BatteryState` on `rt/robot1/battery_state` (dynamic CDR,
//! rustdds); a console subscribes, decodes the samples and prints the field
//! values a device twin would carry. The two-robot fleet with bridge, hub and
//! mapper replaces this once those parts exist.
//!
//! Traffic stays on 127.0.0.1 (`ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ros2::cdr::{self, Endianness};
use ros2::dds::{Participant, ParticipantConfig, Qos};
use ros2::msg::Registry;
use ros2::value::{FieldPath, Value};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "kubeedge-ros2 demo on embedded defaults")]
struct Args {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// DDS domain id of the demo (loopback only).
    #[arg(long, default_value_t = 42)]
    domain: u16,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rustdds=off".into()),
        )
        .init();
    let args = Args::parse();
    let registry = Registry::bundled();
    let layout = registry.layout_of("sensor_msgs/msg/BatteryState")?;
    let topic = "/robot1/battery_state"
        .parse::<ros2::names::RosName>()?
        .to_dds_topic()?;
    let dds_type = layout.dds_type_name();

    let robot =
        Participant::new(ParticipantConfig::localhost(args.domain)).context("robot participant")?;
    let console = Participant::new(ParticipantConfig::localhost(args.domain))
        .context("console participant")?;
    let writer = robot.writer(&topic, &dds_type, &Qos::ros_default())?;
    let mut reader = console.reader(&topic, &dds_type, &Qos::ros_default())?;
    println!(
        "robot1 publishes {topic} [{dds_type}] on domain {} (loopback only)",
        args.domain
    );
    if !writer.wait_for_readers(1, Duration::from_secs(10)).await {
        bail!("the console never matched the robot's writer");
    }

    let paths: Vec<FieldPath> = [
        "percentage",
        "voltage",
        "cell_voltage[0]",
        "header.frame_id",
    ]
    .iter()
    .map(|p| p.parse())
    .collect::<Result<_, _>>()?;
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(args.duration);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let (mut sent, mut received) = (0u32, 0u32);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = tick.tick() => {
                let pct = 1.0 - f64::from(sent) * 0.01;
                let msg = Value::from_json(&layout, &json!({
                    "header": {"frame_id": "robot1/base_link"},
                    "voltage": 22.0 + 3.0 * pct, "percentage": pct, "present": true,
                    "cell_voltage": [3.6 + 0.5 * pct, 3.6 + 0.5 * pct],
                }))?;
                writer.write_async(cdr::encode(&layout, &msg, Endianness::Little)?).await?;
                sent += 1;
            }
            sample = reader.recv() => {
                let Some(sample) = sample else { bail!("console reader closed") };
                let v = cdr::decode(&layout, &sample.payload)?;
                received += 1;
                let fields: Vec<String> = paths
                    .iter()
                    .map(|p| format!("{p}={}", v.get_path(p).map(|x| x.to_string()).unwrap_or_default()))
                    .collect();
                println!("console <- robot1: {}", fields.join(" "));
            }
        }
    }
    println!("sent {sent}, received {received}");
    drop((writer, reader));
    robot.shutdown();
    console.shutdown();
    if received == 0 {
        bail!("no sample reached the console");
    }
    Ok(())
}
