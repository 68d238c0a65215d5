//! Accounts, sessions and personal API tokens in one SQLite file,
//! `DIR/accounts.sqlite3` (WAL, so several portals on one machine and the
//! `gradebook users` tool share it). Secrets are stored as digests only.
//! Calls block briefly (one short transaction each; a sign-in also hashes a
//! password): async callers run them on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};

use crate::portal::accounts::secret::{self, digest};
use crate::portal::accounts::{AccountsError, Role, User, validate_name};

/// The file under the portal's data directory.
pub const FILE: &str = "accounts.sqlite3";
/// How long a browser session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The name of the account created at first start.
pub const FIRST_ADMIN: &str = "admin";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    digest TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('session', 'token')),
    user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    expires_at INTEGER
);
";

/// What a bearer secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// A browser session's cookie.
    Session,
    /// A personal API token (`Authorization: Bearer`).
    Token,
}

impl SecretKind {
    fn as_str(self) -> &'static str {
        match self {
            SecretKind::Session => "session",
            SecretKind::Token => "token",
        }
    }
}

/// The accounts database.
#[derive(Debug)]
pub struct AccountStore {
    connection: Mutex<Connection>,
    path: PathBuf,
}

fn unix(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl AccountStore {
    /// Opens (creating if needed) the accounts database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, AccountsError> {
        std::fs::create_dir_all(dir).map_err(|source| AccountsError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE);
        let connection = Connection::open(&path)?;
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.execute_batch(SCHEMA)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(AccountStore {
            connection: Mutex::new(connection),
            path,
        })
    }

    /// Where the database is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an account; refuses a name that exists.
    pub fn add_user(&self, name: &str, role: Role, password: &str) -> Result<(), AccountsError> {
        validate_name(name)?;
        let hash = secret::hash_password(password)?;
        let inserted = self.lock().execute(
            "INSERT INTO users (name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
            params![name, role.as_str(), hash, unix(SystemTime::now())],
        )?;
        if inserted == 0 {
            return Err(AccountsError::Exists(name.to_owned()));
        }
        Ok(())
    }

    /// Sets an account's password and ends its sessions.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), AccountsError> {
        let hash = secret::hash_password(password)?;
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let updated = transaction.execute(
            "UPDATE users SET password_hash = ?2 WHERE name = ?1",
            params![name, hash],
        )?;
        if updated == 0 {
            return Err(AccountsError::NoSuchUser(name.to_owned()));
        }
        transaction.execute(
            "DELETE FROM secrets WHERE user_name = ?1 AND kind = 'session'",
            params![name],
        )?;
        transaction.commit()?;
        Ok(())
    }

    /// How many accounts there are.
    pub fn user_count(&self) -> Result<u64, AccountsError> {
        Ok(self
            .lock()
            .query_row("SELECT COUNT(*) FROM users", [], |row| row.get::<_, i64>(0))?
            as u64)
    }

    /// On an empty database, creates the first admin account with a random
    /// password and returns it (to be shown once); otherwise `None`.
    pub fn bootstrap_admin(&self) -> Result<Option<(String, String)>, AccountsError> {
        if self.user_count()? > 0 {
            return Ok(None);
        }
        let password = secret::new_password()?;
        match self.add_user(FIRST_ADMIN, Role::Admin, &password) {
            Ok(()) => Ok(Some((FIRST_ADMIN.to_owned(), password))),
            // Another portal or `up` made it first.
            Err(AccountsError::Exists(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// The user whose password this is, if it is.
    pub fn verify_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<User>, AccountsError> {
        let row: Option<(String, String)> = self
            .lock()
            .query_row(
                "SELECT role, password_hash FROM users WHERE name = ?1",
                params![name],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        // Hash outside the lock: it takes tens of milliseconds.
        let Some((role, hash)) = row else {
            // The same work for an unknown name, so timing does not tell.
            let _ = secret::verify_password(password, dummy_hash());
            return Ok(None);
        };
        if !secret::verify_password(password, &hash) {
            return Ok(None);
        }
        Ok(Some(User {
            name: name.to_owned(),
            role: role.parse()?,
        }))
    }

    /// A new secret of `kind` for `name` (a session ends after
    /// [`SESSION_LIFETIME`]; a token lasts until revoked).
    pub fn new_secret(
        &self,
        name: &str,
        kind: SecretKind,
        now: SystemTime,
    ) -> Result<String, AccountsError> {
        let secret = secret::new_secret()?;
        let expires = match kind {
            SecretKind::Session => Some(unix(now + SESSION_LIFETIME)),
            SecretKind::Token => None,
        };
        let inserted = self.lock().execute(
            "INSERT INTO secrets (digest, kind, user_name, expires_at)
             SELECT ?1, ?2, name, ?3 FROM users WHERE name = ?4",
            params![digest(&secret), kind.as_str(), expires, name],
        )?;
        if inserted == 0 {
            return Err(AccountsError::NoSuchUser(name.to_owned()));
        }
        Ok(secret)
    }

    /// The user a secret of `kind` belongs to, if it is valid at `now`.
    pub fn authenticate(
        &self,
        secret: &str,
        kind: SecretKind,
        now: SystemTime,
    ) -> Result<Option<User>, AccountsError> {
        let row: Option<(String, String)> = self
            .lock()
            .query_row(
                "SELECT users.name, users.role FROM secrets JOIN users ON users.name = secrets.user_name
                 WHERE secrets.digest = ?1 AND secrets.kind = ?2
                   AND (secrets.expires_at IS NULL OR secrets.expires_at > ?3)",
                params![digest(secret), kind.as_str(), unix(now)],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        row.map(|(name, role)| {
            Ok(User {
                name,
                role: role.parse()?,
            })
        })
        .transpose()
    }

    /// Ends a session (or revokes a token); whether it existed.
    pub fn revoke(&self, secret: &str) -> Result<bool, AccountsError> {
        Ok(self.lock().execute(
            "DELETE FROM secrets WHERE digest = ?1",
            params![digest(secret)],
        )? > 0)
    }

    /// Deletes expired sessions; how many went.
    pub fn prune(&self, now: SystemTime) -> Result<usize, AccountsError> {
        Ok(self.lock().execute(
            "DELETE FROM secrets WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            params![unix(now)],
        )?)
    }
}

/// An Argon2id hash of a random password nobody knows, verified against
/// for unknown account names (made once per process).
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        secret::new_password()
            .and_then(|password| secret::hash_password(&password))
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_sign_in_and_hold_sessions_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccountStore::open(dir.path()).unwrap();
        let (name, password) = store.bootstrap_admin().unwrap().unwrap();
        assert_eq!(name, FIRST_ADMIN);
        assert!(store.bootstrap_admin().unwrap().is_none(), "once");
        let admin = store.verify_password(&name, &password).unwrap().unwrap();
        assert!(admin.is_admin());
        assert!(
            store
                .verify_password(&name, "wrong password")
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .verify_password("nobody", &password)
                .unwrap()
                .is_none()
        );

        store
            .add_user("ada", Role::Teacher, "analytical engine")
            .unwrap();
        assert!(matches!(
            store.add_user("ada", Role::Admin, "another one"),
            Err(AccountsError::Exists(_))
        ));
        assert!(
            store
                .add_user("Bad Name", Role::Teacher, "long enough")
                .is_err()
        );

        let now = SystemTime::now();
        let session = store.new_secret("ada", SecretKind::Session, now).unwrap();
        let token = store.new_secret("ada", SecretKind::Token, now).unwrap();
        let ada = store
            .authenticate(&session, SecretKind::Session, now)
            .unwrap()
            .unwrap();
        assert_eq!((ada.name.as_str(), ada.role), ("ada", Role::Teacher));
        assert!(
            store
                .authenticate(&token, SecretKind::Token, now)
                .unwrap()
                .is_some()
        );
        // A token is not a session cookie, nor the other way round.
        assert!(
            store
                .authenticate(&token, SecretKind::Session, now)
                .unwrap()
                .is_none()
        );
        // Sessions expire; tokens do not.
        let later = now + SESSION_LIFETIME + Duration::from_secs(1);
        assert!(
            store
                .authenticate(&session, SecretKind::Session, later)
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .authenticate(&token, SecretKind::Token, later)
                .unwrap()
                .is_some()
        );
        assert_eq!(store.prune(later).unwrap(), 1);
        // Logging out ends a session; a new password ends them all.
        let session = store.new_secret("ada", SecretKind::Session, now).unwrap();
        assert!(store.revoke(&session).unwrap());
        assert!(
            store
                .authenticate(&session, SecretKind::Session, now)
                .unwrap()
                .is_none()
        );
        let session = store.new_secret("ada", SecretKind::Session, now).unwrap();
        store.set_password("ada", "difference engine").unwrap();
        assert!(
            store
                .authenticate(&session, SecretKind::Session, now)
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .verify_password("ada", "difference engine")
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            store.new_secret("nobody", SecretKind::Token, now),
            Err(AccountsError::NoSuchUser(_))
        ));
    }
}
