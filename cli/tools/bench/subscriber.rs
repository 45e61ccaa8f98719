//! One bench subscriber: reads deliveries in large batches, records each in its [`Tracker`],
//! and acknowledges QoS 1/2 deliveries in the same write.
//!
//! Like the publisher, it is driven by hand from one `poll_fn`. The clock is read once per
//! read (not per message): every message in one read arrived at the same moment, as far as
//! this process can know. It runs until told to stop, then hands back its tracker.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::watch;

use supermq::protocol::ProtocolVersion;
use supermq::transport::BoxStream;

use super::buffers::{ReadBuffer, SUBSCRIBER_READ, WriteBuffer};
use super::counters::Counters;
use super::frame::{self, Frame, Scan};
use super::payload::Clock;
use super::tracker::{Recorded, Tracker};
use crate::client::{ClientError, Parts};

pub struct Subscriber {
    stream: BoxStream,
    read: ReadBuffer,
    write: WriteBuffer,
    version: ProtocolVersion,
    tracker: Tracker,
    clock: Clock,
    counters: Arc<Counters>,
}

/// What one batch of deliveries added, for the shared counters.
#[derive(Default)]
struct Batch {
    received: u64,
    unique: u64,
    warmup: u64,
}

impl Subscriber {
    pub fn new(
        parts: Parts,
        version: ProtocolVersion,
        mut tracker: Tracker,
        clock: Clock,
        counters: Arc<Counters>,
    ) -> Subscriber {
        // Messages that arrived with the SUBACK (retained ones, on a reused topic).
        let now = Instant::now();
        for message in &parts.pending {
            tracker.record(&message.payload, clock.nanos(now), now);
        }
        Subscriber {
            stream: parts.stream,
            read: ReadBuffer::new(SUBSCRIBER_READ, &parts.read),
            write: WriteBuffer::default(),
            version,
            tracker,
            clock,
            counters,
        }
    }

    /// Receives until `stop` turns true, then disconnects and returns what arrived.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<Tracker, ClientError> {
        tokio::select! {
            error = poll_fn(|cx| self.poll_receive(cx)) => return Err(error),
            _ = stop.wait_for(|stop| *stop) => {}
        }
        self.write.disconnect(&mut self.stream).await;
        Ok(self.tracker)
    }

    /// Receives until the connection fails; only ever completes with the error.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<ClientError> {
        loop {
            let read = match self.read.fill(cx, &mut self.stream) {
                Ok(read) => read,
                Err(error) => return Poll::Ready(error),
            };
            // Also on the first poll without a read: bytes may have come with the SUBACK.
            if let Err(error) = self.handle_incoming() {
                return Poll::Ready(error);
            }
            let wrote = match self.write.drain(cx, &mut self.stream) {
                Ok(wrote) => wrote,
                Err(error) => return Poll::Ready(error),
            };
            if !read && !wrote {
                return Poll::Pending;
            }
        }
    }

    /// Records and acknowledges every whole packet in the read buffer.
    fn handle_incoming(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        let now_ns = self.clock.nanos(now);
        let mut batch = Batch::default();
        let result = loop {
            let (frame, len) = match frame::scan(self.read.data(), self.version.is_v5()) {
                Err(error) => break Err(error.into()),
                Ok(Scan::Partial(total)) => {
                    if let Some(total) = total {
                        self.read.make_room(total);
                    }
                    break Ok(());
                }
                Ok(Scan::Frame(frame, len)) => (frame, len),
            };
            match frame {
                Frame::Publish {
                    qos,
                    packet_id,
                    payload,
                } => {
                    match self.tracker.record(payload, now_ns, now) {
                        Recorded::Unique => {
                            batch.received += 1;
                            batch.unique += 1;
                        }
                        Recorded::Duplicate => batch.received += 1,
                        Recorded::Warmup => batch.warmup += 1,
                        Recorded::Foreign => {}
                    }
                    // PUBACK for QoS 1, PUBREC for QoS 2 (the broker's PUBREL then gets
                    // PUBCOMP below).
                    let answer = match qos {
                        1 => Some(0x40),
                        2 => Some(0x50),
                        _ => None,
                    };
                    if let Some(first) = answer {
                        let [high, low] = packet_id.to_be_bytes();
                        self.write
                            .queue()
                            .extend_from_slice(&[first, 0x02, high, low]);
                    }
                }
                Frame::Ack {
                    kind: frame::PUBREL,
                    packet_id,
                    ..
                } => {
                    let [high, low] = packet_id.to_be_bytes();
                    self.write
                        .queue()
                        .extend_from_slice(&[0x70, 0x02, high, low]);
                }
                Frame::PingResp => {}
                Frame::Ack { .. } => break Err(ClientError::Unexpected("acknowledgement")),
                Frame::Other(bytes) => break Err(frame::unexpected(bytes, self.version)),
            }
            self.read.consume(len);
        };
        Counters::add(&self.counters.received, batch.received);
        Counters::add(&self.counters.unique, batch.unique);
        Counters::add(&self.counters.warmup, batch.warmup);
        result
    }
}
