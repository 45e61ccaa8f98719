//! The store's file: opening it (and refusing one that cannot be trusted, without touching
//! it), reading everything in it at start-up, and the operators' `check` and `compact`.
//!
//! redb checks the checksum of every page on open (`set_check_integrity_on_open`), so a file
//! altered outside redb is reported as corrupt rather than trusted; a file left by a crash is
//! repaired by the same check (the last commit that reached the disk wins). The file carries
//! its format in a `meta` table: a store written by another format of supermq is refused,
//! never read as if it were this one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{
    Builder, CompactionMode, Database, DatabaseError, ReadableDatabase, ReadableTable,
    TableDefinition, TableHandle,
};

use super::{Entry, FILE_NAME, StoreError, Table};

/// The layout of keys and values this build writes; a file with another is refused.
const FORMAT: u32 = 1;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// Everything the store held when it was opened, table by table, in key order.
pub struct Contents {
    tables: Vec<Vec<Entry>>,
    /// How long opening (and checking) the file took.
    pub opened_in: Duration,
}

impl Contents {
    /// Takes one table's entries out.
    pub fn take(&mut self, table: Table) -> Vec<Entry> {
        self.tables
            .get_mut(table.index())
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

/// Opens or creates the store in `dir` and reads it.
pub fn open(dir: &Path) -> Result<(Database, Contents), StoreError> {
    let started = Instant::now();
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
        dir: dir.to_path_buf(),
        source,
    })?;
    let file = dir.join(FILE_NAME);
    let database = Builder::new()
        .set_check_integrity_on_open(true)
        .create(&file)
        .map_err(|error| refused(&file, error))?;
    let tables = read_all(&database, &file)?;
    Ok((
        database,
        Contents {
            tables,
            opened_in: started.elapsed(),
        },
    ))
}

/// Opens the file again after a failed write (redb takes no transaction after an I/O error
/// until it is reopened); it was checked when the node started.
pub fn reopen(file: &Path) -> Result<Database, redb::Error> {
    Ok(Database::create(file)?)
}

/// Reads every table, after checking the format; a new file gets its tables and format.
fn read_all(database: &Database, file: &Path) -> Result<Vec<Vec<Entry>>, StoreError> {
    let unreadable = |problem: String| StoreError::Unreadable {
        file: file.to_path_buf(),
        problem,
    };
    let format = {
        let read = database
            .begin_read()
            .map_err(|e| unreadable(e.to_string()))?;
        let has_meta = read
            .list_tables()
            .map_err(|e| unreadable(e.to_string()))?
            .any(|table| table.name() == META.name());
        if has_meta {
            let meta = read
                .open_table(META)
                .map_err(|e| unreadable(e.to_string()))?;
            let value = meta.get("format").map_err(|e| unreadable(e.to_string()))?;
            value.and_then(|v| v.value().try_into().ok().map(u32::from_be_bytes))
        } else {
            None
        }
    };
    match format {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(unreadable(format!(
                "it was written in store format {other}, and this supermq reads format {FORMAT} only"
            )));
        }
        None => initialise(database).map_err(|e| StoreError::Read {
            file: file.to_path_buf(),
            problem: format!("cannot create its tables: {e}"),
        })?,
    }
    let read = database
        .begin_read()
        .map_err(|e| unreadable(e.to_string()))?;
    let mut tables = Vec::new();
    for table in Table::ALL {
        let handle = read
            .open_table(definition(table))
            .map_err(|e| unreadable(e.to_string()))?;
        let mut entries = Vec::new();
        for entry in handle.iter().map_err(|e| unreadable(e.to_string()))? {
            let (key, value) = entry.map_err(|e| unreadable(e.to_string()))?;
            entries.push((key.value().to_vec(), value.value().to_vec()));
        }
        tables.push(entries);
    }
    Ok(tables)
}

/// A new file: its tables and its format.
fn initialise(database: &Database) -> Result<(), redb::Error> {
    let write = database.begin_write()?;
    {
        let mut meta = write.open_table(META)?;
        meta.insert("format", FORMAT.to_be_bytes().as_slice())?;
        for table in Table::ALL {
            write.open_table(definition(table))?;
        }
    }
    write.commit()?;
    Ok(())
}

/// Why redb would not open the file, as an operator reads it.
fn refused(file: &Path, error: DatabaseError) -> StoreError {
    let problem = match error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            return StoreError::InUse {
                file: file.to_path_buf(),
            };
        }
        DatabaseError::UpgradeRequired(version) => format!(
            "it is in redb file format {version}, which this supermq does not read (written by another version of supermq)"
        ),
        DatabaseError::Storage(redb::StorageError::Corrupted(what)) => {
            format!("it is corrupt ({what})")
        }
        other => other.to_string(),
    };
    StoreError::Unreadable {
        file: file.to_path_buf(),
        problem,
    }
}

/// What `supermq storage check` found.
pub struct Report {
    pub file: PathBuf,
    pub bytes: u64,
    /// Entries per table.
    pub tables: Vec<(&'static str, usize)>,
}

/// Opens an existing store the way the broker does (checking every page) and counts what is
/// in it. A store in use by a running broker cannot be checked.
pub fn check(dir: &Path) -> Result<Report, StoreError> {
    let file = existing(dir)?;
    let (_, mut contents) = open(dir)?;
    let tables = Table::ALL
        .into_iter()
        .map(|table| (table.name(), contents.take(table).len()))
        .collect();
    Ok(Report {
        bytes: size(&file),
        file,
        tables,
    })
}

/// Compacts an existing store (the broker must be stopped); returns its size before and after.
pub fn compact(dir: &Path) -> Result<(u64, u64), StoreError> {
    let file = existing(dir)?;
    let before = size(&file);
    let (mut database, _) = open(dir)?;
    while database
        .compact(CompactionMode::Balanced)
        .map_err(|error| StoreError::Read {
            file: file.clone(),
            problem: format!("compaction failed: {error}"),
        })?
    {}
    drop(database);
    Ok((before, size(&file)))
}

fn existing(dir: &Path) -> Result<PathBuf, StoreError> {
    let file = dir.join(FILE_NAME);
    if file.is_file() {
        Ok(file)
    } else {
        Err(StoreError::Read {
            file,
            problem: "no such file (is this the storage.dir of a node?)".to_string(),
        })
    }
}

fn size(file: &Path) -> u64 {
    std::fs::metadata(file).map_or(0, |m| m.len())
}
