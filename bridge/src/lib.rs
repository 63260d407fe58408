//! The bridge: relays chosen ROS 2 topics between a robot (edge) and a cloud hub over one link.
//!
//! # Layout
//!
//! - [`link`]: the link protocol as pure building blocks (frames, codec, chunking, the send
//!   scheduler, reliable delivery, compression); specified in `docs/link-protocol.md`.
//! - [`session`]: one link session on top of [`link`]: the handshake as pure state machines and
//!   the async driver (handshake timeout, heartbeats, liveness, shutdown, frames to and from the
//!   caller over bounded channels); no DDS, no TLS.
//!
//! The binary's edge and hub modes (TCP/TLS, DDS, routes, reconnects) come on top of these.
#![forbid(unsafe_code)]

pub mod link;
pub mod session;
