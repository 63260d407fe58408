//! A DDS reader feeding one or more links: one per relayed topic (or service reply topic),
//! whatever the number of links that carry it.
//!
//! Samples written by this process's own participant (the bridge's writers) are never
//! relayed, nor samples from other bridges' participants (see [`PeerBridges`]): that is the
//! loop rule.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use ros2::dds::{Participant, Qos, RawReader};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::link::frame::RouteKind;
use crate::relay::{LinkHandle, Sample};

/// Where a reader's samples go: a link and the route name there.
#[derive(Debug, Clone)]
pub struct Target {
    /// The link.
    pub link: LinkHandle,
    /// The route name on that link.
    pub name: Arc<str>,
    /// The route kind.
    pub kind: RouteKind,
}

/// GUID prefixes of DDS participants that belong to bridges (ours and others'): their
/// samples are not relayed again.
#[derive(Debug, Clone, Default)]
pub struct PeerBridges(Arc<RwLock<HashSet<[u8; 12]>>>);

/// The DDS topic every bridge participant publishes one latched sample on, so other bridges in
/// the same domain recognise its writers (outside `rt/`, so ROS tools do not list it).
pub const PRESENCE_TOPIC: &str = "kubeedge_ros2/bridge_presence";
/// Its type name.
pub const PRESENCE_TYPE: &str = "kubeedge_ros2::msg::dds_::BridgePresence_";

/// Announces this participant as a bridge: keep the writer alive as long as the participant.
pub fn announce_presence(p: &Participant) -> Result<ros2::dds::RawWriter, ros2::dds::DdsError> {
    let w = p.writer(PRESENCE_TOPIC, PRESENCE_TYPE, &Qos::latched())?;
    // CDR LE header + a u32 protocol version.
    w.write(Bytes::from_static(&[0, 1, 0, 0, 1, 0, 0, 0]))?;
    Ok(w)
}

impl PeerBridges {
    /// Notes a discovered writer: one on [`PRESENCE_TOPIC`] marks its participant as a bridge
    /// (logged once). Returns whether it was such a writer.
    pub fn observe(&self, topic: &str, guid: &[u8; 16]) -> bool {
        if topic != PRESENCE_TOPIC {
            return false;
        }
        let mut prefix = [0u8; 12];
        prefix.copy_from_slice(&guid[..12]);
        let new = self
            .0
            .write()
            .map(|mut s| s.insert(prefix))
            .unwrap_or(false);
        if new {
            tracing::info!(participant = %crate::relay::hex(&prefix),
                "another bridge in this DDS domain: its samples will not be relayed again");
        }
        true
    }

    /// Marks a participant as a bridge.
    pub fn insert(&self, prefix: [u8; 12]) {
        if let Ok(mut s) = self.0.write() {
            s.insert(prefix);
        }
    }

    /// Is this writer a bridge's?
    pub fn is_bridge(&self, writer: &[u8; 16]) -> bool {
        let mut prefix = [0u8; 12];
        prefix.copy_from_slice(&writer[..12]);
        self.0.read().map(|s| s.contains(&prefix)).unwrap_or(false)
    }
}

/// A reader task and its targets. Dropping it stops the task (and so the DDS reader).
#[derive(Debug)]
pub struct TopicReader {
    /// DDS topic.
    pub topic: String,
    /// DDS type name.
    pub type_name: String,
    /// The QoS it was created with.
    pub qos: Qos,
    targets: Arc<Mutex<Vec<Target>>>,
    task: JoinHandle<()>,
}

impl Drop for TopicReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A hook run on every sample before it is sent (e.g. service reply identity mapping). It
/// returns where the sample goes: `None` = to every target as is.
pub type SampleHook = Arc<dyn Fn(&[u8; 16], Bytes) -> Option<Vec<(Arc<str>, Bytes)>> + Send + Sync>;

impl TopicReader {
    /// Creates the DDS reader and starts its task.
    pub fn start(
        participant: &Participant,
        bridges: PeerBridges,
        topic: &str,
        type_name: &str,
        qos: Qos,
        hook: Option<SampleHook>,
    ) -> Result<Self, ros2::dds::DdsError> {
        let reader = participant.reader(topic, type_name, &qos)?;
        let targets: Arc<Mutex<Vec<Target>>> = Arc::default();
        let task = tokio::spawn(run(reader, bridges, targets.clone(), hook));
        Ok(Self {
            topic: topic.to_owned(),
            type_name: type_name.to_owned(),
            qos,
            targets,
            task,
        })
    }

    /// Adds a target (no duplicate per link and name).
    pub fn add_target(&self, t: Target) {
        if let Ok(mut ts) = self.targets.lock() {
            ts.retain(|x| !(x.link.name == t.link.name && x.name == t.name && x.kind == t.kind));
            ts.push(t);
        }
    }

    /// Removes the targets of a link.
    pub fn remove_link(&self, link: &str) {
        if let Ok(mut ts) = self.targets.lock() {
            ts.retain(|x| &*x.link.name != link);
        }
    }

    /// Number of targets.
    pub fn targets(&self) -> usize {
        self.targets.lock().map(|t| t.len()).unwrap_or(0)
    }
}

async fn run(
    mut reader: RawReader,
    bridges: PeerBridges,
    targets: Arc<Mutex<Vec<Target>>>,
    hook: Option<SampleHook>,
) {
    let topic = reader.topic().to_owned();
    while let Some(s) = reader.recv().await {
        if bridges.is_bridge(&s.writer_guid) {
            continue;
        }
        let received = Instant::now();
        let current: Vec<Target> = match targets.lock() {
            Ok(t) => t.clone(),
            Err(_) => return,
        };
        match &hook {
            None => {
                for t in current {
                    let sample = Sample {
                        name: t.name.clone(),
                        kind: t.kind,
                        source: s.writer_guid,
                        payload: s.payload.clone(),
                        received,
                    };
                    if t.link.samples.send(sample).await.is_err() {
                        tracing::debug!(%topic, link = %t.link.name, "link gone");
                    }
                }
            }
            Some(hook) => {
                let Some(routed) = hook(&s.writer_guid, s.payload.clone()) else {
                    continue;
                };
                for (link, payload) in routed {
                    if let Some(t) = current.iter().find(|t| t.link.name == link) {
                        let sample = Sample {
                            name: t.name.clone(),
                            kind: t.kind,
                            source: s.writer_guid,
                            payload,
                            received,
                        };
                        let _ = t.link.samples.send(sample).await;
                    }
                }
            }
        }
    }
    tracing::debug!(%topic, "DDS reader ended");
}
