//! The session driver: runs the handshake and then the link over any byte stream.
//!
//! [`run_edge_session`] and [`run_hub_session`] take the connection (`AsyncRead + AsyncWrite`),
//! frame it with [`LinkCodec`], run the [handshake](super::handshake) within a timeout, then:
//!
//! - pass every ANNOUNCE, WITHDRAW, DATA and ACK from the peer to the caller as
//!   [`SessionEvent::Frame`] (after one [`SessionEvent::Established`]), through a bounded
//!   channel: a caller that does not keep up stops the reading (backpressure on TCP);
//! - write what the caller sends on the outgoing bounded channel (a CLOSE from the caller ends
//!   the session after it is written);
//! - send HEARTBEAT after one interval without sending anything, and end with
//!   [`SessionError::PeerTimeout`] (after sending `CLOSE timeout`) when nothing was received for
//!   three intervals;
//! - on [`CancellationToken`] cancellation (or when the caller drops its channel ends) send
//!   `CLOSE shutdown` and end with [`SessionEnd::Shutdown`].
//!
//! Invalid frames from the peer end the session with a typed error after a REJECT (handshake) or
//! CLOSE (after it) carrying the reason code of `docs/link-protocol.md` §9. Nothing the peer
//! sends can make this code panic; tokens are never logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::handshake::{
    EdgeHandshake, EdgeHandshakeConfig, HandshakeError, HubHandshake, HubHandshakeConfig,
    SessionParams, TokenTable, DEFAULT_HANDSHAKE_TIMEOUT,
};
use crate::link::codec::{CodecError, LinkCodec};
use crate::link::frame::{Frame, FrameError, FrameKind, Reason, ReasonCode};

/// How long a final REJECT/CLOSE may take to write before the connection is dropped anyway.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A peer silent for this many heartbeat intervals is dead.
pub const DEAD_AFTER_INTERVALS: u32 = 3;

/// The edge's session settings.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// What goes in HELLO.
    pub handshake: EdgeHandshakeConfig,
    /// How long to wait for WELCOME (from connecting).
    pub handshake_timeout: Duration,
}

impl EdgeConfig {
    /// Settings with the default handshake timeout.
    pub fn new(handshake: EdgeHandshakeConfig) -> Self {
        Self {
            handshake,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// The hub's session settings (shared by all its connections).
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// What goes in WELCOME.
    pub handshake: HubHandshakeConfig,
    /// How long to wait for HELLO (from accepting).
    pub handshake_timeout: Duration,
    /// Tokens and the namespaces they grant.
    pub tokens: TokenTable,
}

impl HubConfig {
    /// Settings with the default handshake timeout.
    pub fn new(handshake: HubHandshakeConfig, tokens: TokenTable) -> Self {
        Self {
            handshake,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tokens,
        }
    }
}

/// What the session gives the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The handshake is done (always the first event).
    Established(SessionParams),
    /// An ANNOUNCE, WITHDRAW, DATA or ACK from the peer.
    Frame(Frame),
}

/// The session's ends of the two bounded channels to the caller.
#[derive(Debug)]
pub struct SessionChannels {
    /// Frames to send (ANNOUNCE, WITHDRAW, DATA, ACK, or a final CLOSE). DATA must fit the
    /// negotiated limits ([`SessionParams::limits`]); a frame that does not is dropped (logged).
    pub outgoing: mpsc::Receiver<Frame>,
    /// Events for the caller.
    pub incoming: mpsc::Sender<SessionEvent>,
}

impl SessionChannels {
    /// Bounded channels of `capacity` each way: the session's ends, the caller's sender of
    /// outgoing frames and the caller's receiver of events.
    pub fn bounded(capacity: usize) -> (Self, mpsc::Sender<Frame>, mpsc::Receiver<SessionEvent>) {
        let (out_tx, out_rx) = mpsc::channel(capacity.max(1));
        let (in_tx, in_rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                outgoing: out_rx,
                incoming: in_tx,
            },
            out_tx,
            in_rx,
        )
    }
}

/// How a session ended without error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// Cancelled, or the caller dropped its channel ends; `CLOSE shutdown` was sent (after the
    /// handshake).
    Shutdown,
    /// The peer sent CLOSE (or a late REJECT).
    ClosedByPeer(Reason),
    /// The caller sent CLOSE; it was written.
    ClosedLocally(Reason),
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The handshake failed (a REJECT was sent when [`HandshakeError::reply`] has one).
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The transport failed.
    #[error("link i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent an invalid frame (a CLOSE with its reason code was sent).
    #[error("peer sent an invalid frame: {0}")]
    Frame(#[source] FrameError),
    /// The peer sent a handshake frame after the handshake (`CLOSE malformed` was sent).
    #[error("peer sent {0:?} after the handshake")]
    Unexpected(FrameKind),
    /// Nothing received for [`DEAD_AFTER_INTERVALS`] heartbeat intervals (`CLOSE timeout` sent).
    #[error("peer silent for {0:?}")]
    PeerTimeout(Duration),
    /// A frame could not be written for [`DEAD_AFTER_INTERVALS`] heartbeat intervals.
    #[error("write stalled for {0:?}")]
    WriteTimeout(Duration),
    /// The peer closed the connection without CLOSE.
    #[error("connection closed by the peer without CLOSE")]
    Eof,
}

/// A session id, unique in this process and (practically) across restarts.
pub fn new_session_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{t:x}-{n:x}")
}

type Link<T> = Framed<T, LinkCodec>;

/// `now + after`, saturating at a year (a huge configured timeout must not overflow).
fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

enum Received {
    Frame(Frame),
    Invalid(FrameError),
}

async fn receive<T: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<T>,
) -> Result<Received, SessionError> {
    match link.next().await {
        Some(Ok(f)) => Ok(Received::Frame(f)),
        Some(Err(CodecError::Frame(e))) => Ok(Received::Invalid(e)),
        Some(Err(CodecError::Io(e))) => Err(SessionError::Io(e)),
        None => Err(SessionError::Eof),
    }
}

/// Frames written before one flush, at most.
const MAX_BATCH: usize = 64;

/// Queues one frame for writing; a frame over the negotiated limits is dropped and logged
/// (the codec wrote nothing of it), an I/O error ends the batch.
async fn feed_one<T: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<T>,
    f: Frame,
    session: &str,
    side: &'static str,
) -> Result<(), CodecError> {
    let kind = f.kind();
    match link.feed(f).await {
        Err(CodecError::Frame(e)) => {
            tracing::warn!(%session, side, ?kind, error = %e, "outgoing frame dropped");
            Ok(())
        }
        other => other,
    }
}

/// Writes a last frame (best effort, within [`CLOSE_GRACE`]) and shuts the write side.
async fn send_final<T: AsyncRead + AsyncWrite + Unpin>(link: &mut Link<T>, frame: Frame) {
    let kind = frame.kind();
    let r = timeout(CLOSE_GRACE, async {
        link.send(frame).await?;
        SinkExt::<Frame>::close(link).await
    })
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(?kind, error = %e, "final frame not written"),
        Err(_) => tracing::debug!(?kind, "final frame not written in time"),
    }
}

/// Receives one handshake frame within `deadline`, or cancellation (`None`).
async fn handshake_input<T: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<T>,
    deadline: Instant,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<Option<Result<Frame, FrameError>>, SessionError> {
    tokio::select! {
        _ = cancel.cancelled() => Ok(None),
        r = timeout_at_result(deadline, receive(link)) => match r {
            None => Err(HandshakeError::Timeout(limit).into()),
            Some(Err(SessionError::Eof)) => Err(HandshakeError::Eof.into()),
            Some(Err(e)) => Err(e),
            Some(Ok(Received::Frame(f))) => Ok(Some(Ok(f))),
            Some(Ok(Received::Invalid(e))) => Ok(Some(Err(e))),
        },
    }
}

async fn timeout_at_result<F: std::future::Future>(deadline: Instant, f: F) -> Option<F::Output> {
    tokio::time::timeout_at(deadline, f).await.ok()
}

/// Sends the REJECT for `e` (if any), and returns `e`.
async fn refuse<T: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<T>,
    e: SessionError,
) -> SessionError {
    if let SessionError::Handshake(h) = &e {
        if let Some(reply) = h.reply() {
            send_final(link, reply).await;
        }
    }
    e
}

/// Runs the edge's side of one session over `io` until it ends.
///
/// The first event on `channels.incoming` is [`SessionEvent::Established`]. A REJECT from the
/// hub ends with `SessionError::Handshake(HandshakeError::Rejected(reason))`.
pub async fn run_edge_session<T>(
    io: T,
    cfg: &EdgeConfig,
    channels: &mut SessionChannels,
    cancel: &CancellationToken,
) -> Result<SessionEnd, SessionError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut link = Framed::new(io, LinkCodec::new());
    let deadline = deadline_after(cfg.handshake_timeout);
    let (hello, state) = EdgeHandshake::start(&cfg.handshake);
    tracing::debug!(robot = %cfg.handshake.robot, "sending HELLO");
    let sent = tokio::select! {
        _ = cancel.cancelled() => return Ok(SessionEnd::Shutdown),
        r = tokio::time::timeout_at(deadline, link.send(hello)) => r,
    };
    match sent {
        Err(_) => {
            let e = HandshakeError::Timeout(cfg.handshake_timeout).into();
            return Err(refuse(&mut link, e).await);
        }
        Ok(Err(CodecError::Io(e))) => return Err(e.into()),
        // Our own HELLO does not fit the handshake limit (an absurd robot name or token).
        Ok(Err(CodecError::Frame(e))) => return Err(HandshakeError::Frame(e).into()),
        Ok(Ok(())) => {}
    }
    let input = match handshake_input(&mut link, deadline, cfg.handshake_timeout, cancel).await {
        Ok(Some(input)) => input,
        Ok(None) => return Ok(SessionEnd::Shutdown),
        Err(e) => {
            tracing::warn!(robot = %cfg.handshake.robot, error = %e, "handshake failed");
            return Err(refuse(&mut link, e).await);
        }
    };
    let params = match state.on_frame(input) {
        Ok(p) => p,
        Err(e) => {
            match &e {
                HandshakeError::Rejected(r) => tracing::warn!(
                    robot = %cfg.handshake.robot, code = ?r.code, message = ?r.message,
                    "hub refused the session"
                ),
                other => tracing::warn!(
                    robot = %cfg.handshake.robot, error = %other, "handshake failed"
                ),
            }
            return Err(refuse(&mut link, e.into()).await);
        }
    };
    tracing::info!(
        robot = %params.robot, namespace = %params.namespace, session = %params.session,
        heartbeat_ms = params.heartbeat.as_millis() as u64,
        max_frame_size = params.limits.max_frame_size, "session established"
    );
    drive(link, params, channels, cancel, "edge").await
}

/// Runs the hub's side of one session over an accepted connection `io` until it ends.
///
/// The first event on `channels.incoming` is [`SessionEvent::Established`], whose `namespace`
/// is the one the robot's token grants.
pub async fn run_hub_session<T>(
    io: T,
    cfg: &HubConfig,
    channels: &mut SessionChannels,
    cancel: &CancellationToken,
) -> Result<SessionEnd, SessionError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut link = Framed::new(io, LinkCodec::new());
    let session = new_session_id();
    let deadline = deadline_after(cfg.handshake_timeout);
    let input = match handshake_input(&mut link, deadline, cfg.handshake_timeout, cancel).await {
        Ok(Some(input)) => input,
        Ok(None) => {
            let reason = Reason {
                code: ReasonCode::Shutdown,
                message: "hub shutting down".into(),
            };
            send_final(&mut link, Frame::Reject(reason)).await;
            return Ok(SessionEnd::Shutdown);
        }
        Err(e) => {
            tracing::warn!(%session, error = %e, "handshake failed");
            return Err(refuse(&mut link, e).await);
        }
    };
    let (welcome, params) =
        match HubHandshake::new(&cfg.handshake, &cfg.tokens, session.clone()).on_frame(input) {
            Ok(ok) => ok,
            Err(e) => {
                // `robot` is the peer's claim, debug-escaped; the token is never logged.
                let robot = match &e {
                    HandshakeError::BadToken { robot } => Some(robot.as_str()),
                    _ => None,
                };
                tracing::warn!(%session, ?robot, code = ?e.reason_code(), error = %e,
                    "refusing the session");
                return Err(refuse(&mut link, e.into()).await);
            }
        };
    let sent = tokio::select! {
        _ = cancel.cancelled() => return Ok(SessionEnd::Shutdown),
        r = tokio::time::timeout_at(deadline, link.send(welcome)) => r,
    };
    match sent {
        Err(_) => return Err(HandshakeError::Timeout(cfg.handshake_timeout).into()),
        Ok(Err(CodecError::Io(e))) => return Err(e.into()),
        Ok(Err(CodecError::Frame(e))) => return Err(HandshakeError::Frame(e).into()),
        Ok(Ok(())) => {}
    }
    tracing::info!(
        robot = ?params.robot, namespace = %params.namespace, session = %params.session,
        heartbeat_ms = params.heartbeat.as_millis() as u64,
        max_frame_size = params.limits.max_frame_size, "session accepted"
    );
    drive(link, params, channels, cancel, "hub").await
}

enum Step {
    Cancelled,
    Outgoing(Option<Frame>),
    Delivered,
    CallerGone,
    Incoming(Result<Received, SessionError>),
    HeartbeatDue,
    PeerDead,
}

/// The established session: heartbeats, liveness, frames both ways.
async fn drive<T: AsyncRead + AsyncWrite + Unpin>(
    mut link: Link<T>,
    params: SessionParams,
    channels: &mut SessionChannels,
    cancel: &CancellationToken,
    side: &'static str,
) -> Result<SessionEnd, SessionError> {
    link.codec_mut().set_limits(params.limits, params.limits);
    let session = params.session.clone();
    let interval = params.heartbeat;
    let dead_after = interval * DEAD_AFTER_INTERVALS;
    let mut last_sent = Instant::now();
    let mut last_received = Instant::now();
    // A frame read from the peer and not yet taken by the caller. While one waits, nothing more
    // is read (backpressure) and the liveness check is paused.
    let mut pending = Some(SessionEvent::Established(params));
    let shutdown = Frame::Close(Reason {
        code: ReasonCode::Shutdown,
        message: format!("{side} shutting down"),
    });
    let mut deferred: Option<Frame> = None;
    loop {
        let step = if let Some(f) = deferred.take() {
            Step::Outgoing(Some(f))
        } else {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Step::Cancelled,
                permit = channels.incoming.reserve(), if pending.is_some() => match permit {
                    Ok(permit) => {
                        if let Some(ev) = pending.take() {
                            permit.send(ev);
                        }
                        Step::Delivered
                    }
                    Err(_) => Step::CallerGone,
                },
                r = receive(&mut link), if pending.is_none() => Step::Incoming(r),
                _ = sleep_until(last_received + dead_after), if pending.is_none() => Step::PeerDead,
                f = channels.outgoing.recv() => Step::Outgoing(f),
                _ = sleep_until(last_sent + interval) => Step::HeartbeatDue,
            }
        };
        let to_send = match step {
            Step::Cancelled | Step::CallerGone | Step::Outgoing(None) => {
                tracing::info!(%session, side, "session shutting down");
                send_final(&mut link, shutdown).await;
                return Ok(SessionEnd::Shutdown);
            }
            Step::Delivered => {
                last_received = Instant::now();
                continue;
            }
            Step::PeerDead => {
                tracing::warn!(%session, side, silent_ms = dead_after.as_millis() as u64,
                    "peer silent, closing");
                let reason = Reason {
                    code: ReasonCode::Timeout,
                    message: format!("nothing received for {} ms", dead_after.as_millis()),
                };
                send_final(&mut link, Frame::Close(reason)).await;
                return Err(SessionError::PeerTimeout(dead_after));
            }
            Step::HeartbeatDue => Frame::Heartbeat,
            Step::Incoming(r) => {
                last_received = Instant::now();
                match r? {
                    Received::Invalid(e) => {
                        tracing::warn!(%session, side, error = %e, "invalid frame from the peer");
                        let reason = Reason {
                            code: e.reason_code(),
                            message: e.to_string(),
                        };
                        send_final(&mut link, Frame::Close(reason)).await;
                        return Err(SessionError::Frame(e));
                    }
                    Received::Frame(Frame::Heartbeat) => continue,
                    Received::Frame(Frame::Close(r) | Frame::Reject(r)) => {
                        tracing::info!(%session, side, code = ?r.code, message = ?r.message,
                            "peer closed the session");
                        return Ok(SessionEnd::ClosedByPeer(r));
                    }
                    Received::Frame(f @ (Frame::Hello(_) | Frame::Welcome(_))) => {
                        let kind = f.kind();
                        tracing::warn!(%session, side, ?kind, "handshake frame after the handshake");
                        let reason = Reason {
                            code: ReasonCode::Malformed,
                            message: format!("{kind:?} after the handshake"),
                        };
                        send_final(&mut link, Frame::Close(reason)).await;
                        return Err(SessionError::Unexpected(kind));
                    }
                    Received::Frame(f) => {
                        pending = Some(SessionEvent::Frame(f));
                        continue;
                    }
                }
            }
            Step::Outgoing(Some(f)) => match f {
                Frame::Hello(_) | Frame::Welcome(_) | Frame::Reject(_) => {
                    tracing::warn!(%session, side, kind = ?f.kind(),
                        "handshake frame from the caller dropped");
                    continue;
                }
                Frame::Close(r) => {
                    tracing::info!(%session, side, code = ?r.code, "closing the session");
                    send_final(&mut link, Frame::Close(r.clone())).await;
                    return Ok(SessionEnd::ClosedLocally(r));
                }
                other => other,
            },
        };
        let kind = to_send.kind();
        // Frames already waiting go out with this one, in one flush (one write for many
        // small messages); a CLOSE or misplaced frame waits for the next turn of the loop.
        let written = timeout(dead_after, async {
            feed_one(&mut link, to_send, &session, side).await?;
            for _ in 0..MAX_BATCH {
                match channels.outgoing.try_recv() {
                    Ok(
                        f @ (Frame::Announce(_)
                        | Frame::Withdraw(_)
                        | Frame::Data(_)
                        | Frame::Ack(_)),
                    ) => {
                        feed_one(&mut link, f, &session, side).await?;
                    }
                    Ok(other) => {
                        deferred = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            SinkExt::<Frame>::flush(&mut link).await
        })
        .await;
        match written {
            Ok(Ok(())) => last_sent = Instant::now(),
            Ok(Err(CodecError::Io(e))) => return Err(e.into()),
            Ok(Err(CodecError::Frame(e))) => {
                tracing::warn!(%session, side, ?kind, error = %e, "outgoing frame dropped");
            }
            Err(_) => {
                tracing::warn!(%session, side, ?kind, "write stalled, closing");
                return Err(SessionError::WriteTimeout(dead_after));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::frame::{Ack, Data, RouteId, Token, MIN_FRAME_SIZE};
    use crate::session::handshake::{Grant, TokenTable};
    use bytes::Bytes;
    use ros2::names::Namespace;
    use tokio::io::{duplex, AsyncWriteExt, DuplexStream};

    fn hub_cfg() -> HubConfig {
        let mut tokens = TokenTable::new();
        tokens
            .insert(
                Token::new("secret-7"),
                Grant {
                    namespace: Namespace::parse("/fleet_a/robot_7").unwrap(),
                    robot: None,
                },
            )
            .unwrap();
        HubConfig::new(
            HubHandshakeConfig {
                heartbeat: Duration::from_secs(1),
                max_frame_size: 256 * 1024,
                features: vec![],
            },
            tokens,
        )
    }

    fn edge_cfg(token: &str) -> EdgeConfig {
        EdgeConfig::new(EdgeHandshakeConfig {
            max_frame_size: 256 * 1024,
            ..EdgeHandshakeConfig::new("robot-7", Token::new(token))
        })
    }

    fn data(len: usize) -> Frame {
        Frame::Data(Data {
            route: RouteId(1),
            seq: 1,
            index: 0,
            count: 1,
            flags: 0,
            payload: Bytes::from(vec![7u8; len]),
        })
    }

    async fn established(rx: &mut mpsc::Receiver<SessionEvent>) -> SessionParams {
        match rx.recv().await {
            Some(SessionEvent::Established(p)) => p,
            other => panic!("expected Established, got {other:?}"),
        }
    }

    async fn frame(rx: &mut mpsc::Receiver<SessionEvent>) -> Frame {
        match rx.recv().await {
            Some(SessionEvent::Frame(f)) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// A hand-driven hub: reads the HELLO, answers `welcome_heartbeat_ms`, returns the link.
    async fn fake_hub(io: DuplexStream, heartbeat_ms: u32) -> Link<DuplexStream> {
        let mut link = Framed::new(io, LinkCodec::new());
        let hello = link.next().await.unwrap().unwrap();
        assert!(matches!(hello, Frame::Hello(_)));
        let welcome = crate::link::frame::Welcome {
            version: 1,
            namespace: "/fleet_a/robot_7".into(),
            session: "fake".into(),
            heartbeat_ms,
            max_frame_size: MIN_FRAME_SIZE,
            features: vec![],
        };
        link.send(Frame::Welcome(welcome)).await.unwrap();
        let limits = crate::link::frame::FrameLimits::negotiated(MIN_FRAME_SIZE, MIN_FRAME_SIZE);
        link.codec_mut().set_limits(limits, limits);
        link
    }

    #[tokio::test(start_paused = true)]
    async fn handshake_and_frames_both_ways_then_shutdown() {
        let (a, b) = duplex(16 * 1024);
        let (hub_cfg, edge_cfg) = (hub_cfg(), edge_cfg("secret-7"));
        let (mut hub_ch, hub_tx, mut hub_rx) = SessionChannels::bounded(4);
        let (mut edge_ch, edge_tx, mut edge_rx) = SessionChannels::bounded(4);
        let (hub_cancel, edge_cancel) = (CancellationToken::new(), CancellationToken::new());
        let hub = async { run_hub_session(a, &hub_cfg, &mut hub_ch, &hub_cancel).await };
        let edge = async { run_edge_session(b, &edge_cfg, &mut edge_ch, &edge_cancel).await };
        let test = async {
            let hp = established(&mut hub_rx).await;
            let ep = established(&mut edge_rx).await;
            assert_eq!(hp, ep);
            assert_eq!(ep.namespace.as_str(), "/fleet_a/robot_7");
            assert_eq!(ep.limits.max_frame_size, 256 * 1024);
            // Larger than the handshake limit: the negotiated limits are in force both ways.
            edge_tx.send(data(100 * 1024)).await.unwrap();
            assert_eq!(frame(&mut hub_rx).await, data(100 * 1024));
            let ack = Frame::Ack(Ack {
                route: RouteId(1),
                seq: 1,
            });
            hub_tx.send(ack.clone()).await.unwrap();
            hub_tx.send(data(70 * 1024)).await.unwrap();
            assert_eq!(frame(&mut edge_rx).await, ack);
            assert_eq!(frame(&mut edge_rx).await, data(70 * 1024));
            // Idle for a long while: heartbeats keep both alive, and none reach the caller.
            tokio::time::sleep(Duration::from_secs(60)).await;
            assert!(edge_rx.try_recv().is_err() && hub_rx.try_recv().is_err());
            edge_cancel.cancel();
        };
        let (h, e, ()) = tokio::join!(hub, edge, test);
        assert_eq!(e.unwrap(), SessionEnd::Shutdown);
        match h.unwrap() {
            SessionEnd::ClosedByPeer(r) => assert_eq!(r.code, ReasonCode::Shutdown),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn close_from_the_caller_ends_both_sides() {
        let (a, b) = duplex(16 * 1024);
        let (hub_cfg, edge_cfg) = (hub_cfg(), edge_cfg("secret-7"));
        let (mut hub_ch, _hub_tx, mut hub_rx) = SessionChannels::bounded(4);
        let (mut edge_ch, edge_tx, mut edge_rx) = SessionChannels::bounded(4);
        let cancel = CancellationToken::new();
        let reason = Reason {
            code: ReasonCode::LimitExceeded,
            message: "too many routes".into(),
        };
        let test = async {
            established(&mut edge_rx).await;
            established(&mut hub_rx).await;
            edge_tx.send(Frame::Close(reason.clone())).await.unwrap();
        };
        let (h, e, ()) = tokio::join!(
            run_hub_session(a, &hub_cfg, &mut hub_ch, &cancel),
            run_edge_session(b, &edge_cfg, &mut edge_ch, &cancel),
            test,
        );
        assert_eq!(e.unwrap(), SessionEnd::ClosedLocally(reason.clone()));
        assert_eq!(h.unwrap(), SessionEnd::ClosedByPeer(reason));
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_token_is_rejected_on_both_sides() {
        let (a, b) = duplex(16 * 1024);
        let (hub_cfg, edge_cfg) = (hub_cfg(), edge_cfg("secret-8"));
        let (mut hub_ch, _hub_tx, mut hub_rx) = SessionChannels::bounded(4);
        let (mut edge_ch, _edge_tx, mut edge_rx) = SessionChannels::bounded(4);
        let cancel = CancellationToken::new();
        let (h, e) = tokio::join!(
            run_hub_session(a, &hub_cfg, &mut hub_ch, &cancel),
            run_edge_session(b, &edge_cfg, &mut edge_ch, &cancel),
        );
        match e {
            Err(SessionError::Handshake(HandshakeError::Rejected(r))) => {
                assert_eq!(r.code, ReasonCode::BadToken);
                assert!(!r.message.contains("secret"));
            }
            other => panic!("{other:?}"),
        }
        match h {
            Err(SessionError::Handshake(HandshakeError::BadToken { robot })) => {
                assert_eq!(robot, "robot-7")
            }
            other => panic!("{other:?}"),
        }
        assert!(hub_rx.try_recv().is_err() && edge_rx.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn silent_hub_is_declared_dead_after_three_intervals() {
        let (a, b) = duplex(16 * 1024);
        let edge_cfg = edge_cfg("secret-7");
        let (mut edge_ch, _edge_tx, mut edge_rx) = SessionChannels::bounded(4);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let (mut hub, e) = tokio::join!(
            fake_hub(a, 1000),
            run_edge_session(b, &edge_cfg, &mut edge_ch, &cancel),
        );
        assert!(matches!(e, Err(SessionError::PeerTimeout(d)) if d == Duration::from_secs(3)));
        assert!(start.elapsed() >= Duration::from_secs(3));
        assert_eq!(established(&mut edge_rx).await.session, "fake");
        // The edge sent heartbeats while waiting, then CLOSE timeout.
        let mut heartbeats = 0;
        let last = loop {
            match hub.next().await.unwrap().unwrap() {
                Frame::Heartbeat => heartbeats += 1,
                other => break other,
            }
        };
        assert!(heartbeats >= 2, "{heartbeats}");
        assert!(matches!(last, Frame::Close(r) if r.code == ReasonCode::Timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_edge_times_out_the_hub_handshake() {
        let (a, mut b) = duplex(1024);
        let hub_cfg = hub_cfg();
        let (mut hub_ch, _hub_tx, _hub_rx) = SessionChannels::bounded(4);
        let cancel = CancellationToken::new();
        let h = run_hub_session(a, &hub_cfg, &mut hub_ch, &cancel).await;
        assert!(matches!(
            h,
            Err(SessionError::Handshake(HandshakeError::Timeout(_)))
        ));
        let mut edge = Framed::new(&mut b, LinkCodec::new());
        let reject = edge.next().await.unwrap().unwrap();
        assert!(matches!(reject, Frame::Reject(r) if r.code == ReasonCode::Timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn oversized_frame_from_the_hub_is_an_error() {
        let (a, b) = duplex(16 * 1024);
        let edge_cfg = edge_cfg("secret-7");
        let (mut edge_ch, _edge_tx, _edge_rx) = SessionChannels::bounded(4);
        let cancel = CancellationToken::new();
        let hub = async {
            let mut hub = fake_hub(a, 1000).await;
            // A length one byte over the negotiated maximum, and nothing after it.
            let len = MIN_FRAME_SIZE + 1;
            hub.get_mut().write_all(&len.to_be_bytes()).await.unwrap();
            hub.get_mut().write_all(&[0x20]).await.unwrap();
            hub
        };
        let (mut hub, e) = tokio::join!(hub, run_edge_session(b, &edge_cfg, &mut edge_ch, &cancel));
        assert!(matches!(
            e,
            Err(SessionError::Frame(FrameError::TooLarge { max, .. })) if max == MIN_FRAME_SIZE
        ));
        let close = loop {
            match hub.next().await.unwrap().unwrap() {
                Frame::Heartbeat => {}
                other => break other,
            }
        };
        assert!(matches!(close, Frame::Close(r) if r.code == ReasonCode::FrameTooLarge));
    }

    #[tokio::test(start_paused = true)]
    async fn garbage_first_frame_is_rejected_by_the_hub() {
        let (a, mut b) = duplex(1024);
        let hub_cfg = hub_cfg();
        let (mut hub_ch, _hub_tx, _hub_rx) = SessionChannels::bounded(4);
        let cancel = CancellationToken::new();
        b.write_all(b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n")
            .await
            .unwrap();
        let h = run_hub_session(a, &hub_cfg, &mut hub_ch, &cancel).await;
        assert!(matches!(
            h,
            Err(SessionError::Handshake(HandshakeError::Frame(
                FrameError::TooLarge { .. }
            )))
        ));
        let mut client = Framed::new(&mut b, LinkCodec::new());
        let reject = client.next().await.unwrap().unwrap();
        assert!(matches!(reject, Frame::Reject(r) if r.code == ReasonCode::FrameTooLarge));
    }

    #[tokio::test(start_paused = true)]
    async fn oversized_frame_from_the_edge_is_an_error_on_the_hub() {
        let (a, b) = duplex(16 * 1024);
        let hub_cfg = hub_cfg();
        let (mut hub_ch, _hub_tx, mut hub_rx) = SessionChannels::bounded(4);
        let cancel = CancellationToken::new();
        let edge = async {
            let mut link = Framed::new(b, LinkCodec::new());
            let (hello, state) = EdgeHandshake::start(&EdgeHandshakeConfig {
                max_frame_size: MIN_FRAME_SIZE,
                ..EdgeHandshakeConfig::new("robot-7", Token::new("secret-7"))
            });
            link.send(hello).await.unwrap();
            let params = state
                .on_frame(Ok(link.next().await.unwrap().unwrap()))
                .unwrap();
            assert_eq!(params.limits.max_frame_size, MIN_FRAME_SIZE);
            // Bypass our own send limit: a frame the hub never agreed to.
            let big = crate::link::frame::FrameLimits {
                max_frame_size: 1 << 20,
            };
            link.codec_mut().set_limits(params.limits, big);
            link.send(data(MIN_FRAME_SIZE as usize)).await.unwrap();
            link
        };
        let (h, mut edge) = tokio::join!(run_hub_session(a, &hub_cfg, &mut hub_ch, &cancel), edge);
        assert!(matches!(
            h,
            Err(SessionError::Frame(FrameError::TooLarge { .. }))
        ));
        assert!(matches!(
            hub_rx.recv().await,
            Some(SessionEvent::Established(_))
        ));
        assert!(hub_rx.try_recv().is_err());
        let close = edge.next().await.unwrap().unwrap();
        assert!(matches!(close, Frame::Close(r) if r.code == ReasonCode::FrameTooLarge));
    }
}
