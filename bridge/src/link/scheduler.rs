//! The send scheduler: decides which frame goes on the link next.
//!
//! - Control frames (ACK, ANNOUNCE, HEARTBEAT, ...) go first, in FIFO order.
//! - Then DATA by priority (0 = most urgent): the lowest non-empty priority always wins.
//! - Within a priority, routes take turns **one chunk at a time** (round robin), so a small
//!   message never waits for more than the chunk being written.
//! - Within a route, frames leave in the order pushed (sequence and chunk order are kept).
//!
//! Memory is bounded by `max_bytes` of queued DATA (frame sizes). A message is accepted whole or
//! not at all: it is accepted if it fits, or if nothing is queued (so one message larger than the
//! budget still goes, alone). Otherwise a best-effort message is dropped and counted
//! ([`Pushed::Dropped`]), and a reliable one is refused with [`SchedulerError::Full`]: it stays in
//! its [`Outbox`](super::reliable::Outbox) and the caller pushes it when
//! [`Scheduler::would_fit`] says so.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::frame::{Data, Frame, RouteId, DATA_HEADER_LEN};

/// Default budget of queued DATA bytes, 8 MiB.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;
/// Default maximum of queued control frames.
pub const DEFAULT_MAX_CONTROL_FRAMES: usize = 4096;

/// Scheduler bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerLimits {
    /// Queued DATA bytes (sum of frame sizes).
    pub max_bytes: usize,
    /// Queued control frames.
    pub max_control: usize,
}

impl Default for SchedulerLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_control: DEFAULT_MAX_CONTROL_FRAMES,
        }
    }
}

/// How a route's messages are treated when the scheduler is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Dropped (and counted) when they do not fit.
    BestEffort,
    /// Refused with [`SchedulerError::Full`] (backpressure) when they do not fit.
    Reliable,
}

/// What happened to a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Best effort and no room: dropped, counted in [`Scheduler::dropped_messages`].
    Dropped,
}

/// Scheduler errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// No room for a reliable message now; retry when [`Scheduler::would_fit`].
    #[error("send queue full: {need} bytes for {route}, {queued} of {max} queued")]
    Full {
        /// The route.
        route: RouteId,
        /// The message's bytes.
        need: usize,
        /// Queued bytes.
        queued: usize,
        /// The budget.
        max: usize,
    },
    /// Too many control frames queued (the peer is not reading).
    #[error("control queue full ({0} frames)")]
    ControlFull(usize),
    /// A control frame pushed as data or a DATA frame of another route.
    #[error("frame does not belong to {0}'s data queue")]
    NotData(RouteId),
}

#[derive(Debug)]
struct RouteQueue {
    priority: u8,
    frames: VecDeque<Data>,
}

/// Per-priority, per-route, chunk-interleaving send queue.
#[derive(Debug)]
pub struct Scheduler {
    limits: SchedulerLimits,
    control: VecDeque<Frame>,
    routes: HashMap<RouteId, RouteQueue>,
    rings: BTreeMap<u8, VecDeque<RouteId>>,
    bytes: usize,
    dropped_messages: u64,
    dropped_bytes: u64,
}

fn data_size(d: &Data) -> usize {
    1 + DATA_HEADER_LEN + d.payload.len()
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(limits: SchedulerLimits) -> Self {
        Self {
            limits,
            control: VecDeque::new(),
            routes: HashMap::new(),
            rings: BTreeMap::new(),
            bytes: 0,
            dropped_messages: 0,
            dropped_bytes: 0,
        }
    }

    /// Queued DATA bytes.
    pub fn queued_bytes(&self) -> usize {
        self.bytes
    }

    /// Best-effort messages dropped for lack of room (or by [`Scheduler::remove_route`] /
    /// [`Scheduler::clear`]).
    pub fn dropped_messages(&self) -> u64 {
        self.dropped_messages
    }

    /// Bytes of those messages.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.control.is_empty() && self.routes.is_empty()
    }

    /// Whether a message of `bytes` (frame sizes) would be accepted now.
    pub fn would_fit(&self, bytes: usize) -> bool {
        self.routes.is_empty() || self.bytes.saturating_add(bytes) <= self.limits.max_bytes
    }

    /// Queues a control frame, sent before any DATA.
    pub fn push_control(&mut self, frame: Frame) -> Result<(), SchedulerError> {
        if self.control.len() >= self.limits.max_control {
            return Err(SchedulerError::ControlFull(self.control.len()));
        }
        self.control.push_back(frame);
        Ok(())
    }

    /// Queues all chunks of one message of `route`. A route keeps the priority it was queued
    /// with while it has frames queued (so its order is kept); `priority` applies from the next
    /// time its queue is empty.
    pub fn push(
        &mut self,
        route: RouteId,
        priority: u8,
        delivery: Delivery,
        chunks: Vec<Data>,
    ) -> Result<Pushed, SchedulerError> {
        if chunks.iter().any(|d| d.route != route) {
            return Err(SchedulerError::NotData(route));
        }
        if chunks.is_empty() {
            return Ok(Pushed::Queued);
        }
        let need: usize = chunks.iter().map(data_size).sum();
        if !self.would_fit(need) {
            return match delivery {
                Delivery::BestEffort => {
                    self.dropped_messages += 1;
                    self.dropped_bytes += need as u64;
                    Ok(Pushed::Dropped)
                }
                Delivery::Reliable => Err(SchedulerError::Full {
                    route,
                    need,
                    queued: self.bytes,
                    max: self.limits.max_bytes,
                }),
            };
        }
        self.bytes += need;
        let q = self.routes.entry(route).or_insert_with(|| {
            self.rings.entry(priority).or_default().push_back(route);
            RouteQueue {
                priority,
                frames: VecDeque::new(),
            }
        });
        q.frames.extend(chunks);
        Ok(Pushed::Queued)
    }

    /// Drops a route's queued frames (on withdraw); returns how many messages were dropped
    /// (counted as dropped). A partly sent message is dropped too: the receiver's reassembler
    /// abandons it.
    pub fn remove_route(&mut self, route: RouteId) -> usize {
        let Some(q) = self.routes.remove(&route) else {
            return 0;
        };
        if let Some(ring) = self.rings.get_mut(&q.priority) {
            ring.retain(|r| *r != route);
            if ring.is_empty() {
                self.rings.remove(&q.priority);
            }
        }
        let bytes: usize = q.frames.iter().map(data_size).sum();
        let messages = q.frames.iter().filter(|d| d.index == 0).count();
        self.bytes -= bytes;
        self.dropped_messages += messages as u64;
        self.dropped_bytes += bytes as u64;
        messages
    }

    /// Drops everything (on disconnect). Reliable messages are resent from their outboxes.
    pub fn clear(&mut self) {
        let routes: Vec<RouteId> = self.routes.keys().copied().collect();
        for r in routes {
            self.remove_route(r);
        }
        self.control.clear();
    }
}

/// `next()` is the next frame to write (`None`: nothing queued; more may come later).
impl Iterator for Scheduler {
    type Item = Frame;

    /// The next frame to write, or `None` if nothing is queued.
    fn next(&mut self) -> Option<Frame> {
        if let Some(f) = self.control.pop_front() {
            return Some(f);
        }
        loop {
            let mut ring = self.rings.first_entry()?;
            let Some(route) = ring.get_mut().pop_front() else {
                ring.remove();
                continue;
            };
            let Some(q) = self.routes.get_mut(&route) else {
                continue;
            };
            let Some(d) = q.frames.pop_front() else {
                self.routes.remove(&route);
                continue;
            };
            if q.frames.is_empty() {
                self.routes.remove(&route);
            } else {
                ring.get_mut().push_back(route);
            }
            if ring.get().is_empty() {
                ring.remove();
            }
            self.bytes -= data_size(&d);
            return Some(Frame::Data(d));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::chunk::Chunker;
    use crate::link::frame::Ack;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn message(route: u32, seq: u64, len: usize, chunk: usize) -> Vec<Data> {
        Chunker::new(chunk)
            .unwrap()
            .split(RouteId(route), seq, 0, Bytes::from(vec![route as u8; len]))
            .unwrap()
    }

    fn data(f: Option<Frame>) -> Data {
        match f {
            Some(Frame::Data(d)) => d,
            other => panic!("expected DATA, got {other:?}"),
        }
    }

    #[test]
    fn control_first_then_priority_then_round_robin() {
        let mut s = Scheduler::new(SchedulerLimits::default());
        s.push(RouteId(1), 5, Delivery::Reliable, message(1, 1, 30, 10))
            .unwrap();
        s.push(RouteId(2), 5, Delivery::Reliable, message(2, 1, 20, 10))
            .unwrap();
        s.push(RouteId(3), 0, Delivery::BestEffort, message(3, 1, 5, 10))
            .unwrap();
        s.push_control(Frame::Ack(Ack {
            route: RouteId(9),
            seq: 1,
        }))
        .unwrap();
        assert!(matches!(s.next(), Some(Frame::Ack(_))));
        assert_eq!(data(s.next()).route, RouteId(3));
        let order: Vec<(u32, u32)> = std::iter::from_fn(|| s.next())
            .map(|f| {
                let d = data(Some(f));
                (d.route.0, d.index)
            })
            .collect();
        assert_eq!(order, vec![(1, 0), (2, 0), (1, 1), (2, 1), (1, 2)]);
        assert!(s.is_empty());
        assert_eq!(s.queued_bytes(), 0);
    }

    #[test]
    fn bounded_best_effort_drops_reliable_refuses() {
        let limits = SchedulerLimits {
            max_bytes: 100,
            max_control: 1,
        };
        let mut s = Scheduler::new(limits);
        // Empty: a message larger than the budget still goes.
        assert_eq!(
            s.push(RouteId(1), 1, Delivery::Reliable, message(1, 1, 150, 50)),
            Ok(Pushed::Queued)
        );
        assert_eq!(
            s.push(RouteId(2), 1, Delivery::BestEffort, message(2, 1, 10, 50)),
            Ok(Pushed::Dropped)
        );
        assert_eq!(s.dropped_messages(), 1);
        assert_eq!(s.dropped_bytes(), 32);
        assert!(matches!(
            s.push(RouteId(1), 1, Delivery::Reliable, message(1, 2, 10, 50)),
            Err(SchedulerError::Full { need: 32, .. })
        ));
        s.push_control(Frame::Heartbeat).unwrap();
        assert_eq!(
            s.push_control(Frame::Heartbeat),
            Err(SchedulerError::ControlFull(1))
        );
        assert!(matches!(
            s.push(RouteId(2), 1, Delivery::Reliable, message(1, 2, 10, 50)),
            Err(SchedulerError::NotData(_))
        ));
        assert_eq!(s.remove_route(RouteId(1)), 1);
        assert_eq!(s.queued_bytes(), 0);
        s.clear();
        assert!(s.is_empty());
        assert!(s.next().is_none());
    }

    proptest! {
        #[test]
        fn urgent_message_overtakes_within_two_frames(
            n in 1usize..40,
            sent_before in 0usize..40,
            others in 0u32..4,
        ) {
            let mut s = Scheduler::new(SchedulerLimits::default());
            s.push(RouteId(100), 5, Delivery::Reliable, message(100, 1, n * 8, 8)).unwrap();
            for r in 0..others {
                s.push(RouteId(200 + r), 5, Delivery::BestEffort, message(200 + r, 1, 64, 8)).unwrap();
            }
            for _ in 0..sent_before.min(n) {
                s.next();
            }
            s.push(RouteId(1), 0, Delivery::BestEffort, message(1, 1, 8, 8)).unwrap();
            let first_two: Vec<RouteId> = (0..2).filter_map(|_| s.next()).map(|f| data(Some(f)).route).collect();
            prop_assert!(first_two.contains(&RouteId(1)));
        }

        #[test]
        fn per_route_order_is_kept_and_bytes_balance(
            pushes in proptest::collection::vec((0u32..4, 0u8..3, 0usize..50), 0..40),
            pops in proptest::collection::vec(0usize..5, 0..40),
        ) {
            let mut s = Scheduler::new(SchedulerLimits { max_bytes: 400, max_control: 10 });
            let mut seqs = [0u64; 4];
            let mut last: HashMap<RouteId, (u64, u32)> = HashMap::new();
            let mut check = |f: Frame| -> Result<(), TestCaseError> {
                let d = data(Some(f));
                if let Some(prev) = last.insert(d.route, (d.seq, d.index)) {
                    prop_assert!((d.seq, d.index) > prev);
                }
                Ok(())
            };
            for (i, (route, prio, len)) in pushes.into_iter().enumerate() {
                seqs[route as usize] += 1;
                let _ = s.push(RouteId(route), prio, Delivery::BestEffort, message(route, seqs[route as usize], len, 16));
                for _ in 0..pops.get(i).copied().unwrap_or(0) {
                    if let Some(f) = s.next() { check(f)?; }
                }
            }
            for f in s.by_ref() { check(f)?; }
            prop_assert_eq!(s.queued_bytes(), 0);
        }
    }
}
