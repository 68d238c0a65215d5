//! SQLite's side of the versioned schema ([`crate::grading::schema`]): its
//! migrations, and the reading, applying, backing up and restoring of a
//! database's schema. The version is SQLite's `user_version`; each applied
//! migration is recorded in `schema_history` with its checksum, and the
//! database's id in `schema_meta`. Every change runs in one `IMMEDIATE`
//! transaction. A backup is SQLite's online backup API, copying every page
//! in one step, so that it is one consistent snapshot while writers go on.

use std::path::Path;
use std::time::SystemTime;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, MAIN_DB, OptionalExtension, TransactionBehavior, params};

use crate::grading::schema::backup::{MANIFEST_FORMAT, Manifest};
use crate::grading::schema::plan::{self, Direction, Plan, Recorded};
use crate::grading::schema::{Applied, FIRST_TOLERANT_VERSION, Migration, Phase, SchemaError};
use crate::grading::store::StoreError;
use crate::grading::store::sqlite::{connect, db};
use crate::grading::store::time::micros_from_time;

/// The engine's name in backup manifests.
pub const ENGINE: &str = "sqlite";

/// The migrations, in order. Append only; never edit one that has
/// shipped.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "students and grades",
        phase: Phase::Expand,
        // Names compare case-insensitively (ASCII), so the listing order
        // and its index ignore case.
        up: "CREATE TABLE students (
         id         TEXT    NOT NULL PRIMARY KEY,
         first_name TEXT    NOT NULL COLLATE NOCASE,
         last_name  TEXT    NOT NULL COLLATE NOCASE,
         created_at INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE grades (
         id         TEXT    NOT NULL PRIMARY KEY,
         student_id TEXT    NOT NULL REFERENCES students (id) ON DELETE CASCADE,
         title      TEXT    NOT NULL,
         type       TEXT    NOT NULL CHECK (type IN ('quiz', 'test', 'exam', 'homework')),
         score      REAL    NOT NULL CHECK (score BETWEEN 0 AND 100),
         created_at INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX grades_by_student ON grades (student_id, created_at);
     CREATE INDEX students_by_name ON students (last_name, first_name, id);",
        down: None,
        compatible_from: 1,
    },
    Migration {
        version: 2,
        name: "request ids of idempotent writes",
        phase: Phase::Expand,
        // With the fingerprint of the request and the answer (protobuf
        // bytes), written with the write.
        up: "CREATE TABLE requests (
         request_id  TEXT    NOT NULL PRIMARY KEY,
         fingerprint BLOB    NOT NULL,
         answer      BLOB    NOT NULL,
         created_at  INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX requests_by_age ON requests (created_at);",
        down: None,
        compatible_from: 1,
    },
    Migration {
        version: 3,
        name: "grades indexed by time",
        phase: Phase::Expand,
        up: "CREATE INDEX grades_by_time ON grades (created_at);",
        down: Some("DROP INDEX grades_by_time;"),
        compatible_from: 2,
    },
    Migration {
        version: 4,
        name: "scores in hundredths",
        phase: Phase::Contract,
        // Scores are given to the hundredth (85, 89.5, 92.25); older
        // releases stored whatever was sent. Irreversible: the digits
        // dropped are gone.
        up: "UPDATE grades SET score = round(score, 2) WHERE score <> round(score, 2);",
        down: None,
        compatible_from: 2,
    },
];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The bookkeeping tables: the history of applied migrations and the
/// database's id.
const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS schema_history (
         version         INTEGER NOT NULL PRIMARY KEY,
         name            TEXT    NOT NULL,
         checksum        TEXT    NOT NULL,
         compatible_from INTEGER NOT NULL,
         applied_at      INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE IF NOT EXISTS schema_meta (
         key   TEXT NOT NULL PRIMARY KEY,
         value TEXT NOT NULL
     ) STRICT;";

fn has_table(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
    .map_err(db("looking for a table"))
}

/// What the database records of its schema. Reads only.
pub fn recorded(conn: &Connection) -> Result<Recorded, StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db("reading the schema version"))?;
    let mut history = Vec::new();
    if has_table(conn, "schema_history")? {
        let mut statement = conn
            .prepare(
                "SELECT version, name, checksum, compatible_from, applied_at
                 FROM schema_history ORDER BY version",
            )
            .map_err(db("reading the schema history"))?;
        let rows = statement
            .query_map([], |row| {
                Ok(Applied {
                    version: row.get(0)?,
                    name: row.get(1)?,
                    checksum: row.get(2)?,
                    compatible_from: row.get(3)?,
                    applied_at: row.get(4)?,
                })
            })
            .map_err(db("reading the schema history"))?;
        for row in rows {
            history.push(row.map_err(db("reading the schema history"))?);
        }
    }
    Ok(Recorded { version, history })
}

/// The database's id, once a binary or the tool has written to it.
pub fn database_id(conn: &Connection) -> Result<Option<String>, StoreError> {
    if !has_table(conn, "schema_meta")? {
        return Ok(None);
    }
    conn.query_row(
        "SELECT value FROM schema_meta WHERE key = 'database_id'",
        [],
        |row| row.get(0),
    )
    .optional()
    .map_err(db("reading the database id"))
}

/// Creates the bookkeeping tables and the database's id if missing, and
/// records the migrations applied before checksums were (as this
/// binary's).
fn keep_books(conn: &Connection, version: i64, now: i64) -> Result<(), StoreError> {
    conn.execute_batch(BOOKKEEPING)
        .map_err(db("creating the schema history"))?;
    conn.execute(
        "INSERT OR IGNORE INTO schema_meta (key, value) VALUES ('database_id', ?1)",
        [uuid::Uuid::new_v4().to_string()],
    )
    .map_err(db("recording the database id"))?;
    for migration in MIGRATIONS.iter().filter(|m| m.version <= version) {
        record(conn, &Applied::of(migration, now), "OR IGNORE")?;
    }
    Ok(())
}

fn record(conn: &Connection, applied: &Applied, conflict: &str) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "INSERT {conflict} INTO schema_history (version, name, checksum, compatible_from, applied_at)
             VALUES (?1, ?2, ?3, ?4, ?5)"
        ),
        params![
            applied.version,
            applied.name,
            applied.checksum,
            applied.compatible_from,
            applied.applied_at
        ],
    )
    .map_err(db("recording a migration"))?;
    Ok(())
}

/// Decides a plan from what the database records (`decide`) and carries
/// it out, in one transaction; returns it. Nothing changes when `decide`
/// refuses or a step fails.
pub fn apply(
    conn: &mut Connection,
    decide: impl FnOnce(&Recorded) -> Result<Plan, SchemaError>,
) -> Result<Plan, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("starting the migration"))?;
    let before = recorded(&tx)?;
    let plan = decide(&before)?;
    let now = micros_from_time(SystemTime::now());
    keep_books(&tx, before.version.min(SCHEMA_VERSION), now)?;
    for step in &plan.steps {
        let migration = &step.migration;
        tx.execute_batch(step.sql()).map_err(|e| {
            StoreError::Database(format!(
                "migration {} ({}): {e}",
                migration.version, migration.name
            ))
        })?;
        match step.direction {
            Direction::Up => record(&tx, &Applied::of(migration, now), "OR REPLACE")?,
            Direction::Down => {
                tx.execute(
                    "DELETE FROM schema_history WHERE version = ?1",
                    [migration.version],
                )
                .map_err(db("recording a migration undone"))?;
            }
        }
        tx.pragma_update(None, "user_version", step.version_after())
            .map_err(db("setting the schema version"))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            direction = ?step.direction,
            "grading schema migration (SQLite)"
        );
    }
    tx.commit().map_err(db("committing the migration"))?;
    Ok(plan)
}

/// Brings the schema up to date as a binary does when it opens the
/// database ([`plan::at_open`]).
pub fn migrate_at_open(conn: &mut Connection) -> Result<(), StoreError> {
    apply(conn, |recorded| {
        plan::at_open(MIGRATIONS, recorded, FIRST_TOLERANT_VERSION)
    })
    .map(drop)
}

/// The ids of every student and every grade, sorted.
pub fn ids(conn: &Connection) -> Result<(Vec<String>, Vec<String>), StoreError> {
    let read = |sql: &str| -> Result<Vec<String>, StoreError> {
        let mut statement = conn.prepare(sql).map_err(db("reading ids"))?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(db("reading ids"))?;
        rows.map(|row| row.map_err(db("reading ids"))).collect()
    };
    let students = read("SELECT id FROM students ORDER BY id")?;
    let grades = read("SELECT id FROM grades ORDER BY id")?;
    Ok((students, grades))
}

/// Copies every page of `from` into `to` in one step: one consistent
/// snapshot.
fn copy(from: &Connection, to: &mut Connection) -> Result<(), StoreError> {
    let backup =
        Backup::new_with_names(from, MAIN_DB, to, MAIN_DB).map_err(db("starting the copy"))?;
    match backup.step(-1).map_err(db("copying the database"))? {
        StepResult::Done => Ok(()),
        other => Err(StoreError::Unavailable(format!(
            "the database is busy ({other:?}): try again"
        ))),
    }
}

/// Takes a backup of the database `conn` into the new file `path`, and
/// writes its manifest beside it; returns the manifest.
pub fn backup(conn: &mut Connection, path: &Path) -> Result<Manifest, StoreError> {
    if path.exists() {
        return Err(StoreError::Database(format!(
            "{} exists already",
            path.display()
        )));
    }
    // The id and the history must be in the backup.
    apply(conn, |_| Ok(Plan::default()))?;
    let taken_at = micros_from_time(SystemTime::now());
    let mut copy_conn = connect(path, rusqlite::OpenFlags::default())?;
    copy(conn, &mut copy_conn)?;
    // A copy of a WAL database is marked WAL; a backup is one file, which
    // a read-only directory must be able to hold.
    copy_conn
        .pragma_update(None, "journal_mode", "DELETE")
        .map_err(db("making the backup one file"))?;
    let recorded = recorded(&copy_conn)?;
    let database_id = database_id(&copy_conn)?
        .ok_or_else(|| StoreError::Corrupt("the backup has no database id".into()))?;
    let (students, grades) = if recorded.version > 0 {
        ids(&copy_conn)?
    } else {
        Default::default()
    };
    drop(copy_conn);
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        engine: ENGINE.to_owned(),
        database_id,
        schema_version: recorded.version,
        taken_at,
        file: file_name(path),
        students,
        grades,
    };
    manifest
        .write(path)
        .map_err(|e| StoreError::Database(e.to_string()))?;
    Ok(manifest)
}

/// The file name of `path`.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Replaces the database `conn` with the backup at `backup`, in one step.
pub fn restore(conn: &mut Connection, backup: &Path) -> Result<(), StoreError> {
    let source = connect(backup, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    copy(&source, conn)
}
