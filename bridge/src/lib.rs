//! The bridge: relays chosen ROS 2 topics between a robot (edge) and a cloud hub over one link.
//!
//! # Layout
//!
//! - [`link`]: the link protocol as pure building blocks (frames, codec, chunking, the send
//!   scheduler, reliable delivery, compression); specified in `docs/link-protocol.md`.
//! - [`session`]: one link session on top of [`link`]: the handshake as pure state machines and
//!   the async driver (handshake timeout, heartbeats, liveness, shutdown, frames to and from the
//!   caller over bounded channels); no DDS, no TLS.
//! - [`config`]: the edge and hub configuration files, validated up front.
//! - [`filter`]: allow/deny rules over ROS names (exact names or regexes).
//! - [`transport`]: TCP and TLS (rustls) connections, DNS resolution on every attempt, back-off.
//! - [`service`]: ROS 2 service relay: request identity mapping and timeouts (pure);
//!   [`service_route`]: its DDS side (the served service, the stand-in server).
//! - [`metrics`], [`http`]: Prometheus metrics, `/healthz`, `/readyz`, `/status`.
//! - [`relay`]: one link's routes both ways across sessions ([`relay::LinkActor`]): outboxes,
//!   latched caches, inboxes, the send scheduler, acks and resume.
//! - [`reader`]: DDS readers feeding links (loop rule: never relay a bridge's own samples).
//! - [`routing`]: route settings from config and the publisher's QoS.
//! - [`edge`], [`hub`]: the two modes (discovery-driven routes, connectors, the acceptor);
//!   [`app`]: the binary's runtime (config, HTTP, signals, drain).
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod edge;
pub mod filter;
pub mod http;
pub mod hub;
pub mod link;
pub mod metrics;
pub mod reader;
pub mod relay;
pub mod routing;
pub mod service;
pub mod service_route;
pub mod session;
pub mod transport;
