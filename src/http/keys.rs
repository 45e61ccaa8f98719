//! API keys: who may use the admin API, and as what (`http.api_keys`).
//!
//! A key is `name:role:hash`: the role is `admin` (every method) or `viewer` (GET only), the
//! hash that of the key's secret in the password file's formats (mosquitto's `$7$` PBKDF2 or
//! argon2id, see [`crate::auth::Passwords`]), so one tool (`supermq passwd`) makes both. A
//! client sends `Authorization: Bearer name:secret`.
//!
//! Checking a secret costs what a password check costs (tens of milliseconds of CPU), too
//! much for every request of a dashboard or a Prometheus scrape. A successful check is
//! remembered by a SHA-256 digest of the presented `name:secret` (bounded, [`REMEMBERED`]);
//! a failed one is not, and at most [`CHECKS_AT_ONCE`] run at a time on blocking threads, so a
//! flood of wrong keys costs two cores' worth of hashing at most and nothing else waits on it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use ring::digest;
use tokio::sync::Semaphore;

use crate::auth::Passwords;

/// Successful checks remembered; past it the memory starts over.
const REMEMBERED: usize = 256;

/// Secret checks that run at once.
const CHECKS_AT_ONCE: usize = 2;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every method.
    Admin,
    /// GET only.
    Viewer,
}

/// Why `http.api_keys` is malformed.
#[derive(Debug, thiserror::Error)]
#[error("entry {entry}: {why}")]
pub struct KeyError {
    /// 1-based position in the list.
    entry: usize,
    why: String,
}

/// The configured keys.
pub struct ApiKeys {
    roles: HashMap<String, Role>,
    hashes: Arc<Passwords>,
    remembered: Mutex<HashMap<[u8; 32], Role>>,
    checks: Arc<Semaphore>,
}

impl ApiKeys {
    /// Parses `http.api_keys`.
    pub fn parse(entries: &[String]) -> Result<ApiKeys, KeyError> {
        let mut roles = HashMap::new();
        let mut lines = String::new();
        for (i, entry) in entries.iter().enumerate() {
            let error = |why: &str| KeyError {
                entry: i + 1,
                why: why.to_string(),
            };
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(role), Some(hash)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(error("is not \"name:role:hash\""));
            };
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(error(
                    "the name is empty or has spaces or control characters",
                ));
            }
            let role = match role {
                "admin" => Role::Admin,
                "viewer" => Role::Viewer,
                _ => return Err(error("the role is neither \"admin\" nor \"viewer\"")),
            };
            if roles.insert(name.to_string(), role).is_some() {
                return Err(error("the name is used by an earlier entry"));
            }
            lines.push_str(name);
            lines.push(':');
            lines.push_str(hash);
            lines.push('\n');
        }
        let hashes =
            Passwords::parse(Path::new("http.api_keys"), &lines).map_err(|e| KeyError {
                entry: e.line,
                why: e.reason,
            })?;
        Ok(ApiKeys {
            roles,
            hashes: Arc::new(hashes),
            remembered: Mutex::new(HashMap::new()),
            checks: Arc::new(Semaphore::new(CHECKS_AT_ONCE)),
        })
    }

    /// Whether any key is configured (without any, the API asks for none).
    pub fn any(&self) -> bool {
        !self.roles.is_empty()
    }

    /// The role of the key presented as `name:secret`, if the secret is right.
    pub async fn check(&self, presented: &str) -> Option<Role> {
        let (name, secret) = presented.split_once(':')?;
        let role = *self.roles.get(name)?;
        let digest = fingerprint(presented);
        if self.remembered().get(&digest) == Some(&role) {
            return Some(role);
        }
        let _turn = self.checks.acquire().await.ok()?;
        let hashes = Arc::clone(&self.hashes);
        let (name, secret) = (name.to_string(), secret.as_bytes().to_vec());
        let right = tokio::task::spawn_blocking(move || hashes.verify(&name, &secret))
            .await
            .unwrap_or(false);
        if !right {
            return None;
        }
        let mut remembered = self.remembered();
        if remembered.len() >= REMEMBERED {
            remembered.clear();
        }
        remembered.insert(digest, role);
        Some(role)
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Role>> {
        self.remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn fingerprint(presented: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, presented.as_bytes()).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash_password;

    #[test]
    fn malformed_entries_are_refused_with_their_position() {
        let hash = hash_password(b"s3cret").expect("hash");
        for (entries, says) in [
            (vec!["nohash".to_string()], "entry 1"),
            (vec![format!("a:root:{hash}")], "role"),
            (
                vec![format!("a:admin:{hash}"), format!("a:viewer:{hash}")],
                "entry 2",
            ),
            (vec![format!(" :admin:{hash}")], "name"),
            (vec!["a:admin:$7$nonsense".to_string()], "entry 1"),
        ] {
            let error = ApiKeys::parse(&entries).err().expect("refused").to_string();
            assert!(error.contains(says), "{error}");
        }
    }

    #[tokio::test]
    async fn a_key_is_checked_then_remembered_and_a_wrong_one_is_not() {
        let hash = hash_password(b"s3cret").expect("hash");
        let keys = ApiKeys::parse(&[format!("ops:admin:{hash}"), format!("ro:viewer:{hash}")])
            .expect("parses");
        assert!(keys.any());
        assert_eq!(keys.check("ops:s3cret").await, Some(Role::Admin));
        assert_eq!(keys.check("ro:s3cret").await, Some(Role::Viewer));
        assert_eq!(keys.check("ops:wrong").await, None);
        assert_eq!(keys.check("nobody:s3cret").await, None);
        assert_eq!(keys.check("no colon").await, None);
        assert_eq!(keys.remembered().len(), 2, "only the right ones");
        assert_eq!(keys.check("ops:s3cret").await, Some(Role::Admin));
    }
}
