//! One bench publisher: sends its messages as fast as the window and the rate allow, and
//! completes their QoS 1/2 exchanges.
//!
//! The connection is driven by hand from one `poll_fn`: read acknowledgements, append a batch
//! of pre-encoded frames (one clock reading per batch), write everything in one call, repeat
//! until nothing moves. After the last message a PINGREQ goes out; the broker handles a
//! connection's packets in order, so its PINGRESP proves every publication has been read and
//! handled, even at QoS 0. That moment ends the publisher's run.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use supermq::protocol::{ProtocolVersion, QoS, reason};
use supermq::transport::BoxStream;

use super::buffers::{PUBLISHER_READ, ReadBuffer, WriteBuffer};
use super::counters::Counters;
use super::frame::{self, Frame, Scan};
use super::payload::{Clock, Stamp, Template};
use crate::client::{ClientError, Parts};

/// Bytes of frames appended per batch, about: one write's worth.
const BATCH_BYTES: usize = 64 << 10;

const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// One phase of sending: the warm-up or the measured run.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub messages: u32,
    pub warmup: bool,
    /// When sending starts; the rate schedule counts from here.
    pub start: Instant,
    /// This publisher's share of the rate limit, in messages per second.
    pub rate: Option<f64>,
}

/// What a phase did.
#[derive(Debug, Clone, Copy)]
pub struct PhaseResult {
    pub sent: u64,
    /// Publications the broker confirmed: PUBACK, PUBCOMP, or (QoS 0) the final PINGRESP.
    pub acked: u64,
    pub finished: Instant,
}

pub struct Publisher {
    stream: BoxStream,
    read: ReadBuffer,
    write: WriteBuffer,
    template: Template,
    index: u32,
    version: ProtocolVersion,
    qos: QoS,
    window: usize,
    inflight: usize,
    ids: PacketIds,
    clock: Clock,
    counters: Arc<Counters>,
    /// Wakes the publisher when the rate limit allows the next message.
    timer: Pin<Box<Sleep>>,
}

/// Where a phase is.
struct State {
    phase: Phase,
    sent: u32,
    acked: u64,
    ping: Ping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ping {
    NotSent,
    Sent,
    Answered,
}

impl Publisher {
    pub fn new(
        parts: Parts,
        template: Template,
        index: u32,
        version: ProtocolVersion,
        qos: QoS,
        clock: Clock,
        counters: Arc<Counters>,
    ) -> Publisher {
        Publisher {
            stream: parts.stream,
            read: ReadBuffer::new(PUBLISHER_READ, &parts.read),
            write: WriteBuffer::default(),
            template,
            index,
            version,
            qos,
            window: parts.window.clamp(1, usize::from(u16::MAX) - 1),
            inflight: 0,
            ids: PacketIds::default(),
            clock,
            counters,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// Sends the phase's messages and waits until the broker has them all.
    pub async fn run(&mut self, phase: Phase) -> Result<PhaseResult, ClientError> {
        let mut state = State {
            phase,
            sent: 0,
            acked: 0,
            ping: Ping::NotSent,
        };
        poll_fn(|cx| self.poll_phase(cx, &mut state)).await?;
        Ok(PhaseResult {
            sent: u64::from(state.sent),
            acked: if self.qos == QoS::AtMostOnce {
                u64::from(state.sent)
            } else {
                state.acked
            },
            finished: Instant::now(),
        })
    }

    /// Sends DISCONNECT and closes, best effort.
    pub async fn close(mut self) {
        self.write.disconnect(&mut self.stream).await;
    }

    fn poll_phase(
        &mut self,
        cx: &mut Context<'_>,
        state: &mut State,
    ) -> Poll<Result<(), ClientError>> {
        loop {
            let mut progressed = self.read.fill(cx, &mut self.stream)?;
            self.handle_incoming(state)?;
            if self.write.queue().is_empty() {
                progressed |= self.append_batch(cx, state);
            }
            progressed |= self.write.drain(cx, &mut self.stream)?;
            if state.sent == state.phase.messages
                && state.ping == Ping::Answered
                && self.inflight == 0
            {
                return Poll::Ready(Ok(()));
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }

    /// Appends as many messages as the window, the rate and the batch size allow, or the
    /// final PINGREQ. Returns whether anything was appended; when the rate holds it back, the
    /// timer is set to wake the task.
    fn append_batch(&mut self, cx: &mut Context<'_>, state: &mut State) -> bool {
        let remaining = state.phase.messages - state.sent;
        if remaining == 0 {
            if state.ping == Ping::NotSent {
                self.write.queue().extend_from_slice(&PINGREQ);
                state.ping = Ping::Sent;
                return true;
            }
            return false;
        }
        let free = if self.qos == QoS::AtMostOnce {
            usize::MAX
        } else {
            self.window - self.inflight
        };
        let batch = (BATCH_BYTES / self.template.len()).max(1);
        let now = Instant::now();
        let due = match state.phase.rate {
            None => usize::MAX,
            Some(rate) => {
                let elapsed = now
                    .saturating_duration_since(state.phase.start)
                    .as_secs_f64();
                // Message k (0-based) is due at start + k / rate; the epsilon keeps float
                // rounding from holding back a message the timer already woke us for.
                let due = (elapsed * rate + 1e-6).floor() as u64 + 1;
                let due = due.saturating_sub(u64::from(state.sent));
                if due == 0 {
                    let next = Duration::from_secs_f64(f64::from(state.sent) / rate);
                    self.timer.as_mut().reset((state.phase.start + next).into());
                    if self.timer.as_mut().poll(cx).is_ready() {
                        return true;
                    }
                }
                usize::try_from(due).unwrap_or(usize::MAX)
            }
        };
        let count = (remaining as usize).min(free).min(batch).min(due);
        if count == 0 {
            return false;
        }
        let sent_at = self.clock.nanos(now);
        let out = self.write.queue();
        for _ in 0..count {
            let packet_id = if self.qos == QoS::AtMostOnce {
                0
            } else {
                self.ids.take()
            };
            let stamp = Stamp {
                publisher: self.index,
                sequence: state.sent,
                sent_at,
                warmup: state.phase.warmup,
            };
            self.template.append(out, packet_id, stamp);
            state.sent += 1;
        }
        if self.qos != QoS::AtMostOnce {
            self.inflight += count;
        }
        if !state.phase.warmup {
            Counters::add(&self.counters.sent, count as u64);
        }
        true
    }

    /// Handles the acknowledgements in the read buffer.
    fn handle_incoming(&mut self, state: &mut State) -> Result<(), ClientError> {
        loop {
            let (frame, len) = match frame::scan(self.read.data(), self.version.is_v5())? {
                Scan::Partial(total) => {
                    if let Some(total) = total {
                        self.read.make_room(total);
                    }
                    return Ok(());
                }
                Scan::Frame(frame, len) => (frame, len),
            };
            match frame {
                Frame::Ack {
                    kind,
                    packet_id,
                    reason: code,
                } => {
                    if code >= reason::UNSPECIFIED_ERROR {
                        let packet = if kind == frame::PUBREC {
                            "PUBREC"
                        } else {
                            "PUBACK"
                        };
                        return Err(ClientError::PublishRefused {
                            packet,
                            code,
                            name: reason::name(code),
                            reason: None,
                        });
                    }
                    match (kind, self.qos) {
                        (frame::PUBACK, QoS::AtLeastOnce) | (frame::PUBCOMP, QoS::ExactlyOnce) => {
                            if self.ids.release(packet_id) {
                                self.inflight -= 1;
                                state.acked += 1;
                            }
                        }
                        (frame::PUBREC, QoS::ExactlyOnce) => {
                            let [high, low] = packet_id.to_be_bytes();
                            self.write
                                .queue()
                                .extend_from_slice(&[0x62, 0x02, high, low]);
                        }
                        _ => return Err(ClientError::Unexpected("acknowledgement")),
                    }
                }
                Frame::PingResp => {
                    if state.ping == Ping::Sent {
                        state.ping = Ping::Answered;
                    }
                }
                Frame::Publish { .. } => return Err(ClientError::Unexpected("PUBLISH")),
                Frame::Other(bytes) => return Err(frame::unexpected(bytes, self.version)),
            }
            self.read.consume(len);
        }
    }
}

/// Packet identifiers in use, as a bitmap: taking and releasing one is a few instructions.
struct PacketIds {
    used: Box<[u64; 1024]>,
    next: u16,
}

impl Default for PacketIds {
    fn default() -> Self {
        PacketIds {
            used: Box::new([0; 1024]),
            next: 0,
        }
    }
}

impl PacketIds {
    /// The next free identifier. The window is smaller than the identifier space, so one is
    /// always free.
    fn take(&mut self) -> u16 {
        loop {
            self.next = self.next.checked_add(1).unwrap_or(1);
            let (word, bit) = (usize::from(self.next / 64), 1u64 << (self.next % 64));
            if self.used[word] & bit == 0 {
                self.used[word] |= bit;
                return self.next;
            }
        }
    }

    /// Frees `id`; false if it was not in use (a stray or repeated acknowledgement).
    fn release(&mut self, id: u16) -> bool {
        let (word, bit) = (usize::from(id / 64), 1u64 << (id % 64));
        let was_used = self.used[word] & bit != 0;
        self.used[word] &= !bit;
        was_used
    }
}
