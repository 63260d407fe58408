//! The DDS participant handle.

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
    thread::JoinHandle,
};

use rustdds::{
    no_key, DomainParticipant, DomainParticipantBuilder, Publisher, QosPolicies, RTPSEntity,
    Subscriber, Topic, TopicKind,
};
use tokio::sync::mpsc;

use super::{
    discovery::{self, Shared},
    guid_bytes, guid_prefix_of,
    raw::{RawDeserializer, RawPayload, RawSerializer},
    DdsError, DiscoveryEvent, DiscoveryRange, ParticipantConfig, Qos, RawReader, RawWriter,
};

/// A DDS domain participant: one rustdds `DomainParticipant` for one domain
/// id plus one discovery thread.
///
/// Cloning is cheap (an `Arc`). The DDS participant lives until the last
/// clone *and* the last [`RawWriter`]/[`RawReader`] created from it are
/// dropped; [`shutdown`](Self::shutdown) (or dropping the last handle) stops
/// the discovery thread, closes every discovery-event channel and makes
/// [`RawReader::recv`] return `None`.
#[derive(Clone)]
pub struct Participant {
    inner: Arc<Inner>,
}

struct Inner {
    config: ParticipantConfig,
    guid_prefix: [u8; 12],
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    publisher: Publisher,
    subscriber: Subscriber,
    // Declared last: dropped after the thread has been joined.
    dp: DomainParticipant,
}

impl fmt::Debug for Participant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Participant")
            .field("config", &self.inner.config)
            .field("guid_prefix", &self.inner.guid_prefix)
            .field("shut_down", &self.inner.shared.is_shut_down())
            .finish_non_exhaustive()
    }
}

impl Participant {
    /// Create the participant (blocks briefly while rustdds opens its sockets
    /// and starts its threads; from async code consider
    /// `tokio::task::spawn_blocking`).
    pub fn new(config: ParticipantConfig) -> Result<Self, DdsError> {
        config.validate()?;
        let domain_id = config.domain_id;
        if config.discovery_range == DiscoveryRange::Off {
            return Err(DdsError::DiscoveryOff { domain_id });
        }
        let mut builder = DomainParticipantBuilder::new(domain_id);
        if let Some(nets) = config.effective_networks() {
            builder = builder.with_only_networks(nets);
        }
        let dp = builder
            .build()
            .map_err(|source| DdsError::CreateParticipant { domain_id, source })?;
        let guid_prefix = guid_prefix_of(&guid_bytes(dp.guid()));
        let entity_err = |entity, source| DdsError::CreateEntity {
            entity,
            topic: String::new(),
            type_name: String::new(),
            source,
        };
        let publisher = dp
            .create_publisher(&QosPolicies::qos_none())
            .map_err(|e| entity_err("publisher", e))?;
        let subscriber = dp
            .create_subscriber(&QosPolicies::qos_none())
            .map_err(|e| entity_err("subscriber", e))?;

        let shared = Arc::new(Shared::new(guid_prefix, domain_id));
        let thread = {
            let dp = dp.clone();
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("ros2-dds-discovery-{domain_id}"))
                .spawn(move || discovery::run(&dp, &shared))
                .map_err(|source| DdsError::Thread { source })?
        };
        tracing::info!(
            domain_id,
            range = %config.discovery_range,
            networks = ?config.effective_networks(),
            guid_prefix = ?guid_prefix,
            "DDS participant created"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                guid_prefix,
                shared,
                thread: Mutex::new(Some(thread)),
                publisher,
                subscriber,
                dp,
            }),
        })
    }

    /// [`Participant::new`] with [`ParticipantConfig::from_env`].
    pub fn from_env() -> Result<Self, DdsError> {
        Self::new(ParticipantConfig::from_env()?)
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &ParticipantConfig {
        &self.inner.config
    }

    /// The DDS domain id.
    pub fn domain_id(&self) -> u16 {
        self.inner.config.domain_id
    }

    /// Our GUID prefix: the first 12 bytes of every GUID of ours.
    pub fn guid_prefix(&self) -> [u8; 12] {
        self.inner.guid_prefix
    }

    /// Does `guid` (a writer's or reader's) belong to this participant?
    pub fn is_local(&self, guid: &[u8; 16]) -> bool {
        guid_prefix_of(guid) == self.inner.guid_prefix
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn check_alive(&self) -> Result<(), DdsError> {
        if self.inner.shared.is_shut_down() {
            Err(DdsError::Shutdown {
                domain_id: self.domain_id(),
            })
        } else {
            Ok(())
        }
    }

    fn topic(&self, topic: &str, type_name: &str, qos: &QosPolicies) -> Result<Topic, DdsError> {
        self.inner
            .dp
            .create_topic(
                topic.to_owned(),
                type_name.to_owned(),
                qos,
                TopicKind::NoKey,
            )
            .map_err(|source| DdsError::CreateEntity {
                entity: "topic",
                topic: topic.to_owned(),
                type_name: type_name.to_owned(),
                source,
            })
    }

    /// A writer on DDS topic `topic` (e.g. `rt/chatter`) with DDS type
    /// `type_name` (e.g. `std_msgs::msg::dds_::String_`).
    pub fn writer(&self, topic: &str, type_name: &str, qos: &Qos) -> Result<RawWriter, DdsError> {
        self.check_alive()?;
        qos.validate(topic)?;
        let dds_qos = qos.to_rustdds();
        let t = self.topic(topic, type_name, &dds_qos)?;
        let w: no_key::DataWriter<RawPayload, RawSerializer> = self
            .inner
            .publisher
            .create_datawriter_no_key(&t, Some(dds_qos))
            .map_err(|source| DdsError::CreateEntity {
                entity: "writer",
                topic: topic.to_owned(),
                type_name: type_name.to_owned(),
                source,
            })?;
        let guid = guid_bytes(w.guid());
        tracing::debug!(topic, type_name, ?qos, "DDS writer created");
        Ok(RawWriter::new(
            w,
            topic,
            type_name,
            *qos,
            guid,
            self.clone(),
        ))
    }

    /// A reader on DDS topic `topic` with DDS type `type_name`.
    pub fn reader(&self, topic: &str, type_name: &str, qos: &Qos) -> Result<RawReader, DdsError> {
        self.check_alive()?;
        qos.validate(topic)?;
        let dds_qos = qos.to_rustdds();
        let t = self.topic(topic, type_name, &dds_qos)?;
        let r: no_key::DataReader<RawPayload, RawDeserializer> = self
            .inner
            .subscriber
            .create_datareader_no_key(&t, Some(dds_qos))
            .map_err(|source| DdsError::CreateEntity {
                entity: "reader",
                topic: topic.to_owned(),
                type_name: type_name.to_owned(),
                source,
            })?;
        let guid = guid_bytes(r.guid());
        tracing::debug!(topic, type_name, ?qos, "DDS reader created");
        Ok(RawReader::new(
            r,
            topic,
            type_name,
            *qos,
            guid,
            self.clone(),
        ))
    }

    /// A new stream of discovery events.
    ///
    /// It starts with the currently known participants, writers and readers
    /// (as `*Appeared`), then follows changes. The channel is bounded
    /// ([`DISCOVERY_CHANNEL_CAPACITY`](super::DISCOVERY_CHANNEL_CAPACITY)):
    /// if the consumer lags, new events for it are dropped, counted
    /// ([`discovery_events_dropped`](Self::discovery_events_dropped)) and
    /// logged at `warn`; other receivers are unaffected. The receiver ends
    /// (`None`) on shutdown.
    pub fn discovery_events(&self) -> mpsc::Receiver<DiscoveryEvent> {
        self.inner.shared.subscribe_events()
    }

    /// Discovery events dropped so far because a consumer lagged.
    pub fn discovery_events_dropped(&self) -> u64 {
        self.inner.shared.dropped_total()
    }

    /// Has [`shutdown`](Self::shutdown) run?
    pub fn is_shut_down(&self) -> bool {
        self.inner.shared.is_shut_down()
    }

    /// Stop the discovery thread and close discovery channels now (other
    /// clones become inert: creating endpoints fails with
    /// [`DdsError::Shutdown`], readers return `None`). The DDS entities go
    /// away when the last handle, writer and reader are dropped.
    pub fn shutdown(self) {
        self.inner.stop();
    }
}

impl Inner {
    fn stop(&self) {
        self.shared.shut_down();
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            if h.thread().id() == std::thread::current().id() {
                return;
            }
            if h.join().is_err() {
                tracing::error!(
                    domain_id = self.config.domain_id,
                    "DDS discovery thread panicked"
                );
            }
            tracing::debug!(
                domain_id = self.config.domain_id,
                "DDS participant shut down"
            );
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}
