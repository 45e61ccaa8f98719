//! Running the real `supermq` binary's client tools as subprocesses, for the `tools_*` tests,
//! and reading the bench's JSON line without a JSON library.
//!
//! Every run has a deadline: a tool that hangs is killed and fails the test with what it
//! printed so far.

#![allow(dead_code)] // each test file uses a different part

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one tool run may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A finished run.
#[derive(Debug)]
pub struct Ran {
    /// The exit code; `None` if it was killed.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A tool running in the background.
pub struct Running {
    child: Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

/// Starts `supermq ARGS`, feeding `stdin` (then closing it).
pub fn start(args: &[&str], stdin: &[u8]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_supermq"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("supermq starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    std::thread::spawn(move || {
        // A tool that does not read stdin closes it early; that is fine.
        let _ = input.write_all(&stdin);
    });
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    Running {
        child,
        stdout,
        stderr,
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = pipe.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    })
}

impl Running {
    /// Waits for the tool to exit (killing it after [`DEADLINE`]) without blocking the runtime
    /// the in-process broker runs on.
    pub async fn finish(self) -> Ran {
        tokio::task::spawn_blocking(move || self.wait())
            .await
            .expect("waiting thread")
    }

    fn wait(mut self) -> Ran {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            match self.child.try_wait().expect("try_wait") {
                Some(status) => break Some(status),
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        Ran {
            code: status.and_then(|status| status.code()),
            stdout: self.stdout.join().expect("stdout reader"),
            stderr: self.stderr.join().expect("stderr reader"),
        }
    }
}

/// Runs `supermq ARGS` with `stdin` to completion, blocking the calling thread: for tests
/// with no broker (or runtime) to keep running meanwhile.
pub fn run_blocking(args: &[&str], stdin: &[u8]) -> Ran {
    start(args, stdin).wait()
}

/// Runs `supermq ARGS` to completion.
pub async fn run(args: &[&str]) -> Ran {
    start(args, b"").finish().await
}

/// Runs `supermq ARGS` with `stdin` to completion.
pub async fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Ran {
    start(args, stdin).finish().await
}

impl Ran {
    /// Asserts the exit code, showing the output if it differs.
    pub fn expect_code(&self, code: i32) -> &Ran {
        assert_eq!(self.code, Some(code), "unexpected exit; {self:#?}");
        self
    }

    /// The last line of stdout that starts with `{`: the bench's JSON line.
    pub fn json(&self) -> Json {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|line| line.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON line; {self:#?}"));
        Json(line.to_string())
    }
}

/// A flat JSON object (strings, numbers, booleans, nulls), as the bench prints it.
#[derive(Debug)]
pub struct Json(pub String);

impl Json {
    /// The raw text of a value: `12`, `"name"`, `null`.
    pub fn raw(&self, key: &str) -> &str {
        let pattern = format!("\"{key}\":");
        let start = self
            .0
            .find(&pattern)
            .unwrap_or_else(|| panic!("no \"{key}\" in {}", self.0))
            + pattern.len();
        let rest = &self.0[start..];
        let end = if let Some(string) = rest.strip_prefix('"') {
            1 + string.find('"').expect("closing quote") + 1
        } else {
            rest.find([',', '}']).expect("end of value")
        };
        &rest[..end]
    }

    pub fn u64(&self, key: &str) -> u64 {
        let raw = self.raw(key);
        raw.parse()
            .unwrap_or_else(|_| panic!("\"{key}\" is {raw}, not an integer"))
    }

    pub fn f64(&self, key: &str) -> f64 {
        let raw = self.raw(key);
        raw.parse()
            .unwrap_or_else(|_| panic!("\"{key}\" is {raw}, not a number"))
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}
