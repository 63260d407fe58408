//! How a route is carried: from the operator's per-topic settings and the publisher's QoS.

use std::collections::HashMap;

use ros2::dds::{Durability, Endpoint, History, Qos, Reliability};

use crate::config::TopicSettings;
use crate::link::frame::{self, Compression, RouteQos};
use crate::link::reliable::{OutboxLimits, DEFAULT_OUTBOX_BYTES, DEFAULT_OUTBOX_MESSAGES};
use crate::relay::RouteSettings;

/// Priority of a route without settings (0 = most urgent, 7 = bulk).
pub const DEFAULT_PRIORITY: u8 = 4;
/// History depth of a route without settings.
pub const DEFAULT_DEPTH: u32 = 10;

/// The settings of a route whose local DDS reader has `qos`.
pub fn route_settings(s: Option<&TopicSettings>, qos: &Qos) -> RouteSettings {
    let reliable = s
        .and_then(|s| s.reliable)
        .unwrap_or(qos.reliability == Reliability::Reliable);
    RouteSettings {
        priority: s
            .and_then(|s| s.priority)
            .unwrap_or(DEFAULT_PRIORITY)
            .min(7),
        reliable,
        store_forward: reliable && s.and_then(|s| s.store_forward).unwrap_or(false),
        compression: s.and_then(|s| s.compression).unwrap_or(Compression::None),
        max_rate_hz: s.and_then(|s| s.max_rate_hz),
        depth: s.and_then(|s| s.depth).unwrap_or(DEFAULT_DEPTH).max(1),
        outbox: OutboxLimits {
            max_messages: s
                .and_then(|s| s.outbox_messages)
                .unwrap_or(DEFAULT_OUTBOX_MESSAGES),
            max_bytes: s
                .and_then(|s| s.outbox_bytes)
                .unwrap_or(DEFAULT_OUTBOX_BYTES),
        },
        latched: qos.durability == Durability::TransientLocal,
    }
}

/// The QoS of the bridge's reader of a topic, so that it matches every known publisher:
/// reliable only if all are, transient local only if all are; a deep history (the bridge's
/// reader is drained at once, the depth only absorbs bursts).
pub fn reader_qos(writers: Option<&HashMap<[u8; 16], Endpoint>>) -> Qos {
    let all =
        |f: &dyn Fn(&Endpoint) -> bool| writers.is_some_and(|w| !w.is_empty() && w.values().all(f));
    let reliable = all(&|e| e.qos.reliability == Reliability::Reliable);
    let latched = all(&|e| e.qos.durability == Durability::TransientLocal);
    Qos::ros_default()
        .with_reliability(if reliable {
            Reliability::Reliable
        } else {
            Reliability::BestEffort
        })
        .with_durability(if latched {
            Durability::TransientLocal
        } else {
            Durability::Volatile
        })
        .with_history(History::KeepLast(if reliable { 1000 } else { 100 }))
}

/// The QoS announced for the far side's endpoint.
pub fn far_qos(qos: &Qos, depth: u32) -> RouteQos {
    RouteQos {
        reliability: match qos.reliability {
            Reliability::Reliable => frame::Reliability::Reliable,
            Reliability::BestEffort => frame::Reliability::BestEffort,
        },
        durability: match qos.durability {
            Durability::TransientLocal => frame::Durability::TransientLocal,
            Durability::Volatile => frame::Durability::Volatile,
        },
        depth,
    }
}

/// The DDS QoS of the writer that republishes a route.
pub fn writer_qos(q: &RouteQos) -> Qos {
    Qos::ros_default()
        .with_reliability(match q.reliability {
            frame::Reliability::Reliable => Reliability::Reliable,
            frame::Reliability::BestEffort => Reliability::BestEffort,
        })
        .with_durability(match q.durability {
            frame::Durability::TransientLocal => Durability::TransientLocal,
            frame::Durability::Volatile => Durability::Volatile,
        })
        .with_history(History::KeepLast(q.depth.clamp(1, 10_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_publisher() {
        let s = route_settings(None, &Qos::latched());
        assert!(s.reliable && s.latched && !s.store_forward);
        assert_eq!(s.priority, DEFAULT_PRIORITY);
        let s = route_settings(None, &Qos::sensor_data());
        assert!(!s.reliable && !s.latched);
        let q = far_qos(&Qos::latched(), 3);
        assert_eq!(
            writer_qos(&q),
            Qos::latched().with_history(History::KeepLast(3))
        );
    }
}
