//! Grading's schema, versioned: what a migration is ([`Migration`]), what
//! a database records of the ones applied to it ([`Recorded`]), the plan
//! of taking it from one version to another ([`plan`]), and the manifest
//! and loss report of its backups ([`backup`]). Plain data and functions,
//! tested without a database; each engine (SQLite in
//! `store/sqlite_schema.rs`, PostgreSQL in `store/postgres/schema.rs`)
//! lists its migrations and carries out the plans, and [`tool`] drives
//! them for `gradebook migrate`.
//!
//! Schema changes follow expand/contract. An *expand* migration only adds
//! (a table, a column with a default, an index): the previous release keeps
//! working on it, so a binary applies pending expand migrations itself when
//! it opens the database, and a rollout can run old and new binaries side
//! by side. A *contract* migration removes or rewrites what an older
//! release may still use: only an operator applies it
//! (`gradebook migrate up`), once every instance runs a release that no
//! longer needs the old shape. A new, empty database gets every migration
//! at once; one below [`FIRST_TOLERANT_VERSION`] gets nothing at open. A migration without a `down` is irreversible: before one is
//! applied to a database that has data, the tool takes a backup.
//!
//! Each applied migration is recorded with the SHA-256 of its SQL; a
//! database whose record differs from the binary's migration of the same
//! version (an edited migration, or another branch's) is refused before
//! anything changes.

pub mod backup;
pub mod plan;
pub mod tool;

pub use plan::{Compatibility, Plan, Recorded, SchemaError, Step};

/// The oldest schema version whose binaries use a newer database when its
/// migrations allow (they know [`Migration::compatible_from`]). Binaries
/// of earlier releases refuse any version newer than theirs, so a binary
/// applies nothing by itself to a database below this version: the
/// operator does, with `gradebook migrate up`, once every instance runs a
/// release that tolerates it (otherwise a rollback to the older release
/// would find its database refused).
pub const FIRST_TOLERANT_VERSION: i64 = 3;

/// Whether the release before a migration keeps working after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Only adds: the previous release keeps working; applied by a binary
    /// itself when it opens the database.
    Expand,
    /// Removes or rewrites what an older release may use; applied only by
    /// `gradebook migrate up`, after the rollout.
    Contract,
}

impl Phase {
    /// `expand` or `contract`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Expand => "expand",
            Phase::Contract => "contract",
        }
    }
}

/// One schema migration of one engine: version `version` from `version -
/// 1`. Append only; never edit one that has shipped (its checksum is
/// recorded by every database it was applied to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// The version it makes, from 1.
    pub version: i64,
    /// What it does, in a few words.
    pub name: &'static str,
    /// Expand or contract.
    pub phase: Phase,
    /// The SQL that applies it.
    pub up: &'static str,
    /// The SQL that undoes it; `None`: irreversible (what it removes or
    /// rewrites cannot be brought back but from a backup).
    pub down: Option<&'static str>,
    /// The oldest schema version whose binaries still work on a database
    /// after this migration (its own version when only this release's
    /// binaries do).
    pub compatible_from: i64,
}

impl Migration {
    /// The lowercase hex SHA-256 of its `up` SQL, as recorded.
    pub fn checksum(&self) -> String {
        checksum(self.up)
    }

    /// Whether it has a `down`.
    pub fn reversible(&self) -> bool {
        self.down.is_some()
    }
}

/// The lowercase hex SHA-256 of `sql`.
pub fn checksum(sql: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, sql.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a database records of one applied migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Its version.
    pub version: i64,
    /// Its name when applied.
    pub name: String,
    /// The checksum of the SQL applied.
    pub checksum: String,
    /// The oldest schema version whose binaries work after it.
    pub compatible_from: i64,
    /// When it was applied, in microseconds since the Unix epoch.
    pub applied_at: i64,
}

impl Applied {
    /// The record of applying `migration` at `applied_at`.
    pub fn of(migration: &Migration, applied_at: i64) -> Self {
        Applied {
            version: migration.version,
            name: migration.name.to_owned(),
            checksum: migration.checksum(),
            compatible_from: migration.compatible_from,
            applied_at,
        }
    }
}

/// Checks that `migrations` are numbered 1, 2, ... and each is compatible
/// from no later than itself (for the engines' tests).
pub fn check_list(migrations: &[Migration]) -> Result<(), String> {
    for (index, migration) in migrations.iter().enumerate() {
        let expected = index as i64 + 1;
        if migration.version != expected {
            return Err(format!(
                "migration {} is at position {expected}",
                migration.version
            ));
        }
        if migration.compatible_from > migration.version || migration.compatible_from < 1 {
            return Err(format!(
                "migration {}: compatible_from {} is not a version up to its own",
                migration.version, migration.compatible_from
            ));
        }
        let first = migration.version == 1;
        if !first
            && migration.phase == Phase::Expand
            && migration.compatible_from == migration.version
        {
            return Err(format!(
                "migration {} is an expand, so the release before it must keep working",
                migration.version
            ));
        }
    }
    Ok(())
}
