//! Who may connect and what they may do: the password file, the ACL file, and the rules
//! currently in force.
//!
//! Both files are read at start-up and again on SIGHUP. A file that cannot be read or parsed
//! stops start-up, and on reload keeps the previous rules in force: a broken reload never
//! opens the broker.

mod password;

pub use password::{HashError, Passwords, hash_password};

use std::fmt;
use std::path::PathBuf;

/// A password or ACL file that cannot be used: the file, the line (1-based; 0 when the problem
/// is the whole file) and why. `Display` is one line for the log or for start-up's exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.reason)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.reason)
        }
    }
}

impl std::error::Error for FileError {}
