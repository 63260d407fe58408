//! The bridge: relays chosen ROS 2 topics between a robot (edge) and a cloud hub over one link.
//!
//! # Layout
//!
//! - [`link`]: the link protocol as pure building blocks (frames, codec, chunking, the send
//!   scheduler, reliable delivery, compression); specified in `docs/link-protocol.md`.
//!
//! The edge and hub I/O loops and the binary's modes come on top of these.
#![forbid(unsafe_code)]

pub mod link;
