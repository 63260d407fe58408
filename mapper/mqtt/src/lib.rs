//! The MQTT eventbus twin backend of the `ros2` KubeEdge mapper.
//!
//! It speaks KubeEdge's legacy device-twin protocol over an MQTT broker
//! (edgecore's `eventBus`, by default the external mosquitto at
//! `tcp://127.0.0.1:1883`), and pushes samples to `pushMethod.mqtt` topics.
//!
//! # Layout (rumqttc's own split)
//! - [`config`]: the serde config ([`MqttConfig`]) and the Device/DeviceModel files.
//! - [`state`]: the pure state machine: inputs (connected, a message, a core
//!   report) to actions (subscribe, publish, emit a `BackendEvent`).
//! - [`wire`]: topic names for both device-ID forms, the exact JSON published,
//!   lenient types for what is read.
//! - [`client`] / [`eventloop`]: the rumqttc handle and the task polling its
//!   event loop (reconnect with exponential backoff and jitter).
//! - [`push`]: the `pushMethod.mqtt` data push ([`run_push`]).
//!
//! # Protocol
//! `{id}` is `{namespace}/{name}` (`deviceIdForm: namespaced`, KubeEdge >= 1.17)
//! or `{name}` (`deviceIdForm: name`, KubeEdge <= 1.15).
//!
//! On every (re)connect (clean session) the backend subscribes to
//! `$hw/events/device/{+/+ | +}/twin/update/delta`, `.../twin/update/result`,
//! `.../twin/get/result`, `.../updated`, and
//! `$hw/events/node/{node}/membership/get/result` and `.../membership/updated`;
//! publishes `membership/get` and a `twin/get` per served device; and emits
//! `BackendEvent::Sync` (the served devices) and `BackendEvent::Resync`, so
//! the core re-reports everything.
//!
//! Served devices: the devices of the config's `devices` files (KubeEdge
//! <= 1.14 sends no specs over MQTT) — and, once edgecore has answered
//! `membership/get`, only those that are also members of this node.
//! Messages about other devices are ignored.
//!
//! Published (QoS `qos`, never retained):
//! - `$hw/events/device/{id}/twin/update`: reported twins of reports with
//!   `report_to_cloud`, `{"event_id":"<uuid-shaped>","timestamp":ms,"twin":{p:{"actual":{"value":v,"metadata":{"timestamp":ms}},"expected":{"value":observedDesired},"metadata":{"type":t}}}}`
//!   (`expected` only when the report carries an observed desired value);
//! - `$hw/events/device/{id}/state/update`: `{"event_id":"","timestamp":ms,"state":"online"}`;
//! - `$ke/events/device/{id}/data/update` (with `publishDataTopic: true`):
//!   `DeviceData` of every reported twin, `reportToCloud` or not;
//! - `$ke/events/device/{id}/twin/rejected` — **this mapper's own convention**,
//!   nothing in KubeEdge reads it: desired values the core refused,
//!   `{"event_id":"","timestamp":ms,"rejected":{p:{"value":v,"reason":r}}}`.
//!
//! Consumed: `twin/update/delta` (a `Desired` per key of `delta`),
//! `twin/get/result` (a `Desired` per twin whose `expected.value` is non-empty
//! and differs from `actual`), membership results and updates (served set;
//! `Sync`, `Upsert`, `Remove`), `updated` (logged), `twin/update/result`
//! errors (logged with code and reason). A desired value equal to the observed
//! desired value last reported for that property is not forwarded again:
//! because reports carry `expected`, edgecore keeps sending deltas while the
//! actual value differs from it (an actuator that does not reach its set
//! point exactly). Malformed payloads are logged, counted and ignored.
//!
//! An unanswered `membership/get` or `twin/get` is sent again every
//! `getRetryMs` (at most 12 times per session): edgecore may subscribe after
//! the mapper, e.g. when both reconnect after a broker restart.
//!
//! While the broker is away, reports are dropped (counted): the reconnect's
//! `Resync` makes the core report the current values again.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod error;
pub mod eventloop;
pub mod push;
pub mod state;
pub mod wire;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mapper_core::backend::{now_ms, BackendIo, DeviceBinding};
use tokio::sync::mpsc;
use tracing::Instrument;

pub use config::{DeviceIdForm, MqttConfig, Qos};
pub use error::MqttError;
pub use push::run_push;
pub use state::Counters;

use client::{ClientSettings, Handle};
use eventloop::{Backoff, NetEvent};
use state::{Action, Input, Machine, Settings};

/// Capacity of the channel from the event-loop task to the backend loop.
const NET_QUEUE: usize = 256;

/// Live counters of a running backend.
#[derive(Debug, Default)]
pub struct Stats {
    counters: Mutex<Counters>,
}

impl Stats {
    /// A copy of the counters now.
    pub fn snapshot(&self) -> Counters {
        self.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn store(&self, c: &Counters) {
        if let Ok(mut g) = self.counters.lock() {
            g.clone_from(c);
        }
    }
}

/// A configured MQTT backend, ready to run.
#[derive(Debug)]
pub struct MqttBackend {
    config: MqttConfig,
    devices: Vec<DeviceBinding>,
    stats: Arc<Stats>,
}

impl MqttBackend {
    /// Validates the config and loads its device files.
    pub fn new(config: MqttConfig) -> Result<Self, MqttError> {
        config.validate()?;
        let devices = config.load_devices()?;
        Ok(Self::build(config, devices))
    }

    /// Validates the config and serves `devices` (the config's `devices` files are not read).
    pub fn with_devices(
        config: MqttConfig,
        devices: Vec<DeviceBinding>,
    ) -> Result<Self, MqttError> {
        config.validate()?;
        Ok(Self::build(config, devices))
    }

    fn build(config: MqttConfig, devices: Vec<DeviceBinding>) -> Self {
        Self {
            config,
            devices,
            stats: Arc::default(),
        }
    }

    /// The configured devices.
    pub fn devices(&self) -> &[DeviceBinding] {
        &self.devices
    }

    /// The live counters (shared; readable while the backend runs).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until `io.shutdown` is cancelled. Broker trouble is retried, never returned.
    pub async fn run(self, io: BackendIo) -> Result<(), MqttError> {
        let broker = self.config.broker_addr()?;
        let span =
            tracing::info_span!("mqtt_backend", node = %self.config.node_name, broker = %broker);
        self.run_inner(io, broker).instrument(span).await
    }

    async fn run_inner(self, io: BackendIo, broker: config::BrokerAddr) -> Result<(), MqttError> {
        let BackendIo {
            events,
            mut reports,
            shutdown,
        } = io;
        let cfg = &self.config;
        let settings = ClientSettings {
            broker,
            client_id: cfg.effective_client_id(),
            credentials: cfg
                .username
                .clone()
                .map(|u| (u, cfg.password.clone().unwrap_or_default())),
            keepalive: Duration::from_secs(cfg.keepalive_secs),
        };
        let (client, event_loop) = client::connect(&settings);
        let handle = Handle::new(client.clone());
        let seed = eventloop::random_u64();
        let backoff = Backoff::new(
            Duration::from_millis(cfg.reconnect_min_ms),
            Duration::from_millis(cfg.reconnect_max_ms),
            seed.rotate_left(17),
        );
        let (net_tx, mut net_rx) = mpsc::channel(NET_QUEUE);
        let poll_token = shutdown.child_token();
        let poller = tokio::spawn(
            eventloop::drive(
                "eventbus",
                client,
                event_loop,
                backoff,
                Some(net_tx),
                poll_token.clone(),
            )
            .in_current_span(),
        );
        let mut machine = Machine::new(
            Settings {
                node: cfg.node_name.clone(),
                form: cfg.device_id_form,
                qos: cfg.qos(),
                publish_data_topic: cfg.publish_data_topic,
                get_retry_ms: i64::try_from(cfg.get_retry_ms).unwrap_or(i64::MAX),
            },
            self.devices.clone(),
            seed,
        );
        tracing::info!(
            client_id = settings.client_id,
            devices = self.devices.len(),
            id_form = ?cfg.device_id_form,
            "mqtt backend starting"
        );
        let mut tick = tokio::time::interval(Duration::from_millis((cfg.get_retry_ms / 2).max(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = 'run: loop {
            let actions = tokio::select! {
                _ = shutdown.cancelled() => break 'run Ok(()),
                _ = tick.tick() => machine.handle(Input::Tick, now_ms()),
                ev = net_rx.recv() => match ev {
                    Some(NetEvent::Connected) => machine.handle(Input::Connected, now_ms()),
                    Some(NetEvent::Disconnected(_)) => machine.handle(Input::Disconnected, now_ms()),
                    Some(NetEvent::Message { topic, payload }) => {
                        machine.handle(Input::Message { topic: &topic, payload: &payload }, now_ms())
                    }
                    // The poller ends only on shutdown.
                    None => break 'run Ok(()),
                },
                r = reports.recv() => match r {
                    Some(r) => machine.handle(Input::Report(r), now_ms()),
                    None if shutdown.is_cancelled() => break 'run Ok(()),
                    None => break 'run Err(MqttError::CoreClosed),
                },
            };
            for action in actions {
                match action {
                    Action::Subscribe { filter, qos } => {
                        handle.subscribe(filter, qos);
                    }
                    Action::Publish(p) => {
                        if !handle.publish(p) {
                            machine.counters_mut().publish_dropped += 1;
                        }
                    }
                    Action::Emit(ev) => {
                        tokio::select! {
                            _ = shutdown.cancelled() => break 'run Ok(()),
                            r = events.send(ev) => if r.is_err() {
                                break 'run if shutdown.is_cancelled() { Ok(()) } else { Err(MqttError::CoreClosed) };
                            },
                        }
                    }
                }
            }
            self.stats.store(machine.counters());
        };
        self.stats.store(machine.counters());
        poll_token.cancel();
        let _ = poller.await;
        tracing::info!(counters = ?machine.counters(), "mqtt backend stopped");
        result
    }
}

/// Validates `config`, loads its device files and runs the backend until
/// `io.shutdown` is cancelled.
pub async fn run(config: MqttConfig, io: BackendIo) -> Result<(), MqttError> {
    MqttBackend::new(config)?.run(io).await
}
