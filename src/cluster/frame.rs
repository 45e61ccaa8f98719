//! The route wire format: how two nodes talk to each other.
//!
//! A route starts with the 4-byte magic `SMQR` from each side, then carries frames:
//! a `u32` big-endian length (of what follows), a one-byte kind, and the body. Strings are a
//! `u16` length and UTF-8 bytes. Messages carry an MQTT 5 PUBLISH packet encoded by our own
//! codec, so every MQTT 5 property survives the hop without a second encoding to maintain.
//! The magic makes a wrong port obvious at once: an MQTT client sends CONNECT (0x10) instead,
//! and a broker reading `S` (0x53) as a packet type closes the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::{self, Packet, ProtocolVersion, Publish};

/// Sent first by both sides of a route.
pub const MAGIC: &[u8; 4] = b"SMQR";

/// The route protocol version; a peer with another one is refused. Version 2: the secret is
/// proven by challenge and response instead of sent in the INFO.
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest control frame (INFO, interest): a filter is at most 65535 bytes, peers are bounded.
const MAX_CONTROL_FRAME: usize = 1024 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {size} bytes is larger than the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("message: {0}")]
    Publish(#[from] protocol::DecodeError),
}

/// What a node says about itself when a route opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub version: u16,
    pub node: String,
    pub cluster: String,
    pub advertise: String,
    /// A fresh random value per connection, which the peer's proof of the secret must cover
    /// (see [`super::handshake`]). Hex digits, in the place where version 1 sent the secret,
    /// so a version 1 node still reads this INFO and refuses it for its version.
    pub nonce: String,
    /// Advertise addresses of the peers the sender has routes to, for discovery.
    pub peers: Vec<String>,
}

/// A consumer group a forwarded message is meant for: the receiving node serves it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupRef {
    pub group: String,
    pub filter: String,
}

/// One frame on a route.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Info(Info),
    /// The handshake was refused; the text says why, for the other side's log.
    Refused(String),
    /// The accepting side's nonce: the dialler must prove the secret over it.
    Challenge(String),
    /// HMAC-SHA256 proof of the secret over the handshake (see [`super::handshake`]).
    Proof(Vec<u8>),
    /// Heartbeat: any frame proves the peer alive; this one is sent when nothing else is.
    Ping,
    /// The sender's first local subscriber to this filter appeared (count 0 → 1).
    Interest(String),
    /// The sender's last local subscriber to this filter went (count 1 → 0).
    NoInterest(String),
    /// A consumer group's local member count on the sender changed; 0 removes it.
    GroupWeight {
        group: String,
        filter: String,
        members: u32,
    },
    /// A published message. `plain`: deliver to the receiver's plain subscribers; `groups`:
    /// the groups whose member the receiver must pick; `redirected`: the sender got it from
    /// another node whose group members were gone, so the receiver must not pass it on again.
    Message {
        plain: bool,
        redirected: bool,
        groups: Vec<GroupRef>,
        publish: Publish,
    },
    /// A retained message from the sender's store, sent when a route opens: stored if the
    /// receiver has none for the topic, never delivered as a new publish.
    Retained(Publish),
    /// New peers to dial (discovery).
    Peers(Vec<String>),
    /// A client connected to the sender with this id: a connection with it here must close.
    ClientConnected(String),
}

mod kind {
    pub const INFO: u8 = 1;
    pub const REFUSED: u8 = 2;
    pub const PING: u8 = 3;
    pub const INTEREST: u8 = 4;
    pub const NO_INTEREST: u8 = 5;
    pub const GROUP_WEIGHT: u8 = 6;
    pub const MESSAGE: u8 = 7;
    pub const RETAINED: u8 = 8;
    pub const PEERS: u8 = 9;
    pub const CLIENT_CONNECTED: u8 = 10;
    pub const CHALLENGE: u8 = 11;
    pub const PROOF: u8 = 12;
}

impl Frame {
    /// The frame as bytes, length prefix included. Fails only for a message the MQTT codec
    /// cannot encode (too large).
    pub fn encode(&self) -> Result<Bytes, protocol::EncodeError> {
        let mut out = BytesMut::with_capacity(64);
        out.put_u32(0);
        match self {
            Frame::Info(info) => {
                out.put_u8(kind::INFO);
                out.put_u16(info.version);
                for s in [&info.node, &info.cluster, &info.advertise, &info.nonce] {
                    put_str(&mut out, s);
                }
                put_list(&mut out, &info.peers);
            }
            Frame::Refused(why) => {
                out.put_u8(kind::REFUSED);
                put_str(&mut out, why);
            }
            Frame::Challenge(nonce) => {
                out.put_u8(kind::CHALLENGE);
                put_str(&mut out, nonce);
            }
            Frame::Proof(tag) => {
                out.put_u8(kind::PROOF);
                put_bytes(&mut out, tag);
            }
            Frame::Ping => out.put_u8(kind::PING),
            Frame::Interest(filter) => {
                out.put_u8(kind::INTEREST);
                put_str(&mut out, filter);
            }
            Frame::NoInterest(filter) => {
                out.put_u8(kind::NO_INTEREST);
                put_str(&mut out, filter);
            }
            Frame::GroupWeight {
                group,
                filter,
                members,
            } => {
                out.put_u8(kind::GROUP_WEIGHT);
                put_str(&mut out, group);
                put_str(&mut out, filter);
                out.put_u32(*members);
            }
            Frame::Message {
                plain,
                redirected,
                groups,
                publish,
            } => {
                out.put_u8(kind::MESSAGE);
                out.put_u8(u8::from(*plain) | u8::from(*redirected) << 1);
                out.put_u16(u16::try_from(groups.len()).unwrap_or(u16::MAX));
                for g in groups.iter().take(usize::from(u16::MAX)) {
                    put_str(&mut out, &g.group);
                    put_str(&mut out, &g.filter);
                }
                put_publish(&mut out, publish)?;
            }
            Frame::Retained(publish) => {
                out.put_u8(kind::RETAINED);
                put_publish(&mut out, publish)?;
            }
            Frame::Peers(peers) => {
                out.put_u8(kind::PEERS);
                put_list(&mut out, peers);
            }
            Frame::ClientConnected(id) => {
                out.put_u8(kind::CLIENT_CONNECTED);
                put_str(&mut out, id);
            }
        }
        let len =
            u32::try_from(out.len() - 4).map_err(|_| protocol::EncodeError::TooLarge(out.len()))?;
        out[..4].copy_from_slice(&len.to_be_bytes());
        Ok(out.freeze())
    }

    /// Decodes a frame body (kind byte first, length prefix already removed).
    pub fn decode(mut body: BytesMut, max_packet: usize) -> Result<Frame, FrameError> {
        let kind = take_u8(&mut body, "empty")?;
        let frame = match kind {
            kind::INFO => {
                let version = take_u16(&mut body, "INFO")?;
                Frame::Info(Info {
                    version,
                    node: take_str(&mut body, "INFO")?,
                    cluster: take_str(&mut body, "INFO")?,
                    advertise: take_str(&mut body, "INFO")?,
                    nonce: take_str(&mut body, "INFO")?,
                    peers: take_list(&mut body, "INFO")?,
                })
            }
            kind::REFUSED => Frame::Refused(take_str(&mut body, "REFUSED")?),
            kind::CHALLENGE => Frame::Challenge(take_str(&mut body, "CHALLENGE")?),
            kind::PROOF => Frame::Proof(take_bytes(&mut body, "PROOF")?),
            kind::PING => Frame::Ping,
            kind::INTEREST => Frame::Interest(take_str(&mut body, "INTEREST")?),
            kind::NO_INTEREST => Frame::NoInterest(take_str(&mut body, "NO_INTEREST")?),
            kind::GROUP_WEIGHT => Frame::GroupWeight {
                group: take_str(&mut body, "GROUP_WEIGHT")?,
                filter: take_str(&mut body, "GROUP_WEIGHT")?,
                members: take_u32(&mut body, "GROUP_WEIGHT")?,
            },
            kind::MESSAGE => {
                let flags = take_u8(&mut body, "MESSAGE")?;
                let count = take_u16(&mut body, "MESSAGE")?;
                let mut groups = Vec::with_capacity(usize::from(count).min(64));
                for _ in 0..count {
                    groups.push(GroupRef {
                        group: take_str(&mut body, "MESSAGE")?,
                        filter: take_str(&mut body, "MESSAGE")?,
                    });
                }
                Frame::Message {
                    plain: flags & 1 != 0,
                    redirected: flags & 2 != 0,
                    groups,
                    publish: take_publish(&mut body, max_packet)?,
                }
            }
            kind::RETAINED => Frame::Retained(take_publish(&mut body, max_packet)?),
            kind::PEERS => Frame::Peers(take_list(&mut body, "PEERS")?),
            kind::CLIENT_CONNECTED => {
                Frame::ClientConnected(take_str(&mut body, "CLIENT_CONNECTED")?)
            }
            other => return Err(FrameError::UnknownKind(other)),
        };
        if !body.is_empty() && kind != kind::MESSAGE && kind != kind::RETAINED {
            return Err(FrameError::Malformed("trailing bytes in a"));
        }
        Ok(frame)
    }
}

/// Reads one frame. `max_packet` bounds message frames (the MQTT maximum packet size plus
/// the frame's own header and group list).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_packet: usize,
) -> Result<Frame, FrameError> {
    let len = reader.read_u32().await? as usize;
    let max = max_packet.saturating_add(MAX_CONTROL_FRAME);
    if len > max {
        return Err(FrameError::TooLarge { size: len, max });
    }
    let mut body = BytesMut::zeroed(len);
    reader.read_exact(&mut body).await?;
    Frame::decode(body, max_packet)
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Every string here is a topic, filter, name or address: MQTT bounds them to 65535 bytes
    // and the configuration to less; a longer one is cut rather than mis-framed.
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(usize::from(u16::MAX))];
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

fn put_list(out: &mut BytesMut, items: &[String]) {
    let count = items.len().min(usize::from(u16::MAX));
    out.put_u16(count as u16);
    for item in &items[..count] {
        put_str(out, item);
    }
}

fn put_publish(out: &mut BytesMut, publish: &Publish) -> Result<(), protocol::EncodeError> {
    protocol::encode(&Packet::Publish(publish.clone()), ProtocolVersion::V5, out).map(drop)
}

fn take_u8(body: &mut BytesMut, what: &'static str) -> Result<u8, FrameError> {
    if body.remaining() < 1 {
        return Err(FrameError::Malformed(what));
    }
    Ok(body.get_u8())
}

fn take_u16(body: &mut BytesMut, what: &'static str) -> Result<u16, FrameError> {
    if body.remaining() < 2 {
        return Err(FrameError::Malformed(what));
    }
    Ok(body.get_u16())
}

fn take_u32(body: &mut BytesMut, what: &'static str) -> Result<u32, FrameError> {
    if body.remaining() < 4 {
        return Err(FrameError::Malformed(what));
    }
    Ok(body.get_u32())
}

fn take_str(body: &mut BytesMut, what: &'static str) -> Result<String, FrameError> {
    String::from_utf8(take_bytes(body, what)?).map_err(|_| FrameError::Malformed(what))
}

fn take_bytes(body: &mut BytesMut, what: &'static str) -> Result<Vec<u8>, FrameError> {
    let len = usize::from(take_u16(body, what)?);
    if body.remaining() < len {
        return Err(FrameError::Malformed(what));
    }
    Ok(body.split_to(len).to_vec())
}

fn take_list(body: &mut BytesMut, what: &'static str) -> Result<Vec<String>, FrameError> {
    let count = take_u16(body, what)?;
    (0..count).map(|_| take_str(body, what)).collect()
}

fn take_publish(body: &mut BytesMut, max_packet: usize) -> Result<Publish, FrameError> {
    match protocol::decode(body, ProtocolVersion::V5, max_packet)? {
        Some(Packet::Publish(publish)) if body.is_empty() => Ok(publish),
        _ => Err(FrameError::Malformed("MESSAGE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    fn round_trip(frame: Frame) {
        let bytes = frame.encode().expect("encode");
        let body = BytesMut::from(&bytes[4..]);
        assert_eq!(Frame::decode(body, 1 << 20).expect("decode"), frame);
    }

    #[test]
    fn every_frame_round_trips() {
        let mut publish = Publish {
            qos: QoS::AtLeastOnce,
            packet_id: 1,
            retain: true,
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hi"),
            ..Publish::default()
        };
        publish.properties.content_type = Some("text/plain".into());
        publish.properties.user_properties = vec![("k".into(), "v".into())];
        round_trip(Frame::Info(Info {
            version: PROTOCOL_VERSION,
            node: "n1".into(),
            cluster: "c".into(),
            advertise: "127.0.0.1:1".into(),
            nonce: "00ff".into(),
            peers: vec!["a:1".into(), "b:2".into()],
        }));
        round_trip(Frame::Refused("no".into()));
        round_trip(Frame::Challenge("0a1b".into()));
        round_trip(Frame::Proof(vec![0, 1, 255]));
        round_trip(Frame::Ping);
        round_trip(Frame::Interest("a/+".into()));
        round_trip(Frame::NoInterest("#".into()));
        round_trip(Frame::GroupWeight {
            group: "g".into(),
            filter: "t/#".into(),
            members: 3,
        });
        round_trip(Frame::Message {
            plain: true,
            redirected: true,
            groups: vec![GroupRef {
                group: "g".into(),
                filter: "a/#".into(),
            }],
            publish: publish.clone(),
        });
        round_trip(Frame::Retained(publish));
        round_trip(Frame::Peers(vec!["x:1".into()]));
        round_trip(Frame::ClientConnected("c1".into()));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [
            &[][..],
            &[99],
            &[kind::INFO, 0],
            &[kind::MESSAGE, 1, 0, 0, 0x30],
        ] {
            assert!(Frame::decode(BytesMut::from(body), 1024).is_err());
        }
    }
}
