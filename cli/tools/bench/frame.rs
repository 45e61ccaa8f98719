//! Reading the broker's packets in the bench's hot loops without building packet values.
//!
//! A subscriber receives hundreds of thousands of PUBLISH packets a second and needs from each
//! only its QoS, packet identifier and the first 16 payload bytes; decoding it into a
//! [`supermq::protocol::Publish`] would allocate its topic for nothing. [`scan`] finds packet
//! boundaries and those few fields straight from the read buffer, checking every length it
//! follows. Rare packets (DISCONNECT) are handed to the real decoder for their details, and
//! the tests below hold the scanner to the codec's own encodings.
//!
//! Why not the codec itself: measured (issue 12; release builds, one publisher and one
//! subscriber against a release broker with default settings on the same 2-core machine,
//! interleaved runs), a bench whose hot loops decoded with `protocol::decode` and encoded their
//! acknowledgements with `protocol::encode` used about twice the CPU at QoS 0 (whole process:
//! median 0.042 s → 0.085 s for 500,000 messages, 0.27–0.37 s → 0.79–0.81 s for 5,000,000;
//! `client_cpu` 0.09 → 0.21 cores) and about 17% more at QoS 1 (0.151 s → 0.176 s for 200,000),
//! and at QoS 0 the broker it shares the machine with delivered less (5,000,000 messages:
//! 1.58–1.63 → 1.29–1.49 million/s). Profiled, the difference is the owned-packet API: every
//! delivery becomes a [`Packet`] that is built, moved and dropped (then several hundred bytes,
//! with the properties inline; 72 since issue 16), plus its topic `String` and
//! reference-counted slices. A
//! bench that fans messages out to many subscribers decodes many times what the broker
//! receives, so that per-message cost lands where it distorts the measurement most. A
//! borrowing decoder in `protocol` would let this file go; until then the scanner stays.

use bytes::BytesMut;

use supermq::protocol::{self, DecodeError, Packet, ProtocolVersion, reason};

use crate::client::ClientError;

/// Packet types, the high nibble of the first byte.
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const PINGRESP: u8 = 13;

/// One packet at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Publish {
        qos: u8,
        packet_id: u16,
        payload: &'a [u8],
    },
    /// PUBACK, PUBREC, PUBREL or PUBCOMP, with its 5.0 reason code (0 when absent).
    Ack {
        kind: u8,
        packet_id: u16,
        reason: u8,
    },
    PingResp,
    /// Anything else, whole, for [`unexpected`].
    Other(&'a [u8]),
}

/// What is at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan<'a> {
    /// A whole packet and its length in bytes.
    Frame(Frame<'a>, usize),
    /// Not a whole packet yet; the packet needs this many bytes in all (once known).
    Partial(Option<usize>),
}

/// Looks at the packet at the front of `buf`.
pub fn scan(buf: &[u8], v5: bool) -> Result<Scan<'_>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(Scan::Partial(None));
    };
    let Some((remaining, length_bytes)) = varint(&buf[1..])? else {
        return Ok(Scan::Partial(None));
    };
    let total = 1 + length_bytes + remaining;
    if buf.len() < total {
        return Ok(Scan::Partial(Some(total)));
    }
    let body = &buf[1 + length_bytes..total];
    let frame = match first >> 4 {
        PUBLISH => publish(first, body, v5)?,
        kind @ (PUBACK | PUBREC | PUBREL | PUBCOMP) => {
            let [high, low, rest @ ..] = body else {
                return Err(DecodeError::Truncated);
            };
            Frame::Ack {
                kind,
                packet_id: u16::from_be_bytes([*high, *low]),
                reason: rest.first().copied().unwrap_or(reason::SUCCESS),
            }
        }
        PINGRESP => Frame::PingResp,
        _ => Frame::Other(&buf[..total]),
    };
    Ok(Scan::Frame(frame, total))
}

fn publish(first: u8, body: &[u8], v5: bool) -> Result<Frame<'_>, DecodeError> {
    let qos = (first >> 1) & 0b11;
    let [high, low, rest @ ..] = body else {
        return Err(DecodeError::Truncated);
    };
    let topic_len = usize::from(u16::from_be_bytes([*high, *low]));
    let mut rest = rest.get(topic_len..).ok_or(DecodeError::Truncated)?;
    let mut packet_id = 0;
    if qos > 0 {
        let [high, low, tail @ ..] = rest else {
            return Err(DecodeError::Truncated);
        };
        packet_id = u16::from_be_bytes([*high, *low]);
        rest = tail;
    }
    if v5 {
        let (properties, length_bytes) = varint(rest)?.ok_or(DecodeError::Truncated)?;
        rest = rest
            .get(length_bytes + properties..)
            .ok_or(DecodeError::Truncated)?;
    }
    Ok(Frame::Publish {
        qos,
        packet_id,
        payload: rest,
    })
}

/// A variable byte integer: `None` if incomplete, else its value and length.
fn varint(bytes: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0;
    for (i, &byte) in bytes.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::MalformedVarInt)
    } else {
        Ok(None)
    }
}

/// The error for a packet the bench does not expect: a DISCONNECT with its reason (decoded by
/// the real codec), or the packet's name.
pub fn unexpected(frame: &[u8], version: ProtocolVersion) -> ClientError {
    let mut buf = BytesMut::from(frame);
    match protocol::decode(&mut buf, version, usize::MAX) {
        Ok(Some(Packet::Disconnect(disconnect))) => ClientError::Disconnected {
            code: disconnect.reason,
            name: reason::name(disconnect.reason),
            reason: disconnect.properties.into_values().reason_string,
        },
        Ok(Some(packet)) => ClientError::Unexpected(packet.name()),
        Ok(None) => ClientError::Decode(DecodeError::Truncated),
        Err(error) => ClientError::Decode(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use supermq::protocol::{Ack, Properties, Publish, QoS};

    fn encoded(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
        let mut out = BytesMut::new();
        protocol::encode(packet, version, &mut out).expect("encodes");
        out.to_vec()
    }

    #[test]
    fn publish_fields_match_the_codec() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let mut properties = Properties::default();
                if version.is_v5() {
                    properties.user_properties.push(("k".into(), "v".into()));
                }
                let publish = Publish {
                    dup: false,
                    qos,
                    retain: false,
                    topic: "a/b".into(),
                    packet_id: if qos == QoS::AtMostOnce { 0 } else { 513 },
                    properties,
                    payload: vec![7; 200].into(),
                };
                let bytes = encoded(&Packet::Publish(publish.clone()), version);
                let want = Frame::Publish {
                    qos: qos as u8,
                    packet_id: publish.packet_id,
                    payload: &publish.payload,
                };
                assert_eq!(
                    scan(&bytes, version.is_v5()),
                    Ok(Scan::Frame(want, bytes.len()))
                );
                // Every strict prefix is partial, never an error or a wrong frame.
                for cut in 0..bytes.len() {
                    let Ok(Scan::Partial(_)) = scan(&bytes[..cut], version.is_v5()) else {
                        panic!("prefix of {cut} bytes is not partial");
                    };
                }
            }
        }
    }

    #[test]
    fn acks_carry_their_reason() {
        let mut ack = Ack::new(9);
        ack.reason = reason::NOT_AUTHORIZED;
        let bytes = encoded(&Packet::PubAck(ack), ProtocolVersion::V5);
        let want = Frame::Ack {
            kind: PUBACK,
            packet_id: 9,
            reason: reason::NOT_AUTHORIZED,
        };
        assert_eq!(scan(&bytes, true), Ok(Scan::Frame(want, bytes.len())));
        let bytes = encoded(&Packet::PubRel(Ack::new(10)), ProtocolVersion::V311);
        let want = Frame::Ack {
            kind: PUBREL,
            packet_id: 10,
            reason: 0,
        };
        assert_eq!(scan(&bytes, false), Ok(Scan::Frame(want, 4)));
    }

    #[test]
    fn lengths_that_point_past_the_packet_are_errors() {
        // PUBLISH whose topic length (0x00FF) runs past its 4-byte body.
        assert_eq!(
            scan(&[0x30, 0x04, 0x00, 0xFF, b'a', b'b'], false),
            Err(DecodeError::Truncated)
        );
        // A remaining length that never ends.
        assert_eq!(
            scan(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], false),
            Err(DecodeError::MalformedVarInt)
        );
    }

    #[test]
    fn a_disconnect_names_its_reason() {
        let mut disconnect = protocol::Disconnect::new(reason::SESSION_TAKEN_OVER);
        disconnect.properties.reason_string = Some("another connection".into());
        let bytes = encoded(&Packet::Disconnect(disconnect), ProtocolVersion::V5);
        let error = unexpected(&bytes, ProtocolVersion::V5);
        assert_eq!(
            error.to_string(),
            "the broker closed the connection: DISCONNECT 0x8e (session taken over): another \
             connection"
        );
    }
}
