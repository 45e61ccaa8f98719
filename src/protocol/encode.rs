//! Encoding: packets to bytes.
//!
//! Each packet body is written twice by the same code: first into a [`Counter`] that only adds
//! up lengths, which gives the remaining length and lets `out` reserve exactly once, then into
//! `out` itself. Sharing the code keeps the two passes from ever disagreeing.
//!
//! Before 5.0 the fields 5.0 added are left out: properties, reason codes on acks and
//! DISCONNECT, the payload of UNSUBACK. In 5.0 the shortest forms are used: an ack, DISCONNECT
//! or AUTH that succeeds without properties ends after its packet identifier (or is empty).
//! The encoder refuses only what cannot be written at all (oversized fields and packets, AUTH
//! before 5.0); the broker is trusted with the rest of the rules, except that the DUP flag is
//! dropped at QoS 0, where MQTT-3.3.1-2 forbids it, so a downgraded resend stays valid.

use bytes::{Bytes, BytesMut};

use super::properties::{PropertyValues, id};
use super::{
    Ack, Connect, EncodeError, Packet, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions,
};

/// The largest value of a variable byte integer, and so the largest remaining length.
const MAX_VARINT: usize = 268_435_455;

/// Appends the encoding of `packet` for `version` to `out`; returns the number of bytes written.
///
/// CONNECT is written for its own `protocol`, whatever `version` says. On error nothing has
/// been written.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let mut counter = Counter(0);
    body(packet, version, &mut counter)?;
    let remaining = counter.0;
    if remaining > MAX_VARINT {
        return Err(EncodeError::TooLarge(remaining));
    }
    let total = 1 + varint_len(remaining) + remaining;
    out.reserve(total);
    out.put_u8(first_byte(packet));
    varint(out, remaining)?;
    body(packet, version, out)?;
    Ok(total)
}

/// What one delivery of a stored message adds to it: the flags, the packet identifier and the
/// properties that differ per subscriber.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivered<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// 0 for QoS 0.
    pub packet_id: u16,
    /// What is left of the message's lifetime, in seconds.
    pub message_expiry_interval: Option<u32>,
    pub subscription_identifiers: &'a [u32],
    /// 5.0 only: the Topic Alias to send the topic with.
    pub topic_alias: TopicAlias,
}

/// How a PUBLISH names its topic (MQTT 5 §3.3.2.3.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TopicAlias {
    /// The topic, no alias.
    #[default]
    None,
    /// The topic and an alias for it, which the receiver remembers.
    Set(u16),
    /// An alias the receiver knows, and an empty topic.
    Use(u16),
}

/// Appends a PUBLISH built from a stored message's parts and one delivery's details, without
/// assembling a [`Publish`] first: a broker sending one message to many subscribers copies
/// nothing but bytes into `out`. `properties` must not carry a message expiry or
/// subscription identifiers itself (the delivery's are written instead).
pub fn encode_publish(
    topic: &str,
    properties: &PropertyValues,
    payload: &[u8],
    delivered: &Delivered<'_>,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let v5 = version.is_v5();
    let parts = PublishParts {
        topic,
        properties,
        payload,
        delivered,
    };
    let mut counter = Counter(0);
    parts.body(v5, &mut counter)?;
    let remaining = counter.0;
    if remaining > MAX_VARINT {
        return Err(EncodeError::TooLarge(remaining));
    }
    let total = 1 + varint_len(remaining) + remaining;
    out.reserve(total);
    let dup = delivered.dup && delivered.qos != QoS::AtMostOnce;
    out.put_u8(0x30 | u8::from(dup) << 3 | (delivered.qos as u8) << 1 | u8::from(delivered.retain));
    varint(out, remaining)?;
    parts.body(v5, out)?;
    Ok(total)
}

struct PublishParts<'a> {
    topic: &'a str,
    properties: &'a PropertyValues,
    payload: &'a [u8],
    delivered: &'a Delivered<'a>,
}

impl PublishParts<'_> {
    fn body(&self, v5: bool, s: &mut impl Sink) -> Result<(), EncodeError> {
        let topic = match self.delivered.topic_alias {
            TopicAlias::Use(_) if v5 => "",
            _ => self.topic,
        };
        string(s, topic)?;
        if self.delivered.qos != QoS::AtMostOnce {
            s.put_u16(self.delivered.packet_id);
        }
        if v5 {
            let mut counter = Counter(0);
            self.property_list(&mut counter)?;
            varint(s, counter.0)?;
            self.property_list(s)?;
        }
        s.put_slice(self.payload);
        Ok(())
    }

    fn property_list(&self, s: &mut impl Sink) -> Result<(), EncodeError> {
        property_list(s, self.properties)?;
        put_u32(
            s,
            id::MESSAGE_EXPIRY_INTERVAL,
            self.delivered.message_expiry_interval,
        );
        for &identifier in self.delivered.subscription_identifiers {
            s.put_u8(id::SUBSCRIPTION_IDENTIFIER);
            varint(s, identifier as usize)?;
        }
        if let TopicAlias::Set(alias) | TopicAlias::Use(alias) = self.delivered.topic_alias {
            put_u16(s, id::TOPIC_ALIAS, Some(alias));
        }
        Ok(())
    }
}

/// Where bytes go: a counter for the sizing pass, or the output buffer.
trait Sink {
    fn put_slice(&mut self, bytes: &[u8]);

    fn put_u8(&mut self, value: u8) {
        self.put_slice(&[value]);
    }

    fn put_u16(&mut self, value: u16) {
        self.put_slice(&value.to_be_bytes());
    }

    fn put_u32(&mut self, value: u32) {
        self.put_slice(&value.to_be_bytes());
    }
}

/// A sink that only counts the bytes it is given.
struct Counter(usize);

impl Sink for Counter {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}

impl Sink for BytesMut {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Variable Byte Integer (§1.5.5), in its shortest form.
fn varint(s: &mut impl Sink, value: usize) -> Result<(), EncodeError> {
    if value > MAX_VARINT {
        return Err(EncodeError::VarIntTooLarge(value));
    }
    let mut rest = value;
    loop {
        let low = (rest & 0x7F) as u8;
        rest >>= 7;
        if rest == 0 {
            s.put_u8(low);
            return Ok(());
        }
        s.put_u8(low | 0x80);
    }
}

/// Binary Data (§1.5.6): two-byte length, then the bytes.
fn binary(s: &mut impl Sink, bytes: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong(bytes.len()))?;
    s.put_u16(len);
    s.put_slice(bytes);
    Ok(())
}

fn string(s: &mut impl Sink, text: &str) -> Result<(), EncodeError> {
    binary(s, text.as_bytes())
}

fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(publish) => publish_flags(publish),
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

fn publish_flags(publish: &Publish) -> u8 {
    let dup = publish.dup && publish.qos != QoS::AtMostOnce;
    0x30 | u8::from(dup) << 3 | (publish.qos as u8) << 1 | u8::from(publish.retain)
}

/// Writes everything after the fixed header.
fn body(packet: &Packet, version: ProtocolVersion, s: &mut impl Sink) -> Result<(), EncodeError> {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(connect) => self::connect(s, connect),
        Packet::ConnAck(connack) => {
            s.put_u8(u8::from(connack.session_present));
            s.put_u8(connack.code);
            properties_if(v5, s, &connack.properties)
        }
        Packet::Publish(publish) => self::publish(s, publish, v5),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            ack(s, a, v5)
        }
        Packet::Subscribe(subscribe) => self::subscribe(s, subscribe, v5),
        Packet::SubAck(suback) => {
            s.put_u16(suback.packet_id);
            properties_if(v5, s, &suback.properties)?;
            s.put_slice(&suback.reasons);
            Ok(())
        }
        Packet::Unsubscribe(unsubscribe) => {
            s.put_u16(unsubscribe.packet_id);
            properties_if(v5, s, &unsubscribe.properties)?;
            unsubscribe.filters.iter().try_for_each(|f| string(s, f))
        }
        Packet::UnsubAck(unsuback) => {
            s.put_u16(unsuback.packet_id);
            if v5 {
                properties(s, &unsuback.properties)?;
                s.put_slice(&unsuback.reasons);
            }
            Ok(())
        }
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) if v5 => optional_reason_and_properties(s, d.reason, &d.properties),
        Packet::Disconnect(_) => Ok(()),
        Packet::Auth(a) if v5 => optional_reason_and_properties(s, a.reason, &a.properties),
        Packet::Auth(_) => Err(EncodeError::UnsupportedPacket("AUTH")),
    }
}

fn connect(s: &mut impl Sink, c: &Connect) -> Result<(), EncodeError> {
    let v5 = c.protocol.is_v5();
    let name = match c.protocol {
        ProtocolVersion::V31 => "MQIsdp",
        ProtocolVersion::V311 | ProtocolVersion::V5 => "MQTT",
    };
    string(s, name)?;
    s.put_u8(c.protocol.level());
    s.put_u8(connect_flags(c));
    s.put_u16(c.keep_alive);
    properties_if(v5, s, &c.properties)?;
    string(s, &c.client_id)?;
    if let Some(will) = &c.will {
        properties_if(v5, s, &will.properties)?;
        string(s, &will.topic)?;
        binary(s, &will.payload)?;
    }
    if let Some(username) = &c.username {
        string(s, username)?;
    }
    if let Some(password) = &c.password {
        binary(s, password)?;
    }
    Ok(())
}

fn connect_flags(c: &Connect) -> u8 {
    let will = c.will.as_ref().map_or(0, |will| {
        0b100 | (will.qos as u8) << 3 | u8::from(will.retain) << 5
    });
    u8::from(c.username.is_some()) << 7
        | u8::from(c.password.is_some()) << 6
        | will
        | u8::from(c.clean_start) << 1
}

fn publish(s: &mut impl Sink, p: &Publish, v5: bool) -> Result<(), EncodeError> {
    string(s, &p.topic)?;
    if p.qos != QoS::AtMostOnce {
        s.put_u16(p.packet_id);
    }
    properties_if(v5, s, &p.properties)?;
    s.put_slice(&p.payload);
    Ok(())
}

fn ack(s: &mut impl Sink, a: &Ack, v5: bool) -> Result<(), EncodeError> {
    s.put_u16(a.packet_id);
    if v5 {
        optional_reason_and_properties(s, a.reason, &a.properties)?;
    }
    Ok(())
}

/// The 5.0 tail of acks, DISCONNECT and AUTH, cut short when it says only "success".
fn optional_reason_and_properties(
    s: &mut impl Sink,
    reason: u8,
    p: &PropertyValues,
) -> Result<(), EncodeError> {
    let no_properties = p.is_empty();
    if reason == 0 && no_properties {
        return Ok(());
    }
    s.put_u8(reason);
    properties_if(!no_properties, s, p)
}

fn subscribe(s: &mut impl Sink, sub: &Subscribe, v5: bool) -> Result<(), EncodeError> {
    s.put_u16(sub.packet_id);
    properties_if(v5, s, &sub.properties)?;
    for (filter, options) in &sub.filters {
        string(s, filter)?;
        s.put_u8(subscription_options(options, v5));
    }
    Ok(())
}

fn subscription_options(o: &SubscriptionOptions, v5: bool) -> u8 {
    if v5 { o.to_byte() } else { o.qos as u8 }
}

fn properties_if(present: bool, s: &mut impl Sink, p: &PropertyValues) -> Result<(), EncodeError> {
    if present { properties(s, p) } else { Ok(()) }
}

/// A property block: its length, then the properties in the order of their identifiers.
fn properties(s: &mut impl Sink, p: &PropertyValues) -> Result<(), EncodeError> {
    let mut counter = Counter(0);
    property_list(&mut counter, p)?;
    varint(s, counter.0)?;
    property_list(s, p)
}

fn property_list(s: &mut impl Sink, p: &PropertyValues) -> Result<(), EncodeError> {
    put_u8(s, id::PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
    put_u32(s, id::MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
    put_string(s, id::CONTENT_TYPE, &p.content_type)?;
    put_string(s, id::RESPONSE_TOPIC, &p.response_topic)?;
    put_binary(s, id::CORRELATION_DATA, &p.correlation_data)?;
    for &identifier in &p.subscription_identifiers {
        s.put_u8(id::SUBSCRIPTION_IDENTIFIER);
        varint(s, identifier as usize)?;
    }
    put_u32(s, id::SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
    put_string(
        s,
        id::ASSIGNED_CLIENT_IDENTIFIER,
        &p.assigned_client_identifier,
    )?;
    put_u16(s, id::SERVER_KEEP_ALIVE, p.server_keep_alive);
    put_string(s, id::AUTHENTICATION_METHOD, &p.authentication_method)?;
    put_binary(s, id::AUTHENTICATION_DATA, &p.authentication_data)?;
    put_u8(
        s,
        id::REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
    );
    put_u32(s, id::WILL_DELAY_INTERVAL, p.will_delay_interval);
    put_u8(
        s,
        id::REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
    );
    put_string(s, id::RESPONSE_INFORMATION, &p.response_information)?;
    put_string(s, id::SERVER_REFERENCE, &p.server_reference)?;
    put_string(s, id::REASON_STRING, &p.reason_string)?;
    put_u16(s, id::RECEIVE_MAXIMUM, p.receive_maximum);
    put_u16(s, id::TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    put_u16(s, id::TOPIC_ALIAS, p.topic_alias);
    put_u8(s, id::MAXIMUM_QOS, p.maximum_qos);
    put_u8(s, id::RETAIN_AVAILABLE, p.retain_available);
    for (key, value) in &p.user_properties {
        s.put_u8(id::USER_PROPERTY);
        string(s, key)?;
        string(s, value)?;
    }
    put_u32(s, id::MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    put_u8(
        s,
        id::WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    );
    put_u8(
        s,
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
    );
    put_u8(
        s,
        id::SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    );
    Ok(())
}

fn put_u8(s: &mut impl Sink, id: u8, value: Option<u8>) {
    if let Some(value) = value {
        s.put_u8(id);
        s.put_u8(value);
    }
}

fn put_u16(s: &mut impl Sink, id: u8, value: Option<u16>) {
    if let Some(value) = value {
        s.put_u8(id);
        s.put_u16(value);
    }
}

fn put_u32(s: &mut impl Sink, id: u8, value: Option<u32>) {
    if let Some(value) = value {
        s.put_u8(id);
        s.put_u32(value);
    }
}

fn put_string(s: &mut impl Sink, id: u8, value: &Option<String>) -> Result<(), EncodeError> {
    match value {
        Some(text) => {
            s.put_u8(id);
            string(s, text)
        }
        None => Ok(()),
    }
}

fn put_binary(s: &mut impl Sink, id: u8, value: &Option<Bytes>) -> Result<(), EncodeError> {
    match value {
        Some(bytes) => {
            s.put_u8(id);
            binary(s, bytes)
        }
        None => Ok(()),
    }
}
