//! Teachers' accounts: who may sign in to the portal, with which role, and
//! the sessions and personal API tokens that prove it.
//!
//! # Layout
//!
//! - [`store`]: accounts, sessions and tokens in an SQLite file under the
//!   portal's data directory (shared by every portal on the machine, and by
//!   `gradebook users`).
//! - [`secret`]: Argon2id password hashes, random bearer secrets and their digests.
//! - [`throttle`]: the failed-login limits, per account and per address.

pub mod secret;
pub mod store;
pub mod throttle;

use std::fmt;
use std::str::FromStr;

pub use store::AccountStore;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads and writes students and grades.
    Teacher,
    /// A teacher who may also see the mesh: services, logs, traces.
    Admin,
}

impl Role {
    /// The role's name, as stored and typed.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Teacher => "teacher",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AccountsError;

    fn from_str(text: &str) -> Result<Self, AccountsError> {
        match text {
            "teacher" => Ok(Role::Teacher),
            "admin" => Ok(Role::Admin),
            other => Err(AccountsError::Invalid(format!(
                "role: {other:?} is neither teacher nor admin"
            ))),
        }
    }
}

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The account name.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl User {
    /// Whether the user may see the mesh's operations pages.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// Input the store refuses; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// `users add` of a name that exists.
    #[error("the account {0:?} exists already")]
    Exists(String),
    /// An account that does not exist.
    #[error("no account {0:?}")]
    NoSuchUser(String),
    /// The system's random generator failed.
    #[error("the system's random number generator failed")]
    Random,
    /// Hashing a password failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// The database failed.
    #[error("the accounts database: {0}")]
    Database(#[from] rusqlite::Error),
    /// The database file or its directory cannot be used.
    #[error("the accounts database at {path}: {source}")]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// Checks an account name: 1 to 64 of lowercase letters, digits, `.`, `-`, `_`.
pub fn validate_name(name: &str) -> Result<(), AccountsError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AccountsError::Invalid(format!(
            "name: {name:?} must be 1 to 64 lowercase letters, digits, '.', '-' or '_'"
        )))
    }
}
