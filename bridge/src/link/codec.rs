//! [`LinkCodec`]: the frame format as a `tokio_util` codec, for `Framed` over TCP/TLS.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use super::frame::{Frame, FrameError, FrameLimits};

/// Errors of a framed link: the transport's or the frame format's.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The transport failed.
    #[error("link i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent (or we tried to send) an invalid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Encodes and decodes [`Frame`]s. Starts with [`FrameLimits::handshake`] both ways; after the
/// handshake call [`LinkCodec::set_limits`] with the negotiated limits.
#[derive(Debug, Clone)]
pub struct LinkCodec {
    recv: FrameLimits,
    send: FrameLimits,
}

impl LinkCodec {
    /// A codec in handshake state.
    pub fn new() -> Self {
        Self {
            recv: FrameLimits::handshake(),
            send: FrameLimits::handshake(),
        }
    }

    /// Limits for what we accept (`recv`, what we announced) and send (`send`, what the peer
    /// announced).
    pub fn set_limits(&mut self, recv: FrameLimits, send: FrameLimits) {
        self.recv = recv;
        self.send = send;
    }

    /// Current receive limits.
    pub fn recv_limits(&self) -> FrameLimits {
        self.recv
    }

    /// Current send limits.
    pub fn send_limits(&self) -> FrameLimits {
        self.send
    }
}

impl Default for LinkCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for LinkCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(Frame::decode(src, &self.recv)?)
    }
}

impl Encoder<Frame> for LinkCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(item.encode(dst, self.send.max_frame_size)?)
    }
}

impl Encoder<&Frame> for LinkCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(item.encode(dst, self.send.max_frame_size)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::frame::tests::samples;
    use crate::link::frame::DEFAULT_MAX_FRAME_SIZE;

    #[test]
    fn codec_round_trip_and_limits() {
        let mut codec = LinkCodec::new();
        let limits = FrameLimits::negotiated(DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_FRAME_SIZE);
        codec.set_limits(limits, limits);
        let mut buf = BytesMut::new();
        for f in samples() {
            codec.encode(&f, &mut buf).unwrap();
        }
        for f in samples() {
            assert_eq!(codec.decode(&mut buf).unwrap(), Some(f));
        }
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn handshake_limits_refuse_big_frames() {
        let mut codec = LinkCodec::new();
        let mut buf = BytesMut::from(&[0x00, 0x10, 0x00, 0x01, 0x20][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Frame(FrameError::TooLarge { .. }))
        ));
    }
}
