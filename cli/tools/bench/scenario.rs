//! A bench run, fully decided: who publishes what to where, who subscribes how, and what a
//! lossless run must deliver. Built from the command line ([`Scenario::build`]) and the
//! micro-mq presets ([`Preset`]), checked once, then read by the run and the report.

use std::time::Duration;

use clap::ValueEnum;

use supermq::protocol::{ProtocolVersion, QoS};

use super::payload::{HEADER, Template};
use crate::client::{ConnectOptions, Endpoint};
use crate::tools::ToolError;
use crate::tools::args::AuthArgs;

/// The Session Expiry Interval of `--persistent` MQTT 5 subscribers: longer than any run.
const PERSISTENT_EXPIRY_SECS: u32 = 3600;

/// The most memory the subscribers' sequence bitmaps may take together.
const MAX_BITMAP_BYTES: u64 = 2 << 30;

/// The three load shapes micro-mq published figures for (64-byte payloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// 1 client, 100k messages, no subscriber.
    #[value(name = "micro-mq-1")]
    MicroMq1,
    /// 1000 clients x 1000 messages, no subscriber.
    #[value(name = "micro-mq-2")]
    MicroMq2,
    /// 1000 clients x 1000 messages, 1 subscriber.
    #[value(name = "micro-mq-3")]
    MicroMq3,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::MicroMq1, Preset::MicroMq2, Preset::MicroMq3];

    /// Publishers, subscribers, messages per publisher.
    fn shape(self) -> (usize, usize, u32) {
        match self {
            Preset::MicroMq1 => (1, 0, 100_000),
            Preset::MicroMq2 => (1000, 0, 1000),
            Preset::MicroMq3 => (1000, 1, 1000),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::MicroMq1 => "micro-mq-1",
            Preset::MicroMq2 => "micro-mq-2",
            Preset::MicroMq3 => "micro-mq-3",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Preset::MicroMq1 => "1 client, 100k messages, no sub",
            Preset::MicroMq2 => "1000 clients x 1000 messages, no sub",
            Preset::MicroMq3 => "1000 clients x 1000 messages, 1 sub",
        }
    }

    /// The QoS levels micro-mq reported for the shape.
    pub fn reported_qos(self) -> [QoS; 2] {
        match self {
            Preset::MicroMq1 | Preset::MicroMq2 => [QoS::AtMostOnce, QoS::AtLeastOnce],
            Preset::MicroMq3 => [QoS::AtLeastOnce, QoS::ExactlyOnce],
        }
    }
}

/// How consumer-group filters are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupSyntax {
    /// `$share/NAME/filter` (MQTT 5).
    Share,
    /// `$g/NAME/filter` (supermq's original syntax).
    G,
}

/// What the command line asked for; `None` where the preset or the default decides.
#[derive(Clone)]
pub struct Request {
    pub name: Option<String>,
    pub preset: Option<Preset>,
    pub publishers: Option<usize>,
    pub subscribers: Option<usize>,
    pub messages: Option<u32>,
    pub size: Option<usize>,
    pub qos: QoS,
    pub sub_qos: Option<QoS>,
    pub topic: Option<String>,
    pub shared_topic: bool,
    /// Subscribers keep their sessions (`--persistent`).
    pub persistent: bool,
    pub group: Option<(String, GroupSyntax)>,
    pub inflight: usize,
    pub rate: Option<f64>,
    pub warmup: u32,
    pub drain_timeout: Duration,
    /// A slow subscriber beside the others (`--isolation`), acknowledging one message per
    /// this period.
    pub slow_ack: Option<Duration>,
    pub version: ProtocolVersion,
    pub pub_endpoints: Vec<Endpoint>,
    pub sub_endpoints: Vec<Endpoint>,
    pub auth: AuthArgs,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: &'static str,
}

/// A checked, complete plan for one run.
#[derive(Clone)]
pub struct Scenario {
    pub name: String,
    pub preset: Option<Preset>,
    pub publishers: usize,
    pub subscribers: usize,
    pub messages: u32,
    pub size: usize,
    pub qos: QoS,
    pub sub_qos: QoS,
    /// Publishers send to `{topic}/{index}`, or all to `{topic}` with a shared topic.
    pub topic: String,
    pub shared_topic: bool,
    /// Subscribers keep their sessions: see [`Scenario::keep_session`].
    pub persistent: bool,
    /// The consumer group, as the filter prefix (`$share/NAME`), and its name.
    pub group: Option<(String, String)>,
    pub inflight: usize,
    /// Total messages per second over all publishers.
    pub rate: Option<f64>,
    pub warmup: u32,
    pub drain_timeout: Duration,
    /// The slow subscriber's period, if one runs beside the others ([`super::slow`]).
    pub slow_ack: Option<Duration>,
    pub version: ProtocolVersion,
    pub pub_endpoints: Vec<Endpoint>,
    pub sub_endpoints: Vec<Endpoint>,
    pub auth: AuthArgs,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: &'static str,
    /// Prefix of the client identifiers, unique per run.
    pub client_prefix: String,
}

impl Scenario {
    pub fn build(request: Request) -> Result<Scenario, ToolError> {
        let (preset_pubs, preset_subs, preset_messages) =
            request.preset.map_or((1, 1, 10_000), Preset::shape);
        let publishers = request.publishers.unwrap_or(preset_pubs);
        let subscribers = request.subscribers.unwrap_or(preset_subs);
        let messages = request.messages.unwrap_or(preset_messages);
        let size = request.size.unwrap_or(64);
        if publishers == 0 || messages == 0 {
            return Err(usage("at least one publisher and one message are needed"));
        }
        if u32::try_from(publishers).is_err() {
            return Err(usage("too many publishers"));
        }
        if size < HEADER {
            return Err(usage(&format!(
                "the payload size must be at least {HEADER} bytes: it carries the publisher, \
                 the sequence number and the send time"
            )));
        }
        if request.inflight == 0 {
            return Err(usage("the in-flight window must be at least 1"));
        }
        if request
            .rate
            .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
        {
            return Err(usage(
                "the rate must be a positive number of messages per second",
            ));
        }
        if let Some(every) = request.slow_ack {
            if request.qos == QoS::AtMostOnce {
                return Err(usage(
                    "--isolation needs -q 1 or 2: the slow subscriber is slow by its Receive \
                     Maximum, which QoS 0 messages do not count against",
                ));
            }
            if subscribers == 0 {
                return Err(usage(
                    "--isolation measures the subscribers beside the slow one: --subs must be at \
                     least 1",
                ));
            }
            if every.is_zero() {
                return Err(usage("--slow-ack-ms must be at least 1"));
            }
        }
        let bitmap_bytes = (subscribers as u64)
            .saturating_mul(publishers as u64)
            .saturating_mul(u64::from(messages.div_ceil(64)) * 8);
        if bitmap_bytes > MAX_BITMAP_BYTES {
            return Err(usage(&format!(
                "tracking {subscribers} x {publishers} x {messages} messages would take {} MiB; \
                 use fewer messages or clients",
                bitmap_bytes >> 20
            )));
        }
        let group = match request.group {
            None => None,
            Some((name, syntax)) => {
                if name.is_empty() || name.contains(['/', '+', '#']) {
                    return Err(usage("a group name is not empty and has no /, + or #"));
                }
                let prefix = match syntax {
                    GroupSyntax::Share => format!("$share/{name}"),
                    GroupSyntax::G => format!("$g/{name}"),
                };
                Some((prefix, name))
            }
        };
        let run_id = format!("{:06x}", rand::random::<u32>() & 0xFF_FFFF);
        let topic = request.topic.unwrap_or_else(|| format!("bench/{run_id}"));
        let qos = request.qos;
        let sub_qos = request.sub_qos.unwrap_or(qos);
        let name = request.name.unwrap_or_else(|| {
            let base = match request.preset {
                Some(preset) => preset.name().to_string(),
                None => format!("{publishers}->{subscribers}"),
            };
            let mut name = format!("{base} qos{} {size}B", qos as u8);
            if request.shared_topic {
                name.push_str(" shared-topic");
            }
            if group.is_some() {
                name.push_str(" group");
            }
            if request.persistent {
                name.push_str(" persistent");
            }
            if request.slow_ack.is_some() {
                name.push_str(" isolation");
            }
            name
        });
        let scenario = Scenario {
            name,
            preset: request.preset,
            publishers,
            subscribers,
            messages,
            size,
            qos,
            sub_qos,
            topic,
            shared_topic: request.shared_topic,
            persistent: request.persistent,
            group,
            inflight: request.inflight,
            rate: request.rate,
            warmup: request.warmup,
            drain_timeout: request.drain_timeout,
            slow_ack: request.slow_ack,
            version: request.version,
            pub_endpoints: request.pub_endpoints,
            sub_endpoints: request.sub_endpoints,
            auth: request.auth,
            transport: request.transport,
            client_prefix: format!("sqb-{run_id}"),
        };
        // A frame that cannot be encoded (a payload over MQTT's 256 MiB) is a usage error.
        scenario.template(scenario.publishers - 1)?;
        Ok(scenario)
    }

    /// The same run without the slow subscriber, named for the isolation report.
    pub fn alone(&self) -> Scenario {
        Scenario {
            name: format!("{}, alone", self.name),
            slow_ack: None,
            ..self.clone()
        }
    }

    /// The topic publisher `index` sends to.
    pub fn publisher_topic(&self, index: usize) -> String {
        if self.shared_topic {
            self.topic.clone()
        } else {
            format!("{}/{index}", self.topic)
        }
    }

    /// The pre-encoded frame of publisher `index`.
    pub fn template(&self, index: usize) -> Result<Template, ToolError> {
        Template::new(
            &self.publisher_topic(index),
            self.qos,
            self.size,
            self.version,
        )
        .map_err(|error| usage(&format!("cannot encode the messages: {error}")))
    }

    /// The filter every subscriber subscribes to.
    pub fn filter(&self) -> String {
        let base = if self.shared_topic {
            self.topic.clone()
        } else {
            format!("{}/+", self.topic)
        };
        match &self.group {
            Some((prefix, _)) => format!("{prefix}/{base}"),
            None => base,
        }
    }

    /// How many times each message must be delivered: once per subscriber, or once per run
    /// for a consumer group.
    pub fn deliveries_per_message(&self) -> u64 {
        match (self.subscribers, &self.group) {
            (0, _) => 0,
            (_, Some(_)) => 1,
            (subscribers, None) => subscribers as u64,
        }
    }

    /// Messages per publisher per run.
    pub fn total_messages(&self) -> u64 {
        self.publishers as u64 * u64::from(self.messages)
    }

    /// What a lossless run delivers.
    pub fn expected(&self) -> u64 {
        self.total_messages() * self.deliveries_per_message()
    }

    /// The CONNECT of one bench client (`role` is `p` or `s`). Keep alive is long (300 s) so an
    /// idle subscriber needs no pings during a run, but not 0: some brokers (rumqttd) refuse 0.
    /// Subscribers keep their session if the run asks for it; publishers never do.
    pub fn connect_options(&self, role: char, index: usize) -> ConnectOptions {
        let mut options = ConnectOptions::new(
            self.version,
            format!("{}-{role}{index}", self.client_prefix),
        );
        options.keep_alive = 300;
        self.auth.apply(&mut options);
        if role == 's' {
            self.keep_session(&mut options);
        }
        options
    }

    /// Makes a subscriber's session outlive its connection with `--persistent`, in the terms of
    /// `options.version`. The client id is new each run, so there is no earlier session to
    /// resume: MQTT 5 starts clean and asks for an expiry; 3.1.1 has only clean session 0.
    pub fn keep_session(&self, options: &mut ConnectOptions) {
        if !self.persistent {
            return;
        }
        if options.version.is_v5() {
            options.clean_start = true;
            options.session_expiry = Some(PERSISTENT_EXPIRY_SECS);
        } else {
            options.clean_start = false;
            options.session_expiry = None;
        }
    }

    pub fn version_name(&self) -> &'static str {
        match self.version {
            ProtocolVersion::V31 => "3.1",
            ProtocolVersion::V311 => "3.1.1",
            ProtocolVersion::V5 => "5.0",
        }
    }
}

fn usage(message: &str) -> ToolError {
    ToolError::Usage(message.to_string())
}
