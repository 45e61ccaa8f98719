//! Encoding: packets to bytes.

use bytes::BytesMut;

use super::{EncodeError, Packet, ProtocolVersion};

/// Appends the encoding of `packet` for `version` to `out`; returns the number of bytes written.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let _ = (packet, version, out);
    unimplemented!("codec helper")
}
