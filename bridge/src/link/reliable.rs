//! Sequences, acknowledgements, resend and dedup: [`Outbox`] on the sender, [`Inbox`] on the
//! receiver, one of each per route.
//!
//! The resume rule after a reconnect (see `docs/link-protocol.md`, "Exactly once"):
//! 1. the sender ANNOUNCEs the route with its `stream` (its outbox's incarnation);
//! 2. the receiver answers with an ACK carrying [`Inbox::on_announce`]: its last delivered
//!    sequence of that stream (0 if the stream is new to it);
//! 3. the sender calls [`Outbox::resume`] with it and sends exactly what is returned, in order,
//!    then continues with [`Outbox::next_unsent`].
//!
//! The receiver delivers a sequence only if it is above the last delivered one, so even a sender
//! that resends too much (it did not wait for step 2) causes no duplicate.

use std::collections::VecDeque;

use bytes::Bytes;

/// Default maximum of unacknowledged messages per route.
pub const DEFAULT_OUTBOX_MESSAGES: usize = 1000;
/// Default maximum of unacknowledged bytes per route, 16 MiB.
pub const DEFAULT_OUTBOX_BYTES: usize = 16 * 1024 * 1024;

/// Reliable-delivery protocol errors (the peer broke a rule; close with `Malformed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReliableError {
    /// An ACK for a sequence never assigned.
    #[error("ack of seq {ack} but only {assigned} were sent")]
    AckAhead {
        /// The acknowledged sequence.
        ack: u64,
        /// The highest assigned sequence.
        assigned: u64,
    },
    /// A DATA sequence of 0 (sequences start at 1).
    #[error("sequence 0 is not valid")]
    ZeroSequence,
}

/// Outbox bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Unacknowledged messages kept.
    pub max_messages: usize,
    /// Unacknowledged payload bytes kept (a single larger message is kept alone).
    pub max_bytes: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self {
            max_messages: DEFAULT_OUTBOX_MESSAGES,
            max_bytes: DEFAULT_OUTBOX_BYTES,
        }
    }
}

/// A message waiting to be sent or acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its sequence number.
    pub seq: u64,
    /// Its payload (as given to [`Outbox::push`], e.g. already compressed).
    pub payload: Bytes,
    /// Its DATA flags (e.g. [`FLAG_COMPRESSED`](super::frame::FLAG_COMPRESSED)).
    pub flags: u8,
}

/// The sender's side of a reliable route: assigns sequences, keeps what is not acknowledged.
#[derive(Debug)]
pub struct Outbox {
    limits: OutboxLimits,
    stream: u64,
    assigned: u64,
    acked: u64,
    unacked: VecDeque<Outgoing>,
    /// Index in `unacked` of the first message not yet handed out for sending.
    cursor: usize,
    bytes: usize,
    dropped: u64,
    dropped_bytes: u64,
}

impl Outbox {
    /// An empty outbox; `stream` identifies this incarnation (e.g. random or a boot time), so a
    /// receiver can tell that sequences restarted.
    pub fn new(stream: u64, limits: OutboxLimits) -> Self {
        Self {
            limits,
            stream,
            assigned: 0,
            acked: 0,
            unacked: VecDeque::new(),
            cursor: 0,
            bytes: 0,
            dropped: 0,
            dropped_bytes: 0,
        }
    }

    /// The stream incarnation to put in ANNOUNCE.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// Messages dropped (oldest first) to stay within the limits.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes of those messages.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }

    /// Messages held (sent or not, unacknowledged).
    pub fn len(&self) -> usize {
        self.unacked.len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.unacked.is_empty()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Highest sequence acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Highest sequence assigned.
    pub fn assigned(&self) -> u64 {
        self.assigned
    }

    fn pop_oldest(&mut self) {
        if let Some(m) = self.unacked.pop_front() {
            self.bytes -= m.payload.len();
            self.cursor = self.cursor.saturating_sub(1);
            self.dropped += 1;
            self.dropped_bytes += m.payload.len() as u64;
        }
    }

    /// Assigns the next sequence to `payload` and keeps it until acknowledged, dropping the
    /// oldest messages (counted) if the limits require. Returns the sequence.
    pub fn push(&mut self, payload: Bytes) -> u64 {
        self.push_with_flags(payload, 0)
    }

    /// [`push`](Self::push) with the DATA flags the message is sent with.
    pub fn push_with_flags(&mut self, payload: Bytes, flags: u8) -> u64 {
        self.assigned += 1;
        while !self.unacked.is_empty()
            && (self.unacked.len() >= self.limits.max_messages.max(1)
                || self.bytes + payload.len() > self.limits.max_bytes)
        {
            self.pop_oldest();
        }
        self.bytes += payload.len();
        self.unacked.push_back(Outgoing {
            seq: self.assigned,
            payload,
            flags,
        });
        self.assigned
    }

    /// The next message never handed out in this session, in sequence order.
    pub fn next_unsent(&mut self) -> Option<Outgoing> {
        let m = self.unacked.get(self.cursor)?.clone();
        self.cursor += 1;
        Some(m)
    }

    /// The next message never handed out in this session, without handing it out (see
    /// [`advance`](Self::advance)): for a sender that may not have room to send it now.
    pub fn peek_unsent(&self) -> Option<&Outgoing> {
        self.unacked.get(self.cursor)
    }

    /// Marks the message [`peek_unsent`](Self::peek_unsent) returned as handed out.
    pub fn advance(&mut self) {
        if self.cursor < self.unacked.len() {
            self.cursor += 1;
        }
    }

    /// Marks every unacknowledged message as not yet sent (after a reconnect, once the resume
    /// point was applied with [`ack`](Self::ack)).
    pub fn rewind(&mut self) {
        self.cursor = 0;
    }

    /// Messages held and not yet handed out in this session.
    pub fn unsent(&self) -> usize {
        self.unacked.len() - self.cursor
    }

    /// Releases everything up to `cumulative`. A stale ACK (at or below the last) is ignored;
    /// one above the highest assigned sequence is an error. Returns how many were released.
    pub fn ack(&mut self, cumulative: u64) -> Result<usize, ReliableError> {
        if cumulative > self.assigned {
            return Err(ReliableError::AckAhead {
                ack: cumulative,
                assigned: self.assigned,
            });
        }
        if cumulative <= self.acked {
            return Ok(0);
        }
        self.acked = cumulative;
        let mut released = 0;
        while self.unacked.front().is_some_and(|m| m.seq <= cumulative) {
            if let Some(m) = self.unacked.pop_front() {
                self.bytes -= m.payload.len();
                released += 1;
            }
        }
        self.cursor = self.cursor.saturating_sub(released);
        Ok(released)
    }

    /// Every unacknowledged message, in order, marked as sent (after a reconnect).
    pub fn resend_all(&mut self) -> Vec<Outgoing> {
        self.cursor = self.unacked.len();
        self.unacked.iter().cloned().collect()
    }

    /// After a reconnect: applies the receiver's resume point (its ACK answering ANNOUNCE) and
    /// returns what it is missing, in order.
    pub fn resume(&mut self, receiver_last: u64) -> Result<Vec<Outgoing>, ReliableError> {
        self.ack(receiver_last)?;
        Ok(self.resend_all())
    }
}

/// What [`Inbox::accept`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// New: deliver it. `gap` sequences before it never arrived (dropped by the sender, or lost
    /// on a best-effort route).
    Deliver {
        /// Missing sequences before this one.
        gap: u64,
    },
    /// At or below the last delivered sequence: drop it.
    Duplicate,
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

/// The receiver's side of a route: delivers each sequence at most once, in increasing order.
#[derive(Debug)]
pub struct Inbox {
    stream: Option<u64>,
    last: u64,
    fresh: bool,
    delivered: u64,
    duplicates: u64,
    lost: u64,
}

impl Inbox {
    /// An inbox that has seen no stream yet.
    pub fn new() -> Self {
        Self {
            stream: None,
            last: 0,
            fresh: true,
            delivered: 0,
            duplicates: 0,
            lost: 0,
        }
    }

    /// On ANNOUNCE: returns the resume point to ACK (the last delivered sequence of `stream`).
    /// A different stream means the sender restarted: the inbox starts over.
    pub fn on_announce(&mut self, stream: u64) -> u64 {
        if self.stream != Some(stream) {
            self.stream = Some(stream);
            self.last = 0;
            self.fresh = true;
        }
        self.last
    }

    /// Decides about a complete message with sequence `seq`.
    pub fn accept(&mut self, seq: u64) -> Result<Accept, ReliableError> {
        if seq == 0 {
            return Err(ReliableError::ZeroSequence);
        }
        if seq <= self.last {
            self.duplicates += 1;
            return Ok(Accept::Duplicate);
        }
        // The first message of a stream new to us may start anywhere (earlier ones were acked
        // to a previous incarnation of this receiver, or dropped before it existed).
        let gap = if self.fresh { 0 } else { seq - self.last - 1 };
        self.fresh = false;
        self.last = seq;
        self.lost += gap;
        self.delivered += 1;
        Ok(Accept::Deliver { gap })
    }

    /// The last delivered sequence: the value for ACK frames.
    pub fn last_delivered(&self) -> u64 {
        self.last
    }

    /// Messages delivered.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Duplicates dropped.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Sequences skipped (sum of gaps).
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(n: u64) -> Bytes {
        Bytes::from(n.to_be_bytes().to_vec())
    }

    #[test]
    fn outbox_sequences_acks_and_resend() {
        let mut o = Outbox::new(7, OutboxLimits::default());
        assert_eq!((o.push(b(1)), o.push(b(2)), o.push(b(3))), (1, 2, 3));
        assert_eq!(o.next_unsent().unwrap().seq, 1);
        assert_eq!(o.next_unsent().unwrap().seq, 2);
        assert_eq!(o.ack(1), Ok(1));
        assert_eq!(o.ack(1), Ok(0));
        assert_eq!(o.next_unsent().unwrap().seq, 3);
        assert!(o.next_unsent().is_none());
        assert_eq!(
            o.ack(9),
            Err(ReliableError::AckAhead {
                ack: 9,
                assigned: 3
            })
        );
        let again: Vec<u64> = o.resume(2).unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(again, vec![3]);
        assert!(o.next_unsent().is_none());
        assert_eq!((o.len(), o.bytes(), o.acked(), o.assigned()), (1, 8, 2, 3));
    }

    #[test]
    fn outbox_is_bounded_and_counts_drops() {
        let mut o = Outbox::new(
            1,
            OutboxLimits {
                max_messages: 3,
                max_bytes: 20,
            },
        );
        for i in 1..=5 {
            o.push(b(i));
        }
        assert_eq!((o.len(), o.dropped()), (2, 3)); // 8-byte payloads, 20-byte budget
        assert_eq!(o.next_unsent().unwrap().seq, 4);
        o.push(Bytes::from(vec![0u8; 50])); // larger than the budget: kept alone
        assert_eq!((o.len(), o.dropped(), o.dropped_bytes()), (1, 5, 40));
        assert_eq!(o.next_unsent().unwrap().seq, 6);
    }

    #[test]
    fn inbox_dedups_reports_gaps_and_resets_on_new_stream() {
        let mut i = Inbox::new();
        assert_eq!(i.on_announce(5), 0);
        assert_eq!(i.accept(3), Ok(Accept::Deliver { gap: 0 }));
        assert_eq!(i.accept(4), Ok(Accept::Deliver { gap: 0 }));
        assert_eq!(i.accept(7), Ok(Accept::Deliver { gap: 2 }));
        assert_eq!(i.accept(7), Ok(Accept::Duplicate));
        assert_eq!(i.accept(0), Err(ReliableError::ZeroSequence));
        assert_eq!(i.on_announce(5), 7);
        assert_eq!(i.on_announce(6), 0);
        assert_eq!(i.accept(1), Ok(Accept::Deliver { gap: 0 }));
        assert_eq!(
            (i.delivered(), i.duplicates(), i.lost(), i.last_delivered()),
            (4, 1, 2, 1)
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Publish,
        Send,
        Deliver,
        AckBack,
        Cut,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Publish),
            3 => Just(Op::Send),
            3 => Just(Op::Deliver),
            2 => Just(Op::AckBack),
            1 => Just(Op::Cut),
        ]
    }

    /// Sender and receiver over a link that loses everything in flight when cut.
    fn simulate(
        ops: &[Op],
        limits: OutboxLimits,
        wait_for_resume: bool,
    ) -> (Vec<u64>, u64, Outbox) {
        let mut out = Outbox::new(99, limits);
        let mut inbox = Inbox::new();
        let mut published = 0u64;
        let mut got = Vec::new();
        let mut data_wire: VecDeque<Outgoing> = VecDeque::new();
        let mut ack_wire: VecDeque<u64> = VecDeque::new();
        let reconnect =
            |out: &mut Outbox, inbox: &mut Inbox, data_wire: &mut VecDeque<Outgoing>| {
                let resume = inbox.on_announce(out.stream());
                let missing = if wait_for_resume {
                    out.resume(resume).unwrap()
                } else {
                    out.resend_all()
                };
                data_wire.extend(missing);
            };
        reconnect(&mut out, &mut inbox, &mut data_wire);
        let mut deliver = |m: Outgoing, inbox: &mut Inbox, ack_wire: &mut VecDeque<u64>| {
            if let Accept::Deliver { .. } = inbox.accept(m.seq).unwrap() {
                got.push(u64::from_be_bytes(m.payload[..].try_into().unwrap()));
            }
            ack_wire.push_back(inbox.last_delivered());
        };
        for op in ops {
            match op {
                Op::Publish => {
                    published += 1;
                    out.push(b(published));
                }
                Op::Send => data_wire.extend(out.next_unsent()),
                Op::Deliver => {
                    if let Some(m) = data_wire.pop_front() {
                        deliver(m, &mut inbox, &mut ack_wire);
                    }
                }
                Op::AckBack => {
                    if let Some(a) = ack_wire.pop_front() {
                        out.ack(a).unwrap();
                    }
                }
                Op::Cut => {
                    data_wire.clear();
                    ack_wire.clear();
                    reconnect(&mut out, &mut inbox, &mut data_wire);
                }
            }
        }
        // Final healthy session: everything drains.
        data_wire.clear();
        ack_wire.clear();
        reconnect(&mut out, &mut inbox, &mut data_wire);
        while let Some(m) = out.next_unsent() {
            data_wire.push_back(m);
        }
        while let Some(m) = data_wire.pop_front() {
            deliver(m, &mut inbox, &mut ack_wire);
        }
        while let Some(a) = ack_wire.pop_front() {
            out.ack(a).unwrap();
        }
        (got, published, out)
    }

    proptest! {
        #[test]
        fn exactly_once_in_order_across_cuts(ops in proptest::collection::vec(op(), 0..300), wait in any::<bool>()) {
            let (got, published, out) = simulate(&ops, OutboxLimits::default(), wait);
            prop_assert_eq!(got, (1..=published).collect::<Vec<_>>());
            prop_assert!(out.is_empty());
            prop_assert_eq!(out.dropped(), 0);
        }

        #[test]
        fn bounded_outbox_loses_only_what_it_counts(ops in proptest::collection::vec(op(), 0..300), max in 1usize..6) {
            let limits = OutboxLimits { max_messages: max, max_bytes: 8 * 4 };
            let (got, published, out) = simulate(&ops, limits, true);
            prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, no duplicates");
            prop_assert!(got.iter().all(|s| *s >= 1 && *s <= published));
            prop_assert!(published - got.len() as u64 <= out.dropped());
            prop_assert!(out.len() <= max.min(4));
            prop_assert!(out.is_empty());
        }
    }
}
