//! An edgecore-like device twin store on the embedded broker: it answers the mappers over
//! KubeEdge's eventbus (`$hw/events/...`, device ids `{namespace}/{name}`) as edgecore's
//! devicetwin does, and plays the cloud for the user: desired values set here go out as
//! `twin/update/delta`.
//!
//! - `membership/get` -> `membership/get/result` with the node's devices;
//! - `twin/get` -> `twin/get/result` with every twin (expected and actual);
//! - `twin/update` -> stores actual (and expected when present), answers
//!   `twin/update/result`, publishes `twin/update/document`, and `twin/update/delta` when a
//!   twin's expected value is set and differs from its actual one;
//! - `state/update` -> keeps the device state.
//!
//! [`TwinStore`] is the pure part (messages in, messages out); [`TwinService`] runs it on an
//! MQTT client.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One twin as the store keeps it: values with their timestamps (ms).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Twin {
    pub expected: Option<(String, i64)>,
    pub actual: Option<(String, i64)>,
    pub type_: Option<String>,
}

impl Twin {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some((v, ts)) = &self.expected {
            m.insert(
                "expected".into(),
                json!({"value": v, "metadata": {"timestamp": ts}}),
            );
        }
        if let Some((v, ts)) = &self.actual {
            m.insert(
                "actual".into(),
                json!({"value": v, "metadata": {"timestamp": ts}}),
            );
        }
        m.insert("optional".into(), json!(false));
        if let Some(t) = &self.type_ {
            m.insert("metadata".into(), json!({"type": t}));
        }
        Value::Object(m)
    }

    /// edgecore's delta rule: a non-empty expected value that differs from the actual one.
    fn delta(&self) -> Option<&str> {
        let (e, _) = self.expected.as_ref()?;
        let differs = self.actual.as_ref().is_none_or(|(a, _)| a != e);
        (!e.is_empty() && differs).then_some(e.as_str())
    }
}

/// A member device.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The node it is bound to.
    pub node: String,
    /// `{namespace}/{name}`.
    pub id: String,
    pub name: String,
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Value,
}

/// The twin store's state and rules, without I/O.
#[derive(Debug, Default)]
pub struct TwinStore {
    members: Vec<Member>,
    twins: BTreeMap<String, BTreeMap<String, Twin>>,
    states: BTreeMap<String, String>,
    events: u64,
}

/// KubeEdge's twin value charset.
fn valid_value(v: &str) -> bool {
    v.len() <= 512
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/@#".contains(c))
}

fn device_topic(id: &str, suffix: &str) -> String {
    format!("$hw/events/device/{id}/{suffix}")
}

impl TwinStore {
    /// A store serving `members`, with the desired values of their Devices:
    /// `(device id, property, value)`.
    pub fn new(members: Vec<Member>, desired: Vec<(String, String, String)>, now: i64) -> Self {
        let mut s = Self {
            members,
            ..Self::default()
        };
        for (id, prop, value) in desired {
            s.twins
                .entry(id)
                .or_default()
                .entry(prop)
                .or_default()
                .expected = Some((value, now));
        }
        s
    }

    fn event_id(&mut self) -> String {
        self.events += 1;
        format!("twinstore-{}", self.events)
    }

    /// The twins of a device.
    pub fn twins(&self, id: &str) -> BTreeMap<String, Twin> {
        self.twins.get(id).cloned().unwrap_or_default()
    }

    /// The last state a device's mapper reported.
    pub fn state(&self, id: &str) -> Option<&str> {
        self.states.get(id).map(String::as_str)
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    fn delta_message(&mut self, id: &str) -> Option<Outgoing> {
        let twins = self.twins.get(id)?;
        let mut delta = Map::new();
        let mut all = Map::new();
        for (k, t) in twins {
            all.insert(k.clone(), t.to_json());
            if let Some(e) = t.delta() {
                delta.insert(k.clone(), json!(e));
            }
        }
        if delta.is_empty() {
            return None;
        }
        let event = self.event_id();
        Some(Outgoing {
            topic: device_topic(id, "twin/update/delta"),
            payload: json!({"event_id": event, "timestamp": 0, "twin": all, "delta": delta}),
        })
    }

    /// The user (the cloud) sets a desired value: the delta to publish.
    pub fn set_desired(
        &mut self,
        id: &str,
        prop: &str,
        value: &str,
        now: i64,
    ) -> Result<Vec<Outgoing>, String> {
        if !self.members.iter().any(|m| m.id == id) {
            return Err(format!("no device {id}"));
        }
        if !valid_value(value) {
            return Err(format!("{value:?} is not a valid twin value"));
        }
        let twins = self.twins.entry(id.to_owned()).or_default();
        if !twins.contains_key(prop) {
            return Err(format!(
                "{id} has no twin {prop} (twins: {})",
                twins.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if let Some(t) = twins.get_mut(prop) {
            t.expected = Some((value.to_owned(), now));
        }
        Ok(self.delta_message(id).into_iter().collect())
    }

    /// Handles one message from the bus; returns what to publish.
    pub fn handle(&mut self, topic: &str, payload: &[u8], now: i64) -> Vec<Outgoing> {
        let msg: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        let event = msg.get("event_id").cloned().unwrap_or(json!(""));
        if let Some(rest) = topic.strip_prefix("$hw/events/node/") {
            let Some(node) = rest.strip_suffix("/membership/get") else {
                return Vec::new();
            };
            let devices: Vec<Value> = self
                .members
                .iter()
                .filter(|m| m.node == node)
                .map(|m| {
                    let state = self
                        .states
                        .get(&m.id)
                        .cloned()
                        .unwrap_or_else(|| "unknown".into());
                    json!({"id": m.id, "name": m.name, "description": "", "state": state})
                })
                .collect();
            return vec![Outgoing {
                topic: format!("$hw/events/node/{node}/membership/get/result"),
                payload: json!({"event_id": event, "timestamp": now, "devices": devices}),
            }];
        }
        let Some(rest) = topic.strip_prefix("$hw/events/device/") else {
            return Vec::new();
        };
        let parts: Vec<&str> = rest.splitn(3, '/').collect();
        let [ns, name, what] = parts[..] else {
            return Vec::new();
        };
        let id = format!("{ns}/{name}");
        let error = |code: u16, reason: &str| json!({"event_id": event, "timestamp": now, "code": code, "reason": reason});
        match what {
            "twin/get" => {
                let payload = if self.members.iter().any(|m| m.id == id) {
                    let twins: Map<String, Value> = self
                        .twins
                        .get(&id)
                        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
                        .unwrap_or_default();
                    json!({"event_id": event, "timestamp": now, "twin": twins})
                } else {
                    error(404, "Get twin failed, device not found")
                };
                vec![Outgoing {
                    topic: device_topic(&id, "twin/get/result"),
                    payload,
                }]
            }
            "twin/update" => {
                let result = device_topic(&id, "twin/update/result");
                let Some(twin) = msg.get("twin").and_then(Value::as_object) else {
                    return vec![Outgoing {
                        topic: result,
                        payload: error(400, "Update twin error, key:twin does not exist"),
                    }];
                };
                for (k, t) in twin {
                    for which in ["actual", "expected"] {
                        if let Some(v) = t.get(which).and_then(|v| v.get("value")) {
                            if !v.as_str().is_some_and(valid_value) {
                                return vec![Outgoing {
                                    topic: result,
                                    payload: error(400, &format!("the value of {k} is invalid")),
                                }];
                            }
                        }
                    }
                }
                let twins = self.twins.entry(id.clone()).or_default();
                let mut doc = Map::new();
                for (k, t) in twin {
                    let stored = twins.entry(k.clone()).or_default();
                    let last = stored.clone();
                    let value = |w: &str| {
                        t.get(w)
                            .and_then(|a| a.get("value"))
                            .and_then(Value::as_str)
                            .map(|v| (v.to_owned(), now))
                    };
                    if let Some(a) = value("actual") {
                        stored.actual = Some(a);
                    }
                    if let Some(ty) = t.pointer("/metadata/type").and_then(Value::as_str) {
                        stored.type_ = Some(ty.to_owned());
                    }
                    if *stored != last {
                        doc.insert(
                            k.clone(),
                            json!({"last": last.to_json(), "current": stored.to_json()}),
                        );
                    }
                }
                let mut out = vec![Outgoing {
                    topic: result,
                    payload: json!({"event_id": event, "timestamp": now, "twin": twin}),
                }];
                if !doc.is_empty() {
                    out.push(Outgoing {
                        topic: device_topic(&id, "twin/update/document"),
                        payload: json!({"event_id": event, "timestamp": now, "twin": doc}),
                    });
                }
                out
            }
            "state/update" => {
                if let Some(state) = msg.get("state").and_then(Value::as_str) {
                    let lower = state.to_ascii_lowercase();
                    if matches!(
                        lower.as_str(),
                        "online" | "offline" | "ok" | "unknown" | "unhealthy"
                    ) {
                        self.states.insert(id.clone(), lower);
                    }
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

/// The twin store on an MQTT client.
#[derive(Debug, Clone)]
pub struct TwinService {
    store: Arc<Mutex<TwinStore>>,
    client: AsyncClient,
}

fn now_ms() -> i64 {
    mapper_core::backend::now_ms()
}

impl TwinService {
    /// Connects to the broker at `addr`, subscribes, and returns once subscribed.
    pub async fn start(
        addr: std::net::SocketAddr,
        store: TwinStore,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let mut o = MqttOptions::new("demo-twinstore", addr.ip().to_string(), addr.port());
        o.set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = AsyncClient::new(o, 1024);
        let store = Arc::new(Mutex::new(store));
        let (subscribed_tx, mut subscribed) = watch::channel(false);
        let filters = [
            "$hw/events/device/+/+/twin/+",
            "$hw/events/device/+/+/state/update",
            "$hw/events/node/+/membership/get",
        ];
        let me = Self {
            store: store.clone(),
            client: client.clone(),
        };
        tokio::spawn(async move {
            let mut pending = 0usize;
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    ev = el.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        pending = filters.len();
                        for f in filters {
                            let _ = client.try_subscribe(f, QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        pending = pending.saturating_sub(1);
                        if pending == 0 {
                            subscribed_tx.send_replace(true);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let out = store.lock().unwrap_or_else(PoisonError::into_inner).handle(
                            &p.topic,
                            &p.payload,
                            now_ms(),
                        );
                        for o in out {
                            let _ = client.try_publish(
                                o.topic,
                                QoS::AtLeastOnce,
                                false,
                                o.payload.to_string(),
                            );
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "twin store: MQTT connection");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed.wait_for(|s| *s))
            .await
            .map_err(|_| anyhow!("twin store: not subscribed within 10 s"))?
            .context("twin store stopped")?;
        Ok(me)
    }

    /// Sets a desired value (as the cloud would) and publishes the delta.
    pub async fn set_desired(&self, id: &str, prop: &str, value: &str) -> Result<()> {
        let out = self
            .store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_desired(id, prop, value, now_ms())
            .map_err(|e| anyhow!(e))?;
        for o in out {
            self.client
                .publish(o.topic, QoS::AtLeastOnce, false, o.payload.to_string())
                .await?;
        }
        Ok(())
    }

    /// The twins of a device and its state.
    pub fn device(&self, id: &str) -> (BTreeMap<String, Twin>, Option<String>) {
        let s = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        (s.twins(id), s.state(id).map(str::to_owned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> TwinStore {
        TwinStore::new(
            vec![Member {
                node: "robot1-node".into(),
                id: "default/robot1".into(),
                name: "robot1".into(),
            }],
            vec![("default/robot1".into(), "speed-limit".into(), "0.5".into())],
            1,
        )
    }

    #[test]
    fn membership_lists_the_nodes_devices_only() {
        let mut s = store();
        let out = s.handle(
            "$hw/events/node/robot1-node/membership/get",
            br#"{"event_id":"e"}"#,
            2,
        );
        assert_eq!(
            out[0].topic,
            "$hw/events/node/robot1-node/membership/get/result"
        );
        assert_eq!(out[0].payload["devices"][0]["id"], "default/robot1");
        assert_eq!(out[0].payload["event_id"], "e");
        let out = s.handle("$hw/events/node/other/membership/get", b"{}", 2);
        assert_eq!(out[0].payload["devices"], json!([]));
    }

    #[test]
    fn twin_get_returns_the_desired_value_and_404_for_strangers() {
        let mut s = store();
        let out = s.handle("$hw/events/device/default/robot1/twin/get", b"{}", 2);
        assert_eq!(
            out[0].payload["twin"]["speed-limit"]["expected"]["value"],
            "0.5"
        );
        let out = s.handle("$hw/events/device/default/robot9/twin/get", b"{}", 2);
        assert_eq!(out[0].payload["code"], 404);
    }

    #[test]
    fn updates_store_actuals_and_desired_values_make_deltas() {
        let mut s = store();
        let upd = br#"{"event_id":"u","twin":{"speed-limit":{"actual":{"value":"0.5"},"metadata":{"type":"double"}}}}"#;
        let out = s.handle("$hw/events/device/default/robot1/twin/update", upd, 3);
        assert_eq!(out.len(), 2, "result and document: {out:?}");
        assert_eq!(
            s.twins("default/robot1")["speed-limit"].actual,
            Some(("0.5".into(), 3))
        );
        let out = s
            .set_desired("default/robot1", "speed-limit", "0.3", 4)
            .unwrap_or_default();
        assert_eq!(
            out[0].topic,
            "$hw/events/device/default/robot1/twin/update/delta"
        );
        assert_eq!(out[0].payload["delta"]["speed-limit"], "0.3");
        assert!(s
            .set_desired("default/robot1", "speed-limit", "0 3", 5)
            .is_err());
        assert!(s.set_desired("default/robot1", "warp", "9", 5).is_err());
        assert!(s
            .set_desired("default/robot7", "speed-limit", "0.3", 5)
            .is_err());
    }

    #[test]
    fn invalid_values_are_refused_and_states_kept() {
        let mut s = store();
        let bad = br#"{"twin":{"battery":{"actual":{"value":"a b"}}}}"#;
        let out = s.handle("$hw/events/device/default/robot1/twin/update", bad, 3);
        assert_eq!(out[0].payload["code"], 400);
        s.handle(
            "$hw/events/device/default/robot1/state/update",
            br#"{"state":"Online"}"#,
            3,
        );
        assert_eq!(s.state("default/robot1"), Some("online"));
        assert!(s.handle("garbage", b"\xff", 3).is_empty());
    }
}
