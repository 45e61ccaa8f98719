//! Decoding: bytes to packets, rejecting everything MQTT calls malformed.
//!
//! [`decode`] takes one packet off the front of a connection's read buffer. It checks the first
//! byte and the packet size as soon as the fixed header is readable, so a client can neither
//! make the broker wait for the body of a packet it will refuse nor make it buffer an oversized
//! one. The whole packet is then split off the buffer as one [`Bytes`], and payloads, passwords
//! and other binary fields are slices of it (no copy); strings are checked and copied once.
//!
//! Choices where the specification leaves room:
//! - variable byte integers must use their shortest form in every version: 5.0 requires it
//!   (MQTT-1.5.5-1), 3.1.1 §2.2.3 gives one encoding per value, and no client sends another;
//! - MQTT 3.1 calls the fixed-header flags of most packets "not used" and its clients set QoS 1
//!   and DUP on PUBREL, SUBSCRIBE and UNSUBSCRIBE, so on a 3.1 connection only the flags of
//!   CONNECT and PUBLISH are checked;
//! - reason codes and return codes are carried through unchecked (see `reason.rs`);
//! - topic filters are only checked to be strings: whether a filter is valid is the broker's
//!   call, which answers it with a SUBACK failure code rather than closing the connection.

use bytes::{Buf, Bytes, BytesMut};

use super::properties::{Properties, id};
use super::{
    Ack, Auth, ConnAck, Connect, DecodeError, Disconnect, Packet, ProtocolVersion, Publish, QoS,
    SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};

/// Decodes one packet from the front of `buf`, removing its bytes.
///
/// Returns `Ok(None)`, leaving `buf` untouched, when `buf` does not yet hold a whole packet.
/// `version` is the connection's negotiated version (CONNECT carries its own and ignores it).
/// A packet larger than `max_packet_size` (fixed header included, as MQTT 5.0 counts it) is an
/// error as soon as its fixed header is readable.
///
/// After an error the buffer is left wherever decoding stopped: the connection cannot be
/// resynchronised, so the caller answers (see [`DecodeError::reason_code`]) and closes it.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = FixedHeader::peek(buf, version)? else {
        return Ok(None);
    };
    let size = header.len + header.remaining;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut body = buf.split_to(size).freeze();
    body.advance(header.len);
    let mut reader = Reader { bytes: body };
    let packet = read_packet(header.first, &mut reader, version)?;
    reader.finish(packet.name())?;
    Ok(Some(packet))
}

/// The size of the packet at the front of `buf` (fixed header included), once its fixed
/// header is there and valid; `buf` is left untouched. A reader uses it to make room for a
/// large packet at once, rather than let its buffer grow by doubling past it.
pub fn packet_size(buf: &[u8]) -> Option<usize> {
    let header = FixedHeader::peek(buf, ProtocolVersion::V5).ok()??;
    Some(header.len + header.remaining)
}

/// The protocol version that a CONNECT at the front of `buf` names, if `buf` holds enough of
/// it and the version is one we speak; `buf` is left untouched. It lets the broker answer a
/// CONNECT it refuses before decoding it (one larger than it takes) in the client's version.
pub fn connect_version(buf: &[u8]) -> Option<ProtocolVersion> {
    let header = FixedHeader::peek(buf, ProtocolVersion::V311).ok()??;
    if header.first >> 4 != CONNECT {
        return None;
    }
    // The protocol name (two length bytes and at most six) and the level byte.
    let start = buf.get(header.len..)?;
    let head = &start[..start.len().min(9)];
    let mut reader = Reader {
        bytes: Bytes::copy_from_slice(head),
    };
    protocol(&mut reader).ok()
}

/// Packet types: the high four bits of the first byte (§2.1.2).
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

/// The first byte and the length of a packet, read before its body is needed.
struct FixedHeader {
    first: u8,
    /// Bytes taken by the fixed header itself: 2 to 5.
    len: usize,
    remaining: usize,
}

impl FixedHeader {
    /// Reads the fixed header at the front of `buf` without consuming it.
    fn peek(buf: &[u8], version: ProtocolVersion) -> Result<Option<FixedHeader>, DecodeError> {
        let Some((&first, rest)) = buf.split_first() else {
            return Ok(None);
        };
        check_first_byte(first, version)?;
        let remaining = match read_varint(rest) {
            Err(DecodeError::MalformedVarInt) => return Err(DecodeError::MalformedRemainingLength),
            other => other?,
        };
        Ok(remaining.map(|(remaining, n)| FixedHeader {
            first,
            len: 1 + n,
            remaining,
        }))
    }
}

/// Checks the packet type and the flags the fixed header requires for it (MQTT-2.2.2-1/2).
fn check_first_byte(first: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let (kind, flags) = (first >> 4, first & 0x0F);
    let expected = match kind {
        0 => return Err(DecodeError::InvalidPacketType(0)),
        AUTH if !version.is_v5() => return Err(DecodeError::InvalidPacketType(AUTH)),
        PUBLISH => return check_publish_flags(flags),
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => 0b0010,
        _ => 0,
    };
    let unchecked = version == ProtocolVersion::V31 && kind != CONNECT;
    if flags == expected || unchecked {
        Ok(())
    } else {
        Err(DecodeError::InvalidFlags {
            packet: packet_name(kind),
            flags,
        })
    }
}

fn check_publish_flags(flags: u8) -> Result<(), DecodeError> {
    let qos = (flags >> 1) & 0b11;
    if qos == 3 {
        Err(DecodeError::InvalidQoS)
    } else if qos == 0 && flags & 0b1000 != 0 {
        Err(DecodeError::DupAtQoS0)
    } else {
        Ok(())
    }
}

/// The name of a packet type, for errors raised before the packet exists.
fn packet_name(kind: u8) -> &'static str {
    match kind {
        CONNECT => "CONNECT",
        CONNACK => "CONNACK",
        PUBLISH => "PUBLISH",
        PUBACK => "PUBACK",
        PUBREC => "PUBREC",
        PUBREL => "PUBREL",
        PUBCOMP => "PUBCOMP",
        SUBSCRIBE => "SUBSCRIBE",
        SUBACK => "SUBACK",
        UNSUBSCRIBE => "UNSUBSCRIBE",
        UNSUBACK => "UNSUBACK",
        PINGREQ => "PINGREQ",
        PINGRESP => "PINGRESP",
        DISCONNECT => "DISCONNECT",
        AUTH => "AUTH",
        _ => "reserved packet type",
    }
}

/// Reads a variable byte integer (§1.5.5) from the front of `bytes`: `None` if it is not
/// complete yet, else its value and the number of bytes it takes.
fn read_varint(bytes: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0;
    for (i, &byte) in bytes.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A last byte of zero after others adds nothing: a longer form than needed.
            if i > 0 && byte == 0 {
                return Err(DecodeError::NonMinimalVarInt);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::MalformedVarInt)
    } else {
        Ok(None)
    }
}

/// The body of one packet, read front to back. Every read checks the bytes are there first.
struct Reader {
    bytes: Bytes,
}

impl Reader {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.bytes.len() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.bytes.get_u8())
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.bytes.get_u16())
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.bytes.get_u32())
    }

    fn varint(&mut self) -> Result<usize, DecodeError> {
        let (value, n) = read_varint(&self.bytes)?.ok_or(DecodeError::Truncated)?;
        self.bytes.advance(n);
        Ok(value)
    }

    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.bytes.split_to(n))
    }

    /// Binary Data (§1.5.6): a two-byte length, then that many bytes, shared with the buffer.
    fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// UTF-8 Encoded String (§1.5.4): valid UTF-8 without U+0000.
    fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        let raw = self.bytes.get(..len).ok_or(DecodeError::Truncated)?;
        let text = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?;
        if text.contains('\0') {
            return Err(DecodeError::NullCharacter);
        }
        let owned = text.to_owned();
        self.bytes.advance(len);
        Ok(owned)
    }

    /// A packet identifier where the packet requires a non-zero one (MQTT-2.2.1-3).
    fn packet_id(&mut self, packet: &'static str) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::ZeroPacketId { packet }),
            packet_id => Ok(packet_id),
        }
    }

    /// Everything left: the payload of a PUBLISH, the reason codes of a SUBACK.
    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.bytes)
    }

    fn finish(self, packet: &'static str) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { packet, extra }),
        }
    }
}

fn read_packet(first: u8, r: &mut Reader, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let v5 = version.is_v5();
    Ok(match first >> 4 {
        CONNECT => Packet::Connect(Box::new(connect(r)?)),
        CONNACK => Packet::ConnAck(connack(r, v5)?),
        PUBLISH => Packet::Publish(publish(first, r, v5)?),
        PUBACK => Packet::PubAck(ack(r, v5, Place::PUBACK)?),
        PUBREC => Packet::PubRec(ack(r, v5, Place::PUBREC)?),
        PUBREL => Packet::PubRel(ack(r, v5, Place::PUBREL)?),
        PUBCOMP => Packet::PubComp(ack(r, v5, Place::PUBCOMP)?),
        SUBSCRIBE => Packet::Subscribe(subscribe(r, v5)?),
        SUBACK => Packet::SubAck(suback(r, v5)?),
        UNSUBSCRIBE => Packet::Unsubscribe(unsubscribe(r, v5)?),
        UNSUBACK => Packet::UnsubAck(unsuback(r, v5)?),
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => Packet::Disconnect(disconnect(r, v5)?),
        AUTH => Packet::Auth(auth(r)?),
        other => return Err(DecodeError::InvalidPacketType(other)),
    })
}

fn connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let protocol = protocol(r)?;
    let flags = ConnectFlags::parse(r.u8()?, protocol)?;
    let keep_alive = r.u16()?;
    let properties = properties_if(protocol.is_v5(), r, Place::CONNECT)?;
    let client_id = r.string()?;
    let will = match flags.will {
        Some((qos, retain)) => Some(will(r, protocol, qos, retain)?),
        None => None,
    };
    let username = flags.username.then(|| r.string()).transpose()?;
    let password = flags.password.then(|| r.binary()).transpose()?;
    Ok(Connect {
        protocol,
        clean_start: flags.clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// The protocol name and level at the start of CONNECT (§3.1.2.1-2).
fn protocol(r: &mut Reader) -> Result<ProtocolVersion, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    match (name.as_ref(), level) {
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V31),
        (b"MQTT", 4) => Ok(ProtocolVersion::V311),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQIsdp" | b"MQTT", level) => Err(DecodeError::UnsupportedProtocolLevel(level)),
        _ => Err(DecodeError::InvalidProtocolName),
    }
}

/// The CONNECT flags byte (§3.1.2.3), checked.
struct ConnectFlags {
    clean_start: bool,
    /// The will QoS and retain flag, if there is a will.
    will: Option<(QoS, bool)>,
    username: bool,
    password: bool,
}

impl ConnectFlags {
    fn parse(flags: u8, protocol: ProtocolVersion) -> Result<ConnectFlags, DecodeError> {
        let bit = |n: u8| flags & (1 << n) != 0;
        let (will_flag, will_qos, will_retain) = (bit(2), (flags >> 3) & 0b11, bit(5));
        let (username, password) = (bit(7), bit(6));
        if bit(0) {
            return Err(DecodeError::ReservedConnectFlag);
        }
        if !will_flag && (will_qos != 0 || will_retain) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        if password && !username && !protocol.is_v5() {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let will = match (will_flag, QoS::from_u8(will_qos)) {
            (false, _) => None,
            (true, Some(qos)) => Some((qos, will_retain)),
            (true, None) => return Err(DecodeError::InvalidWillQoS),
        };
        Ok(ConnectFlags {
            clean_start: bit(1),
            will,
            username,
            password,
        })
    }
}

fn will(
    r: &mut Reader,
    protocol: ProtocolVersion,
    qos: QoS,
    retain: bool,
) -> Result<Will, DecodeError> {
    let properties = properties_if(protocol.is_v5(), r, Place::WILL)?;
    let topic = r.string()?;
    if topic.is_empty() || has_wildcard(&topic) {
        return Err(DecodeError::InvalidWillTopic);
    }
    let payload = r.binary()?;
    Ok(Will {
        topic,
        payload,
        qos,
        retain,
        properties,
    })
}

fn connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & !1 != 0 {
        return Err(DecodeError::InvalidConnAckFlags(flags));
    }
    let code = r.u8()?;
    let properties = properties_if(v5, r, Place::CONNACK)?;
    Ok(ConnAck {
        session_present: flags == 1,
        code,
        properties,
    })
}

fn publish(first: u8, r: &mut Reader, v5: bool) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((first >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let topic = r.string()?;
    if has_wildcard(&topic) {
        return Err(DecodeError::WildcardInTopicName);
    }
    let packet_id = match qos {
        QoS::AtMostOnce => 0,
        _ => r.packet_id("PUBLISH")?,
    };
    let properties = properties_if(v5, r, Place::PUBLISH)?;
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::EmptyTopicName);
    }
    Ok(Publish {
        dup: first & 0b1000 != 0,
        qos,
        retain: first & 1 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

fn has_wildcard(topic: &str) -> bool {
    topic.contains(['+', '#'])
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In 5.0 the reason code and the properties may be left
/// out, from the end, when they are success and none (§3.4.2.1).
fn ack(r: &mut Reader, v5: bool, place: Place) -> Result<Ack, DecodeError> {
    let packet_id = r.packet_id(place.packet)?;
    let (reason, properties) = optional_reason_and_properties(r, v5, place)?;
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

/// The tail of acks, DISCONNECT and AUTH in 5.0: an absent reason code means success, absent
/// properties mean none. Before 5.0 there is nothing to read.
fn optional_reason_and_properties(
    r: &mut Reader,
    v5: bool,
    place: Place,
) -> Result<(u8, Properties), DecodeError> {
    if !v5 || r.is_empty() {
        return Ok((0, Properties::default()));
    }
    let reason = r.u8()?;
    let properties = properties_if(!r.is_empty(), r, place)?;
    Ok((reason, properties))
}

fn subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id("SUBSCRIBE")?;
    let properties = properties_if(v5, r, Place::SUBSCRIBE)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = subscription_options(r.u8()?, v5)?;
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters {
            packet: "SUBSCRIBE",
        });
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

/// The options byte after each filter (§3.8.3.1); before 5.0 only the QoS bits exist.
fn subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
    if byte & reserved != 0 {
        return Err(DecodeError::ReservedSubscriptionBits(byte));
    }
    let qos = QoS::from_u8(byte & 0b11).ok_or(DecodeError::InvalidSubscriptionQoS)?;
    let retain_handling = (byte >> 4) & 0b11;
    if retain_handling == 3 {
        return Err(DecodeError::InvalidRetainHandling);
    }
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

fn suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = r.packet_id("SUBACK")?;
    let properties = properties_if(v5, r, Place::SUBACK)?;
    Ok(SubAck {
        packet_id,
        reasons: r.rest().to_vec(),
        properties,
    })
}

fn unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = r.packet_id("UNSUBSCRIBE")?;
    let properties = properties_if(v5, r, Place::UNSUBSCRIBE)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters {
            packet: "UNSUBSCRIBE",
        });
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

/// UNSUBACK: only a packet identifier before 5.0; properties and reason codes in 5.0.
fn unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = r.packet_id("UNSUBACK")?;
    let properties = properties_if(v5, r, Place::UNSUBACK)?;
    let reasons = if v5 { r.rest().to_vec() } else { Vec::new() };
    Ok(UnsubAck {
        packet_id,
        reasons,
        properties,
    })
}

/// DISCONNECT: empty before 5.0; in 5.0 `e0 00` is a normal disconnection (§3.14.2.1).
fn disconnect(r: &mut Reader, v5: bool) -> Result<Disconnect, DecodeError> {
    let (reason, properties) = optional_reason_and_properties(r, v5, Place::DISCONNECT)?;
    Ok(Disconnect { reason, properties })
}

/// AUTH, which only exists in 5.0 (the first byte was checked); empty means success.
fn auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let (reason, properties) = optional_reason_and_properties(r, true, Place::AUTH)?;
    Ok(Auth { reason, properties })
}

/// Where a property block sits, to check which properties it may hold (§2.2.2.2).
#[derive(Clone, Copy)]
struct Place {
    /// One bit per kind of place; the four acks share one since they allow the same.
    bit: u16,
    packet: &'static str,
}

impl Place {
    const CONNECT: Place = Place::new(0, "CONNECT");
    const WILL: Place = Place::new(1, "CONNECT will properties");
    const CONNACK: Place = Place::new(2, "CONNACK");
    const PUBLISH: Place = Place::new(3, "PUBLISH");
    const PUBACK: Place = Place::new(4, "PUBACK");
    const PUBREC: Place = Place::new(4, "PUBREC");
    const PUBREL: Place = Place::new(4, "PUBREL");
    const PUBCOMP: Place = Place::new(4, "PUBCOMP");
    const SUBSCRIBE: Place = Place::new(5, "SUBSCRIBE");
    const SUBACK: Place = Place::new(6, "SUBACK");
    const UNSUBSCRIBE: Place = Place::new(7, "UNSUBSCRIBE");
    const UNSUBACK: Place = Place::new(8, "UNSUBACK");
    const DISCONNECT: Place = Place::new(9, "DISCONNECT");
    const AUTH: Place = Place::new(10, "AUTH");

    const fn new(index: u16, packet: &'static str) -> Place {
        Place {
            bit: 1 << index,
            packet,
        }
    }

    /// Places where MQTT 5.0 allows property `id`, or `None` for an unknown property.
    fn allowing(id: u8) -> Option<u16> {
        let message = Place::PUBLISH.bit | Place::WILL.bit;
        let auth = Place::CONNECT.bit | Place::CONNACK.bit | Place::AUTH.bit;
        let limits = Place::CONNECT.bit | Place::CONNACK.bit;
        let replies = Place::CONNACK.bit
            | Place::PUBACK.bit
            | Place::SUBACK.bit
            | Place::UNSUBACK.bit
            | Place::DISCONNECT.bit
            | Place::AUTH.bit;
        Some(match id {
            id::PAYLOAD_FORMAT_INDICATOR
            | id::MESSAGE_EXPIRY_INTERVAL
            | id::CONTENT_TYPE
            | id::RESPONSE_TOPIC
            | id::CORRELATION_DATA => message,
            id::SUBSCRIPTION_IDENTIFIER => Place::PUBLISH.bit | Place::SUBSCRIBE.bit,
            id::SESSION_EXPIRY_INTERVAL => limits | Place::DISCONNECT.bit,
            id::ASSIGNED_CLIENT_IDENTIFIER
            | id::SERVER_KEEP_ALIVE
            | id::RESPONSE_INFORMATION
            | id::MAXIMUM_QOS
            | id::RETAIN_AVAILABLE
            | id::WILDCARD_SUBSCRIPTION_AVAILABLE
            | id::SUBSCRIPTION_IDENTIFIER_AVAILABLE
            | id::SHARED_SUBSCRIPTION_AVAILABLE => Place::CONNACK.bit,
            id::AUTHENTICATION_METHOD | id::AUTHENTICATION_DATA => auth,
            id::REQUEST_PROBLEM_INFORMATION | id::REQUEST_RESPONSE_INFORMATION => {
                Place::CONNECT.bit
            }
            id::WILL_DELAY_INTERVAL => Place::WILL.bit,
            id::SERVER_REFERENCE => Place::CONNACK.bit | Place::DISCONNECT.bit,
            id::REASON_STRING => replies,
            id::RECEIVE_MAXIMUM | id::TOPIC_ALIAS_MAXIMUM | id::MAXIMUM_PACKET_SIZE => limits,
            id::TOPIC_ALIAS => Place::PUBLISH.bit,
            id::USER_PROPERTY => u16::MAX,
            _ => return None,
        })
    }
}

/// Reads a property block if `present`, else returns no properties.
fn properties_if(present: bool, r: &mut Reader, place: Place) -> Result<Properties, DecodeError> {
    if !present {
        return Ok(Properties::default());
    }
    let len = r.varint()?;
    let mut block = Reader {
        bytes: r.take(len)?,
    };
    let mut properties = Properties::default();
    let mut seen = 0u64;
    while !block.is_empty() {
        let id = block.u8()?;
        check_property_place(id, place, &mut seen)?;
        read_property(id, &mut block, &mut properties)?;
    }
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    Ok(properties)
}

/// Rejects a property that is unknown, not allowed in `place`, or already `seen` there.
fn check_property_place(id: u8, place: Place, seen: &mut u64) -> Result<(), DecodeError> {
    let allowed = Place::allowing(id).ok_or(DecodeError::UnknownProperty(id))?;
    if allowed & place.bit == 0 {
        return Err(DecodeError::PropertyNotAllowed {
            packet: place.packet,
            id,
        });
    }
    let repeatable = id == id::USER_PROPERTY
        || (id == id::SUBSCRIPTION_IDENTIFIER && place.bit == Place::PUBLISH.bit);
    // Known ids are all below 64, so each has its own bit.
    let bit = 1u64 << id;
    if !repeatable && *seen & bit != 0 {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *seen |= bit;
    Ok(())
}

/// Reads the value of property `id` into `p`, checking the range MQTT 5.0 gives it.
fn read_property(id: u8, r: &mut Reader, p: &mut Properties) -> Result<(), DecodeError> {
    let invalid = || DecodeError::InvalidPropertyValue(id);
    let flag = |value: u8| {
        if value <= 1 {
            Ok(value)
        } else {
            Err(invalid())
        }
    };
    let nonzero_u16 = |value: u16| {
        if value != 0 {
            Ok(value)
        } else {
            Err(invalid())
        }
    };
    match id {
        id::PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = Some(flag(r.u8()?)?),
        id::MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(r.u32()?),
        id::CONTENT_TYPE => p.content_type = Some(r.string()?),
        id::RESPONSE_TOPIC => {
            let topic = r.string()?;
            if topic.is_empty() || has_wildcard(&topic) {
                return Err(invalid());
            }
            p.response_topic = Some(topic);
        }
        id::CORRELATION_DATA => p.correlation_data = Some(r.binary()?),
        id::SUBSCRIPTION_IDENTIFIER => match u32::try_from(r.varint()?) {
            Ok(0) | Err(_) => return Err(invalid()),
            Ok(value) => p.subscription_identifiers.push(value),
        },
        id::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(r.u32()?),
        id::ASSIGNED_CLIENT_IDENTIFIER => p.assigned_client_identifier = Some(r.string()?),
        id::SERVER_KEEP_ALIVE => p.server_keep_alive = Some(r.u16()?),
        id::AUTHENTICATION_METHOD => p.authentication_method = Some(r.string()?),
        id::AUTHENTICATION_DATA => p.authentication_data = Some(r.binary()?),
        id::REQUEST_PROBLEM_INFORMATION => p.request_problem_information = Some(flag(r.u8()?)?),
        id::WILL_DELAY_INTERVAL => p.will_delay_interval = Some(r.u32()?),
        id::REQUEST_RESPONSE_INFORMATION => p.request_response_information = Some(flag(r.u8()?)?),
        id::RESPONSE_INFORMATION => p.response_information = Some(r.string()?),
        id::SERVER_REFERENCE => p.server_reference = Some(r.string()?),
        id::REASON_STRING => p.reason_string = Some(r.string()?),
        id::RECEIVE_MAXIMUM => p.receive_maximum = Some(nonzero_u16(r.u16()?)?),
        id::TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16()?),
        id::TOPIC_ALIAS => p.topic_alias = Some(nonzero_u16(r.u16()?)?),
        id::MAXIMUM_QOS => p.maximum_qos = Some(flag(r.u8()?)?),
        id::RETAIN_AVAILABLE => p.retain_available = Some(flag(r.u8()?)?),
        id::USER_PROPERTY => {
            let pair = (r.string()?, r.string()?);
            p.user_properties.push(pair);
        }
        id::MAXIMUM_PACKET_SIZE => match r.u32()? {
            0 => return Err(invalid()),
            value => p.maximum_packet_size = Some(value),
        },
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
            p.wildcard_subscription_available = Some(flag(r.u8()?)?)
        }
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
            p.subscription_identifier_available = Some(flag(r.u8()?)?)
        }
        id::SHARED_SUBSCRIPTION_AVAILABLE => p.shared_subscription_available = Some(flag(r.u8()?)?),
        _ => return Err(DecodeError::UnknownProperty(id)),
    }
    Ok(())
}
