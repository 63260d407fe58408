//! Data push: samples of properties with `pushMethod.mqtt =
//! {address, topic, qos, retained}` are published as `DeviceData` JSON to
//! that topic, over one client per distinct broker address.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mapper_core::backend::{now_ms, PushSample};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{self, ClientSettings};
use crate::config::{parse_broker_url, BrokerAddr};
use crate::error::MqttError;
use crate::eventloop::{self, random_u64, Backoff};
use crate::wire;

/// At most this many push brokers (clients) at once; samples for more are dropped.
pub const MAX_PUSH_CLIENTS: usize = 32;

/// A parsed `pushMethod.mqtt`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PushTarget {
    pub broker: BrokerAddr,
    pub topic: String,
    /// 0, 1 or 2.
    pub qos: u8,
    pub retained: bool,
}

/// Reads `pushMethod.mqtt` of a property's `pushMethod` object: `Ok(None)`
/// when it has no `mqtt` key (another push method); `Err` names the bad key.
pub fn parse_push_method(method: &Value) -> Result<Option<PushTarget>, String> {
    let Some(m) = method.get("mqtt") else {
        return Ok(None);
    };
    let address = m.get("address").and_then(Value::as_str).ok_or_else(|| {
        format!(
            "pushMethod.mqtt.address: {:?} is not a broker URL string",
            m.get("address")
        )
    })?;
    let broker = parse_broker_url("pushMethod.mqtt.address", address).map_err(|e| e.to_string())?;
    let topic = m
        .get("topic")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && !t.contains(['+', '#', '\0']))
        .ok_or_else(|| {
            format!(
                "pushMethod.mqtt.topic: {:?} is invalid, expected a topic name without wildcards",
                m.get("topic")
            )
        })?;
    let qos = match m.get("qos") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64() {
            Some(q @ 0..=2) => q as u8,
            _ => {
                return Err(format!(
                    "pushMethod.mqtt.qos: {v} is invalid, expected 0, 1 or 2"
                ))
            }
        },
    };
    let retained = match m.get("retained") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(format!(
                "pushMethod.mqtt.retained: {v} is invalid, expected true or false"
            ))
        }
    };
    Ok(Some(PushTarget {
        broker,
        topic: topic.to_owned(),
        qos,
        retained,
    }))
}

/// The payload of one sample: `DeviceData` with one property.
pub fn sample_payload(s: &PushSample, now_ms: i64) -> String {
    wire::device_data(
        now_ms,
        &[wire::DataPoint {
            property: &s.property,
            value: &s.value,
            value_type: s.value_type,
            timestamp_ms: s.timestamp_ms,
        }],
    )
}

fn qos_of(n: u8) -> rumqttc::QoS {
    match n {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

#[derive(Debug)]
struct Pusher {
    clients: HashMap<BrokerAddr, client::Handle>,
    pollers: JoinSet<()>,
    warned: HashSet<String>,
    seed: u64,
    shutdown: CancellationToken,
    pushed: u64,
    dropped: u64,
}

impl Pusher {
    fn push(&mut self, s: PushSample) {
        let target = match parse_push_method(&s.method) {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(why) => {
                self.dropped += 1;
                if self.warned.insert(format!("{}/{}", s.device, s.property)) {
                    tracing::warn!(device = %s.device, property = s.property, error = why, "bad pushMethod.mqtt; samples of this property are dropped");
                }
                return;
            }
        };
        if !self.clients.contains_key(&target.broker) {
            if self.clients.len() >= MAX_PUSH_CLIENTS {
                self.dropped += 1;
                if self.warned.insert(target.broker.to_string()) {
                    tracing::warn!(broker = %target.broker, max = MAX_PUSH_CLIENTS, "too many push brokers; samples for this one are dropped");
                }
                return;
            }
            let settings = ClientSettings {
                broker: target.broker.clone(),
                client_id: format!(
                    "ros2-mapper-push-{:08x}-{}",
                    self.seed as u32,
                    self.clients.len()
                ),
                credentials: None,
                keepalive: Duration::from_secs(30),
            };
            let (c, el) = client::connect(&settings);
            let backoff = Backoff::new(
                Duration::from_millis(500),
                Duration::from_secs(30),
                random_u64(),
            );
            self.pollers.spawn(eventloop::drive(
                "push",
                c.clone(),
                el,
                backoff,
                None,
                self.shutdown.clone(),
            ));
            tracing::info!(broker = %target.broker, "push client started");
            self.clients
                .insert(target.broker.clone(), client::Handle::new(c));
        }
        let payload = sample_payload(&s, now_ms());
        let Some(handle) = self.clients.get(&target.broker) else {
            return;
        };
        match handle.client().try_publish(
            target.topic.clone(),
            qos_of(target.qos),
            target.retained,
            payload,
        ) {
            Ok(()) => {
                self.pushed += 1;
                tracing::trace!(device = %s.device, property = s.property, topic = target.topic, "pushed");
            }
            Err(e) => {
                self.dropped += 1;
                tracing::warn!(device = %s.device, property = s.property, topic = target.topic, error = %e, dropped = self.dropped, "push sample not queued; dropped");
            }
        }
    }
}

/// Publishes every sample with a `pushMethod.mqtt` until `shutdown` (or the
/// sender is dropped). Broker trouble is logged and retried, never returned.
pub async fn run_push(
    mut rx: mpsc::Receiver<PushSample>,
    shutdown: CancellationToken,
) -> Result<(), MqttError> {
    let mut p = Pusher {
        clients: HashMap::new(),
        pollers: JoinSet::new(),
        warned: HashSet::new(),
        seed: random_u64(),
        shutdown: shutdown.child_token(),
        pushed: 0,
        dropped: 0,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            s = rx.recv() => match s {
                Some(s) => p.push(s),
                None => break,
            },
        }
    }
    p.shutdown.cancel();
    while p.pollers.join_next().await.is_some() {}
    tracing::info!(pushed = p.pushed, dropped = p.dropped, "mqtt push stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapper_core::model::DeviceId;
    use serde_json::json;

    #[test]
    fn push_method_parses() {
        let t = parse_push_method(&json!({"mqtt": {"address": "tcp://127.0.0.1:1884", "topic": "robots/battery", "qos": 1, "retained": true}}))
            .unwrap()
            .unwrap();
        assert_eq!(
            t.broker,
            BrokerAddr {
                host: "127.0.0.1".into(),
                port: 1884
            }
        );
        assert_eq!(
            (t.topic.as_str(), t.qos, t.retained),
            ("robots/battery", 1, true)
        );
        let t = parse_push_method(&json!({"mqtt": {"address": "tcp://h", "topic": "t"}}))
            .unwrap()
            .unwrap();
        assert_eq!((t.qos, t.retained, t.broker.port), (0, false, 1883));
        assert_eq!(
            parse_push_method(&json!({"http": {"hostName": "x"}})).unwrap(),
            None
        );
        assert_eq!(parse_push_method(&json!(null)).unwrap(), None);
        for bad in [
            json!({"mqtt": {"topic": "t"}}),
            json!({"mqtt": {"address": "ssl://h:1", "topic": "t"}}),
            json!({"mqtt": {"address": "tcp://h:1", "topic": "a/+"}}),
            json!({"mqtt": {"address": "tcp://h:1", "topic": ""}}),
            json!({"mqtt": {"address": "tcp://h:1", "topic": "t", "qos": 3}}),
            json!({"mqtt": {"address": "tcp://h:1", "topic": "t", "retained": "yes"}}),
            json!({"mqtt": "x"}),
        ] {
            let e = parse_push_method(&bad).unwrap_err();
            assert!(e.contains("pushMethod.mqtt"), "{e}");
        }
    }

    #[test]
    fn sample_payload_is_device_data() {
        let s = PushSample {
            device: DeviceId::new("default", "r1"),
            property: "battery".into(),
            value: "87.5".into(),
            value_type: "float",
            timestamp_ms: 1_700_000_000_000,
            method: json!({}),
        };
        assert_eq!(
            sample_payload(&s, 1_700_000_000_123),
            r#"{"event_id":"","timestamp":1700000000123,"data":{"battery":{"value":"87.5","metadata":{"timestamp":1700000000000,"type":"float"}}}}"#
        );
    }
}
