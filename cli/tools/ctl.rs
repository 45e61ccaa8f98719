//! `supermq ctl`: the admin API from a terminal (README, "Observability") — the seeds'
//! `gomqctl list`, for a whole cluster from any node.
//!
//! Each command is one HTTP request to a node's `http.listen`, over the same dialling as the
//! other tools (so the exit codes for "nothing listens", "no such host" and "no answer" are
//! theirs), printed as a table, or as the API's own JSON with `--json` for scripts. A node
//! that did not answer a cluster-wide question is named on stderr. The request is plain
//! HTTP/1.1 with `Connection: close`: one request per run needs no client library.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{Endpoint, dial};

use super::ToolError;
use super::exit;

/// `supermq ctl` options.
#[derive(Args, Debug)]
#[command(after_help = exit::HELP)]
pub struct CtlArgs {
    /// The node's HTTP listener (http.listen)
    #[arg(long, default_value = "127.0.0.1:11883", value_name = "HOST:PORT")]
    http: String,
    /// An API key, NAME:SECRET (http.api_keys)
    #[arg(long, value_name = "NAME:SECRET")]
    key: Option<String>,
    /// Print the API's JSON instead of a table
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// Every node of the cluster
    Nodes,
    /// This node's routes to its peers
    Routes,
    /// Clients and persistent sessions, cluster-wide
    Clients {
        #[arg(long, default_value_t = 1)]
        page: usize,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One client, wherever it is
    Client { clientid: String },
    /// Disconnect a client, wherever it is (MQTT 5: DISCONNECT 0x98)
    Kick { clientid: String },
    /// Subscriptions, cluster-wide
    Subs {
        #[arg(long, default_value_t = 1)]
        page: usize,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Consumer groups and their members per node
    Groups,
    /// Retained messages
    Retained {
        #[arg(long, default_value_t = 1)]
        page: usize,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Publish a message through the API
    Publish {
        topic: String,
        message: String,
        #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
        #[arg(short, long)]
        retain: bool,
    },
}

/// Columns of each table: (JSON field, header).
const NODES: &[(&str, &str)] = &[
    ("name", "NODE"),
    ("status", "STATUS"),
    ("version", "VERSION"),
    ("uptime_secs", "UPTIME_S"),
    ("connections", "CONNS"),
    ("sessions", "SESSIONS"),
    ("subscriptions", "SUBS"),
    ("retained", "RETAINED"),
    ("memory_bytes", "MEMORY_B"),
];
const ROUTES: &[(&str, &str)] = &[
    ("peer", "PEER"),
    ("address", "ADDRESS"),
    ("connected_secs", "UP_S"),
    ("rtt_us", "RTT_US"),
    ("in_msgs", "IN_MSGS"),
    ("out_msgs", "OUT_MSGS"),
    ("pending_bytes", "PENDING_B"),
    ("dropped", "DROPPED"),
];
const CLIENTS: &[(&str, &str)] = &[
    ("clientid", "CLIENT"),
    ("node", "NODE"),
    ("connected", "CONNECTED"),
    ("username", "USER"),
    ("proto_ver", "PROTO"),
    ("ip_address", "IP"),
    ("subscriptions", "SUBS"),
    ("inflight", "INFLIGHT"),
    ("queued", "QUEUED"),
];
const SUBS: &[(&str, &str)] = &[
    ("clientid", "CLIENT"),
    ("node", "NODE"),
    ("topic", "TOPIC"),
    ("qos", "QOS"),
    ("group", "GROUP"),
];
const GROUPS: &[(&str, &str)] = &[
    ("group", "GROUP"),
    ("filter", "FILTER"),
    ("members", "MEMBERS"),
];
const RETAINED: &[(&str, &str)] = &[("topic", "TOPIC"), ("qos", "QOS"), ("payload", "PAYLOAD")];

/// Runs one command.
pub async fn run(args: CtlArgs) -> Result<(), ToolError> {
    let (method, path, body, columns): (&str, String, String, &[(&str, &str)]) = match &args.command
    {
        CtlCommand::Nodes => ("GET", "/api/v1/nodes".into(), String::new(), NODES),
        CtlCommand::Routes => ("GET", "/api/v1/routes".into(), String::new(), ROUTES),
        CtlCommand::Clients { page, limit } => (
            "GET",
            format!("/api/v1/clients?page={page}&limit={limit}"),
            String::new(),
            CLIENTS,
        ),
        CtlCommand::Client { clientid } => (
            "GET",
            format!("/api/v1/clients/{}", escape(clientid)),
            String::new(),
            CLIENTS,
        ),
        CtlCommand::Kick { clientid } => (
            "DELETE",
            format!("/api/v1/clients/{}", escape(clientid)),
            String::new(),
            &[],
        ),
        CtlCommand::Subs { page, limit } => (
            "GET",
            format!("/api/v1/subscriptions?page={page}&limit={limit}"),
            String::new(),
            SUBS,
        ),
        CtlCommand::Groups => ("GET", "/api/v1/groups".into(), String::new(), GROUPS),
        CtlCommand::Retained { page, limit } => (
            "GET",
            format!("/api/v1/retained?page={page}&limit={limit}"),
            String::new(),
            RETAINED,
        ),
        CtlCommand::Publish {
            topic,
            message,
            qos,
            retain,
        } => (
            "POST",
            "/api/v1/publish".into(),
            serde_json::json!({
                "topic": topic, "payload": message, "qos": qos, "retain": retain
            })
            .to_string(),
            &[],
        ),
    };
    let (status, answer) = request(&args, method, &path, &body).await?;
    let value: Value = if answer.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&answer).map_err(|_| ToolError::Api {
            status,
            message: format!("not a JSON answer: {}", answer.trim()),
        })?
    };
    if status >= 400 {
        let message = value["message"].as_str().unwrap_or("an error").to_string();
        let code = value["code"].as_str().unwrap_or("ERROR");
        return Err(ToolError::Api {
            status,
            message: format!("{code}: {message}"),
        });
    }
    if let Some(missing) = value["meta"]["missing_nodes"].as_array()
        && !missing.is_empty()
    {
        eprintln!(
            "ctl: these nodes did not answer: {}",
            cell(&Value::Array(missing.clone()))
        );
    }
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    match &args.command {
        CtlCommand::Kick { clientid } => println!("{clientid}: disconnected"),
        CtlCommand::Publish { .. } if status == 202 => println!("published; no subscriber matched"),
        CtlCommand::Publish { .. } => println!("published: {}", cell(&value["id"])),
        CtlCommand::Client { .. } => print!("{}", table(std::slice::from_ref(&value), columns)),
        _ => {
            let rows = value["data"].as_array().cloned().unwrap_or_default();
            print!("{}", table(&rows, columns));
            if let Some(count) = value["meta"]["count"].as_u64() {
                println!("({} of {count})", rows.len());
            }
        }
    }
    Ok(())
}

/// One request and its answer (status, body).
async fn request(
    args: &CtlArgs,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), ToolError> {
    let (host, port) = args
        .http
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.trim_matches(['[', ']']), port.parse().ok()?)))
        .ok_or_else(|| ToolError::Usage(format!("--http {:?} is not HOST:PORT", args.http)))?;
    let mut endpoint = Endpoint::tcp(host, port);
    endpoint.connect_timeout = Duration::from_secs(5);
    let mut stream = dial(&endpoint, None).await?;
    let auth = args
        .key
        .as_ref()
        .map(|key| format!("Authorization: Bearer {key}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        endpoint.address(),
        body.len()
    );
    let lost = |e: std::io::Error| ToolError::Api {
        status: 0,
        message: format!("the connection to {} failed: {e}", endpoint.address()),
    };
    stream.write_all(request.as_bytes()).await.map_err(lost)?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| ToolError::Api {
            status: 0,
            message: "no answer within 30 s".to_string(),
        })?
        .map_err(lost)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| ToolError::Api {
            status: 0,
            message: format!("{} did not answer HTTP", endpoint.address()),
        })?;
    Ok((status, body.to_string()))
}

/// Percent-encodes what a path segment cannot hold as is.
fn escape(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A table with a header, columns as wide as their widest cell.
fn table(rows: &[Value], columns: &[(&str, &str)]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|(field, _)| cell(&row[*field]))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (_, header))| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        let mut out: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        if let Some(last) = out.last_mut() {
            *last = last.trim_end().to_string();
        }
        out.join("  ") + "\n"
    };
    let mut out = line(columns.iter().map(|(_, header)| *header).collect());
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A JSON value as a table cell.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up_and_say_what_is_missing() {
        let rows = vec![
            serde_json::json!({"clientid": "a", "node": "n1", "connected": true}),
            serde_json::json!({"clientid": "longer-id", "node": null, "connected": false}),
        ];
        let columns = [
            ("clientid", "CLIENT"),
            ("node", "NODE"),
            ("connected", "CONNECTED"),
        ];
        assert_eq!(
            table(&rows, &columns),
            "CLIENT     NODE  CONNECTED\na          n1    true\nlonger-id  -     false\n"
        );
        assert_eq!(cell(&serde_json::json!({"n1": 2, "n2": 1})), "n1=2,n2=1");
        assert_eq!(escape("a/b c"), "a%2Fb%20c");
    }
}
