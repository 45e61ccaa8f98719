//! `supermq storage check DIR` and `supermq storage compact DIR`: an operator's look at a
//! node's store (`[storage] dir`) while the node is stopped. Both open the file the way the
//! broker does — every page's checksum verified — so `check` says whether a start would accept
//! it; neither ever deletes or resets a store.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use supermq::store;

use super::ToolError;

/// Check or compact a stopped node's store (the directory of `[storage] dir`).
#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes:\n   0  the store is sound (check) or was compacted (compact)\n   1  the store cannot be opened: the message says why; the file is left as it was"
)]
pub struct StorageArgs {
    #[command(subcommand)]
    command: StorageCommand,
}

#[derive(Debug, Subcommand)]
enum StorageCommand {
    /// Open the store as the broker would (checking every page) and count what it holds
    Check {
        /// The storage directory (holds supermq.redb)
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Give the file's free space back to the file system
    Compact {
        /// The storage directory (holds supermq.redb)
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

pub fn run(args: StorageArgs) -> Result<(), ToolError> {
    match args.command {
        StorageCommand::Check { dir } => {
            let report = store::check(&dir).map_err(|e| ToolError::Local(e.to_string()))?;
            println!("{}: sound, {} bytes", report.file.display(), report.bytes);
            for (table, entries) in report.tables {
                println!("  {table:<10} {entries}");
            }
            Ok(())
        }
        StorageCommand::Compact { dir } => {
            let (before, after) =
                store::compact(&dir).map_err(|e| ToolError::Local(e.to_string()))?;
            println!(
                "{}: compacted, {before} -> {after} bytes",
                dir.join(store::FILE_NAME).display()
            );
            Ok(())
        }
    }
}
