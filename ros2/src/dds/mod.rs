//! Raw-CDR DDS layer over [rustdds]: participants, QoS, untyped readers and
//! writers, discovery events and the `log` → `tracing` bridge.
//!
//! Everything here works on *bytes*: a payload is the complete serialized
//! sample **including** its 4-byte encapsulation header (e.g. `00 01 00 00`
//! for CDR little endian, `00 00 00 00` for CDR big endian). Nothing in this
//! module knows message types; decoding is the job of [`crate::cdr`].
//!
//! # Overview
//! - [`Participant`]: a cheaply cloneable handle owning one rustdds
//!   `DomainParticipant` (for one domain id) and one background discovery
//!   thread. Build it from a [`ParticipantConfig`], usually
//!   [`ParticipantConfig::from_env`] (honours `ROS_DOMAIN_ID`,
//!   `ROS_AUTOMATIC_DISCOVERY_RANGE` and `ROS_LOCALHOST_ONLY`).
//! - [`Qos`]: the ROS-level QoS profile (reliability, durability, history,
//!   deadline, lifespan) with the usual presets and conversions to/from
//!   rustdds `QosPolicies`.
//! - [`RawWriter`] / [`RawReader`]: writers and readers for any topic and type
//!   name, moving [`bytes::Bytes`] in and out.
//! - [`DiscoveryEvent`]: writers, readers and participants appearing and
//!   disappearing, from [`Participant::discovery_events`].
//! - [`init_log_bridge`]: route rustdds' `log` records into `tracing`.
//!
//! # Payload representation
//! rustdds splits the encapsulation header off on receive and prepends it from
//! a *static* serializer-adapter function on send. This module keeps the
//! payload's own representation identifier on both paths (see [`RawWriter`]
//! and [`RawReader`]). The two *representation options* bytes of the header
//! are not carried by rustdds: they are sent as `00 00` and delivered as
//! `00 00`. Accepted representation identifiers are listed in
//! [`SUPPORTED_REPRESENTATIONS`].
//!
//! RTPS pads a DATA submessage to a multiple of 4 bytes. Other DDS
//! implementations record the padding count in the options bytes; rustdds
//! neither sets nor exposes them, so a received payload whose sent length was
//! not a multiple of 4 carries up to 3 trailing zero bytes. CDR decoders
//! ignore trailing bytes; a byte-exact comparison must allow for them.
//! Fragmented (large) samples are delivered with their exact length.
//!
//! # rustdds limitations
//! - `TRANSIENT_LOCAL` writers keep *every* sample no reader has acknowledged
//!   yet (up to 8192), not only the `KEEP_LAST` depth, so a late joiner may
//!   receive older samples before the newest.
//! - `DEADLINE` is announced and checked by readers only (no offered-deadline
//!   status); `LIFESPAN` is announced and enforced by readers on receipt only.
//! - HISTORY is not part of DDS discovery data (remote endpoints show
//!   `KeepLast(1)`).
//! - No initial/static peers (`ROS_STATIC_PEERS` is not supported) and no
//!   intra-process transport (hence `ROS_AUTOMATIC_DISCOVERY_RANGE=OFF` is
//!   refused, see [`DiscoveryRange::Off`]).
//!
//! # Logging
//! rustdds logs through the `log` crate and is chatty at `info` (every
//! participant discovered, every writer matched). After
//! [`init_log_bridge`], filter it with e.g.
//! `RUST_LOG=info,rustdds=warn` (an `EnvFilter` directive).

mod discovery;
mod env;
mod log_bridge;
mod participant;
mod qos;
mod raw;

use std::time::Duration;

pub use discovery::{DiscoveryEvent, Endpoint, DISCOVERY_CHANNEL_CAPACITY};
pub use env::{DiscoveryRange, ParticipantConfig, MAX_ROS_DOMAIN_ID};
pub use log_bridge::init_log_bridge;
pub use participant::Participant;
pub use qos::{Durability, EndpointKind, History, Qos, Reliability, KEEP_ALL_SAMPLE_LIMIT};
pub use raw::{
    RawReader, RawSample, RawWriter, Representation, SUPPORTED_REPRESENTATIONS,
    WRITE_MAX_BLOCKING_TIME,
};

/// The errors of the DDS layer. Messages name the operation and, where there
/// is one, the topic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DdsError {
    /// An environment variable had a value we cannot use.
    #[error("environment variable {var}={value:?} is invalid: expected {expected}")]
    InvalidEnv {
        /// The variable name, e.g. `ROS_DOMAIN_ID`.
        var: &'static str,
        /// The offending value.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// The domain id is outside what ROS 2 allows.
    #[error("domain id {domain_id} is out of range: expected 0..={max}", max = MAX_ROS_DOMAIN_ID)]
    InvalidDomainId {
        /// The rejected id.
        domain_id: u16,
    },
    /// rustdds could not create the participant (sockets, threads, ...).
    #[error("cannot create the DDS participant for domain {domain_id}: {source}")]
    CreateParticipant {
        /// The domain id requested.
        domain_id: u16,
        /// The rustdds error.
        #[source]
        source: rustdds::dds::CreateError,
    },
    /// rustdds could not create a topic, publisher, subscriber, reader or writer.
    #[error("cannot create the DDS {entity} on topic {topic} [{type_name}]: {source}")]
    CreateEntity {
        /// What was being created (`"topic"`, `"writer"`, `"reader"`, ...).
        entity: &'static str,
        /// The DDS topic name.
        topic: String,
        /// The DDS type name.
        type_name: String,
        /// The rustdds error.
        #[source]
        source: rustdds::dds::CreateError,
    },
    /// The QoS cannot be expressed in DDS.
    #[error("invalid QoS for topic {topic}: {reason}")]
    InvalidQos {
        /// The DDS topic name (empty if not known yet).
        topic: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A payload is shorter than its 4-byte encapsulation header.
    #[error("payload of {len} bytes for topic {topic} is too short: it must start with a 4-byte encapsulation header")]
    PayloadTooShort {
        /// The DDS topic name.
        topic: String,
        /// The payload length.
        len: usize,
    },
    /// A payload's representation identifier is not one we carry.
    #[error("payload for topic {topic} has unsupported representation identifier {id:02x?}")]
    UnsupportedRepresentation {
        /// The DDS topic name.
        topic: String,
        /// The first two header bytes.
        id: [u8; 2],
    },
    /// A reliable write waited [`WRITE_MAX_BLOCKING_TIME`] for room in the
    /// send window (slow or stuck readers) and gave up.
    #[error(
        "write on topic {topic} timed out after {waited:?}: the reliable send window stayed full"
    )]
    WriteTimeout {
        /// The DDS topic name.
        topic: String,
        /// How long the write blocked.
        waited: Duration,
    },
    /// Any other rustdds write failure.
    #[error("write on topic {topic} failed: {reason}")]
    Write {
        /// The DDS topic name.
        topic: String,
        /// rustdds' description.
        reason: String,
    },
    /// `ROS_AUTOMATIC_DISCOVERY_RANGE=OFF` was requested; see
    /// [`DiscoveryRange::Off`].
    #[error("discovery range OFF for domain {domain_id}: rustdds cannot isolate a participant, so no DDS participant is created")]
    DiscoveryOff {
        /// The configured domain id.
        domain_id: u16,
    },
    /// The participant was shut down.
    #[error("the DDS participant for domain {domain_id} has been shut down")]
    Shutdown {
        /// The participant's domain id.
        domain_id: u16,
    },
    /// A background thread could not be started.
    #[error("cannot start the DDS discovery thread: {source}")]
    Thread {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another `log` logger was installed before [`init_log_bridge`].
    #[error("cannot install the log->tracing bridge: another `log` logger is already installed")]
    LogBridge,
}

/// Convert a rustdds GUID to its 16 wire bytes.
pub(crate) fn guid_bytes(guid: rustdds::GUID) -> [u8; 16] {
    guid.to_bytes()
}

/// The 12-byte participant prefix of a GUID.
pub(crate) fn guid_prefix_of(guid: &[u8; 16]) -> [u8; 12] {
    let mut p = [0u8; 12];
    p.copy_from_slice(&guid[..12]);
    p
}
