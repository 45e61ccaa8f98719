//! MQTT control packets as plain Rust values, for all three protocol versions.
//!
//! One set of types covers MQTT 3.1, 3.1.1 and 5.0: fields that only exist in 5.0 (properties,
//! reason codes on acks) are simply left at their defaults for the older versions, and the
//! encoder leaves them out. Payloads and binary data are [`Bytes`] so that a decoded PUBLISH
//! shares the read buffer instead of copying it.

use bytes::Bytes;

use super::properties::Properties;

/// The protocol level byte of CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V311,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The level byte sent in CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// True for MQTT 5.0, the only version with properties and reason codes everywhere.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service of a publication or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a two-bit value, or `None` for the reserved value 3.
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The packet's name as the specification spells it, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }

    /// The packet's properties, for the packet types that have them.
    pub fn properties_mut(&mut self) -> Option<&mut Properties> {
        match self {
            Packet::Connect(p) => Some(&mut p.properties),
            Packet::ConnAck(p) => Some(&mut p.properties),
            Packet::Publish(p) => Some(&mut p.properties),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                Some(&mut p.properties)
            }
            Packet::Subscribe(p) => Some(&mut p.properties),
            Packet::SubAck(p) => Some(&mut p.properties),
            Packet::Unsubscribe(p) => Some(&mut p.properties),
            Packet::UnsubAck(p) => Some(&mut p.properties),
            Packet::Disconnect(p) => Some(&mut p.properties),
            Packet::Auth(p) => Some(&mut p.properties),
            Packet::PingReq | Packet::PingResp => None,
        }
    }
}

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// "Clean Session" in 3.1.1, "Clean Start" in 5.0.
    pub clean_start: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub properties: Properties,
}

/// The Will Message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (5.0): will delay, message expiry, content type, user properties, ...
    pub properties: Properties,
}

/// CONNACK. `code` is the 3.1.1 return code or the 5.0 reason code, as the version dictates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    pub session_present: bool,
    pub code: u8,
    pub properties: Properties,
}

/// PUBLISH. `packet_id` is 0 for QoS 0 (which carries none on the wire) and non-zero otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty in 5.0 when a topic alias stands for it.
    pub topic: String,
    pub packet_id: u16,
    pub properties: Properties,
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    pub packet_id: u16,
    /// 5.0 reason code; always 0 (success) for older versions.
    pub reason: u8,
    pub properties: Properties,
}

impl Ack {
    /// A successful acknowledgement with no properties.
    pub fn new(packet_id: u16) -> Ack {
        Ack {
            packet_id,
            ..Ack::default()
        }
    }
}

/// The options byte that follows each topic filter in SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    /// 5.0: do not send the subscriber its own publications.
    pub no_local: bool,
    /// 5.0: keep the RETAIN flag as the publisher set it.
    pub retain_as_published: bool,
    /// 5.0: 0 send retained on subscribe, 1 only if the subscription is new, 2 never.
    pub retain_handling: u8,
}

impl SubscriptionOptions {
    /// The options as MQTT 5 encodes them (§3.8.3.1).
    pub fn to_byte(&self) -> u8 {
        self.qos as u8
            | u8::from(self.no_local) << 2
            | u8::from(self.retain_as_published) << 3
            | (self.retain_handling & 0b11) << 4
    }

    /// Options from their MQTT 5 byte; `None` for reserved bits or values set.
    pub fn from_byte(byte: u8) -> Option<SubscriptionOptions> {
        let retain_handling = (byte >> 4) & 0b11;
        if byte & 0b1100_0000 != 0 || retain_handling == 3 {
            return None;
        }
        Some(SubscriptionOptions {
            qos: QoS::from_u8(byte & 0b11)?,
            no_local: byte & 0b0100 != 0,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        })
    }
}

/// SUBSCRIBE: one or more topic filters with their options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    pub filters: Vec<(String, SubscriptionOptions)>,
    pub properties: Properties,
}

/// SUBACK: one return/reason code per filter of the SUBSCRIBE, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    pub reasons: Vec<u8>,
    pub properties: Properties,
}

/// UNSUBSCRIBE: one or more topic filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub filters: Vec<String>,
    pub properties: Properties,
}

/// UNSUBACK: in 5.0 one reason code per filter; in 3.1.1 no payload (`reasons` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: u16,
    pub reasons: Vec<u8>,
    pub properties: Properties,
}

/// DISCONNECT: in 5.0 either side may send it, with a reason code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    pub reason: u8,
    pub properties: Properties,
}

impl Disconnect {
    /// A DISCONNECT with a reason code and no properties.
    pub fn new(reason: u8) -> Disconnect {
        Disconnect {
            reason,
            properties: Properties::default(),
        }
    }
}

/// AUTH (5.0 only): extended authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason: u8,
    pub properties: Properties,
}

/// Every received packet and every answer is moved through the broker by value, so its size
/// is paid on each hop: with the properties inline a PUBACK was 408 bytes (~9% of the broker's
/// time went to copying them, docs/BENCHMARKS.md, issue 16). These bounds keep it small; raise
/// one only with a measurement.
#[cfg(test)]
mod sizes {
    use super::*;

    #[test]
    fn packets_stay_small() {
        let sizes = [
            ("Packet", std::mem::size_of::<Packet>(), 72),
            ("Publish", std::mem::size_of::<Publish>(), 72),
            ("Ack", std::mem::size_of::<Ack>(), 16),
            ("Properties", std::mem::size_of::<Properties>(), 8),
        ];
        for (what, size, bound) in sizes {
            assert!(
                size <= bound,
                "{what} is {size} bytes, over its bound of {bound}"
            );
        }
    }
}
