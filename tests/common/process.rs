//! A standalone broker process (no cluster): the real `supermq` binary with a configuration
//! file of its own, SIGKILLed or SIGTERMed and started again on the same configuration — and so
//! on the same store — as the persistence tests need. Its log (stdout and stderr) is printed
//! when a test fails; its work directory (configuration, log, store) is removed after a test
//! that passed and kept, with its path printed, after one that failed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use super::cluster::free_port;

/// How long a start may take: loading a store of thousands of messages on a loaded 2-core
/// machine, in a debug build.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the log says once per start when the store has been read (the storage contract).
pub const STORE_LOADED: &str = "store loaded";

/// Starts the broker binary with the configuration file `conf`, its stdout and stderr appended
/// to `log`, without colours and with `[log] level` deciding (no `RUST_LOG`).
pub fn spawn(conf: &Path, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let err = out.try_clone().expect("log file");
    Command::new(env!("CARGO_BIN_EXE_supermq"))
        .arg("-c")
        .arg(conf)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn supermq")
}

/// Where a broker keeps its sessions and retained messages (`[storage]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Storage {
    /// No `[storage]` section: in memory only, the default.
    Memory,
    /// `durability = "immediate"`: acknowledged once on disk.
    Immediate,
    /// `durability = "batched"`, written within `flush_ms`.
    Batched { flush_ms: u64 },
}

/// A broker process on a fixed loopback port, restartable on the same store.
pub struct Process {
    pub port: u16,
    storage: Storage,
    work: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// A broker (not started yet) with `storage`; `extra` is appended to its configuration
    /// (whole sections, e.g. `"[limits]\nmax_queued_messages = 5000\n"`).
    pub fn new(storage: Storage, extra: &str) -> Process {
        let port = free_port();
        let work =
            std::env::temp_dir().join(format!("supermq-process-{}-{port}", std::process::id()));
        // A leftover of an earlier run with the same pid and port would bring its store along.
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).expect("work dir");
        let store = work.join("store");
        let storage_section = match storage {
            Storage::Memory => String::new(),
            Storage::Immediate => format!(
                "[storage]\ndir = \"{}\"\ndurability = \"immediate\"\n",
                store.display()
            ),
            Storage::Batched { flush_ms } => format!(
                "[storage]\ndir = \"{}\"\ndurability = \"batched\"\nflush_ms = {flush_ms}\n",
                store.display()
            ),
        };
        // Connection ends are logged at debug level: tests wait for them.
        let config = format!(
            "[mqtt]\ntcp = \"127.0.0.1:{port}\"\n[http]\nlisten = \"\"\n\
             [log]\nlevel = \"info,supermq::broker::connection=debug\"\n{storage_section}{extra}"
        );
        let conf = work.join("supermq.conf");
        std::fs::write(&conf, config).expect("write config");
        Process {
            port,
            storage,
            log: work.join("supermq.log"),
            conf,
            work,
            child: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The storage directory (`[storage] dir`); it exists once a durable broker has started.
    pub fn store_dir(&self) -> PathBuf {
        self.work.join("store")
    }

    /// The store file the contract names: `DIR/supermq.redb`.
    pub fn store_file(&self) -> PathBuf {
        self.store_dir().join("supermq.redb")
    }

    /// Starts the broker and waits until its port accepts connections and, with a store, until
    /// it has logged "store loaded" once more (once per start, as the contract says).
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let loaded_before = self.log_count(STORE_LOADED);
        self.child = Some(spawn(&self.conf, &self.log));
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let loaded =
                self.storage == Storage::Memory || self.log_count(STORE_LOADED) > loaded_before;
            if loaded && tokio::net::TcpStream::connect(self.addr()).await.is_ok() {
                break;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "supermq exited during start-up ({status}); log:\n{}",
                    self.log()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "supermq did not start within {START_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.storage != Storage::Memory {
            assert_eq!(
                self.log_count(STORE_LOADED),
                loaded_before + 1,
                "one \"{STORE_LOADED}\" line per start; log:\n{}",
                self.log()
            );
        }
    }

    /// Starts the broker expecting it to refuse to start; returns its exit status and what it
    /// wrote (stdout and stderr) in this attempt.
    pub async fn start_refused(&mut self) -> (ExitStatus, String) {
        assert!(self.child.is_none(), "already running");
        let before = self.log().len();
        self.child = Some(spawn(&self.conf, &self.log));
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                let log = self.log();
                return (status, log.get(before..).unwrap_or(&log).to_string());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "supermq still running {START_TIMEOUT:?} after a start that should fail; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status if the process has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// SIGKILL: the broker dies on the spot, writing nothing more; returns once it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: a graceful shutdown; checks that it exits with code 0 within a minute.
    pub async fn stop(&mut self) {
        let pid = self.child.as_ref().expect("broker running").id();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}");
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                assert!(
                    status.success(),
                    "exit after SIGTERM: {status}; log:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no exit within {START_TIMEOUT:?} of SIGTERM; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs a `supermq` subcommand to completion, e.g. `["storage", "check", DIR]`.
    pub fn tool(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_supermq"))
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run supermq")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times the log contains `text`.
    pub fn log_count(&self, text: &str) -> usize {
        self.log().matches(text).count()
    }

    /// Waits until one line of the log contains every one of `parts`.
    pub async fn wait_for_line(&self, parts: &[&str]) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while !self
            .log()
            .lines()
            .any(|line| parts.iter().all(|part| line.contains(part)))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no line with all of {parts:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- supermq log ({}, kept) ----\n{}",
                self.work.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}
