//! Typed ROS 2 publishers and subscriptions over the project's raw DDS layer: a ROS name and a
//! `pkg/msg/Name` type in, JSON values out (dynamic CDR through `ros2::cdr`).

use std::sync::Arc;

use anyhow::{Context, Result};
use ros2::cdr::{self, Endianness};
use ros2::dds::{Participant, Qos, RawReader, RawWriter};
use ros2::msg::{Layout, Registry};
use ros2::names::RosName;
use ros2::value::Value;

/// The DDS topic of a ROS name (`/odom` -> `rt/odom`).
pub fn dds_topic(ros_name: &str) -> Result<String> {
    let name: RosName = ros_name
        .parse()
        .with_context(|| format!("ROS name {ros_name}"))?;
    Ok(name.to_dds_topic()?)
}

fn layout(registry: &Registry, ty: &str) -> Result<Arc<Layout>> {
    registry
        .layout_of(ty)
        .with_context(|| format!("message type {ty}"))
}

/// A publisher of one ROS topic.
#[derive(Debug)]
pub struct Publisher {
    writer: RawWriter,
    layout: Arc<Layout>,
}

impl Publisher {
    /// Creates the DDS writer of `ros_name` with type `ty` (e.g. `nav_msgs/msg/Odometry`).
    pub fn new(
        participant: &Participant,
        registry: &Registry,
        ros_name: &str,
        ty: &str,
        qos: &Qos,
    ) -> Result<Self> {
        let layout = layout(registry, ty)?;
        let writer = participant
            .writer(&dds_topic(ros_name)?, &layout.dds_type_name(), qos)
            .with_context(|| format!("writer of {ros_name}"))?;
        Ok(Self { writer, layout })
    }

    /// Encodes a JSON message (missing fields take their defaults).
    pub fn encode(&self, msg: &serde_json::Value) -> Result<Vec<u8>> {
        let value = Value::from_json(&self.layout, msg)?;
        Ok(cdr::encode(&self.layout, &value, Endianness::Little)?)
    }

    /// Publishes a JSON message.
    pub async fn publish(&self, msg: &serde_json::Value) -> Result<()> {
        let bytes = self.encode(msg)?;
        self.publish_raw(bytes).await
    }

    /// Publishes an already encoded message (with its encapsulation header).
    pub async fn publish_raw(&self, bytes: impl Into<bytes::Bytes>) -> Result<()> {
        self.writer.write_async(bytes).await?;
        Ok(())
    }

    /// Readers matched now.
    pub fn matched(&self) -> usize {
        self.writer.matched_readers()
    }
}

/// A subscription to one ROS topic.
#[derive(Debug)]
pub struct Subscription {
    reader: RawReader,
    layout: Arc<Layout>,
}

impl Subscription {
    /// Creates the DDS reader of `ros_name` with type `ty`.
    pub fn new(
        participant: &Participant,
        registry: &Registry,
        ros_name: &str,
        ty: &str,
        qos: &Qos,
    ) -> Result<Self> {
        let layout = layout(registry, ty)?;
        let reader = participant
            .reader(&dds_topic(ros_name)?, &layout.dds_type_name(), qos)
            .with_context(|| format!("reader of {ros_name}"))?;
        Ok(Self { reader, layout })
    }

    /// The next message as JSON; `None` when the participant shut down. Undecodable samples
    /// are skipped with a log line.
    pub async fn recv(&mut self) -> Option<serde_json::Value> {
        loop {
            let sample = self.reader.recv().await?;
            match cdr::decode(&self.layout, &sample.payload) {
                Ok(v) => return Some(v.to_json()),
                Err(e) => {
                    tracing::warn!(topic = self.reader.topic(), error = %e, "undecodable sample")
                }
            }
        }
    }
}
