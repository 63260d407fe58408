//! An edgecore stand-in for the MQTT eventbus: follows KubeEdge's devicetwin
//! rules (`edge/pkg/devicetwin/dtmanager`) over a real broker, for tests.
//!
//! - `twin/update`: validates (the `twin` key, key and value charsets, the
//!   value against `metadata.type`); stores `actual`, and `expected` when
//!   present; publishes `twin/update/result` (echoing `event_id`; an error
//!   `{code, reason}` when invalid), `twin/update/document`, and
//!   `twin/update/delta` only when some twin has a non-empty expected value
//!   that differs from its actual value (twins of type `deleted` skipped).
//! - `twin/get`: `twin/get/result` with every twin (404 for unknown devices).
//! - `state/update`: keeps `online|offline|ok|unknown|unhealthy` (any case);
//!   others are ignored, as edgecore does.
//! - `membership/get`: `membership/get/result` with the device list.
//!
//! The test side acts as the cloud: [`EdgecoreStandIn::set_desired`] sets an
//! expected value and publishes the delta. Waits await changes, never sleep.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use mapper_core::model::DeviceId;
use mapper_mqtt::DeviceIdForm;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::mosquitto::{client_id, host_port};

/// One twin as edgecore stores it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredTwin {
    /// (value, timestamp ms)
    pub expected: Option<(String, i64)>,
    pub actual: Option<(String, i64)>,
    pub type_: Option<String>,
}

impl StoredTwin {
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

    /// The delta rule: non-empty expected that differs from actual, not deleted.
    fn delta(&self) -> Option<&str> {
        let (e, _) = self.expected.as_ref()?;
        let deleted = self.type_.as_deref() == Some("deleted");
        let differs = self.actual.as_ref().map(|(a, _)| a != e).unwrap_or(true);
        (!deleted && !e.is_empty() && differs).then_some(e.as_str())
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Member devices by topic id, in membership order.
    devices: Vec<(String, DeviceId)>,
    twins: HashMap<String, BTreeMap<String, StoredTwin>>,
    states: HashMap<String, String>,
    /// Every message received: (topic, payload).
    log: Vec<(String, String)>,
    /// Subscribed sessions so far.
    sessions: u64,
}

/// The stand-in. Dropping it stops its client.
#[derive(Debug)]
pub struct EdgecoreStandIn {
    client: AsyncClient,
    node: String,
    form: DeviceIdForm,
    inner: Arc<Mutex<Inner>>,
    changed: watch::Sender<u64>,
    shutdown: CancellationToken,
}

fn now_ms() -> i64 {
    mapper_core::backend::now_ms()
}

fn topic_id(form: DeviceIdForm, id: &DeviceId) -> String {
    match form {
        DeviceIdForm::Namespaced => format!("{}/{}", id.namespace, id.name),
        DeviceIdForm::Name => id.name.clone(),
    }
}

fn valid_key(k: &str) -> bool {
    (1..=128).contains(&k.len()) && k.chars().all(valid_char)
}

fn valid_value(v: &str) -> bool {
    v.len() <= 512 && v.chars().all(valid_char)
}

fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.,:/@#".contains(c)
}

/// edgecore's `ValidateValue` for the common types.
fn valid_typed(type_: Option<&str>, v: &str) -> bool {
    match type_.unwrap_or("string") {
        "int" | "integer" => v.parse::<i64>().is_ok(),
        "float" | "double" => v.parse::<f64>().is_ok(),
        "boolean" | "bool" => v == "true" || v == "false",
        _ => true,
    }
}

impl EdgecoreStandIn {
    /// Connects to `url`, subscribes to edgecore's topics for `id_form`, and
    /// returns once subscribed. `devices` are this node's members.
    pub async fn start(
        url: &str,
        node: &str,
        devices: Vec<DeviceId>,
        id_form: DeviceIdForm,
    ) -> Result<Self> {
        let (host, port) = host_port(url)?;
        let mut o = MqttOptions::new(client_id("edgecore"), host, port);
        o.set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 1024);
        let inner = Arc::new(Mutex::new(Inner {
            devices: devices
                .iter()
                .map(|d| (topic_id(id_form, d), d.clone()))
                .collect(),
            ..Inner::default()
        }));
        let (changed, _) = watch::channel(0u64);
        let shutdown = CancellationToken::new();
        let me = Self {
            client: client.clone(),
            node: node.to_owned(),
            form: id_form,
            inner: inner.clone(),
            changed: changed.clone(),
            shutdown: shutdown.clone(),
        };
        let w = match id_form {
            DeviceIdForm::Namespaced => "+/+",
            DeviceIdForm::Name => "+",
        };
        let filters = [
            format!("$hw/events/device/{w}/twin/+"),
            format!("$hw/events/device/{w}/state/update"),
            "$hw/events/node/+/membership/get".to_string(),
        ];
        let worker = Worker {
            client,
            node: node.to_owned(),
            form: id_form,
            inner,
            changed,
        };
        tokio::spawn(async move {
            let mut pending_acks = 0usize;
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    ev = el.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        pending_acks = filters.len();
                        for f in &filters {
                            let _ = worker.client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        pending_acks = pending_acks.saturating_sub(1);
                        if pending_acks == 0 {
                            worker.update(|i| i.sessions += 1);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        worker.on_message(&p.topic, &p.payload);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        }
                    }
                }
            }
        });
        me.wait_sessions(1, Duration::from_secs(10)).await?;
        Ok(me)
    }

    fn device_topic(&self, device: &DeviceId, suffix: &str) -> String {
        format!("$hw/events/device/{}/{suffix}", topic_id(self.form, device))
    }

    /// Waits until a condition on the state holds (re-checked on every change).
    async fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Inner) -> Option<T>,
    ) -> Result<T> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = {
                let guard = self.inner.lock().map_err(|_| anyhow!("poisoned"))?;
                f(&guard)
            };
            if let Some(v) = found {
                return Ok(v);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(anyhow!(
                        "edgecore stand-in stopped while waiting for {what}"
                    ))
                }
                Err(_) => {
                    let log = self.messages();
                    let tail: Vec<_> = log.iter().rev().take(10).rev().collect();
                    return Err(anyhow!(
                        "edgecore stand-in: no {what} within {timeout:?}; last messages: {tail:#?}"
                    ));
                }
            }
        }
    }

    /// Waits until the stand-in has subscribed `n` sessions (a broker restart adds one).
    pub async fn wait_sessions(&self, n: u64, timeout: Duration) -> Result<()> {
        self.wait(&format!("{n} subscribed session(s)"), timeout, |i| {
            (i.sessions >= n).then_some(())
        })
        .await
    }

    /// The stored actual value.
    pub fn actual(&self, device: &DeviceId, prop: &str) -> Option<String> {
        let id = topic_id(self.form, device);
        let i = self.inner.lock().ok()?;
        i.twins
            .get(&id)?
            .get(prop)?
            .actual
            .as_ref()
            .map(|(v, _)| v.clone())
    }

    /// The stored expected value.
    pub fn expected(&self, device: &DeviceId, prop: &str) -> Option<String> {
        let id = topic_id(self.form, device);
        let i = self.inner.lock().ok()?;
        i.twins
            .get(&id)?
            .get(prop)?
            .expected
            .as_ref()
            .map(|(v, _)| v.clone())
    }

    /// The whole stored twin.
    pub fn twin(&self, device: &DeviceId, prop: &str) -> Option<StoredTwin> {
        let id = topic_id(self.form, device);
        let i = self.inner.lock().ok()?;
        i.twins.get(&id)?.get(prop).cloned()
    }

    /// The last accepted state.
    pub fn state(&self, device: &DeviceId) -> Option<String> {
        let id = topic_id(self.form, device);
        self.inner.lock().ok()?.states.get(&id).cloned()
    }

    /// Every message received so far: (topic, payload as text).
    pub fn messages(&self) -> Vec<(String, String)> {
        self.inner.lock().map(|i| i.log.clone()).unwrap_or_default()
    }

    /// How many messages have been received (a mark for [`wait_message_after`](Self::wait_message_after)).
    pub fn mark(&self) -> usize {
        self.inner.lock().map(|i| i.log.len()).unwrap_or(0)
    }

    /// Waits for an actual value that satisfies `pred`; returns it.
    pub async fn wait_actual(
        &self,
        device: &DeviceId,
        prop: &str,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let id = topic_id(self.form, device);
        self.wait(&format!("matching actual of {id}/{prop}"), timeout, |i| {
            let v = i.twins.get(&id)?.get(prop)?.actual.as_ref()?.0.clone();
            pred(&v).then_some(v)
        })
        .await
    }

    /// Waits for a state that satisfies `pred`; returns it.
    pub async fn wait_state(
        &self,
        device: &DeviceId,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let id = topic_id(self.form, device);
        self.wait(&format!("matching state of {id}"), timeout, |i| {
            let s = i.states.get(&id)?.clone();
            pred(&s).then_some(s)
        })
        .await
    }

    /// Waits for a message received after `mark` whose topic and payload satisfy `pred`.
    pub async fn wait_message_after(
        &self,
        mark: usize,
        pred: impl Fn(&str, &str) -> bool,
        timeout: Duration,
    ) -> Result<(String, String)> {
        self.wait("matching message", timeout, |i| {
            i.log.iter().skip(mark).find(|(t, p)| pred(t, p)).cloned()
        })
        .await
    }

    /// Like the cloud: sets the expected value and publishes the delta (and document).
    pub async fn set_desired(&self, device: &DeviceId, prop: &str, value: &str) -> Result<()> {
        let id = topic_id(self.form, device);
        let (delta, document) = {
            let mut i = self.inner.lock().map_err(|_| anyhow!("poisoned"))?;
            let twins = i.twins.entry(id.clone()).or_default();
            let t = twins.entry(prop.to_owned()).or_default();
            let last = t.clone();
            t.expected = Some((value.to_owned(), now_ms()));
            let current = t.clone();
            let doc = json!({"event_id": event_id(), "timestamp": now_ms(),
                "twin": {prop: {"last": last.to_json(), "current": current.to_json()}}});
            (build_delta(twins), doc)
        };
        self.changed.send_modify(|n| *n += 1);
        self.client
            .publish(
                self.device_topic(device, "twin/update/document"),
                QoS::AtLeastOnce,
                false,
                document.to_string(),
            )
            .await?;
        if let Some(d) = delta {
            self.client
                .publish(
                    self.device_topic(device, "twin/update/delta"),
                    QoS::AtLeastOnce,
                    false,
                    d.to_string(),
                )
                .await?;
        }
        Ok(())
    }

    /// Adds a member device and publishes `membership/updated`.
    pub async fn add_device(&self, device: &DeviceId) -> Result<()> {
        let id = topic_id(self.form, device);
        if let Ok(mut i) = self.inner.lock() {
            if !i.devices.iter().any(|(t, _)| *t == id) {
                i.devices.push((id.clone(), device.clone()));
            }
        }
        let msg = json!({"event_id": event_id(), "timestamp": now_ms(),
            "added_devices": [{"id": id, "name": device.name}], "removed_devices": null});
        self.publish_raw(
            &format!("$hw/events/node/{}/membership/updated", self.node),
            msg.to_string(),
        )
        .await
    }

    /// Removes a member device and publishes `membership/updated`.
    pub async fn remove_device(&self, device: &DeviceId) -> Result<()> {
        let id = topic_id(self.form, device);
        if let Ok(mut i) = self.inner.lock() {
            i.devices.retain(|(t, _)| *t != id);
        }
        let msg = json!({"event_id": event_id(), "timestamp": now_ms(),
            "added_devices": null, "removed_devices": [{"id": id, "name": device.name}]});
        self.publish_raw(
            &format!("$hw/events/node/{}/membership/updated", self.node),
            msg.to_string(),
        )
        .await
    }

    /// Publishes any payload (QoS 1), e.g. malformed JSON on a delta topic.
    pub async fn publish_raw(&self, topic: &str, payload: impl Into<Vec<u8>>) -> Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await?;
        Ok(())
    }

    /// The device's topic with a suffix (`twin/update/delta`, ...), in this stand-in's id form.
    pub fn topic(&self, device: &DeviceId, suffix: &str) -> String {
        self.device_topic(device, suffix)
    }
}

impl Drop for EdgecoreStandIn {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn event_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "edgecore-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `DeviceTwinDelta` when some twin has a pending expected value.
fn build_delta(twins: &BTreeMap<String, StoredTwin>) -> Option<Value> {
    let mut delta = Map::new();
    let mut all = Map::new();
    for (k, t) in twins {
        if t.type_.as_deref() == Some("deleted") {
            continue;
        }
        all.insert(k.clone(), t.to_json());
        if let Some(e) = t.delta() {
            delta.insert(k.clone(), json!(e));
        }
    }
    (!delta.is_empty()).then(
        || json!({"event_id": event_id(), "timestamp": now_ms(), "twin": all, "delta": delta}),
    )
}

/// The message handling, inside the client task.
struct Worker {
    client: AsyncClient,
    node: String,
    form: DeviceIdForm,
    inner: Arc<Mutex<Inner>>,
    changed: watch::Sender<u64>,
}

impl Worker {
    fn update<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Option<T> {
        let r = self.inner.lock().ok().map(|mut i| f(&mut i));
        self.changed.send_modify(|n| *n += 1);
        r
    }

    fn publish(&self, topic: String, payload: Value) {
        let _ = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload.to_string());
    }

    fn on_message(&self, topic: &str, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload).into_owned();
        self.update(|i| i.log.push((topic.to_owned(), text)));
        if let Some(rest) = topic.strip_prefix("$hw/events/node/") {
            if rest == format!("{}/membership/get", self.node) {
                let base: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
                let devices: Vec<Value> = self
                    .inner
                    .lock()
                    .map(|i| {
                        i.devices
                            .iter()
                            .map(|(id, d)| {
                                let state = i
                                    .states
                                    .get(id)
                                    .cloned()
                                    .unwrap_or_else(|| "unknown".into());
                                json!({"id": id, "name": d.name, "description": "", "state": state})
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.publish(
                    format!("$hw/events/node/{}/membership/get/result", self.node),
                    json!({"event_id": base.get("event_id").cloned().unwrap_or(json!("")),
                           "timestamp": now_ms(), "devices": devices}),
                );
            }
            return;
        }
        let Some(rest) = topic.strip_prefix("$hw/events/device/") else {
            return;
        };
        let levels = match self.form {
            DeviceIdForm::Namespaced => 2,
            DeviceIdForm::Name => 1,
        };
        let parts: Vec<&str> = rest.splitn(levels + 1, '/').collect();
        if parts.len() != levels + 1 {
            return;
        }
        let id = parts[..levels].join("/");
        let base = |topic_suffix: &str| format!("$hw/events/device/{id}/{topic_suffix}");
        let msg: Result<Value, _> = serde_json::from_slice(payload);
        let event = msg
            .as_ref()
            .ok()
            .and_then(|m| m.get("event_id").cloned())
            .unwrap_or(json!(""));
        let error = |code: u16, reason: &str| json!({"event_id": event, "timestamp": now_ms(), "code": code, "reason": reason});
        match parts[levels] {
            "twin/update" => {
                let Ok(msg) = msg else {
                    self.publish(
                        base("twin/update/result"),
                        error(
                            400,
                            "Unmarshal update request body failed, Please check the request",
                        ),
                    );
                    return;
                };
                let Some(twin) = msg.get("twin").and_then(Value::as_object) else {
                    self.publish(
                        base("twin/update/result"),
                        error(400, "Update twin error, key:twin does not exist"),
                    );
                    return;
                };
                // Validate everything first: edgecore rejects the whole message.
                for (k, t) in twin {
                    let type_ = t.pointer("/metadata/type").and_then(Value::as_str);
                    for which in ["actual", "expected"] {
                        if let Some(v) = t.get(which).and_then(|v| v.get("value")) {
                            let Some(v) = v.as_str() else {
                                self.publish(
                                    base("twin/update/result"),
                                    error(400, &format!("the value of {k} is not a string")),
                                );
                                return;
                            };
                            if !valid_value(v) || (!v.is_empty() && !valid_typed(type_, v)) {
                                self.publish(
                                    base("twin/update/result"),
                                    error(400, &format!("the value {v:?} of {k} is invalid")),
                                );
                                return;
                            }
                        }
                    }
                    if !valid_key(k) {
                        self.publish(
                            base("twin/update/result"),
                            error(400, &format!("the key {k:?} is invalid")),
                        );
                        return;
                    }
                }
                let now = now_ms();
                let (doc, delta) = self
                    .update(|i| {
                        let twins = i.twins.entry(id.clone()).or_default();
                        let mut doc = Map::new();
                        for (k, t) in twin {
                            let stored = twins.entry(k.clone()).or_default();
                            let last = stored.clone();
                            let ts = |v: &Value| v.pointer("/metadata/timestamp").and_then(Value::as_i64).unwrap_or(now);
                            if let Some(a) = t.get("actual") {
                                let v = a.get("value").and_then(Value::as_str).unwrap_or("").to_owned();
                                stored.actual = Some((v, ts(a)));
                            }
                            if let Some(e) = t.get("expected") {
                                let v = e.get("value").and_then(Value::as_str).unwrap_or("").to_owned();
                                stored.expected = Some((v, ts(e)));
                            }
                            if let Some(ty) = t.pointer("/metadata/type").and_then(Value::as_str) {
                                stored.type_ = Some(ty.to_owned());
                            }
                            if *stored != last {
                                doc.insert(k.clone(), json!({"last": if last == StoredTwin::default() { Value::Null } else { last.to_json() }, "current": stored.to_json()}));
                            }
                        }
                        (doc, build_delta(twins))
                    })
                    .unwrap_or_default();
                self.publish(
                    base("twin/update/result"),
                    json!({"event_id": event, "timestamp": now, "twin": twin}),
                );
                if !doc.is_empty() {
                    self.publish(
                        base("twin/update/document"),
                        json!({"event_id": event, "timestamp": now, "twin": doc}),
                    );
                }
                if let Some(d) = delta {
                    self.publish(base("twin/update/delta"), d);
                }
            }
            "twin/get" => {
                let result = self
                    .inner
                    .lock()
                    .map(|i| {
                        if !i.devices.iter().any(|(t, _)| *t == id) {
                            return error(404, "Get twin failed, device not found");
                        }
                        let twins: Map<String, Value> = i
                            .twins
                            .get(&id)
                            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
                            .unwrap_or_default();
                        json!({"event_id": event, "timestamp": now_ms(), "twin": twins})
                    })
                    .unwrap_or_else(|_| error(500, "poisoned"));
                self.publish(base("twin/get/result"), result);
            }
            "state/update" => {
                let Some(state) = msg
                    .as_ref()
                    .ok()
                    .and_then(|m| m.get("state"))
                    .and_then(Value::as_str)
                else {
                    return;
                };
                let lower = state.to_ascii_lowercase();
                if !matches!(
                    lower.as_str(),
                    "online" | "offline" | "ok" | "unknown" | "unhealthy"
                ) {
                    return;
                }
                self.update(|i| i.states.insert(id.clone(), state.to_owned()));
                let name = id.rsplit('/').next().unwrap_or(&id).to_owned();
                self.publish(
                    base("state/update/result"),
                    json!({"event_id": event, "timestamp": now_ms(), "name": name, "state": state, "lastOnlineTime": ""}),
                );
            }
            _ => {}
        }
    }
}
