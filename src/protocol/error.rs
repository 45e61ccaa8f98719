//! Errors of the codec.

/// Why a byte sequence is not a valid packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// CONNECT with a protocol level the broker does not speak.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// The remaining length announces a packet larger than allowed.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge { size: usize, max: usize },
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
}

impl DecodeError {
    /// The MQTT 5.0 reason code to put in the DISCONNECT (or CONNACK) that answers it.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::UnsupportedProtocolLevel(_) => super::reason::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::PacketTooLarge { .. } => super::reason::PACKET_TOO_LARGE,
            DecodeError::Malformed(_) => super::reason::MALFORMED_PACKET,
        }
    }
}

/// Why a packet cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("packet too large to encode: {0} bytes")]
    TooLarge(usize),
}
