//! Connections at rest: a quiet plain-TCP connection gives up its task and its place in
//! tokio's reactor until it has something to do.
//!
//! Most connections spend their life idle, and as a tokio task an idle connection costs its
//! task's cell (768 bytes: a task keeps room for its largest state) and its socket's
//! registration with the reactor (256 bytes), more than the session it serves. So when the
//! keep-alive sweep finds a connection quiet ([`super::keepalive`]: nothing read or written
//! for a second) it asks it to rest; the connection does so only from a point where nothing
//! is half done: its reader waits for a packet with nothing buffered, its writer has nothing
//! to send ([`super::connection`]). It then hands what it owns ([`Resting`]: the socket, the
//! client's and the writer's state, 144 bytes) to this module and its task ends.
//!
//! Two things give it a task again, whichever comes first:
//! - its socket becomes readable (a packet, or the client closing): the socket sits in an
//!   epoll set of this module's own (mio's `Poll`, itself watched by tokio), which
//!   [`watch`] drains;
//! - its outbox is woken (a message for it, a close, a kick, the keep-alive timeout, a
//!   shutdown): the outbox's wake-up slot holds the resting connection's waker
//!   ([`Outbox::rest`]), a [`Sleeper`].
//!
//! The connection then goes on exactly where it was, in a new task. A connection is asked
//! to rest only when `watch` runs (the server starts it); TLS and WebSocket connections keep
//! their task (their stream has state of its own besides the socket).

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Wake, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use tokio::io::unix::AsyncFd;

use super::Broker;
use super::connection::{self, Resting};

/// Readiness events taken from the epoll set per system call.
const EVENTS: usize = 256;

/// The connections at rest, and the epoll set their sockets are watched in.
#[derive(Default)]
pub struct Idle {
    /// Set by [`watch`] when it starts; until then no connection is asked to rest.
    started: OnceLock<Started>,
    /// Cleared when `watch` ends: the connections at rest are woken, no more are asked.
    on: AtomicBool,
    beds: Mutex<Beds>,
}

struct Started {
    registry: mio::Registry,
    runtime: tokio::runtime::Handle,
}

/// The resting connections by index, with the free indexes to reuse: 8 bytes a connection.
/// A sleeper's token (the epoll event's data) is its index and, above it, the count of the
/// sleepers put to bed before it, so that an event read just before a sleeper got up is not
/// taken for one of the next sleeper in the same bed.
#[derive(Default)]
struct Beds {
    sleepers: Vec<Option<Arc<Sleeper>>>,
    free: Vec<usize>,
    made: usize,
}

/// Bits of a token that are the bed's index.
const INDEX_BITS: u32 = 32;

/// One connection at rest. It is the waker its outbox holds; the epoll set knows it by
/// `token`.
struct Sleeper {
    token: usize,
    state: AtomicU8,
    resting: Mutex<Option<Resting>>,
}

/// The sleeper is being put to rest (its socket and waker being registered).
const SETTLING: u8 = 0;
/// Woken while settling: whoever settles it gets it up once done.
const WOKEN_SETTLING: u8 = 1;
const RESTING: u8 = 2;
/// Up again (or being got up): later wake-ups find nothing to do.
const AWAKE: u8 = 3;

impl Idle {
    /// Whether connections are asked to rest.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// How many connections are at rest now.
    pub fn resting(&self) -> usize {
        let beds = self.beds();
        beds.sleepers.len() - beds.free.len()
    }

    /// The bed a token names.
    fn index(token: usize) -> usize {
        token & ((1 << INDEX_BITS) - 1)
    }

    fn beds(&self) -> MutexGuard<'_, Beds> {
        self.beds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a connection to rest, until its socket is readable or its outbox is woken. One
    /// that cannot rest (resting is off, or the socket cannot be watched) goes on as a new
    /// task. Called from the connection's task, which ends.
    pub fn rest(&self, resting: Resting) {
        let Some(started) = self.started.get() else {
            return connection::wake(resting, &tokio::runtime::Handle::current());
        };
        let fd = resting.fd();
        let outbox = Arc::clone(resting.outbox());
        let sleeper = {
            let mut beds = self.beds();
            // Looked at under the lock `stop` takes too: a sleeper put to bed after `stop`
            // looked at the beds would have nobody to watch its socket.
            if !self.is_on() {
                drop(beds);
                return connection::wake(resting, &started.runtime);
            }
            let index = match beds.free.pop() {
                Some(index) => index,
                None => {
                    beds.sleepers.push(None);
                    beds.sleepers.len() - 1
                }
            };
            beds.made = beds.made.wrapping_add(1);
            let sleeper = Arc::new(Sleeper {
                token: index | beds.made.wrapping_shl(INDEX_BITS),
                state: AtomicU8::new(SETTLING),
                resting: Mutex::new(Some(resting)),
            });
            beds.sleepers[index] = Some(Arc::clone(&sleeper));
            sleeper
        };
        // Watched by the epoll set and by the outbox before it settles: a wake-up from either
        // meanwhile is left to the end of the settling (`state`), so the connection never
        // gets up while it is still being registered.
        let watched =
            started
                .registry
                .register(&mut SourceFd(&fd), Token(sleeper.token), Interest::READABLE);
        if let Err(error) = watched {
            tracing::warn!(%error, "cannot watch a resting connection's socket; it keeps its task");
            sleeper.state.store(AWAKE, Ordering::Release);
            self.free(sleeper.token);
            // Still there: only getting up takes it, and nothing got it up while settling.
            if let Some(resting) = sleeper.take() {
                connection::wake(resting, &started.runtime);
            }
            return;
        }
        if outbox.rest(&Waker::from(Arc::clone(&sleeper))) {
            // Woken just before: it has work already.
            sleeper.wake_up();
        }
        let settled =
            sleeper
                .state
                .compare_exchange(SETTLING, RESTING, Ordering::AcqRel, Ordering::Acquire);
        if settled.is_err() {
            // Woken meanwhile (by the socket or the outbox): up again at once.
            sleeper.state.store(AWAKE, Ordering::Release);
            sleeper.get_up();
        }
    }

    fn free(&self, token: usize) {
        let index = Idle::index(token);
        let mut beds = self.beds();
        if let Some(slot) = beds.sleepers.get_mut(index)
            && slot.as_ref().is_some_and(|sleeper| sleeper.token == token)
        {
            *slot = None;
            beds.free.push(index);
        }
    }

    /// Wakes the connection resting under `token` (its socket is readable).
    fn wake(&self, token: usize) {
        let sleeper = self
            .beds()
            .sleepers
            .get(Idle::index(token))
            .and_then(Clone::clone)
            .filter(|sleeper| sleeper.token == token);
        if let Some(sleeper) = sleeper {
            sleeper.wake_up();
        }
    }

    /// Wakes every resting connection and asks no more to rest: [`watch`] has ended.
    fn stop(&self) {
        let sleepers: Vec<Arc<Sleeper>> = {
            let beds = self.beds();
            self.on.store(false, Ordering::Relaxed);
            beds.sleepers.iter().flatten().cloned().collect()
        };
        for sleeper in sleepers {
            sleeper.wake_up();
        }
    }
}

impl Sleeper {
    fn take(&self) -> Option<Resting> {
        let mut resting = self.resting.lock().unwrap_or_else(PoisonError::into_inner);
        resting.take()
    }

    /// Gives the connection its task again: out of the epoll set, into a new task.
    fn get_up(&self) {
        let Some(resting) = self.take() else {
            return;
        };
        let broker = Arc::clone(resting.broker());
        let idle = &broker.idle;
        let started = idle
            .started
            .get()
            .expect("a connection rests only once the watch has started");
        // It may fail only if the socket is already closed, which its task will find.
        let _ = started.registry.deregister(&mut SourceFd(&resting.fd()));
        idle.free(self.token);
        connection::wake(resting, &started.runtime);
    }

    /// Gets the connection up, or, while it is still settling, leaves that to the one
    /// settling it: it never waits for the registration it races, and may be called from
    /// inside it. (Getting up takes the beds' and the sleeper's locks for a moment; no
    /// waker is called while either is held.)
    fn wake_up(&self) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                SETTLING => WOKEN_SETTLING,
                RESTING => AWAKE,
                _ => return,
            };
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next == AWAKE => return self.get_up(),
                Ok(_) => return,
                Err(now) => state = now,
            }
        }
    }
}

impl Wake for Sleeper {
    fn wake(self: Arc<Self>) {
        self.wake_up();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_up();
    }
}

/// Watches the resting connections' sockets and gets up those that become readable, for as
/// long as the broker runs. Connections rest only while this runs: it turns resting on when
/// called (in the runtime, before any connection is accepted), and when the future ends (the
/// runtime shuts down, or it is aborted), the ones at rest are woken.
pub fn watch(broker: Arc<Broker>) -> impl Future<Output = ()> {
    let opened = open(&broker);
    async move {
        match opened {
            Ok(poll) => {
                let _stop = Stop(Arc::clone(&broker));
                drain(&broker, poll).await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch idle connections: they keep their task");
            }
        }
    }
}

/// Gets up the connections whose sockets the epoll set says are readable, until it fails.
async fn drain(broker: &Broker, mut poll: AsyncFd<mio::Poll>) {
    let mut events = Events::with_capacity(EVENTS);
    loop {
        let Ok(mut ready) = poll.readable_mut().await else {
            return;
        };
        match ready
            .get_inner_mut()
            .poll(&mut events, Some(Duration::ZERO))
        {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::warn!(%error, "watching idle connections failed: they keep their task");
                return;
            }
        }
        if events.is_empty() {
            ready.clear_ready();
            continue;
        }
        for event in &events {
            broker.idle.wake(event.token().0);
        }
    }
}

/// Makes the epoll set, registers it with tokio and turns resting on.
fn open(broker: &Broker) -> io::Result<AsyncFd<mio::Poll>> {
    let poll = mio::Poll::new()?;
    let registry = poll.registry().try_clone()?;
    // SAFETY: `register_with_interest` asks that the fd stay open and the same for as long
    // as the `AsyncFd` lives: a `mio::Poll` owns its epoll fd, never changes it, and closes
    // it only when dropped, which the `AsyncFd` that owns it does last.
    let poll = unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }
        .map_err(|failed| failed.into_parts().1)?;
    let runtime = tokio::runtime::Handle::current();
    if broker
        .idle
        .started
        .set(Started { registry, runtime })
        .is_err()
    {
        return Err(io::Error::other("already watched"));
    }
    broker.idle.on.store(true, Ordering::Relaxed);
    Ok(poll)
}

/// Wakes the resting connections when [`watch`] ends, returned or dropped.
struct Stop(Arc<Broker>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.idle.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a resting connection holds besides its session and outbox: its sleeper (its
    /// `Resting`, bounded in `connection::sizes`, with the state to wake it), in an `Arc`,
    /// and its slot in the beds. Raise the bound only with a measurement (`supermq bench
    /// conns`).
    #[test]
    fn a_sleeper_stays_small() {
        let size = std::mem::size_of::<Sleeper>();
        println!("Sleeper: {size} bytes (bound 176)");
        assert!(
            size <= 176,
            "Sleeper is {size} bytes, over its bound of 176"
        );
    }
}
