//! One client connection, from the first byte to the close.
//!
//! [`serve`] reads CONNECT (by the deadline set at accept, while the socket is pending: see
//! [`super::admission`]; a CONNECT larger than `limits.max_connect_size` is refused from its
//! fixed header, so a socket that has proved nothing holds little), negotiates, attaches the
//! session, and then runs two halves side by side in the connection's task:
//! - the reader decodes packets and handles them ([`super::inbound`]), and notes when the
//!   client was last heard from (keep alive is checked by [`super::keepalive`]) and how many
//!   bytes it read, once per read rather than per packet; while the broker holds the client
//!   back ([`super::flow`]) it reads on only for acknowledgements and PINGREQ, and sets the
//!   rest aside ([`held`]);
//! - the writer sends what the reader and the publishers queued: control packets from the
//!   [`Outbox`], then session messages, many packets per write, each write counted once.
//!
//! Whichever half ends first ends the connection; then the session is detached, and the Will
//! published if the way it ended calls for it.
//!
//! When the broker ends a connection with a reason (a DISCONNECT, or a refusing CONNACK), it
//! closes gracefully: it writes the reason, shuts its write side down, and goes on reading and
//! discarding for a short, bounded while ([`linger`]), so the client reads the reason instead
//! of a reset.
//!
//! Most connections spend their life idle. A plain TCP connection with nothing to do rests
//! ([`super::idle`]): the connected state it keeps between packets ([`Live`]) outlives its task,
//! which ends, and a new task takes it up where it was when something comes for it; so the
//! connected phase runs in turns ([`connected`]). While it has a task, a connection costs what
//! the task holds (a task keeps room for its largest state for as long as it lives) plus its
//! buffers. So the rare and large states (the wait for CONNECT, waiting for room, the close,
//! the linger) run boxed, no buffer is kept while idle, and the code is shaped to keep the task
//! small: see the notes at [`serve`] and [`run`], and docs/BENCHMARKS.md for the figures.

use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use futures_util::future::Either;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Handle;

use crate::auth::Credentials;
use crate::protocol::{self, DecodeError, Disconnect, Packet, ProtocolVersion, Will, reason};
use crate::transport::{BudgetSpent, Duplex, MessageTooLarge};

use super::Broker;
use super::admission::{Arrival, Counted};
use super::aliases::Aliases;
use super::connect::{self, Terms};
use super::inbound::{Client, End};
use super::keepalive::Watch;
use super::outbox::{Close, Outbox};
use super::session::{SessionHandle, Wire};

/// How long a closing connection may take to write its last packets.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long, and for how many bytes, a connection the broker closed goes on reading (and
/// discarding) what the client still sends: see [`linger`]. A second is many round trips;
/// 64 KiB is thousands of the small packets (acks, PUBRELs) a client may have in flight.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// Bytes discarded per read while lingering.
const LINGER_CHUNK: usize = 4096;

/// Room made in the read buffer before a read, at first: small, for the CONNECT. It doubles
/// (up to [`MAX_READ_CHUNK`]) whenever a read fills all the room there was, so a busy
/// connection soon reads many packets per system call. (An idle connection holds no read
/// buffer at all: see `PacketReader::poll_fill`.)
const MIN_READ_CHUNK: usize = 256;
const MAX_READ_CHUNK: usize = 64 * 1024;

/// A read of at least this many bytes makes the reader let the other tasks go before it
/// handles the rest (see [`run`]); a smaller one, an ack or a few publishes, is not worth the
/// turn (it cost QoS 1 16% more CPU per delivery when every read yielded).
const YIELD_AFTER: usize = 16 * 1024;

/// A write buffer that grew past this for one large batch is given back once written.
const KEEP_BUFFER: usize = 64 * 1024;

/// Serves one client connection over an established byte stream until it closes.
///
/// `count` and `arrival` come from [`Broker::admit`]: the connection is counted until it
/// closes, and pending (evictable, under its deadline) until its CONNECT is answered.
///
/// A task keeps room for its largest state for as long as it lives: so the start (the wait
/// for CONNECT, its answer, the session's set-up) runs boxed and is freed once the client is
/// connected, as is the boxed `arrival`; and the two phases are chained rather than awaited
/// one after the other in one `async` block, which would keep the stream and the count twice
/// (as its own and as the connected phase's).
pub fn serve<S: Duplex>(
    count: Counted,
    stream: S,
    arrival: Box<Arrival>,
) -> impl Future<Output = ()> {
    Box::pin(start(count, stream, arrival)).then(|started| match started {
        Some((count, stream, live, unread)) => Either::Left(connected(count, stream, live, unread)),
        None => Either::Right(std::future::ready(())),
    })
}

/// Reads CONNECT, answers it and sets the session up; returns what the connected phase
/// takes, or `None` once the connection has been refused or has gone.
async fn start<S: Duplex>(
    mut count: Counted,
    mut stream: S,
    arrival: Box<Arrival>,
) -> Option<(Counted, S, Live, BytesMut)> {
    let (read_half, write_half) = stream.halves();
    let (terms, unread) = accept(&mut count, read_half, write_half, arrival).await?;
    let Some(live) = attach(count.broker(), terms, &mut stream).await else {
        // Refused, with a reason the client should get to read.
        let (mut read_half, _) = stream.halves();
        linger(&mut read_half).await;
        return None;
    };
    Some((count, stream, live, unread))
}

/// Gives a connection that rested ([`super::idle`]) a task again, on `runtime`: it goes on
/// where it was. Takes its socket back into the reactor here rather than in the task, so
/// that the task is the connected phase and nothing more.
pub fn wake(resting: Resting, runtime: &Handle) {
    let Resting {
        stream,
        count,
        live,
    } = resting;
    // Counted quiet from now: a wake-up with nothing to do does not send it back at once.
    live.outbox.keep_alive().woke();
    let _context = runtime.enter();
    match TcpStream::from_std(stream) {
        Ok(stream) => {
            runtime.spawn(connected(count, stream, live, BytesMut::new()));
        }
        Err(error) => {
            let client_id = live.session.client_id();
            tracing::debug!(client_id, %error, "cannot serve a rested connection again");
            // In a task: this may run in a waker, under the caller's locks.
            runtime.spawn(async move { close(count.broker(), live, &End::Lost) });
        }
    }
}

/// A connected client's state between its turns as a task: what its reader and writer keep
/// across packets, owned, so that the connection can rest without a task
/// ([`super::idle`]). Small for the same reason: it is most of what a resting connection
/// costs.
pub struct Live {
    client: Client,
    outbox: Arc<Outbox>,
    session: Arc<SessionHandle>,
    generation: u64,
    /// Boxed: a Will is large and rarely there.
    will: Option<Box<Will>>,
    version: ProtocolVersion,
    /// The client's Maximum Packet Size; u32 as in the protocol, to keep the state small.
    max_packet_out: u32,
    /// Topic aliases towards the client, if it takes them; boxed, as most clients do not.
    aliases: Option<Box<Aliases>>,
}

/// A connection at rest: its socket, out of tokio's reactor, and its state.
pub struct Resting {
    stream: std::net::TcpStream,
    count: Counted,
    live: Live,
}

impl Resting {
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    pub fn broker(&self) -> &Arc<Broker> {
        self.count.broker()
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.live.outbox
    }
}

/// How a connection's turn as a task ended.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    End(End),
    /// Asked to rest, with nothing half done.
    Rest,
}

/// Reads CONNECT (by the arrival's deadline) and negotiates. Returns the terms and what the
/// client sent after its CONNECT, or `None` once the connection has been refused or has gone.
async fn accept<R, W>(
    count: &mut Counted,
    read_half: R,
    mut write_half: W,
    mut arrival: Box<Arrival>,
) -> Option<(Box<Terms>, BytesMut)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let broker = Arc::clone(count.broker());
    let peer = arrival.peer();
    // The CONNECT has a bound of its own (`limits.max_connect_size`): the most a socket that
    // has proved nothing can make the broker hold.
    let mut reader = PacketReader::new(read_half, broker.max_connect_size());

    let first = tokio::select! {
        first = tokio::time::timeout_at(arrival.deadline(), reader.next(ProtocolVersion::V311)) => first,
        // Evicted to make room for a newer socket, or shutting down: nothing to look after.
        () = arrival.dismissed() => return None,
    };
    // A CONNECT, or the answer (if any) that a socket which sent none the broker takes gets.
    let connect = match first {
        Ok(Ok(Some(Packet::Connect(connect)))) => Ok(*connect),
        Ok(Err(ReadError::Decode(DecodeError::UnsupportedProtocolLevel(level)))) => {
            Err(Some(refuse_version(level, &broker)))
        }
        Ok(Ok(Some(other))) => {
            // MQTT-3.1.0-1: the first packet must be CONNECT.
            if let Some(held_back) = broker.admission.logs.connect_invalid.allow() {
                let packet = other.name();
                tracing::info!(%peer, packet, held_back, "first packet is not CONNECT; closing");
            }
            broker.stats.protocol_errors.inc();
            Err(None)
        }
        Ok(Err(ReadError::Decode(error @ DecodeError::PacketTooLarge { .. }))) => {
            if let Some(held_back) = broker.admission.logs.connect_refused.allow() {
                tracing::info!(%peer, %error, held_back, "CONNECT larger than limits.max_connect_size; refused");
            }
            broker.stats.connections_refused.inc();
            // Only 5.0 has a code for it; the version is read from the CONNECT's first bytes.
            let v5 = protocol::connect_version(&reader.buf) == Some(ProtocolVersion::V5);
            Err(v5.then(|| {
                let refusal = connect::Refusal {
                    code: reason::PACKET_TOO_LARGE,
                    why: "CONNECT larger than the broker takes (limits.max_connect_size)",
                };
                let version = ProtocolVersion::V5;
                (Packet::ConnAck(refusal.connack(version)), version)
            }))
        }
        Ok(Err(ReadError::Decode(error))) => {
            if let Some(held_back) = broker.admission.logs.connect_invalid.allow() {
                tracing::info!(%peer, %error, held_back, "malformed CONNECT; closing");
            }
            broker.stats.protocol_errors.inc();
            Err(None)
        }
        Ok(Err(ReadError::Io(error))) if is_budget_spent(&error) => {
            // A TLS or WebSocket socket that sent more than a CONNECT's worth before one.
            if let Some(held_back) = broker.admission.logs.connect_invalid.allow() {
                tracing::info!(%peer, %error, held_back, "closed before CONNECT (limits.max_connect_size)");
            }
            broker.stats.connections_refused.inc();
            Err(None)
        }
        Ok(Ok(None) | Err(ReadError::Io(_))) => Err(None),
        Err(_) => {
            if let Some(held_back) = broker.admission.logs.connect_timed_out.allow() {
                tracing::info!(%peer, held_back, "no CONNECT within limits.connect_timeout_secs; closing");
            }
            Err(None)
        }
    };
    let connect = match connect {
        Ok(connect) => connect,
        Err(answer) => {
            if let Some((connack, version)) = answer {
                let (io, writer) = (&mut reader.io, &mut write_half);
                refuse(io, writer, &connack, version, &mut arrival).await;
            }
            return None;
        }
    };

    let version = connect.protocol;
    let mut connect = connect;
    let credentials = Credentials {
        username: connect.username.take(),
        password: connect.password.take(),
        certificate_name: arrival.take_certificate_name(),
    };
    let refusal = match arrival.take_refusal() {
        // Logged (rate-limited) and counted when the socket was accepted.
        Some(refusal) => {
            tracing::debug!(%peer, why = refusal.why, code = refusal.code, "CONNECT refused");
            refusal
        }
        None => {
            let full = !count.connect();
            let negotiated = connect::negotiate(connect, &broker.limits, full);
            let authenticated = match negotiated {
                Ok(mut terms) => {
                    let ip = peer.ip().to_canonical();
                    tokio::select! {
                        verdict = broker.auth().authenticate(ip, credentials) => match verdict {
                            Ok(username) => {
                                terms.username = username;
                                terms.peer = Some(peer);
                                Ok(terms)
                            }
                            Err(denied) => {
                                broker.stats.auth_failures.inc();
                                Err(connect::Refusal::from(denied))
                            }
                        },
                        // Evicted to make room for a newer socket, or shutting down.
                        () = arrival.dismissed() => {
                            count.disconnect();
                            return None;
                        }
                    }
                }
                Err(refusal) => Err(refusal),
            };
            match authenticated {
                Ok(terms) => {
                    // No span per connection: a live span costs every connection a few
                    // hundred bytes in the log subscriber for as long as it lasts. The lines
                    // a connection logs name the client themselves.
                    tracing::debug!(client_id = %terms.client_id, %peer, "CONNECT accepted");
                    arrival.accepted();
                    // The CONNECT (and whatever came with it) counts as received.
                    broker
                        .stats
                        .bytes_received
                        .add(reader.take_arrived() as u64);
                    // Boxed: the set-up takes them, and a task keeps room for what it holds.
                    return Some((Box::new(terms), reader.buf));
                }
                Err(refusal) => {
                    count.disconnect();
                    if let Some(held_back) = broker.admission.logs.connect_refused.allow() {
                        let (why, code) = (refusal.why, refusal.code);
                        tracing::info!(%peer, why, code, held_back, "CONNECT refused");
                    }
                    refusal
                }
            }
        }
    };
    broker.stats.connections_refused.inc();
    let connack = Packet::ConnAck(refusal.connack(version));
    let (io, writer) = (&mut reader.io, &mut write_half);
    refuse(io, writer, &connack, version, &mut arrival).await;
    None
}

/// Opens the client's session, queues its CONNACK and makes its connected state; on a
/// refusal, answers it and returns `None` (the caller lingers, as for any close).
async fn attach<S: Duplex>(
    broker: &Arc<Broker>,
    terms: Box<Terms>,
    stream: &mut S,
) -> Option<Live> {
    let rests = S::RESTS && broker.idle.is_on();
    let keep_alive = Watch::new(terms.idle_timeout(), broker.clock.now(), rests);
    let outbox = Arc::new(Outbox::new(keep_alive));
    let mut terms = terms;
    // A resuming client whose session is on another node gets it moved here.
    let moved = if terms.clean_start {
        None
    } else {
        broker
            .fetch_session(&terms.client_id, terms.username.as_deref())
            .await
    };
    let opened = match broker.open_session(&terms, Arc::clone(&outbox), moved) {
        Ok(opened) => opened,
        Err(refusal) => {
            let (_, mut writer) = stream.halves();
            refuse_session(broker, &mut writer, &terms, &refusal).await;
            return None;
        }
    };
    broker.online.insert(&outbox);
    outbox.send(Packet::ConnAck(
        terms.connack(opened.present, &broker.limits),
    ));
    broker.stats.connections_accepted.inc();
    tracing::debug!(
        client_id = %terms.client_id,
        version = ?terms.version,
        present = opened.present,
        "connected"
    );
    let will = terms.will.take().map(Box::new);
    let session = Arc::clone(&opened.session);
    let generation = opened.generation;
    let client = Client::new(broker, &terms, opened, &outbox);
    Some(Live {
        client,
        outbox,
        session,
        generation,
        will,
        version: terms.version,
        max_packet_out: u32::try_from(terms.max_packet_out).unwrap_or(u32::MAX),
        aliases: (terms.aliases_out > 0).then(|| Box::new(Aliases::new(terms.aliases_out))),
    })
}

/// The connected phase, over as many turns as the connection takes: it serves the client as
/// a task until the connection ends, or until it is asked to rest and can (plain TCP):
/// then it goes to rest and this task ends ([`super::idle`]).
#[allow(clippy::manual_async_fn)] // an `async move` block for the reason `serve` gives
fn connected<S: Duplex>(
    count: Counted,
    mut stream: S,
    mut live: Live,
    unread: BytesMut,
) -> impl Future<Output = ()> {
    async move {
        let max_size = count.broker().limits.max_packet_size;
        // The first turn takes what was read after the CONNECT (moved in, not kept here).
        let (read_half, write_half) = stream.halves();
        let reader = PacketReader::with_buffer(read_half, unread, max_size);
        let mut turn = run(count.broker(), &mut live, reader, write_half).await;
        let end = loop {
            match turn {
                Turn::End(end) => break end,
                Turn::Rest => match stream.into_tcp() {
                    Ok(tcp) => return rest(count, tcp, live),
                    // Cannot rest: on as a task.
                    Err(same) => stream = same,
                },
            }
            let (read_half, write_half) = stream.halves();
            let reader = PacketReader::new(read_half, max_size);
            turn = run(count.broker(), &mut live, reader, write_half).await;
        };
        close(count.broker(), live, &end);
        if let End::Closed(_) = end {
            // The broker closed it, with a reason the client should get to read. Boxed: it
            // happens once, at the end.
            let (mut read_half, _) = stream.halves();
            Box::pin(linger(&mut read_half)).await;
        }
    }
}

/// Puts a connection to rest: its socket out of tokio's reactor, its state to
/// [`super::idle`]; this task then ends.
fn rest(count: Counted, tcp: TcpStream, live: Live) {
    let broker = Arc::clone(count.broker());
    match tcp.into_std() {
        Ok(stream) => {
            let resting = Resting {
                stream,
                count,
                live,
            };
            broker.idle.rest(resting);
        }
        Err(error) => {
            // Taking it out of the reactor failed, and closed it.
            let client_id = live.session.client_id();
            tracing::debug!(client_id, %error, "cannot rest the connection; closed");
            close(&broker, live, &End::Lost);
        }
    }
}

/// What ends every connected connection: it leaves the keep-alive watch, and its session is
/// detached, with the Will published if the way it ended calls for it.
fn close(broker: &Arc<Broker>, live: Live, end: &End) {
    let Live {
        outbox,
        session,
        generation,
        will,
        ..
    } = live;
    broker.online.remove(&outbox);
    if *end == End::Closed(reason::KEEP_ALIVE_TIMEOUT) {
        tracing::info!(
            client_id = session.client_id(),
            "keep alive timeout; closed"
        );
    }
    tracing::debug!(client_id = session.client_id(), ?end, "connection closed");
    let will = will.filter(|_| end.publishes_will()).map(|will| *will);
    broker.close_session(&session, generation, will);
}

/// One turn of the connected phase as a task: the reader and the writer side by side until
/// the connection ends or rests. An `async move` block for the reason [`serve`] gives.
#[allow(clippy::manual_async_fn)]
fn run<'a, R, W>(
    broker: &'a Arc<Broker>,
    live: &'a mut Live,
    mut reader: PacketReader<R>,
    writer: W,
) -> impl Future<Output = Turn> + 'a
where
    R: AsyncRead + Unpin + 'a,
    W: AsyncWrite + Unpin + 'a,
{
    async move {
        let Live {
            client,
            outbox,
            session,
            generation,
            version,
            max_packet_out,
            aliases,
            ..
        } = live;
        let version = *version;
        // Whether the reader waits for a packet with nothing else to do: the one point where
        // the connection may rest (the writer asks, see `Writer::run`).
        let reader_at_rest = AtomicBool::new(false);
        let mut writer = Writer {
            io: writer,
            buf: BytesMut::new(),
            outbox,
            session,
            generation: *generation,
            version,
            max_packet_out: *max_packet_out,
            aliases,
            broker,
            reader_at_rest: &reader_at_rest,
        };
        loop {
            // Both futures are pinned where they are made: a future moved into place after
            // it is made would be kept twice in this function's state, which is the
            // connection's memory while it lives. In a block, so that they are dropped (and
            // their borrows end) before the reader is looked at below.
            let turn = {
                let mut writer_task = std::pin::pin!(writer.run());
                let mut reader_task = std::pin::pin!(async {
                    loop {
                        // In a block of its own: the packet must not stay in this future's
                        // state while it waits below.
                        let (mut end, large_read) = {
                            let at_rest = reader.buf.is_empty();
                            reader_at_rest.store(at_rest, Ordering::Relaxed);
                            if at_rest && outbox.keep_alive().asked_to_rest() {
                                // The writer decides, once it has nothing to send either.
                                outbox.wake();
                            }
                            let next = reader.next(version).await;
                            reader_at_rest.store(false, Ordering::Relaxed);
                            let arrived = reader.take_arrived();
                            if arrived > 0 {
                                // Once per read, not per packet: the clock costs a system
                                // call's worth of time. (Keep alive is watched by
                                // `keepalive::sweep`.)
                                outbox.keep_alive().heard(broker.clock.now());
                                broker.stats.bytes_received.add(arrived as u64);
                            }
                            (take(client, next, session), arrived >= YIELD_AFTER)
                        };
                        if large_read && end.is_none() {
                            // After a large read, the other tasks go first: it holds up to
                            // 64 KiB of publishes, and handling them all in one turn kept the
                            // writers they feed (subscribers', routes') waiting, and the
                            // nodes downstream idle.
                            tokio::task::yield_now().await;
                        }
                        while end.is_none() && (client.is_blocked() || outbox.is_full()) {
                            // The broker holds the reader up: that is no silence of the
                            // client's.
                            outbox.keep_alive().pause();
                            // Boxed: being held is rare, and its state is large.
                            let held = held(client, &mut reader, outbox, session, version);
                            end = Box::pin(held).await;
                            outbox.keep_alive().heard(broker.clock.now());
                            // What was read while held: counted now, as the connection may
                            // end or rest before its next read.
                            let arrived = reader.take_arrived();
                            broker.stats.bytes_received.add(arrived as u64);
                        }
                        if let Some(end) = end {
                            break end;
                        }
                    }
                });
                tokio::select! {
                    end = &mut reader_task => {
                        if end != End::Lost {
                            // Let the writer send what is queued (and the DISCONNECT, if any)
                            // first. Boxed: it happens once, at the end.
                            let flush = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, &mut writer_task);
                            let _ = Box::pin(flush).await;
                        }
                        Turn::End(end)
                    }
                    turn = &mut writer_task => turn,
                }
            };
            match turn {
                // Half a packet came in meanwhile: not at rest after all. The reader asks
                // again once it has read it (and says again where it is).
                Turn::Rest if !reader.buf.is_empty() => {
                    reader_at_rest.store(false, Ordering::Relaxed);
                    outbox.keep_alive().stir();
                }
                turn => return turn,
            }
        }
    }
}

/// Handles what the reader got: a packet, the end of the stream, or an error.
fn take(
    client: &mut Client,
    next: Result<Option<Packet>, ReadError>,
    session: &SessionHandle,
) -> Option<End> {
    match next {
        Ok(Some(packet)) => client.handle(packet),
        Ok(None) => Some(End::Lost),
        Err(ReadError::Io(error)) => {
            tracing::debug!(client_id = session.client_id(), %error, "read failed");
            Some(End::Lost)
        }
        Err(ReadError::Decode(error)) => Some(client.malformed(&error)),
    }
}

/// While the broker holds a client back, because its answers pile up unread or its parked
/// deliveries wait for full queues ([`super::flow`]). In the second case the reader goes on
/// reading, to find the packets that let things move — acknowledgements of what the client
/// is sent, and PINGREQ: a client that publishes to its own subscription, or two that publish
/// to each other, must be able to take their messages while they are held, and a client
/// library writes its acks into the same stream as its publications. The packets that do not
/// (PUBLISH, SUBSCRIBE, DISCONNECT, ...) are set aside, in order and within [`SET_ASIDE`]
/// packets and [`SET_ASIDE_BYTES`], and handled once the hold is over. Returns how the
/// connection ends, if it does.
async fn held<R: AsyncRead + Unpin>(
    client: &mut Client,
    reader: &mut PacketReader<R>,
    outbox: &Outbox,
    session: &SessionHandle,
    version: ProtocolVersion,
) -> Option<End> {
    let mut aside: VecDeque<Packet> = VecDeque::new();
    let mut aside_bytes = 0;
    loop {
        if outbox.is_full() {
            // The client does not read our answers: read nothing from it either.
            outbox.wait_for_room().await;
            continue;
        }
        if !client.is_blocked() {
            // Not held (any more): what was set aside goes first, in order.
            let packet = aside.pop_front()?;
            aside_bytes -= weight(&packet);
            if let Some(end) = client.handle(packet) {
                return Some(end);
            }
            continue;
        }
        let mut settle = std::pin::pin!(client.settle()?);
        loop {
            let room = aside.len() < SET_ASIDE && aside_bytes < SET_ASIDE_BYTES;
            let next = tokio::select! {
                biased;
                () = &mut settle => break,
                next = reader.next(version), if room => next,
            };
            match next {
                Ok(Some(packet)) if !lets_things_move(&packet) => {
                    aside_bytes += weight(&packet);
                    aside.push_back(packet);
                }
                next => {
                    if let Some(end) = take(client, next, session) {
                        return Some(end);
                    }
                }
            }
        }
    }
}

/// Packets a held client may set aside while it looks for acknowledgements, and their bytes.
const SET_ASIDE: usize = 64;
const SET_ASIDE_BYTES: usize = 64 * 1024;

/// What a packet set aside weighs against [`SET_ASIDE_BYTES`]: a PUBLISH its topic and
/// payload, anything else little.
fn weight(packet: &Packet) -> usize {
    match packet {
        Packet::Publish(publish) => publish.topic.len() + publish.payload.len(),
        _ => 64,
    }
}

/// Packets a held client may still send and have handled at once: they free room
/// (acknowledgements of what it was sent), answer its own exchanges or keep it alive, and
/// neither publish nor change what it subscribes to.
fn lets_things_move(packet: &Packet) -> bool {
    matches!(
        packet,
        Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::PingReq
    )
}

/// The writing half of a connection.
struct Writer<'a, W> {
    io: W,
    buf: BytesMut,
    outbox: &'a Outbox,
    session: &'a SessionHandle,
    generation: u64,
    version: ProtocolVersion,
    /// The client's Maximum Packet Size ([`Live`]).
    max_packet_out: u32,
    aliases: &'a mut Option<Box<Aliases>>,
    broker: &'a Broker,
    /// Whether the reader is at the point where the connection may rest ([`run`]).
    reader_at_rest: &'a AtomicBool,
}

impl<W: AsyncWrite + Unpin> Writer<'_, W> {
    fn max_out(&self) -> usize {
        usize::try_from(self.max_packet_out).unwrap_or(usize::MAX)
    }

    /// Writes until the connection is to close, or to rest: asked to ([`super::idle`]), it
    /// does once it has nothing to write while the reader waits for a packet with nothing
    /// read. Borrows the writer, so that its fields are kept once, in the connection's state,
    /// and not again in this future's.
    async fn run(&mut self) -> Turn {
        loop {
            // In a block of its own, so that none of it is kept in this future's state across
            // the waits below.
            let more = {
                let (control, close) = self.outbox.take();
                for packet in control {
                    encode_control(&packet, self.version, self.max_out(), &mut self.buf);
                }
                // `sys_bytes`: what of the buffer are `$SYS` updates, not counted as bytes sent.
                let (more, sys_bytes) = self.fill();
                if let Some(close) = close {
                    // Boxed: it runs once, and would otherwise make every connection larger.
                    return Turn::End(Box::pin(self.finish(close, sys_bytes)).await);
                }
                // Counted once per write, not per packet, and before it: a count kept across
                // the write would make every connection's state larger. (A write that fails
                // ends the connection, so at most its last buffer is counted unsent.)
                let counted = self.buf.len() - sys_bytes;
                self.broker.stats.bytes_sent.add(counted as u64);
                more
            };
            if !self.buf.is_empty() {
                if let Err(end) = self.write().await {
                    return Turn::End(end);
                }
                recycle(&mut self.buf);
                self.outbox.keep_alive().stir();
            }
            if more {
                continue;
            }
            // Otherwise the reader asks again (wakes the writer) when it gets there.
            if self.outbox.keep_alive().asked_to_rest()
                && self.reader_at_rest.load(Ordering::Relaxed)
            {
                // A wake-up since the look above may bring work: look again first. (One
                // after this is kept for the rest, see `Outbox::rest`.)
                if !self.outbox.take_wake() {
                    return Turn::Rest;
                }
                continue;
            }
            self.outbox.woken().await;
            // Let the tasks that woke us queue a little more before we write: under load this
            // turns one system call per message into one per batch, and costs an idle
            // connection nothing.
            tokio::task::yield_now().await;
        }
    }

    /// Encodes what the session has to send into the buffer; returns whether it has more,
    /// and how many of the bytes are `$SYS` updates.
    fn fill(&mut self) -> (bool, usize) {
        let max_out = self.max_out();
        let mut session = self.session.lock();
        if !session.is_attached(self.generation) {
            return (false, 0);
        }
        let mut wire = Wire {
            version: self.version,
            max_size: max_out,
            aliases: self.aliases.as_deref_mut(),
        };
        let broker = self.broker;
        let sys_bytes = session.fill(&mut self.buf, &mut wire, &broker.bounds, &broker.stats);
        (session.has_sendable(), sys_bytes)
    }

    /// Writes the buffer and flushes. What the socket takes at once — the common case — is
    /// written by a plain poll; only a client that does not read makes the writer wait, and
    /// that wait, beside a watch for the connection being closed meanwhile, runs boxed: it is
    /// rare, and its state would otherwise make every connection larger.
    async fn write(&mut self) -> Result<(), End> {
        let mut written = 0;
        let at_once = std::future::poll_fn(|cx| {
            while written < self.buf.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.buf[written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(false),
                    Poll::Ready(Ok(n)) => written += n,
                    // Not an error: the rest waits below.
                    Poll::Pending => break,
                }
            }
            Poll::Ready(true)
        })
        .await;
        if !at_once {
            return Err(End::Lost);
        }
        if written < self.buf.len() {
            Box::pin(self.write_rest(written)).await?;
        }
        if self.io.flush().await.is_err() {
            return Err(End::Lost);
        }
        Ok(())
    }

    /// Writes the buffer from `written` on, while the client is slow to read; gives the
    /// write up if the connection is closed meanwhile, and ends for the close's reason.
    async fn write_rest(&mut self, written: usize) -> Result<(), End> {
        let write = self.io.write_all(&self.buf[written..]);
        tokio::select! {
            biased;
            result = write => result.map_err(|_| End::Lost),
            code = self.outbox.killed() => Err(End::Closed(code)),
        }
    }

    /// Writes the last packets (and a DISCONNECT, for 5.0) and shuts the write side down;
    /// [`serve`] then lingers, reading, if the broker closed the connection. `sys_bytes` of
    /// the buffer are `$SYS` updates, not counted as bytes sent.
    async fn finish(&mut self, close: Close, sys_bytes: usize) -> End {
        let end = match close {
            Close::Quiet => End::Disconnected {
                publish_will: false,
            },
            Close::Disconnect(code, why) => {
                if self.version.is_v5() {
                    let mut disconnect = Disconnect::new(code);
                    disconnect.properties.reason_string = Some(why);
                    let packet = Packet::Disconnect(disconnect);
                    encode_control(&packet, self.version, self.max_out(), &mut self.buf);
                }
                End::Closed(code)
            }
        };
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
            self.io.write_all(&self.buf).await?;
            let counted = self.buf.len() - sys_bytes;
            self.broker.stats.bytes_sent.add(counted as u64);
            self.io.shutdown().await
        })
        .await;
        end
    }
}

/// Encodes a packet the connection owes the client. If it is larger than the client allows,
/// the reason string and user properties are dropped, as MQTT-3.1.2-25 allows for them.
fn encode_control(packet: &Packet, version: ProtocolVersion, max: usize, buf: &mut BytesMut) {
    let start = buf.len();
    match protocol::encode(packet, version, buf) {
        Ok(len) if len <= max => {}
        Ok(_) => {
            buf.truncate(start);
            let mut bare = packet.clone();
            if let Some(properties) = bare.properties_mut() {
                properties.edit(|p| {
                    p.reason_string = None;
                    p.user_properties.clear();
                });
            }
            if protocol::encode(&bare, version, buf).is_err() {
                buf.truncate(start);
            }
        }
        Err(error) => {
            buf.truncate(start);
            tracing::warn!(%error, packet = packet.name(), "cannot encode packet");
        }
    }
}

/// Gives a buffer that grew for one large packet back to the allocator.
fn recycle(buf: &mut BytesMut) {
    buf.clear();
    if buf.capacity() > KEEP_BUFFER {
        *buf = BytesMut::new();
    }
}

/// Refuses a CONNECT that was accepted but gets no session after all: CONNACK with the
/// reason, and the write side shut down (the caller then lingers, as for any close).
async fn refuse_session<W: AsyncWrite + Unpin>(
    broker: &Broker,
    io: &mut W,
    terms: &Terms,
    refusal: &connect::Refusal,
) {
    if let Some(held_back) = broker.admission.logs.connect_refused.allow() {
        let (why, code) = (refusal.why, refusal.code);
        tracing::info!(client_id = %terms.client_id, why, code, held_back, "CONNECT refused");
    }
    broker.stats.connections_refused.inc();
    let mut buf = BytesMut::new();
    let connack = Packet::ConnAck(refusal.connack(terms.version));
    if protocol::encode(&connack, terms.version, &mut buf).is_ok() {
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
            io.write_all(&buf).await?;
            io.shutdown().await
        })
        .await;
    }
}

/// The answer to a CONNECT whose protocol level we do not speak (MQTT-3.1.2-2), in the format
/// the client most likely reads: 5.0 for a newer level, 3.1.1 otherwise.
fn refuse_version(level: u8, broker: &Broker) -> (Packet, ProtocolVersion) {
    if let Some(held_back) = broker.admission.logs.connect_refused.allow() {
        tracing::info!(
            level,
            held_back,
            why = "unsupported protocol version",
            "CONNECT refused"
        );
    }
    broker.stats.connections_refused.inc();
    let refusal = connect::Refusal {
        code: reason::UNSUPPORTED_PROTOCOL_VERSION,
        why: "unsupported protocol version",
    };
    let version = if level > 5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    (Packet::ConnAck(refusal.connack(version)), version)
}

/// Sends a refusing CONNACK and closes gracefully, unless the socket is dismissed meanwhile
/// (it is still pending, and counts as such until it is gone).
async fn refuse<R, W>(
    reader: &mut R,
    writer: &mut W,
    connack: &Packet,
    version: ProtocolVersion,
    arrival: &mut Arrival,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    tokio::select! {
        () = write_and_close(reader, writer, connack, version) => {}
        () = arrival.dismissed() => {}
    }
}

/// Writes `packet`, shuts the write side down and [`linger`]s.
async fn write_and_close<R, W>(
    reader: &mut R,
    writer: &mut W,
    packet: &Packet,
    version: ProtocolVersion,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    if protocol::encode(packet, version, &mut buf).is_ok() {
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
            writer.write_all(&buf).await?;
            writer.shutdown().await
        })
        .await;
        linger(reader).await;
    }
}

/// Reads and discards what the client still sends after the broker closed its side, until
/// the client closes too, for at most [`LINGER`] and [`LINGER_BYTES`].
///
/// Why: a socket closed with bytes it has not read (or that receives more after the close)
/// answers with a TCP reset instead of a normal close, and a client that is still sending
/// (PUBRELs, say) then gets a broken pipe or a reset instead of the DISCONNECT or CONNACK
/// that says why. Reading on keeps the close orderly; the bounds keep a client from holding
/// the socket open by never stopping.
async fn linger<R: AsyncRead + Unpin>(reader: &mut R) {
    let discard = async {
        // Allocated here, not kept in the future: only a closing connection pays for it.
        let mut buf = vec![0; LINGER_CHUNK];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(read) => left = left.saturating_sub(read),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, discard).await;
}

/// Whether a read failed because the socket sent more than its read budget before its
/// CONNECT was accepted (see [`Arrival::read_budget`]).
fn is_budget_spent(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|cause| cause.is::<BudgetSpent>())
}

/// Why reading a packet failed.
enum ReadError {
    Io(std::io::Error),
    Decode(DecodeError),
}

impl ReadError {
    /// A WebSocket message over `limits.max_packet_size` is answered as a packet over it.
    fn from_io(error: std::io::Error) -> ReadError {
        let too_large = error
            .get_ref()
            .and_then(|cause| cause.downcast_ref::<MessageTooLarge>());
        match too_large {
            Some(&MessageTooLarge { size, max }) => {
                ReadError::Decode(DecodeError::PacketTooLarge { size, max })
            }
            None => ReadError::Io(error),
        }
    }
}

/// Reads whole packets from a byte stream.
struct PacketReader<R> {
    io: R,
    buf: BytesMut,
    /// Bytes arrived since [`PacketReader::take_arrived`] was last asked.
    arrived: usize,
    chunk: usize,
    max_packet_size: usize,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    fn new(io: R, max_packet_size: u32) -> Self {
        PacketReader::with_buffer(io, BytesMut::new(), max_packet_size)
    }

    /// A reader that starts with `buf`: what was read before (after the CONNECT).
    fn with_buffer(io: R, buf: BytesMut, max_packet_size: u32) -> Self {
        PacketReader {
            io,
            buf,
            arrived: 0,
            chunk: MIN_READ_CHUNK,
            max_packet_size: usize::try_from(max_packet_size).unwrap_or(usize::MAX),
        }
    }

    /// The next packet, or `None` at the end of the stream. Cancel-safe: bytes read are kept
    /// in the buffer.
    async fn next(&mut self, version: ProtocolVersion) -> Result<Option<Packet>, ReadError> {
        loop {
            if let Some(packet) = protocol::decode(&mut self.buf, version, self.max_packet_size)
                .map_err(ReadError::Decode)?
            {
                return Ok(Some(packet));
            }
            let read = std::future::poll_fn(|cx| self.poll_fill(cx))
                .await
                .map_err(ReadError::from_io)?;
            if read == 0 {
                return Ok(None);
            }
        }
    }

    /// The bytes that arrived since the last call: more than 0, the client was heard from.
    fn take_arrived(&mut self) -> usize {
        std::mem::take(&mut self.arrived)
    }

    /// Makes room for what comes next: a chunk, or for a packet larger than one, exactly what
    /// it still needs, in a buffer of exactly its size. Left to grow, the buffer would double
    /// past a large packet, and as a message's payload is a slice of the buffer it was read
    /// into (no copy), every queued message would keep up to twice its size allocated.
    fn make_room(&mut self) {
        let size = match protocol::packet_size(&self.buf) {
            Some(size) if size > self.chunk => size,
            _ => {
                self.buf.reserve(self.chunk);
                return;
            }
        };
        if size > self.buf.capacity() {
            let mut exact = BytesMut::with_capacity(size);
            exact.extend_from_slice(&self.buf);
            self.buf = exact;
        }
        self.buf.reserve(size - self.buf.len());
    }

    /// Reads what the stream has into the buffer. While the stream has nothing more, an
    /// empty buffer is given back to the allocator: an idle connection holds none.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.make_room();
        let room = self.buf.capacity() - self.buf.len();
        let polled = std::pin::pin!(self.io.read_buf(&mut self.buf)).poll(cx);
        match polled {
            Poll::Pending => {
                if self.buf.is_empty() {
                    self.buf = BytesMut::new();
                }
                Poll::Pending
            }
            Poll::Ready(Ok(read)) => {
                self.arrived += read;
                if read == room {
                    self.chunk = (self.chunk * 2).min(MAX_READ_CHUNK);
                }
                Poll::Ready(Ok(read))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
        }
    }
}

/// The idle-connection work (docs/BENCHMARKS.md, optimisation 5 and issue 16) rests on type
/// sizes that a new field, a compiler upgrade or a refactor could silently undo: these bounds
/// catch it. A plain TCP connection at rest holds its [`Resting`] (in the idle module's
/// sleeper) and its session and outbox; one with a task (busy, or TLS and WebSocket) its task
/// too. tokio allocates a task as a 128-byte-aligned cell, so the connection future's bound
/// keeps the release build's cell in the 768-byte class (it was 896 with a future of 720
/// bytes; this debug build's future is ~25 bytes larger than the release one). Raise one only
/// with a measurement of what a connection costs after the change (`supermq bench conns`).
#[cfg(test)]
mod sizes {
    use std::net::SocketAddr;

    use super::super::outbox::Outbox;
    use super::super::session::{Session, SessionHandle};
    use super::*;
    use crate::config::Limits;

    #[tokio::test]
    async fn an_idle_connection_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("address");
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let broker = Broker::new(Limits::default());
        let (count, arrival) = broker.admit(addr, true).expect("admitted");
        let task = serve(count, stream, arrival);
        let sizes = [
            ("connection future", std::mem::size_of_val(&task), 672),
            ("Resting", std::mem::size_of::<Resting>(), 160),
            ("Session", std::mem::size_of::<Session>(), 320),
            ("SessionHandle", std::mem::size_of::<SessionHandle>(), 400),
            ("Outbox", std::mem::size_of::<Outbox>(), 256),
            ("Message", std::mem::size_of::<super::super::Message>(), 128),
        ];
        for (what, size, bound) in sizes {
            println!("{what}: {size} bytes (bound {bound})");
        }
        for (what, size, bound) in sizes {
            assert!(
                size <= bound,
                "{what} is {size} bytes, over its bound of {bound}"
            );
        }
    }
}
