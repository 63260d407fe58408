//! Per-route zstd. The sender compresses a whole message before chunking and sets
//! [`FLAG_COMPRESSED`](super::frame::FLAG_COMPRESSED) only when that made it smaller; the
//! receiver decompresses after reassembly with a hard output cap, so a "zip bomb" is an error,
//! not an out-of-memory.

use std::io::Read;

use bytes::Bytes;

/// Messages shorter than this are never compressed.
pub const DEFAULT_MIN_COMPRESS_SIZE: usize = 256;
/// zstd level used by default (fast).
pub const DEFAULT_LEVEL: i32 = 3;
/// Largest zstd window the decompressor accepts: 2^23 = 8 MiB of decoder memory.
pub const MAX_WINDOW_LOG: u32 = 23;

/// Compression errors.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// Decompressed output would exceed the cap.
    #[error("decompressed message exceeds {max} bytes")]
    TooLarge {
        /// The cap.
        max: usize,
    },
    /// Not a valid zstd frame (or a window larger than [`MAX_WINDOW_LOG`]).
    #[error("invalid zstd data: {0}")]
    Invalid(#[source] std::io::Error),
}

/// Compresses messages of one route.
#[derive(Debug, Clone, Copy)]
pub struct Compressor {
    level: i32,
    min_size: usize,
}

impl Default for Compressor {
    fn default() -> Self {
        Self {
            level: DEFAULT_LEVEL,
            min_size: DEFAULT_MIN_COMPRESS_SIZE,
        }
    }
}

impl Compressor {
    /// A compressor with a zstd `level` that leaves messages under `min_size` alone.
    pub fn new(level: i32, min_size: usize) -> Self {
        Self { level, min_size }
    }

    /// Returns the bytes to send and whether they are compressed (set the flag).
    pub fn compress(&self, payload: &Bytes) -> (Bytes, bool) {
        if payload.len() < self.min_size {
            return (payload.clone(), false);
        }
        match zstd::bulk::compress(payload, self.level) {
            Ok(c) if c.len() < payload.len() => (Bytes::from(c), true),
            _ => (payload.clone(), false),
        }
    }
}

/// Decompresses one message, failing if the output would exceed `max_size` bytes. Memory use is
/// bounded by `max_size` plus the decoder window ([`MAX_WINDOW_LOG`]).
pub fn decompress(data: &[u8], max_size: usize) -> Result<Bytes, CompressError> {
    let mut decoder = zstd::stream::read::Decoder::new(data).map_err(CompressError::Invalid)?;
    decoder
        .window_log_max(MAX_WINDOW_LOG)
        .map_err(CompressError::Invalid)?;
    let mut out = Vec::new();
    let limit = (max_size as u64).saturating_add(1);
    decoder
        .take(limit)
        .read_to_end(&mut out)
        .map_err(CompressError::Invalid)?;
    if out.len() > max_size {
        return Err(CompressError::TooLarge { max: max_size });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compresses_only_when_it_helps() {
        let c = Compressor::default();
        let small = Bytes::from_static(b"tiny");
        assert_eq!(c.compress(&small), (small.clone(), false));
        let text = Bytes::from("ros2 ".repeat(1000));
        let (z, yes) = c.compress(&text);
        assert!(yes && z.len() < text.len());
        assert_eq!(decompress(&z, text.len()).unwrap(), text);
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let noise = Bytes::from(noise);
        let (same, compressed) = c.compress(&noise);
        if !compressed {
            assert_eq!(same, noise);
        }
    }

    #[test]
    fn zip_bomb_is_an_error() {
        let zeros = vec![0u8; 8 * 1024 * 1024];
        let bomb = zstd::bulk::compress(&zeros, 19).unwrap();
        assert!(bomb.len() < 2048);
        assert!(matches!(
            decompress(&bomb, 1024 * 1024),
            Err(CompressError::TooLarge { max: 1_048_576 })
        ));
        assert_eq!(decompress(&bomb, zeros.len()).unwrap().len(), zeros.len());
    }

    #[test]
    fn garbage_is_invalid() {
        assert!(matches!(
            decompress(b"definitely not zstd", 100),
            Err(CompressError::Invalid(_))
        ));
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(0u8..4, 0..5000)) {
            let data = Bytes::from(data);
            let (z, compressed) = Compressor::new(1, 0).compress(&data);
            let back = if compressed { decompress(&z, data.len()).unwrap() } else { z };
            prop_assert_eq!(back, data);
        }

        #[test]
        fn random_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decompress(&data, 1024);
        }
    }
}
