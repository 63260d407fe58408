//! A spy: a DDS participant that joins a domain, records every topic discovery shows
//! (writers and readers of other participants) and subscribes to every discovered writer's
//! topic, counting samples and those whose bytes contain a marker (e.g. `robot2`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ros2::dds::{DiscoveryEvent, Participant, Qos};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a spy saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sightings {
    /// ROS names of the topics discovered (`rt/odom` -> `/odom`; other DDS topics as they are).
    pub topics: BTreeSet<String>,
    /// Samples received, by topic.
    pub samples: BTreeMap<String, u64>,
    /// Samples whose bytes contained the marker, by topic.
    pub marked: BTreeMap<String, u64>,
}

/// The ROS name of a DDS topic (`rt/robot1/odom` -> `/robot1/odom`), else the DDS name.
pub fn ros_name(dds_topic: &str) -> String {
    match dds_topic.strip_prefix("rt/") {
        Some(rest) => format!("/{rest}"),
        None => dds_topic.to_owned(),
    }
}

/// Does `hay` contain `needle`?
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// A running spy.
#[derive(Debug)]
pub struct Spy {
    seen: Arc<Mutex<Sightings>>,
    task: JoinHandle<()>,
}

fn lock(m: &Mutex<Sightings>) -> MutexGuard<'_, Sightings> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Spy {
    /// Starts spying with `participant`; samples containing `marker` are counted apart.
    pub fn start(participant: Participant, marker: &str, shutdown: CancellationToken) -> Self {
        let seen: Arc<Mutex<Sightings>> = Arc::default();
        let marker = marker.as_bytes().to_vec();
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let mut events = participant.discovery_events();
            let mut subscribed: BTreeSet<(String, String)> = BTreeSet::new();
            let mut readers: Vec<JoinHandle<()>> = Vec::new();
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    ev = events.recv() => ev,
                };
                let Some(ev) = ev else { break };
                let (ep, writer) = match ev {
                    DiscoveryEvent::WriterAppeared(ep) => (ep, true),
                    DiscoveryEvent::ReaderAppeared(ep) => (ep, false),
                    _ => continue,
                };
                if ep.local {
                    continue;
                }
                let name = ros_name(&ep.topic);
                lock(&s).topics.insert(name.clone());
                if !writer || !subscribed.insert((ep.topic.clone(), ep.type_name.clone())) {
                    continue;
                }
                match participant.reader(&ep.topic, &ep.type_name, &Qos::sensor_data()) {
                    Ok(mut r) => {
                        let (s, marker, shutdown) = (s.clone(), marker.clone(), shutdown.clone());
                        readers.push(tokio::spawn(async move {
                            loop {
                                let sample = tokio::select! {
                                    _ = shutdown.cancelled() => break,
                                    x = r.recv() => x,
                                };
                                let Some(sample) = sample else { break };
                                let mut g = lock(&s);
                                *g.samples.entry(name.clone()).or_default() += 1;
                                if contains(&sample.payload, &marker) {
                                    *g.marked.entry(name.clone()).or_default() += 1;
                                }
                            }
                        }));
                    }
                    Err(e) => tracing::debug!(topic = %ep.topic, error = %e, "spy: no reader"),
                }
            }
            for r in readers {
                let _ = r.await;
            }
            participant.shutdown();
        });
        Self { seen, task }
    }

    /// What it saw so far.
    pub fn sightings(&self) -> Sightings {
        lock(&self.seen).clone()
    }

    /// Waits for the spy (after the shutdown token).
    pub async fn stop(self) {
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_markers() {
        assert_eq!(ros_name("rt/robot1/odom"), "/robot1/odom");
        assert_eq!(
            ros_name("kubeedge_ros2/bridge_presence"),
            "kubeedge_ros2/bridge_presence"
        );
        assert!(contains(b"..robot2..", b"robot2"));
        assert!(!contains(b"..robot1..", b"robot2"));
        assert!(!contains(b"x", b""));
    }
}
