//! One client connection to a broker: CONNECT and CONNACK, subscriptions, QoS 0/1/2
//! publications under an in-flight window, incoming messages with their acknowledgements, and
//! keep alive.
//!
//! There is no background task: the connection makes progress only while one of its methods is
//! awaited, which keeps it simple and lets a tool interleave it with its own input (`pub -l`
//! selects between stdin and [`Client::next_message`]). Every await point is cancel-safe:
//! bytes read stay in the read buffer, bytes not yet written stay in the write buffer, and
//! packets are handled synchronously once whole.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use supermq::protocol::{
    self, Ack, ConnAck, Disconnect, Packet, ProtocolVersion, Publish, QoS, SubAck, Subscribe,
    SubscriptionOptions, reason,
};
use supermq::transport::BoxStream;

use super::{ClientError, ConnectOptions, Endpoint, dial};

/// How long the broker has to answer CONNECT and SUBSCRIBE.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Read buffer growth step.
const READ_CHUNK: usize = 16 << 10;

/// A connected client.
pub struct Client {
    stream: BoxStream,
    read: BytesMut,
    write: BytesMut,
    version: ProtocolVersion,
    /// The client identifier (the broker's choice when it assigned one), for `-d` lines.
    label: String,
    debug: bool,
    keep_alive: Option<Duration>,
    last_sent: Instant,
    /// When the PINGREQ still waiting for its PINGRESP was sent.
    ping_sent: Option<Instant>,
    /// Our QoS 1/2 publications not yet completed, by packet identifier.
    outgoing: HashMap<u16, Stage>,
    /// Most QoS 1/2 publications in flight: ours, capped by the broker's Receive Maximum.
    window: usize,
    next_id: u16,
    /// QoS 2 messages received and acknowledged with PUBREC, until their PUBREL.
    incoming_qos2: HashSet<u16>,
    /// Messages that arrived while waiting for something else (a SUBACK, a free window slot).
    pending: VecDeque<Publish>,
    /// The broker's Maximum Packet Size (MQTT 5.0).
    max_packet_out: usize,
}

/// Where one of our QoS 1/2 publications is in its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// QoS 1 waiting for PUBACK, or QoS 2 waiting for PUBREC.
    Sent,
    /// QoS 2: PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// What handling one incoming packet left for the caller.
enum Handled {
    Nothing,
    Message(Publish),
    /// An answer the caller asked for (SUBACK, UNSUBACK).
    Answer(Packet),
}

/// A connection taken apart, for code that drives the stream itself (the bench tool).
pub struct Parts {
    pub stream: BoxStream,
    /// Bytes read but not yet decoded.
    pub read: BytesMut,
    /// Messages decoded but not yet handed out.
    pub pending: Vec<Publish>,
    /// Most QoS 1/2 publications the broker accepts in flight.
    pub window: usize,
}

impl Client {
    /// Dials `endpoint`, sends CONNECT and waits for a successful CONNACK.
    pub async fn connect(
        endpoint: &Endpoint,
        options: &ConnectOptions,
    ) -> Result<(Client, ConnAck), ClientError> {
        Client::connect_from(endpoint, options, None).await
    }

    /// [`Client::connect`] from a chosen local address.
    pub async fn connect_from(
        endpoint: &Endpoint,
        options: &ConnectOptions,
        source: Option<IpAddr>,
    ) -> Result<(Client, ConnAck), ClientError> {
        let stream = dial::dial(endpoint, source).await?;
        let mut client = Client {
            stream,
            read: BytesMut::new(),
            write: BytesMut::new(),
            version: options.version,
            label: options.client_id.clone(),
            debug: options.debug,
            // Off until the CONNACK, which may change it (MQTT 5.0 Server Keep Alive).
            keep_alive: None,
            last_sent: Instant::now(),
            ping_sent: None,
            outgoing: HashMap::new(),
            window: usize::from(u16::MAX),
            next_id: 0,
            incoming_qos2: HashSet::new(),
            pending: VecDeque::new(),
            max_packet_out: usize::MAX,
        };
        client.queue(&Packet::Connect(Box::new(options.packet())))?;
        let answer = within(RESPONSE_TIMEOUT, "CONNACK", async {
            client.flush().await?;
            client.next_packet().await
        })
        .await?;
        let Packet::ConnAck(connack) = answer else {
            return Err(ClientError::Unexpected(answer.name()));
        };
        if connack.code != reason::SUCCESS {
            let name = if options.version.is_v5() {
                reason::name(connack.code)
            } else {
                reason::v3_connack_name(connack.code)
            };
            return Err(ClientError::ConnAckRefused {
                code: connack.code,
                name,
                reason: connack.properties.reason_string.clone(),
            });
        }
        let terms = &connack.properties;
        let keep_alive = terms.server_keep_alive.unwrap_or(options.keep_alive);
        client.keep_alive = (keep_alive > 0).then(|| Duration::from_secs(keep_alive.into()));
        if let Some(receive_maximum) = terms.receive_maximum {
            client.window = usize::from(receive_maximum);
        }
        if let Some(max) = terms.maximum_packet_size {
            client.max_packet_out = usize::try_from(max).unwrap_or(usize::MAX);
        }
        if let Some(assigned) = &terms.assigned_client_identifier {
            client.label.clone_from(assigned);
        }
        Ok((client, connack))
    }

    /// Caps the QoS 1/2 publications in flight (never above the broker's Receive Maximum).
    pub fn limit_window(&mut self, window: usize) {
        self.window = self.window.min(window.max(1));
    }

    /// Subscribes to `filters` and waits for the SUBACK; fails if the broker refuses any of
    /// them. Returns the granted QoS per filter.
    pub async fn subscribe(
        &mut self,
        filters: Vec<(String, SubscriptionOptions)>,
    ) -> Result<Vec<u8>, ClientError> {
        let packet_id = self.allocate_id();
        let names: Vec<String> = filters.iter().map(|(filter, _)| filter.clone()).collect();
        self.queue(&Packet::Subscribe(Subscribe {
            packet_id,
            filters,
            properties: protocol::Properties::default(),
        }))?;
        let suback = within(RESPONSE_TIMEOUT, "SUBACK", async {
            self.flush().await?;
            loop {
                let packet = self.next_packet().await?;
                match self.handle(packet)? {
                    Handled::Nothing => {}
                    Handled::Message(message) => self.pending.push_back(message),
                    Handled::Answer(Packet::SubAck(suback)) if suback.packet_id == packet_id => {
                        return Ok(suback);
                    }
                    Handled::Answer(other) => return Err(ClientError::Unexpected(other.name())),
                }
            }
        })
        .await?;
        self.check_suback(&names, suback)
    }

    fn check_suback(&self, filters: &[String], suback: SubAck) -> Result<Vec<u8>, ClientError> {
        if suback.reasons.len() != filters.len() {
            return Err(ClientError::Unexpected(
                "SUBACK with the wrong number of codes",
            ));
        }
        let refused = filters
            .iter()
            .zip(&suback.reasons)
            .find(|(_, code)| **code >= reason::UNSPECIFIED_ERROR);
        match refused {
            Some((filter, &code)) => Err(ClientError::SubAckRefused {
                filter: filter.clone(),
                code,
                name: if self.version.is_v5() {
                    reason::name(code)
                } else {
                    "failure"
                },
                reason: suback.properties.into_values().reason_string,
            }),
            None => Ok(suback.reasons),
        }
    }

    /// Sends a publication. At QoS 1/2 it first waits for a free slot in the in-flight window;
    /// [`Client::settle`] waits for the acknowledgements. The packet identifier is ours to set.
    pub async fn publish(&mut self, mut publish: Publish) -> Result<(), ClientError> {
        if publish.qos != QoS::AtMostOnce {
            while self.outgoing.len() >= self.window {
                self.step().await?;
            }
            publish.packet_id = self.allocate_id();
            self.outgoing.insert(publish.packet_id, Stage::Sent);
        }
        self.queue(&Packet::Publish(publish))?;
        self.flush().await
    }

    /// Waits until every QoS 1/2 publication has been acknowledged (PUBACK, or PUBCOMP).
    pub async fn settle(&mut self) -> Result<(), ClientError> {
        while !self.outgoing.is_empty() {
            self.step().await?;
        }
        self.flush().await
    }

    /// The next message from a subscription, acknowledged as its QoS requires.
    pub async fn next_message(&mut self) -> Result<Publish, ClientError> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Ok(message);
            }
            self.step().await?;
        }
    }

    /// Sends DISCONNECT and closes the connection. Errors no longer matter at this point.
    pub async fn disconnect(mut self) {
        if self
            .queue(&Packet::Disconnect(Disconnect::default()))
            .is_ok()
            && self.flush().await.is_ok()
        {
            let _ = self.stream.shutdown().await;
        }
    }

    /// The connection's stream and buffers, for code that drives the stream itself.
    pub fn into_parts(self) -> Parts {
        Parts {
            stream: self.stream,
            read: self.read,
            pending: self.pending.into(),
            window: self.window,
        }
    }

    /// Reads and handles one packet; a message goes to `pending`.
    async fn step(&mut self) -> Result<(), ClientError> {
        let packet = self.next_packet().await?;
        match self.handle(packet)? {
            Handled::Nothing => Ok(()),
            Handled::Message(message) => {
                self.pending.push_back(message);
                Ok(())
            }
            Handled::Answer(other) => Err(ClientError::Unexpected(other.name())),
        }
    }

    /// The next packet from the broker. Flushes what is queued first, and keeps the
    /// connection alive while waiting.
    async fn next_packet(&mut self) -> Result<Packet, ClientError> {
        loop {
            if let Some(packet) = self.decode()? {
                return Ok(packet);
            }
            self.flush().await?;
            let deadline = self.keep_alive_deadline();
            tokio::select! {
                read = self.fill_read() => read?,
                () = sleep_until(deadline) => self.keep_alive_due()?,
            }
        }
    }

    fn decode(&mut self) -> Result<Option<Packet>, ClientError> {
        let packet = protocol::decode(&mut self.read, self.version, usize::MAX)?;
        if let Some(packet) = &packet {
            self.trace("received", packet);
        }
        Ok(packet)
    }

    /// Reads whatever the stream has into the read buffer.
    async fn fill_read(&mut self) -> Result<(), ClientError> {
        self.read.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.read).await {
            Ok(0) => Err(ClientError::Closed),
            Ok(_) => Ok(()),
            Err(error) => Err(ClientError::Io(error)),
        }
    }

    /// When keep alive next needs attention: a PINGREQ to send, or a PINGRESP overdue.
    fn keep_alive_deadline(&self) -> Option<Instant> {
        let keep_alive = self.keep_alive?;
        Some(self.ping_sent.unwrap_or(self.last_sent) + keep_alive)
    }

    /// The keep alive deadline passed: ping, or give up if the last ping went unanswered.
    fn keep_alive_due(&mut self) -> Result<(), ClientError> {
        match (self.ping_sent, self.keep_alive) {
            (Some(_), Some(after)) => Err(ClientError::Timeout {
                waiting_for: "PINGRESP",
                after,
            }),
            _ => {
                self.ping_sent = Some(Instant::now());
                self.queue(&Packet::PingReq)
            }
        }
    }

    /// Does what MQTT asks on receipt of `packet` and says what is left for the caller.
    fn handle(&mut self, packet: Packet) -> Result<Handled, ClientError> {
        match packet {
            Packet::Publish(publish) => self.receive(publish),
            Packet::PubRel(ack) => {
                self.incoming_qos2.remove(&ack.packet_id);
                self.queue(&Packet::PubComp(Ack::new(ack.packet_id)))?;
                Ok(Handled::Nothing)
            }
            Packet::PubAck(ack) => {
                if self.outgoing.remove(&ack.packet_id).is_some() {
                    self.check_ack("PUBACK", ack)?;
                }
                Ok(Handled::Nothing)
            }
            Packet::PubRec(ack) => {
                if self.outgoing.get(&ack.packet_id) == Some(&Stage::Sent) {
                    if ack.reason >= reason::UNSPECIFIED_ERROR {
                        self.outgoing.remove(&ack.packet_id);
                        return self.check_ack("PUBREC", ack).map(|()| Handled::Nothing);
                    }
                    self.outgoing.insert(ack.packet_id, Stage::Released);
                }
                self.queue(&Packet::PubRel(Ack::new(ack.packet_id)))?;
                Ok(Handled::Nothing)
            }
            Packet::PubComp(ack) => {
                self.outgoing.remove(&ack.packet_id);
                Ok(Handled::Nothing)
            }
            Packet::PingResp => {
                self.ping_sent = None;
                Ok(Handled::Nothing)
            }
            Packet::Disconnect(disconnect) => Err(ClientError::Disconnected {
                code: disconnect.reason,
                name: reason::name(disconnect.reason),
                reason: disconnect.properties.into_values().reason_string,
            }),
            answer @ (Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_)) => {
                Ok(Handled::Answer(answer))
            }
            other => Err(ClientError::Unexpected(other.name())),
        }
    }

    /// An incoming PUBLISH: acknowledged now; a QoS 2 resend we already have is not delivered
    /// twice.
    fn receive(&mut self, publish: Publish) -> Result<Handled, ClientError> {
        let packet_id = publish.packet_id;
        match publish.qos {
            QoS::AtMostOnce => Ok(Handled::Message(publish)),
            QoS::AtLeastOnce => {
                self.queue(&Packet::PubAck(Ack::new(packet_id)))?;
                Ok(Handled::Message(publish))
            }
            QoS::ExactlyOnce => {
                self.queue(&Packet::PubRec(Ack::new(packet_id)))?;
                if self.incoming_qos2.insert(packet_id) {
                    Ok(Handled::Message(publish))
                } else {
                    Ok(Handled::Nothing)
                }
            }
        }
    }

    /// A PUBACK or PUBREC with a failure reason code (MQTT 5.0) is an error.
    fn check_ack(&self, packet: &'static str, ack: Ack) -> Result<(), ClientError> {
        if ack.reason < reason::UNSPECIFIED_ERROR {
            return Ok(());
        }
        Err(ClientError::PublishRefused {
            packet,
            code: ack.reason,
            name: reason::name(ack.reason),
            reason: ack.properties.into_values().reason_string,
        })
    }

    /// The next free packet identifier: non-zero and not in flight.
    fn allocate_id(&mut self) -> u16 {
        loop {
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.outgoing.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    /// Encodes `packet` into the write buffer; [`Client::flush`] sends it.
    fn queue(&mut self, packet: &Packet) -> Result<(), ClientError> {
        self.trace("sending", packet);
        let start = self.write.len();
        let size = protocol::encode(packet, self.version, &mut self.write)?;
        if size > self.max_packet_out {
            self.write.truncate(start);
            return Err(ClientError::TooLarge {
                size,
                max: self.max_packet_out,
            });
        }
        Ok(())
    }

    /// Writes the write buffer out. Cancel-safe: what is not written stays in the buffer.
    async fn flush(&mut self) -> Result<(), ClientError> {
        if self.write.is_empty() {
            return Ok(());
        }
        while !self.write.is_empty() {
            match self.stream.write_buf(&mut self.write).await {
                Ok(0) => return Err(ClientError::Closed),
                Ok(_) => {}
                Err(error) => return Err(ClientError::Io(error)),
            }
        }
        self.stream.flush().await.map_err(ClientError::Io)?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// `-d`: one line per packet on stderr, in the style of mosquitto's clients.
    fn trace(&self, direction: &str, packet: &Packet) {
        if self.debug {
            eprintln!("Client {} {direction} {}", self.label, describe(packet));
        }
    }
}

/// Runs `future` with a deadline; a timeout says what was awaited.
async fn within<T>(
    after: Duration,
    waiting_for: &'static str,
    future: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(after, future)
        .await
        .unwrap_or(Err(ClientError::Timeout { waiting_for, after }))
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A packet in a few words: its name and the fields that identify it.
fn describe(packet: &Packet) -> String {
    let mut text = packet.name().to_string();
    // Writing to a String cannot fail.
    let _ = match packet {
        Packet::Connect(c) => write!(
            text,
            " (c{}, k{}, '{}')",
            u8::from(c.clean_start),
            c.keep_alive,
            c.client_id
        ),
        Packet::ConnAck(c) => write!(text, " ({:#04x})", c.code),
        Packet::Publish(p) => write!(
            text,
            " (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(p.dup),
            p.qos as u8,
            u8::from(p.retain),
            p.packet_id,
            p.topic,
            p.payload.len()
        ),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            write!(text, " (m{}, rc{:#04x})", a.packet_id, a.reason)
        }
        Packet::Subscribe(s) => {
            let filters: Vec<String> = s
                .filters
                .iter()
                .map(|(filter, options)| format!("'{filter}' q{}", options.qos as u8))
                .collect();
            write!(text, " (m{}, {})", s.packet_id, filters.join(", "))
        }
        Packet::SubAck(s) => write!(text, " (m{}, {:02x?})", s.packet_id, s.reasons),
        Packet::Disconnect(d) => write!(text, " ({:#04x})", d.reason),
        _ => Ok(()),
    };
    text
}
