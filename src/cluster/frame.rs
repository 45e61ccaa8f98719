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

use crate::broker::{GroupRef, MovedMessage, MovedSubscription, Version};
use crate::protocol::{
    self, Delivered, Packet, Properties, ProtocolVersion, Publish, SubscriptionOptions,
};

/// Sent first by both sides of a route.
pub const MAGIC: &[u8; 4] = b"SMQR";

/// The route protocol version; a peer with another one is refused. Version 2: the secret is
/// proven by challenge and response instead of sent in the INFO. Version 3: retained messages
/// and clears carry a version (MESSAGE with RETAIN, RETAINED), and RETAINED carries clears.
/// Version 4: INFO carries the sender's epoch; messages are numbered (SEQ) and acknowledged
/// (ACK), SYNCED ends the full interest set, and sessions move between nodes (SESSION_*).
pub const PROTOCOL_VERSION: u16 = 5;

/// MESSAGE flag: a version (`u64` clock, `string` node) follows the group list.
const VERSIONED: u8 = 0x04;

/// Largest control frame (interest, discovery) on an established route: a filter is at most
/// 65535 bytes, peers are bounded.
const MAX_CONTROL_FRAME: usize = 1024 * 1024;

/// Largest handshake frame, read before the peer has proved the secret. An INFO is four short
/// strings and a peer list, which the sender keeps within [`MAX_INFO_PEERS_BYTES`].
pub const MAX_HANDSHAKE_FRAME: usize = 64 * 1024;

/// Bytes of peer addresses an INFO carries at most, so it stays within
/// [`MAX_HANDSHAKE_FRAME`] whatever `cluster.max_peers` is.
pub const MAX_INFO_PEERS_BYTES: usize = 48 * 1024;

/// Bytes a route's reader asks the socket for at least, so one system call brings many frames.
const READ_CHUNK: usize = 16 * 1024;

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
    /// Drawn at random when the sender started: a peer that comes back with another epoch
    /// restarted, and holds nothing of what it had ([`super::link`]).
    pub epoch: u64,
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
    /// The answer to a PING, which measures the route's round trip.
    Pong,
    /// The sender's first local subscriber to this filter appeared (count 0 → 1).
    Interest(String),
    /// The sender's last local subscriber to this filter went (count 1 → 0).
    NoInterest(String),
    /// A consumer group's local members on the sender changed: `online` connected, `offline`
    /// waiting in persistent sessions; both 0 removes the group.
    GroupWeight {
        group: String,
        filter: String,
        online: u32,
        offline: u32,
    },
    /// A published message. `plain`: deliver to the receiver's plain subscribers; `groups`:
    /// the groups whose member the receiver must pick; `redirected`: the sender got it from
    /// another node whose group members were gone, so the receiver must not pass it on again.
    /// `version`: the retained set's or clear's version, sent with (and only with) RETAIN.
    Message {
        plain: bool,
        redirected: bool,
        groups: Vec<GroupRef>,
        version: Option<Version>,
        publish: Publish,
    },
    /// A retained message, or the tombstone of a clear (empty payload), from the sender's
    /// store, sent when a route opens: applied if its version is newer than the receiver's
    /// for the topic, never delivered as a new publish.
    Retained {
        version: Version,
        publish: Publish,
    },
    /// New peers to dial (discovery).
    Peers(Vec<String>),
    /// The full interest set sent when the route registered is complete.
    Synced,
    /// The next MESSAGE frame's number (each one after it is the previous one's plus one).
    Seq(u64),
    /// The sender took every message numbered up to this one into its sessions' queues.
    Ack(u64),
    /// The sender is shutting down: when this route ends, nothing is to be kept for it.
    Goodbye,
    /// A question of the admin API for the receiver ([`super::inspect`]).
    Ask {
        id: u64,
        question: String,
    },
    /// The answer, as JSON; empty if the sender could not answer.
    Answer {
        id: u64,
        body: Vec<u8>,
    },
    /// A client connected to the sender with clean start = 0 and has no session there: the
    /// receiver hands the session over if it has it (SESSION, its items, SESSION_END), or
    /// answers SESSION_NONE.
    SessionWanted {
        request: u64,
        client_id: String,
        username: Option<String>,
    },
    SessionNone(u64),
    /// A session handed over: its inbound QoS 2 ids not yet released. Its subscriptions
    /// and messages follow, then SESSION_END.
    Session {
        request: u64,
        inbound_qos2: Vec<u16>,
    },
    SessionSubscription {
        request: u64,
        subscription: MovedSubscription,
    },
    SessionMessage {
        request: u64,
        message: Box<MovedMessage>,
    },
    SessionEnd(u64),
    /// A client connected to the sender with this id: a connection with it here must close.
    ClientConnected {
        client_id: String,
        /// When it connected, in microseconds since the Unix epoch.
        connected_at: u64,
        /// It connected with clean start = 1: its session elsewhere is discarded too.
        clean_start: bool,
    },
    /// The sender read this client's session back from its store at start-up and the client
    /// has not connected since; its client last connected at `connected_at` (µs since the
    /// Unix epoch). A node with a newer session for it answers CLIENT_CONNECTED with clean
    /// start = 1, which discards the stale one: a session that moved while its old node was
    /// down is not resurrected there.
    SessionHeld {
        client_id: String,
        connected_at: u64,
    },
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
    pub const SYNCED: u8 = 13;
    pub const SEQ: u8 = 14;
    pub const ACK: u8 = 15;
    pub const SESSION_WANTED: u8 = 16;
    pub const SESSION_NONE: u8 = 17;
    pub const SESSION: u8 = 18;
    pub const SESSION_SUBSCRIPTION: u8 = 19;
    pub const SESSION_MESSAGE: u8 = 20;
    pub const SESSION_END: u8 = 21;
    pub const GOODBYE: u8 = 22;
    pub const ASK: u8 = 23;
    pub const ANSWER: u8 = 24;
    pub const PONG: u8 = 25;
    pub const SESSION_HELD: u8 = 26;
}

/// SESSION_MESSAGE flags.
const RELEASED: u8 = 0x01;
const GROUPED: u8 = 0x02;

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
                out.put_u64(info.epoch);
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
            Frame::Pong => out.put_u8(kind::PONG),
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
                online,
                offline,
            } => {
                out.put_u8(kind::GROUP_WEIGHT);
                put_str(&mut out, group);
                put_str(&mut out, filter);
                out.put_u32(*online);
                out.put_u32(*offline);
            }
            Frame::Message {
                plain,
                redirected,
                groups,
                version,
                publish,
            } => {
                put_message_head(&mut out, *plain, *redirected, groups, version.as_ref());
                put_publish(&mut out, publish)?;
            }
            Frame::Retained { version, publish } => {
                out.put_u8(kind::RETAINED);
                put_version(&mut out, version);
                put_publish(&mut out, publish)?;
            }
            Frame::Peers(peers) => {
                out.put_u8(kind::PEERS);
                put_list(&mut out, peers);
            }
            Frame::Synced => out.put_u8(kind::SYNCED),
            Frame::Goodbye => out.put_u8(kind::GOODBYE),
            Frame::SessionHeld {
                client_id,
                connected_at,
            } => {
                out.put_u8(kind::SESSION_HELD);
                put_str(&mut out, client_id);
                out.put_u64(*connected_at);
            }
            Frame::Ask { id, question } => {
                out.put_u8(kind::ASK);
                out.put_u64(*id);
                put_str(&mut out, question);
            }
            Frame::Answer { id, body } => {
                out.put_u8(kind::ANSWER);
                out.put_u64(*id);
                out.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
                out.put_slice(body);
            }
            Frame::Seq(seq) => {
                out.put_u8(kind::SEQ);
                out.put_u64(*seq);
            }
            Frame::Ack(seq) => {
                out.put_u8(kind::ACK);
                out.put_u64(*seq);
            }
            Frame::SessionWanted {
                request,
                client_id,
                username,
            } => {
                out.put_u8(kind::SESSION_WANTED);
                out.put_u64(*request);
                put_str(&mut out, client_id);
                out.put_u8(u8::from(username.is_some()));
                put_str(&mut out, username.as_deref().unwrap_or_default());
            }
            Frame::SessionNone(request) => {
                out.put_u8(kind::SESSION_NONE);
                out.put_u64(*request);
            }
            Frame::Session {
                request,
                inbound_qos2,
            } => {
                out.put_u8(kind::SESSION);
                out.put_u64(*request);
                out.put_u32(u32::try_from(inbound_qos2.len()).unwrap_or(u32::MAX));
                for id in inbound_qos2 {
                    out.put_u16(*id);
                }
            }
            Frame::SessionSubscription {
                request,
                subscription,
            } => {
                out.put_u8(kind::SESSION_SUBSCRIPTION);
                out.put_u64(*request);
                put_str(&mut out, &subscription.filter);
                out.put_u8(subscription.options.to_byte());
                out.put_u32(subscription.id.unwrap_or(0));
            }
            Frame::SessionMessage { request, message } => {
                out.put_u8(kind::SESSION_MESSAGE);
                out.put_u64(*request);
                let (packet_id, released) = message.in_flight.unwrap_or((0, false));
                out.put_u16(packet_id);
                let grouped = if message.group.is_some() { GROUPED } else { 0 };
                out.put_u8(if released { RELEASED } else { 0 } | grouped);
                if let Some(group) = &message.group {
                    put_str(&mut out, &group.group);
                    put_str(&mut out, &group.filter);
                }
                put_publish(&mut out, &message.publish)?;
            }
            Frame::SessionEnd(request) => {
                out.put_u8(kind::SESSION_END);
                out.put_u64(*request);
            }
            Frame::ClientConnected {
                client_id,
                connected_at,
                clean_start,
            } => {
                out.put_u8(kind::CLIENT_CONNECTED);
                put_str(&mut out, client_id);
                out.put_u64(*connected_at);
                out.put_u8(u8::from(*clean_start));
            }
        }
        finish(out)
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
                    // Versions 1–3 had no epoch: such an INFO still decodes, so the peer
                    // is refused for its version rather than for a malformed frame.
                    epoch: if body.is_empty() {
                        0
                    } else {
                        take_u64(&mut body, "INFO")?
                    },
                })
            }
            kind::REFUSED => Frame::Refused(take_str(&mut body, "REFUSED")?),
            kind::CHALLENGE => Frame::Challenge(take_str(&mut body, "CHALLENGE")?),
            kind::PROOF => Frame::Proof(take_bytes(&mut body, "PROOF")?),
            kind::PING => Frame::Ping,
            kind::PONG => Frame::Pong,
            kind::INTEREST => Frame::Interest(take_str(&mut body, "INTEREST")?),
            kind::NO_INTEREST => Frame::NoInterest(take_str(&mut body, "NO_INTEREST")?),
            kind::GROUP_WEIGHT => Frame::GroupWeight {
                group: take_str(&mut body, "GROUP_WEIGHT")?,
                filter: take_str(&mut body, "GROUP_WEIGHT")?,
                online: take_u32(&mut body, "GROUP_WEIGHT")?,
                offline: take_u32(&mut body, "GROUP_WEIGHT")?,
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
                let version = if flags & VERSIONED != 0 {
                    Some(take_version(&mut body, "MESSAGE")?)
                } else {
                    None
                };
                Frame::Message {
                    plain: flags & 1 != 0,
                    redirected: flags & 2 != 0,
                    groups,
                    version,
                    publish: take_publish(&mut body, max_packet)?,
                }
            }
            kind::RETAINED => Frame::Retained {
                version: take_version(&mut body, "RETAINED")?,
                publish: take_publish(&mut body, max_packet)?,
            },
            kind::PEERS => Frame::Peers(take_list(&mut body, "PEERS")?),
            kind::SYNCED => Frame::Synced,
            kind::GOODBYE => Frame::Goodbye,
            kind::SESSION_HELD => Frame::SessionHeld {
                client_id: take_str(&mut body, "SESSION_HELD")?,
                connected_at: take_u64(&mut body, "SESSION_HELD")?,
            },
            kind::ASK => Frame::Ask {
                id: take_u64(&mut body, "ASK")?,
                question: take_str(&mut body, "ASK")?,
            },
            kind::ANSWER => {
                let id = take_u64(&mut body, "ANSWER")?;
                let len = take_u32(&mut body, "ANSWER")? as usize;
                if body.remaining() != len {
                    return Err(FrameError::Malformed("ANSWER"));
                }
                Frame::Answer {
                    id,
                    body: body.split_to(len).to_vec(),
                }
            }
            kind::SEQ => Frame::Seq(take_u64(&mut body, "SEQ")?),
            kind::ACK => Frame::Ack(take_u64(&mut body, "ACK")?),
            kind::SESSION_WANTED => Frame::SessionWanted {
                request: take_u64(&mut body, "SESSION_WANTED")?,
                client_id: take_str(&mut body, "SESSION_WANTED")?,
                username: {
                    let present = take_u8(&mut body, "SESSION_WANTED")? != 0;
                    let name = take_str(&mut body, "SESSION_WANTED")?;
                    present.then_some(name)
                },
            },
            kind::SESSION_NONE => Frame::SessionNone(take_u64(&mut body, "SESSION_NONE")?),
            kind::SESSION => {
                let request = take_u64(&mut body, "SESSION")?;
                let count = take_u32(&mut body, "SESSION")? as usize;
                if body.remaining() != count * 2 {
                    return Err(FrameError::Malformed("SESSION"));
                }
                Frame::Session {
                    request,
                    inbound_qos2: (0..count).map(|_| body.get_u16()).collect(),
                }
            }
            kind::SESSION_SUBSCRIPTION => Frame::SessionSubscription {
                request: take_u64(&mut body, "SESSION_SUBSCRIPTION")?,
                subscription: MovedSubscription {
                    filter: take_str(&mut body, "SESSION_SUBSCRIPTION")?,
                    options: SubscriptionOptions::from_byte(take_u8(
                        &mut body,
                        "SESSION_SUBSCRIPTION",
                    )?)
                    .ok_or(FrameError::Malformed("SESSION_SUBSCRIPTION"))?,
                    id: Some(take_u32(&mut body, "SESSION_SUBSCRIPTION")?).filter(|&id| id != 0),
                },
            },
            kind::SESSION_MESSAGE => {
                let request = take_u64(&mut body, "SESSION_MESSAGE")?;
                let packet_id = take_u16(&mut body, "SESSION_MESSAGE")?;
                let flags = take_u8(&mut body, "SESSION_MESSAGE")?;
                let group = if flags & GROUPED != 0 {
                    Some(GroupRef {
                        group: take_str(&mut body, "SESSION_MESSAGE")?,
                        filter: take_str(&mut body, "SESSION_MESSAGE")?,
                    })
                } else {
                    None
                };
                Frame::SessionMessage {
                    request,
                    message: Box::new(MovedMessage {
                        in_flight: (packet_id != 0).then_some((packet_id, flags & RELEASED != 0)),
                        group,
                        publish: take_publish(&mut body, max_packet)?,
                    }),
                }
            }
            kind::SESSION_END => Frame::SessionEnd(take_u64(&mut body, "SESSION_END")?),
            kind::CLIENT_CONNECTED => Frame::ClientConnected {
                client_id: take_str(&mut body, "CLIENT_CONNECTED")?,
                connected_at: take_u64(&mut body, "CLIENT_CONNECTED")?,
                clean_start: take_u8(&mut body, "CLIENT_CONNECTED")? != 0,
            },
            other => return Err(FrameError::UnknownKind(other)),
        };
        // Those that end with a PUBLISH checked it filled the frame.
        if !body.is_empty()
            && ![kind::MESSAGE, kind::RETAINED, kind::SESSION_MESSAGE].contains(&kind)
        {
            return Err(FrameError::Malformed("trailing bytes in a"));
        }
        Ok(frame)
    }
}

/// A MESSAGE frame to encode straight from a stored message's parts, without assembling a
/// [`Publish`] (and cloning its topic and properties) first: what a node does for every
/// message it forwards.
pub struct Outgoing<'a> {
    pub plain: bool,
    pub redirected: bool,
    pub groups: &'a [GroupRef],
    /// A retained message's version (and only a retained message's).
    pub version: Option<&'a Version>,
    pub topic: &'a str,
    /// Without message expiry or subscription identifiers: `delivered` carries those.
    pub properties: &'a Properties,
    pub payload: &'a [u8],
    pub delivered: Delivered<'a>,
}

impl Outgoing<'_> {
    /// The frame as bytes, length prefix included; it decodes as the equivalent
    /// [`Frame::Message`] (properties may come in another order). Fails only for a message
    /// too large to encode.
    pub fn encode(&self) -> Result<Bytes, protocol::EncodeError> {
        let mut out = BytesMut::with_capacity(64 + self.topic.len() + self.payload.len());
        out.put_u32(0);
        put_message_head(
            &mut out,
            self.plain,
            self.redirected,
            self.groups,
            self.version,
        );
        protocol::encode_publish(
            self.topic,
            self.properties,
            self.payload,
            &self.delivered,
            ProtocolVersion::V5,
            &mut out,
        )?;
        finish(out)
    }
}

/// Reads one handshake frame, and not a byte more, as the reader is handed on to the route
/// afterwards. The peer has proved nothing yet: a length over [`MAX_HANDSHAKE_FRAME`] is
/// refused before anything is allocated for it, and no MESSAGE frame decodes.
pub async fn read_handshake_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Frame, FrameError> {
    let len = reader.read_u32().await? as usize;
    if len > MAX_HANDSHAKE_FRAME {
        return Err(FrameError::TooLarge {
            size: len,
            max: MAX_HANDSHAKE_FRAME,
        });
    }
    let mut body = BytesMut::zeroed(len);
    reader.read_exact(&mut body).await?;
    Frame::decode(body, 0)
}

/// A running route's frame reader: reads as much as the socket has into one buffer and cuts
/// the frames out of it, so a busy route costs one system call per many frames, and a
/// message's payload stays a slice of that buffer rather than a copy.
pub struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
    max_packet: usize,
    /// Bytes read from the connection so far.
    read: u64,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, max_packet: usize) -> FrameReader<R> {
        FrameReader {
            reader,
            buf: BytesMut::new(),
            max_packet,
            read: 0,
        }
    }

    /// Bytes read from the connection so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Whether a whole frame is buffered, so [`FrameReader::next`] returns without reading.
    pub fn has_frame(&self) -> bool {
        self.buf
            .first_chunk::<4>()
            .is_some_and(|head| self.buf.len() >= 4 + u32::from_be_bytes(*head) as usize)
    }

    /// The next frame. Cancel safe: bytes read before a cancellation stay buffered.
    pub async fn next(&mut self) -> Result<Frame, FrameError> {
        loop {
            let mut wanted = READ_CHUNK;
            if let Some(head) = self.buf.first_chunk::<4>() {
                let len = u32::from_be_bytes(*head) as usize;
                check_len(len, self.max_packet)?;
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    let body = self.buf.split_to(len);
                    return Frame::decode(body, self.max_packet);
                }
                wanted = wanted.max(4 + len - self.buf.len());
            }
            self.buf.reserve(wanted);
            let read = self.reader.read_buf(&mut self.buf).await?;
            if read == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            self.read += read as u64;
        }
    }
}

fn check_len(len: usize, max_packet: usize) -> Result<(), FrameError> {
    let max = max_packet.saturating_add(MAX_CONTROL_FRAME);
    if len > max {
        return Err(FrameError::TooLarge { size: len, max });
    }
    Ok(())
}

/// Writes the length prefix `out` was started with.
fn finish(mut out: BytesMut) -> Result<Bytes, protocol::EncodeError> {
    let len =
        u32::try_from(out.len() - 4).map_err(|_| protocol::EncodeError::TooLarge(out.len()))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out.freeze())
}

/// A MESSAGE frame's kind, flags, group list and version, before its PUBLISH.
fn put_message_head(
    out: &mut BytesMut,
    plain: bool,
    redirected: bool,
    groups: &[GroupRef],
    version: Option<&Version>,
) {
    out.put_u8(kind::MESSAGE);
    let versioned = if version.is_some() { VERSIONED } else { 0 };
    out.put_u8(u8::from(plain) | u8::from(redirected) << 1 | versioned);
    out.put_u16(u16::try_from(groups.len()).unwrap_or(u16::MAX));
    for g in groups.iter().take(usize::from(u16::MAX)) {
        put_str(out, &g.group);
        put_str(out, &g.filter);
    }
    if let Some(version) = version {
        put_version(out, version);
    }
}

/// A retained set's or clear's version: `u64` clock reading, `string` node.
fn put_version(out: &mut BytesMut, version: &Version) {
    out.put_u64(version.hlc);
    put_str(out, &version.node);
}

fn take_version(body: &mut BytesMut, what: &'static str) -> Result<Version, FrameError> {
    if body.remaining() < 8 {
        return Err(FrameError::Malformed(what));
    }
    let hlc = body.get_u64();
    Ok(Version {
        hlc,
        node: take_str(body, what)?.into(),
    })
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

fn take_u64(body: &mut BytesMut, what: &'static str) -> Result<u64, FrameError> {
    if body.remaining() < 8 {
        return Err(FrameError::Malformed(what));
    }
    Ok(body.get_u64())
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
    use crate::protocol::{PropertyValues, QoS};

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
            epoch: 0x0123_4567_89ab_cdef,
        }));
        round_trip(Frame::Synced);
        round_trip(Frame::Goodbye);
        round_trip(Frame::SessionHeld {
            client_id: "c".into(),
            connected_at: 7,
        });
        round_trip(Frame::Ask {
            id: 5,
            question: "nodes".into(),
        });
        round_trip(Frame::Answer {
            id: 5,
            body: b"{}".to_vec(),
        });
        round_trip(Frame::Seq(7));
        round_trip(Frame::Ack(u64::MAX));
        round_trip(Frame::Refused("no".into()));
        round_trip(Frame::Challenge("0a1b".into()));
        round_trip(Frame::Proof(vec![0, 1, 255]));
        round_trip(Frame::Ping);
        round_trip(Frame::Pong);
        round_trip(Frame::Interest("a/+".into()));
        round_trip(Frame::NoInterest("#".into()));
        round_trip(Frame::GroupWeight {
            group: "g".into(),
            filter: "t/#".into(),
            online: 3,
            offline: 1,
        });
        round_trip(Frame::Message {
            plain: true,
            redirected: true,
            groups: vec![GroupRef {
                group: "g".into(),
                filter: "a/#".into(),
            }],
            version: Some(Version {
                hlc: 0x0123_4567_89ab_cdef,
                node: "n2".into(),
            }),
            publish: publish.clone(),
        });
        round_trip(Frame::Message {
            plain: false,
            redirected: false,
            groups: Vec::new(),
            version: None,
            publish: Publish {
                topic: "x".into(),
                ..Publish::default()
            },
        });
        round_trip(Frame::Retained {
            version: Version {
                hlc: 7,
                node: "n1".into(),
            },
            publish,
        });
        round_trip(Frame::Peers(vec!["x:1".into()]));
        round_trip(Frame::ClientConnected {
            client_id: "c1".into(),
            connected_at: 1_765_000_000_000_000,
            clean_start: true,
        });
        round_trip(Frame::SessionWanted {
            request: 3,
            client_id: "c1".into(),
            username: Some("u".into()),
        });
        round_trip(Frame::SessionWanted {
            request: 4,
            client_id: "c1".into(),
            username: None,
        });
        round_trip(Frame::SessionNone(3));
        round_trip(Frame::Session {
            request: 3,
            inbound_qos2: vec![1, 65535],
        });
        round_trip(Frame::SessionSubscription {
            request: 3,
            subscription: MovedSubscription {
                filter: "$share/g/a/#".into(),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: false,
                    retain_as_published: true,
                    retain_handling: 2,
                },
                id: Some(42),
            },
        });
        let mut publish = Publish {
            qos: QoS::AtLeastOnce,
            packet_id: 9,
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hi"),
            ..Publish::default()
        };
        publish.properties.subscription_identifiers = vec![42];
        round_trip(Frame::SessionMessage {
            request: 3,
            message: Box::new(MovedMessage {
                publish,
                in_flight: Some((9, true)),
                group: Some(GroupRef {
                    group: "g".into(),
                    filter: "a/#".into(),
                }),
            }),
        });
        round_trip(Frame::SessionEnd(3));
    }

    /// The forwarding fast path writes what the general encoder would, as the peer reads it.
    #[test]
    fn outgoing_encodes_as_the_equivalent_message_frame() {
        let groups = vec![GroupRef {
            group: "g".into(),
            filter: "a/#".into(),
        }];
        let properties = PropertyValues {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..PropertyValues::default()
        }
        .into();
        let version = Version {
            hlc: 42,
            node: "n1".into(),
        };
        for (qos, retain, expiry) in [
            (QoS::AtMostOnce, false, None),
            (QoS::AtLeastOnce, true, Some(30)),
            (QoS::ExactlyOnce, false, Some(1)),
        ] {
            let version = retain.then_some(&version);
            let outgoing = Outgoing {
                plain: true,
                redirected: false,
                groups: &groups,
                version,
                topic: "a/b",
                properties: &properties,
                payload: b"payload",
                delivered: Delivered {
                    qos,
                    retain,
                    packet_id: u16::from(qos != QoS::AtMostOnce),
                    message_expiry_interval: expiry,
                    ..Delivered::default()
                },
            };
            let mut publish = Publish {
                qos,
                retain,
                packet_id: u16::from(qos != QoS::AtMostOnce),
                topic: "a/b".into(),
                payload: Bytes::from_static(b"payload"),
                properties: properties.clone(),
                ..Publish::default()
            };
            publish.properties.message_expiry_interval = expiry;
            let frame = Frame::Message {
                plain: true,
                redirected: false,
                groups: groups.clone(),
                version: version.cloned(),
                publish,
            };
            let bytes = outgoing.encode().expect("encodes");
            let length = u32::from_be_bytes(*bytes.first_chunk().expect("a length"));
            assert_eq!(length as usize, bytes.len() - 4);
            let decoded = Frame::decode(BytesMut::from(&bytes[4..]), 1 << 20).expect("decodes");
            assert_eq!(decoded, frame);
        }
    }

    /// Frames split anywhere by the socket, and many in one read, come out whole and in order.
    #[tokio::test]
    async fn the_frame_reader_cuts_frames_out_of_any_reads() {
        let frames: Vec<Frame> = (0..200)
            .map(|i| match i % 3 {
                0 => Frame::Ping,
                1 => Frame::Interest(format!("t/{i}")),
                _ => Frame::Message {
                    plain: true,
                    redirected: false,
                    groups: Vec::new(),
                    version: None,
                    publish: Publish {
                        topic: format!("t/{i}"),
                        payload: Bytes::from(vec![7u8; i * 50]),
                        ..Publish::default()
                    },
                },
            })
            .collect();
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend_from_slice(&frame.encode().expect("encodes"));
        }
        // A pipe of 7 bytes: frames arrive in pieces smaller than their header.
        let (mut tx, rx) = tokio::io::duplex(7);
        let writer =
            tokio::spawn(async move { tokio::io::AsyncWriteExt::write_all(&mut tx, &wire).await });
        let mut reader = FrameReader::new(rx, 1 << 20);
        for frame in &frames {
            assert_eq!(&reader.next().await.expect("a frame"), frame);
        }
        writer.await.expect("joined").expect("written");
        assert!(
            matches!(reader.next().await, Err(FrameError::Io(_))),
            "end of stream"
        );
    }

    #[tokio::test]
    async fn the_frame_reader_refuses_an_oversized_length_before_reading_it() {
        let (mut tx, rx) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut tx, &u32::MAX.to_be_bytes())
            .await
            .expect("written");
        let mut reader = FrameReader::new(rx, 1024);
        assert!(matches!(
            reader.next().await,
            Err(FrameError::TooLarge { .. })
        ));
    }

    /// Before the peer has proved anything, a length over 64 KiB is refused as soon as it is
    /// read: nothing is allocated for it and nothing more is read.
    #[tokio::test]
    async fn a_handshake_frame_over_64_kib_is_refused_before_it_is_read() {
        let (mut tx, mut rx) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut tx, &(1u32 << 30).to_be_bytes())
            .await
            .expect("written");
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            read_handshake_frame(&mut rx),
        );
        assert!(matches!(
            read.await.expect("at once"),
            Err(FrameError::TooLarge {
                size: 1073741824,
                max: MAX_HANDSHAKE_FRAME
            })
        ));
        let ping = Frame::Ping.encode().expect("encodes");
        let mut wire = &ping[..];
        assert_eq!(
            read_handshake_frame(&mut wire).await.expect("a ping"),
            Frame::Ping
        );
    }

    /// The largest INFO a node sends (names and address at their limits, a peer list cut to
    /// its budget) fits a handshake frame.
    #[test]
    fn the_largest_info_fits_a_handshake_frame() {
        let address = format!("{}:65535", "h".repeat(253));
        let peers = vec![address.clone(); MAX_INFO_PEERS_BYTES / (2 + address.len())];
        let info = Frame::Info(Info {
            version: PROTOCOL_VERSION,
            node: "n".repeat(255),
            cluster: "c".repeat(255),
            advertise: address,
            nonce: "0f".repeat(32),
            peers,
            epoch: u64::MAX,
        });
        let bytes = info.encode().expect("encodes");
        assert!(
            bytes.len() - 4 <= MAX_HANDSHAKE_FRAME,
            "{} bytes",
            bytes.len()
        );
    }

    /// The RETAINED example in docs/ARCHITECTURE.md ("A worked example"), byte for byte.
    #[test]
    fn the_documented_retained_frame() {
        let frame = Frame::Retained {
            version: Version {
                hlc: 1_700_000_000_000 << 16 | 1,
                node: "n1".into(),
            },
            publish: Publish {
                retain: true,
                topic: "a/b".into(),
                payload: Bytes::from_static(b"hi"),
                ..Publish::default()
            },
        };
        let bytes = frame.encode().expect("encodes");
        assert_eq!(
            &bytes[..],
            [
                0, 0, 0, 0x17, 8, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0, 0, 1, 0, 2, b'n', b'1', 0x31, 8,
                0, 3, b'a', b'/', b'b', 0, b'h', b'i'
            ]
        );
    }

    /// The INFO, SEQ, ACK and SYNCED examples in docs/ARCHITECTURE.md, byte for byte.
    #[test]
    fn the_documented_info_and_numbering_frames() {
        let info = Frame::Info(Info {
            version: PROTOCOL_VERSION,
            node: "n1".into(),
            cluster: "c".into(),
            advertise: "h:1".into(),
            nonce: "aa".into(),
            peers: Vec::new(),
            epoch: 42,
        });
        assert_eq!(
            &info.encode().expect("encodes")[..],
            [
                0, 0, 0, 0x1d, 1, 0, 5, 0, 2, b'n', b'1', 0, 1, b'c', 0, 3, b'h', b':', b'1', 0, 2,
                b'a', b'a', 0, 0, 0, 0, 0, 0, 0, 0, 0, 42
            ]
        );
        let seq = Frame::Seq(5).encode().expect("encodes");
        assert_eq!(&seq[..], [0, 0, 0, 9, 14, 0, 0, 0, 0, 0, 0, 0, 5]);
        let ack = Frame::Ack(7).encode().expect("encodes");
        assert_eq!(&ack[..], [0, 0, 0, 9, 15, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(
            &Frame::Synced.encode().expect("encodes")[..],
            [0, 0, 0, 1, 13]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [
            &[][..],
            &[99],
            &[kind::INFO, 0],
            &[kind::MESSAGE, 1, 0, 0, 0x30],
            &[kind::MESSAGE, VERSIONED, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[kind::RETAINED, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
        ] {
            assert!(Frame::decode(BytesMut::from(body), 1024).is_err());
        }
    }
}
