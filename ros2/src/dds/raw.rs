//! Untyped ("raw CDR") readers and writers.
//!
//! # How the encapsulation header survives rustdds
//! rustdds' `no_key` writers take the payload *body* from a
//! `SerializerAdapter::to_bytes` and prepend a header built from the
//! adapter's *static* `output_encoding()`. A single adapter type therefore
//! cannot, by its signature, follow the header of each payload. We keep one
//! DDS writer per [`RawWriter`] (one GUID, one sequence-number space, order
//! preserved) and make the adapter stateful per write through a thread-local:
//! [`RawWriter::write`] stores the payload's representation identifier right
//! before handing the sample to rustdds, and the adapter's `to_bytes` (which
//! rustdds calls on the same thread, immediately before `output_encoding`)
//! stores it again from the payload itself. `output_encoding` then returns
//! exactly the identifier of the payload being written. The loopback tests
//! write little- and big-endian samples through one writer to pin this down.
//!
//! On receive, rustdds hands the adapter the body and the representation
//! identifier; we rebuild `id ++ 00 00 ++ body` (one copy).
//!
//! The two representation *options* bytes are not carried: rustdds always
//! sends `00 00` and does not expose received options.

use std::{
    cell::Cell,
    convert::Infallible,
    fmt,
    time::{Duration, SystemTime},
};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use rustdds::{
    dds::WriteError,
    no_key::{self, Decode, DefaultDecoder, DeserializerAdapter, SerializerAdapter},
    RepresentationIdentifier, Timestamp,
};
use tokio::sync::watch;

use super::{participant::Participant, DdsError, Endpoint, EndpointKind, Qos};

/// How long a reliable write may wait for room in the send window (rustdds
/// `max_blocking_time`) before failing with [`DdsError::WriteTimeout`]. The
/// same value as Fast DDS' default.
pub const WRITE_MAX_BLOCKING_TIME: Duration = Duration::from_millis(100);

/// An RTPS representation identifier: the first two bytes of the
/// encapsulation header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Representation(pub [u8; 2]);

impl Representation {
    /// Classic CDR (XCDR1), big endian.
    pub const CDR_BE: Self = Self([0x00, 0x00]);
    /// Classic CDR (XCDR1), little endian (what ROS 2 sends in practice).
    pub const CDR_LE: Self = Self([0x00, 0x01]);
    /// Parameter-list CDR, big endian.
    pub const PL_CDR_BE: Self = Self([0x00, 0x02]);
    /// Parameter-list CDR, little endian.
    pub const PL_CDR_LE: Self = Self([0x00, 0x03]);
    /// XCDR2 plain, big endian.
    pub const XCDR2_BE: Self = Self([0x00, 0x06]);
    /// XCDR2 plain, little endian.
    pub const XCDR2_LE: Self = Self([0x00, 0x07]);
    /// XCDR2 delimited, big endian.
    pub const D_CDR2_BE: Self = Self([0x00, 0x08]);
    /// XCDR2 delimited, little endian.
    pub const D_CDR2_LE: Self = Self([0x00, 0x09]);
    /// XCDR2 parameter list, big endian.
    pub const PL_CDR2_BE: Self = Self([0x00, 0x0a]);
    /// XCDR2 parameter list, little endian.
    pub const PL_CDR2_LE: Self = Self([0x00, 0x0b]);

    /// Little endian? (The low bit of every identifier above.)
    pub fn is_little_endian(self) -> bool {
        self.0[1] & 1 == 1
    }

    /// Is this identifier in [`SUPPORTED_REPRESENTATIONS`]?
    pub fn is_supported(self) -> bool {
        SUPPORTED_REPRESENTATIONS.contains(&self)
    }

    fn to_rtps(self) -> RepresentationIdentifier {
        // from_bytes only fails on fewer than two bytes.
        RepresentationIdentifier::from_bytes(&self.0).unwrap_or(RepresentationIdentifier::CDR_LE)
    }
}

/// Representation identifiers a [`RawWriter`] sends and a [`RawReader`]
/// delivers: the CDR family (XCDR1 and XCDR2, plain, delimited and parameter
/// list, both endiannesses). Anything else (e.g. XML) is rejected on write and
/// dropped (with a log line from rustdds) on receive.
pub const SUPPORTED_REPRESENTATIONS: &[Representation] = &[
    Representation::CDR_BE,
    Representation::CDR_LE,
    Representation::PL_CDR_BE,
    Representation::PL_CDR_LE,
    Representation::XCDR2_BE,
    Representation::XCDR2_LE,
    Representation::D_CDR2_BE,
    Representation::D_CDR2_LE,
    Representation::PL_CDR2_BE,
    Representation::PL_CDR2_LE,
];

/// The same list in rustdds' type (for `supported_encodings`).
static RTPS_SUPPORTED: [RepresentationIdentifier; 10] = [
    RepresentationIdentifier::CDR_BE,
    RepresentationIdentifier::CDR_LE,
    RepresentationIdentifier::PL_CDR_BE,
    RepresentationIdentifier::PL_CDR_LE,
    RepresentationIdentifier::XCDR2_BE,
    RepresentationIdentifier::XCDR2_LE,
    RepresentationIdentifier::D_CDR2_BE,
    RepresentationIdentifier::D_CDR2_LE,
    RepresentationIdentifier::PL_XCDR2_BE,
    RepresentationIdentifier::PL_XCDR2_LE,
];

const HEADER_LEN: usize = 4;

/// A complete payload (header included) as it moves through rustdds.
#[derive(Debug)]
pub(crate) struct RawPayload {
    rep: RepresentationIdentifier,
    full: Bytes,
}

impl RawPayload {
    /// Validate a payload for `topic`.
    fn parse(full: Bytes, topic: &str) -> Result<Self, DdsError> {
        if full.len() < HEADER_LEN {
            return Err(DdsError::PayloadTooShort {
                topic: topic.to_owned(),
                len: full.len(),
            });
        }
        let rep = Representation([full[0], full[1]]);
        if !rep.is_supported() {
            return Err(DdsError::UnsupportedRepresentation {
                topic: topic.to_owned(),
                id: rep.0,
            });
        }
        Ok(Self {
            rep: rep.to_rtps(),
            full,
        })
    }
}

thread_local! {
    /// The representation of the payload currently being written on this
    /// thread; see the module docs.
    static OUTGOING_REPRESENTATION: Cell<RepresentationIdentifier> =
        const { Cell::new(RepresentationIdentifier::CDR_LE) };
}

/// rustdds serializer adapter passing the body through.
pub(crate) struct RawSerializer;

impl SerializerAdapter<RawPayload> for RawSerializer {
    type Error = Infallible;

    fn output_encoding() -> RepresentationIdentifier {
        OUTGOING_REPRESENTATION.with(Cell::get)
    }

    fn to_bytes(value: &RawPayload) -> Result<Bytes, Infallible> {
        OUTGOING_REPRESENTATION.with(|c| c.set(value.rep));
        Ok(value.full.slice(HEADER_LEN..))
    }
}

/// rustdds deserializer adapter re-attaching the header.
pub(crate) struct RawDeserializer;

impl DeserializerAdapter<RawPayload> for RawDeserializer {
    type Error = Infallible;
    type Decoded = RawPayload;

    fn supported_encodings() -> &'static [RepresentationIdentifier] {
        &RTPS_SUPPORTED
    }

    fn transform_decoded(decoded: RawPayload) -> RawPayload {
        decoded
    }
}

impl DefaultDecoder<RawPayload> for RawDeserializer {
    type Decoder = RawDecoder;
    const DECODER: RawDecoder = RawDecoder;
}

/// The (stateless) decoder behind [`RawDeserializer`].
#[derive(Clone, Copy)]
pub(crate) struct RawDecoder;

impl<'de> Decode<'de, RawPayload> for RawDecoder {
    type Error = Infallible;

    fn decode_bytes(
        self,
        input_bytes: &'de [u8],
        encoding: RepresentationIdentifier,
    ) -> Result<RawPayload, Infallible> {
        let mut b = BytesMut::with_capacity(HEADER_LEN + input_bytes.len());
        b.put_slice(&encoding.to_bytes());
        b.put_slice(&[0, 0]);
        b.put_slice(input_bytes);
        Ok(RawPayload {
            rep: encoding,
            full: b.freeze(),
        })
    }
}

/// One received sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSample {
    /// The serialized sample, starting with its 4-byte encapsulation header
    /// (options bytes are always `00 00`, see the module docs).
    pub payload: Bytes,
    /// GUID of the writer that sent it (compare its first 12 bytes with
    /// [`Participant::guid_prefix`] to recognise our own writers).
    pub writer_guid: [u8; 16],
    /// The writer's source timestamp, if it sent a valid one.
    pub source_timestamp: Option<SystemTime>,
}

impl RawSample {
    /// The payload's representation identifier.
    pub fn representation(&self) -> Representation {
        Representation([self.payload[0], self.payload[1]])
    }
}

fn timestamp_to_system_time(ts: Timestamp) -> Option<SystemTime> {
    if ts == Timestamp::INVALID || ts == Timestamp::INFINITE {
        return None;
    }
    let ticks = ts.to_ticks();
    let secs = ticks >> 32;
    let nanos = ((ticks & 0xFFFF_FFFF) * 1_000_000_000) >> 32;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, u32::try_from(nanos).unwrap_or(0)))
}

/// Identity of an endpoint, shared by readers and writers.
#[derive(Debug, Clone)]
struct EndpointInfo {
    topic: String,
    type_name: String,
    qos: Qos,
    guid: [u8; 16],
}

impl fmt::Display for EndpointInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.topic, self.type_name)
    }
}

/// A writer for one topic, sending pre-serialized payloads.
///
/// Dropping it deletes the DDS writer (remote readers see it disappear).
pub struct RawWriter {
    writer: no_key::DataWriter<RawPayload, RawSerializer>,
    info: EndpointInfo,
    participant: Participant,
    matched: watch::Receiver<u64>,
}

impl fmt::Debug for RawWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawWriter")
            .field("topic", &self.info.topic)
            .field("type_name", &self.info.type_name)
            .field("qos", &self.info.qos)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RawWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.info.fmt(f)
    }
}

impl RawWriter {
    pub(crate) fn new(
        writer: no_key::DataWriter<RawPayload, RawSerializer>,
        topic: &str,
        type_name: &str,
        qos: Qos,
        guid: [u8; 16],
        participant: Participant,
    ) -> Self {
        let matched = participant.shared().subscribe_matches();
        participant.shared().local_endpoint_created(
            EndpointKind::Writer,
            Endpoint {
                guid,
                topic: topic.to_owned(),
                type_name: type_name.to_owned(),
                qos,
                local: true,
            },
        );
        Self {
            writer,
            info: EndpointInfo {
                topic: topic.to_owned(),
                type_name: type_name.to_owned(),
                qos,
                guid,
            },
            participant,
            matched,
        }
    }

    /// The DDS topic name.
    pub fn topic(&self) -> &str {
        &self.info.topic
    }

    /// The DDS type name.
    pub fn type_name(&self) -> &str {
        &self.info.type_name
    }

    /// The QoS this writer offers.
    pub fn qos(&self) -> &Qos {
        &self.info.qos
    }

    /// This writer's GUID.
    pub fn guid(&self) -> [u8; 16] {
        self.info.guid
    }

    /// Publish one payload (header included), stamped with the current time
    /// as its source timestamp.
    ///
    /// Errors: [`DdsError::PayloadTooShort`] / [`DdsError::UnsupportedRepresentation`]
    /// for bad input; [`DdsError::WriteTimeout`] when a reliable writer's send
    /// window stayed full for [`WRITE_MAX_BLOCKING_TIME`] (this call blocks
    /// the thread at most that long; best-effort writes never block). Use
    /// [`write_async`](Self::write_async) from async code to wait without
    /// blocking a runtime thread.
    pub fn write(&self, payload: impl Into<Bytes>) -> Result<(), DdsError> {
        let p = RawPayload::parse(payload.into(), &self.info.topic)?;
        OUTGOING_REPRESENTATION.with(|c| c.set(p.rep));
        self.writer
            .write(p, Some(Timestamp::now()))
            .map_err(|e| self.write_error(&e))
    }

    /// Like [`write`](Self::write) but waits for send-window room
    /// asynchronously (still at most [`WRITE_MAX_BLOCKING_TIME`]).
    pub async fn write_async(&self, payload: impl Into<Bytes>) -> Result<(), DdsError> {
        let p = RawPayload::parse(payload.into(), &self.info.topic)?;
        OUTGOING_REPRESENTATION.with(|c| c.set(p.rep));
        self.writer
            .async_write(p, Some(Timestamp::now()))
            .await
            .map_err(|e| self.write_error(&e))
    }

    fn write_error(&self, e: &WriteError<RawPayload>) -> DdsError {
        let err = match e {
            WriteError::WouldBlock { .. } => DdsError::WriteTimeout {
                topic: self.info.topic.clone(),
                waited: WRITE_MAX_BLOCKING_TIME,
            },
            other => DdsError::Write {
                topic: self.info.topic.clone(),
                reason: other.to_string(),
            },
        };
        tracing::warn!(topic = %self.info.topic, error = %err, "DDS write failed");
        err
    }

    /// How many remote readers are currently matched (QoS-compatible,
    /// discovered, not lost).
    pub fn matched_readers(&self) -> usize {
        self.participant.shared().matched_count(&self.info.guid)
    }

    /// Wait until at least `n` readers are matched; `false` on timeout or
    /// participant shutdown.
    pub async fn wait_for_readers(&self, n: usize, timeout: Duration) -> bool {
        wait_for_matches(self.matched.clone(), || self.matched_readers(), n, timeout).await
    }

    /// Block until every matched reliable reader acknowledged all samples, or
    /// `timeout`. `Ok(true)` when acknowledged (best-effort writers always).
    pub async fn wait_for_acknowledgments(&self, timeout: Duration) -> Result<bool, DdsError> {
        match tokio::time::timeout(timeout, self.writer.async_wait_for_acknowledgments()).await {
            Err(_elapsed) => Ok(false),
            Ok(Ok(acked)) => Ok(acked),
            Ok(Err(e)) => Err(DdsError::Write {
                topic: self.info.topic.clone(),
                reason: e.to_string(),
            }),
        }
    }
}

impl Drop for RawWriter {
    fn drop(&mut self) {
        self.participant
            .shared()
            .local_endpoint_dropped(EndpointKind::Writer, &self.info.guid);
        tracing::debug!(topic = %self.info.topic, type_name = %self.info.type_name, "DDS writer dropped");
    }
}

/// Waits until `count()` reaches `n`, re-checking on every match change.
async fn wait_for_matches(
    mut rx: watch::Receiver<u64>,
    count: impl Fn() -> usize,
    n: usize,
    timeout: Duration,
) -> bool {
    let wait = async {
        loop {
            if count() >= n {
                return true;
            }
            if rx.changed().await.is_err() {
                return count() >= n;
            }
        }
    };
    tokio::time::timeout(timeout, wait).await.unwrap_or(false)
}

impl Drop for RawReader {
    fn drop(&mut self) {
        self.participant
            .shared()
            .local_endpoint_dropped(EndpointKind::Reader, &self.info.guid);
        tracing::debug!(topic = %self.info.topic, type_name = %self.info.type_name, "DDS reader dropped");
    }
}

/// A reader for one topic, delivering payloads with their header.
///
/// Buffering is bounded by the QoS history (`KEEP_LAST n`, or
/// [`KEEP_ALL_SAMPLE_LIMIT`](super::KEEP_ALL_SAMPLE_LIMIT) for `KEEP_ALL`):
/// when the consumer lags, the oldest samples are dropped by rustdds.
/// Dropping the reader deletes the DDS reader.
pub struct RawReader {
    stream: no_key::DataReaderStream<RawPayload, RawDeserializer>,
    info: EndpointInfo,
    shutdown: watch::Receiver<bool>,
    // Keeps the participant (and its DomainParticipant) alive.
    participant: Participant,
}

impl fmt::Debug for RawReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawReader")
            .field("topic", &self.info.topic)
            .field("type_name", &self.info.type_name)
            .field("qos", &self.info.qos)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RawReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.info.fmt(f)
    }
}

impl RawReader {
    pub(crate) fn new(
        reader: no_key::DataReader<RawPayload, RawDeserializer>,
        topic: &str,
        type_name: &str,
        qos: Qos,
        guid: [u8; 16],
        participant: Participant,
    ) -> Self {
        let shutdown = participant.shared().subscribe_shutdown();
        participant.shared().local_endpoint_created(
            EndpointKind::Reader,
            Endpoint {
                guid,
                topic: topic.to_owned(),
                type_name: type_name.to_owned(),
                qos,
                local: true,
            },
        );
        Self {
            stream: reader.async_sample_stream(),
            info: EndpointInfo {
                topic: topic.to_owned(),
                type_name: type_name.to_owned(),
                qos,
                guid,
            },
            shutdown,
            participant,
        }
    }

    /// The DDS topic name.
    pub fn topic(&self) -> &str {
        &self.info.topic
    }

    /// The DDS type name.
    pub fn type_name(&self) -> &str {
        &self.info.type_name
    }

    /// The QoS this reader requests.
    pub fn qos(&self) -> &Qos {
        &self.info.qos
    }

    /// This reader's GUID.
    pub fn guid(&self) -> [u8; 16] {
        self.info.guid
    }

    /// How many remote writers are currently matched (QoS-compatible,
    /// discovered, not lost).
    pub fn matched_writers(&self) -> usize {
        self.participant.shared().matched_count(&self.info.guid)
    }

    /// Wait until at least `n` writers are matched; `false` on timeout or
    /// participant shutdown.
    pub async fn wait_for_writers(&self, n: usize, timeout: Duration) -> bool {
        let rx = self.participant.shared().subscribe_matches();
        wait_for_matches(rx, || self.matched_writers(), n, timeout).await
    }

    /// The next sample. `None` once the participant is shut down.
    ///
    /// Dispose/unregister notifications are skipped, as are samples rustdds
    /// could not deliver (logged at `warn`). Cancel safe: dropping the future
    /// loses no sample.
    pub async fn recv(&mut self) -> Option<RawSample> {
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|down| *down) => return None,
                item = self.stream.next() => match item {
                    None => return None,
                    Some(Ok(sample)) => {
                        let info = sample.sample_info();
                        let writer_guid = info.writer_guid().to_bytes();
                        let source_timestamp =
                            info.source_timestamp().and_then(timestamp_to_system_time);
                        return Some(RawSample {
                            payload: sample.into_value().full,
                            writer_guid,
                            source_timestamp,
                        });
                    }
                    Some(Err(e)) => {
                        tracing::warn!(topic = %self.info.topic, error = %e, "skipping undeliverable DDS sample");
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_short_and_unknown() {
        let e = RawPayload::parse(Bytes::from_static(&[0, 1, 0]), "rt/t").unwrap_err();
        assert!(matches!(e, DdsError::PayloadTooShort { len: 3, .. }), "{e}");
        assert!(e.to_string().contains("rt/t"));
        let e = RawPayload::parse(Bytes::from_static(&[0, 4, 0, 0]), "rt/t").unwrap_err();
        assert!(
            matches!(e, DdsError::UnsupportedRepresentation { id: [0, 4], .. }),
            "{e}"
        );
        assert!(RawPayload::parse(Bytes::from_static(&[0, 1, 0, 0]), "rt/t").is_ok());
    }

    #[test]
    fn adapters_keep_header() {
        let p = RawPayload::parse(Bytes::from_static(&[0, 0, 0, 0, 9, 8]), "t").unwrap();
        let body = RawSerializer::to_bytes(&p).unwrap();
        assert_eq!(&body[..], &[9, 8]);
        assert_eq!(
            RawSerializer::output_encoding(),
            RepresentationIdentifier::CDR_BE
        );
        let back = RawDecoder
            .decode_bytes(&body, RepresentationIdentifier::CDR_BE)
            .unwrap();
        assert_eq!(&back.full[..], &[0, 0, 0, 0, 9, 8]);
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp_to_system_time(Timestamp::INVALID), None);
        let t = timestamp_to_system_time(Timestamp::from_ticks((5u64 << 32) | (1 << 31))).unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_millis(5500)
        );
    }

    #[test]
    fn representation_endianness() {
        assert!(Representation::CDR_LE.is_little_endian());
        assert!(!Representation::CDR_BE.is_little_endian());
        assert!(Representation::PL_CDR2_LE.is_little_endian());
    }
}
