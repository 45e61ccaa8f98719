//! Decoding: bytes to packets.

use bytes::BytesMut;

use super::{DecodeError, Packet, ProtocolVersion};

/// Decodes one packet from the front of `buf`, removing its bytes.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet. `version` is the connection's
/// negotiated version (ignored for CONNECT, which carries its own). A remaining length larger
/// than `max_packet_size` is an error as soon as the fixed header is read.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    unimplemented!("codec helper")
}
