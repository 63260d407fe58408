//! The wire format: one frame = `u32` big-endian length of what follows, a `u8` kind, a body.
//!
//! Control frames (HELLO, WELCOME, REJECT, ANNOUNCE, WITHDRAW, CLOSE) carry a JSON object;
//! DATA, ACK and HEARTBEAT are compact binary. The exact layouts are in `docs/link-protocol.md`.
//! The length is checked against [`FrameLimits`] *before* anything is allocated for the body.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks (HELLO/WELCOME `version`).
pub const PROTOCOL_VERSION: u16 = 1;
/// The magic string in HELLO: a peer that does not send it is not a bridge.
pub const MAGIC: &str = "kubeedge-ros2-link";
/// Bytes before the body: the length (4) and the kind (1).
pub const HEADER_LEN: usize = 5;
/// Fixed part of a DATA body: route 4, sequence 8, chunk index 4, chunk count 4, flags 1.
pub const DATA_HEADER_LEN: usize = 21;
/// An ACK body: route 4, cumulative sequence 8.
pub const ACK_LEN: usize = 12;
/// Default maximum frame size (the length field: kind + body), 1 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 1024 * 1024;
/// Largest maximum frame size a peer may announce, 16 MiB; larger offers are clamped.
pub const MAX_FRAME_SIZE_CEILING: u32 = 16 * 1024 * 1024;
/// Smallest maximum frame size a peer may announce (room for a DATA header and 4 KiB).
pub const MIN_FRAME_SIZE: u32 = 4096 + 1 + DATA_HEADER_LEN as u32;
/// Maximum frame size before the handshake completes (HELLO, WELCOME, REJECT), 64 KiB.
pub const HANDSHAKE_MAX_FRAME_SIZE: u32 = 64 * 1024;
/// Maximum length of any JSON control body, whatever the negotiated frame size, 64 KiB.
pub const MAX_CONTROL_BODY: usize = 64 * 1024;

/// DATA flag: the message payload is zstd-compressed (set on every chunk of the message).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Every flag this version knows; any other bit set is a malformed frame.
pub const KNOWN_FLAGS: u8 = FLAG_COMPRESSED;

/// Limits the decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest accepted value of the length field (kind + body).
    pub max_frame_size: u32,
}

impl FrameLimits {
    /// The limits before the handshake: [`HANDSHAKE_MAX_FRAME_SIZE`].
    pub const fn handshake() -> Self {
        Self {
            max_frame_size: HANDSHAKE_MAX_FRAME_SIZE,
        }
    }

    /// Limits for a negotiated frame size, clamped to `[MIN_FRAME_SIZE, MAX_FRAME_SIZE_CEILING]`.
    pub fn negotiated(ours: u32, theirs: u32) -> Self {
        Self {
            max_frame_size: ours
                .min(theirs)
                .clamp(MIN_FRAME_SIZE, MAX_FRAME_SIZE_CEILING),
        }
    }

    /// Largest DATA payload (one chunk) that fits in a frame under these limits.
    pub fn max_chunk_payload(&self) -> usize {
        (self.max_frame_size as usize).saturating_sub(1 + DATA_HEADER_LEN)
    }
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

/// A route on this link: assigned by the side that announces it, unique per direction and session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RouteId(pub u32);

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {}", self.0)
    }
}

/// The frame kinds (the byte after the length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Edge -> hub, first frame of a session (JSON).
    Hello = 0x01,
    /// Hub -> edge, handshake accepted (JSON).
    Welcome = 0x02,
    /// Either way, refusal; the sender closes the connection after it (JSON).
    Reject = 0x03,
    /// A route starts (JSON).
    Announce = 0x10,
    /// A route ends (JSON).
    Withdraw = 0x11,
    /// One chunk of a message (binary).
    Data = 0x20,
    /// Cumulative acknowledgement (binary).
    Ack = 0x21,
    /// Liveness, empty body (binary).
    Heartbeat = 0x30,
    /// Orderly end of the session (JSON).
    Close = 0x31,
}

impl FrameKind {
    /// The kind for a byte, or `None` if unknown.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::Hello,
            0x02 => Self::Welcome,
            0x03 => Self::Reject,
            0x10 => Self::Announce,
            0x11 => Self::Withdraw,
            0x20 => Self::Data,
            0x21 => Self::Ack,
            0x30 => Self::Heartbeat,
            0x31 => Self::Close,
            _ => return None,
        })
    }
}

/// A robot's secret; its `Debug` never shows the value, and it has no `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret, for the one place that must compare or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `expected` in time independent of where they differ.
    pub fn verify(&self, expected: &Token) -> bool {
        let (a, b) = (self.0.as_bytes(), expected.0.as_bytes());
        let mut diff = (a.len() != b.len()) as u8;
        for i in 0..a.len().max(b.len()) {
            diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a peer was refused or a session closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Token missing or wrong for the robot identity.
    BadToken,
    /// Protocol version not spoken by this side.
    UnsupportedVersion,
    /// A frame longer than the maximum frame size.
    FrameTooLarge,
    /// Bytes that are not a valid frame, or a frame not allowed in this state.
    Malformed,
    /// The identity is already connected (a newer session replaced it, or was refused).
    DuplicateSession,
    /// A limit (routes, buffers) was exceeded.
    LimitExceeded,
    /// No frame received within the heartbeat timeout.
    Timeout,
    /// The side is shutting down.
    Shutdown,
    /// A code from a newer version.
    #[serde(other)]
    Unknown,
}

/// HELLO: the edge introduces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must be [`MAGIC`].
    pub magic: String,
    /// The protocol version the edge speaks.
    pub version: u16,
    /// The robot identity (a DNS-label-like name).
    pub robot: String,
    /// The robot's token; redacted in `Debug`.
    pub token: Token,
    /// Largest frame the edge accepts.
    pub max_frame_size: u32,
    /// Optional features the edge supports (e.g. `"zstd"`).
    #[serde(default)]
    pub features: Vec<String>,
    /// Which of the hub's routes the edge wants (its `down` rules and the services it may
    /// call); the hub also applies its own policy. Absent: nothing goes down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
}

/// The edge's wishes for hub -> edge routes, as patterns (exact ROS names, or `re:` + a
/// regex matching the whole name). Names are the robot's own (without its namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// Topics to receive.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Topics never to receive (wins over `allow`).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Services on the hub's side the edge's clients may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// WELCOME: the hub accepts the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version of the session.
    pub version: u16,
    /// The ROS namespace the hub assigned to this robot.
    pub namespace: String,
    /// A session id, unique per accepted connection (for logs).
    pub session: String,
    /// Heartbeat interval, milliseconds; both sides use it.
    pub heartbeat_ms: u32,
    /// Largest frame the hub accepts.
    pub max_frame_size: u32,
    /// Features enabled for the session (intersection).
    #[serde(default)]
    pub features: Vec<String>,
}

/// REJECT or CLOSE: a reason and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The machine-readable reason.
    pub code: ReasonCode,
    /// For people; never contains secrets.
    #[serde(default)]
    pub message: String,
}

/// Reliability of a route's DDS endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reliability {
    /// DDS best effort.
    BestEffort,
    /// DDS reliable.
    Reliable,
}

/// Durability of a route's DDS endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// DDS volatile.
    Volatile,
    /// DDS transient local.
    TransientLocal,
}

/// The DDS QoS the far side should use for its endpoint of the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteQos {
    /// Reliability.
    pub reliability: Reliability,
    /// Durability.
    pub durability: Durability,
    /// History depth (keep last).
    pub depth: u32,
}

/// Per-route compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Never compressed.
    #[default]
    None,
    /// zstd; each message says in its DATA flags whether it is compressed.
    Zstd,
}

/// ANNOUNCE: a route from the announcing side to the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// The id DATA frames of this route carry.
    pub route: RouteId,
    /// ROS name (`/ns/topic`) on the announcing side.
    pub name: String,
    /// DDS type name (`pkg::msg::dds_::Name_`).
    pub type_name: String,
    /// QoS for the far side's endpoint.
    pub qos: RouteQos,
    /// 0 = most urgent.
    pub priority: u8,
    /// Sequence numbers are acknowledged and unacknowledged messages resent.
    pub reliable: bool,
    /// Messages are kept during an outage and delivered after it.
    pub store_forward: bool,
    /// Compression of the route.
    #[serde(default)]
    pub compression: Compression,
    /// The sender's stream incarnation: a new value means sequences restarted at 1.
    pub stream: u64,
    /// What the route carries (a topic, or one half of a relayed service).
    #[serde(default, skip_serializing_if = "RouteKind::is_topic")]
    pub kind: RouteKind,
    /// For a route per publisher (transient-local topics): the publisher's DDS GUID (hex).
    /// The far side keeps one writer per source, so late joiners get every publisher's
    /// latched samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// For [`RouteKind::ServiceReply`]: the service's request DDS type name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_type: Option<String>,
}

/// What a route carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// A ROS topic (`rt/...`).
    #[default]
    Topic,
    /// Replies of a service whose server is on the announcing side. The receiver serves the
    /// service on its side (reads requests, writes these replies) and announces the matching
    /// [`RouteKind::ServiceRequest`] route back.
    ServiceReply,
    /// Requests for a service whose server is on the receiving side.
    ServiceRequest,
}

impl RouteKind {
    /// Is it [`RouteKind::Topic`]?
    pub fn is_topic(&self) -> bool {
        *self == Self::Topic
    }
}

/// WITHDRAW: a route ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdraw {
    /// The route.
    pub route: RouteId,
}

/// One chunk of one message of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// The route.
    pub route: RouteId,
    /// The message's sequence number in its route (from 1).
    pub seq: u64,
    /// This chunk's index, `< count`.
    pub index: u32,
    /// Chunks in the message, `>= 1`.
    pub count: u32,
    /// [`FLAG_COMPRESSED`], ...
    pub flags: u8,
    /// The chunk's bytes.
    pub payload: Bytes,
}

/// Cumulative acknowledgement: every message of `route` up to `seq` was delivered (or given up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The route.
    pub route: RouteId,
    /// Highest sequence delivered; 0 = none.
    pub seq: u64,
}

/// A frame of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// Refusal; the connection is closed after it.
    Reject(Reason),
    /// See [`Announce`].
    Announce(Announce),
    /// See [`Withdraw`].
    Withdraw(Withdraw),
    /// See [`Data`].
    Data(Data),
    /// See [`Ack`].
    Ack(Ack),
    /// Liveness.
    Heartbeat,
    /// Orderly end.
    Close(Reason),
}

/// What can be wrong with bytes on the link.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length field exceeds the limit (checked before allocating).
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced or encoded length.
        size: u64,
        /// The limit.
        max: u32,
    },
    /// A length field of 0 (no kind byte).
    #[error("empty frame (length 0)")]
    Empty,
    /// A kind byte this version does not know.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// A binary body of the wrong length.
    #[error("{kind:?} body of {len} bytes, expected {expected}")]
    BadLength {
        /// The frame kind.
        kind: FrameKind,
        /// Actual body length.
        len: usize,
        /// What was expected (minimum for DATA).
        expected: usize,
    },
    /// DATA chunk index/count out of range.
    #[error("chunk {index} of {count} is out of range")]
    BadChunk {
        /// Index.
        index: u32,
        /// Count.
        count: u32,
    },
    /// DATA flags with bits this version does not know.
    #[error("unknown DATA flags 0x{0:02x}")]
    UnknownFlags(u8),
    /// A JSON control body that does not parse (the detail never quotes the input).
    #[error("malformed {kind:?} body: {detail}")]
    Json {
        /// The frame kind.
        kind: FrameKind,
        /// Category and position of the error.
        detail: String,
    },
    /// A JSON control body longer than [`MAX_CONTROL_BODY`].
    #[error("{kind:?} body of {len} bytes exceeds {MAX_CONTROL_BODY}")]
    ControlTooLarge {
        /// The frame kind.
        kind: FrameKind,
        /// Body length.
        len: usize,
    },
}

impl FrameError {
    /// The reason to put in a REJECT/CLOSE sent to the peer that caused this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::TooLarge { .. } | Self::ControlTooLarge { .. } => ReasonCode::FrameTooLarge,
            _ => ReasonCode::Malformed,
        }
    }
}

fn json_error(kind: FrameKind, e: &serde_json::Error) -> FrameError {
    // Not e.to_string(): serde_json quotes offending values, which could be a token.
    FrameError::Json {
        kind,
        detail: format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ),
    }
}

impl Frame {
    /// The frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Self::Hello(_) => FrameKind::Hello,
            Self::Welcome(_) => FrameKind::Welcome,
            Self::Reject(_) => FrameKind::Reject,
            Self::Announce(_) => FrameKind::Announce,
            Self::Withdraw(_) => FrameKind::Withdraw,
            Self::Data(_) => FrameKind::Data,
            Self::Ack(_) => FrameKind::Ack,
            Self::Heartbeat => FrameKind::Heartbeat,
            Self::Close(_) => FrameKind::Close,
        }
    }

    fn json_body(&self) -> Option<Vec<u8>> {
        // Serializing these plain structs cannot fail (string keys, no custom serializers).
        let r = match self {
            Self::Hello(b) => serde_json::to_vec(b),
            Self::Welcome(b) => serde_json::to_vec(b),
            Self::Reject(b) | Self::Close(b) => serde_json::to_vec(b),
            Self::Announce(b) => serde_json::to_vec(b),
            Self::Withdraw(b) => serde_json::to_vec(b),
            Self::Data(_) | Self::Ack(_) | Self::Heartbeat => return None,
        };
        Some(r.unwrap_or_default())
    }

    /// Value of the length field (kind + body) for DATA, ACK and HEARTBEAT without encoding;
    /// control frames are serialized to measure them.
    pub fn frame_size(&self) -> u64 {
        match self {
            Self::Data(d) => 1 + DATA_HEADER_LEN as u64 + d.payload.len() as u64,
            Self::Ack(_) => 1 + ACK_LEN as u64,
            Self::Heartbeat => 1,
            other => 1 + other.json_body().map_or(0, |b| b.len() as u64),
        }
    }

    /// Appends the encoded frame to `out`. Fails (writing nothing) if the frame exceeds
    /// `max_frame_size` or a control body exceeds [`MAX_CONTROL_BODY`].
    pub fn encode(&self, out: &mut BytesMut, max_frame_size: u32) -> Result<(), FrameError> {
        let kind = self.kind();
        let json = self.json_body();
        if let Some(body) = &json {
            if body.len() > MAX_CONTROL_BODY {
                return Err(FrameError::ControlTooLarge {
                    kind,
                    len: body.len(),
                });
            }
        }
        let size = match &json {
            Some(body) => 1 + body.len() as u64,
            None => self.frame_size(),
        };
        if size > u64::from(max_frame_size) {
            return Err(FrameError::TooLarge {
                size,
                max: max_frame_size,
            });
        }
        out.reserve(4 + size as usize);
        out.put_u32(size as u32);
        out.put_u8(kind as u8);
        match (self, json) {
            (_, Some(body)) => out.put_slice(&body),
            (Self::Data(d), None) => {
                out.put_u32(d.route.0);
                out.put_u64(d.seq);
                out.put_u32(d.index);
                out.put_u32(d.count);
                out.put_u8(d.flags);
                out.put_slice(&d.payload);
            }
            (Self::Ack(a), None) => {
                out.put_u32(a.route.0);
                out.put_u64(a.seq);
            }
            _ => {}
        }
        Ok(())
    }

    /// Takes one frame from the front of `buf`. `Ok(None)`: more bytes needed (at most the
    /// announced frame is reserved, which the limit bounds). On `Err` the stream is unusable.
    pub fn decode(buf: &mut BytesMut, limits: &FrameLimits) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > limits.max_frame_size {
            return Err(FrameError::TooLarge {
                size: u64::from(len),
                max: limits.max_frame_size,
            });
        }
        // Reject an unknown kind as soon as its byte is here, not after the whole body.
        if buf.len() >= 5 && FrameKind::from_u8(buf[4]).is_none() {
            return Err(FrameError::UnknownKind(buf[4]));
        }
        let total = 4 + len as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        frame.advance(4);
        let kind_byte = frame.get_u8();
        let kind = FrameKind::from_u8(kind_byte).ok_or(FrameError::UnknownKind(kind_byte))?;
        Self::decode_body(kind, frame.freeze()).map(Some)
    }

    fn decode_body(kind: FrameKind, mut body: Bytes) -> Result<Frame, FrameError> {
        fn json<T: serde::de::DeserializeOwned>(
            kind: FrameKind,
            body: &[u8],
        ) -> Result<T, FrameError> {
            if body.len() > MAX_CONTROL_BODY {
                return Err(FrameError::ControlTooLarge {
                    kind,
                    len: body.len(),
                });
            }
            serde_json::from_slice(body).map_err(|e| json_error(kind, &e))
        }
        Ok(match kind {
            FrameKind::Hello => Frame::Hello(json(kind, &body)?),
            FrameKind::Welcome => Frame::Welcome(json(kind, &body)?),
            FrameKind::Reject => Frame::Reject(json(kind, &body)?),
            FrameKind::Announce => Frame::Announce(json(kind, &body)?),
            FrameKind::Withdraw => Frame::Withdraw(json(kind, &body)?),
            FrameKind::Close => Frame::Close(json(kind, &body)?),
            FrameKind::Heartbeat => {
                if !body.is_empty() {
                    return Err(FrameError::BadLength {
                        kind,
                        len: body.len(),
                        expected: 0,
                    });
                }
                Frame::Heartbeat
            }
            FrameKind::Ack => {
                if body.len() != ACK_LEN {
                    return Err(FrameError::BadLength {
                        kind,
                        len: body.len(),
                        expected: ACK_LEN,
                    });
                }
                Frame::Ack(Ack {
                    route: RouteId(body.get_u32()),
                    seq: body.get_u64(),
                })
            }
            FrameKind::Data => {
                if body.len() < DATA_HEADER_LEN {
                    return Err(FrameError::BadLength {
                        kind,
                        len: body.len(),
                        expected: DATA_HEADER_LEN,
                    });
                }
                let route = RouteId(body.get_u32());
                let seq = body.get_u64();
                let index = body.get_u32();
                let count = body.get_u32();
                let flags = body.get_u8();
                if count == 0 || index >= count {
                    return Err(FrameError::BadChunk { index, count });
                }
                if flags & !KNOWN_FLAGS != 0 {
                    return Err(FrameError::UnknownFlags(flags));
                }
                Frame::Data(Data {
                    route,
                    seq,
                    index,
                    count,
                    flags,
                    payload: body,
                })
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn hello() -> Hello {
        Hello {
            magic: MAGIC.into(),
            version: PROTOCOL_VERSION,
            robot: "robot-7".into(),
            token: Token::new("s3cr3t-token"),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            features: vec!["zstd".into()],
            subscribe: None,
        }
    }

    pub(crate) fn announce(route: u32) -> Announce {
        Announce {
            route: RouteId(route),
            name: "/scan".into(),
            type_name: "sensor_msgs::msg::dds_::LaserScan_".into(),
            qos: RouteQos {
                reliability: Reliability::BestEffort,
                durability: Durability::Volatile,
                depth: 5,
            },
            priority: 3,
            reliable: true,
            store_forward: true,
            compression: Compression::Zstd,
            stream: 42,
            kind: RouteKind::Topic,
            source: None,
            request_type: None,
        }
    }

    pub(crate) fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello(hello()),
            Frame::Welcome(Welcome {
                version: 1,
                namespace: "/fleet-a/robot-7".into(),
                session: "s-1".into(),
                heartbeat_ms: 5000,
                max_frame_size: DEFAULT_MAX_FRAME_SIZE,
                features: vec![],
            }),
            Frame::Reject(Reason {
                code: ReasonCode::BadToken,
                message: "no".into(),
            }),
            Frame::Announce(announce(9)),
            Frame::Withdraw(Withdraw { route: RouteId(9) }),
            Frame::Data(Data {
                route: RouteId(9),
                seq: 77,
                index: 1,
                count: 3,
                flags: FLAG_COMPRESSED,
                payload: Bytes::from_static(b"hello"),
            }),
            Frame::Ack(Ack {
                route: RouteId(9),
                seq: 76,
            }),
            Frame::Heartbeat,
            Frame::Close(Reason {
                code: ReasonCode::Shutdown,
                message: String::new(),
            }),
        ]
    }

    fn encode_all(frames: &[Frame]) -> BytesMut {
        let mut out = BytesMut::new();
        for f in frames {
            f.encode(&mut out, DEFAULT_MAX_FRAME_SIZE).unwrap();
        }
        out
    }

    #[test]
    fn every_kind_round_trips() {
        let frames = samples();
        let mut buf = encode_all(&frames);
        let limits = FrameLimits::default();
        for f in &frames {
            assert_eq!(Frame::decode(&mut buf, &limits).unwrap().as_ref(), Some(f));
        }
        assert!(buf.is_empty());
        assert!(Frame::decode(&mut buf, &limits).unwrap().is_none());
    }

    #[test]
    fn data_and_ack_byte_layout() {
        let mut out = BytesMut::new();
        Frame::Ack(Ack {
            route: RouteId(0x0102_0304),
            seq: 5,
        })
        .encode(&mut out, 1024)
        .unwrap();
        assert_eq!(
            &out[..],
            &[0, 0, 0, 13, 0x21, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 5]
        );
        out.clear();
        Frame::Data(Data {
            route: RouteId(1),
            seq: 2,
            index: 0,
            count: 1,
            flags: 0,
            payload: Bytes::from_static(b"xy"),
        })
        .encode(&mut out, 1024)
        .unwrap();
        let mut expected = vec![0, 0, 0, 24, 0x20, 0, 0, 0, 1];
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        expected.extend_from_slice(b"xy");
        assert_eq!(&out[..], &expected[..]);
        out.clear();
        Frame::Heartbeat.encode(&mut out, 1024).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 1, 0x30]);
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0x20][..]);
        let cap = buf.capacity();
        let err = Frame::decode(&mut buf, &FrameLimits::default()).unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                size: 0xffff_ffff,
                ..
            }
        ));
        assert_eq!(err.reason_code(), ReasonCode::FrameTooLarge);
        assert_eq!(buf.capacity(), cap);
        // An HTTP request is not a frame either.
        let mut http = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(
            Frame::decode(&mut http, &FrameLimits::handshake()),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn encode_refuses_oversized_frames() {
        let d = Frame::Data(Data {
            route: RouteId(1),
            seq: 1,
            index: 0,
            count: 1,
            flags: 0,
            payload: Bytes::from(vec![0u8; 100]),
        });
        let mut out = BytesMut::new();
        assert!(matches!(
            d.encode(&mut out, 50),
            Err(FrameError::TooLarge { size: 122, max: 50 })
        ));
        assert!(out.is_empty());
        assert_eq!(d.frame_size(), 122);
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        let limits = FrameLimits::default();
        type Check = fn(&FrameError) -> bool;
        let cases: Vec<(Vec<u8>, Check)> = vec![
            (vec![0, 0, 0, 0], |e| matches!(e, FrameError::Empty)),
            (vec![0, 0, 0, 1, 0x99], |e| {
                matches!(e, FrameError::UnknownKind(0x99))
            }),
            (vec![0, 0, 0, 2, 0x30, 0], |e| {
                matches!(e, FrameError::BadLength { .. })
            }),
            (vec![0, 0, 0, 3, 0x21, 0, 0], |e| {
                matches!(e, FrameError::BadLength { .. })
            }),
            (vec![0, 0, 0, 3, 0x01, b'{', b'x'], |e| {
                matches!(e, FrameError::Json { .. })
            }),
        ];
        for (bytes, check) in cases {
            let mut buf = BytesMut::from(&bytes[..]);
            let err = Frame::decode(&mut buf, &limits).unwrap_err();
            assert!(check(&err), "{bytes:?}: {err}");
        }
        // DATA with count 0, index >= count, unknown flags.
        for (index, count, flags) in [(0u32, 0u32, 0u8), (3, 3, 0), (0, 1, 0x80)] {
            let mut buf = BytesMut::new();
            buf.put_u32(22);
            buf.put_u8(0x20);
            buf.put_u32(1);
            buf.put_u64(1);
            buf.put_u32(index);
            buf.put_u32(count);
            buf.put_u8(flags);
            assert!(matches!(
                Frame::decode(&mut buf, &limits),
                Err(FrameError::BadChunk { .. } | FrameError::UnknownFlags(0x80))
            ));
        }
    }

    #[test]
    fn token_is_never_printed() {
        let h = hello();
        let dbg = format!("{h:?} {:?}", Frame::Hello(h.clone()));
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        // A type error on the token field does not quote the input either.
        let mut body = br#"{"magic":"kubeedge-ros2-link","version":"s3cr3t""#.to_vec();
        body.push(b'}');
        let mut buf = BytesMut::new();
        buf.put_u32(1 + body.len() as u32);
        buf.put_u8(0x01);
        buf.put_slice(&body);
        let err = Frame::decode(&mut buf, &FrameLimits::default()).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("s3cr3t"));
    }

    #[test]
    fn token_verify() {
        let t = Token::new("abc");
        assert!(t.verify(&Token::new("abc")));
        assert!(!t.verify(&Token::new("abd")));
        assert!(!t.verify(&Token::new("ab")));
        assert!(!t.verify(&Token::new("abcd")));
    }

    #[test]
    fn unknown_fields_and_reason_codes_are_tolerated() {
        let body = br#"{"code":"from_the_future","message":"x","extra":1}"#;
        let mut buf = BytesMut::new();
        buf.put_u32(1 + body.len() as u32);
        buf.put_u8(0x03);
        buf.put_slice(body);
        let f = Frame::decode(&mut buf, &FrameLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            f,
            Frame::Reject(Reason {
                code: ReasonCode::Unknown,
                message: "x".into()
            })
        );
    }

    #[test]
    fn negotiated_limits_are_clamped() {
        assert_eq!(FrameLimits::negotiated(1, 1).max_frame_size, MIN_FRAME_SIZE);
        assert_eq!(
            FrameLimits::negotiated(u32::MAX, u32::MAX).max_frame_size,
            MAX_FRAME_SIZE_CEILING
        );
        assert_eq!(
            FrameLimits::negotiated(100_000, 200_000).max_frame_size,
            100_000
        );
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (
                any::<u32>(),
                any::<u64>(),
                0u32..4,
                0u8..2,
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(r, seq, index, flags, p)| Frame::Data(Data {
                    route: RouteId(r),
                    seq,
                    index,
                    count: index + 1,
                    flags,
                    payload: Bytes::from(p),
                })),
            (any::<u32>(), any::<u64>()).prop_map(|(r, seq)| Frame::Ack(Ack {
                route: RouteId(r),
                seq
            })),
            Just(Frame::Heartbeat),
            (any::<u32>(), ".{0,20}").prop_map(|(r, name)| {
                let mut a = announce(r);
                a.name = name;
                Frame::Announce(a)
            }),
            ".{0,30}".prop_map(|robot| Frame::Hello(Hello { robot, ..hello() })),
        ]
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), max in 0u32..4096) {
            let mut buf = BytesMut::from(&bytes[..]);
            let limits = FrameLimits { max_frame_size: max };
            for _ in 0..bytes.len() + 1 {
                match Frame::decode(&mut buf, &limits) {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }

        #[test]
        fn random_splits_yield_the_same_frames(
            frames in proptest::collection::vec(arb_frame(), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let stream = encode_all(&frames).freeze();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            let limits = FrameLimits::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for w in points.windows(2) {
                buf.extend_from_slice(&stream[w[0]..w[1]]);
                while let Some(f) = Frame::decode(&mut buf, &limits).unwrap() {
                    got.push(f);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn corrupted_valid_streams_never_panic(
            frames in proptest::collection::vec(arb_frame(), 1..8),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut stream = encode_all(&frames);
            let n = stream.len();
            for (i, b) in flips {
                stream[i.index(n)] ^= b;
            }
            let limits = FrameLimits::default();
            while let Ok(Some(_)) = Frame::decode(&mut stream, &limits) {}
        }
    }
}
