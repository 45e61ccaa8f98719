//! The writer thread: takes what is queued, folds it into a [`Batch`] and commits it, one
//! fsync for all of it.
//!
//! `immediate`: a batch is committed as soon as there is one; while the fsync runs, the next
//! batch gathers, so the busier the node, the more each fsync carries. `batched`: the writer
//! waits `flush_ms` after the first write of a batch, and nobody waits for it. A commit that
//! fails keeps its batch, which takes in the writes that follow and is tried again after a
//! pause; waiters are told `false` meanwhile.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use redb::{Database, Durability, TableDefinition};

use super::batch::{Action, Batch};
use super::{Durable, MAX_FAILING_BYTES, Mode, Op, Shared, Table};

/// How long the writer waits before trying a failed commit again.
const RETRY: Duration = Duration::from_millis(500);

/// Runs until the store is closed.
pub fn run(database: Database, file: &Path, shared: &Shared, mode: Mode) {
    // redb refuses every transaction after an I/O error until the file is opened again, so
    // a failed commit closes it, and the next try opens it first.
    let mut database = Some(database);
    let mut batch = Batch::default();
    let mut failed_at: Option<Instant> = None;
    loop {
        let Some((ops, waiters, closing)) = gather(shared, mode, &batch, failed_at) else {
            return;
        };
        let failing = failed_at.is_some();
        for op in ops {
            if !failing {
                batch.add(op);
            } else if !batch.add_within(op, MAX_FAILING_BYTES) {
                shared.figures.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let stored = if batch.is_empty() {
            !failing
        } else {
            match commit(&mut database, file, batch.take()) {
                Ok(()) => {
                    shared.figures.commits.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(failed) => {
                    let (error, kept) = *failed;
                    batch = kept;
                    if failed_at.is_none() {
                        tracing::error!(%error, "cannot write to the store; refusing what must be stored until it can");
                    }
                    false
                }
            }
        };
        if stored {
            if failed_at.take().is_some() {
                tracing::info!("the store is written to again");
            }
        } else {
            shared.figures.failures.fetch_add(1, Ordering::Relaxed);
            failed_at = Some(Instant::now());
        }
        shared.failing.store(!stored, Ordering::Release);
        for waiter in waiters {
            waiter.done(stored);
        }
        let mut queue = shared.queue();
        queue.busy = false;
        // Closing: done once everything is written, or given up if the disk fails now.
        if closing && (queue.ops.is_empty() || !stored) {
            queue.ops.clear();
            shared.idle.notify_all();
            drop(queue);
            return;
        }
        if queue.ops.is_empty() {
            shared.idle.notify_all();
        }
    }
}

type Gathered = (Vec<Op>, Vec<Box<dyn Durable>>, bool);

/// Waits for work and takes it: `None` once closed with nothing left to write.
fn gather(
    shared: &Shared,
    mode: Mode,
    kept: &Batch,
    failed_at: Option<Instant>,
) -> Option<Gathered> {
    let mut queue = shared.queue();
    loop {
        let retry = failed_at.map(|at| at + RETRY);
        let has_work = !queue.ops.is_empty() || !queue.waiters.is_empty();
        match retry {
            Some(at) if !kept.is_empty() || has_work => {
                let now = Instant::now();
                if now >= at {
                    break;
                }
                queue = shared
                    .work
                    .wait_timeout(queue, at - now)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
                if queue.closing {
                    break;
                }
                continue;
            }
            _ => {}
        }
        if has_work {
            break;
        }
        if queue.closing {
            shared.idle.notify_all();
            return None;
        }
        queue = shared
            .work
            .wait(queue)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    if let Mode::Batched(flush) = mode
        && !queue.closing
    {
        // Gather for the flush interval; a close cuts it short.
        let until = Instant::now() + flush;
        loop {
            let now = Instant::now();
            if now >= until || queue.closing {
                break;
            }
            queue = shared
                .work
                .wait_timeout(queue, until - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
    queue.busy = true;
    let ops = std::mem::take(&mut queue.ops);
    let waiters = std::mem::take(&mut queue.waiters);
    Some((ops, waiters, queue.closing))
}

/// Writes `batch` in one transaction and waits for the disk. On failure the batch comes back,
/// to be tried again with what follows folded in.
fn commit(
    database: &mut Option<Database>,
    file: &Path,
    batch: Batch,
) -> Result<(), Box<(redb::Error, Batch)>> {
    // Encoded first, so that a failed transaction leaves the bytes to rebuild the batch from.
    let (prefixes, tables) = batch.into_parts();
    let mut encoded: Vec<(Table, Vec<u8>, Option<BytesMut>)> = Vec::new();
    for (table, entries) in tables {
        for (key, action) in entries {
            let value = match action {
                Action::Put(value) => {
                    let mut bytes = BytesMut::with_capacity(value.size() + 32);
                    value.encode(&mut bytes);
                    Some(bytes)
                }
                Action::Delete => None,
            };
            encoded.push((table, key, value));
        }
    }
    let written = match database {
        Some(open) => write(open, &prefixes, &encoded),
        None => super::file::reopen(file).and_then(|open| {
            let written = write(&open, &prefixes, &encoded);
            *database = Some(open);
            written
        }),
    };
    match written {
        Ok(()) => Ok(()),
        Err(error) => {
            *database = None;
            let mut kept = Batch::default();
            for (table, prefix) in prefixes {
                kept.add(Op::DeletePrefix(table, prefix));
            }
            for (table, key, value) in encoded {
                kept.add(match value {
                    Some(bytes) => Op::Put(table, key, Box::new(bytes)),
                    None => Op::Delete(table, key),
                });
            }
            Err(Box::new((error, kept)))
        }
    }
}

fn write(
    database: &Database,
    prefixes: &[(Table, Vec<u8>)],
    entries: &[(Table, Vec<u8>, Option<BytesMut>)],
) -> Result<(), redb::Error> {
    let mut transaction = database.begin_write()?;
    transaction.set_durability(Durability::Immediate)?;
    {
        let mut open = [None, None, None, None, None];
        for (table, prefix) in prefixes {
            let handle = open_table(&transaction, &mut open, *table)?;
            let keep = |key: &[u8], _: &[u8]| !key.starts_with(prefix);
            match successor(prefix) {
                Some(end) => handle.retain_in(prefix.as_slice()..end.as_slice(), keep)?,
                None => handle.retain_in(prefix.as_slice().., keep)?,
            }
        }
        for (table, key, value) in entries {
            let handle = open_table(&transaction, &mut open, *table)?;
            match value {
                Some(bytes) => {
                    handle.insert(key.as_slice(), &bytes[..])?;
                }
                None => {
                    handle.remove(key.as_slice())?;
                }
            }
        }
    }
    transaction.commit()?;
    Ok(())
}

/// The first key after every key that starts with `prefix`; `None` if there is none.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

type Handle<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// The transaction's handle of `table`, opened on first use.
fn open_table<'a, 't>(
    transaction: &'t redb::WriteTransaction,
    open: &'a mut [Option<Handle<'t>>; 5],
    table: Table,
) -> Result<&'a mut Handle<'t>, redb::Error> {
    let slot = &mut open[table.index()];
    if slot.is_none() {
        let definition: TableDefinition<&[u8], &[u8]> = TableDefinition::new(table.name());
        *slot = Some(transaction.open_table(definition)?);
    }
    slot.as_mut().ok_or_else(|| {
        redb::Error::Corrupted(format!("table {} could not be opened", table.name()))
    })
}
