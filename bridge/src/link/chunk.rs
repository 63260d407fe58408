//! Chunking: a message becomes one or more DATA frames ([`Chunker`]) and back ([`Reassembler`]).
//!
//! Chunks of one message are sent in index order and, since a route's frames are never reordered
//! (TCP, FIFO per route in the scheduler), arrive in index order. The reassembler relies on that:
//! an out-of-order chunk drops its partial message with an error.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};

use super::frame::{Data, RouteId};

/// Default chunk payload size, 64 KiB.
pub const DEFAULT_CHUNK_SIZE: usize = 64 * 1024;
/// Default maximum reassembled message size, 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
/// Default maximum of partial messages per route being reassembled at once.
pub const DEFAULT_MAX_PARTIALS: usize = 4;

/// Chunking and reassembly errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A chunk size of 0.
    #[error("chunk size must be at least 1")]
    ZeroChunkSize,
    /// A message larger than the limit (on either side).
    #[error("message of {size} bytes on {route} exceeds the maximum of {max}")]
    MessageTooLarge {
        /// The route.
        route: RouteId,
        /// Size so far (or announced by the chunk count).
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A chunk whose route is not the reassembler's.
    #[error("chunk of {got} given to the reassembler of {want}")]
    WrongRoute {
        /// The reassembler's route.
        want: RouteId,
        /// The chunk's route.
        got: RouteId,
    },
    /// A chunk with index > 0 of a message whose earlier chunks were not seen (or were dropped).
    #[error("chunk {index} of seq {seq} on {route} without its predecessors")]
    MissingStart {
        /// The route.
        route: RouteId,
        /// The message.
        seq: u64,
        /// The chunk index.
        index: u32,
    },
    /// A chunk out of order, repeated, or disagreeing on count or flags; the partial is dropped.
    #[error("chunk {index} of seq {seq} on {route} is inconsistent with the chunks before it")]
    Inconsistent {
        /// The route.
        route: RouteId,
        /// The message.
        seq: u64,
        /// The chunk index.
        index: u32,
    },
}

/// Splits messages into DATA frames of at most `chunk_size` payload bytes.
#[derive(Debug, Clone, Copy)]
pub struct Chunker {
    chunk_size: usize,
}

impl Chunker {
    /// A chunker; `chunk_size` must be at least 1 (use [`FrameLimits::max_chunk_payload`] or
    /// less).
    ///
    /// [`FrameLimits::max_chunk_payload`]: super::frame::FrameLimits::max_chunk_payload
    pub fn new(chunk_size: usize) -> Result<Self, ChunkError> {
        if chunk_size == 0 {
            return Err(ChunkError::ZeroChunkSize);
        }
        Ok(Self { chunk_size })
    }

    /// The chunk payload size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Number of chunks for a payload of `len` bytes (an empty message is one empty chunk).
    pub fn chunk_count(&self, len: usize) -> u64 {
        (len as u64).div_ceil(self.chunk_size as u64).max(1)
    }

    /// The DATA frames of one message, sharing `payload`'s buffer (no copies).
    pub fn split(
        &self,
        route: RouteId,
        seq: u64,
        flags: u8,
        payload: Bytes,
    ) -> Result<Vec<Data>, ChunkError> {
        let count = self.chunk_count(payload.len());
        let count32 = u32::try_from(count).map_err(|_| ChunkError::MessageTooLarge {
            route,
            size: payload.len() as u64,
            max: self.chunk_size.saturating_mul(u32::MAX as usize),
        })?;
        Ok((0..count32)
            .map(|index| {
                let start = index as usize * self.chunk_size;
                let end = (start + self.chunk_size).min(payload.len());
                Data {
                    route,
                    seq,
                    index,
                    count: count32,
                    flags,
                    payload: payload.slice(start..end),
                }
            })
            .collect())
    }
}

/// A reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its sequence number.
    pub seq: u64,
    /// The DATA flags (e.g. compressed).
    pub flags: u8,
    /// The whole payload.
    pub payload: Bytes,
}

/// Reassembly limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Largest message (before decompression).
    pub max_message_size: usize,
    /// Partial messages kept at once; starting one more evicts the oldest (counted).
    pub max_partials: usize,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_partials: DEFAULT_MAX_PARTIALS,
        }
    }
}

#[derive(Debug)]
struct Partial {
    count: u32,
    next: u32,
    flags: u8,
    buf: BytesMut,
}

/// Collects one route's chunks into messages, within [`ReassemblyLimits`].
#[derive(Debug)]
pub struct Reassembler {
    route: RouteId,
    limits: ReassemblyLimits,
    partials: BTreeMap<u64, Partial>,
    buffered: usize,
    abandoned: u64,
}

impl Reassembler {
    /// A reassembler for `route`.
    pub fn new(route: RouteId, limits: ReassemblyLimits) -> Self {
        Self {
            route,
            limits,
            partials: BTreeMap::new(),
            buffered: 0,
            abandoned: 0,
        }
    }

    /// Partial messages dropped so far (evicted, superseded by a newer complete message, reset,
    /// or after an error).
    pub fn abandoned(&self) -> u64 {
        self.abandoned
    }

    /// Bytes held in partial messages.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Partial messages held.
    pub fn partials(&self) -> usize {
        self.partials.len()
    }

    /// Drops every partial message (on reconnect or withdraw).
    pub fn reset(&mut self) {
        self.abandoned += self.partials.len() as u64;
        self.partials.clear();
        self.buffered = 0;
    }

    fn drop_partial(&mut self, seq: u64) {
        if let Some(p) = self.partials.remove(&seq) {
            self.buffered -= p.buf.len();
            self.abandoned += 1;
        }
    }

    fn completed(&mut self, seq: u64, flags: u8, payload: Bytes) -> Message {
        // A newer message completed: older partials can never complete in a FIFO route.
        let older: Vec<u64> = self.partials.range(..seq).map(|(s, _)| *s).collect();
        for s in older {
            self.drop_partial(s);
        }
        Message {
            seq,
            flags,
            payload,
        }
    }

    /// Adds one chunk; returns the message it completes, if any. On error the chunk (and the
    /// partial message it belonged to) are dropped; the reassembler stays usable.
    pub fn push(&mut self, data: Data) -> Result<Option<Message>, ChunkError> {
        let Data {
            route,
            seq,
            index,
            count,
            flags,
            payload,
        } = data;
        if route != self.route {
            return Err(ChunkError::WrongRoute {
                want: self.route,
                got: route,
            });
        }
        let max = self.limits.max_message_size;
        let too_large = |size: u64| ChunkError::MessageTooLarge { route, size, max };
        if index == 0 {
            if self.partials.contains_key(&seq) {
                self.drop_partial(seq);
                return Err(ChunkError::Inconsistent { route, seq, index });
            }
            if payload.len() > max {
                return Err(too_large(payload.len() as u64));
            }
            if count == 1 {
                return Ok(Some(self.completed(seq, flags, payload)));
            }
            // Every chunk but the last carries at least one byte, so `count - 1` bounds the size.
            if u64::from(count - 1) > max as u64 {
                return Err(too_large(u64::from(count - 1)));
            }
            while self.partials.len() >= self.limits.max_partials.max(1) {
                let Some(oldest) = self.partials.keys().next().copied() else {
                    break;
                };
                self.drop_partial(oldest);
            }
            let mut buf = BytesMut::with_capacity(payload.len());
            buf.extend_from_slice(&payload);
            self.buffered += buf.len();
            self.partials.insert(
                seq,
                Partial {
                    count,
                    next: 1,
                    flags,
                    buf,
                },
            );
            return Ok(None);
        }
        let Some(p) = self.partials.get_mut(&seq) else {
            return Err(ChunkError::MissingStart { route, seq, index });
        };
        if p.next != index || p.count != count || p.flags != flags {
            self.drop_partial(seq);
            return Err(ChunkError::Inconsistent { route, seq, index });
        }
        let size = (p.buf.len() + payload.len()) as u64;
        if size > max as u64 {
            self.drop_partial(seq);
            return Err(too_large(size));
        }
        p.buf.extend_from_slice(&payload);
        p.next += 1;
        self.buffered += payload.len();
        if p.next < p.count {
            return Ok(None);
        }
        let Some(p) = self.partials.remove(&seq) else {
            return Ok(None);
        };
        self.buffered -= p.buf.len();
        Ok(Some(self.completed(seq, p.flags, p.buf.freeze())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const R: RouteId = RouteId(3);

    fn limits(max_message_size: usize, max_partials: usize) -> ReassemblyLimits {
        ReassemblyLimits {
            max_message_size,
            max_partials,
        }
    }

    #[test]
    fn split_shares_the_buffer_and_counts() {
        let c = Chunker::new(4).unwrap();
        let chunks = c.split(R, 1, 0, Bytes::from_static(b"0123456789")).unwrap();
        assert_eq!(chunks.len(), 3);
        assert_eq!(&chunks[2].payload[..], b"89");
        assert!(chunks.iter().all(|d| d.count == 3 && d.seq == 1));
        let empty = c.split(R, 2, 0, Bytes::new()).unwrap();
        assert_eq!(empty.len(), 1);
        assert!(empty[0].payload.is_empty());
        assert_eq!(Chunker::new(0).unwrap_err(), ChunkError::ZeroChunkSize);
    }

    #[test]
    fn too_large_message_is_refused_and_counted() {
        let c = Chunker::new(4).unwrap();
        let mut r = Reassembler::new(R, limits(10, 4));
        let mut result = Ok(None);
        for d in c.split(R, 1, 0, Bytes::from(vec![1u8; 16])).unwrap() {
            result = r.push(d);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(
            result,
            Err(ChunkError::MessageTooLarge {
                size: 12,
                max: 10,
                ..
            })
        ));
        assert_eq!(r.abandoned(), 1);
        assert_eq!(r.buffered(), 0);
        // A huge chunk count is refused on the first chunk.
        let first = Data {
            route: R,
            seq: 2,
            index: 0,
            count: u32::MAX,
            flags: 0,
            payload: Bytes::from_static(b"x"),
        };
        assert!(matches!(
            r.push(first),
            Err(ChunkError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn partials_are_bounded_and_superseded() {
        let c = Chunker::new(2).unwrap();
        let mut r = Reassembler::new(R, limits(100, 2));
        let firsts: Vec<Data> = (1..=3)
            .map(|seq| c.split(R, seq, 0, Bytes::from_static(b"abcd")).unwrap()[0].clone())
            .collect();
        for d in firsts {
            assert_eq!(r.push(d).unwrap(), None);
        }
        assert_eq!(r.partials(), 2);
        assert_eq!(r.abandoned(), 1); // seq 1 evicted
        let later = c.split(R, 1, 0, Bytes::from_static(b"abcd")).unwrap()[1].clone();
        assert!(matches!(
            r.push(later),
            Err(ChunkError::MissingStart { seq: 1, .. })
        ));
        // seq 4 completes in one chunk: 2 and 3 are superseded.
        let m = r.push(c.split(R, 4, 0, Bytes::from_static(b"z")).unwrap()[0].clone());
        assert_eq!(m.unwrap().unwrap().seq, 4);
        assert_eq!(r.partials(), 0);
        assert_eq!(r.abandoned(), 3);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn inconsistent_chunks_drop_the_partial() {
        let c = Chunker::new(2).unwrap();
        let mut r = Reassembler::new(R, ReassemblyLimits::default());
        let chunks = c.split(R, 1, 0, Bytes::from_static(b"abcdef")).unwrap();
        r.push(chunks[0].clone()).unwrap();
        assert!(matches!(
            r.push(chunks[2].clone()),
            Err(ChunkError::Inconsistent { index: 2, .. })
        ));
        assert_eq!(r.partials(), 0);
        let other = Data {
            route: RouteId(9),
            ..chunks[0].clone()
        };
        assert!(matches!(r.push(other), Err(ChunkError::WrongRoute { .. })));
        r.push(chunks[0].clone()).unwrap();
        r.reset();
        assert_eq!((r.partials(), r.buffered(), r.abandoned()), (0, 0, 2));
    }

    proptest! {
        #[test]
        fn chunk_reassemble_round_trip(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2000), 1..6),
            chunk_size in 1usize..700,
        ) {
            let c = Chunker::new(chunk_size).unwrap();
            let mut r = Reassembler::new(R, limits(2000, 1));
            for (i, m) in messages.iter().enumerate() {
                let seq = i as u64 + 1;
                let chunks = c.split(R, seq, 1, Bytes::from(m.clone())).unwrap();
                prop_assert_eq!(chunks.len() as u64, c.chunk_count(m.len()));
                prop_assert!(chunks.iter().all(|d| d.payload.len() <= chunk_size));
                let n = chunks.len();
                for (j, d) in chunks.into_iter().enumerate() {
                    let out = r.push(d).unwrap();
                    if j + 1 == n {
                        let out = out.unwrap();
                        prop_assert_eq!(out.seq, seq);
                        prop_assert_eq!(out.flags, 1);
                        prop_assert_eq!(&out.payload[..], &m[..]);
                    } else {
                        prop_assert!(out.is_none());
                    }
                }
                prop_assert_eq!(r.buffered(), 0);
            }
        }

        #[test]
        fn random_chunks_never_panic_and_stay_bounded(
            chunks in proptest::collection::vec(
                (1u64..5, 0u32..5, 1u32..5, 0u8..2, proptest::collection::vec(any::<u8>(), 0..64)),
                0..60,
            ),
        ) {
            let lim = limits(100, 2);
            let mut r = Reassembler::new(R, lim);
            for (seq, index, count, flags, p) in chunks {
                let _ = r.push(Data { route: R, seq, index, count, flags, payload: Bytes::from(p) });
                prop_assert!(r.partials() <= lim.max_partials);
                prop_assert!(r.buffered() <= lim.max_message_size * lim.max_partials);
            }
        }
    }
}
