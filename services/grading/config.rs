//! Which storage engine the grading daemon uses, read from
//! `--database-url` (`GRADEBOOK_DATABASE_URL`) and `--data-dir` in one
//! place: no URL means SQLite under the data directory; a `postgres://` or
//! `postgresql://` URL means PostgreSQL; anything else is refused.

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The database file's name under the data directory.
pub const DATABASE_FILE: &str = "grading.db";
/// The URL schemes that select PostgreSQL.
pub const POSTGRES_SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// Where the grading store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// An embedded SQLite file.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// A PostgreSQL database, shared by every instance that uses it.
    Postgres {
        /// The connection URL (may hold a password: never logged).
        url: String,
    },
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseConfig::Sqlite { path } => {
                f.debug_struct("Sqlite").field("path", path).finish()
            }
            DatabaseConfig::Postgres { .. } => f.debug_struct("Postgres").finish_non_exhaustive(),
        }
    }
}

/// A `--database-url` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--database-url: {0}")]
pub struct DatabaseUrlError(String);

impl DatabaseConfig {
    /// The engine for `database_url` (absent or empty: SQLite in
    /// `data_dir`).
    pub fn new(database_url: Option<&str>, data_dir: &Path) -> Result<Self, DatabaseUrlError> {
        let Some(url) = database_url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(DatabaseConfig::Sqlite {
                path: data_dir.join(DATABASE_FILE),
            });
        };
        if !POSTGRES_SCHEMES
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(DatabaseUrlError(
                "must be a postgres:// or postgresql:// URL (leave it out for SQLite under --data-dir)"
                    .into(),
            ));
        }
        tokio_postgres::Config::from_str(url)
            .map_err(|e| DatabaseUrlError(format!("not a valid PostgreSQL URL: {e}")))?;
        Ok(DatabaseConfig::Postgres {
            url: url.to_owned(),
        })
    }

    /// What to call the database in logs, without credentials.
    pub fn describe(&self) -> String {
        match self {
            DatabaseConfig::Sqlite { path } => format!("sqlite:{}", path.display()),
            DatabaseConfig::Postgres { url } => match tokio_postgres::Config::from_str(url) {
                Ok(config) => {
                    let hosts: Vec<String> = config
                        .get_hosts()
                        .iter()
                        .map(|host| match host {
                            tokio_postgres::config::Host::Tcp(name) => name.clone(),
                            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                        })
                        .collect();
                    format!(
                        "postgres:{}/{}",
                        hosts.join(","),
                        config.get_dbname().unwrap_or_default()
                    )
                }
                Err(_) => "postgres".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_picks_the_engine() {
        let dir = Path::new("/data");
        assert_eq!(
            DatabaseConfig::new(None, dir).unwrap(),
            DatabaseConfig::Sqlite {
                path: dir.join(DATABASE_FILE)
            }
        );
        assert_eq!(
            DatabaseConfig::new(Some(" "), dir).unwrap(),
            DatabaseConfig::new(None, dir).unwrap()
        );
        for url in [
            "postgres://gradebook:secret@db:5432/gradebook",
            "postgresql://localhost/grading?connect_timeout=2",
        ] {
            let config = DatabaseConfig::new(Some(url), dir).unwrap();
            assert_eq!(config, DatabaseConfig::Postgres { url: url.into() });
            assert!(!config.describe().contains("secret"));
            assert!(!format!("{config:?}").contains("secret"));
        }
        for bad in [
            "not-a-url",
            "mysql://db/x",
            "sqlite:///tmp/x.db",
            "postgres://h:notaport/x",
        ] {
            let e = DatabaseConfig::new(Some(bad), dir).unwrap_err();
            assert!(e.to_string().starts_with("--database-url: "), "{bad}: {e}");
        }
    }
}
