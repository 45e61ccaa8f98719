//! The password file: who may connect, and with which password.
//!
//! One `username:hash` per line; lines starting with `#` and blank lines are ignored. The user
//! name ends at the first `:` (so it cannot contain one); both halves are trimmed of blanks.
//! Two hash formats are read:
//! - mosquitto's `$7$<iterations>$<salt>$<hash>` (PBKDF2-HMAC-SHA512, standard base64 with
//!   padding, a 64-byte hash), as `mosquitto_passwd` writes it, so a mosquitto password file
//!   works unchanged;
//! - argon2id PHC strings (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`), which `supermq passwd`
//!   writes ([`hash_password`]).
//!
//! Anything else is refused with the file, the line and why, mosquitto's old `$6$` (one
//! round of salted SHA-512, cheap to brute-force) and plain text included: a line the broker
//! cannot check would otherwise lock a user out, or worse, be mistaken for a password.
//!
//! The file is validated whole when it is read, so that CONNECT never meets a bad line: costs
//! are capped ([`MAX_ITERATIONS`], [`MAX_ARGON2_MEMORY_KIB`], [`MAX_ARGON2_PASSES`]) because a
//! hostile or mistyped file could otherwise make every CONNECT compute for hours. A user listed
//! twice is an error naming both lines, as in mosquitto's current password-file plugin
//! (mosquitto 2.0 kept the first line with a notice; guessing which one the admin meant is
//! worse than saying so).
//!
//! Checking a password is deliberately slow (that is what the hashes are for), so the broker
//! calls [`Passwords::verify`] on a blocking thread.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::num::NonZeroU32;
use std::path::Path;

use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use base64ct::{Base64, Encoding};
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

use super::FileError;

/// Most PBKDF2 iterations a `$7$` line may ask for. mosquitto_passwd writes 101 (2.0) and at
/// most a few hundred thousand is ever recommended; ten million is already seconds of CPU per
/// CONNECT.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Most memory an argon2id line may ask for, in KiB (1 GiB): argon2 allocates all of it for
/// every check, so an unbounded `m=` would let one line take the machine's memory per CONNECT.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;

/// Most argon2 passes (`t=`) a line may ask for; the default is 2, and each pass over 1 GiB
/// takes about a second.
pub const MAX_ARGON2_PASSES: u32 = 100;

/// Length of a `$7$` hash: the output of one SHA-512.
const PBKDF2_HASH_LEN: usize = 64;

/// Length of the salt [`hash_password`] draws: the PHC recommendation.
const SALT_LEN: usize = 16;

/// A parsed password file: user name → stored hash.
#[derive(Clone)]
pub struct Passwords {
    users: HashMap<String, Stored>,
    /// Checked instead when the user is unknown, so that an unknown user costs as long as a
    /// wrong password: the first user's scheme and costs with a hash nothing produces (`None`
    /// for an empty file, where there is nobody to reveal).
    decoy: Option<Stored>,
}

/// One user's hash, decoded and validated at load time.
#[derive(Clone)]
enum Stored {
    /// mosquitto's `$7$`.
    Pbkdf2 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: [u8; PBKDF2_HASH_LEN],
    },
    /// An argon2id PHC string with its parameters, already checked against the caps.
    Argon2id {
        phc: Box<PasswordHash>,
        params: Params,
    },
}

impl Passwords {
    /// Reads and parses the password file at `path`. A missing or unreadable file, or one that
    /// is not UTF-8, is an error on line 0.
    pub fn load(path: &Path) -> Result<Passwords, FileError> {
        let text = std::fs::read_to_string(path).map_err(|error| FileError {
            path: path.to_path_buf(),
            line: 0,
            reason: format!("cannot read the password file: {error}"),
        })?;
        Passwords::parse(path, &text)
    }

    /// Parses the text of a password file; `path` is only for the errors.
    pub fn parse(path: &Path, text: &str) -> Result<Passwords, FileError> {
        let mut users = HashMap::new();
        let mut lines_of = HashMap::new();
        let mut decoy = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let error = |reason: String| FileError {
                path: path.to_path_buf(),
                line: number,
                reason,
            };
            let Some(parsed) = split_line(line) else {
                continue;
            };
            let (user, hash) = parsed.map_err(|reason| error(reason.to_string()))?;
            let stored =
                Stored::parse(hash).map_err(|reason| error(format!("user {user}: {reason}")))?;
            match users.entry(user.to_string()) {
                Entry::Occupied(_) => {
                    let first = lines_of.get(user).copied().unwrap_or_default();
                    return Err(error(format!("user {user} is already on line {first}")));
                }
                Entry::Vacant(slot) => {
                    if decoy.is_none() {
                        decoy = Some(stored.decoy());
                    }
                    slot.insert(stored);
                    lines_of.insert(user, number);
                }
            }
        }
        Ok(Passwords { users, decoy })
    }

    /// True when `user` is in the file and `password` matches; CPU-heavy (argon2/PBKDF2),
    /// the caller runs it on a blocking thread. An unknown user costs about the same time as
    /// a wrong password (a check against a decoy hash with the first user's costs) so timing
    /// does not reveal who has an account. The comparisons are constant-time.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(stored) => stored.verify(password),
            None => {
                if let Some(decoy) = &self.decoy {
                    // The decoy's hash is never produced; black_box keeps the work from being
                    // optimised away now that its result is unused.
                    std::hint::black_box(decoy.verify(password));
                }
                false
            }
        }
    }

    /// The number of users in the file.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user a line of a password file is for, as [`Passwords::parse`] reads it: `None` for
    /// a comment, a blank line or a line without a user. `supermq passwd` edits files line by
    /// line with it, so that it and the broker agree on which line is whose.
    pub fn user_of_line(line: &str) -> Option<&str> {
        match split_line(line) {
            Some(Ok((user, _))) => Some(user),
            _ => None,
        }
    }
}

/// The user count, never the hashes: they are not for logs.
impl fmt::Debug for Passwords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Passwords")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// Splits a line into user and hash: `None` for a comment or a blank line, an error when the
/// line has no `:` or an empty user name.
fn split_line(line: &str) -> Option<Result<(&str, &str), &'static str>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let Some((user, hash)) = line.split_once(':') else {
        return Some(Err("expected username:hash, found no ':'"));
    };
    let user = user.trim_end();
    if user.is_empty() {
        return Some(Err("empty user name before ':'"));
    }
    Some(Ok((user, hash.trim_start())))
}

impl Stored {
    /// Decodes and validates a hash; the error says what is wrong without quoting the hash
    /// (a line could hold a plain-text password).
    fn parse(hash: &str) -> Result<Stored, String> {
        if let Some(rest) = hash.strip_prefix("$7$") {
            return parse_pbkdf2(rest);
        }
        if hash.starts_with("$argon2id$") {
            return parse_argon2id(hash);
        }
        if hash.starts_with("$argon2i$") || hash.starts_with("$argon2d$") {
            return Err("argon2i and argon2d hashes are not accepted, only argon2id".into());
        }
        if hash.starts_with("$6$") {
            return Err(
                "mosquitto's old $6$ hash (salted SHA-512, mosquitto 1.6 and \
                        earlier) is not accepted: set the password again with supermq passwd \
                        or mosquitto_passwd 2.x"
                    .into(),
            );
        }
        if hash.is_empty() {
            return Err("no password hash after ':'".into());
        }
        Err("unknown password hash format (expected mosquitto's $7$ or $argon2id$)".into())
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Stored::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
            // phc's Output compares in constant time.
            Stored::Argon2id { phc, params } => argon2id(params.clone())
                .verify_password(password, phc.as_ref())
                .is_ok(),
        }
    }

    /// The same scheme and costs with a hash that no password produces (all zeroes).
    fn decoy(&self) -> Stored {
        let mut decoy = self.clone();
        match &mut decoy {
            Stored::Pbkdf2 { hash, .. } => *hash = [0; PBKDF2_HASH_LEN],
            Stored::Argon2id { phc, .. } => {
                let len = phc.hash.as_ref().map_or(0, |hash| hash.len());
                phc.hash = Output::new(&[0; Output::MAX_LENGTH][..len]).ok();
            }
        }
        decoy
    }
}

/// `<iterations>$<salt>$<hash>`, after `$7$`.
fn parse_pbkdf2(rest: &str) -> Result<Stored, String> {
    let mut parts = rest.split('$');
    let (Some(iterations), Some(salt), Some(hash), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a $7$ hash is $7$iterations$salt$hash".into());
    };
    let iterations = if iterations.bytes().all(|b| b.is_ascii_digit()) {
        iterations.parse::<u32>().ok()
    } else {
        None
    };
    let iterations = iterations
        .and_then(NonZeroU32::new)
        .filter(|n| n.get() <= MAX_ITERATIONS)
        .ok_or_else(|| format!("$7$ iterations must be a number from 1 to {MAX_ITERATIONS}"))?;
    let salt = decode_base64(salt).ok_or("$7$ salt is not base64")?;
    if salt.is_empty() {
        return Err("$7$ salt is empty".into());
    }
    let hash = decode_base64(hash).ok_or("$7$ hash is not base64")?;
    let hash: [u8; PBKDF2_HASH_LEN] = hash.try_into().map_err(|hash: Vec<u8>| {
        format!(
            "$7$ hash is {} bytes, PBKDF2-HMAC-SHA512 gives {PBKDF2_HASH_LEN}",
            hash.len()
        )
    })?;
    Ok(Stored::Pbkdf2 {
        iterations,
        salt,
        hash,
    })
}

/// Standard base64 with padding, as mosquitto writes it.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut buffer = vec![0; text.len()];
    let len = Base64::decode(text, &mut buffer).ok()?.len();
    buffer.truncate(len);
    Some(buffer)
}

/// A whole `$argon2id$...` PHC string.
fn parse_argon2id(hash: &str) -> Result<Stored, String> {
    let phc = PasswordHash::new(hash)
        .map_err(|error| format!("argon2id hash does not parse: {error}"))?;
    if phc.version != Some(Version::V0x13.into()) {
        return Err("argon2id hash must be version 19 (v=19)".into());
    }
    if phc.salt.is_none() || phc.hash.is_none() {
        return Err("argon2id hash lacks its salt or hash".into());
    }
    let params = Params::try_from(&phc)
        .map_err(|error| format!("argon2id parameters are invalid: {error}"))?;
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB {
        return Err(format!(
            "argon2id memory m={} KiB is over the limit of {MAX_ARGON2_MEMORY_KIB}",
            params.m_cost()
        ));
    }
    if params.t_cost() > MAX_ARGON2_PASSES {
        return Err(format!(
            "argon2id passes t={} are over the limit of {MAX_ARGON2_PASSES}",
            params.t_cost()
        ));
    }
    Ok(Stored::Argon2id {
        phc: Box::new(phc),
        params,
    })
}

fn argon2id(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Why [`hash_password`] failed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("no random bytes for the salt from the operating system")]
    Random,
    #[error("argon2: {0}")]
    Argon2(argon2::password_hash::Error),
}

/// Hashes `password` for the password file: an argon2id PHC string with argon2's default
/// costs (v=19, m=19456 KiB, t=2, p=1, OWASP's recommendation) and a fresh 16-byte salt.
pub fn hash_password(password: &[u8]) -> Result<String, HashError> {
    let mut salt = [0; SALT_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| HashError::Random)?;
    let phc = argon2id(Params::default())
        .hash_password_with_salt(password, &salt)
        .map_err(HashError::Argon2)?;
    Ok(phc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's vector: password `secret`, salt bytes 0..11, 101 iterations.
    const VECTOR: &str = "$7$101$AAECAwQFBgcICQoL$Xr99N9ym9ys8TWxis5ajETJq6EVYzmc6nb8t3pUYnPBbCAbICS4xejTltonXWCtJNBvA+By+TXUqU6qCblO00w==";

    fn parse(text: &str) -> Result<Passwords, FileError> {
        Passwords::parse(Path::new("pw"), text)
    }

    /// The error for `text`, asserting its line and that its reason says `needle`.
    fn error_on(text: &str, line: usize, needle: &str) {
        let error = match parse(text) {
            Ok(passwords) => panic!("{text:?} parsed: {passwords:?}"),
            Err(error) => error,
        };
        assert_eq!(error.line, line, "{error}");
        assert!(
            error.reason.contains(needle),
            "{error} should say {needle:?}"
        );
        assert_eq!(error.path, Path::new("pw"));
    }

    #[test]
    fn mosquitto_vector_verifies_only_its_password() {
        let passwords = parse(&format!("alice:{VECTOR}\n")).expect("parses");
        assert_eq!(passwords.len(), 1);
        assert!(passwords.verify("alice", b"secret"));
        // Not `secret\0`: HMAC pads short keys with zeroes, so PBKDF2 cannot tell trailing NULs
        // apart (mosquitto, with C strings, cannot even receive them).
        for wrong in [&b""[..], b"Secret", b"secret ", b"secre", b"\0secret"] {
            assert!(!passwords.verify("alice", wrong), "{wrong:?}");
        }
        assert!(!passwords.verify("bob", b"secret"));
        assert!(!passwords.verify("", b"secret"));
    }

    #[test]
    fn argon2id_written_by_hash_password_verifies() {
        let hash = hash_password(b"pa:ss word").expect("hashes");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert_ne!(
            hash,
            hash_password(b"pa:ss word").expect("hashes"),
            "fresh salt"
        );
        let passwords = parse(&format!("carol:{hash}")).expect("parses");
        assert!(passwords.verify("carol", b"pa:ss word"));
        assert!(!passwords.verify("carol", b"pa:ss word2"));
        assert!(!passwords.verify("dave", b"pa:ss word"));
    }

    #[test]
    fn comments_blank_lines_and_blanks_around_fields() {
        let text =
            format!("# users\n\n   \n  # indented comment\nalice:{VECTOR}\r\n\tbob : {VECTOR}  \n");
        let passwords = parse(&text).expect("parses");
        assert_eq!(passwords.len(), 2);
        assert!(passwords.verify("alice", b"secret"));
        assert!(passwords.verify("bob", b"secret"));
        assert!(parse("# nothing\n\n").expect("parses").is_empty());
        let empty = parse("").expect("parses");
        assert!(empty.is_empty() && !empty.verify("alice", b"secret"));
    }

    #[test]
    fn the_user_ends_at_the_first_colon() {
        // A colon cannot be in a user name; everything after the first belongs to the hash.
        error_on(
            &format!("a:b:{VECTOR}\n"),
            1,
            "unknown password hash format",
        );
    }

    #[test]
    fn old_mosquitto_format_is_refused_by_line() {
        let text = format!(
            "alice:{VECTOR}\nbob:$6$ZmVR4VRvZ2Qp1Fzj$ZnR0ZXN0aGFzaGZvcnRoZXRlc3Q9PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT0=\n"
        );
        error_on(&text, 2, "$6$");
        error_on("bob:hunter2", 1, "unknown password hash format");
        let error = parse("bob:hunter2").expect_err("plain text");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        error_on(
            "x:$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
            1,
            "only argon2id",
        );
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let ok = format!("alice:{VECTOR}\n# c\n");
        for (bad, needle) in [
            ("no colon here".to_string(), "no ':'"),
            (format!(":{VECTOR}"), "empty user name"),
            (format!("  :{VECTOR}"), "empty user name"),
            ("bob:".to_string(), "no password hash"),
            ("bob:$7$101$AAEC*wQF$AAAA".to_string(), "salt is not base64"),
            ("bob:$7$101$AAECAwQFBgcICQoL$Xr99N9ym9ys8!!".to_string(), "hash is not base64"),
            ("bob:$7$101$AAECAwQFBgcICQoL$AAAA".to_string(), "hash is 3 bytes"),
            ("bob:$7$101$$AAAA".to_string(), "salt is empty"),
            ("bob:$7$101$AAECAwQFBgcICQoL".to_string(), "$7$iterations$salt$hash"),
            (format!("bob:{VECTOR}$extra"), "$7$iterations$salt$hash"),
            (VECTOR.replace("$101$", "$0$").replace("$7$", "bob:$7$"), "iterations"),
            (VECTOR.replace("$101$", "$10000001$").replace("$7$", "bob:$7$"), "iterations"),
            (VECTOR.replace("$101$", "$99999999999$").replace("$7$", "bob:$7$"), "iterations"),
            (VECTOR.replace("$101$", "$+101$").replace("$7$", "bob:$7$"), "iterations"),
            (VECTOR.replace("$101$", "$$").replace("$7$", "bob:$7$"), "iterations"),
            ("bob:$argon2id$v=19$m=19456,t=2,p=1$garbage".to_string(), "argon2id"),
            (
                "bob:$argon2id$v=16$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
                    .to_string(),
                "v=19",
            ),
            (
                "bob:$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
                    .to_string(),
                "memory",
            ),
            (
                "bob:$argon2id$v=19$m=19456,t=1000,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
                    .to_string(),
                "passes",
            ),
        ] {
            error_on(&format!("{ok}{bad}\n"), 3, needle);
        }
    }

    #[test]
    fn a_user_twice_names_both_lines() {
        error_on(
            &format!("alice:{VECTOR}\n\nalice:{VECTOR}\n"),
            3,
            "alice is already on line 1",
        );
    }

    #[test]
    fn an_unreadable_file_is_line_zero() {
        let path = Path::new("/nonexistent/supermq/passwords");
        let error = Passwords::load(path).expect_err("missing file");
        assert_eq!((error.path.as_path(), error.line), (path, 0));
        assert!(error.reason.contains("cannot read"), "{error}");
    }

    #[test]
    fn mosquitto_passwd_file_loads_and_verifies() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mosquitto.passwd");
        let passwords = Passwords::load(&path).expect("loads");
        assert_eq!(passwords.len(), 2);
        assert!(passwords.verify("alice", b"alice-pw"));
        assert!(passwords.verify("bob", b"bob-pw"));
        assert!(!passwords.verify("alice", b"bob-pw"));
        assert!(!passwords.verify("bob", b"alice-pw"));
    }

    #[test]
    fn user_of_line_agrees_with_parse() {
        assert_eq!(Passwords::user_of_line(" alice : $7$x"), Some("alice"));
        assert_eq!(Passwords::user_of_line("# alice:$7$x"), None);
        assert_eq!(Passwords::user_of_line("   "), None);
        assert_eq!(Passwords::user_of_line(":$7$x"), None);
        assert_eq!(Passwords::user_of_line("nocolon"), None);
    }

    #[test]
    fn debug_shows_no_hashes() {
        let passwords = parse(&format!("alice:{VECTOR}")).expect("parses");
        let debug = format!("{passwords:?}");
        assert!(
            !debug.contains("alice") && !debug.contains("Xr99"),
            "{debug}"
        );
    }
}
