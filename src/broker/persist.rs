//! What the broker keeps in the [`Store`] and how (`[storage]`, docs/ARCHITECTURE.md
//! "Persistence").
//!
//! Kept: persistent sessions (expiry interval > 0, which 3.1.1's clean session = 0 is), with
//! their subscriptions, their Will and how long they have been away; their QoS 1/2 messages,
//! queued, parked or in flight (with packet id and QoS 2 state); their inbound QoS 2 packet ids;
//! retained messages and the tombstones of retained clears. Nothing else touches the disk.
//!
//! The memory is kept in step with the disk by ownership: a delivery put into a persistent
//! session carries a [`Stored`] key, and whatever removes the delivery — an acknowledgement, an
//! expiry, a drop, a move to another node — drops the key, which deletes the record. So there is
//! no second bookkeeping of what is on disk to get wrong. A session's record is written again
//! when it connects, subscribes, unsubscribes, leaves, or its Will goes out.
//!
//! Records are versioned bytes: a PUBLISH in MQTT 5's encoding (our codec) carries a message
//! with its properties, beside the few fields MQTT has no place for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::protocol::{self, Packet, ProtocolVersion, Publish, QoS, SubscriptionOptions, Will};
use crate::store::{Durable, Encode, Mode, Store, Table};

use super::flow::{Bounds, Forward, Waiter};
use super::groups::GroupRef;
use super::handover::{MovedMessage, MovedSubscription};
use super::message::{Delivery, Message};
use super::outbox::Outbox;
use super::session::SessionHandle;
use super::version::Version;

/// The first byte of every record: its layout.
const RECORD: u8 = 1;

/// The largest record a load accepts as a PUBLISH (any stored message was within the packet
/// limit when it came; this only bounds what a damaged record could make the loader allocate).
const MAX_RECORD_PACKET: usize = 256 * 1024 * 1024;

/// The broker's side of the store.
pub struct Persist {
    store: Store,
    mode: Mode,
    /// Numbers for sessions and messages, unique in the store: above every one it holds.
    next: AtomicU64,
}

impl Persist {
    pub fn new(store: Store, mode: Mode, first: u64) -> Arc<Persist> {
        Arc::new(Persist {
            store,
            mode,
            next: AtomicU64::new(first.max(1)),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether acknowledgements wait for the disk (`storage.durability = "immediate"`).
    pub fn immediate(&self) -> bool {
        self.mode == Mode::Immediate
    }

    fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes a retained message, or the clear of one (`tombstone`: kept as a tombstone with
    /// its version, on a cluster; else the record is deleted).
    pub fn keep_retained(&self, message: &Arc<Message>, tombstone: bool) {
        let key = message.topic.as_bytes().to_vec();
        if message.payload.is_empty() && !tombstone {
            self.store.delete(Table::Retained, key);
        } else {
            self.store.put(
                Table::Retained,
                key,
                Box::new(RetainedRecord(Arc::clone(message))),
            );
        }
    }

    /// Sends `answer` (a SUBACK or UNSUBACK) once the session's record written before it is
    /// on disk, and then queues the retained messages that follow a SUBACK. Sent even if the
    /// write failed (SUBACK has no way to say "not stored"); the failure is logged and counted
    /// by the store.
    pub fn answer(
        &self,
        answer: Packet,
        retained: Vec<Delivery>,
        outbox: Arc<Outbox>,
        session: Arc<SessionHandle>,
        bounds: Bounds,
    ) {
        self.store.sync(Box::new(Answer {
            answer,
            retained,
            outbox,
            session,
            bounds,
        }));
    }

    /// Holds a publisher's acknowledgement until what was written for its message is on disk
    /// (`immediate`); a failed write makes it negative ([`super::flow::Waiter`]).
    pub fn hold(&self, forward: Forward) {
        self.store.sync(Box::new(Held(forward)));
    }
}

/// A publisher's acknowledgement waiting for the disk.
struct Held(Forward);

impl Durable for Held {
    fn done(self: Box<Self>, stored: bool) {
        if stored {
            self.0.delivered();
        } else {
            self.0.fail(crate::protocol::reason::UNSPECIFIED_ERROR);
        }
    }
}

/// A SUBACK or UNSUBACK waiting for the session's record ([`Persist::answer`]).
struct Answer {
    answer: Packet,
    retained: Vec<Delivery>,
    outbox: Arc<Outbox>,
    session: Arc<SessionHandle>,
    bounds: Bounds,
}

impl Durable for Answer {
    fn done(self: Box<Self>, _stored: bool) {
        let Answer {
            answer,
            retained,
            outbox,
            session,
            bounds,
        } = *self;
        outbox.send(answer);
        if retained.is_empty() {
            return;
        }
        let mut state = session.lock();
        // The room was reserved when they were looked up; one that no longer fits is dropped
        // as a full queue drops it.
        let mut dropped = 0;
        for delivery in retained {
            dropped += usize::from(!state.enqueue(delivery, &bounds));
        }
        drop(state);
        if dropped > 0 {
            tracing::debug!(
                client_id = session.client_id(),
                dropped,
                "retained messages for a new subscription found the queue full"
            );
        }
        outbox.wake();
    }
}

/// A message's record key: its session's number and its own.
fn message_key(session: u64, seq: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&session.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The key of an inbound QoS 2 packet id of a session.
fn inbound_key(session: u64, packet_id: u16) -> Vec<u8> {
    let mut key = Vec::with_capacity(10);
    key.extend_from_slice(&session.to_be_bytes());
    key.extend_from_slice(&packet_id.to_be_bytes());
    key
}

/// A delivery's record on disk; dropping it deletes the record (see the module docs).
/// Boxed in the delivery, which most messages travel in without one.
pub struct Stored {
    persist: Arc<Persist>,
    key: [u8; 16],
    /// The publisher's ack waiting for this copy (`immediate`), if a local client published it.
    publisher: Option<Arc<Copy>>,
}

/// A local publisher's ack waiting for one stored copy of its message: released by
/// whichever comes first — the commit that wrote the copy, or the copy leaving its session
/// (acknowledged by the subscriber, which is what an online subscriber usually does before
/// the disk is reached: then the message was delivered and need not wait for the disk).
struct Copy(std::sync::Mutex<Option<Forward>>);

impl Copy {
    fn settle(&self, stored: bool) {
        let forward = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match forward {
            Some(forward) if stored => forward.delivered(),
            Some(forward) => forward.fail(crate::protocol::reason::UNSPECIFIED_ERROR),
            None => {}
        }
    }
}

/// The commit side of a [`Copy`].
struct Committed(Arc<Copy>);

impl Durable for Committed {
    fn done(self: Box<Self>, stored: bool) {
        self.0.settle(stored);
    }
}

impl Stored {
    /// The delivery was sent with `packet_id` (or, `released`, its PUBREC came and PUBREL
    /// went): after a restart it is sent again with the same id, or its PUBREL is.
    pub fn flight(&self, packet_id: u16, released: bool) {
        let mut value = BytesMut::with_capacity(3);
        value.put_u16(packet_id);
        value.put_u8(u8::from(released));
        self.persist
            .store
            .put(Table::Flights, self.key.to_vec(), Box::new(value));
    }
}

impl Drop for Stored {
    fn drop(&mut self) {
        if let Some(copy) = &self.publisher {
            copy.settle(true);
        }
        // Its flight state goes with it (`store::batch`).
        self.persist
            .store
            .delete(Table::Messages, self.key.to_vec());
    }
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored").field("key", &self.key).finish()
    }
}

/// What a persistent session carries for the store.
pub struct Persisted {
    persist: Arc<Persist>,
    /// The session's number in the store's keys; a new one for every session of the client.
    id: u64,
    client_id: Arc<str>,
    username: Option<Arc<str>>,
    /// The Will of the last connection, until it is published or cancelled.
    pub will: Option<Will>,
    /// When its client left (ms since the Unix epoch); 0 while connected.
    pub away_since: u64,
}

impl Persisted {
    pub fn new(persist: &Arc<Persist>, client_id: Arc<str>, username: Option<Arc<str>>) -> Self {
        Persisted::with_id(persist, persist.next(), client_id, username)
    }

    /// A session read back from the store, under the number it had.
    pub fn with_id(
        persist: &Arc<Persist>,
        id: u64,
        client_id: Arc<str>,
        username: Option<Arc<str>>,
    ) -> Self {
        Persisted {
            id,
            persist: Arc::clone(persist),
            client_id,
            username,
            will: None,
            away_since: 0,
        }
    }

    /// Writes `delivery` (QoS 1/2) to the store; returns its key, to keep with it. In
    /// `immediate` mode the ack of the local `publisher` that sent it waits until it is on
    /// disk or has left the session ([`Copy`]).
    pub fn keep(
        &self,
        delivery: &Delivery,
        publisher: Option<&Arc<Waiter>>,
    ) -> Option<Box<Stored>> {
        if delivery.qos == QoS::AtMostOnce {
            return None;
        }
        let key = message_key(self.id, self.persist.next());
        let record = MessageRecord {
            message: Arc::clone(&delivery.message),
            qos: delivery.qos,
            retain: delivery.retain,
            subscription_ids: delivery.subscription_ids.clone(),
            group: delivery.group.clone(),
        };
        self.persist
            .store
            .put(Table::Messages, key.to_vec(), Box::new(record));
        let publisher = publisher
            .filter(|_| self.persist.immediate())
            .map(|waiter| {
                let copy = Arc::new(Copy(std::sync::Mutex::new(Some(waiter.forwarded()))));
                self.persist
                    .store
                    .sync(Box::new(Committed(Arc::clone(&copy))));
                copy
            });
        Some(Box::new(Stored {
            persist: Arc::clone(&self.persist),
            key,
            publisher,
        }))
    }

    pub fn inbound_received(&self, packet_id: u16) {
        self.persist.store.put(
            Table::Inbound,
            inbound_key(self.id, packet_id),
            Box::new(BytesMut::new()),
        );
    }

    pub fn inbound_released(&self, packet_id: u16) {
        self.persist
            .store
            .delete(Table::Inbound, inbound_key(self.id, packet_id));
    }

    /// Writes the session's record.
    pub fn save(
        &self,
        expiry_interval: u32,
        connected_at: u64,
        subscriptions: impl Iterator<Item = (String, SubscriptionOptions, Option<u32>)>,
    ) {
        let mut out = BytesMut::with_capacity(128);
        out.put_u8(RECORD);
        out.put_u64(self.id);
        out.put_u32(expiry_interval);
        out.put_u64(self.away_since);
        out.put_u64(connected_at);
        put_str(&mut out, self.username.as_deref().unwrap_or_default());
        out.put_u8(u8::from(self.username.is_some()));
        let subscriptions: Vec<_> = subscriptions.collect();
        out.put_u32(u32::try_from(subscriptions.len()).unwrap_or(u32::MAX));
        for (filter, options, id) in &subscriptions {
            put_str(&mut out, filter);
            out.put_u8(options.to_byte());
            out.put_u32(id.unwrap_or(0));
        }
        match &self.will {
            Some(will) => {
                out.put_u8(1);
                out.put_u32(will.properties.will_delay_interval.unwrap_or(0));
                let mut properties = will.properties.clone();
                properties.will_delay_interval = None;
                let publish = Publish {
                    qos: will.qos,
                    retain: will.retain,
                    topic: will.topic.clone(),
                    packet_id: u16::from(will.qos != QoS::AtMostOnce),
                    properties,
                    payload: will.payload.clone(),
                    dup: false,
                };
                put_publish(&mut out, publish);
            }
            None => out.put_u8(0),
        }
        self.persist.store.put(
            Table::Sessions,
            self.client_id.as_bytes().to_vec(),
            Box::new(out),
        );
    }

    /// The session ends (or leaves this node): its record, messages and ids go.
    pub fn forget(&self) {
        let store = &self.persist.store;
        store.delete(Table::Sessions, self.client_id.as_bytes().to_vec());
        let prefix = self.id.to_be_bytes().to_vec();
        store.delete_prefix(Table::Messages, prefix.clone());
        store.delete_prefix(Table::Flights, prefix.clone());
        store.delete_prefix(Table::Inbound, prefix);
    }
}

/// A queued message's record, encoded by the store's writer (and only if it reaches the disk).
struct MessageRecord {
    message: Arc<Message>,
    qos: QoS,
    retain: bool,
    subscription_ids: Vec<u32>,
    group: Option<Arc<GroupRef>>,
}

impl Encode for MessageRecord {
    fn encode(&self, out: &mut BytesMut) {
        let now = Instant::now();
        out.put_u8(RECORD);
        out.put_u64(wall_ms());
        match &self.group {
            Some(group) => {
                out.put_u8(1);
                put_str(out, &group.group);
                put_str(out, &group.filter);
            }
            None => out.put_u8(0),
        }
        let mut publish = self.message.to_publish(now);
        publish.qos = self.qos;
        publish.retain = self.retain;
        publish.packet_id = 1;
        publish
            .properties
            .subscription_identifiers
            .clone_from(&self.subscription_ids);
        put_publish(out, publish);
    }

    fn size(&self) -> usize {
        self.message.size() + 32
    }
}

/// A retained message or the tombstone of a clear, with its version.
pub struct RetainedRecord(pub Arc<Message>);

impl Encode for RetainedRecord {
    fn encode(&self, out: &mut BytesMut) {
        let message = &self.0;
        out.put_u8(RECORD);
        out.put_u64(wall_ms());
        let version = message.version.clone().unwrap_or(Version {
            hlc: 0,
            node: Arc::from(""),
        });
        out.put_u64(version.hlc);
        put_str(out, &version.node);
        let mut publish = message.to_publish(Instant::now());
        publish.retain = true;
        put_publish(out, publish);
    }

    fn size(&self) -> usize {
        self.0.size() + 32
    }
}

/// Why a record could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("damaged {0} record")]
pub struct RecordError(&'static str);

/// A session as read back.
pub struct LoadedSession {
    pub id: u64,
    pub client_id: String,
    pub username: Option<String>,
    pub expiry_interval: u32,
    pub away_since: u64,
    /// When its client last connected (µs since the Unix epoch), to tell it from a copy
    /// elsewhere in a cluster.
    pub connected_at: u64,
    pub subscriptions: Vec<MovedSubscription>,
    pub will: Option<Will>,
}

pub fn read_session(client_id: &[u8], mut value: &[u8]) -> Result<LoadedSession, RecordError> {
    let what = "session";
    let client_id = String::from_utf8(client_id.to_vec()).map_err(|_| RecordError(what))?;
    if take_u8(&mut value, what)? != RECORD {
        return Err(RecordError(what));
    }
    let id = take_u64(&mut value, what)?;
    let expiry_interval = take_u32(&mut value, what)?;
    let away_since = take_u64(&mut value, what)?;
    let connected_at = take_u64(&mut value, what)?;
    let username = take_str(&mut value, what)?;
    let username = (take_u8(&mut value, what)? != 0).then_some(username);
    let count = take_u32(&mut value, what)?;
    let mut subscriptions = Vec::new();
    for _ in 0..count {
        let filter = take_str(&mut value, what)?;
        let options =
            SubscriptionOptions::from_byte(take_u8(&mut value, what)?).ok_or(RecordError(what))?;
        let id = Some(take_u32(&mut value, what)?).filter(|&id| id != 0);
        subscriptions.push(MovedSubscription {
            filter,
            options,
            id,
        });
    }
    let will = if take_u8(&mut value, what)? != 0 {
        let delay = take_u32(&mut value, what)?;
        let publish = take_publish(&mut value, what)?;
        let mut properties = publish.properties;
        properties.will_delay_interval = Some(delay).filter(|&d| d > 0);
        Some(Will {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
        })
    } else {
        None
    };
    Ok(LoadedSession {
        id,
        client_id,
        username,
        expiry_interval,
        away_since,
        connected_at,
        subscriptions,
        will,
    })
}

/// A queued message as read back, its expiry shortened by the time since it was written.
pub fn read_message(mut value: &[u8]) -> Result<MovedMessage, RecordError> {
    let what = "message";
    if take_u8(&mut value, what)? != RECORD {
        return Err(RecordError(what));
    }
    let written = take_u64(&mut value, what)?;
    let group = if take_u8(&mut value, what)? != 0 {
        Some(GroupRef {
            group: take_str(&mut value, what)?,
            filter: take_str(&mut value, what)?,
        })
    } else {
        None
    };
    let mut publish = take_publish(&mut value, what)?;
    age(&mut publish, written);
    Ok(MovedMessage {
        publish,
        in_flight: None,
        group,
    })
}

/// A flight record: (packet id, PUBREL sent).
pub fn read_flight(mut value: &[u8]) -> Result<(u16, bool), RecordError> {
    let what = "flight";
    Ok((take_u16(&mut value, what)?, take_u8(&mut value, what)? != 0))
}

/// The (session, sequence) of a message or flight key; (session, packet id) of an inbound key.
pub fn split_key(key: &[u8]) -> Option<(u64, u64)> {
    let (session, rest) = key.split_first_chunk::<8>()?;
    let tail = match rest.len() {
        8 => u64::from_be_bytes(rest.try_into().ok()?),
        2 => u64::from(u16::from_be_bytes(rest.try_into().ok()?)),
        _ => return None,
    };
    Some((u64::from_be_bytes(*session), tail))
}

/// A retained message or clear as read back, with its version; `None` if it expired.
pub fn read_retained(mut value: &[u8]) -> Result<Option<(Publish, Version)>, RecordError> {
    let what = "retained";
    if take_u8(&mut value, what)? != RECORD {
        return Err(RecordError(what));
    }
    let written = take_u64(&mut value, what)?;
    let hlc = take_u64(&mut value, what)?;
    let node = take_str(&mut value, what)?;
    let mut publish = take_publish(&mut value, what)?;
    if !age(&mut publish, written) {
        return Ok(None);
    }
    Ok(Some((
        publish,
        Version {
            hlc,
            node: node.into(),
        },
    )))
}

/// Takes the time since `written` off the message's expiry; false if it has expired.
fn age(publish: &mut Publish, written: u64) -> bool {
    let Some(expiry) = publish.properties.message_expiry_interval else {
        return true;
    };
    let gone = wall_ms().saturating_sub(written) / 1000;
    match u64::from(expiry).checked_sub(gone) {
        Some(left) if left > 0 => {
            publish.properties.message_expiry_interval = Some(u32::try_from(left).unwrap_or(1));
            true
        }
        _ => false,
    }
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long ago `since` (ms since the Unix epoch) was; zero if in the future.
pub fn since(since: u64) -> Duration {
    Duration::from_millis(wall_ms().saturating_sub(since))
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    out.put_slice(s.as_bytes());
}

fn put_publish(out: &mut BytesMut, publish: Publish) {
    let mut packet = BytesMut::new();
    if let Err(error) =
        protocol::encode(&Packet::Publish(publish), ProtocolVersion::V5, &mut packet)
    {
        // Every message here was decoded from a valid packet; it encodes again.
        tracing::error!(%error, "cannot encode a message for the store");
    }
    out.put_u32(u32::try_from(packet.len()).unwrap_or(u32::MAX));
    out.put_slice(&packet);
}

fn take_u8(value: &mut &[u8], what: &'static str) -> Result<u8, RecordError> {
    if value.remaining() < 1 {
        return Err(RecordError(what));
    }
    Ok(value.get_u8())
}

fn take_u16(value: &mut &[u8], what: &'static str) -> Result<u16, RecordError> {
    if value.remaining() < 2 {
        return Err(RecordError(what));
    }
    Ok(value.get_u16())
}

fn take_u32(value: &mut &[u8], what: &'static str) -> Result<u32, RecordError> {
    if value.remaining() < 4 {
        return Err(RecordError(what));
    }
    Ok(value.get_u32())
}

fn take_u64(value: &mut &[u8], what: &'static str) -> Result<u64, RecordError> {
    if value.remaining() < 8 {
        return Err(RecordError(what));
    }
    Ok(value.get_u64())
}

fn take_bytes(value: &mut &[u8], what: &'static str) -> Result<Bytes, RecordError> {
    let len = usize::try_from(take_u32(value, what)?).map_err(|_| RecordError(what))?;
    if value.remaining() < len {
        return Err(RecordError(what));
    }
    Ok(value.copy_to_bytes(len))
}

fn take_str(value: &mut &[u8], what: &'static str) -> Result<String, RecordError> {
    String::from_utf8(take_bytes(value, what)?.to_vec()).map_err(|_| RecordError(what))
}

fn take_publish(value: &mut &[u8], what: &'static str) -> Result<Publish, RecordError> {
    let mut packet = BytesMut::from(&take_bytes(value, what)?[..]);
    match protocol::decode(&mut packet, ProtocolVersion::V5, MAX_RECORD_PACKET) {
        Ok(Some(Packet::Publish(publish))) if packet.is_empty() => Ok(publish),
        _ => Err(RecordError(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PropertyValues;

    #[test]
    fn keys_split_back_into_their_numbers() {
        assert_eq!(split_key(&message_key(7, 9)), Some((7, 9)));
        assert_eq!(split_key(&inbound_key(7, 3)), Some((7, 3)));
        assert_eq!(split_key(b"short"), None);
    }

    #[test]
    fn a_message_record_reads_back_as_the_delivery_it_was() {
        let message = Message::from_publish(
            Publish {
                qos: QoS::ExactlyOnce,
                packet_id: 5,
                topic: "a/b".into(),
                payload: Bytes::from_static(b"hello"),
                properties: PropertyValues {
                    user_properties: vec![("k".into(), "v".into())],
                    message_expiry_interval: Some(3600),
                    ..PropertyValues::default()
                }
                .into(),
                ..Publish::default()
            },
            1,
        );
        let record = MessageRecord {
            message: Arc::new(message),
            qos: QoS::AtLeastOnce,
            retain: true,
            subscription_ids: vec![4],
            group: Some(Arc::new(GroupRef {
                group: "g".into(),
                filter: "a/+".into(),
            })),
        };
        let mut out = BytesMut::new();
        record.encode(&mut out);
        let moved = read_message(&out).expect("reads back");
        assert_eq!(moved.publish.topic, "a/b");
        assert_eq!(&moved.publish.payload[..], b"hello");
        assert_eq!(moved.publish.qos, QoS::AtLeastOnce);
        assert!(moved.publish.retain);
        assert_eq!(moved.publish.properties.subscription_identifiers, [4]);
        assert_eq!(
            moved.publish.properties.user_properties,
            [("k".to_string(), "v".to_string())]
        );
        assert!(
            moved
                .publish
                .properties
                .message_expiry_interval
                .is_some_and(|left| left > 3590 && left <= 3600)
        );
        assert_eq!(moved.group.map(|g| g.group), Some("g".to_string()));
        assert!(read_message(&out[..out.len() - 1]).is_err(), "cut short");
    }

    #[test]
    fn an_expired_message_is_not_read_back_as_alive() {
        let mut publish = Publish {
            properties: PropertyValues {
                message_expiry_interval: Some(10),
                ..PropertyValues::default()
            }
            .into(),
            ..Publish::default()
        };
        assert!(!age(&mut publish, wall_ms() - 11_000));
        publish.properties.message_expiry_interval = Some(10);
        assert!(age(&mut publish, wall_ms() - 4_000));
        assert_eq!(publish.properties.message_expiry_interval, Some(6));
    }
}
