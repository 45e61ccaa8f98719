//! `supermq passwd` run as a subprocess on files in a scratch directory, each result read back
//! with the broker's own [`Passwords::load`].

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use supermq::auth::Passwords;
use tools_common::Ran;

mod tools_common;

/// Exit codes, as `supermq passwd --help` documents them.
const LOCAL: i32 = 1;
const USAGE: i32 = 2;

/// A directory of its own for each test, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("supermq-passwd-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Every name in the directory: no temporary file may be left behind.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .expect("read scratch")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `supermq passwd ARGS` with `stdin` piped in.
fn passwd(args: &[&str], stdin: &str) -> Ran {
    let args: Vec<&str> = std::iter::once("passwd")
        .chain(args.iter().copied())
        .collect();
    tools_common::run_blocking(&args, stdin.as_bytes())
}

fn path(file: &Path) -> &str {
    file.to_str().expect("UTF-8 scratch path")
}

fn expect_ok(output: &Ran) {
    assert_eq!(output.code, Some(0), "{output:?}");
}

/// Asserts the exit code and that the one line on stderr says `needle`.
fn expect_failure(output: &Ran, code: i32, needle: &str) {
    assert_eq!(output.code, Some(code), "{output:?}");
    let stderr = &output.stderr;
    assert!(
        stderr.contains(needle),
        "stderr should say {needle:?}: {stderr}"
    );
}

fn load(file: &Path) -> Passwords {
    Passwords::load(file).unwrap_or_else(|error| panic!("{error}"))
}

fn lines(file: &Path) -> Vec<String> {
    fs::read_to_string(file)
        .expect("read the file")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn create_add_replace_and_delete() {
    let scratch = Scratch::new("cycle");
    let file = scratch.file("passwd");
    let f = path(&file);

    expect_ok(&passwd(&["-c", "-b", f, "alice", "alice-pw"], ""));
    let mode = fs::metadata(&file).expect("created").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let passwords = load(&file);
    assert_eq!(passwords.len(), 1);
    assert!(passwords.verify("alice", b"alice-pw"));
    assert!(lines(&file)[0].starts_with("alice:$argon2id$v=19$m=19456,t=2,p=1$"));

    // A second user keeps the first line as it was.
    let alice = lines(&file)[0].clone();
    expect_ok(&passwd(&["-b", f, "bob", "bob-pw"], ""));
    assert_eq!(lines(&file)[0], alice);
    let passwords = load(&file);
    assert!(passwords.verify("alice", b"alice-pw") && passwords.verify("bob", b"bob-pw"));

    // A new password replaces alice's line where it stood.
    expect_ok(&passwd(&["-b", f, "alice", "new-pw"], ""));
    let now = lines(&file);
    assert_eq!(now.len(), 2);
    assert!(now[0].starts_with("alice:") && now[0] != alice && now[1].starts_with("bob:"));
    let passwords = load(&file);
    assert!(passwords.verify("alice", b"new-pw") && !passwords.verify("alice", b"alice-pw"));

    expect_ok(&passwd(&["-D", f, "alice"], ""));
    let passwords = load(&file);
    assert_eq!(passwords.len(), 1);
    assert!(!passwords.verify("alice", b"new-pw") && passwords.verify("bob", b"bob-pw"));
    expect_failure(
        &passwd(&["-D", f, "alice"], ""),
        USAGE,
        "user alice is not in",
    );

    // -c empties an existing file.
    expect_ok(&passwd(&["-c", "-b", f, "carol", "carol-pw"], ""));
    let passwords = load(&file);
    assert_eq!(passwords.len(), 1);
    assert!(passwords.verify("carol", b"carol-pw"));
    assert_eq!(scratch.names(), ["passwd"], "no temporary file left");
}

#[test]
fn a_mosquitto_file_keeps_its_lines_and_comments() {
    let scratch = Scratch::new("mosquitto");
    let file = scratch.file("passwd");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mosquitto.passwd");
    fs::copy(&fixture, &file).expect("copy the fixture");
    let before = lines(&file);

    expect_ok(&passwd(&["-b", path(&file), "carol", "carol-pw"], ""));
    let after = lines(&file);
    assert_eq!(
        after[..before.len()],
        before[..],
        "mosquitto's lines untouched"
    );
    let passwords = load(&file);
    assert_eq!(passwords.len(), 3);
    assert!(passwords.verify("alice", b"alice-pw"));
    assert!(passwords.verify("bob", b"bob-pw"));
    assert!(passwords.verify("carol", b"carol-pw"));

    // Replacing a mosquitto user's password upgrades that line alone to argon2id.
    expect_ok(&passwd(&["-b", path(&file), "bob", "bob-new"], ""));
    let after = lines(&file);
    assert_eq!(after[..2], before[..2], "comment and alice untouched");
    assert!(after[2].starts_with("bob:$argon2id$"), "{after:?}");
    assert!(load(&file).verify("bob", b"bob-new"));
}

#[test]
fn piped_passwords_must_match() {
    let scratch = Scratch::new("piped");
    let file = scratch.file("passwd");
    let f = path(&file);

    expect_ok(&passwd(&["-c", f, "alice"], "s3cret pw\ns3cret pw\n"));
    assert!(load(&file).verify("alice", b"s3cret pw"));
    let before = fs::read(&file).expect("read");

    let output = passwd(&[f, "bob"], "one\ntwo\n");
    expect_failure(&output, USAGE, "the passwords do not match");
    assert_eq!(fs::read(&file).expect("read"), before, "nothing written");

    let output = passwd(&[f, "bob"], "only-once\n");
    expect_failure(&output, LOCAL, "stdin ended");
    assert_eq!(fs::read(&file).expect("read"), before, "nothing written");

    // Windows line endings from a script are line endings, not part of the password.
    expect_ok(&passwd(&[f, "bob"], "bob-pw\r\nbob-pw\r\n"));
    assert!(load(&file).verify("bob", b"bob-pw"));
    assert_eq!(scratch.names(), ["passwd"], "no temporary file left");
}

#[test]
fn a_missing_file_needs_c() {
    let scratch = Scratch::new("missing");
    let file = scratch.file("passwd");
    let output = passwd(&["-b", path(&file), "alice", "pw"], "");
    expect_failure(&output, LOCAL, "no such file (-c creates it)");
    assert_eq!(output.stderr.lines().count(), 1);
    assert!(!file.exists());
    let output = passwd(&["-D", path(&file), "alice"], "");
    expect_failure(&output, LOCAL, "no such file");
    assert!(scratch.names().is_empty());
}

#[test]
fn bad_user_names_and_options_are_usage_errors() {
    let scratch = Scratch::new("usage");
    let file = scratch.file("passwd");
    let f = path(&file);
    for user in ["a:b", "#a", " a", ""] {
        expect_failure(
            &passwd(&["-c", "-b", f, user, "pw"], ""),
            USAGE,
            "user name",
        );
    }
    expect_failure(
        &passwd(&["-c", "-b", f, "alice", ""], ""),
        USAGE,
        "empty password",
    );
    expect_failure(
        &passwd(&["-c", "-D", f, "alice"], ""),
        USAGE,
        "cannot be used with",
    );
    expect_failure(&passwd(&[f, "alice", "pw"], ""), USAGE, "-b");
    assert!(scratch.names().is_empty());
}

#[test]
fn a_symlink_is_followed_not_replaced() {
    let scratch = Scratch::new("symlink");
    let real = scratch.file("real");
    let link = scratch.file("link");
    expect_ok(&passwd(&["-c", "-b", path(&real), "alice", "alice-pw"], ""));
    std::os::unix::fs::symlink("real", &link).expect("symlink");
    expect_ok(&passwd(&["-b", path(&link), "bob", "bob-pw"], ""));
    assert!(
        fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink()
    );
    let passwords = load(&real);
    assert!(passwords.verify("alice", b"alice-pw") && passwords.verify("bob", b"bob-pw"));
}
