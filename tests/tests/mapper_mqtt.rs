//! The MQTT eventbus backend (`mapper-mqtt`) against a real Mosquitto and
//! the edgecore stand-in. The test plays the mapper core: it receives the
//! backend's `BackendEvent`s and sends it `Report`s over `BackendIo`.
//! Needs `mosquitto` (`scripts/test` installs it).

use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use integration_tests::edgecore::EdgecoreStandIn;
use integration_tests::mosquitto::{self, Mosquitto, MqttProbe};
use integration_tests::prereq::require;
use mapper_core::backend::{
    channels, now_ms, BackendEvent, DeviceBinding, DeviceState, PushSample, Rejection, Report,
    TwinReport,
};
use mapper_core::model::{Device, DeviceId};
use mapper_mqtt::{DeviceIdForm, MqttBackend, MqttConfig, MqttError, Stats};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(15);
const NODE: &str = "edge-1";

fn broker() -> Option<Mosquitto> {
    require("mosquitto", mosquitto::available())?;
    integration_tests::init_tracing();
    Some(Mosquitto::start().expect("start mosquitto"))
}

fn device(ns: &str, name: &str) -> DeviceBinding {
    let d: Device = device_from_json(&json!({
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"nodeName": NODE, "protocol": {"protocolName": "ros2"},
                 "properties": [{"name": "battery"}, {"name": "speed"}]}
    }));
    DeviceBinding {
        device: d,
        model: None,
    }
}

fn device_from_json(v: &Value) -> Device {
    serde_json::from_value(v.clone()).expect("device json")
}

/// The backend under test, with the core's ends of its channels.
struct Backend {
    events: mpsc::Receiver<BackendEvent>,
    reports: mpsc::Sender<Report>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), MqttError>>>,
    stats: Arc<Stats>,
}

impl Backend {
    fn start(url: &str, form: DeviceIdForm, devices: Vec<DeviceBinding>) -> Self {
        let mut cfg = MqttConfig::new(NODE);
        cfg.broker = url.to_owned();
        cfg.device_id_form = form;
        cfg.reconnect_min_ms = 50;
        cfg.reconnect_max_ms = 500;
        // After a broker restart the backend may ask before the stand-in has resubscribed.
        cfg.get_retry_ms = 200;
        cfg.client_id = Some(mosquitto::client_id("mapper"));
        let backend = MqttBackend::with_devices(cfg, devices).expect("valid config");
        let stats = backend.stats();
        let shutdown = CancellationToken::new();
        let (io, events, reports) = channels(shutdown.clone());
        let task = tokio::spawn(backend.run(io));
        Self {
            events,
            reports,
            shutdown,
            task: Some(task),
            stats,
        }
    }

    /// Waits for an event `f` picks; other events are skipped.
    async fn wait_event<R>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&BackendEvent) -> Option<R>,
    ) -> Result<R> {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => {
                    if let Some(r) = f(&ev) {
                        return Ok(r);
                    }
                }
                Ok(None) => bail!("backend ended while waiting for {what}"),
                Err(_) => bail!(
                    "no {what} from the backend within {T:?} (stats {:?})",
                    self.stats.snapshot()
                ),
            }
        }
    }

    /// Waits for Sync then Resync (a session start); returns the synced ids.
    async fn wait_session(&mut self) -> Result<Vec<DeviceId>> {
        let ids = self
            .wait_event("Sync", |e| match e {
                BackendEvent::Sync(list) => {
                    Some(list.iter().map(DeviceBinding::id).collect::<Vec<_>>())
                }
                _ => None,
            })
            .await?;
        self.wait_event("Resync", |e| {
            matches!(e, BackendEvent::Resync).then_some(())
        })
        .await?;
        Ok(ids)
    }

    /// Waits for `Desired { device, property, value }`. Other events are
    /// skipped, other Desired values too: a `twin/get` retry may repeat an
    /// earlier one, which is harmless for the core.
    async fn wait_desired(&mut self, device: &DeviceId, property: &str, value: &str) -> Result<()> {
        let what = format!("Desired {device} {property}={value}");
        self.wait_event(&what, |e| match e {
            BackendEvent::Desired {
                device: d,
                property: p,
                value: v,
            } => (d == device && p == property && v == value).then_some(()),
            _ => None,
        })
        .await
    }

    async fn report(&self, r: Report) -> Result<()> {
        self.reports
            .send(r)
            .await
            .map_err(|_| anyhow!("backend gone"))
    }

    async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().context("stopped twice")?;
        tokio::time::timeout(T, task)
            .await
            .context("backend did not stop")??
            .map_err(Into::into)
    }
}

fn twin(prop: &str, value: &str, observed: Option<&str>) -> TwinReport {
    TwinReport {
        property: prop.into(),
        reported: value.into(),
        observed_desired: observed.map(Into::into),
        value_type: "float",
        timestamp_ms: now_ms(),
    }
}

fn report(device: &DeviceId, twins: Vec<TwinReport>, state: Option<DeviceState>) -> Report {
    Report {
        device: device.clone(),
        twins,
        state,
        rejections: vec![],
        report_to_cloud: true,
    }
}

async fn reports_reach_edgecore(form: DeviceIdForm) -> Result<()> {
    let Some(broker) = broker() else {
        return Ok(());
    };
    let r1 = DeviceId::new("default", "r1");
    let r2 = DeviceId::new("fleet", "r2");
    let edge =
        EdgecoreStandIn::start(&broker.url(), NODE, vec![r1.clone(), r2.clone()], form).await?;
    let mut b = Backend::start(
        &broker.url(),
        form,
        vec![device("default", "r1"), device("fleet", "r2")],
    );
    let ids = b.wait_session().await?;
    ensure!(ids == [r1.clone(), r2.clone()], "synced {ids:?}");

    b.report(report(
        &r1,
        vec![twin("battery", "87.5", None)],
        Some(DeviceState::Online),
    ))
    .await?;
    b.report(report(
        &r2,
        vec![twin("battery", "12", None)],
        Some(DeviceState::Offline),
    ))
    .await?;
    edge.wait_actual(&r1, "battery", |v| v == "87.5", T).await?;
    edge.wait_actual(&r2, "battery", |v| v == "12", T).await?;
    edge.wait_state(&r1, |s| s == "online", T).await?;
    edge.wait_state(&r2, |s| s == "offline", T).await?;
    let t = edge.twin(&r1, "battery").context("twin stored")?;
    ensure!(t.type_.as_deref() == Some("float"), "{t:?}");
    ensure!(
        t.expected.is_none(),
        "no expected without an observed desired value: {t:?}"
    );

    // The wire form of the topics.
    let want = match form {
        DeviceIdForm::Namespaced => "$hw/events/device/default/r1/twin/update",
        DeviceIdForm::Name => "$hw/events/device/r1/twin/update",
    };
    ensure!(
        edge.messages().iter().any(|(t, _)| t == want),
        "no message on {want}"
    );

    // reportToCloud false: no twin update.
    let mark = edge.mark();
    let mut local = report(&r1, vec![twin("battery", "1", None)], None);
    local.report_to_cloud = false;
    b.report(local).await?;
    b.report(report(&r1, vec![twin("battery", "88", None)], None))
        .await?;
    edge.wait_actual(&r1, "battery", |v| v == "88", T).await?;
    let updates: Vec<_> = edge
        .messages()
        .into_iter()
        .skip(mark)
        .filter(|(t, _)| t == want)
        .collect();
    ensure!(
        updates.len() == 1,
        "only the reportToCloud report is a twin update: {updates:?}"
    );
    ensure!(
        b.stats.snapshot().update_errors == 0,
        "{:?}",
        b.stats.snapshot()
    );
    b.stop().await
}

#[tokio::test]
async fn reports_become_actual_twins_namespaced() -> Result<()> {
    reports_reach_edgecore(DeviceIdForm::Namespaced).await
}

#[tokio::test]
async fn reports_become_actual_twins_name_form() -> Result<()> {
    reports_reach_edgecore(DeviceIdForm::Name).await
}

#[tokio::test]
async fn desired_from_edgecore_arrives_and_rejections_are_published() -> Result<()> {
    let Some(broker) = broker() else {
        return Ok(());
    };
    let r1 = DeviceId::new("default", "r1");
    let form = DeviceIdForm::Namespaced;
    let edge = EdgecoreStandIn::start(&broker.url(), NODE, vec![r1.clone()], form).await?;
    let mut probe =
        MqttProbe::start(&broker.url(), &["$ke/events/device/+/+/twin/rejected"]).await?;
    let mut b = Backend::start(&broker.url(), form, vec![device("default", "r1")]);
    b.wait_session().await?;

    edge.set_desired(&r1, "speed", "0.5").await?;
    b.wait_desired(&r1, "speed", "0.5").await?;

    // The core applies it and reports it back as observed: no delta any more.
    b.report(report(&r1, vec![twin("speed", "0.5", Some("0.5"))], None))
        .await?;
    edge.wait_actual(&r1, "speed", |v| v == "0.5", T).await?;
    ensure!(edge.expected(&r1, "speed").as_deref() == Some("0.5"));

    // A refused value goes to the $ke rejected topic.
    edge.set_desired(&r1, "speed", "9").await?;
    b.wait_desired(&r1, "speed", "9").await?;
    let mut r = report(&r1, vec![], None);
    r.rejections = vec![Rejection {
        property: "speed".into(),
        value: "9".into(),
        reason: "above maximum 1.5".into(),
    }];
    b.report(r).await?;
    let (topic, payload) = probe.recv(T).await?;
    ensure!(
        topic == "$ke/events/device/default/r1/twin/rejected",
        "{topic}"
    );
    let v: Value = serde_json::from_slice(&payload)?;
    ensure!(
        v["rejected"]["speed"] == json!({"value": "9", "reason": "above maximum 1.5"}),
        "{v}"
    );
    b.stop().await
}

#[tokio::test]
async fn twin_get_on_connect_yields_pending_desired() -> Result<()> {
    let Some(broker) = broker() else {
        return Ok(());
    };
    let r1 = DeviceId::new("default", "r1");
    let form = DeviceIdForm::Name;
    let edge = EdgecoreStandIn::start(&broker.url(), NODE, vec![r1.clone()], form).await?;
    // Set while no mapper runs: the delta is lost, the twin keeps the expected value.
    edge.set_desired(&r1, "speed", "0.25").await?;
    let mut b = Backend::start(&broker.url(), form, vec![device("default", "r1")]);
    b.wait_session().await?;
    b.wait_desired(&r1, "speed", "0.25").await?;
    ensure!(
        edge.messages()
            .iter()
            .any(|(t, _)| t == "$hw/events/device/r1/twin/get"),
        "the backend asked for the twins"
    );
    b.stop().await
}

#[tokio::test]
async fn membership_limits_served_devices() -> Result<()> {
    let Some(broker) = broker() else {
        return Ok(());
    };
    let r1 = DeviceId::new("default", "r1");
    let r2 = DeviceId::new("fleet", "r2");
    let form = DeviceIdForm::Namespaced;
    // edgecore knows only r1 on this node.
    let edge = EdgecoreStandIn::start(&broker.url(), NODE, vec![r1.clone()], form).await?;
    let mut b = Backend::start(
        &broker.url(),
        form,
        vec![device("default", "r1"), device("fleet", "r2")],
    );
    let first = b.wait_session().await?;
    ensure!(
        first.len() == 2,
        "before the membership result: the configured list"
    );
    let ids = b
        .wait_event("Sync after membership", |e| match e {
            BackendEvent::Sync(list) => {
                Some(list.iter().map(DeviceBinding::id).collect::<Vec<_>>())
            }
            _ => None,
        })
        .await?;
    ensure!(ids == [r1.clone()], "{ids:?}");
    // r2 joins the node.
    edge.add_device(&r2).await?;
    let up = b
        .wait_event("Upsert", |e| match e {
            BackendEvent::Upsert(d) => Some(d.id()),
            _ => None,
        })
        .await?;
    ensure!(up == r2, "{up:?}");
    b.report(report(&r2, vec![twin("battery", "40", None)], None))
        .await?;
    edge.wait_actual(&r2, "battery", |v| v == "40", T).await?;
    b.stop().await
}

#[tokio::test]
async fn broker_restart_reconnects_and_resyncs() -> Result<()> {
    let Some(mut broker) = broker() else {
        return Ok(());
    };
    let r1 = DeviceId::new("default", "r1");
    let form = DeviceIdForm::Namespaced;
    let edge = EdgecoreStandIn::start(&broker.url(), NODE, vec![r1.clone()], form).await?;
    let mut b = Backend::start(&broker.url(), form, vec![device("default", "r1")]);
    b.wait_session().await?;
    b.report(report(
        &r1,
        vec![twin("battery", "50", None)],
        Some(DeviceState::Online),
    ))
    .await?;
    edge.wait_actual(&r1, "battery", |v| v == "50", T).await?;

    broker.restart()?;
    // Both clients reconnect on their own; the order is not fixed (the
    // backend's first gets may precede the stand-in's subscriptions: it
    // re-sends unanswered ones every getRetryMs). Which gets reach the
    // stand-in is therefore not asserted; what the core sees is.
    edge.wait_sessions(2, T).await?;
    // The backend reconnects: Sync + Resync again (the core re-reports) ...
    b.wait_session().await?;
    b.report(report(
        &r1,
        vec![twin("battery", "49", None)],
        Some(DeviceState::Online),
    ))
    .await?;
    edge.wait_actual(&r1, "battery", |v| v == "49", T).await?;
    // Subscriptions are back: a delta arrives.
    edge.set_desired(&r1, "speed", "1.0").await?;
    b.wait_desired(&r1, "speed", "1.0").await?;
    ensure!(b.stats.snapshot().connects >= 2, "{:?}", b.stats.snapshot());
    b.stop().await
}

#[tokio::test]
async fn malformed_json_on_delta_topic_is_survived() -> Result<()> {
    let Some(broker) = broker() else {
        return Ok(());
    };
    let r1 = DeviceId::new("default", "r1");
    let form = DeviceIdForm::Namespaced;
    let edge = EdgecoreStandIn::start(&broker.url(), NODE, vec![r1.clone()], form).await?;
    let mut b = Backend::start(&broker.url(), form, vec![device("default", "r1")]);
    b.wait_session().await?;
    let delta = edge.topic(&r1, "twin/update/delta");
    for bad in [
        &b"{not json"[..],
        b"",
        b"\xff\x00",
        br#"{"delta":{"speed":5}}"#,
        b"[]",
    ] {
        edge.publish_raw(&delta, bad).await?;
    }
    edge.set_desired(&r1, "speed", "0.7").await?;
    b.wait_desired(&r1, "speed", "0.7").await?;
    // QoS 0 subscription, one connection: the garbage arrived before the good delta.
    ensure!(
        b.stats.snapshot().malformed == 5,
        "{:?}",
        b.stats.snapshot()
    );
    b.stop().await
}

#[tokio::test]
async fn push_sample_reaches_push_method_topic() -> Result<()> {
    let Some(broker) = broker() else {
        return Ok(());
    };
    let mut probe = MqttProbe::start(&broker.url(), &["robots/+/battery"]).await?;
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(mapper_mqtt::run_push(rx, shutdown.clone()));
    let sample = |v: &str| PushSample {
        device: DeviceId::new("default", "r1"),
        property: "battery".into(),
        value: v.into(),
        value_type: "float",
        timestamp_ms: 1_700_000_000_000,
        method: json!({"mqtt": {"address": broker.url(), "topic": "robots/r1/battery", "qos": 1, "retained": false}}),
    };
    // The push client connects lazily on the first sample; QoS 1 publishes
    // queued before the connection completes are delivered once it does.
    tx.send(sample("77.5")).await?;
    let (topic, payload) = probe.recv(T).await?;
    ensure!(topic == "robots/r1/battery", "{topic}");
    let v: Value = serde_json::from_slice(&payload)?;
    ensure!(v["event_id"] == "" && v["timestamp"].is_i64(), "{v}");
    ensure!(
        v["data"]
            == json!({"battery": {"value": "77.5", "metadata": {"timestamp": 1_700_000_000_000_i64, "type": "float"}}}),
        "{v}"
    );
    shutdown.cancel();
    tokio::time::timeout(T, task)
        .await??
        .map_err(anyhow::Error::from)
}
