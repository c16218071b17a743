//! [`KeyStore`]: the keys file of a running node, reloaded without a restart.
//!
//! The file is read at start (a missing or malformed file stops the node from starting,
//! naming the line), then again on SIGHUP and whenever its contents change (checked
//! every [`POLL_INTERVAL`]: portable, and cheap for a file of a few lines). A reload
//! that finds the file malformed or unreadable keeps the keys it had and logs why at
//! `warn`; a good one swaps them in at once — a revoked key is refused by the next
//! request.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::keys::{Keys, KeysError, Principal};

/// How often the file is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The keys file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read keys file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("keys file {path}, {source}")]
    Malformed { path: PathBuf, source: KeysError },
}

/// The current keys, and where they come from.
pub struct KeyStore {
    path: PathBuf,
    state: RwLock<Loaded>,
}

struct Loaded {
    keys: Arc<Keys>,
    /// SHA-256 of the text the keys were parsed from (or last refused), so a poll
    /// reloads only a changed file and logs a bad one once.
    digest: [u8; 32],
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The file is as it was.
    Unchanged,
    /// New keys are in force; the number of applications.
    Loaded(usize),
    /// The file changed but is unusable; the old keys stay.
    Kept(String),
}

fn read(path: &Path) -> Result<(String, [u8; 32]), KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let digest = Sha256::digest(text.as_bytes()).into();
    Ok((text, digest))
}

impl KeyStore {
    /// Reads and parses `path`; an error names the file and the line.
    pub fn open(path: &Path) -> Result<KeyStore, KeyFileError> {
        let (text, digest) = read(path)?;
        let keys = Keys::parse(&text).map_err(|source| KeyFileError::Malformed {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(KeyStore {
            path: path.to_path_buf(),
            state: RwLock::new(Loaded {
                keys: Arc::new(keys),
                digest,
            }),
        })
    }

    /// The keys in force now.
    pub fn keys(&self) -> Arc<Keys> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .clone()
    }

    /// The application whose API key is `key`, if any.
    pub fn authenticate(&self, key: &str) -> Option<Principal> {
        self.keys().authenticate(key)
    }

    /// The application named `app`, if the keys file lists it.
    pub fn by_name(&self, app: &str) -> Option<Principal> {
        self.keys().by_name(app)
    }

    /// Reads the file again; `force` reloads it even if unchanged (SIGHUP).
    pub fn reload(&self, force: bool) -> Reload {
        let outcome = read(&self.path).and_then(|(text, digest)| {
            // Every writer replaces whole values, so a poisoned lock still holds valid keys.
            let unchanged = self
                .state
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .digest
                == digest;
            if unchanged && !force {
                return Ok(Reload::Unchanged);
            }
            let parsed = Keys::parse(&text).map_err(|source| KeyFileError::Malformed {
                path: self.path.clone(),
                source,
            });
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            state.digest = digest;
            let keys = parsed?;
            let n = keys.len();
            state.keys = Arc::new(keys);
            Ok(Reload::Loaded(n))
        });
        outcome.unwrap_or_else(|e| Reload::Kept(e.to_string()))
    }

    /// Reloads on SIGHUP and when the file changes, for as long as the task runs (the
    /// node's task set stops it at shutdown); logs each
    /// reload (`info`) and each refused file (`warn`, once per change).
    pub async fn watch(self: Arc<Self>) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the keys file is still reloaded when it changes");
                None
            }
        };
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            match self.reload(force) {
                Reload::Unchanged => {}
                Reload::Loaded(apps) => {
                    tracing::info!(apps, path = %self.path.display(), "keys file reloaded")
                }
                Reload::Kept(why) => {
                    tracing::warn!("{why}; keeping the keys loaded before")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::hash_field;

    fn line(app: &str, key: &str) -> String {
        format!("{app} {} lock=*\n", hash_field(key))
    }

    #[test]
    fn a_reload_grants_and_revokes_and_a_bad_file_keeps_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, line("a", "ka")).unwrap();
        let store = KeyStore::open(&path).unwrap();
        assert!(store.authenticate("ka").is_some());
        assert_eq!(store.reload(false), Reload::Unchanged);

        std::fs::write(&path, line("b", "kb")).unwrap();
        assert_eq!(store.reload(false), Reload::Loaded(1));
        assert!(store.authenticate("ka").is_none(), "revoked");
        assert!(store.authenticate("kb").is_some(), "granted");

        std::fs::write(&path, "b nonsense\n").unwrap();
        let Reload::Kept(why) = store.reload(false) else {
            panic!("a malformed file must be refused")
        };
        assert!(why.contains("line 1"), "{why}");
        assert!(store.authenticate("kb").is_some(), "old keys kept");
        assert_eq!(
            store.reload(false),
            Reload::Unchanged,
            "refused once per change"
        );

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(store.reload(true), Reload::Kept(_)));
        assert!(store.authenticate("kb").is_some());
    }

    #[test]
    fn a_missing_or_malformed_file_fails_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        assert!(matches!(
            KeyStore::open(&path),
            Err(KeyFileError::Read { .. })
        ));
        std::fs::write(&path, "x\n").unwrap();
        let err = KeyStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
