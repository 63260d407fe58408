//! Discovery events and the per-participant discovery thread.
//!
//! rustdds reports discovery through a single participant status channel. One
//! background thread per [`Participant`](super::Participant) drains it,
//! keeps a table of the known participants, writers, readers and
//! writer→reader matches, and fans de-duplicated [`DiscoveryEvent`]s out to
//! every [`Participant::discovery_events`](super::Participant::discovery_events)
//! receiver. The thread waits on the channel (no polling) and ends on
//! shutdown.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, MutexGuard, PoisonError,
    },
};

use futures::StreamExt;
use rustdds::{DomainParticipantStatusEvent, StatusEvented};
use tokio::sync::{mpsc, watch};

use super::{guid_bytes, guid_prefix_of, qos::EndpointKind, Qos};

/// Capacity of each [`Participant::discovery_events`](super::Participant::discovery_events)
/// channel (raised when the initial snapshot is larger).
pub const DISCOVERY_CHANNEL_CAPACITY: usize = 1024;

/// A DDS endpoint seen by discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint GUID (first 12 bytes: its participant's prefix).
    pub guid: [u8; 16],
    /// DDS topic name, e.g. `rt/chatter`.
    pub topic: String,
    /// DDS type name, e.g. `std_msgs::msg::dds_::String_`.
    pub type_name: String,
    /// Its QoS (absent policies as DDS defaults).
    pub qos: Qos,
    /// Does it belong to this participant?
    pub local: bool,
}

/// Something discovery noticed.
///
/// `*Appeared` is emitted when an endpoint is first seen and again if its
/// topic, type or QoS changes (consumers should treat it as an upsert).
/// `*Gone` is emitted when the endpoint is disposed, times out or its
/// participant is lost. Our own participant is not reported in
/// `Participant*` events; writers and readers created through our
/// participant are reported (with [`Endpoint::local`] set and their exact
/// QoS) when created and when dropped. DDS built-in endpoints (`DCPSParticipant`,
/// `DCPSPublication`, ...) are not reported.
///
/// HISTORY is not part of DDS discovery data, so a remote endpoint's
/// [`Qos::history`] is the DDS default `KeepLast(1)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A writer appeared (or changed).
    WriterAppeared(Endpoint),
    /// A writer went away.
    WriterGone {
        /// Its GUID.
        guid: [u8; 16],
        /// Its topic.
        topic: String,
    },
    /// A reader appeared (or changed).
    ReaderAppeared(Endpoint),
    /// A reader went away.
    ReaderGone {
        /// Its GUID.
        guid: [u8; 16],
        /// Its topic.
        topic: String,
    },
    /// A remote participant appeared.
    ParticipantAppeared {
        /// Its GUID prefix.
        guid_prefix: [u8; 12],
    },
    /// A remote participant left or timed out.
    ParticipantGone {
        /// Its GUID prefix.
        guid_prefix: [u8; 12],
    },
}

#[derive(Debug)]
struct Subscriber {
    tx: mpsc::Sender<DiscoveryEvent>,
    dropped: u64,
}

#[derive(Debug, Default)]
struct State {
    participants: HashSet<[u8; 12]>,
    writers: HashMap<[u8; 16], Endpoint>,
    readers: HashMap<[u8; 16], Endpoint>,
    /// local writer → matched remote readers, local reader → matched remote writers
    matches: HashMap<[u8; 16], HashSet<[u8; 16]>>,
    subscribers: Vec<Subscriber>,
    shut_down: bool,
}

/// State shared by the participant, its writers/readers and the thread.
#[derive(Debug)]
pub(crate) struct Shared {
    own_prefix: [u8; 12],
    domain_id: u16,
    state: Mutex<State>,
    matches_changed: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    dropped_total: AtomicU64,
}

impl Shared {
    pub(crate) fn new(own_prefix: [u8; 12], domain_id: u16) -> Self {
        Self {
            own_prefix,
            domain_id,
            state: Mutex::new(State::default()),
            matches_changed: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            dropped_total: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn subscribe_matches(&self) -> watch::Receiver<u64> {
        self.matches_changed.subscribe()
    }

    pub(crate) fn subscribe_shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub(crate) fn dropped_total(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    pub(crate) fn matched_count(&self, writer: &[u8; 16]) -> usize {
        self.lock().matches.get(writer).map_or(0, HashSet::len)
    }

    /// Mark shut down: wake waiters, close every event channel.
    pub(crate) fn shut_down(&self) {
        {
            let mut st = self.lock();
            st.shut_down = true;
            st.subscribers.clear();
        }
        self.shutdown.send_replace(true);
        self.matches_changed.send_modify(|g| *g += 1);
    }

    /// A new event receiver, primed with the current table.
    pub(crate) fn subscribe_events(&self) -> mpsc::Receiver<DiscoveryEvent> {
        let mut st = self.lock();
        let snapshot: Vec<DiscoveryEvent> = st
            .participants
            .iter()
            .map(|p| DiscoveryEvent::ParticipantAppeared { guid_prefix: *p })
            .chain(
                st.writers
                    .values()
                    .cloned()
                    .map(DiscoveryEvent::WriterAppeared),
            )
            .chain(
                st.readers
                    .values()
                    .cloned()
                    .map(DiscoveryEvent::ReaderAppeared),
            )
            .collect();
        let (tx, rx) = mpsc::channel(DISCOVERY_CHANNEL_CAPACITY.max(snapshot.len() + 64));
        if st.shut_down {
            return rx; // tx dropped: the receiver reports end at once
        }
        for ev in snapshot {
            // Capacity exceeds the snapshot, so this cannot fail.
            let _ = tx.try_send(ev);
        }
        st.subscribers.push(Subscriber { tx, dropped: 0 });
        rx
    }

    fn emit(&self, st: &mut State, ev: DiscoveryEvent) {
        tracing::debug!(domain_id = self.domain_id, event = ?ev, "DDS discovery event");
        st.subscribers
            .retain_mut(|s| match s.tx.try_send(ev.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.dropped += 1;
                    self.dropped_total.fetch_add(1, Ordering::Relaxed);
                    if s.dropped == 1 || s.dropped.is_multiple_of(1000) {
                        tracing::warn!(
                            domain_id = self.domain_id,
                            dropped = s.dropped,
                            capacity = s.tx.max_capacity(),
                            "discovery event consumer is lagging; dropping events"
                        );
                    }
                    true
                }
            });
    }

    fn endpoint(&self, d: &rustdds::EndpointDescription, kind: EndpointKind) -> Endpoint {
        let guid = guid_bytes(d.guid);
        Endpoint {
            guid,
            topic: d.topic_name.clone(),
            type_name: d.type_name.clone(),
            qos: Qos::from_rustdds(&d.qos, kind),
            local: guid_prefix_of(&guid) == self.own_prefix,
        }
    }

    fn is_own(&self, guid: rustdds::GUID) -> bool {
        guid_prefix_of(&guid_bytes(guid)) == self.own_prefix
    }

    /// Report a writer or reader created through our participant.
    pub(crate) fn local_endpoint_created(&self, kind: EndpointKind, ep: Endpoint) {
        let mut st = self.lock();
        let st = &mut *st;
        let map = match kind {
            EndpointKind::Writer => &mut st.writers,
            EndpointKind::Reader => &mut st.readers,
        };
        map.insert(ep.guid, ep.clone());
        let ev = match kind {
            EndpointKind::Writer => DiscoveryEvent::WriterAppeared(ep),
            EndpointKind::Reader => DiscoveryEvent::ReaderAppeared(ep),
        };
        self.emit(st, ev);
    }

    /// Report a writer or reader of ours being dropped.
    pub(crate) fn local_endpoint_dropped(&self, kind: EndpointKind, guid: &[u8; 16]) {
        let mut st = self.lock();
        if self.endpoint_gone(&mut st, kind, guid) {
            self.matches_changed.send_modify(|g| *g += 1);
        }
    }

    /// Forgets an endpoint (ours or remote): its matches either way, its
    /// table entry, and emits the Gone event. Returns whether matches changed.
    fn endpoint_gone(&self, st: &mut State, kind: EndpointKind, guid: &[u8; 16]) -> bool {
        let mut matches_changed = st.matches.remove(guid).is_some_and(|s| !s.is_empty());
        for set in st.matches.values_mut() {
            matches_changed |= set.remove(guid);
        }
        let removed = match kind {
            EndpointKind::Writer => st.writers.remove(guid),
            EndpointKind::Reader => st.readers.remove(guid),
        };
        if let Some(ep) = removed {
            let ev = match kind {
                EndpointKind::Writer => DiscoveryEvent::WriterGone {
                    guid: *guid,
                    topic: ep.topic,
                },
                EndpointKind::Reader => DiscoveryEvent::ReaderGone {
                    guid: *guid,
                    topic: ep.topic,
                },
            };
            self.emit(st, ev);
        }
        matches_changed
    }

    /// Apply one rustdds status event.
    pub(crate) fn handle(&self, ev: DomainParticipantStatusEvent) {
        let mut st = self.lock();
        let st = &mut *st;
        let mut matches_changed = false;
        match ev {
            DomainParticipantStatusEvent::ParticipantDiscovered { dpd } => {
                let prefix = guid_prefix_of(&guid_bytes(dpd.guid));
                if prefix != self.own_prefix && st.participants.insert(prefix) {
                    self.emit(
                        st,
                        DiscoveryEvent::ParticipantAppeared {
                            guid_prefix: prefix,
                        },
                    );
                }
            }
            DomainParticipantStatusEvent::ParticipantLost { id, reason } => {
                let mut prefix = [0u8; 12];
                prefix.copy_from_slice(id.as_ref());
                tracing::debug!(domain_id = self.domain_id, ?reason, "DDS participant lost");
                let of_prefix = |m: &HashMap<[u8; 16], Endpoint>| -> Vec<[u8; 16]> {
                    m.keys()
                        .filter(|g| guid_prefix_of(g) == prefix)
                        .copied()
                        .collect()
                };
                for g in of_prefix(&st.writers) {
                    matches_changed |= self.endpoint_gone(st, EndpointKind::Writer, &g);
                }
                for g in of_prefix(&st.readers) {
                    matches_changed |= self.endpoint_gone(st, EndpointKind::Reader, &g);
                }
                // Matches of endpoints we never saw announced.
                for set in st.matches.values_mut() {
                    let before = set.len();
                    set.retain(|r| guid_prefix_of(r) != prefix);
                    matches_changed |= set.len() != before;
                }
                if st.participants.remove(&prefix) {
                    self.emit(
                        st,
                        DiscoveryEvent::ParticipantGone {
                            guid_prefix: prefix,
                        },
                    );
                }
            }
            // Our own endpoints are reported by `local_endpoint_*` (rustdds only
            // reports them when its own announcements loop back, if at all).
            DomainParticipantStatusEvent::WriterDetected { writer }
                if is_builtin(writer.guid) || self.is_own(writer.guid) => {}
            DomainParticipantStatusEvent::ReaderDetected { reader }
                if is_builtin(reader.guid) || self.is_own(reader.guid) => {}
            DomainParticipantStatusEvent::WriterLost { guid, .. }
            | DomainParticipantStatusEvent::ReaderLost { guid, .. }
                if self.is_own(guid) => {}
            DomainParticipantStatusEvent::WriterDetected { writer } => {
                let ep = self.endpoint(&writer, EndpointKind::Writer);
                if st.writers.get(&ep.guid) != Some(&ep) {
                    st.writers.insert(ep.guid, ep.clone());
                    self.emit(st, DiscoveryEvent::WriterAppeared(ep));
                }
            }
            DomainParticipantStatusEvent::ReaderDetected { reader } => {
                let ep = self.endpoint(&reader, EndpointKind::Reader);
                if st.readers.get(&ep.guid) != Some(&ep) {
                    st.readers.insert(ep.guid, ep.clone());
                    self.emit(st, DiscoveryEvent::ReaderAppeared(ep));
                }
            }
            DomainParticipantStatusEvent::WriterLost { guid, .. } => {
                matches_changed = self.endpoint_gone(st, EndpointKind::Writer, &guid_bytes(guid));
            }
            DomainParticipantStatusEvent::ReaderLost { guid, .. } => {
                matches_changed = self.endpoint_gone(st, EndpointKind::Reader, &guid_bytes(guid));
            }
            DomainParticipantStatusEvent::RemoteReaderMatched {
                local_writer,
                remote_reader,
            } => {
                matches_changed = st
                    .matches
                    .entry(guid_bytes(local_writer))
                    .or_default()
                    .insert(guid_bytes(remote_reader));
            }
            DomainParticipantStatusEvent::RemoteWriterMatched {
                local_reader,
                remote_writer,
            } => {
                matches_changed = st
                    .matches
                    .entry(guid_bytes(local_reader))
                    .or_default()
                    .insert(guid_bytes(remote_writer));
            }
            DomainParticipantStatusEvent::RemoteReaderQosIncompatible {
                local_writer,
                remote_reader,
                requested_qos,
                offered_qos,
            } => {
                tracing::warn!(
                    domain_id = self.domain_id,
                    local_writer = ?guid_bytes(local_writer),
                    remote_reader = ?guid_bytes(remote_reader),
                    requested = ?Qos::from_rustdds(&requested_qos, EndpointKind::Reader),
                    offered = ?Qos::from_rustdds(&offered_qos, EndpointKind::Writer),
                    "remote reader requests a QoS our writer does not offer; not matched"
                );
            }
            DomainParticipantStatusEvent::RemoteWriterQosIncompatible {
                local_reader,
                remote_writer,
                requested_qos,
                offered_qos,
            } => {
                tracing::warn!(
                    domain_id = self.domain_id,
                    local_reader = ?guid_bytes(local_reader),
                    remote_writer = ?guid_bytes(remote_writer),
                    requested = ?Qos::from_rustdds(&requested_qos, EndpointKind::Reader),
                    offered = ?Qos::from_rustdds(&offered_qos, EndpointKind::Writer),
                    "remote writer offers less than our reader requests; not matched"
                );
            }
            other => {
                tracing::trace!(domain_id = self.domain_id, event = ?other, "DDS participant status");
            }
        }
        if matches_changed {
            self.matches_changed.send_modify(|g| *g += 1);
        }
    }
}

/// DDS built-in (discovery) endpoints have entity kinds 0xC0..=0xFF.
fn is_builtin(guid: rustdds::GUID) -> bool {
    guid_bytes(guid)[15] & 0xC0 == 0xC0
}

/// Body of the discovery thread: drain `dp`'s status events into `shared`
/// until shutdown.
pub(crate) fn run(dp: &rustdds::DomainParticipant, shared: &Shared) {
    let listener = dp.status_listener();
    let mut stop = shared.subscribe_shutdown();
    let mut stream = listener.as_async_status_stream();
    futures::executor::block_on(async {
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|down| *down) => break,
                ev = stream.next() => match ev {
                    Some(ev) => shared.handle(ev),
                    None => {
                        tracing::debug!(domain_id = shared.domain_id, "DDS status channel closed");
                        break;
                    }
                },
            }
        }
    });
    tracing::debug!(domain_id = shared.domain_id, "DDS discovery thread stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagging_consumer_drops_and_counts() {
        let shared = Shared::new([1; 12], 0);
        let mut rx = shared.subscribe_events();
        {
            let mut st = shared.lock();
            for i in 0..(DISCOVERY_CHANNEL_CAPACITY + 5) {
                let mut p = [0u8; 12];
                p[..8].copy_from_slice(&(i as u64).to_le_bytes());
                shared.emit(&mut st, DiscoveryEvent::ParticipantGone { guid_prefix: p });
            }
        }
        assert_eq!(shared.dropped_total(), 5);
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, DISCOVERY_CHANNEL_CAPACITY);
        shared.shut_down();
        assert!(rx.blocking_recv().is_none());
        assert!(shared.subscribe_events().blocking_recv().is_none());
    }
}
