//! The slow subscriber of `bench --isolation`: an MQTT 5.0 client with Receive Maximum 1,
//! subscribed at QoS 1 to every topic of the run, that acknowledges one message per period.
//!
//! The broker may have one message in flight to it, so everything else for it waits in its
//! session queue: a consumer that is alive, reads its socket and is slow, the kind a broker
//! must not let hold anybody else back. It is not one of the run's subscribers: its messages
//! are counted, not tracked, and the report compares the run's subscribers with it beside them
//! and without it.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use supermq::protocol::{ProtocolVersion, QoS, SubscriptionOptions};
use supermq::transport::BoxStream;

use super::frame::{self, Frame, Scan};
use super::scenario::Scenario;
use crate::client::{Client, ClientError};
use crate::tools::ToolError;

/// A normal DISCONNECT (the short form of MQTT 5.0).
const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// Bytes asked of the socket per read: one message at a time arrives.
const READ_CHUNK: usize = 4 << 10;

/// What the slow subscriber saw.
#[derive(Debug, Clone)]
pub struct SlowOutcome {
    /// Messages the broker sent it.
    pub received: u64,
    /// Why its connection ended before the run did, if it did: a broker may disconnect a
    /// consumer it has declared slow.
    pub closed: Option<String>,
}

pub struct SlowSubscriber {
    stream: BoxStream,
    read: BytesMut,
    /// Packet ids received and not yet acknowledged, oldest first.
    unacked: VecDeque<u16>,
    every: Duration,
    received: u64,
}

impl SlowSubscriber {
    /// Connects and subscribes to `{topic}/#` (which matches the shared topic too). Retained
    /// messages are refused (retain handling 2) and the run's publishers start only after
    /// this, so nothing arrives with the SUBACK.
    pub async fn connect(
        scenario: &Scenario,
        every: Duration,
    ) -> Result<SlowSubscriber, ToolError> {
        let mut options = scenario.connect_options('s', 0);
        options.version = ProtocolVersion::V5;
        // Again, now in MQTT 5's terms.
        scenario.keep_session(&mut options);
        options.client_id = format!("{}-slow", scenario.client_prefix);
        options.receive_maximum = Some(1);
        let filter = format!("{}/#", scenario.topic);
        let subscription = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            retain_handling: 2,
            ..SubscriptionOptions::default()
        };
        let (mut client, _) = Client::connect(&scenario.sub_endpoints[0], &options).await?;
        client.subscribe(vec![(filter, subscription)]).await?;
        let parts = client.into_parts();
        Ok(SlowSubscriber {
            stream: parts.stream,
            read: parts.read,
            unacked: VecDeque::new(),
            every,
            received: parts.pending.len() as u64,
        })
    }

    /// Receives, acknowledging one message per period, until `stop` turns true (then it
    /// disconnects) or the broker ends the connection.
    pub async fn run(mut self, stop: watch::Receiver<bool>) -> SlowOutcome {
        let closed = self
            .receive(stop)
            .await
            .err()
            .map(|error| error.to_string());
        if closed.is_none() {
            // Best effort: the run is over either way.
            let _ = self.stream.write_all(&DISCONNECT).await;
            let _ = self.stream.shutdown().await;
        }
        SlowOutcome {
            received: self.received,
            closed,
        }
    }

    /// Receives until `stop` turns true; fails when the connection does.
    async fn receive(&mut self, mut stop: watch::Receiver<bool>) -> Result<(), ClientError> {
        let mut ticks = tokio::time::interval(self.every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate
        loop {
            self.read.reserve(READ_CHUNK);
            tokio::select! {
                // Not `wait_for` itself: its answer holds a lock, which must not live on
                // across the acknowledgement's write below.
                () = async { let _ = stop.wait_for(|stop| *stop).await; } => break,
                read = self.stream.read_buf(&mut self.read) => match read {
                    Ok(0) => return Err(ClientError::Closed),
                    Ok(_) => self.handle_incoming()?,
                    Err(error) => return Err(ClientError::Io(error)),
                },
                _ = ticks.tick(), if !self.unacked.is_empty() => {
                    if let Some(packet_id) = self.unacked.pop_front() {
                        let [high, low] = packet_id.to_be_bytes();
                        self.stream
                            .write_all(&[0x40, 0x02, high, low])
                            .await
                            .map_err(ClientError::Io)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts every whole PUBLISH in the read buffer and queues its acknowledgement.
    fn handle_incoming(&mut self) -> Result<(), ClientError> {
        loop {
            let (frame, len) = match frame::scan(&self.read, true)? {
                Scan::Partial(_) => return Ok(()),
                Scan::Frame(frame, len) => (frame, len),
            };
            match frame {
                Frame::Publish { qos, packet_id, .. } => {
                    self.received += 1;
                    if qos > 0 {
                        self.unacked.push_back(packet_id);
                    }
                }
                Frame::PingResp => {}
                Frame::Ack { .. } => return Err(ClientError::Unexpected("acknowledgement")),
                Frame::Other(bytes) => return Err(frame::unexpected(bytes, ProtocolVersion::V5)),
            }
            self.read.advance(len);
        }
    }
}
