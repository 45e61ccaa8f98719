//! `supermq passwd`: add, change or delete a user in a password file, in mosquitto_passwd's
//! shape (`[-c] FILE USER`, `-b FILE USER PASSWORD`, `-D FILE USER`).
//!
//! It writes argon2id hashes ([`supermq::auth::hash_password`]) and edits the file line by line:
//! the user's line is replaced where it stood (or appended), every other line, comments
//! included, is kept byte for byte, so mosquitto `$7$` users keep working beside new ones.
//! Which line belongs to whom is decided by `Passwords::user_of_line`, the broker's own rule.
//!
//! The new file is written to a temporary file in the same directory and renamed over the old
//! one, so the broker (re)loading it at any moment sees the old file or the new one, never
//! half of one. It is created with mode 0600 (it holds password hashes) and keeps the previous
//! file's owner when it can, so that root editing a file the broker's user reads does not take
//! it away from that user.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;

use supermq::auth::{Passwords, hash_password};

use super::ToolError;

/// The exit codes, as `--help` lists them.
const HELP: &str = "\
Exit codes:
   0  success
   1  cannot read or write FILE (missing without -c), or cannot read the password from stdin
   2  usage error: bad option or user name, passwords that differ, -D of a user not in FILE

Without -b the password is asked twice: on the terminal with echo off, or as two lines on
stdin when it is not a terminal.";

/// Add, change or delete a user in a password file (like mosquitto_passwd).
#[derive(Debug, Args)]
#[command(after_help = HELP)]
pub struct PasswdArgs {
    /// Create FILE, or empty it if it exists, then add USER.
    #[arg(short = 'c', conflicts_with = "delete")]
    create: bool,
    /// Batch mode: take PASSWORD from the command line (where `ps` and shell history see it).
    #[arg(short = 'b', requires = "password")]
    batch: bool,
    /// Delete USER from FILE.
    #[arg(short = 'D', conflicts_with = "batch")]
    delete: bool,
    /// The password file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The user name.
    #[arg(value_name = "USER")]
    user: String,
    /// The password, with -b.
    #[arg(value_name = "PASSWORD", requires = "batch")]
    password: Option<String>,
}

pub fn run(args: PasswdArgs) -> Result<(), ToolError> {
    check_user(&args.user)?;
    let target = resolve(&args.file)?;
    let previous = fs::metadata(&target).ok();
    // Read before asking for a password: a missing file should not cost a typed password.
    let text = if args.create {
        String::new()
    } else {
        read(&target)?
    };
    let text = if args.delete {
        let (text, found) = edit(&text, &args.user, None);
        if found == 0 {
            return Err(ToolError::Usage(format!(
                "user {} is not in {}",
                args.user,
                args.file.display()
            )));
        }
        text
    } else {
        let password = match args.password {
            Some(password) => password.into_bytes(),
            None => read_password()?,
        };
        if password.is_empty() {
            return Err(ToolError::Usage("empty password".into()));
        }
        let hash = hash_password(&password)
            .map_err(|error| ToolError::Local(format!("cannot hash the password: {error}")))?;
        edit(&text, &args.user, Some(&format!("{}:{hash}", args.user))).0
    };
    // Other lines are kept as they are, but say if the broker would refuse the file for them.
    if let Err(error) = Passwords::parse(&args.file, &text) {
        eprintln!("supermq passwd: warning: the broker will refuse the file: {error}");
    }
    write_atomically(&target, &text, previous.as_ref())
}

/// A user name the file can hold and the broker read back: no `:` (it ends the name), no
/// leading `#` (a comment), no blanks around it (trimmed when read) and no control characters
/// (a newline would split the line).
fn check_user(user: &str) -> Result<(), ToolError> {
    let problem = if user.is_empty() {
        "is empty"
    } else if user.contains(':') {
        "contains ':'"
    } else if user.starts_with('#') {
        "starts with '#', which makes a comment"
    } else if user.trim() != user {
        "starts or ends with blanks"
    } else if user.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(ToolError::Usage(format!("user name {user:?} {problem}")))
}

/// The file to replace: through a symbolic link (a mounted configuration, say) to the file
/// it points at, so the rename replaces that file rather than the link.
fn resolve(file: &Path) -> Result<PathBuf, ToolError> {
    match fs::symlink_metadata(file) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(file).map_err(|error| {
            ToolError::Local(format!("cannot follow {}: {error}", file.display()))
        }),
        _ => Ok(file.to_path_buf()),
    }
}

fn read(file: &Path) -> Result<String, ToolError> {
    fs::read_to_string(file).map_err(|error| {
        ToolError::Local(if error.kind() == io::ErrorKind::NotFound {
            format!("{}: no such file (-c creates it)", file.display())
        } else {
            format!("cannot read {}: {error}", file.display())
        })
    })
}

/// `text` with `user`'s lines replaced by `line` (at the first one's place, or appended), or
/// removed when `line` is `None`; and how many lines were the user's.
fn edit(text: &str, user: &str, line: Option<&str>) -> (String, usize) {
    let mut out = String::with_capacity(text.len() + line.map_or(0, str::len) + 1);
    let mut found = 0;
    for piece in text.split_inclusive('\n') {
        if Passwords::user_of_line(piece) != Some(user) {
            out.push_str(piece);
            continue;
        }
        found += 1;
        // Only the first: a user listed twice (which the broker refuses) is listed once after.
        if let (1, Some(line)) = (found, line) {
            out.push_str(line);
            out.push('\n');
        }
    }
    if let (0, Some(line)) = (found, line) {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, found)
}

/// The password, asked twice: on a terminal with echo off, otherwise as two lines of stdin.
fn read_password() -> Result<Vec<u8>, ToolError> {
    let stdin = io::stdin();
    let (first, second) = if stdin.is_terminal() {
        let _echo = EchoOff::new()?;
        (prompt("Password: ")?, prompt("Reenter password: ")?)
    } else {
        let mut lines = stdin.lock();
        (read_line(&mut lines)?, read_line(&mut lines)?)
    };
    if first != second {
        return Err(ToolError::Usage("the passwords do not match".into()));
    }
    Ok(first)
}

fn prompt(text: &str) -> Result<Vec<u8>, ToolError> {
    eprint!("{text}");
    let line = read_line(&mut io::stdin().lock());
    // The Enter that ended the line was not echoed.
    eprintln!();
    line
}

/// One line without its line ending; the end of input before a line is an error.
fn read_line(input: &mut impl BufRead) -> Result<Vec<u8>, ToolError> {
    let mut line = Vec::new();
    match input.read_until(b'\n', &mut line) {
        Ok(0) => Err(ToolError::Local(
            "stdin ended before the password was given twice".into(),
        )),
        Ok(_) => {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Ok(line)
        }
        Err(error) => Err(ToolError::Local(format!("cannot read stdin: {error}"))),
    }
}

/// The terminal's echo turned off with `stty` (no terminal library for two prompts), and back
/// on when dropped, errors included.
struct EchoOff;

impl EchoOff {
    fn new() -> Result<EchoOff, ToolError> {
        stty("-echo").map_err(|error| {
            ToolError::Local(format!(
                "cannot turn off the terminal's echo with stty ({error}); \
                 pipe the password on stdin or use -b"
            ))
        })?;
        Ok(EchoOff)
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Err(error) = stty("echo") {
            eprintln!("supermq passwd: cannot turn the terminal's echo back on: {error}");
        }
    }
}

/// Runs `stty SETTING` on our stdin, the terminal.
fn stty(setting: &str) -> io::Result<()> {
    let status = Command::new("stty")
        .arg(setting)
        .stdin(Stdio::inherit())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("stty {setting}: {status}")))
    }
}

/// Replaces `target` with `text`: a temporary file beside it (mode 0600, the previous file's
/// owner), synced, then renamed over it.
fn write_atomically(
    target: &Path,
    text: &str,
    previous: Option<&fs::Metadata>,
) -> Result<(), ToolError> {
    let Some(name) = target.file_name() else {
        return Err(ToolError::Usage(format!(
            "{} is not a file name",
            target.display()
        )));
    };
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        if let Some(previous) = previous {
            keep_owner(&file, previous, target)?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, target)?;
        // The rename itself must reach the disk for the new file to survive a crash.
        File::open(dir)?.sync_all()
    })();
    written.map_err(|error| {
        let _ = fs::remove_file(&temp);
        ToolError::Local(format!("cannot write {}: {error}", target.display()))
    })
}

/// Gives the new file the previous one's owner and group when they differ from ours. Only
/// root may give a file away; anybody else gets a warning that the owner changed.
fn keep_owner(file: &File, previous: &fs::Metadata, target: &Path) -> io::Result<()> {
    let ours = file.metadata()?;
    let owner = (previous.uid(), previous.gid());
    if (ours.uid(), ours.gid()) == owner {
        return Ok(());
    }
    if let Err(error) = std::os::unix::fs::fchown(file, Some(owner.0), Some(owner.1)) {
        eprintln!(
            "supermq passwd: warning: cannot keep {}'s owner {}:{} ({error}); it is now yours",
            target.display(),
            owner.0,
            owner.1
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_replaces_in_place_appends_and_deletes() {
        let text = "# users\nalice:old\r\nbob:x\n\nalice:dup\ncarol:y";
        let (out, found) = edit(text, "alice", Some("alice:new"));
        assert_eq!(
            (out.as_str(), found),
            ("# users\nalice:new\nbob:x\n\ncarol:y", 2)
        );
        let (out, found) = edit(text, "dave", Some("dave:h"));
        assert_eq!(found, 0);
        assert_eq!(out, format!("{text}\ndave:h\n"));
        assert_eq!(edit("", "dave", Some("dave:h")).0, "dave:h\n");
        let (out, found) = edit(text, "bob", None);
        assert_eq!(
            (out.as_str(), found),
            ("# users\nalice:old\r\n\nalice:dup\ncarol:y", 1)
        );
        assert_eq!(edit(text, "#", None).1, 0);
    }

    #[test]
    fn user_names_the_file_cannot_hold() {
        for bad in ["", "a:b", "#a", " a", "a ", "a\nb", "a\tb"] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "a b", "a#", "ünï", "a$7$"] {
            assert!(check_user(good).is_ok(), "{good:?}");
        }
    }
}
