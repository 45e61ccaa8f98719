//! The hand-off from a connection's reader (and the rest of the broker) to its writer.
//!
//! Besides the session's messages, a connection's writer sends packets that answer the client
//! (CONNACK, PUBACK, SUBACK, ...) and, at the end, a DISCONNECT. Those are put here, and
//! [`Outbox::wake`] tells the writer there is something to do — the same wake-up that
//! publishers use when they queue a message for the session. The control queue is bounded
//! by the reader waiting ([`Outbox::wait_for_room`]) rather than by dropping: an answer the
//! client is owed is never thrown away.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::protocol::Packet;

use super::keepalive::Watch;

/// How many control packets may wait for the writer before the reader stops reading.
const CONTROL_LIMIT: usize = 1024;

/// Control packets for one connection and the writer's wake-up.
///
/// Every connection has one for its whole life, so it is kept small: the two rare waits, a
/// reader's for room in a full queue and a stuck writer's for a close, share one
/// [`Notify`] (each checks its own condition when woken), and the close reason is boxed.
///
/// The writer's wake-up is a waker slot and a flag rather than a `Notify`: a connection at
/// rest has no task to wake ([`super::idle`]), and its slot holds the waker that gives it one.
#[derive(Default)]
pub struct Outbox {
    state: Mutex<State>,
    /// Whom to wake when there are control packets or session messages to send, or a close:
    /// the writer, or the waker of a connection at rest.
    writer: AtomicWaker,
    /// Set by a wake-up, taken by the writer: one sent while nobody waits is kept.
    woken: AtomicBool,
    /// The control queue got room, or the connection was closed.
    changed: Notify,
    /// When the client was last heard from, for the broker's keep alive sweep.
    keep_alive: Watch,
}

/// How the writer should end the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// Send DISCONNECT with this reason code and reason string (5.0 only), then close.
    Disconnect(u8, String),
    /// Close after the queued packets without a DISCONNECT: the client sent one.
    Quiet,
}

#[derive(Default)]
struct State {
    control: VecDeque<Packet>,
    /// Set when the connection must end; acted on after the control packets already queued.
    close: Option<Box<Close>>,
}

impl Outbox {
    /// An outbox for a connection whose keep alive is `keep_alive`.
    pub fn new(keep_alive: Watch) -> Outbox {
        Outbox {
            keep_alive,
            ..Outbox::default()
        }
    }

    /// The connection's keep alive.
    pub fn keep_alive(&self) -> &Watch {
        &self.keep_alive
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a packet for the client and wakes the writer.
    pub fn send(&self, packet: Packet) {
        self.state().control.push_back(packet);
        self.wake();
    }

    /// Queues packets for the client, in order, and wakes the writer once.
    pub fn send_all(&self, packets: impl IntoIterator<Item = Packet>) {
        let mut state = self.state();
        let before = state.control.len();
        state.control.extend(packets);
        let added = state.control.len() > before;
        drop(state);
        if added {
            self.wake();
        }
    }

    /// Asks the writer to end the connection with DISCONNECT `reason` once the queued packets
    /// are out. A writer stuck on a client that does not read is abandoned ([`Outbox::killed`]).
    /// The first reason wins: a connection closes once, for one reason.
    pub fn close(&self, reason: u8, why: impl Into<String>) {
        self.set_close(Close::Disconnect(reason, why.into()));
        self.changed.notify_waiters();
    }

    /// Asks the writer to send what is queued and then close, without a DISCONNECT.
    pub fn finish(&self) {
        self.set_close(Close::Quiet);
    }

    fn set_close(&self, close: Close) {
        let mut state = self.state();
        if state.close.is_none() {
            state.close = Some(Box::new(close));
        }
        drop(state);
        self.wake();
    }

    /// Completes, with its reason code, once [`Outbox::close`] has been called: a write in
    /// progress is then given up. (A close without DISCONNECT, [`Outbox::finish`], lets the
    /// write end.)
    pub async fn killed(&self) -> u8 {
        loop {
            // Registered before the check, so a close in between is not missed.
            let mut changed = std::pin::pin!(self.changed.notified());
            changed.as_mut().enable();
            if let Some(Close::Disconnect(code, _)) = self.state().close.as_deref() {
                return *code;
            }
            changed.await;
        }
    }

    /// Wakes the writer: there are session messages to send.
    pub fn wake(&self) {
        // Already woken and not yet seen: whoever set the flag wakes the writer, which looks
        // at the flag before it waits. (Many publishers wake one subscriber's writer.)
        if !self.woken.swap(true, Ordering::AcqRel) {
            self.writer.wake();
        }
    }

    /// Waits until the writer is woken. A wake-up sent while nobody waits is kept, so none
    /// is lost between the writer's last check and this call.
    pub fn woken(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.take_wake() {
                return Poll::Ready(());
            }
            // Registered before the second look, so a wake-up in between is not missed.
            self.writer.register(cx.waker());
            if self.take_wake() {
                // Nobody waits after all: a waker left behind would make every later
                // wake-up poll the busy connection for nothing.
                self.writer.take();
                return Poll::Ready(());
            }
            Poll::Pending
        })
    }

    /// Takes a wake-up sent since the writer last waited, if any, without waiting.
    pub fn take_wake(&self) -> bool {
        self.woken.swap(false, Ordering::AcqRel)
    }

    /// Hands the wake-up to `waker`, the one of a connection going to rest. Returns whether
    /// a wake-up came since the writer last looked: then the connection has work and should
    /// not rest. (A later one wakes `waker`.)
    pub fn rest(&self, waker: &Waker) -> bool {
        self.writer.register(waker);
        self.woken.load(Ordering::Acquire)
    }

    /// Takes the queued control packets (in order) and says if the connection is to end after
    /// them. The queue itself is handed over, not drained: a queue that kept its room after
    /// the CONNACK would cost every idle connection its capacity in packets.
    pub fn take(&self) -> (VecDeque<Packet>, Option<Close>) {
        let mut state = self.state();
        let control = std::mem::take(&mut state.control);
        let close = state.close.as_deref().cloned();
        drop(state);
        if control.len() >= CONTROL_LIMIT {
            // The reader may be waiting for room.
            self.changed.notify_waiters();
        }
        (control, close)
    }

    /// Whether the control queue is full, and [`Outbox::wait_for_room`] would wait.
    pub fn is_full(&self) -> bool {
        self.state().control.len() >= CONTROL_LIMIT
    }

    /// Waits while the control queue is full: a client that floods us with packets while not
    /// reading our answers is slowed down instead of growing the queue without bound.
    pub async fn wait_for_room(&self) {
        loop {
            // Registered before the check, so room made in between is not missed.
            let mut changed = std::pin::pin!(self.changed.notified());
            changed.as_mut().enable();
            if !self.is_full() {
                return;
            }
            changed.await;
        }
    }
}
