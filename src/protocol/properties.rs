//! MQTT 5.0 properties (§2.2.2): one struct with a field per property.
//!
//! Every packet type allows only some properties; the decoder reads them all into this one
//! struct and then rejects any that the packet type does not allow, so the rest of the broker
//! never sees a property in the wrong place. Older protocol versions leave it at the default.

use bytes::Bytes;

/// All MQTT 5.0 properties. `None` (or an empty list) means absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01, PUBLISH and Will: 0 unspecified bytes, 1 UTF-8.
    pub payload_format_indicator: Option<u8>,
    /// 0x02, PUBLISH and Will: lifetime in seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03, PUBLISH and Will.
    pub content_type: Option<String>,
    /// 0x08, PUBLISH and Will.
    pub response_topic: Option<String>,
    /// 0x09, PUBLISH and Will.
    pub correlation_data: Option<Bytes>,
    /// 0x0B: once in SUBSCRIBE; any number of times in a PUBLISH sent to a client.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11, CONNECT, CONNACK, DISCONNECT.
    pub session_expiry_interval: Option<u32>,
    /// 0x12, CONNACK.
    pub assigned_client_identifier: Option<String>,
    /// 0x13, CONNACK.
    pub server_keep_alive: Option<u16>,
    /// 0x15, CONNECT, CONNACK, AUTH.
    pub authentication_method: Option<String>,
    /// 0x16, CONNECT, CONNACK, AUTH.
    pub authentication_data: Option<Bytes>,
    /// 0x17, CONNECT.
    pub request_problem_information: Option<u8>,
    /// 0x18, Will.
    pub will_delay_interval: Option<u32>,
    /// 0x19, CONNECT.
    pub request_response_information: Option<u8>,
    /// 0x1A, CONNACK.
    pub response_information: Option<String>,
    /// 0x1C, CONNACK, DISCONNECT.
    pub server_reference: Option<String>,
    /// 0x1F, every ack, CONNACK, DISCONNECT, AUTH.
    pub reason_string: Option<String>,
    /// 0x21, CONNECT, CONNACK.
    pub receive_maximum: Option<u16>,
    /// 0x22, CONNECT, CONNACK.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23, PUBLISH.
    pub topic_alias: Option<u16>,
    /// 0x24, CONNACK.
    pub maximum_qos: Option<u8>,
    /// 0x25, CONNACK.
    pub retain_available: Option<u8>,
    /// 0x26, everywhere; may repeat, order preserved.
    pub user_properties: Vec<(String, String)>,
    /// 0x27, CONNECT, CONNACK.
    pub maximum_packet_size: Option<u32>,
    /// 0x28, CONNACK.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29, CONNACK.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A, CONNACK.
    pub shared_subscription_available: Option<u8>,
}

/// The property identifiers of MQTT 5.0 §2.2.2.2, shared by the decoder and the encoder.
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}
