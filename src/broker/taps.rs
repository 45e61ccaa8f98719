//! Taps: the admin API's live message viewer (`/api/v1/events`) sees the messages that pass
//! through this node — published here or delivered here from a peer — whose topic matches its
//! filter.
//!
//! A tap is not a subscription: it declares no interest to the cluster and takes nothing
//! from anyone. What it sees goes into a bounded channel; a viewer that reads too slowly
//! loses messages, counted, and is told how many ([`Tapped::Dropped`]), never holding up a
//! publisher. At most [`MAX_TAPS`] are open at once. With none open the publish path pays one
//! atomic load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::protocol::{QoS, topic};

use super::Broker;
use super::message::Message;

/// Taps open at once.
pub const MAX_TAPS: usize = 16;

/// Messages a tap holds for a reader that lags.
pub const TAP_CAPACITY: usize = 1024;

/// What a tap hands its reader.
#[derive(Debug, Clone, PartialEq)]
pub enum Tapped {
    Message {
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    },
    /// Messages lost since the last one the reader got, as it read too slowly.
    Dropped(u64),
}

/// The open taps (a leaf lock: nothing else is taken while it is held).
#[derive(Default)]
pub struct Taps {
    open: AtomicUsize,
    list: Mutex<Vec<Tap>>,
    next: AtomicUsize,
}

struct Tap {
    id: usize,
    filter: String,
    tx: mpsc::Sender<Tapped>,
    /// Lost since the reader was last told.
    lost: u64,
}

/// An open tap: its messages, and closing it when dropped.
pub struct TapReader {
    id: usize,
    broker: Arc<Broker>,
    rx: mpsc::Receiver<Tapped>,
}

impl TapReader {
    /// The next message, or `None` once the broker is gone.
    pub async fn next(&mut self) -> Option<Tapped> {
        self.rx.recv().await
    }
}

impl Drop for TapReader {
    fn drop(&mut self) {
        let taps = &self.broker.taps;
        let mut list = taps.list();
        list.retain(|tap| tap.id != self.id);
        taps.open.store(list.len(), Ordering::Release);
    }
}

impl Taps {
    fn list(&self) -> MutexGuard<'_, Vec<Tap>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Broker {
    /// Opens a tap on `filter` (an MQTT filter); `None` when [`MAX_TAPS`] are open.
    pub fn tap(self: &Arc<Self>, filter: &str) -> Option<TapReader> {
        let taps = &self.taps;
        let mut list = taps.list();
        if list.len() >= MAX_TAPS {
            return None;
        }
        let id = taps.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(TAP_CAPACITY);
        list.push(Tap {
            id,
            filter: filter.to_string(),
            tx,
            lost: 0,
        });
        taps.open.store(list.len(), Ordering::Release);
        Some(TapReader {
            id,
            broker: Arc::clone(self),
            rx,
        })
    }

    /// Shows `message` to the taps whose filter matches it.
    pub(super) fn tapped(&self, message: &Message) {
        if self.taps.open.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut list = self.taps.list();
        for tap in list.iter_mut() {
            if !topic::matches(&tap.filter, &message.topic) {
                continue;
            }
            if tap.lost > 0 && tap.tx.try_send(Tapped::Dropped(tap.lost)).is_ok() {
                tap.lost = 0;
            }
            let seen = Tapped::Message {
                topic: message.topic.clone(),
                payload: message.payload.clone(),
                qos: message.qos,
                retain: message.retain,
            };
            if tap.tx.try_send(seen).is_err() {
                tap.lost += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    fn message(topic: &str) -> Message {
        Message::from_route(crate::protocol::Publish {
            topic: topic.into(),
            payload: Bytes::from_static(b"x"),
            ..crate::protocol::Publish::default()
        })
    }

    #[test]
    fn at_most_max_taps_are_open_and_a_closed_one_makes_room() {
        let broker = Broker::new(Limits::default());
        let mut open: Vec<TapReader> = (0..MAX_TAPS)
            .map(|_| broker.tap("#").expect("room"))
            .collect();
        assert!(broker.tap("#").is_none(), "the bound is reached");
        open.pop();
        assert!(broker.tap("#").is_some(), "a closed tap makes room");
    }

    #[tokio::test]
    async fn a_lagging_reader_loses_messages_and_is_told_how_many() {
        let broker = Broker::new(Limits::default());
        let mut reader = broker.tap("t/#").expect("room");
        for _ in 0..TAP_CAPACITY + 5 {
            broker.tapped(&message("t/1"));
        }
        broker.tapped(&message("other"));
        for _ in 0..TAP_CAPACITY {
            assert!(matches!(reader.next().await, Some(Tapped::Message { .. })));
        }
        // The next matching message goes after word of the five lost.
        broker.tapped(&message("t/2"));
        assert_eq!(reader.next().await, Some(Tapped::Dropped(5)));
        match reader.next().await {
            Some(Tapped::Message { topic, .. }) => assert_eq!(topic, "t/2"),
            other => panic!("{other:?}"),
        }
    }
}
