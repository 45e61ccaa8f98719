//! MQTT 5.0 properties (§2.2.2): one struct with a field per property, and the box that
//! packets carry it in.
//!
//! Every packet type allows only some properties; the decoder reads them all into this one
//! struct and then rejects any that the packet type does not allow, so the rest of the broker
//! never sees a property in the wrong place. Older protocol versions leave it at the default.
//!
//! Most packets carry no property at all — every packet of MQTT 3.1.1, a plain PUBACK, most
//! PUBLISHes — yet the full set is a few hundred bytes. Packets and messages therefore hold
//! [`Properties`], one pointer that is null when there are none, so a packet moves a few dozen
//! bytes through the broker instead of several hundred (docs/BENCHMARKS.md, issue 16).

use std::fmt;
use std::ops::{Deref, DerefMut};

use bytes::Bytes;

/// A packet's properties: no allocation while there are none, one box once there is one.
///
/// Reading goes through to [`PropertyValues`] (an absent set reads as the empty one); writing
/// a field through `DerefMut` allocates the box, so code that may find nothing to change uses
/// [`Properties::edit`] instead.
#[derive(Clone, Default)]
pub struct Properties(Option<Box<PropertyValues>>);

/// What an absent set reads as.
static EMPTY: PropertyValues = PropertyValues::EMPTY;

impl Properties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(PropertyValues::is_empty)
    }

    /// The values, taken out of their box (the empty set if there was none).
    pub fn into_values(self) -> PropertyValues {
        self.0.map(|values| *values).unwrap_or_default()
    }

    /// Changes the values if any are set, and frees the box if that leaves it empty; `None`
    /// (and no allocation) when there were none. For code that removes or takes properties.
    pub fn edit<R>(&mut self, change: impl FnOnce(&mut PropertyValues) -> R) -> Option<R> {
        let values = self.0.as_deref_mut()?;
        let result = change(values);
        if values.is_empty() {
            self.0 = None;
        }
        Some(result)
    }
}

impl Deref for Properties {
    type Target = PropertyValues;

    fn deref(&self) -> &PropertyValues {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut PropertyValues {
        self.0.get_or_insert_with(Box::default)
    }
}

impl From<PropertyValues> for Properties {
    fn from(values: PropertyValues) -> Properties {
        if values.is_empty() {
            Properties(None)
        } else {
            Properties(Some(Box::new(values)))
        }
    }
}

/// Equal when the same properties are set: a box left empty equals no box.
impl PartialEq for Properties {
    fn eq(&self, other: &Properties) -> bool {
        **self == **other
    }
}

impl Eq for Properties {}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

/// All MQTT 5.0 properties. `None` (or an empty list) means absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyValues {
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

impl PropertyValues {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == PropertyValues::EMPTY
    }

    /// No property set; what [`Default`] gives, usable in a `static`.
    const EMPTY: PropertyValues = PropertyValues {
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        subscription_identifiers: Vec::new(),
        session_expiry_interval: None,
        assigned_client_identifier: None,
        server_keep_alive: None,
        authentication_method: None,
        authentication_data: None,
        request_problem_information: None,
        will_delay_interval: None,
        request_response_information: None,
        response_information: None,
        server_reference: None,
        reason_string: None,
        receive_maximum: None,
        topic_alias_maximum: None,
        topic_alias: None,
        maximum_qos: None,
        retain_available: None,
        user_properties: Vec::new(),
        maximum_packet_size: None,
        wildcard_subscription_available: None,
        subscription_identifier_available: None,
        shared_subscription_available: None,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_properties_hold_no_box_and_read_as_the_empty_set() {
        let none = Properties::default();
        assert!(none.is_empty());
        assert_eq!(none.reason_string, None);
        assert!(none.user_properties.is_empty());
        assert_eq!(none, Properties::from(PropertyValues::default()));
        assert!(Properties::from(PropertyValues::default()).0.is_none());
    }

    #[test]
    fn writing_a_field_boxes_the_set() {
        let mut properties = Properties(None);
        properties.topic_alias = Some(3);
        assert!(!properties.is_empty());
        assert!(properties.0.is_some());
        assert_eq!(properties.topic_alias, Some(3));
    }

    #[test]
    fn editing_never_allocates_and_frees_an_emptied_box() {
        let mut none = Properties::default();
        assert_eq!(none.edit(|p| p.topic_alias.take()), None);
        assert!(none.0.is_none(), "an edit of no properties allocated");

        let mut properties = Properties::from(PropertyValues {
            topic_alias: Some(7),
            content_type: Some("text/plain".into()),
            ..PropertyValues::default()
        });
        assert_eq!(properties.edit(|p| p.topic_alias.take()), Some(Some(7)));
        assert!(properties.0.is_some(), "the content type is left");
        properties.edit(|p| p.content_type = None);
        assert!(properties.0.is_none(), "an emptied box is freed");
        assert_eq!(properties, Properties::default());
    }

    #[test]
    fn an_empty_box_equals_no_box() {
        let mut emptied = Properties(None);
        emptied.reason_string = Some("x".into());
        emptied.reason_string = None;
        assert!(emptied.0.is_some());
        assert_eq!(emptied, Properties::default());
        assert!(emptied.is_empty());
    }
}
