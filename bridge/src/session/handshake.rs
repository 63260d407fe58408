//! The handshake as pure, I/O-free state machines (`docs/link-protocol.md` §3).
//!
//! - Edge: [`EdgeHandshake::start`] gives the HELLO to send and an [`EdgeAwaitingWelcome`];
//!   [`EdgeAwaitingWelcome::on_frame`] takes the hub's answer.
//! - Hub: [`HubHandshake::on_frame`] takes the first frame and gives the WELCOME to send.
//!
//! Each step consumes its state, so a finished handshake cannot be fed again. On failure a
//! [`HandshakeError`] says what went wrong and [`HandshakeError::reply`] gives the REJECT to send
//! before closing (none when the peer refused us). The hub takes the robot's namespace from the
//! [`TokenTable`] entry its token matches, never from what the robot claims.

use std::time::Duration;

use ros2::names::Namespace;

use crate::link::frame::{
    Frame, FrameError, FrameLimits, Hello, Reason, ReasonCode, Subscribe, Token, Welcome,
    DEFAULT_MAX_FRAME_SIZE, MAGIC, MIN_FRAME_SIZE, PROTOCOL_VERSION,
};

/// How long the edge waits for WELCOME (and the hub for HELLO), 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default heartbeat interval, 5 s.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Smallest heartbeat interval a WELCOME may carry, 100 ms.
pub const MIN_HEARTBEAT_MS: u32 = 100;
/// Largest heartbeat interval a WELCOME may carry, 10 min.
pub const MAX_HEARTBEAT_MS: u32 = 600_000;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's bytes are not a valid frame (garbage, oversized, bad JSON).
    #[error("invalid handshake frame: {0}")]
    Frame(#[from] FrameError),
    /// A well-formed frame that is not allowed here (not a HELLO, not a WELCOME/REJECT).
    #[error("unexpected {got:?} frame during the handshake")]
    Unexpected {
        /// The frame's kind.
        got: crate::link::frame::FrameKind,
    },
    /// HELLO with the wrong magic string.
    #[error("HELLO with a wrong magic string")]
    BadMagic,
    /// A version this side does not speak.
    #[error("protocol version {got} not supported (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The peer's version.
        got: u16,
    },
    /// The token matches no entry of the table (or an entry bound to another robot).
    #[error("bad token for robot {robot:?}")]
    BadToken {
        /// The identity the robot claimed (for logs only).
        robot: String,
    },
    /// A maximum frame size below [`MIN_FRAME_SIZE`].
    #[error("announced maximum frame size {got} is below the minimum {MIN_FRAME_SIZE}")]
    FrameSizeTooSmall {
        /// The announced size.
        got: u32,
    },
    /// A WELCOME this edge cannot accept.
    #[error("invalid WELCOME: {0}")]
    BadWelcome(&'static str),
    /// The peer refused us with REJECT.
    #[error("rejected by the peer: {:?} ({})", .0.code, .0.message)]
    Rejected(Reason),
    /// The peer closed with CLOSE during the handshake.
    #[error("closed by the peer during the handshake: {:?}", .0.code)]
    Closed(Reason),
    /// No answer in time (set by the I/O layer).
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The connection ended before the handshake completed (set by the I/O layer).
    #[error("connection closed during the handshake")]
    Eof,
}

impl HandshakeError {
    /// The reason code to send in a REJECT for this error, or `None` when nothing is sent
    /// (the peer refused or closed, or the connection is gone).
    pub fn reason_code(&self) -> Option<ReasonCode> {
        Some(match self {
            Self::Frame(e) => e.reason_code(),
            Self::Unexpected { .. } | Self::BadMagic | Self::FrameSizeTooSmall { .. } => {
                ReasonCode::Malformed
            }
            Self::BadWelcome(_) => ReasonCode::Malformed,
            Self::UnsupportedVersion { .. } => ReasonCode::UnsupportedVersion,
            Self::BadToken { .. } => ReasonCode::BadToken,
            Self::Timeout(_) => ReasonCode::Timeout,
            Self::Rejected(_) | Self::Closed(_) | Self::Eof => return None,
        })
    }

    /// The REJECT frame to send before closing, if any. Its message never contains a secret.
    pub fn reply(&self) -> Option<Frame> {
        let code = self.reason_code()?;
        let message = match self {
            // The claimed identity is the peer's own input; keep the message generic.
            Self::BadToken { .. } => "token not accepted".to_owned(),
            other => other.to_string(),
        };
        Some(Frame::Reject(Reason { code, message }))
    }
}

/// Errors building a [`TokenTable`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenTableError {
    /// An empty token.
    #[error("empty token for namespace {0}")]
    EmptyToken(String),
    /// The root namespace would put the robot beside every other robot.
    #[error("the root namespace cannot be assigned to a robot")]
    RootNamespace,
    /// The same token twice.
    #[error("duplicate token (for namespace {0})")]
    DuplicateToken(String),
}

/// What a token grants: the robot's namespace, optionally bound to one robot identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The namespace assigned to the robot holding the token.
    pub namespace: Namespace,
    /// If set, the token is only accepted from this identity (HELLO `robot`).
    pub robot: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    token: Token,
    grant: Grant,
}

/// The hub's tokens and the namespaces they grant.
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    entries: Vec<Entry>,
}

impl TokenTable {
    /// An empty table (accepts no one).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token granting `grant`. Refuses empty and duplicate tokens and the root namespace.
    pub fn insert(&mut self, token: Token, grant: Grant) -> Result<(), TokenTableError> {
        if token.expose().is_empty() {
            return Err(TokenTableError::EmptyToken(grant.namespace.to_string()));
        }
        if grant.namespace.is_root() {
            return Err(TokenTableError::RootNamespace);
        }
        if self.entries.iter().any(|e| e.token.verify(&token)) {
            return Err(TokenTableError::DuplicateToken(grant.namespace.to_string()));
        }
        self.entries.push(Entry { token, grant });
        Ok(())
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No tokens.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The grant of `token`. Every entry is compared, each in constant time, so the time taken
    /// does not depend on which entry (if any) matches or where a wrong token differs.
    pub fn lookup(&self, token: &Token) -> Option<&Grant> {
        let mut found = None;
        for e in &self.entries {
            let hit = e.token.verify(token);
            if hit && found.is_none() {
                found = Some(&e.grant);
            }
        }
        found
    }
}

/// The parameters both sides use once the handshake is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    /// The identity the robot claimed (the hub's only use of it is logging).
    pub robot: String,
    /// The namespace the hub assigned.
    pub namespace: Namespace,
    /// The session id (for logs).
    pub session: String,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Negotiated frame limits (both directions).
    pub limits: FrameLimits,
    /// Features enabled for the session.
    pub features: Vec<String>,
    /// What the edge asked to receive (hub side; `None` on the edge).
    pub subscribe: Option<Subscribe>,
}

/// The edge's side of the handshake.
#[derive(Debug, Clone)]
pub struct EdgeHandshakeConfig {
    /// Robot identity sent in HELLO.
    pub robot: String,
    /// The robot's token.
    pub token: Token,
    /// Largest frame this edge accepts.
    pub max_frame_size: u32,
    /// Features offered.
    pub features: Vec<String>,
    /// The hub -> edge routes asked for (HELLO `subscribe`).
    pub subscribe: Option<Subscribe>,
}

impl EdgeHandshakeConfig {
    /// A config with the default frame size and no features.
    pub fn new(robot: impl Into<String>, token: Token) -> Self {
        Self {
            robot: robot.into(),
            token,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            features: Vec::new(),
            subscribe: None,
        }
    }
}

/// Starts the edge's handshake.
#[derive(Debug)]
pub struct EdgeHandshake;

impl EdgeHandshake {
    /// The HELLO to send first, and the state waiting for the answer.
    pub fn start(cfg: &EdgeHandshakeConfig) -> (Frame, EdgeAwaitingWelcome) {
        let max_frame_size = cfg.max_frame_size.max(MIN_FRAME_SIZE);
        let hello = Frame::Hello(Hello {
            magic: MAGIC.to_owned(),
            version: PROTOCOL_VERSION,
            robot: cfg.robot.clone(),
            token: cfg.token.clone(),
            max_frame_size,
            features: cfg.features.clone(),
            subscribe: cfg.subscribe.clone(),
        });
        let state = EdgeAwaitingWelcome {
            robot: cfg.robot.clone(),
            max_frame_size,
            offered: cfg.features.clone(),
        };
        (hello, state)
    }
}

/// The edge sent HELLO and waits for WELCOME or REJECT.
#[derive(Debug)]
pub struct EdgeAwaitingWelcome {
    robot: String,
    max_frame_size: u32,
    offered: Vec<String>,
}

impl EdgeAwaitingWelcome {
    /// Takes the hub's first frame (or the error decoding it).
    pub fn on_frame(
        self,
        input: Result<Frame, FrameError>,
    ) -> Result<SessionParams, HandshakeError> {
        let welcome = match input? {
            Frame::Welcome(w) => w,
            Frame::Reject(r) => return Err(HandshakeError::Rejected(r)),
            Frame::Close(r) => return Err(HandshakeError::Closed(r)),
            other => return Err(HandshakeError::Unexpected { got: other.kind() }),
        };
        if welcome.version != PROTOCOL_VERSION {
            return Err(HandshakeError::UnsupportedVersion {
                got: welcome.version,
            });
        }
        if welcome.max_frame_size < MIN_FRAME_SIZE {
            return Err(HandshakeError::FrameSizeTooSmall {
                got: welcome.max_frame_size,
            });
        }
        if !(MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS).contains(&welcome.heartbeat_ms) {
            return Err(HandshakeError::BadWelcome(
                "heartbeat interval out of range",
            ));
        }
        let namespace = Namespace::parse(&welcome.namespace)
            .ok()
            .filter(|ns| !ns.is_root() && welcome.namespace.starts_with('/'))
            .ok_or(HandshakeError::BadWelcome("invalid namespace"))?;
        if welcome.features.iter().any(|f| !self.offered.contains(f)) {
            return Err(HandshakeError::BadWelcome("feature not offered"));
        }
        Ok(SessionParams {
            robot: self.robot,
            namespace,
            session: welcome.session,
            heartbeat: Duration::from_millis(u64::from(welcome.heartbeat_ms)),
            limits: FrameLimits::negotiated(self.max_frame_size, welcome.max_frame_size),
            features: welcome.features,
            subscribe: None,
        })
    }
}

/// The hub's side of the handshake.
#[derive(Debug, Clone)]
pub struct HubHandshakeConfig {
    /// Heartbeat interval announced in WELCOME (clamped to the allowed range).
    pub heartbeat: Duration,
    /// Largest frame this hub accepts.
    pub max_frame_size: u32,
    /// Features this hub supports.
    pub features: Vec<String>,
}

impl Default for HubHandshakeConfig {
    fn default() -> Self {
        Self {
            heartbeat: DEFAULT_HEARTBEAT,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            features: Vec::new(),
        }
    }
}

/// The hub waiting for HELLO on one connection.
#[derive(Debug)]
pub struct HubHandshake<'a> {
    cfg: &'a HubHandshakeConfig,
    tokens: &'a TokenTable,
    session: String,
}

impl<'a> HubHandshake<'a> {
    /// A hub handshake for the connection whose id is `session`.
    pub fn new(cfg: &'a HubHandshakeConfig, tokens: &'a TokenTable, session: String) -> Self {
        Self {
            cfg,
            tokens,
            session,
        }
    }

    /// Takes the edge's first frame (or the error decoding it). On success: the WELCOME to
    /// send and the session's parameters; on failure send [`HandshakeError::reply`] and close.
    pub fn on_frame(
        self,
        input: Result<Frame, FrameError>,
    ) -> Result<(Frame, SessionParams), HandshakeError> {
        let hello = match input? {
            Frame::Hello(h) => h,
            other => return Err(HandshakeError::Unexpected { got: other.kind() }),
        };
        if hello.magic != MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        if hello.version != PROTOCOL_VERSION {
            return Err(HandshakeError::UnsupportedVersion { got: hello.version });
        }
        let grant = self
            .tokens
            .lookup(&hello.token)
            .filter(|g| g.robot.as_ref().is_none_or(|r| *r == hello.robot))
            .ok_or_else(|| HandshakeError::BadToken {
                robot: hello.robot.clone(),
            })?;
        if hello.max_frame_size < MIN_FRAME_SIZE {
            return Err(HandshakeError::FrameSizeTooSmall {
                got: hello.max_frame_size,
            });
        }
        let ours = self.cfg.max_frame_size.max(MIN_FRAME_SIZE);
        let heartbeat_ms = u32::try_from(self.cfg.heartbeat.as_millis())
            .unwrap_or(u32::MAX)
            .clamp(MIN_HEARTBEAT_MS, MAX_HEARTBEAT_MS);
        let features: Vec<String> = hello
            .features
            .iter()
            .filter(|f| self.cfg.features.contains(f))
            .cloned()
            .collect();
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            namespace: grant.namespace.to_string(),
            session: self.session.clone(),
            heartbeat_ms,
            max_frame_size: ours,
            features: features.clone(),
        };
        let params = SessionParams {
            robot: hello.robot,
            namespace: grant.namespace.clone(),
            session: self.session,
            heartbeat: Duration::from_millis(u64::from(heartbeat_ms)),
            limits: FrameLimits::negotiated(ours, hello.max_frame_size),
            features,
            subscribe: hello.subscribe,
        };
        Ok((Frame::Welcome(welcome), params))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::frame::{FrameKind, HANDSHAKE_MAX_FRAME_SIZE, MAX_FRAME_SIZE_CEILING};
    use bytes::BytesMut;

    fn table() -> TokenTable {
        let mut t = TokenTable::new();
        t.insert(
            Token::new("secret-7"),
            Grant {
                namespace: Namespace::parse("/fleet_a/robot_7").unwrap(),
                robot: None,
            },
        )
        .unwrap();
        t.insert(
            Token::new("secret-8"),
            Grant {
                namespace: Namespace::parse("/fleet_b/robot_8").unwrap(),
                robot: Some("robot-8".into()),
            },
        )
        .unwrap();
        t
    }

    fn edge_cfg(robot: &str, token: &str) -> EdgeHandshakeConfig {
        EdgeHandshakeConfig {
            features: vec!["zstd".into(), "future".into()],
            ..EdgeHandshakeConfig::new(robot, Token::new(token))
        }
    }

    fn hub_cfg() -> HubHandshakeConfig {
        HubHandshakeConfig {
            heartbeat: Duration::from_secs(2),
            max_frame_size: 256 * 1024,
            features: vec!["zstd".into()],
        }
    }

    fn hello_of(frame: &Frame) -> Hello {
        match frame {
            Frame::Hello(h) => h.clone(),
            other => panic!("expected HELLO, got {other:?}"),
        }
    }

    /// Runs the hub on `hello`.
    fn hub(hello: Frame) -> Result<(Frame, SessionParams), HandshakeError> {
        let (cfg, tokens) = (hub_cfg(), table());
        HubHandshake::new(&cfg, &tokens, "s-1".into()).on_frame(Ok(hello))
    }

    fn reject_code(e: &HandshakeError) -> ReasonCode {
        match e.reply() {
            Some(Frame::Reject(r)) => r.code,
            other => panic!("expected a REJECT, got {other:?}"),
        }
    }

    #[test]
    fn both_sides_agree_on_success() {
        let (hello, edge) = EdgeHandshake::start(&edge_cfg("robot-7", "secret-7"));
        let (welcome, hub_params) = hub(hello).unwrap();
        let edge_params = edge.on_frame(Ok(welcome.clone())).unwrap();
        assert_eq!(edge_params, hub_params);
        assert_eq!(edge_params.namespace.as_str(), "/fleet_a/robot_7");
        assert_eq!(edge_params.session, "s-1");
        assert_eq!(edge_params.heartbeat, Duration::from_secs(2));
        assert_eq!(edge_params.limits.max_frame_size, 256 * 1024);
        assert_eq!(edge_params.features, vec!["zstd".to_owned()]);
        // The WELCOME survives the wire under the handshake limits.
        let mut buf = BytesMut::new();
        welcome.encode(&mut buf, HANDSHAKE_MAX_FRAME_SIZE).unwrap();
        let decoded = Frame::decode(&mut buf, &FrameLimits::handshake()).unwrap();
        assert_eq!(decoded, Some(welcome));
    }

    #[test]
    fn namespace_comes_from_the_token_not_the_claim() {
        // robot-7's token used under another name still gets robot-7's namespace.
        let (hello, _) = EdgeHandshake::start(&edge_cfg("/fleet_b/robot_8", "secret-7"));
        let (_, params) = hub(hello).unwrap();
        assert_eq!(params.namespace.as_str(), "/fleet_a/robot_7");
        assert_eq!(params.robot, "/fleet_b/robot_8");
    }

    #[test]
    fn wrong_token_is_bad_token() {
        for (robot, token) in [
            ("robot-7", "secret-"),
            ("robot-7", "secret-77"),
            ("robot-7", ""),
            ("robot-7", "secret-8"), // bound to robot-8
        ] {
            let (hello, _) = EdgeHandshake::start(&edge_cfg(robot, token));
            let e = hub(hello).unwrap_err();
            assert!(matches!(e, HandshakeError::BadToken { .. }), "{e:?}");
            assert_eq!(reject_code(&e), ReasonCode::BadToken);
            let Some(Frame::Reject(r)) = e.reply() else {
                unreachable!()
            };
            assert!(!r.message.contains("secret"));
        }
        let (hello, _) = EdgeHandshake::start(&edge_cfg("robot-8", "secret-8"));
        assert_eq!(hub(hello).unwrap().1.namespace.as_str(), "/fleet_b/robot_8");
    }

    #[test]
    fn errors_never_show_the_token() {
        let (hello, _) = EdgeHandshake::start(&edge_cfg("robot-7", "hunter2-secret"));
        let e = hub(hello.clone()).unwrap_err();
        assert!(!format!("{e:?} {e}").contains("hunter2"));
        assert!(!format!("{hello:?}").contains("hunter2"));
    }

    #[test]
    fn wrong_version_and_magic_are_refused() {
        let (hello, _) = EdgeHandshake::start(&edge_cfg("robot-7", "secret-7"));
        let h = hello_of(&hello);
        let e = hub(Frame::Hello(Hello {
            version: 2,
            ..h.clone()
        }))
        .unwrap_err();
        assert!(matches!(e, HandshakeError::UnsupportedVersion { got: 2 }));
        assert_eq!(reject_code(&e), ReasonCode::UnsupportedVersion);
        let e = hub(Frame::Hello(Hello {
            magic: "http".into(),
            ..h
        }))
        .unwrap_err();
        assert!(matches!(e, HandshakeError::BadMagic));
        assert_eq!(reject_code(&e), ReasonCode::Malformed);
    }

    #[test]
    fn magic_is_checked_before_the_token() {
        let (hello, _) = EdgeHandshake::start(&edge_cfg("robot-7", "wrong"));
        let e = hub(Frame::Hello(Hello {
            magic: "x".into(),
            version: 9,
            ..hello_of(&hello)
        }))
        .unwrap_err();
        assert!(matches!(e, HandshakeError::BadMagic));
    }

    #[test]
    fn frame_sizes_are_validated_and_negotiated() {
        let (hello, _) = EdgeHandshake::start(&edge_cfg("robot-7", "secret-7"));
        let h = hello_of(&hello);
        let e = hub(Frame::Hello(Hello {
            max_frame_size: 100,
            ..h.clone()
        }))
        .unwrap_err();
        assert!(matches!(e, HandshakeError::FrameSizeTooSmall { got: 100 }));
        assert_eq!(reject_code(&e), ReasonCode::Malformed);
        let (_, p) = hub(Frame::Hello(Hello {
            max_frame_size: u32::MAX,
            ..h.clone()
        }))
        .unwrap();
        assert_eq!(p.limits.max_frame_size, 256 * 1024);
        let (_, p) = hub(Frame::Hello(Hello {
            max_frame_size: MIN_FRAME_SIZE,
            ..h
        }))
        .unwrap();
        assert_eq!(p.limits.max_frame_size, MIN_FRAME_SIZE);
        // A hub offering more than the ceiling is clamped too.
        let cfg = HubHandshakeConfig {
            max_frame_size: u32::MAX,
            ..hub_cfg()
        };
        let tokens = table();
        let (hello, _) = EdgeHandshake::start(&EdgeHandshakeConfig {
            max_frame_size: u32::MAX,
            ..edge_cfg("robot-7", "secret-7")
        });
        let (_, p) = HubHandshake::new(&cfg, &tokens, "s".into())
            .on_frame(Ok(hello))
            .unwrap();
        assert_eq!(p.limits.max_frame_size, MAX_FRAME_SIZE_CEILING);
    }

    #[test]
    fn garbage_and_oversized_first_frames_are_refused() {
        let (cfg, tokens) = (hub_cfg(), table());
        let first = |bytes: &[u8]| {
            let mut buf = BytesMut::from(bytes);
            let input = match Frame::decode(&mut buf, &FrameLimits::handshake()) {
                Ok(Some(f)) => Ok(f),
                Ok(None) => panic!("incomplete"),
                Err(e) => Err(e),
            };
            HubHandshake::new(&cfg, &tokens, "s".into())
                .on_frame(input)
                .unwrap_err()
        };
        // An HTTP request reads as a length of ~1.2 GB.
        let e = first(b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(
            e,
            HandshakeError::Frame(FrameError::TooLarge { .. })
        ));
        assert_eq!(reject_code(&e), ReasonCode::FrameTooLarge);
        // 64 KiB + 1: just over the handshake limit.
        let e = first(&[0x00, 0x01, 0x00, 0x01, 0x01]);
        assert_eq!(reject_code(&e), ReasonCode::FrameTooLarge);
        // Well-sized, but not JSON.
        let e = first(&[0, 0, 0, 4, 0x01, b'{', b'x', b'}']);
        assert!(matches!(e, HandshakeError::Frame(FrameError::Json { .. })));
        assert_eq!(reject_code(&e), ReasonCode::Malformed);
        // Unknown kind, empty frame.
        assert_eq!(
            reject_code(&first(&[0, 0, 0, 1, 0x7f])),
            ReasonCode::Malformed
        );
        assert_eq!(reject_code(&first(&[0, 0, 0, 0])), ReasonCode::Malformed);
        // A valid frame that is not a HELLO.
        let e = HubHandshake::new(&cfg, &tokens, "s".into())
            .on_frame(Ok(Frame::Heartbeat))
            .unwrap_err();
        assert!(matches!(
            e,
            HandshakeError::Unexpected {
                got: FrameKind::Heartbeat
            }
        ));
        assert_eq!(reject_code(&e), ReasonCode::Malformed);
    }

    #[test]
    fn edge_handles_reject_close_and_unexpected() {
        let start = || EdgeHandshake::start(&edge_cfg("robot-7", "x")).1;
        let reason = Reason {
            code: ReasonCode::BadToken,
            message: "token not accepted".into(),
        };
        let e = start()
            .on_frame(Ok(Frame::Reject(reason.clone())))
            .unwrap_err();
        assert!(matches!(&e, HandshakeError::Rejected(r) if r.code == ReasonCode::BadToken));
        assert!(e.reply().is_none());
        let e = start().on_frame(Ok(Frame::Close(reason))).unwrap_err();
        assert!(matches!(e, HandshakeError::Closed(_)));
        assert!(e.reply().is_none());
        let e = start().on_frame(Ok(Frame::Heartbeat)).unwrap_err();
        assert_eq!(reject_code(&e), ReasonCode::Malformed);
        let e = start()
            .on_frame(Err(FrameError::TooLarge {
                size: 1 << 30,
                max: 1,
            }))
            .unwrap_err();
        assert_eq!(reject_code(&e), ReasonCode::FrameTooLarge);
    }

    #[test]
    fn edge_validates_welcome() {
        let (hello, _) = EdgeHandshake::start(&edge_cfg("robot-7", "secret-7"));
        let Frame::Welcome(good) = hub(hello).unwrap().0 else {
            unreachable!()
        };
        let check = |w: Welcome| {
            let (_, edge) = EdgeHandshake::start(&edge_cfg("robot-7", "secret-7"));
            edge.on_frame(Ok(Frame::Welcome(w)))
        };
        assert!(check(good.clone()).is_ok());
        type Check = fn(&HandshakeError) -> bool;
        let cases: Vec<(Welcome, Check)> = vec![
            (
                Welcome {
                    version: 2,
                    ..good.clone()
                },
                |e| matches!(e, HandshakeError::UnsupportedVersion { got: 2 }),
            ),
            (
                Welcome {
                    max_frame_size: 10,
                    ..good.clone()
                },
                |e| matches!(e, HandshakeError::FrameSizeTooSmall { got: 10 }),
            ),
            (
                Welcome {
                    heartbeat_ms: 0,
                    ..good.clone()
                },
                |e| matches!(e, HandshakeError::BadWelcome(_)),
            ),
            (
                Welcome {
                    heartbeat_ms: MAX_HEARTBEAT_MS + 1,
                    ..good.clone()
                },
                |e| matches!(e, HandshakeError::BadWelcome(_)),
            ),
            (
                Welcome {
                    namespace: "/".into(),
                    ..good.clone()
                },
                |e| matches!(e, HandshakeError::BadWelcome(_)),
            ),
            (
                Welcome {
                    namespace: "fleet/../x y".into(),
                    ..good.clone()
                },
                |e| matches!(e, HandshakeError::BadWelcome(_)),
            ),
            (
                Welcome {
                    features: vec!["never-offered".into()],
                    ..good
                },
                |e| matches!(e, HandshakeError::BadWelcome(_)),
            ),
        ];
        for (w, is_expected) in cases {
            let e = check(w.clone()).unwrap_err();
            assert!(is_expected(&e), "{w:?}: {e:?}");
            assert!(e.reply().is_some());
        }
    }

    #[test]
    fn token_table_is_validated() {
        let mut t = table();
        let grant = |ns: &str| Grant {
            namespace: Namespace::parse(ns).unwrap(),
            robot: None,
        };
        assert_eq!(
            t.insert(Token::new("secret-7"), grant("/other")),
            Err(TokenTableError::DuplicateToken("/other".into()))
        );
        assert_eq!(
            t.insert(Token::new(""), grant("/other")),
            Err(TokenTableError::EmptyToken("/other".into()))
        );
        assert_eq!(
            t.insert(Token::new("x"), grant("/")),
            Err(TokenTableError::RootNamespace)
        );
        assert_eq!(t.len(), 2);
        assert!(TokenTable::new().lookup(&Token::new("x")).is_none());
    }
}
