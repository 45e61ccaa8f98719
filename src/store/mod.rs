//! The store: what a node keeps on disk so that a restart, a crash or a replaced container
//! loses nothing it acknowledged (`[storage]`, docs/ARCHITECTURE.md "Persistence").
//!
//! It is a key-value journal over one redb file, `DIR/supermq.redb`, with a fixed set of
//! [`Table`]s whose keys and values are bytes: what they mean is the broker's business
//! (`broker::persist`), so this layer knows nothing of sessions or MQTT. Writers never wait
//! for the disk: [`Store::put`] and [`Store::delete`] append to a queue and return; one thread
//! ([`writer`]) takes everything queued, folds it into one batch (a message queued and
//! acknowledged before its batch is written never reaches the disk at all) and commits it in
//! one transaction — many messages per fsync, the *group commit*. Whoever must not answer
//! before its writes are on disk asks [`Store::sync`] to be told when they are.
//!
//! A failed commit (disk full, I/O error) keeps its batch and tries again; until one succeeds
//! every [`Durable`] waiting is told `false`, so the broker refuses what it cannot store
//! instead of acknowledging it, and the writes queued meanwhile are kept (bounded, see
//! [`MAX_FAILING_BYTES`]).

mod batch;
mod file;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::BytesMut;

pub use file::{Contents, Report, check, compact};

/// The store's file in its directory.
pub const FILE_NAME: &str = "supermq.redb";

/// While commits fail, at most this many bytes of writes wait for the disk to come back; past
/// it new message writes are dropped (their publishers are refused anyway) and counted.
pub const MAX_FAILING_BYTES: usize = 64 * 1024 * 1024;

/// A key and its value, as the store holds them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// What the store keeps, one redb table each; keys sort as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Persistent sessions by client id.
    Sessions,
    /// Queued and in-flight messages by (session, sequence number). A key is written once:
    /// a message deleted in the batch that wrote it never reaches the disk.
    Messages,
    /// The packet id and state of messages in flight, keyed like [`Table::Messages`]; written
    /// only while its message exists, and deleted with it (a message's delete takes it along).
    Flights,
    /// Inbound QoS 2 packet ids not yet released, by (session, packet id).
    Inbound,
    /// Retained messages and the tombstones of retained clears, by topic.
    Retained,
}

impl Table {
    pub const ALL: [Table; 5] = [
        Table::Sessions,
        Table::Messages,
        Table::Flights,
        Table::Inbound,
        Table::Retained,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Sessions => "sessions",
            Table::Messages => "messages",
            Table::Flights => "flights",
            Table::Inbound => "inbound",
            Table::Retained => "retained",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A value encoded by the writer thread rather than by the caller, so that the hot path only
/// hands over a reference to what it already holds (and a value deleted before its batch is
/// written is never encoded).
pub trait Encode: Send {
    /// Appends the value's bytes.
    fn encode(&self, out: &mut BytesMut);
    /// About how many bytes it encodes to, for the bounds.
    fn size(&self) -> usize;
}

impl Encode for BytesMut {
    fn encode(&self, out: &mut BytesMut) {
        out.extend_from_slice(self);
    }

    fn size(&self) -> usize {
        self.len()
    }
}

/// Someone waiting for writes to be on disk ([`Store::sync`]).
pub trait Durable: Send {
    /// `true`: everything written before the wait began is on disk; `false`: a commit failed.
    fn done(self: Box<Self>, stored: bool);
}

/// How commits are made (`storage.durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Commit as soon as there is something to write; waiters are told after the fsync.
    Immediate,
    /// Gather writes for `flush` before each commit; nobody waits.
    Batched(Duration),
}

/// Why the store cannot be used. Every message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store's directory {dir}: {source}")]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{file} is in use by another process (another supermq on the same storage.dir?); stop it, or give this node a directory of its own"
    )]
    InUse { file: PathBuf },
    #[error(
        "cannot open the store {file}: {problem}. The file was not changed. Check it with `supermq storage check {dir}`; restore it from a backup, or move it away to start with an empty store",
        dir = .file.parent().map(Path::display).map(|d| d.to_string()).unwrap_or_default()
    )]
    Unreadable { file: PathBuf, problem: String },
    #[error("cannot read the store {file}: {problem}")]
    Read { file: PathBuf, problem: String },
}

/// The store's counters, read by the metrics.
#[derive(Debug, Default)]
pub struct Figures {
    /// Commits made.
    pub commits: AtomicU64,
    /// Commits that failed (each is retried).
    pub failures: AtomicU64,
    /// Writes dropped while commits failed and the bound was reached.
    pub dropped: AtomicU64,
}

/// The store's writer thread, not started yet ([`Store::open`]).
pub struct Writer {
    database: redb::Database,
    file: PathBuf,
    shared: Arc<Shared>,
    mode: Mode,
}

impl Writer {
    /// Starts writing what is queued, and everything after.
    pub fn start(self) -> Result<(), StoreError> {
        let Writer {
            database,
            file,
            shared,
            mode,
        } = self;
        let name = file.clone();
        std::thread::Builder::new()
            .name("supermq-store".to_string())
            .spawn(move || writer::run(database, &file, &shared, mode))
            .map(drop)
            .map_err(|error| StoreError::Read {
                file: name,
                problem: format!("cannot start the writer thread: {error}"),
            })
    }
}

/// The handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// What callers and the writer thread share.
struct Shared {
    queue: Mutex<Queue>,
    /// Something was queued, or the store is closing.
    work: Condvar,
    /// The writer is idle with an empty queue (for [`Store::close`]).
    idle: Condvar,
    /// The last commit failed: the next waiter need not wait to be refused.
    failing: AtomicBool,
    figures: Figures,
}

/// Writes and waiters handed to the writer, in order.
#[derive(Default)]
struct Queue {
    ops: Vec<Op>,
    waiters: Vec<Box<dyn Durable>>,
    /// Set by [`Store::close`]: the writer commits what is queued and stops; later writes are
    /// ignored (the node is going down, and what it drops then is not to be deleted).
    closing: bool,
    /// The writer is busy with a batch.
    busy: bool,
}

/// One write.
enum Op {
    Put(Table, Vec<u8>, Box<dyn Encode>),
    Delete(Table, Vec<u8>),
    /// Deletes every key of the table that starts with the prefix.
    DeletePrefix(Table, Vec<u8>),
}

impl Store {
    /// Opens (or creates) the store in `dir` and reads all of it. Nothing is written until
    /// the returned [`Writer`] starts: what the caller queues before that (the start-up's
    /// rewrite of what it read) goes to disk in one transaction, all or nothing.
    /// An existing file that cannot be opened is refused, never replaced.
    pub fn open(dir: &Path, mode: Mode) -> Result<(Store, Contents, Writer), StoreError> {
        let (database, contents) = file::open(dir)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            idle: Condvar::new(),
            failing: AtomicBool::new(false),
            figures: Figures::default(),
        });
        let writer = Writer {
            database,
            file: dir.join(FILE_NAME),
            shared: Arc::clone(&shared),
            mode,
        };
        Ok((Store { shared }, contents, writer))
    }

    /// Writes `value` under `key`.
    pub fn put(&self, table: Table, key: Vec<u8>, value: Box<dyn Encode>) {
        self.push(Op::Put(table, key, value));
    }

    pub fn delete(&self, table: Table, key: Vec<u8>) {
        self.push(Op::Delete(table, key));
    }

    /// Deletes every key of `table` that starts with `prefix`.
    pub fn delete_prefix(&self, table: Table, prefix: Vec<u8>) {
        self.push(Op::DeletePrefix(table, prefix));
    }

    /// Tells `waiter` once everything written so far is on disk (or that a commit failed).
    pub fn sync(&self, waiter: Box<dyn Durable>) {
        let mut queue = self.queue();
        if queue.closing {
            drop(queue);
            waiter.done(false);
            return;
        }
        queue.waiters.push(waiter);
        drop(queue);
        self.shared.work.notify_one();
    }

    /// True while commits fail.
    pub fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::Acquire)
    }

    pub fn figures(&self) -> &Figures {
        &self.shared.figures
    }

    /// Writes what is queued, waits for it (at most `within`) and stops the writer; writes
    /// after this are ignored. Called once the node's connections are closed.
    pub fn close(&self, within: Duration) {
        let mut queue = self.queue();
        queue.closing = true;
        self.shared.work.notify_one();
        let deadline = std::time::Instant::now() + within;
        while queue.busy || !queue.ops.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::warn!("the store did not finish writing before shutdown");
                return;
            }
            queue = self
                .shared
                .idle
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn push(&self, op: Op) {
        let mut queue = self.queue();
        if queue.closing {
            return;
        }
        let first = queue.ops.is_empty();
        queue.ops.push(op);
        drop(queue);
        if first {
            self.shared.work.notify_one();
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.shared.queue()
    }
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
