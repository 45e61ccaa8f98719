//! `[log] format`, as the real binary writes its log: "json" makes every line one JSON object
//! (what a log collector reads), "text" (the default) human-readable lines, and anything else
//! stops start-up naming the key.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the broker has to start and say so.
const START: Duration = Duration::from_secs(10);

/// The broker process, killed when dropped, and its configuration file, removed.
struct Broker {
    child: Child,
    config: PathBuf,
    lines: mpsc::Receiver<String>,
}

/// `supermq -c FILE` with `log` as the file's `[log]` section, on an ephemeral port and without
/// the HTTP listener (its fixed default port would make this file's tests, run in parallel,
/// refuse each other), with no `SUPERMQ_` variable or `RUST_LOG` inherited; and the file, to
/// remove.
fn command(test: &str, log: &str) -> (Command, PathBuf) {
    let config =
        std::env::temp_dir().join(format!("supermq-log-{test}-{}.conf", std::process::id()));
    let text = format!("[mqtt]\ntcp = \"127.0.0.1:0\"\n[http]\nlisten = \"\"\n[log]\n{log}\n");
    std::fs::write(&config, text).expect("config written");
    let mut command = Command::new(env!("CARGO_BIN_EXE_supermq"));
    command.arg("-c").arg(&config).env_remove("RUST_LOG");
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("SUPERMQ_")) {
        command.env_remove(name);
    }
    (command, config)
}

impl Broker {
    fn start(test: &str, log: &str) -> Broker {
        let (mut command, config) = command(test, log);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("supermq starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Broker {
            child,
            config,
            lines,
        }
    }

    /// The log lines up to and including the one that says the broker started.
    fn until_started(&self) -> Vec<String> {
        let deadline = Instant::now() + START;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let started = line.contains("supermq started");
                    seen.push(line);
                    if started {
                        return seen;
                    }
                }
                Err(_) => panic!("the broker did not say it started; its log: {seen:#?}"),
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

#[test]
fn json_lines_parse_as_json() {
    let broker = Broker::start("json", "format = \"json\"");
    let lines = broker.until_started();
    for line in &lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(event["timestamp"].is_string(), "{line}");
        assert!(event["level"].is_string(), "{line}");
        assert!(event["fields"]["message"].is_string(), "{line}");
    }
    let started: serde_json::Value =
        serde_json::from_str(lines.last().expect("a line")).expect("JSON");
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["fields"]["message"], "supermq started");
    assert_eq!(started["fields"]["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn text_is_the_default() {
    let broker = Broker::start("text", "level = \"info\"");
    let lines = broker.until_started();
    let started = lines.last().expect("a line");
    assert!(
        serde_json::from_str::<serde_json::Value>(started).is_err(),
        "{started}"
    );
    assert!(started.contains(" INFO "), "{started}");
}

#[test]
fn another_format_stops_start_up_naming_the_key() {
    let (mut command, config) = command("xml", "format = \"xml\"");
    let out = command.output().expect("supermq runs");
    let _ = std::fs::remove_file(&config);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("log.format: \"xml\" is not one of \"text\", \"json\""),
        "{stderr}"
    );
}
