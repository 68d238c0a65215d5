//! The operations of `gradebook migrate` on a grading database of either
//! engine: its status, migrating up and down, backups, and restores. Each
//! decides what to do with [`plan`](crate::grading::schema::plan) and
//! refuses, with its reason, before anything changes; the engines carry
//! it out.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rusqlite::OpenFlags;

use crate::grading::DatabaseConfig;
use crate::grading::schema::Migration;
use crate::grading::schema::backup::{Loss, Manifest, ManifestError};
use crate::grading::schema::plan::{self, Compatibility, Plan, Recorded, SchemaError};
use crate::grading::store::StoreError;
use crate::grading::store::postgres::schema as pg_schema;
use crate::grading::store::sqlite::connect;
use crate::grading::store::sqlite_schema;

/// Why a migration command did nothing (or failed).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database failed, or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A backup's manifest cannot be used.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// There is no SQLite database at the path.
    #[error("no grading database at {0} (is --data-dir right?)")]
    NoDatabase(String),
    /// The backup is of another engine.
    #[error("the backup is of a {backup} database, this one is {database}: nothing changed")]
    Engine {
        /// The backup's engine.
        backup: String,
        /// The database's.
        database: &'static str,
    },
    /// The backup is of another database.
    #[error(
        "the backup is of database {backup}, this one is {database}: restoring it would replace \
         another database's data; nothing changed"
    )]
    OtherDatabase {
        /// The backup's database id.
        backup: String,
        /// This one's (or what it lacks).
        database: String,
    },
    /// The backup file is missing.
    #[error("the backup {0} is missing (its manifest is there)")]
    BackupMissing(String),
    /// Grading instances are connected to the database.
    #[error(
        "{0} grading connection(s) are open on the database: stop every grading instance \
         before restoring (their writes would be lost or fail); nothing changed"
    )]
    GradingConnected(i64),
}

/// The engine's migrations.
pub fn migrations(database: &DatabaseConfig) -> &'static [Migration] {
    match database {
        DatabaseConfig::Sqlite { .. } => sqlite_schema::MIGRATIONS,
        DatabaseConfig::Postgres { .. } => pg_schema::MIGRATIONS,
    }
}

/// The engine's name.
pub fn engine(database: &DatabaseConfig) -> &'static str {
    match database {
        DatabaseConfig::Sqlite { .. } => sqlite_schema::ENGINE,
        DatabaseConfig::Postgres { .. } => pg_schema::ENGINE,
    }
}

/// A database's schema as `gradebook migrate status` shows it.
#[derive(Debug)]
pub struct Status {
    /// Its id, once written.
    pub database_id: Option<String>,
    /// What it records.
    pub recorded: Recorded,
    /// How this binary stands with it.
    pub compatibility: Result<Compatibility, SchemaError>,
    /// This binary's migrations.
    pub known: &'static [Migration],
}

fn blocking_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Database(format!("the database task failed: {e}"))
}

/// Runs `work` on a connection to the SQLite file at `path` (which must
/// exist unless `create`), on a blocking thread.
async fn with_sqlite<T: Send + 'static>(
    path: &Path,
    create: bool,
    work: impl FnOnce(&mut rusqlite::Connection) -> Result<T, MigrateError> + Send + 'static,
) -> Result<T, MigrateError> {
    if !create && !path.exists() {
        return Err(MigrateError::NoDatabase(path.display().to_string()));
    }
    if let Some(parent) = path
        .parent()
        .filter(|p| create && !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::Database(format!("creating {}: {e}", parent.display())))?;
    }
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let mut conn = connect(&path, flags)?;
        work(&mut conn)
    })
    .await
    .map_err(blocking_error)?
}

/// The status of `database`.
pub async fn status(database: &DatabaseConfig) -> Result<Status, MigrateError> {
    let known = migrations(database);
    let (database_id, recorded) = match database {
        DatabaseConfig::Sqlite { path } => {
            with_sqlite(path, false, |conn| {
                Ok((
                    sqlite_schema::database_id(conn)?,
                    sqlite_schema::recorded(conn)?,
                ))
            })
            .await?
        }
        DatabaseConfig::Postgres { url } => {
            let client = pg_schema::connect_tool(url).await?;
            (
                pg_schema::database_id(&client).await?,
                pg_schema::recorded(&client).await?,
            )
        }
    };
    let compatibility = plan::check(known, &recorded);
    Ok(Status {
        database_id,
        recorded,
        compatibility,
        known,
    })
}

/// Carries out the plan `decide` makes inside the migration's
/// transaction.
async fn apply(
    database: &DatabaseConfig,
    decide: impl FnOnce(&Recorded) -> Result<Plan, SchemaError> + Send + 'static,
) -> Result<Plan, MigrateError> {
    Ok(match database {
        DatabaseConfig::Sqlite { path } => {
            with_sqlite(path, true, move |conn| {
                Ok(sqlite_schema::apply(conn, decide)?)
            })
            .await?
        }
        DatabaseConfig::Postgres { url } => {
            let mut client = pg_schema::connect_tool(url).await?;
            pg_schema::apply(&mut client, decide).await?
        }
    })
}

/// A new backup's file name in `dir`: the engine, the schema version and
/// the time, to the millisecond.
fn backup_path(database: &DatabaseConfig, dir: &Path, version: i64) -> PathBuf {
    let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let stamp: String = time.chars().filter(char::is_ascii_alphanumeric).collect();
    let extension = match database {
        DatabaseConfig::Sqlite { .. } => "sqlite",
        DatabaseConfig::Postgres { .. } => "pgdump",
    };
    dir.join(format!("grading-v{version}-{stamp}.{extension}"))
}

/// Takes a backup of `database` into `dir`; returns the backup's path and
/// manifest.
pub async fn backup(
    database: &DatabaseConfig,
    dir: &Path,
) -> Result<(PathBuf, Manifest), MigrateError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Database(format!("creating {}: {e}", dir.display())))?;
    let recorded = status(database).await?.recorded;
    let path = backup_path(database, dir, recorded.version);
    let manifest = match database {
        DatabaseConfig::Sqlite { path: db } => {
            let target = path.clone();
            with_sqlite(db, false, move |conn| {
                Ok(sqlite_schema::backup(conn, &target)?)
            })
            .await?
        }
        DatabaseConfig::Postgres { url } => {
            let mut client = pg_schema::connect_tool(url).await?;
            pg_schema::backup(&mut client, url, &path).await?
        }
    };
    Ok((path, manifest))
}

/// What `gradebook migrate up` did.
#[derive(Debug)]
pub struct Migrated {
    /// The migrations applied.
    pub plan: Plan,
    /// The backup taken first, if one was.
    pub backup: Option<(PathBuf, Manifest)>,
}

/// Applies the pending migrations of `database` up to `to` (the newest
/// when `None`). Before an irreversible one, takes a backup into
/// `backups`; with `backups` `None` (told to go without), none.
pub async fn up(
    database: &DatabaseConfig,
    to: Option<i64>,
    backups: Option<&Path>,
) -> Result<Migrated, MigrateError> {
    let known = migrations(database);
    let recorded = match database {
        DatabaseConfig::Sqlite { path } if !path.exists() => Recorded::default(),
        _ => status(database).await?.recorded,
    };
    let planned = plan::up(known, &recorded, to).map_err(StoreError::from)?;
    let backup = match backups {
        Some(dir) if planned.needs_backup => Some(backup(database, dir).await?),
        _ => None,
    };
    let plan = apply(database, move |recorded| plan::up(known, recorded, to)).await?;
    Ok(Migrated { plan, backup })
}

/// Undoes the migrations of `database` above `to`.
pub async fn down(database: &DatabaseConfig, to: i64) -> Result<Plan, MigrateError> {
    let known = migrations(database);
    let recorded = status(database).await?.recorded;
    plan::down(known, &recorded, to).map_err(StoreError::from)?;
    apply(database, move |recorded| plan::down(known, recorded, to)).await
}

/// A restore, checked and ready: what it restores and what it undoes.
#[derive(Debug)]
pub struct Restore {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// The backup file.
    pub backup: PathBuf,
    /// What restoring it undoes.
    pub loss: Loss,
}

/// Checks that the backup `given` (the file or its manifest) can be
/// restored over `database` and says what that would undo; changes
/// nothing.
pub async fn prepare_restore(
    database: &DatabaseConfig,
    given: &Path,
) -> Result<Restore, MigrateError> {
    let (manifest, manifest_path) = Manifest::read(given)?;
    let engine = engine(database);
    if manifest.engine != engine {
        return Err(MigrateError::Engine {
            backup: manifest.engine,
            database: engine,
        });
    }
    let backup = manifest.backup_path(&manifest_path);
    if !backup.exists() {
        return Err(MigrateError::BackupMissing(backup.display().to_string()));
    }
    let (database_id, version, students, grades) = match database {
        DatabaseConfig::Sqlite { path } if !path.exists() => (None, 0, Vec::new(), Vec::new()),
        DatabaseConfig::Sqlite { path } => {
            with_sqlite(path, false, |conn| {
                let recorded = sqlite_schema::recorded(conn)?;
                let (students, grades) = if recorded.version > 0 {
                    sqlite_schema::ids(conn)?
                } else {
                    Default::default()
                };
                Ok((
                    sqlite_schema::database_id(conn)?,
                    recorded.version,
                    students,
                    grades,
                ))
            })
            .await?
        }
        DatabaseConfig::Postgres { url } => {
            let client = pg_schema::connect_tool(url).await?;
            let recorded = pg_schema::recorded(&client).await?;
            let (students, grades) = if recorded.version > 0 {
                pg_schema::ids(&client).await?
            } else {
                Default::default()
            };
            (
                pg_schema::database_id(&client).await?,
                recorded.version,
                students,
                grades,
            )
        }
    };
    match database_id {
        Some(id) if id == manifest.database_id => {}
        None if version == 0 => {}
        other => {
            return Err(MigrateError::OtherDatabase {
                backup: manifest.database_id,
                database: other.unwrap_or_else(|| "one without an id".to_owned()),
            });
        }
    }
    if let DatabaseConfig::Postgres { url } = database {
        let client = pg_schema::connect_tool(url).await?;
        let connected = pg_schema::grading_connections(&client).await?;
        if connected > 0 {
            return Err(MigrateError::GradingConnected(connected));
        }
    }
    let loss = Loss::of(&manifest, &students, &grades);
    Ok(Restore {
        manifest,
        backup,
        loss,
    })
}

/// Restores a prepared backup over `database`.
pub async fn restore(database: &DatabaseConfig, restore: &Restore) -> Result<(), MigrateError> {
    match database {
        DatabaseConfig::Sqlite { path } => {
            let backup = restore.backup.clone();
            with_sqlite(path, true, move |conn| {
                Ok(sqlite_schema::restore(conn, &backup)?)
            })
            .await
        }
        DatabaseConfig::Postgres { url } => {
            let client = pg_schema::connect_tool(url).await?;
            let connected = pg_schema::grading_connections(&client).await?;
            if connected > 0 {
                return Err(MigrateError::GradingConnected(connected));
            }
            Ok(pg_schema::restore(url, &restore.backup).await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grading::store::sqlite::SqliteStore;
    use crate::grading::store::{GradeStore, GradeToAdd};
    use crate::model::grading::{GradeType, NewGrade, NewStudent};

    fn sqlite(dir: &Path) -> (DatabaseConfig, PathBuf) {
        let path = dir.join("grading.db");
        (DatabaseConfig::Sqlite { path: path.clone() }, path)
    }

    fn sql(path: &Path, statements: &str) {
        rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(statements)
            .unwrap();
    }

    async fn add_student(store: &SqliteStore, name: &str) -> String {
        let new = NewStudent::new(name, "Family").unwrap();
        store.create_student(&new, None).await.unwrap().id
    }

    #[test]
    fn both_engines_list_the_same_migrations_well_formed() {
        let sqlite = sqlite_schema::MIGRATIONS;
        let postgres = pg_schema::MIGRATIONS;
        assert_eq!(crate::grading::schema::check_list(sqlite), Ok(()));
        assert_eq!(crate::grading::schema::check_list(postgres), Ok(()));
        assert_eq!(sqlite.len(), postgres.len());
        for (a, b) in sqlite.iter().zip(postgres) {
            assert_eq!(
                (a.phase, a.down.is_some(), a.compatible_from),
                (b.phase, b.down.is_some(), b.compatible_from),
                "{}",
                a.version
            );
        }
    }

    #[tokio::test]
    async fn a_new_database_gets_every_migration_recorded_with_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let (database, path) = sqlite(dir.path());
        drop(SqliteStore::open(&path).await.unwrap());
        let state = status(&database).await.unwrap();
        assert_eq!(state.recorded.version, sqlite_schema::SCHEMA_VERSION);
        assert_eq!(
            state.recorded.history.len(),
            sqlite_schema::MIGRATIONS.len()
        );
        assert_eq!(state.compatibility, Ok(Compatibility::Current));
        assert!(state.database_id.is_some());
    }

    #[tokio::test]
    async fn an_older_database_is_migrated_by_the_operator_only() {
        let dir = tempfile::tempdir().unwrap();
        let (database, path) = sqlite(dir.path());
        // A database as the release before checksums left it: version 2.
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for migration in &sqlite_schema::MIGRATIONS[..2] {
                tx.execute_batch(migration.up).unwrap();
            }
            tx.pragma_update(None, "user_version", 2).unwrap();
            tx.execute_batch(
                "INSERT INTO students VALUES ('0190a0a0-0000-7000-8000-000000000001', 'Ada', 'Lovelace', 1);
                 INSERT INTO grades VALUES ('0190a0a0-0000-7000-8000-000000000002', '0190a0a0-0000-7000-8000-000000000001', 'Quiz', 'quiz', 85.126, 2);",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        // Binaries of that release refuse newer versions: opening it
        // changes nothing.
        drop(SqliteStore::open(&path).await.unwrap());
        let state = status(&database).await.unwrap();
        assert_eq!(state.recorded.version, 2);
        assert_eq!(
            state.compatibility,
            Ok(Compatibility::Behind { pending: 2 })
        );
        let migrated = up(&database, Some(3), None).await.unwrap();
        assert_eq!(migrated.plan.steps.len(), 1);
        assert!(migrated.backup.is_none(), "3 is reversible");
        drop(SqliteStore::open(&path).await.unwrap());
        assert_eq!(status(&database).await.unwrap().recorded.version, 3);

        // Down through the reversible index, and refused through the rest.
        let plan = down(&database, 2).await.unwrap();
        assert_eq!(plan.steps.len(), 1);
        let refused = down(&database, 1).await.unwrap_err().to_string();
        assert!(
            refused.contains("migration 2 (request ids of idempotent writes) is irreversible"),
            "{refused}"
        );
        up(&database, Some(3), None).await.unwrap();

        // The contract is irreversible: a backup first, then the change.
        let backups = dir.path().join("backups");
        let migrated = up(&database, None, Some(&backups)).await.unwrap();
        let (backup, manifest) = migrated.backup.expect("a backup");
        assert!(backup.exists());
        assert_eq!(manifest.schema_version, 3);
        assert_eq!(manifest.students, ["0190a0a0-0000-7000-8000-000000000001"]);
        let score: f64 = rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("SELECT score FROM grades", [], |row| row.get(0))
            .unwrap();
        assert_eq!(score, 85.13);
        assert_eq!(status(&database).await.unwrap().recorded.version, 4);

        // Restoring says what it undoes, then brings the old score back.
        let store = SqliteStore::open(&path).await.unwrap();
        let added = add_student(&store, "Grace").await;
        let grade = NewGrade::new("Exam", GradeType::Exam, 90.0).unwrap();
        let added = store
            .add_grades(vec![GradeToAdd {
                student_id: added,
                grade,
                request: None,
            }])
            .await;
        assert!(added[0].is_ok(), "{added:?}");
        store
            .delete_student("0190a0a0-0000-7000-8000-000000000001", None)
            .await
            .unwrap();
        drop(store);
        let prepared = prepare_restore(&database, &backup).await.unwrap();
        assert_eq!(prepared.loss.students_created, 1);
        assert_eq!(prepared.loss.grades_created, 1);
        assert_eq!(prepared.loss.students_deleted, 1);
        assert_eq!(prepared.loss.grades_deleted, 1);
        restore(&database, &prepared).await.unwrap();
        let state = status(&database).await.unwrap();
        assert_eq!(state.recorded.version, 3);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let score: f64 = conn
            .query_row(
                "SELECT score FROM grades WHERE id = '0190a0a0-0000-7000-8000-000000000002'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(score, 85.126);
        let students: i64 = conn
            .query_row("SELECT count(*) FROM students", [], |row| row.get(0))
            .unwrap();
        assert_eq!(students, 1);
    }

    #[tokio::test]
    async fn an_edited_migration_and_another_databases_backup_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (database, path) = sqlite(dir.path());
        let store = SqliteStore::open(&path).await.unwrap();
        add_student(&store, "Ada").await;
        drop(store);
        sql(
            &path,
            "UPDATE schema_history SET checksum = 'edited' WHERE version = 3",
        );
        let refused = SqliteStore::open(&path).await.unwrap_err().to_string();
        assert!(
            refused.contains("migration 3 (grades indexed by time) differs"),
            "{refused}"
        );
        let state = status(&database).await.unwrap();
        assert!(state.compatibility.is_err());
        assert!(up(&database, None, None).await.is_err());
        sql(
            &path,
            &format!(
                "UPDATE schema_history SET checksum = '{}' WHERE version = 3",
                sqlite_schema::MIGRATIONS[2].checksum()
            ),
        );

        let other_dir = tempfile::tempdir().unwrap();
        let (other, other_path) = sqlite(other_dir.path());
        drop(SqliteStore::open(&other_path).await.unwrap());
        let (backup, _) = backup(&other, &other_dir.path().join("b")).await.unwrap();
        let refused = prepare_restore(&database, &backup).await.unwrap_err();
        assert!(
            matches!(refused, MigrateError::OtherDatabase { .. }),
            "{refused}"
        );
        // Into a new, empty database, a backup may go.
        let (empty, _) = sqlite(&dir.path().join("new"));
        assert!(prepare_restore(&empty, &backup).await.is_ok());
    }

    #[tokio::test]
    async fn a_newer_database_is_used_while_its_migrations_allow() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = sqlite(dir.path());
        drop(SqliteStore::open(&path).await.unwrap());
        let newer = sqlite_schema::SCHEMA_VERSION + 1;
        sql(
            &path,
            &format!(
                "INSERT INTO schema_history VALUES ({newer}, 'a newer one', 'x', 2, 0);
             PRAGMA user_version = {newer};"
            ),
        );
        drop(SqliteStore::open(&path).await.expect("compatible from 2"));
        sql(
            &path,
            &format!("UPDATE schema_history SET compatible_from = {newer} WHERE version = {newer}"),
        );
        let refused = SqliteStore::open(&path).await.unwrap_err().to_string();
        assert!(refused.contains("run a newer gradebook"), "{refused}");
    }
}
