//! `supermq pub`: publish one message, a file, or one message per line of stdin — the
//! mosquitto_pub of supermq.
//!
//! The message is read before connecting, so an unreadable file fails before the broker sees
//! anything. QoS 1 and 2 publications are acknowledged before the tool exits: exit code 0 means
//! the broker has them.
//!
//! With `-l`, a thread reads stdin (blocking, as stdin is) and hands lines over a small bounded
//! channel, so the connection keeps being served while stdin is quiet.

use std::io::{self, BufRead, Read};
use std::path::PathBuf;

use bytes::Bytes;
use clap::Args;
use tokio::sync::mpsc;

use supermq::protocol::{Properties, Publish, QoS, topic};

use super::ToolError;
use super::args::{ConnectArgs, HelpArg, parse_qos};
use crate::client::Client;

/// Publish messages to a topic.
#[derive(Debug, Args)]
#[command(disable_help_flag = true, after_help = super::exit::HELP)]
pub struct PubArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic to publish to.
    #[arg(short = 't', long, value_name = "TOPIC")]
    topic: String,
    /// Quality of service: 0, 1 or 2.
    #[arg(short = 'q', long, value_name = "QOS", default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Ask the broker to retain the message.
    #[arg(short = 'r', long)]
    retain: bool,
    /// QoS 1/2 messages in flight at once (with -l).
    #[arg(long, value_name = "N", default_value_t = 20)]
    max_inflight: usize,
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    help: HelpArg,
}

/// Where the message comes from: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Source {
    /// The message.
    #[arg(short = 'm', long, value_name = "MESSAGE")]
    message: Option<String>,
    /// Send the whole file as one message.
    #[arg(short = 'f', long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Send one message per line of stdin (without the line end).
    #[arg(short = 'l', long = "stdin-line")]
    stdin_line: bool,
    /// Send all of stdin as one message.
    #[arg(short = 's', long = "stdin-file")]
    stdin_file: bool,
    /// Send an empty message.
    #[arg(short = 'n', long = "null-message")]
    null_message: bool,
}

pub async fn run(args: PubArgs) -> Result<(), ToolError> {
    if !topic::valid_name(&args.topic) {
        return Err(ToolError::Usage(format!(
            "cannot publish to \"{}\": a topic name is not empty and has no + or #",
            args.topic
        )));
    }
    // Everything but -l is read in full before connecting.
    let single = match &args.source {
        Source {
            message: Some(text),
            ..
        } => Some(Bytes::from(text.clone())),
        Source {
            file: Some(path), ..
        } => Some(Bytes::from(std::fs::read(path).map_err(|error| {
            ToolError::Local(format!("cannot read {}: {error}", path.display()))
        })?)),
        Source {
            stdin_file: true, ..
        } => {
            let mut all = Vec::new();
            io::stdin()
                .read_to_end(&mut all)
                .map_err(|error| ToolError::Local(format!("cannot read stdin: {error}")))?;
            Some(Bytes::from(all))
        }
        Source {
            null_message: true, ..
        } => Some(Bytes::new()),
        _ => None,
    };
    let (endpoint, options) = args.connect.resolve("pub")?;
    let (mut client, _) = Client::connect(&endpoint, &options).await?;
    client.limit_window(args.max_inflight);
    match single {
        Some(payload) => client.publish(args.message(payload)).await?,
        None => publish_lines(&args, &mut client).await?,
    }
    client.settle().await?;
    client.disconnect().await;
    Ok(())
}

/// Lines read ahead of the connection; the reading thread waits when this many are queued.
const LINES_AHEAD: usize = 64;

/// `-l`: one message per line until stdin ends. While stdin is quiet the connection is still
/// served (acknowledgements, keep alive); both waits are cancel-safe.
async fn publish_lines(args: &PubArgs, client: &mut Client) -> Result<(), ToolError> {
    let (sender, mut lines) = mpsc::channel(LINES_AHEAD);
    // The thread ends at the end of stdin, or when the receiver is gone.
    std::thread::spawn(move || read_lines(&sender));
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                None => return Ok(()),
                Some(Ok(payload)) => client.publish(args.message(payload)).await?,
                Some(Err(error)) => {
                    return Err(ToolError::Local(format!("cannot read stdin: {error}")));
                }
            },
            // Nothing is subscribed, so this only ever returns an error (a DISCONNECT, a lost
            // connection); meanwhile it answers the broker and pings.
            received = client.next_message() => {
                received?;
            }
        }
    }
}

/// Sends each line of stdin, without its line end (`\n` or `\r\n`), until stdin ends or fails.
fn read_lines(sender: &mpsc::Sender<io::Result<Bytes>>) {
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let item = match stdin.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                Ok(Bytes::copy_from_slice(text))
            }
            Err(error) => Err(error),
        };
        let failed = item.is_err();
        if sender.blocking_send(item).is_err() || failed {
            return;
        }
    }
}

impl PubArgs {
    fn message(&self, payload: Bytes) -> Publish {
        Publish {
            dup: false,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.clone(),
            packet_id: 0,
            properties: Properties::default(),
            payload,
        }
    }
}
