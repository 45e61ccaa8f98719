//! Who may connect and what they may do: the password file, the ACL file, and the rules
//! currently in force.
//!
//! [`Auth`] holds the rules of `[auth]`. The broker asks it three things: may this CONNECT
//! in ([`Auth::authenticate`]), and, through the client's [`Access`], may it publish to a
//! topic, subscribe to a filter, receive a message ([`Auth::may_publish`],
//! [`Auth::may_subscribe`], [`Auth::may_read`]). Both files are read at start-up and again on
//! SIGHUP ([`Auth::reload`]). A file that cannot be read or parsed stops start-up and, on
//! reload, keeps the previous rules in force: a broken reload never opens the broker.
//!
//! Checking a password is deliberately slow (argon2id, PBKDF2), so it runs on tokio's
//! blocking threads, a few at a time, and failures per source address are throttled
//! ([`throttle`]). ACL checks are on the publish path: each client's rules are compiled once
//! per client and reload ([`acl::ClientRules`]), and the last topic's answer is kept, so a
//! client that publishes to (or receives) one topic again and again is answered from that.

mod acl;
mod password;
mod throttle;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Instant;

use bytes::Bytes;

use crate::config::AuthConfig;

pub use acl::{Acl, ClientRules};
pub use password::{HashError, Passwords, hash_password};
use throttle::{Throttle, Turn};

/// Password checks that run at once; more wait their turn. A check takes tens of
/// milliseconds of a core, so a flood of CONNECTs with passwords cannot take every core.
const CHECKS_AT_ONCE: usize = 2;

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

/// What a CONNECT brings to prove who it is.
#[derive(Debug, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// The subject CN of the client's TLS certificate, when it presented one.
    pub certificate_name: Option<String>,
}

/// Why a CONNECT was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Unknown user or wrong password (5.0: 0x86, 3.1.1: 0x04).
    BadCredentials,
    /// No user name while anonymous clients are not allowed (5.0: 0x87, 3.1.1: 0x05).
    Anonymous,
}

/// The rules read from the files, replaced as a whole on reload.
#[derive(Default)]
struct Rules {
    passwords: Option<Arc<Passwords>>,
    acl: Option<Acl>,
}

/// The authentication and authorization rules in force.
pub struct Auth {
    allow_anonymous: bool,
    /// `tls.use_identity_as_username`.
    certificate_names: bool,
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    rules: RwLock<Arc<Rules>>,
    /// Bumped on every reload, so compiled client rules know they are stale.
    generation: AtomicU64,
    /// An ACL is in force: without one every check is one load of this.
    acl_on: AtomicBool,
    throttle: Option<Throttle>,
    checks: tokio::sync::Semaphore,
}

impl Default for Auth {
    /// Everyone in, everything allowed: the rules of an empty `[auth]`.
    fn default() -> Self {
        Auth::new(&AuthConfig::default(), false, Rules::default())
    }
}

impl Auth {
    /// Reads the files `config` names. `certificate_names`: a client's TLS certificate
    /// name is its user name (`tls.use_identity_as_username`).
    pub fn load(config: &AuthConfig, certificate_names: bool) -> Result<Auth, FileError> {
        let auth = Auth::new(config, certificate_names, Rules::default());
        let rules = auth.read_files()?;
        auth.install(rules);
        Ok(auth)
    }

    fn new(config: &AuthConfig, certificate_names: bool, rules: Rules) -> Auth {
        let path = |file: &str| (!file.is_empty()).then(|| PathBuf::from(file));
        Auth {
            allow_anonymous: config.allow_anonymous,
            certificate_names,
            password_file: path(&config.password_file),
            acl_file: path(&config.acl_file),
            acl_on: AtomicBool::new(rules.acl.is_some()),
            rules: RwLock::new(Arc::new(rules)),
            generation: AtomicU64::new(0),
            throttle: Throttle::new(config.failed_auth_per_ip_per_sec),
            checks: tokio::sync::Semaphore::new(CHECKS_AT_ONCE),
        }
    }

    /// Re-reads both files and puts their rules in force; on error the previous rules stay.
    pub fn reload(&self) -> Result<(), FileError> {
        let rules = self.read_files()?;
        self.install(rules);
        Ok(())
    }

    /// Whether a password file is in force (for the start-up warning about open brokers).
    pub fn checks_passwords(&self) -> bool {
        self.password_file.is_some()
    }

    pub fn allows_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    fn read_files(&self) -> Result<Rules, FileError> {
        let passwords = match &self.password_file {
            Some(path) => Some(Arc::new(Passwords::load(path)?)),
            None => None,
        };
        let acl = match &self.acl_file {
            Some(path) => Some(Acl::load(path)?),
            None => None,
        };
        if let (Some(path), Some(passwords)) = (&self.password_file, &passwords) {
            tracing::info!(file = %path.display(), users = passwords.len(), "password file read");
        }
        if let (Some(path), Some(acl)) = (&self.acl_file, &acl) {
            tracing::info!(file = %path.display(), rules = acl.rule_count(), "ACL file read");
        }
        Ok(Rules { passwords, acl })
    }

    fn install(&self, rules: Rules) {
        let acl_on = rules.acl.is_some();
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
        self.acl_on.store(acl_on, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn rules(&self) -> Arc<Rules> {
        Arc::clone(&self.rules.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Decides whether a CONNECT from `peer` may in; returns the user name it connects as.
    /// Each refusal is logged with the address and user name (never the password).
    pub async fn authenticate(
        &self,
        peer: IpAddr,
        credentials: Credentials,
    ) -> Result<Option<String>, Denied> {
        if self.certificate_names
            && let Some(name) = credentials.certificate_name
        {
            // The certificate, verified against `tls.client_ca`, is the proof.
            return Ok(Some(name));
        }
        let rules = self.rules();
        let Some(username) = credentials.username else {
            if !self.allow_anonymous {
                tracing::info!(%peer, "CONNECT without a user name refused (auth.allow_anonymous = false)");
                return Err(Denied::Anonymous);
            }
            if credentials.password.is_some() && rules.passwords.is_some() {
                // A password for no user cannot be checked (5.0 allows sending one).
                tracing::info!(%peer, "CONNECT with a password but no user name refused");
                return Err(Denied::BadCredentials);
            }
            return Ok(None);
        };
        let Some(passwords) = rules.passwords.clone() else {
            return Ok(Some(username));
        };
        let password = credentials.password.unwrap_or_default();
        let right = loop {
            if !self.may_try(peer).await {
                tracing::warn!(%peer, user = %username, "authentication refused unchecked: too many failures from this address (auth.failed_auth_per_ip_per_sec)");
                return Err(Denied::BadCredentials);
            }
            // Closed never; a failed acquire would only mean no limit.
            let turn = self.checks.acquire().await;
            // Asked again with a place held: attempts that waited side by side for a place
            // must not all be checked on the strength of one look at an empty bucket.
            if !self.must_wait(peer) {
                let (passwords, user, password) =
                    (Arc::clone(&passwords), username.clone(), password.clone());
                let right = tokio::task::spawn_blocking(move || passwords.verify(&user, &password))
                    .await
                    .unwrap_or(false);
                drop(turn);
                break right;
            }
        };
        if right {
            Ok(Some(username))
        } else {
            if let Some(throttle) = &self.throttle {
                throttle.failed(peer, Instant::now());
            }
            tracing::warn!(%peer, user = %username, "bad user name or password");
            Err(Denied::BadCredentials)
        }
    }

    /// Waits until an attempt from `peer` may be checked; false if it would wait too long.
    async fn may_try(&self, peer: IpAddr) -> bool {
        let Some(throttle) = &self.throttle else {
            return true;
        };
        match throttle.wait(peer, Instant::now()) {
            Turn::Refuse => false,
            Turn::After(wait) => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                true
            }
        }
    }

    /// True if an attempt from `peer` would have to wait now.
    fn must_wait(&self, peer: IpAddr) -> bool {
        self.throttle.as_ref().is_some_and(|throttle| {
            throttle.wait(peer, Instant::now()) != Turn::After(std::time::Duration::ZERO)
        })
    }

    /// May the client publish to `topic`?
    pub fn may_publish(&self, access: &Access, topic: &str) -> bool {
        !self.acl_on.load(Ordering::Acquire) || access.decide(self, Ask::Publish, topic)
    }

    /// May the client receive a message published to `topic`?
    pub fn may_read(&self, access: &Access, topic: &str) -> bool {
        !self.acl_on.load(Ordering::Acquire) || access.decide(self, Ask::Read, topic)
    }

    /// May the client subscribe to `filter` (a group's filter without its prefix)?
    pub fn may_subscribe(&self, access: &Access, filter: &str) -> bool {
        !self.acl_on.load(Ordering::Acquire) || access.decide(self, Ask::Subscribe, filter)
    }
}

#[derive(Clone, Copy)]
enum Ask {
    Publish,
    Read,
    Subscribe,
}

/// One client as the ACL sees it: its client id and user name, and its rules compiled for
/// the ACL in force (made on the first check, remade after a reload).
pub struct Access {
    client_id: Arc<str>,
    username: Option<Arc<str>>,
    /// Boxed: most brokers have no ACL, and a session keeps this for its whole life.
    compiled: Mutex<Option<Box<Compiled>>>,
}

struct Compiled {
    generation: u64,
    rules: ClientRules,
    /// The last topic published to, and the answer.
    published: Option<(Box<str>, bool)>,
    /// The last topic a message was read from, and the answer.
    read: Option<(Box<str>, bool)>,
}

impl Access {
    pub fn new(client_id: Arc<str>, username: Option<Arc<str>>) -> Access {
        Access {
            client_id,
            username,
            compiled: Mutex::new(None),
        }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn client_id_shared(&self) -> Arc<str> {
        Arc::clone(&self.client_id)
    }

    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    fn decide(&self, auth: &Auth, ask: Ask, topic: &str) -> bool {
        let generation = auth.generation.load(Ordering::Acquire);
        let mut compiled = self.compiled();
        let fresh = compiled
            .as_ref()
            .is_some_and(|c| c.generation == generation);
        if !fresh {
            let rules = auth.rules();
            // Between the load and now a reload could have installed no ACL at all.
            let Some(acl) = &rules.acl else {
                return true;
            };
            *compiled = Some(Box::new(Compiled {
                generation,
                rules: acl.rules_for(&self.client_id, self.username.as_deref()),
                published: None,
                read: None,
            }));
        }
        let Some(compiled) = compiled.as_mut() else {
            return false;
        };
        let Compiled {
            rules,
            published,
            read,
            ..
        } = &mut **compiled;
        let (last, check): (_, fn(&ClientRules, &str) -> bool) = match ask {
            Ask::Subscribe => return rules.may_subscribe(topic),
            Ask::Publish => (published, ClientRules::may_publish),
            Ask::Read => (read, ClientRules::may_read),
        };
        if let Some((seen, answer)) = last
            && **seen == *topic
        {
            return *answer;
        }
        let answer = check(rules, topic);
        *last = Some((topic.into(), answer));
        answer
    }

    fn compiled(&self) -> MutexGuard<'_, Option<Box<Compiled>>> {
        self.compiled.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A client id and user name for logs: the file paths are enough for the rest.
impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .finish()
    }
}
