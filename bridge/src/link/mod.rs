//! The link protocol: pure, I/O-free building blocks (see `docs/link-protocol.md`).
//!
//! - [`frame`]: the wire format, limits, the handshake bodies.
//! - [`codec`]: [`codec::LinkCodec`] for `tokio_util::codec::Framed`.
//! - [`chunk`]: messages -> DATA chunks ([`chunk::Chunker`]) and back ([`chunk::Reassembler`]).
//! - [`scheduler`]: the send [`scheduler::Scheduler`]: priorities, round robin, chunk interleaving.
//! - [`reliable`]: [`reliable::Outbox`] (sender) and [`reliable::Inbox`] (receiver): sequences,
//!   acks, resend, dedup.
//! - [`compress`]: per-route zstd with a decompression cap.

pub mod chunk;
pub mod codec;
pub mod compress;
pub mod frame;
pub mod reliable;
pub mod scheduler;
