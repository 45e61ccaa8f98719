//! Errors of the codec: why bytes are not a packet, and why a packet cannot become bytes.
//!
//! Every way a packet can break a rule of MQTT 3.1.1 or 5.0 has its own [`DecodeError`]
//! variant, so tests can name the exact rule and log lines can say what the client did wrong.
//! The broker answers a decode error with [`DecodeError::reason_code`]: in a v5 CONNACK or
//! DISCONNECT, or by simply closing a v3 connection (which has no way to say why).

use super::{properties::id, reason};

/// Why a byte sequence is not a valid packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// CONNECT with a known protocol name but a level the broker does not speak. The broker
    /// answers with a CONNACK (3.1.1 return code 0x01, or 5.0 reason 0x84) before closing.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// The fixed header announces a packet larger than allowed; raised before the body arrives.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge { size: usize, max: usize },
    /// Packet type 0, or 15 (AUTH) on a connection older than MQTT 5.0.
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    /// The low four bits of the first byte are not what the packet type requires.
    #[error("invalid fixed header flags {flags:#06b} for {packet}")]
    InvalidFlags { packet: &'static str, flags: u8 },
    /// PUBLISH with both QoS bits set.
    #[error("PUBLISH with QoS 3")]
    InvalidQoS,
    /// PUBLISH with the DUP flag at QoS 0 (MQTT-3.3.1-2).
    #[error("PUBLISH with DUP set at QoS 0")]
    DupAtQoS0,
    /// The remaining length continues past its fourth byte.
    #[error("remaining length longer than 4 bytes")]
    MalformedRemainingLength,
    /// A variable byte integer longer than 4 bytes inside the packet.
    #[error("variable byte integer longer than 4 bytes")]
    MalformedVarInt,
    /// A variable byte integer that uses more bytes than its value needs (MQTT-1.5.5-1).
    #[error("variable byte integer not in its shortest form")]
    NonMinimalVarInt,
    /// A field runs past the end of the packet (or of its property block).
    #[error("packet ends in the middle of a field")]
    Truncated,
    /// The packet's fields end before its remaining length does.
    #[error("{extra} unexpected bytes at the end of {packet}")]
    TrailingBytes { packet: &'static str, extra: usize },
    /// A string is not valid UTF-8 (MQTT-1.5.4-1).
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A string contains U+0000 (MQTT-1.5.4-2).
    #[error("string contains the null character U+0000")]
    NullCharacter,
    /// CONNECT whose protocol name is neither `MQTT` nor `MQIsdp` (MQTT-3.1.2-1).
    #[error("unknown protocol name")]
    InvalidProtocolName,
    /// CONNECT flags with the reserved bit 0 set (MQTT-3.1.2-3).
    #[error("CONNECT reserved flag set")]
    ReservedConnectFlag,
    /// CONNECT with Will QoS or Will Retain set but no Will Flag (MQTT-3.1.2-11, -13).
    #[error("CONNECT will QoS or retain set without the will flag")]
    WillFlagsWithoutWill,
    /// CONNECT with Will QoS 3 (MQTT-3.1.2-12).
    #[error("CONNECT will QoS 3")]
    InvalidWillQoS,
    /// CONNECT with the password flag but not the user name flag, before 5.0 (MQTT-3.1.2-22).
    #[error("CONNECT password flag without user name flag")]
    PasswordWithoutUsername,
    /// CONNECT whose will topic is empty or holds a wildcard.
    #[error("invalid will topic")]
    InvalidWillTopic,
    /// CONNACK acknowledge flags with a reserved bit set (MQTT-3.2.2-1).
    #[error("CONNACK reserved flags set: {0:#04x}")]
    InvalidConnAckFlags(u8),
    /// PUBLISH topic with `+` or `#` (MQTT-3.3.2-2).
    #[error("wildcard in PUBLISH topic name")]
    WildcardInTopicName,
    /// PUBLISH with an empty topic: always before 5.0, without a Topic Alias in 5.0.
    #[error("empty PUBLISH topic name without a topic alias")]
    EmptyTopicName,
    /// SUBSCRIBE or UNSUBSCRIBE without any topic filter (MQTT-3.8.3-3, MQTT-3.10.3-2).
    #[error("{packet} without any topic filter")]
    NoTopicFilters { packet: &'static str },
    /// Packet identifier 0 where a non-zero one is required (MQTT-2.2.1-3).
    #[error("packet identifier 0 in {packet}")]
    ZeroPacketId { packet: &'static str },
    /// Subscription options with reserved bits set (MQTT-3.8.3-5; bits 2-7 before 5.0).
    #[error("subscription options with reserved bits set: {0:#04x}")]
    ReservedSubscriptionBits(u8),
    /// Subscription options asking for QoS 3.
    #[error("subscription with QoS 3")]
    InvalidSubscriptionQoS,
    /// Subscription options with Retain Handling 3.
    #[error("subscription with retain handling 3")]
    InvalidRetainHandling,
    /// A property identifier MQTT 5.0 does not define.
    #[error("unknown property {0:#04x}")]
    UnknownProperty(u8),
    /// A property the packet type does not allow (MQTT 5.0 §2.2.2.2).
    #[error("property {id:#04x} not allowed in {packet}")]
    PropertyNotAllowed { packet: &'static str, id: u8 },
    /// A property given twice where it may appear only once.
    #[error("property {0:#04x} given more than once")]
    DuplicateProperty(u8),
    /// A property value outside its allowed range (a zero Receive Maximum, a 2 for a flag, ...).
    #[error("invalid value for property {0:#04x}")]
    InvalidPropertyValue(u8),
    /// Authentication Data without an Authentication Method.
    #[error("authentication data without authentication method")]
    AuthDataWithoutMethod,
}

impl DecodeError {
    /// The MQTT 5.0 reason code to put in the CONNACK or DISCONNECT that answers it.
    ///
    /// The specification calls some violations "Malformed Packet" and others "Protocol Error";
    /// this follows its wording for each rule.
    pub fn reason_code(&self) -> u8 {
        use DecodeError::*;
        match self {
            UnsupportedProtocolLevel(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
            PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            WildcardInTopicName | InvalidWillTopic => reason::TOPIC_NAME_INVALID,
            InvalidPropertyValue(id::TOPIC_ALIAS) => reason::TOPIC_ALIAS_INVALID,
            InvalidProtocolName
            | EmptyTopicName
            | NoTopicFilters { .. }
            | ZeroPacketId { .. }
            | InvalidSubscriptionQoS
            | InvalidRetainHandling
            | DuplicateProperty(_)
            | InvalidPropertyValue(_)
            | AuthDataWithoutMethod => reason::PROTOCOL_ERROR,
            InvalidPacketType(_)
            | InvalidFlags { .. }
            | InvalidQoS
            | DupAtQoS0
            | MalformedRemainingLength
            | MalformedVarInt
            | NonMinimalVarInt
            | Truncated
            | TrailingBytes { .. }
            | InvalidUtf8
            | NullCharacter
            | ReservedConnectFlag
            | WillFlagsWithoutWill
            | InvalidWillQoS
            | PasswordWithoutUsername
            | InvalidConnAckFlags(_)
            | ReservedSubscriptionBits(_)
            | UnknownProperty(_)
            | PropertyNotAllowed { .. } => reason::MALFORMED_PACKET,
        }
    }
}

/// Why a packet cannot be encoded. The encoder checks only what would make the bytes
/// unreadable; it trusts the broker for the rest of the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The remaining length would exceed 268,435,455 bytes, the most MQTT can express.
    #[error("packet too large to encode: {0} bytes")]
    TooLarge(usize),
    /// A string or binary field longer than the 65,535 bytes its length prefix can express.
    #[error("field of {0} bytes exceeds the 65535-byte limit")]
    FieldTooLong(usize),
    /// A variable byte integer property (subscription identifier) above 268,435,455.
    #[error("value {0} too large for a variable byte integer")]
    VarIntTooLarge(usize),
    /// A packet that does not exist in the connection's protocol version (AUTH before 5.0).
    #[error("{0} does not exist before MQTT 5.0")]
    UnsupportedPacket(&'static str),
}
