//! A session's queue: the messages waiting to be sent to its client, bounded in messages and
//! bytes ([`Bounds`]), and the messages parked beside it while it is full ([`super::flow`]).
//! The byte bound covers what the session holds in all: the queue and the messages sent and
//! not yet acknowledged (in flight), so a client that reads but never acknowledges cannot make
//! the broker hold `max_inflight` large messages on top of a full queue.
//!
//! Parked messages move in, oldest first, as soon as the queue has room, so a message never
//! overtakes one parked before it. While messages are parked the queue times its *wait*
//! ([`Queue::waiting_since`]): the wait ends when the client has taken half a queue's worth
//! out (by count or by bytes), not when it takes one, so a client that drains a message now
//! and then while publishers queue up behind it still reaches the end of its patience.
//!
//! The parked messages and the wait's figures are boxed and made on first use: most sessions
//! never fill their queue, and every session carries this type for its whole life.

use std::collections::VecDeque;
use std::time::Instant;

use crate::protocol::QoS;

use super::flow::{Bounds, Parked};
use super::message::Delivery;

#[derive(Default)]
pub struct Queue {
    pending: VecDeque<Delivery>,
    /// Bytes of the messages in `pending` ([`Delivery::size`]).
    bytes: usize,
    /// Bytes of the session's messages in flight (sent, not yet acknowledged).
    in_flight: usize,
    wait: Option<Box<Wait>>,
}

/// Messages parked beside a full queue, and how long they (and those before them) have been
/// kept waiting.
struct Wait {
    parked: VecDeque<Parked>,
    /// When the wait began.
    since: Instant,
    /// Messages and bytes the client has taken out of the queue since then.
    taken: usize,
    taken_bytes: usize,
    /// When the parked list last became empty: a message parked soon after continues the
    /// wait (a publisher sending its next message), one parked much later starts a new one.
    emptied: Option<Instant>,
}

impl Wait {
    fn new(now: Instant) -> Wait {
        Wait {
            parked: VecDeque::new(),
            since: now,
            taken: 0,
            taken_bytes: 0,
            emptied: None,
        }
    }

    /// Whether a wait whose parked list emptied is over: nobody parked again within
    /// a tenth of the patience.
    fn lapsed(&self, now: Instant, bounds: &Bounds) -> bool {
        self.emptied
            .is_some_and(|at| now.duration_since(at) >= bounds.patience / 10)
    }
}

impl Queue {
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn front(&self) -> Option<&Delivery> {
        self.pending.front()
    }

    /// Whether a message of `size` bytes fits. A session that holds nothing takes any one
    /// message, so a message larger than the byte bound (but within the packet size) still
    /// gets through.
    pub fn has_room(&self, size: usize, bounds: &Bounds) -> bool {
        fits(self.pending.len(), self.held(), size, bounds)
    }

    /// Bytes held: queued and in flight.
    fn held(&self) -> usize {
        self.bytes + self.in_flight
    }

    /// A message of `size` bytes taken from the queue is now in flight.
    pub fn fly(&mut self, size: usize) {
        self.in_flight += size;
    }

    /// A message of `size` bytes in flight was acknowledged (or given up).
    pub fn land(&mut self, size: usize) {
        self.in_flight -= size;
    }

    /// Messages that still fit, by count (bytes are checked per message on [`Queue::push`]).
    pub fn room(&self, bounds: &Bounds) -> usize {
        bounds.messages.saturating_sub(self.pending.len())
    }

    /// Half the queue or more is free: a slow session may take messages again.
    pub fn is_half_empty(&self, bounds: &Bounds) -> bool {
        self.pending.len() <= bounds.messages / 2 && self.held() <= bounds.bytes / 2
    }

    /// Appends a message; the caller has checked the room.
    pub fn push(&mut self, delivery: Delivery) {
        self.bytes += delivery.size();
        self.pending.push_back(delivery);
    }

    /// Takes the front message for the client, and moves parked ones in as the room it
    /// leaves allows.
    pub fn pop(&mut self, bounds: &Bounds) -> Option<Delivery> {
        let delivery = self.pending.pop_front()?;
        let size = delivery.size();
        self.bytes -= size;
        // Nothing waits (the common case): nothing more to do.
        let Some(wait) = self.wait.as_mut() else {
            return Some(delivery);
        };
        wait.taken += 1;
        wait.taken_bytes += size;
        if wait.taken * 2 >= bounds.messages || wait.taken_bytes * 2 >= bounds.bytes {
            // Real progress: the wait is over; messages still parked start a new one.
            if wait.parked.is_empty() {
                self.wait = None;
            } else {
                **wait = Wait {
                    parked: std::mem::take(&mut wait.parked),
                    ..Wait::new(Instant::now())
                };
            }
        }
        self.promote(bounds);
        Some(delivery)
    }

    /// Moves parked messages in, oldest first, while they fit; their claims are released.
    pub fn promote(&mut self, bounds: &Bounds) {
        let Some(wait) = self.wait.as_mut() else {
            return;
        };
        if wait.parked.is_empty() {
            return;
        }
        while let Some(next) = wait.parked.front() {
            let size = next.delivery.size();
            if !fits(
                self.pending.len(),
                self.bytes + self.in_flight,
                size,
                bounds,
            ) {
                return;
            }
            if let Some(Parked { delivery, claim }) = wait.parked.pop_front() {
                // Moved in: whoever waited for it (a publisher, a route's budget) is released.
                drop(claim);
                self.bytes += size;
                self.pending.push_back(delivery);
            }
        }
        wait.emptied = Some(Instant::now());
    }

    /// Parks a message beside the full queue, continuing the wait or starting one; true if a
    /// wait began.
    pub fn park(&mut self, parked: Parked, now: Instant, bounds: &Bounds) -> bool {
        let mut began = self.wait.is_none();
        let wait = self.wait.get_or_insert_with(|| Box::new(Wait::new(now)));
        if wait.parked.is_empty() && wait.lapsed(now, bounds) {
            **wait = Wait::new(now);
            began = true;
        }
        wait.emptied = None;
        wait.parked.push_back(parked);
        began
    }

    pub fn has_parked(&self) -> bool {
        self.wait.as_ref().is_some_and(|w| !w.parked.is_empty())
    }

    /// When the current wait began, if messages wait (or waited a moment ago) for room.
    pub fn waiting_since(&self, now: Instant, bounds: &Bounds) -> Option<Instant> {
        let wait = self.wait.as_ref()?;
        (!wait.parked.is_empty() || !wait.lapsed(now, bounds)).then_some(wait.since)
    }

    /// Drops every parked message (releasing what waits for them) and ends the wait;
    /// returns how many were dropped.
    pub fn drop_parked(&mut self) -> u64 {
        self.wait.take().map_or(0, |wait| wait.parked.len() as u64)
    }

    /// The connection left: QoS 0 messages go, as a session without a connection keeps none
    /// (MQTT-3.1.2-5 makes it optional); parked QoS 1/2 messages move in while they fit.
    /// Returns how many QoS 1/2 messages were dropped for want of room.
    pub fn go_offline(&mut self, bounds: &Bounds) -> u64 {
        self.retain(|d| d.qos != QoS::AtMostOnce);
        if let Some(wait) = self.wait.as_mut() {
            wait.parked.retain(|p| p.delivery.qos != QoS::AtMostOnce);
        }
        self.promote(bounds);
        self.drop_parked()
    }

    /// Takes out the messages that belong to a consumer group, queued or parked.
    pub fn take_groups(&mut self, out: &mut Vec<Delivery>) {
        self.retain(|delivery| {
            let group = delivery.group.is_some();
            if group {
                out.push(delivery.clone());
            }
            !group
        });
        if let Some(wait) = self.wait.as_mut() {
            wait.parked.retain(|p| {
                let group = p.delivery.group.is_some();
                if group {
                    out.push(p.delivery.clone());
                }
                !group
            });
        }
    }

    /// Takes every message, queued and then parked, in order; the parked ones' claims are
    /// released, as the messages are taken (the session moves to another node).
    pub fn take_all(&mut self) -> Vec<Delivery> {
        let mut out: Vec<Delivery> = self.pending.drain(..).collect();
        if let Some(wait) = self.wait.take() {
            out.extend(wait.parked.into_iter().map(|parked| parked.delivery));
        }
        self.bytes = 0;
        out
    }

    /// Empties the queue and the parked list.
    pub fn clear(&mut self) {
        self.pending.clear();
        self.bytes = 0;
        self.wait = None;
    }

    /// Forgets the messages in flight, as the session forgot them.
    pub fn clear_in_flight(&mut self) {
        self.in_flight = 0;
    }

    fn retain(&mut self, mut keep: impl FnMut(&Delivery) -> bool) {
        let mut bytes = self.bytes;
        self.pending.retain(|d| {
            let kept = keep(d);
            if !kept {
                bytes -= d.size();
            }
            kept
        });
        self.bytes = bytes;
    }
}

/// Whether a message of `size` bytes fits in a queue of `len` messages in a session holding
/// `held` bytes.
fn fits(len: usize, held: usize, size: usize, bounds: &Bounds) -> bool {
    len < bounds.messages && (held == 0 || held + size <= bounds.bytes)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::broker::flow::{SlowPolicy, Waiter};
    use crate::broker::message::Message;
    use crate::broker::outbox::Outbox;
    use crate::protocol::Publish;

    const BOUNDS: Bounds = Bounds {
        messages: 4,
        bytes: 1000,
        patience: Duration::from_millis(1000),
        policy: SlowPolicy::Drop,
    };

    fn delivery(payload: usize) -> Delivery {
        let publish = Publish {
            topic: "t".into(),
            payload: vec![0u8; payload].into(),
            qos: QoS::AtLeastOnce,
            packet_id: 1,
            ..Publish::default()
        };
        Delivery {
            message: Arc::new(Message::from_publish(publish, 0)),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Vec::new(),
            group: None,
            stored: None,
        }
    }

    fn waiter() -> Arc<Waiter> {
        Arc::new(Waiter::new(Arc::new(Outbox::default()), true, None))
    }

    fn parked(waiter: &Arc<Waiter>, payload: usize) -> Parked {
        let delivery = delivery(payload);
        Parked {
            claim: waiter.parked(delivery.size()),
            delivery,
        }
    }

    #[test]
    fn bounded_by_count_and_by_bytes_but_an_empty_queue_takes_one_of_any_size() {
        let mut queue = Queue::default();
        assert!(
            queue.has_room(5000, &BOUNDS),
            "holding nothing: any one message"
        );
        queue.push(delivery(599));
        assert!(!queue.has_room(401, &BOUNDS), "600 + 401 bytes > 1000");
        assert!(queue.has_room(400, &BOUNDS));
        for _ in 0..3 {
            queue.push(delivery(9));
        }
        assert!(!queue.has_room(0, &BOUNDS), "4 messages");
    }

    #[test]
    fn messages_in_flight_count_against_the_byte_bound() {
        let mut queue = Queue::default();
        queue.push(delivery(399));
        queue.fly(500);
        assert!(
            !queue.has_room(101, &BOUNDS),
            "400 queued + 500 in flight + 101 > 1000"
        );
        queue.land(500);
        assert!(queue.has_room(101, &BOUNDS));
        // An empty queue behind a full window takes nothing larger than the room left.
        let mut queue = Queue::default();
        queue.fly(990);
        assert!(!queue.has_room(11, &BOUNDS));
        assert!(queue.has_room(10, &BOUNDS));
    }

    #[test]
    fn parked_messages_move_in_in_order_and_release_their_claims() {
        let waiter = waiter();
        let mut queue = Queue::default();
        let now = Instant::now();
        for _ in 0..4 {
            queue.push(delivery(1));
        }
        queue.park(parked(&waiter, 2), now, &BOUNDS);
        queue.park(parked(&waiter, 3), now, &BOUNDS);
        assert_eq!(waiter.outstanding(), 2);
        queue.pop(&BOUNDS);
        assert_eq!(waiter.outstanding(), 1, "the first moved in");
        queue.pop(&BOUNDS);
        assert_eq!(waiter.outstanding(), 0);
        let sizes: Vec<usize> = std::iter::from_fn(|| queue.pop(&BOUNDS))
            .map(|d| d.size())
            .collect();
        assert_eq!(sizes, [2, 2, 3, 4]);
    }

    /// A client that takes one message now and then does not end the wait: only half a
    /// queue's worth does.
    #[test]
    fn the_wait_ends_with_half_a_queue_drained_not_with_one_message() {
        let waiter = waiter();
        let mut queue = Queue::default();
        let start = Instant::now();
        for _ in 0..4 {
            queue.push(delivery(1));
        }
        queue.park(parked(&waiter, 1), start, &BOUNDS);
        queue.pop(&BOUNDS);
        // The publisher's next message, right after the first moved in.
        queue.park(parked(&waiter, 1), Instant::now(), &BOUNDS);
        assert_eq!(queue.waiting_since(Instant::now(), &BOUNDS), Some(start));
        queue.pop(&BOUNDS);
        assert!(
            queue
                .waiting_since(Instant::now(), &BOUNDS)
                .is_none_or(|since| since > start),
            "two of four taken: the wait that began at the start is over"
        );
    }
}
