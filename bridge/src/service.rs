//! ROS 2 service relay: request identity mapping and timeouts (pure, no I/O).
//!
//! With `rmw_cyclonedds`, a service client writes requests on the DDS topic
//! `rq/<service>Request` and the server answers on `rr/<service>Reply`. Every request and reply
//! payload is laid out as
//!
//! ```text
//! [0..4)   CDR encapsulation header: 00 00 xx xx = CDR_BE, 00 01 xx xx = CDR_LE
//! [4..12)  uint64 client_guid      (payload byte order)
//! [12..20) int64  sequence_number  (payload byte order)
//! [20..)   request / response body (CDR, alignment relative to offset 4)
//! ```
//!
//! The server copies the request's header into its reply; each client keeps only the replies
//! carrying its own `client_guid` and a sequence number it is waiting for. Because the 16-byte
//! header keeps 8-byte alignment, rewriting it never moves the body bytes.
//!
//! [`ServerSide`] is the bridge on the side where the real ROS server runs: it re-issues each
//! relayed request under the bridge's own `client_guid` and a fresh sequence number, remembers
//! the caller's original header, its origin (e.g. a link id) and a deadline, and maps the
//! server's reply back to the original header. It holds no clocks and does no I/O: the caller
//! passes `now` and drives [`ServerSide::expire`] at [`ServerSide::next_deadline`].

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

/// Length of the request header (`client_guid` + `sequence_number`) after the encapsulation.
pub const REQUEST_HEADER_LEN: usize = 16;

/// Length of the CDR encapsulation header in front of every payload.
pub const ENCAPSULATION_LEN: usize = 4;

/// Default bound on in-flight calls per relayed service ([`ServerSide::new`]'s `max_pending`).
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// Stand-in for a timeout too large to add to an `Instant`.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Errors of the service relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The payload cannot hold the encapsulation and request headers (20 bytes).
    #[error("service payload too short: {len} bytes, need at least {}", ENCAPSULATION_LEN + REQUEST_HEADER_LEN)]
    TooShort {
        /// Length of the payload seen.
        len: usize,
    },
    /// The encapsulation kind is not plain CDR (`00 00` = CDR_BE, `00 01` = CDR_LE).
    #[error("unsupported CDR encapsulation {:02x} {:02x} (only CDR_BE 00 00 and CDR_LE 00 01)", .0[0], .0[1])]
    Encapsulation([u8; 2]),
    /// `max_pending` calls are already in flight; the request is refused.
    #[error("too many pending service calls (max {max})")]
    Full {
        /// The configured bound.
        max: usize,
    },
}

/// Parsed request header; endianness from the encapsulation header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId {
    /// The calling client's id (rmw_cyclonedds: derived from its writer GUID).
    pub client_guid: u64,
    /// The client's sequence number of this call.
    pub sequence: i64,
}

/// Byte order of a payload, from its encapsulation header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Big,
    Little,
}

/// Checks length and encapsulation; returns the payload's byte order.
fn order_of(payload: &[u8]) -> Result<Order, ServiceError> {
    if payload.len() < ENCAPSULATION_LEN + REQUEST_HEADER_LEN {
        return Err(ServiceError::TooShort { len: payload.len() });
    }
    match [payload[0], payload[1]] {
        [0x00, 0x00] => Ok(Order::Big),
        [0x00, 0x01] => Ok(Order::Little),
        other => Err(ServiceError::Encapsulation(other)),
    }
}

fn header_bytes(payload: &[u8]) -> [u8; REQUEST_HEADER_LEN] {
    let mut h = [0u8; REQUEST_HEADER_LEN];
    h.copy_from_slice(&payload[ENCAPSULATION_LEN..ENCAPSULATION_LEN + REQUEST_HEADER_LEN]);
    h
}

/// Reads the request header of a request or reply payload.
///
/// Errors on a payload shorter than 20 bytes or an encapsulation other than CDR_BE (`00 00`) and
/// CDR_LE (`00 01`); parameter-list encodings (`00 02`, `00 03`) are refused.
pub fn read_request_id(payload: &[u8]) -> Result<RequestId, ServiceError> {
    let order = order_of(payload)?;
    let h = header_bytes(payload);
    let mut guid = [0u8; 8];
    let mut seq = [0u8; 8];
    guid.copy_from_slice(&h[..8]);
    seq.copy_from_slice(&h[8..]);
    Ok(match order {
        Order::Big => RequestId {
            client_guid: u64::from_be_bytes(guid),
            sequence: i64::from_be_bytes(seq),
        },
        Order::Little => RequestId {
            client_guid: u64::from_le_bytes(guid),
            sequence: i64::from_le_bytes(seq),
        },
    })
}

/// Returns a copy of `payload` with the request header replaced by `id`, in the payload's own
/// byte order; the encapsulation header and the body are copied unchanged.
pub fn write_request_id(payload: &[u8], id: RequestId) -> Result<Bytes, ServiceError> {
    let order = order_of(payload)?;
    let (guid, seq) = match order {
        Order::Big => (id.client_guid.to_be_bytes(), id.sequence.to_be_bytes()),
        Order::Little => (id.client_guid.to_le_bytes(), id.sequence.to_le_bytes()),
    };
    let mut out = BytesMut::with_capacity(payload.len());
    out.extend_from_slice(&payload[..ENCAPSULATION_LEN]);
    out.extend_from_slice(&guid);
    out.extend_from_slice(&seq);
    out.extend_from_slice(&payload[ENCAPSULATION_LEN + REQUEST_HEADER_LEN..]);
    Ok(out.freeze())
}

/// A stable, non-zero 64-bit client id from a 16-byte DDS GUID (FNV-1a 64 of the bytes; a hash
/// of 0 maps to 1).
pub fn guid_to_client_id(guid: &[u8; 16]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let h = guid
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME));
    if h == 0 {
        1
    } else {
        h
    }
}

/// Counters of one [`ServerSide`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Requests accepted and re-issued to the server.
    pub requests: u64,
    /// Replies that answered a pending call and were returned for forwarding.
    pub replies: u64,
    /// Pending calls that passed their deadline ([`ServerSide::expire`]).
    pub timeouts: u64,
    /// Replies addressed to another client (not our `client_guid`), dropped.
    pub foreign_replies: u64,
    /// Replies with our `client_guid` that answer no live call (past their deadline, already
    /// answered, forgotten with their origin, or a sequence number never issued), dropped.
    pub late_replies: u64,
    /// Requests refused because `max_pending` calls were in flight.
    pub refused: u64,
    /// Requests or replies refused as malformed (too short, unsupported encapsulation).
    pub malformed: u64,
}

/// One call in flight.
#[derive(Debug)]
struct Pending<O> {
    origin: O,
    original: RequestId,
    deadline: Instant,
}

/// The server side (where the real ROS server runs) of one relayed service.
///
/// `O` is an opaque origin (e.g. a link id and caller) handed back with the reply or timeout.
/// Calls are numbered with this side's own sequence numbers (1, 2, …), so neither robot-local
/// clients nor two remote callers with equal ids can collide. At most `max_pending` calls are in
/// flight; further requests are refused, nothing is evicted.
///
/// Expiry is driven by the caller: call [`ServerSide::expire`] at
/// [`ServerSide::next_deadline`] (and before [`ServerSide::on_request`] if a full table may hold
/// overdue calls). A reply arriving at or after a call's deadline is counted as late and not
/// returned; the call stays until `expire` reports it as a timeout.
#[derive(Debug)]
pub struct ServerSide<O> {
    our_guid: u64,
    timeout: Duration,
    max_pending: usize,
    next_seq: i64,
    pending: HashMap<i64, Pending<O>>,
    /// (deadline, our sequence) of every pending call, earliest first.
    deadlines: BTreeSet<(Instant, i64)>,
    stats: ServiceStats,
}

impl<O: Clone> ServerSide<O> {
    /// A server side issuing calls as `our_guid`, each allowed `timeout` for its reply, with at
    /// most `max_pending` in flight (see [`DEFAULT_MAX_PENDING`]; 0 refuses every request).
    pub fn new(our_guid: u64, timeout: Duration, max_pending: usize) -> Self {
        Self {
            our_guid,
            timeout,
            max_pending,
            next_seq: 1,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            stats: ServiceStats::default(),
        }
    }

    /// The `client_guid` this side writes its requests with.
    pub fn our_guid(&self) -> u64 {
        self.our_guid
    }

    /// A request from a remote caller: returns the payload to write on `rq/...` (header
    /// rewritten to our guid and a fresh sequence number; body unchanged).
    pub fn on_request(
        &mut self,
        payload: &[u8],
        origin: O,
        now: Instant,
    ) -> Result<Bytes, ServiceError> {
        let original = match read_request_id(payload) {
            Ok(id) => id,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        if self.pending.len() >= self.max_pending {
            self.stats.refused += 1;
            tracing::debug!(
                max_pending = self.max_pending,
                client_guid = original.client_guid,
                sequence = original.sequence,
                "service request refused: too many pending calls"
            );
            return Err(ServiceError::Full {
                max: self.max_pending,
            });
        }
        let seq = self.fresh_sequence();
        let out = write_request_id(
            payload,
            RequestId {
                client_guid: self.our_guid,
                sequence: seq,
            },
        )?;
        // A timeout beyond Instant's range: fall back to ~a century, which never expires in practice.
        let deadline = now
            .checked_add(self.timeout)
            .or_else(|| now.checked_add(FAR_FUTURE))
            .unwrap_or(now);
        self.pending.insert(
            seq,
            Pending {
                origin,
                original,
                deadline,
            },
        );
        self.deadlines.insert((deadline, seq));
        self.stats.requests += 1;
        Ok(out)
    }

    /// A reply seen on `rr/...`: `Some((origin, payload with the caller's original header))` if
    /// it answers one of our pending calls before its deadline; `None` (counted as foreign or
    /// late) otherwise.
    pub fn on_reply(
        &mut self,
        payload: &[u8],
        now: Instant,
    ) -> Result<Option<(O, Bytes)>, ServiceError> {
        let id = match read_request_id(payload) {
            Ok(id) => id,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        if id.client_guid != self.our_guid {
            self.stats.foreign_replies += 1;
            return Ok(None);
        }
        match self.pending.entry(id.sequence) {
            Entry::Occupied(e) if now < e.get().deadline => {
                let out = write_request_id(payload, e.get().original)?;
                let p = e.remove();
                self.deadlines.remove(&(p.deadline, id.sequence));
                self.stats.replies += 1;
                Ok(Some((p.origin, out)))
            }
            _ => {
                self.stats.late_replies += 1;
                tracing::debug!(
                    sequence = id.sequence,
                    "service reply late or unknown, dropped"
                );
                Ok(None)
            }
        }
    }

    /// Removes and returns calls past their deadline (deadline `<= now`): the origins and the
    /// callers' original ids, earliest deadline first.
    pub fn expire(&mut self, now: Instant) -> Vec<(O, RequestId)> {
        let mut out = Vec::new();
        while let Some(&(deadline, seq)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.remove(&seq) {
                self.stats.timeouts += 1;
                out.push((p.origin, p.original));
            }
        }
        out
    }

    /// The earliest deadline of a pending call, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(d, _)| d)
    }

    /// Number of calls in flight.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Counters since creation.
    pub fn stats(&self) -> ServiceStats {
        self.stats
    }

    /// Drops every pending call of an origin (link gone): returns how many. Their replies, if
    /// they still come, count as late.
    pub fn forget_origin(&mut self, origin: &O) -> usize
    where
        O: PartialEq,
    {
        let before = self.pending.len();
        let deadlines = &mut self.deadlines;
        self.pending.retain(|seq, p| {
            if p.origin == *origin {
                deadlines.remove(&(p.deadline, *seq));
                false
            } else {
                true
            }
        });
        before - self.pending.len()
    }

    /// Next sequence number not in use: 1, 2, …, wrapping back to 1 after `i64::MAX`.
    fn fresh_sequence(&mut self) -> i64 {
        loop {
            let seq = self.next_seq;
            self.next_seq = seq.checked_add(1).unwrap_or(1);
            if !self.pending.contains_key(&seq) {
                return seq;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OURS: u64 = 0xB1D6_E000_0000_0001;
    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A payload: encapsulation, header in `le`/`be` order, then `body`.
    fn payload(le: bool, id: RequestId, body: &[u8]) -> Vec<u8> {
        let mut v = if le {
            vec![0x00, 0x01, 0x00, 0x00]
        } else {
            vec![0x00, 0x00, 0x00, 0x00]
        };
        if le {
            v.extend_from_slice(&id.client_guid.to_le_bytes());
            v.extend_from_slice(&id.sequence.to_le_bytes());
        } else {
            v.extend_from_slice(&id.client_guid.to_be_bytes());
            v.extend_from_slice(&id.sequence.to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    fn id(client_guid: u64, sequence: i64) -> RequestId {
        RequestId {
            client_guid,
            sequence,
        }
    }

    /// AddTwoInts request body a=3, b=4 (LE).
    fn add_body(a: i64, b: i64) -> Vec<u8> {
        let mut v = a.to_le_bytes().to_vec();
        v.extend_from_slice(&b.to_le_bytes());
        v
    }

    #[test]
    fn reads_le_and_be_headers() {
        let want = id(0x0102_0304_0506_0708, -2);
        let le = payload(true, want, &[9, 9]);
        assert_eq!(&le[4..12], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(read_request_id(&le), Ok(want));
        let be = payload(false, want, &[]);
        assert_eq!(&be[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(read_request_id(&be), Ok(want));
        // Option bytes 2..4 (e.g. padding count) do not matter.
        let mut opt = le.clone();
        opt[3] = 2;
        assert_eq!(read_request_id(&opt), Ok(want));
    }

    #[test]
    fn write_round_trips_in_the_same_order_and_keeps_body() {
        let body: Vec<u8> = (0u8..=40).collect();
        for le in [true, false] {
            let p = payload(le, id(1, 1), &body);
            let new = id(u64::MAX - 5, i64::MIN + 3);
            let out = write_request_id(&p, new).unwrap();
            assert_eq!(out.len(), p.len());
            assert_eq!(&out[..4], &p[..4], "encapsulation kept");
            assert_eq!(&out[20..], &body[..], "body untouched");
            assert_eq!(read_request_id(&out), Ok(new));
            assert_eq!(out[..], payload(le, new, &body)[..]);
        }
        // Header-only payload (empty body) works too.
        let p = payload(true, id(1, 1), &[]);
        assert_eq!(write_request_id(&p, id(2, 3)).unwrap().len(), 20);
    }

    #[test]
    fn rejects_short_and_unknown_encapsulation() {
        let p = payload(true, id(1, 1), &[]);
        assert_eq!(
            read_request_id(&p[..19]),
            Err(ServiceError::TooShort { len: 19 })
        );
        assert_eq!(
            write_request_id(&[], id(1, 1)),
            Err(ServiceError::TooShort { len: 0 })
        );
        for kind in [[0x00, 0x02], [0x00, 0x03], [0x00, 0x06], [0x01, 0x00]] {
            let mut q = p.clone();
            q[..2].copy_from_slice(&kind);
            assert_eq!(read_request_id(&q), Err(ServiceError::Encapsulation(kind)));
            assert_eq!(
                write_request_id(&q, id(1, 1)),
                Err(ServiceError::Encapsulation(kind))
            );
        }
    }

    #[test]
    fn guid_client_id_is_stable_and_nonzero() {
        let a = [0u8; 16];
        let mut b = [0u8; 16];
        b[15] = 1;
        assert_eq!(guid_to_client_id(&a), guid_to_client_id(&a));
        assert_ne!(guid_to_client_id(&a), guid_to_client_id(&b));
        // FNV-1a 64 of 16 zero bytes, computed independently.
        let mut h: u64 = 0xcbf29ce484222325;
        for _ in 0..16 {
            h = h.wrapping_mul(0x100000001b3);
        }
        assert_eq!(guid_to_client_id(&a), h);
        assert_ne!(guid_to_client_id(&a), 0);
    }

    #[test]
    fn maps_two_origins_with_the_same_original_id() {
        let t0 = Instant::now();
        let mut s = ServerSide::new(OURS, TIMEOUT, 16);
        let caller = id(42, 7);
        let ra = s
            .on_request(&payload(true, caller, &add_body(1, 2)), "link-a", t0)
            .unwrap();
        let rb = s
            .on_request(&payload(false, caller, &[0xEE; 8]), "link-b", t0)
            .unwrap();
        let ia = read_request_id(&ra).unwrap();
        let ib = read_request_id(&rb).unwrap();
        assert_eq!(ia.client_guid, OURS);
        assert_eq!(ib.client_guid, OURS);
        assert_ne!(ia.sequence, ib.sequence, "fresh sequence per call");
        assert_eq!(&ra[20..], &add_body(1, 2)[..], "request body untouched");
        assert_eq!(&ra[..4], &[0, 1, 0, 0]);
        assert_eq!(&rb[..4], &[0, 0, 0, 0], "BE request stays BE");
        assert_eq!(s.pending(), 2);

        // The server answers b first, then a; each copies the request header.
        let reply_b = payload(false, ib, &[1, 2, 3]);
        let (origin, out) = s.on_reply(&reply_b, t0).unwrap().unwrap();
        assert_eq!(origin, "link-b");
        assert_eq!(out[..], payload(false, caller, &[1, 2, 3])[..]);

        let reply_a = payload(true, ia, &10i64.to_le_bytes());
        let (origin, out) = s.on_reply(&reply_a, t0).unwrap().unwrap();
        assert_eq!(origin, "link-a");
        assert_eq!(read_request_id(&out), Ok(caller));
        assert_eq!(&out[20..], &10i64.to_le_bytes());

        // A duplicate of an answered reply is late, not returned twice.
        assert_eq!(s.on_reply(&reply_a, t0).unwrap(), None);
        assert_eq!(s.pending(), 0);
        assert_eq!(s.next_deadline(), None);
        let st = s.stats();
        assert_eq!((st.requests, st.replies, st.late_replies), (2, 2, 1));
    }

    #[test]
    fn ignores_replies_for_other_clients() {
        let t0 = Instant::now();
        let mut s = ServerSide::new(OURS, TIMEOUT, 16);
        let r = s
            .on_request(&payload(true, id(42, 1), &[]), 1u32, t0)
            .unwrap();
        let ours = read_request_id(&r).unwrap();
        // A robot-local client's reply with the same sequence number.
        let foreign = payload(true, id(OURS ^ 1, ours.sequence), &[]);
        assert_eq!(s.on_reply(&foreign, t0).unwrap(), None);
        // Even the caller's original guid is foreign here.
        assert_eq!(
            s.on_reply(&payload(true, id(42, 1), &[]), t0).unwrap(),
            None
        );
        assert_eq!(s.stats().foreign_replies, 2);
        assert_eq!(s.pending(), 1, "the call is still pending");
        assert!(s.on_reply(&payload(true, ours, &[]), t0).unwrap().is_some());
    }

    #[test]
    fn expires_and_counts_late_replies() {
        let t0 = Instant::now();
        let mut s = ServerSide::new(OURS, TIMEOUT, 16);
        let a = id(5, 100);
        let b = id(6, 200);
        let ra = read_request_id(&s.on_request(&payload(true, a, &[]), 'a', t0).unwrap()).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        let rb = read_request_id(&s.on_request(&payload(true, b, &[]), 'b', t1).unwrap()).unwrap();
        assert_eq!(s.next_deadline(), Some(t0 + TIMEOUT));

        assert!(s.expire(t0 + TIMEOUT - Duration::from_nanos(1)).is_empty());
        // At the deadline a reply is already late and not returned; the call stays for expire.
        assert_eq!(
            s.on_reply(&payload(true, ra, &[]), t0 + TIMEOUT).unwrap(),
            None
        );
        assert_eq!(s.stats().late_replies, 1);
        assert_eq!(s.expire(t0 + TIMEOUT), vec![('a', a)]);
        assert_eq!(s.next_deadline(), Some(t1 + TIMEOUT));
        // After expiry the reply is still late.
        assert_eq!(s.on_reply(&payload(true, ra, &[]), t1).unwrap(), None);
        assert_eq!(s.stats().late_replies, 2);
        // b is unaffected and answered in time.
        let (o, out) = s.on_reply(&payload(true, rb, &[]), t1).unwrap().unwrap();
        assert_eq!((o, read_request_id(&out).unwrap()), ('b', b));
        assert!(s.expire(t1 + TIMEOUT * 10).is_empty());
        let st = s.stats();
        assert_eq!((st.timeouts, st.replies, st.requests), (1, 1, 2));
        // A sequence number never issued is dropped as late too.
        assert_eq!(
            s.on_reply(&payload(true, id(OURS, 999), &[]), t1).unwrap(),
            None
        );
        assert_eq!(s.stats().late_replies, 3);
    }

    #[test]
    fn refuses_beyond_max_pending_without_evicting() {
        let t0 = Instant::now();
        let mut s = ServerSide::new(OURS, TIMEOUT, 2);
        let r1 = s.on_request(&payload(true, id(1, 1), &[]), 1, t0).unwrap();
        s.on_request(&payload(true, id(1, 2), &[]), 2, t0).unwrap();
        assert_eq!(
            s.on_request(&payload(true, id(1, 3), &[]), 3, t0),
            Err(ServiceError::Full { max: 2 })
        );
        assert_eq!(s.stats().refused, 1);
        assert_eq!(s.pending(), 2);
        // The oldest is still there and answerable; then there is room again.
        let (o, _) = s.on_reply(&r1, t0).unwrap().unwrap();
        assert_eq!(o, 1);
        s.on_request(&payload(true, id(1, 3), &[]), 3, t0).unwrap();
        assert_eq!(s.pending(), 2);
        // Malformed input is an error and counted, never stored.
        assert!(s.on_request(&[0, 1, 0], 9, t0).is_err());
        assert!(s.on_reply(&[0, 2, 0, 0], t0).is_err());
        assert_eq!(s.stats().malformed, 2);
        assert_eq!(s.stats().requests, 3);
    }

    #[test]
    fn forget_origin_drops_its_calls_only() {
        let t0 = Instant::now();
        let mut s = ServerSide::new(OURS, TIMEOUT, 16);
        let ra = s
            .on_request(&payload(true, id(1, 1), &[]), "a", t0)
            .unwrap();
        s.on_request(&payload(true, id(1, 2), &[]), "b", t0)
            .unwrap();
        s.on_request(&payload(true, id(1, 3), &[]), "a", t0 + TIMEOUT)
            .unwrap();
        assert_eq!(s.forget_origin(&"a"), 2);
        assert_eq!(s.forget_origin(&"a"), 0);
        assert_eq!(s.pending(), 1);
        assert_eq!(s.next_deadline(), Some(t0 + TIMEOUT));
        assert_eq!(s.on_reply(&ra, t0).unwrap(), None);
        assert_eq!(s.expire(t0 + TIMEOUT * 3), vec![("b", id(1, 2))]);
        assert_eq!(s.stats().timeouts, 1);
    }

    #[test]
    fn huge_timeout_does_not_panic() {
        let t0 = Instant::now();
        let mut s = ServerSide::new(OURS, Duration::MAX, 1);
        s.on_request(&payload(true, id(1, 1), &[]), (), t0).unwrap();
        assert!(s.expire(t0 + Duration::from_secs(3600)).is_empty());
        let mut z = ServerSide::new(OURS, TIMEOUT, 0);
        assert_eq!(
            z.on_request(&payload(true, id(1, 1), &[]), (), t0),
            Err(ServiceError::Full { max: 0 })
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Request(Vec<u8>, u8),
        /// Reply to the n-th issued request (mod count), or raw bytes.
        ReplyTo(usize, Vec<u8>),
        Raw(Vec<u8>),
        Advance(u16),
        Forget(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (proptest::collection::vec(any::<u8>(), 0..40), 0u8..3)
                .prop_map(|(v, o)| Op::Request(v, o)),
            (any::<usize>(), proptest::collection::vec(any::<u8>(), 0..8))
                .prop_map(|(n, b)| Op::ReplyTo(n, b)),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Raw),
            (0u16..3000).prop_map(Op::Advance),
            (0u8..3).prop_map(Op::Forget),
        ]
    }

    proptest! {
        #[test]
        fn random_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                                       seq in any::<i64>(), guid in any::<u64>()) {
            let r = read_request_id(&bytes);
            let w = write_request_id(&bytes, id(guid, seq));
            prop_assert_eq!(r.is_ok(), w.is_ok());
            if let Ok(out) = w {
                prop_assert_eq!(read_request_id(&out), Ok(id(guid, seq)));
                prop_assert_eq!(&out[..4], &bytes[..4]);
                prop_assert_eq!(&out[20..], &bytes[20..]);
            }
        }

        #[test]
        fn server_side_invariants(ops in proptest::collection::vec(op(), 0..200), max in 0usize..5) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut s = ServerSide::new(OURS, Duration::from_millis(1000), max);
            // Issued (our id, origin, original id) still live per our model.
            let mut issued: Vec<(RequestId, u8, RequestId)> = Vec::new();
            let mut live: HashMap<i64, (u8, RequestId, Instant)> = HashMap::new();
            for op in ops {
                match op {
                    Op::Request(v, o) => match s.on_request(&v, o, now) {
                        Ok(out) => {
                            let ours = read_request_id(&out).unwrap();
                            prop_assert_eq!(ours.client_guid, OURS);
                            prop_assert!(!live.contains_key(&ours.sequence));
                            let orig = read_request_id(&v).unwrap();
                            issued.push((ours, o, orig));
                            live.insert(ours.sequence, (o, orig, now + Duration::from_millis(1000)));
                        }
                        Err(ServiceError::Full { .. }) => prop_assert!(live.len() >= max),
                        Err(_) => prop_assert!(read_request_id(&v).is_err()),
                    },
                    Op::ReplyTo(n, body) => {
                        if issued.is_empty() { continue; }
                        let (ours, _, _) = issued[n % issued.len()];
                        let got = s.on_reply(&payload(n % 2 == 0, ours, &body), now).unwrap();
                        match live.get(&ours.sequence).copied() {
                            Some((o, orig, dl)) if now < dl => {
                                let (go, out) = got.unwrap();
                                prop_assert_eq!(go, o);
                                prop_assert_eq!(read_request_id(&out), Ok(orig));
                                prop_assert_eq!(&out[20..], &body[..]);
                                live.remove(&ours.sequence);
                            }
                            _ => prop_assert!(got.is_none()),
                        }
                    }
                    Op::Raw(v) => { let _ = s.on_reply(&v, now); }
                    Op::Advance(ms) => {
                        now += Duration::from_millis(u64::from(ms));
                        let mut expired = s.expire(now);
                        let mut want: Vec<(u8, RequestId)> = live
                            .iter()
                            .filter(|(_, (_, _, dl))| *dl <= now)
                            .map(|(_, (o, orig, _))| (*o, *orig))
                            .collect();
                        live.retain(|_, (_, _, dl)| *dl > now);
                        expired.sort_by_key(|(o, r)| (*o, r.client_guid, r.sequence));
                        want.sort_by_key(|(o, r)| (*o, r.client_guid, r.sequence));
                        prop_assert_eq!(expired, want);
                    }
                    Op::Forget(o) => {
                        let n = live.values().filter(|(lo, _, _)| *lo == o).count();
                        prop_assert_eq!(s.forget_origin(&o), n);
                        live.retain(|_, (lo, _, _)| *lo != o);
                    }
                }
                prop_assert_eq!(s.pending(), live.len());
                prop_assert!(s.pending() <= max);
                prop_assert_eq!(s.next_deadline(), live.values().map(|(_, _, d)| *d).min());
            }
        }
    }
}
