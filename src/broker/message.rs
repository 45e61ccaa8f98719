//! A publication on its way through the broker.
//!
//! A [`Message`] is created once per received PUBLISH (or Will) and shared by every subscriber
//! it goes to through an `Arc`, so fan-out never copies the payload. What differs per
//! subscriber (QoS, packet id, RETAIN flag, subscription identifiers) lives in [`Delivery`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::groups::GroupRef;
use super::persist::Stored;
use super::version::Version;
use crate::protocol::{
    self, Delivered, EncodeError, Properties, ProtocolVersion, Publish, QoS, TopicAlias, Will,
};

/// One publication, shared between all its deliveries.
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The publisher's properties that travel with the message (user properties, content
    /// type, response topic, correlation data, payload format). Topic alias and subscription
    /// identifiers are per hop and never stored here; message expiry is kept as `expires_at`.
    pub properties: Properties,
    /// When the message expires (MQTT 5 Message Expiry Interval), counted from receipt.
    pub expires_at: Option<Instant>,
    /// The session that published it, for the no-local option; 0 for the broker itself.
    pub origin: u64,
    /// A retained message's version (its set or clear, cluster-wide): given by the broker
    /// when a local client publishes it, carried from the peer when one forwards it; `None`
    /// for a message that is not retained.
    pub version: Option<Version>,
    /// What it counts for against byte bounds ([`Message::size`]), worked out once.
    size: usize,
}

impl Message {
    /// A message from a client's PUBLISH (whose topic alias has already been resolved).
    pub fn from_publish(publish: Publish, origin: u64) -> Message {
        let mut properties = publish.properties;
        let expires_at = take_expiry(&mut properties);
        properties.edit(|p| {
            p.topic_alias = None;
            p.subscription_identifiers.clear();
        });
        Message {
            size: publish.topic.len() + publish.payload.len() + weight(&properties),
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            expires_at,
            origin,
            version: None,
        }
    }

    /// A message from a Will. The will delay is a property of the Will, not of the message.
    pub fn from_will(will: Will, origin: u64) -> Message {
        let mut properties = will.properties;
        let expires_at = take_expiry(&mut properties);
        properties.edit(|p| p.will_delay_interval = None);
        Message {
            size: will.topic.len() + will.payload.len() + weight(&properties),
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties,
            expires_at,
            origin,
            version: None,
        }
    }

    /// A message forwarded by another node (no local session published it).
    pub fn from_route(publish: Publish) -> Message {
        Message::from_publish(publish, 0)
    }

    /// The message as a PUBLISH for another node's retained store, at its own QoS with what
    /// is left of its lifetime. (Forwarded messages are encoded from the parts instead, see
    /// `cluster::frame::Outgoing`.)
    pub fn to_publish(&self, now: Instant) -> Publish {
        let mut properties = self.properties.clone();
        if let Some(left) = self.remaining_expiry(now) {
            properties.message_expiry_interval = Some(left);
        }
        Publish {
            dup: false,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.clone(),
            // Any non-zero id: the codec wants one for QoS 1/2; routes have no acks.
            packet_id: u16::from(self.qos != QoS::AtMostOnce),
            properties,
            payload: self.payload.clone(),
        }
    }

    /// What the message counts for against byte bounds (a session's, a route's backlog): its
    /// topic, payload and the properties that can be large. User properties and correlation
    /// data can be as large as a payload, so they count too.
    pub fn size(&self) -> usize {
        self.size
    }

    /// True once the message's lifetime has run out; expired messages are never delivered.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The Message Expiry Interval to send on: what is left of the lifetime, in whole seconds
    /// rounded up so a message never leaves with 0 (which would mean "no expiry" to no one).
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
        })
    }
}

/// What a message's properties weigh against byte bounds: the ones that can be large (the
/// rest a PUBLISH may carry are a few bytes each).
fn weight(properties: &Properties) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    text(&properties.content_type)
        + text(&properties.response_topic)
        + properties.correlation_data.as_ref().map_or(0, Bytes::len)
        + properties
            .user_properties
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum::<usize>()
}

fn take_expiry(properties: &mut Properties) -> Option<Instant> {
    properties
        .edit(|p| p.message_expiry_interval.take())
        .flatten()
        .map(|secs| Instant::now() + Duration::from_secs(u64::from(secs)))
}

/// One message on its way to one session, at the QoS and with the flags for that subscriber.
#[derive(Debug)]
pub struct Delivery {
    pub message: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    /// The consumer group it was given to, so it can go to another member if this one leaves
    /// without acknowledging it.
    pub group: Option<Arc<GroupRef>>,
    /// Its record in the store, for a persistent session's QoS 1/2 message: deleted when the
    /// delivery is dropped ([`super::persist`]).
    pub stored: Option<Box<Stored>>,
}

/// A copy is a new delivery: it has no record until a session keeps it.
impl Clone for Delivery {
    fn clone(&self) -> Self {
        Delivery {
            message: Arc::clone(&self.message),
            qos: self.qos,
            retain: self.retain,
            subscription_ids: self.subscription_ids.clone(),
            group: self.group.clone(),
            stored: None,
        }
    }
}

impl Delivery {
    /// What the delivery counts for against a queue's byte bound ([`Message::size`]).
    pub fn size(&self) -> usize {
        self.message.size()
    }

    /// Appends this delivery's PUBLISH to `out`; `packet_id` is 0 for QoS 0. The message's
    /// parts are encoded straight from the shared [`Message`], nothing is copied first.
    pub fn encode(
        &self,
        packet_id: u16,
        dup: bool,
        now: Instant,
        version: ProtocolVersion,
        topic_alias: TopicAlias,
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let message = &self.message;
        let delivered = Delivered {
            dup,
            qos: self.qos,
            retain: self.retain,
            packet_id,
            message_expiry_interval: message.remaining_expiry(now),
            subscription_identifiers: &self.subscription_ids,
            topic_alias,
        };
        protocol::encode_publish(
            &message.topic,
            &message.properties,
            &message.payload,
            &delivered,
            version,
            out,
        )
    }
}
