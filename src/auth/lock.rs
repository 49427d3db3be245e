//! The lock shared with other programs around read-refresh-write of one credential source.
//!
//! Two gateways (or a gateway and a tool that follows the same protocol) on one credentials
//! file must never refresh the same token: with rotation, the second refresh presents a
//! refresh token the first one has already spent, and one of them loses its credentials. So a
//! refresh runs as: take the lock, re-read the source, adopt what is there if it is newer,
//! else refresh and write back, then release.
//!
//! - **JSON file** (`KIRO_CREDS_FILE`): an advisory exclusive lock (`flock(2)` on Unix,
//!   `LockFileEx` on Windows, through `std::fs::File::try_lock`) on a lock file beside it,
//!   `<file>.lock` (mode 0600, created on first use and never deleted: deleting a lock file
//!   races with the next locker). Not the credentials file itself, because write-back replaces
//!   that file by a rename and a lock on the old inode would protect nothing.
//! - **kiro-cli SQLite** (`KIRO_CLI_DB_FILE`): a `BEGIN IMMEDIATE` transaction, which holds
//!   SQLite's write lock (readers go on) until the merged row is committed. kiro-cli's own
//!   writes wait on its busy timeout meanwhile; a refresh takes well under a second. With
//!   `SQLITE_READONLY` no lock is taken and nothing is written.
//!
//! **Waiting.** The file lock is polled with `try_lock` between `tokio::time::sleep`s, and
//! the SQLite lock is taken on the blocking pool, so no runtime thread is ever blocked and
//! other requests (with a fresh token) keep flowing. After `CREDENTIALS_LOCK_TIMEOUT_SECS`
//! the refresh goes ahead without the lock, with a warning naming the lock file: a holder
//! that hangs must not stop the gateway. That timeout bounds the whole wait: the re-read and
//! the write-back that follow wait on SQLite's busy handler only for what is left of it, so a
//! database kiro-cli keeps locked delays the refresh by the timeout and no more (keep it
//! below `FIRST_TOKEN_TIMEOUT`). A write-back that could not be done then is retried in the
//! background (see `token.rs`); the token is handed out meanwhile. The re-read and retry after a refused refresh
//! (see `token.rs`) covers the race that is then possible.
//!
//! **A crashed holder** cannot wedge anyone: the operating system drops a `flock` lock when
//! the last descriptor of its holder closes, which includes the process dying, and SQLite
//! rolls back a transaction whose connection vanished (its lock goes with the process too).
//!
//! The Kiro IDE and kiro-cli do not know the `.lock` file: against them the gateway relies on
//! re-reading before every refresh and re-reading once more after a refused one.

use std::path::Path;
use std::time::Duration;

use super::source::{self, CredentialSource, Credentials, Rotation};
pub use super::source::{lock_path, open_lock_file};
use super::AuthError;

/// How often a held file lock is tried again.
const POLL: Duration = Duration::from_millis(10);

enum Held {
    /// Nothing to lock (env, API key, read-only database) or the lock was not obtained.
    Nothing,
    /// The locked lock file; closing it releases the lock.
    File(
        #[expect(
            dead_code,
            reason = "held for its lock, which closing the file releases"
        )]
        std::fs::File,
    ),
    /// A connection inside `BEGIN IMMEDIATE`; `None` only while it is on the blocking pool.
    Sqlite(Option<rusqlite::Connection>),
}

/// A held (or, after a timeout, not held) source lock. Dropping it releases the lock; a
/// SQLite transaction not committed by [`SourceLock::persist`] is rolled back.
///
/// Every wait it does (for the lock, then for SQLite locks while re-reading and writing)
/// ends at one deadline, `CREDENTIALS_LOCK_TIMEOUT_SECS` after [`SourceLock::acquire`]
/// began: a database kiro-cli keeps locked delays a refresh by that much in all, never by
/// that plus SQLite's own busy timeouts.
pub struct SourceLock {
    held: Held,
    source: CredentialSource,
    deadline: tokio::time::Instant,
}

impl std::fmt::Debug for SourceLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLock")
            .field("source", &self.source)
            .field("held", &self.is_held())
            .finish()
    }
}

impl SourceLock {
    /// Take the lock of `source`, waiting at most `timeout`.
    pub async fn acquire(source: &CredentialSource, timeout: Duration) -> SourceLock {
        let deadline = tokio::time::Instant::now() + timeout;
        let held = match source {
            CredentialSource::JsonFile { path } => lock_file(path, timeout).await,
            CredentialSource::Sqlite {
                path,
                readonly: false,
                ..
            } => lock_sqlite(path, deadline).await,
            _ => Held::Nothing,
        };
        SourceLock {
            held,
            source: source.clone(),
            deadline,
        }
    }

    /// What is left of the wait this lock was acquired with.
    pub fn remaining(&self) -> Duration {
        self.deadline
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// Whether the lock is actually held.
    pub fn is_held(&self) -> bool {
        !matches!(self.held, Held::Nothing)
    }

    /// What the source holds now (inside the SQLite transaction when there is one).
    pub async fn reread(&mut self) -> Option<Credentials> {
        let busy = self.remaining();
        match (&mut self.held, &self.source) {
            (Held::Sqlite(conn), CredentialSource::Sqlite { token_key, .. }) => {
                let c = conn.take()?;
                let key = token_key.clone();
                let (c, creds) = tokio::task::spawn_blocking(move || {
                    let _ = c.busy_timeout(busy);
                    let creds = source::read_kv(&c, &key).map(|token| {
                        let mut creds = Credentials::default();
                        source::apply_sqlite_token(&token, &mut creds);
                        creds
                    });
                    (c, creds)
                })
                .await
                .ok()?;
                *conn = Some(c);
                creds
            }
            (_, CredentialSource::Env | CredentialSource::ApiKey) => None,
            (_, src) => {
                let src = src.clone();
                tokio::task::spawn_blocking(move || source::reread(&src, busy))
                    .await
                    .ok()
                    .flatten()
            }
        }
    }

    /// Write a rotation back (merged, atomic) and, for SQLite, commit, which ends the lock.
    pub async fn persist(&mut self, rot: &Rotation) -> Result<(), AuthError> {
        let origin = self.source.describe();
        let busy = self.remaining();
        match (&mut self.held, &self.source) {
            (Held::Sqlite(conn), CredentialSource::Sqlite { token_key, .. }) => {
                let Some(c) = conn.take() else {
                    return Err(source::persist_err(
                        &origin,
                        "the database connection was lost",
                    ));
                };
                let (key, rot) = (token_key.clone(), rot.clone());
                let result = tokio::task::spawn_blocking(move || {
                    c.busy_timeout(busy)?;
                    source::merge_sqlite_token(&c, &key, &rot)?;
                    c.execute_batch("COMMIT")
                })
                .await;
                self.held = Held::Nothing;
                match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(source::persist_err(&origin, e)),
                    Err(e) => Err(source::persist_err(&origin, e)),
                }
            }
            (_, src) => {
                let (src, rot) = (src.clone(), rot.clone());
                tokio::task::spawn_blocking(move || source::persist_within(&src, &rot, busy))
                    .await
                    .map_err(|e| source::persist_err(&origin, e))?
            }
        }
    }
}

async fn lock_file(path: &Path, timeout: Duration) -> Held {
    let p = path.to_path_buf();
    let file = match tokio::task::spawn_blocking(move || open_lock_file(&p)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            tracing::warn!(
                lock = %lock_path(path).display(),
                error = %e,
                "cannot create the credentials lock file; refreshing without it (another gateway on the same file may then refresh at the same time)"
            );
            return Held::Nothing;
        }
        Err(_) => return Held::Nothing,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match file.try_lock() {
            Ok(()) => return Held::File(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    tracing::warn!(
                        lock = %lock_path(path).display(),
                        "another process has held the credentials lock for more than {timeout:?} (CREDENTIALS_LOCK_TIMEOUT_SECS); refreshing without it"
                    );
                    return Held::Nothing;
                }
                tokio::time::sleep(POLL.min(deadline - now)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!(
                    lock = %lock_path(path).display(),
                    error = %e,
                    "cannot lock the credentials lock file; refreshing without it"
                );
                return Held::Nothing;
            }
        }
    }
}

async fn lock_sqlite(path: &Path, deadline: tokio::time::Instant) -> Held {
    let p = path.to_path_buf();
    let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
    let result = tokio::task::spawn_blocking(move || {
        // the busy handler is the wait for the lock: on the blocking pool, never a runtime
        // thread
        let conn = source::open_db(&p, "", false, timeout).map_err(|e| e.to_string())?;
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(conn)
    })
    .await;
    match result {
        Ok(Ok(conn)) => Held::Sqlite(Some(conn)),
        Ok(Err(e)) => {
            tracing::warn!(
                db = %path.display(),
                error = %e,
                "could not take the kiro-cli database's write lock within {timeout:?} (CREDENTIALS_LOCK_TIMEOUT_SECS); refreshing without it"
            );
            Held::Nothing
        }
        Err(_) => Held::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_file_lock_times_out_with_nothing_held_and_frees_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiro-auth-token.json");
        std::fs::write(&path, "{}").unwrap();
        let src = CredentialSource::JsonFile { path: path.clone() };
        let first = SourceLock::acquire(&src, Duration::from_secs(1)).await;
        assert!(first.is_held());
        assert!(lock_path(&path).exists());
        let t0 = tokio::time::Instant::now();
        let second = SourceLock::acquire(&src, Duration::from_millis(100)).await;
        assert!(!second.is_held(), "the lock is exclusive");
        assert!(t0.elapsed() >= Duration::from_millis(100));
        drop(first);
        let third = SourceLock::acquire(&src, Duration::from_millis(100)).await;
        assert!(third.is_held(), "released when dropped");
    }
}
