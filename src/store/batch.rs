//! One commit's worth of writes, folded: the last write of each key wins, and a message that
//! is queued and deleted within one batch (delivered and acknowledged before the disk was
//! reached) is dropped from it altogether, with its in-flight state. On a fast subscriber
//! that is nearly every message, and the batch is nearly empty.

use std::collections::BTreeMap;

use super::{Encode, Op, Table};

/// What a batch does to one key.
pub enum Action {
    Put(Box<dyn Encode>),
    Delete,
}

/// A batch taken apart for writing: its prefix deletes, and each table's keys in order.
pub type Parts = (
    Vec<(Table, Vec<u8>)>,
    Vec<(Table, BTreeMap<Vec<u8>, Action>)>,
);

/// Folded writes, per table, in key order (what a B-tree takes best).
#[derive(Default)]
pub struct Batch {
    tables: [BTreeMap<Vec<u8>, Action>; Table::ALL.len()],
    /// Prefix deletes, applied before the keys: anything written under the prefix after the
    /// delete was queued is in `tables` and comes after it.
    prefixes: Vec<(Table, Vec<u8>)>,
    /// About how many bytes the puts hold.
    bytes: usize,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty() && self.tables.iter().all(BTreeMap::is_empty)
    }

    /// Folds one write in.
    pub fn add(&mut self, op: Op) {
        match op {
            Op::Put(table, key, value) => {
                self.bytes += value.size();
                let old = self.tables[table.index()].insert(key, Action::Put(value));
                self.forget(old);
            }
            Op::Delete(table, key) => {
                let entries = &mut self.tables[table.index()];
                let fresh =
                    table == Table::Messages && matches!(entries.get(&key), Some(Action::Put(_)));
                if fresh {
                    // Written by this batch, so not on disk, and neither is its flight state
                    // (which exists only while the message does).
                    let old = entries.remove(&key);
                    self.forget(old);
                    let flight = self.tables[Table::Flights.index()].remove(&key);
                    self.forget(flight);
                } else {
                    if table == Table::Messages {
                        // A message's delete takes its flight state with it.
                        let flight =
                            self.tables[Table::Flights.index()].insert(key.clone(), Action::Delete);
                        self.forget(flight);
                    }
                    let old = self.tables[table.index()].insert(key, Action::Delete);
                    self.forget(old);
                }
            }
            Op::DeletePrefix(table, prefix) => {
                let doomed: Vec<Vec<u8>> = self.tables[table.index()]
                    .range(prefix.clone()..)
                    .take_while(|(key, _)| key.starts_with(&prefix))
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in doomed {
                    let old = self.tables[table.index()].remove(&key);
                    self.forget(old);
                }
                self.prefixes.push((table, prefix));
            }
        }
    }

    /// Folds one write in unless it is a message write and the batch already holds `limit`
    /// bytes (while commits fail, [`super::MAX_FAILING_BYTES`]); returns whether it was taken.
    /// Deletes, session records, flight state and inbound ids are always taken: they are small,
    /// and dropping one would leave the disk saying what memory no longer does.
    pub fn add_within(&mut self, op: Op, limit: usize) -> bool {
        if self.bytes > limit && matches!(op, Op::Put(Table::Messages, ..)) {
            return false;
        }
        self.add(op);
        true
    }

    /// Takes the batch's contents, leaving it empty.
    pub fn take(&mut self) -> Batch {
        std::mem::take(self)
    }

    /// The prefix deletes, then every table's keys in order.
    pub fn into_parts(self) -> Parts {
        let tables = Table::ALL.into_iter().zip(self.tables).collect();
        (self.prefixes, tables)
    }

    fn forget(&mut self, old: Option<Action>) {
        if let Some(Action::Put(value)) = old {
            self.bytes = self.bytes.saturating_sub(value.size());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(table: Table, key: &[u8]) -> Op {
        Op::Put(
            table,
            key.to_vec(),
            Box::new(bytes::BytesMut::from(&b"abc"[..])),
        )
    }

    fn delete(table: Table, key: &[u8]) -> Op {
        Op::Delete(table, key.to_vec())
    }

    fn keys(batch: Batch) -> Vec<(Table, Vec<u8>, bool)> {
        let (_, tables) = batch.into_parts();
        tables
            .into_iter()
            .flat_map(|(table, entries)| {
                entries
                    .into_iter()
                    .map(move |(key, action)| (table, key, matches!(action, Action::Put(_))))
            })
            .collect()
    }

    #[test]
    fn a_message_queued_and_acknowledged_in_one_batch_never_reaches_the_disk() {
        let mut batch = Batch::default();
        batch.add(put(Table::Messages, b"m1"));
        batch.add(put(Table::Flights, b"m1"));
        batch.add(delete(Table::Flights, b"m1"));
        batch.add(delete(Table::Messages, b"m1"));
        assert!(batch.is_empty());
        assert_eq!(batch.bytes, 0);
    }

    #[test]
    fn a_message_written_before_is_deleted_with_its_flight_state() {
        let mut batch = Batch::default();
        batch.add(put(Table::Flights, b"m1"));
        batch.add(delete(Table::Flights, b"m1"));
        batch.add(delete(Table::Messages, b"m1"));
        assert_eq!(
            keys(batch),
            [
                (Table::Messages, b"m1".to_vec(), false),
                (Table::Flights, b"m1".to_vec(), false)
            ]
        );
    }

    #[test]
    fn a_message_delete_alone_deletes_its_flight_state_too() {
        let mut batch = Batch::default();
        batch.add(put(Table::Flights, b"m1"));
        batch.add(delete(Table::Messages, b"m1"));
        assert_eq!(
            keys(batch),
            [
                (Table::Messages, b"m1".to_vec(), false),
                (Table::Flights, b"m1".to_vec(), false)
            ]
        );
    }

    #[test]
    fn past_its_limit_a_batch_drops_message_writes_only() {
        let mut batch = Batch::default();
        assert!(batch.add_within(put(Table::Messages, b"m1"), 2));
        assert!(
            !batch.add_within(put(Table::Messages, b"m2"), 2),
            "over 2 bytes"
        );
        assert!(batch.add_within(put(Table::Sessions, b"c"), 2));
        assert!(batch.add_within(put(Table::Flights, b"m1"), 2));
        assert!(batch.add_within(delete(Table::Messages, b"m0"), 2));
        let written: Vec<(Table, Vec<u8>)> = keys(batch)
            .into_iter()
            .map(|(table, key, _)| (table, key))
            .collect();
        assert!(!written.contains(&(Table::Messages, b"m2".to_vec())));
        assert!(written.contains(&(Table::Sessions, b"c".to_vec())));
        assert!(written.contains(&(Table::Messages, b"m0".to_vec())));
    }

    #[test]
    fn other_tables_keep_the_delete_of_a_key_written_in_the_same_batch() {
        // A session record rewritten and then deleted still has an older copy on disk.
        let mut batch = Batch::default();
        batch.add(put(Table::Sessions, b"c"));
        batch.add(delete(Table::Sessions, b"c"));
        assert_eq!(keys(batch), [(Table::Sessions, b"c".to_vec(), false)]);
    }

    #[test]
    fn a_prefix_delete_drops_earlier_writes_under_it_but_not_later_ones() {
        let mut batch = Batch::default();
        batch.add(put(Table::Inbound, b"s1-a"));
        batch.add(put(Table::Inbound, b"s2-a"));
        batch.add(Op::DeletePrefix(Table::Inbound, b"s1".to_vec()));
        batch.add(put(Table::Inbound, b"s1-b"));
        let (prefixes, _) = Batch::default().into_parts();
        assert!(prefixes.is_empty());
        let (prefixes, tables) = batch.into_parts();
        assert_eq!(prefixes, [(Table::Inbound, b"s1".to_vec())]);
        let inbound: Vec<Vec<u8>> = tables
            .into_iter()
            .filter(|(table, _)| *table == Table::Inbound)
            .flat_map(|(_, entries)| entries.into_keys())
            .collect();
        assert_eq!(inbound, [b"s1-b".to_vec(), b"s2-a".to_vec()]);
    }
}
