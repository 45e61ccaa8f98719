//! `supermq sub`: subscribe to topic filters and print what arrives — the mosquitto_sub of
//! supermq.
//!
//! Each message is printed as its payload on one line (with `-v`, the topic, a space, then the
//! payload) and flushed at once, so the tool works in pipelines. `-C N` exits after N messages,
//! `-W SECS` gives up after that long (exit code 12).

use std::io::{self, Write};
use std::time::Duration;

use clap::Args;

use supermq::protocol::{QoS, SubscriptionOptions};

use super::ToolError;
use super::args::{ConnectArgs, HelpArg, parse_qos, parse_secs};
use crate::client::Client;

/// Subscribe to topic filters and print the messages.
#[derive(Debug, Args)]
#[command(disable_help_flag = true, after_help = super::exit::HELP)]
pub struct SubArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic filter to subscribe to; repeat for more.
    #[arg(short = 't', long = "topic", value_name = "FILTER", required = true)]
    filters: Vec<String>,
    /// Quality of service of the subscriptions: 0, 1 or 2.
    #[arg(short = 'q', long, value_name = "QOS", default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Exit after this many messages.
    #[arg(short = 'C', long = "count", value_name = "COUNT")]
    count: Option<u64>,
    /// Print the topic before each payload.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Keep the session when disconnected (needs -i): the broker queues messages meanwhile.
    #[arg(short = 'c', long = "disable-clean-session")]
    persistent: bool,
    /// Exit after this many seconds (exit code 12 if -C messages have not all arrived).
    #[arg(short = 'W', long = "timeout", value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
    #[command(flatten)]
    help: HelpArg,
}

pub async fn run(args: SubArgs) -> Result<(), ToolError> {
    if args.persistent && args.connect.id.is_none() {
        return Err(ToolError::Usage(
            "-c (keep the session) needs a client identifier: give one with -i".to_string(),
        ));
    }
    let (endpoint, mut options) = args.connect.resolve("sub")?;
    options.clean_start = !args.persistent;
    if args.persistent {
        // MQTT 5.0 ends a session with its connection unless told otherwise.
        options.session_expiry = Some(u32::MAX);
    }
    let mut received = 0;
    let receive = receive(&args, &endpoint, &options, &mut received);
    match args.timeout {
        Some(limit) => match tokio::time::timeout(limit, receive).await {
            Ok(done) => done,
            Err(_) => Err(ToolError::TimedOut {
                secs: limit.as_secs(),
                received,
            }),
        },
        None => receive.await,
    }
}

async fn receive(
    args: &SubArgs,
    endpoint: &crate::client::Endpoint,
    options: &crate::client::ConnectOptions,
    received: &mut u64,
) -> Result<(), ToolError> {
    let (mut client, _) = Client::connect(endpoint, options).await?;
    let subscription = SubscriptionOptions {
        qos: args.qos,
        ..SubscriptionOptions::default()
    };
    let filters = args
        .filters
        .iter()
        .map(|filter| (filter.clone(), subscription))
        .collect();
    client.subscribe(filters).await?;
    let mut out = io::stdout().lock();
    while args.count.is_none_or(|count| *received < count) {
        let message = client.next_message().await?;
        *received += 1;
        let written = if args.verbose {
            out.write_all(message.topic.as_bytes())
                .and_then(|()| out.write_all(b" "))
        } else {
            Ok(())
        };
        let written = written
            .and_then(|()| out.write_all(&message.payload))
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            // The reader went away (`sub ... | head -1`): a normal way to stop.
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => break,
            Err(error) => return Err(ToolError::Local(format!("cannot write stdout: {error}"))),
        }
    }
    client.disconnect().await;
    Ok(())
}
