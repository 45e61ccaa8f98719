//! What a bench message carries, and PUBLISH frames encoded once and patched per message.
//!
//! Every payload starts with a 16-byte header, big-endian:
//!
//! | bytes | field |
//! |-------|-------|
//! | 0..4  | publisher index; the top bit marks a warm-up message |
//! | 4..8  | sequence number within that publisher's run |
//! | 8..16 | send time, nanoseconds since the run's [`Clock`] origin |
//!
//! followed by filler up to the payload size. Publishers and subscribers live in the same
//! process, so one monotonic clock serves both ends and latency needs no clock sync.
//!
//! A [`Template`] is the full PUBLISH frame encoded once by our codec; sending a message is one
//! copy of it plus three patches (packet identifier, header fields), with no encoding and no
//! allocation per message.

use std::time::Instant;

use supermq::protocol::{self, EncodeError, Packet, Properties, ProtocolVersion, Publish, QoS};

/// Bytes of the header at the start of every payload; the smallest payload size.
pub const HEADER: usize = 16;

/// Marks warm-up messages in the publisher field.
const WARMUP_BIT: u32 = 1 << 31;

/// The run's time origin.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds since the origin (wraps after 584 years).
    pub fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_nanos() as u64
    }
}

/// The header of a received payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub sequence: u32,
    pub sent_at: u64,
    pub warmup: bool,
}

impl Stamp {
    /// Reads the header; `None` if the payload is too short to be a bench message.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let header: &[u8; HEADER] = payload.get(..HEADER)?.try_into().ok()?;
        let [p0, p1, p2, p3, s0, s1, s2, s3, t @ ..] = *header;
        let publisher = u32::from_be_bytes([p0, p1, p2, p3]);
        Some(Stamp {
            publisher: publisher & !WARMUP_BIT,
            sequence: u32::from_be_bytes([s0, s1, s2, s3]),
            sent_at: u64::from_be_bytes(t),
            warmup: publisher & WARMUP_BIT != 0,
        })
    }
}

/// One publisher's PUBLISH frame, encoded once.
pub struct Template {
    frame: Vec<u8>,
    /// Where the packet identifier sits (QoS 1/2 only).
    packet_id_at: Option<usize>,
    /// Where the payload starts.
    payload_at: usize,
}

impl Template {
    pub fn new(
        topic: &str,
        qos: QoS,
        size: usize,
        version: ProtocolVersion,
    ) -> Result<Template, EncodeError> {
        let publish = Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.to_string(),
            // A placeholder, patched per message; non-zero so the frame is valid as encoded.
            packet_id: 1,
            properties: Properties::default(),
            payload: vec![b'x'; size.max(HEADER)].into(),
        };
        let mut frame = bytes::BytesMut::new();
        protocol::encode(&Packet::Publish(publish), version, &mut frame)?;
        let frame = frame.to_vec();
        // The fixed header: one byte, then the remaining length in 1 to 4 bytes.
        let length_bytes = frame[1..]
            .iter()
            .take_while(|byte| **byte & 0x80 != 0)
            .count()
            + 1;
        let topic_at = 1 + length_bytes;
        let packet_id_at = (qos != QoS::AtMostOnce).then_some(topic_at + 2 + topic.len());
        let payload_at = frame.len() - size.max(HEADER);
        Ok(Template {
            frame,
            packet_id_at,
            payload_at,
        })
    }

    /// Bytes per message on the wire.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Appends one message to `out`.
    pub fn append(&self, out: &mut Vec<u8>, packet_id: u16, stamp: Stamp) {
        let start = out.len();
        out.extend_from_slice(&self.frame);
        let frame = &mut out[start..];
        if let Some(at) = self.packet_id_at {
            frame[at..at + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
        let publisher = stamp.publisher | if stamp.warmup { WARMUP_BIT } else { 0 };
        let header = &mut frame[self.payload_at..self.payload_at + HEADER];
        header[0..4].copy_from_slice(&publisher.to_be_bytes());
        header[4..8].copy_from_slice(&stamp.sequence.to_be_bytes());
        header[8..16].copy_from_slice(&stamp.sent_at.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A patched frame must decode, with our codec, to the message we meant.
    #[test]
    fn patched_frames_decode_to_the_stamped_message() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                // 200 topic bytes + 300 payload bytes: a two-byte remaining length.
                let topic = "t".repeat(200);
                let template = Template::new(&topic, qos, 300, version).expect("encodes");
                let stamp = Stamp {
                    publisher: 7,
                    sequence: 123_456,
                    sent_at: 987_654_321,
                    warmup: true,
                };
                let mut out = vec![0xEE];
                template.append(&mut out, 0xBEEF, stamp);
                assert_eq!(out.len(), 1 + template.len());
                let mut buf = bytes::BytesMut::from(&out[1..]);
                let Ok(Some(Packet::Publish(publish))) =
                    protocol::decode(&mut buf, version, usize::MAX)
                else {
                    panic!("not a PUBLISH");
                };
                assert_eq!(publish.topic, topic);
                assert_eq!(publish.qos, qos);
                let want_id = if qos == QoS::AtMostOnce { 0 } else { 0xBEEF };
                assert_eq!(publish.packet_id, want_id);
                assert_eq!(publish.payload.len(), 300);
                assert_eq!(Stamp::read(&publish.payload), Some(stamp));
            }
        }
    }

    #[test]
    fn short_payloads_are_not_bench_messages() {
        assert_eq!(Stamp::read(b"hello"), None);
    }
}
