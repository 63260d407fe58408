//! One link session between an edge and a hub, on top of [`crate::link`].
//!
//! - [`handshake`]: HELLO / WELCOME / REJECT as pure, I/O-free state machines for both sides,
//!   and the hub's [`handshake::TokenTable`] (token -> namespace).
//! - [`driver`]: [`driver::run_edge_session`] and [`driver::run_hub_session`] over any
//!   `AsyncRead + AsyncWrite` (TCP, TLS, `tokio::io::duplex` in tests): handshake timeout,
//!   heartbeats, dead-peer detection, [`CancellationToken`](tokio_util::sync::CancellationToken)
//!   shutdown, and bounded channels carrying the other frames to and from the caller.
//!
//! Not here yet: DDS, TLS, routes (announce/outbox/reassembly state), reconnect back-off, and
//! the hub's one-session-per-robot rule (`duplicate_session`), which needs state across
//! connections.

pub mod driver;
pub mod handshake;

pub use driver::{
    new_session_id, run_edge_session, run_hub_session, EdgeConfig, HubConfig, SessionChannels,
    SessionEnd, SessionError, SessionEvent,
};
pub use handshake::{
    EdgeHandshake, EdgeHandshakeConfig, Grant, HandshakeError, HubHandshake, HubHandshakeConfig,
    SessionParams, TokenTable, TokenTableError,
};
