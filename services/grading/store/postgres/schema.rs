//! PostgreSQL's side of the versioned schema ([`crate::grading::schema`]):
//! its migrations, and the reading, applying, backing up and restoring of
//! a database's schema. The version is the newest row of `schema_version`;
//! each applied migration is recorded in `schema_history` with its
//! checksum, and the database's id in `schema_meta`. Every change runs in
//! one transaction under [`MIGRATION_LOCK`], so that instances starting
//! together (and `gradebook migrate`) migrate once and the others wait,
//! then find the schema current.
//!
//! A backup is `pg_dump`'s custom format, taken from a snapshot exported
//! by a read-only, repeatable-read transaction that also reads the
//! manifest's ids: the dump and its manifest see the same data. A restore
//! is `pg_restore --clean --single-transaction`, refused while grading
//! instances are connected.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use tokio_postgres::{Client, GenericClient, IsolationLevel, NoTls};

use crate::grading::schema::backup::{MANIFEST_FORMAT, Manifest};
use crate::grading::schema::plan::{self, Direction, Plan, Recorded};
use crate::grading::schema::{Applied, FIRST_TOLERANT_VERSION, Migration, Phase, SchemaError};
use crate::grading::store::StoreError;
use crate::grading::store::postgres::{CONNECT_TIMEOUT, pg};
use crate::grading::store::sqlite_schema::file_name;
use crate::grading::store::time::micros_from_time;

/// The engine's name in backup manifests.
pub const ENGINE: &str = "postgresql";

/// The advisory lock that serializes migrations ("gbmigrat").
pub const MIGRATION_LOCK: i64 = 0x6762_6d69_6772_6174;

/// The application name of the grading daemon's connections.
pub const GRADING_APPLICATION: &str = "gradebook-grading";

/// How long a statement of `gradebook migrate` may run (a migration
/// rewriting a large table takes time).
pub const TOOL_STATEMENT_TIMEOUT: Duration = Duration::from_secs(600);

/// How long `pg_dump` or `pg_restore` may run.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(3600);

/// The migrations, in order. The same logical schema as SQLite's, plus the
/// change outbox. Append only; never edit one that has shipped.
///
/// Text that is sorted or compared is `COLLATE "C"`: byte order, and
/// `lower()` folds ASCII only, like SQLite's `NOCASE`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "students and grades",
        phase: Phase::Expand,
        up: r#"CREATE TABLE students (
           id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
           first_name TEXT COLLATE "C" NOT NULL,
           last_name  TEXT COLLATE "C" NOT NULL,
           created_at BIGINT NOT NULL
       );
       CREATE TABLE grades (
           id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
           student_id TEXT COLLATE "C" NOT NULL REFERENCES students (id) ON DELETE CASCADE,
           title      TEXT NOT NULL,
           type       TEXT NOT NULL CHECK (type IN ('quiz', 'test', 'exam', 'homework')),
           score      DOUBLE PRECISION NOT NULL CHECK (score BETWEEN 0 AND 100),
           created_at BIGINT NOT NULL
       );
       CREATE INDEX grades_by_student ON grades (student_id, created_at);
       CREATE INDEX students_by_name ON students (lower(last_name), lower(first_name), id);"#,
        down: None,
        compatible_from: 1,
    },
    Migration {
        version: 2,
        name: "request ids of idempotent writes, and the change outbox",
        phase: Phase::Expand,
        // The answer is NULL only inside the transaction that claimed the
        // id; every instance tails the outbox for WatchGrades.
        up: r#"CREATE TABLE requests (
           request_id  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
           fingerprint BYTEA NOT NULL,
           answer      BYTEA,
           created_at  BIGINT NOT NULL
       );
       CREATE INDEX requests_by_age ON requests (created_at);
       CREATE TABLE changes (
           seq        BIGSERIAL PRIMARY KEY,
           student_id TEXT NOT NULL,
           payload    BYTEA NOT NULL,
           created_at BIGINT NOT NULL
       );
       CREATE INDEX changes_by_age ON changes (created_at);"#,
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
        // Scores are given to the hundredth; older releases stored
        // whatever was sent. Irreversible: the digits dropped are gone.
        up: "UPDATE grades SET score = round(score::numeric, 2)::double precision
             WHERE score <> round(score::numeric, 2)::double precision;",
        down: None,
        compatible_from: 2,
    },
];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The bookkeeping tables.
const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS schema_version (
         version    BIGINT NOT NULL PRIMARY KEY,
         applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
     );
     CREATE TABLE IF NOT EXISTS schema_history (
         version         BIGINT NOT NULL PRIMARY KEY,
         name            TEXT   NOT NULL,
         checksum        TEXT   NOT NULL,
         compatible_from BIGINT NOT NULL,
         applied_at      BIGINT NOT NULL
     );
     CREATE TABLE IF NOT EXISTS schema_meta (
         key   TEXT NOT NULL PRIMARY KEY,
         value TEXT NOT NULL
     );";

/// A connection for `gradebook migrate`: without the grading daemon's
/// short statement and idle-transaction timeouts (a backup holds its
/// snapshot open while `pg_dump` runs).
pub async fn connect_tool(url: &str) -> Result<Client, StoreError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::Database(format!("the database URL is invalid: {e}")))?;
    let timeout = format!(
        "-c statement_timeout={}",
        TOOL_STATEMENT_TIMEOUT.as_millis()
    );
    let options = match config.get_options() {
        Some(given) => format!("{given} {timeout}"),
        None => timeout,
    };
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name("gradebook-migrate")
        .options(options);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(pg("connecting to the database"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "the migration tool's database connection ended");
        }
    });
    Ok(client)
}

async fn has_table(client: &impl GenericClient, name: &str) -> Result<bool, StoreError> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .map_err(pg("looking for a table"))?;
    row.try_get(0).map_err(pg("looking for a table"))
}

/// What the database records of its schema. Reads only.
pub async fn recorded(client: &impl GenericClient) -> Result<Recorded, StoreError> {
    if !has_table(client, "schema_version").await? {
        return Ok(Recorded::default());
    }
    let version: i64 = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await
        .map_err(pg("reading the schema version"))?
        .try_get(0)
        .map_err(pg("reading the schema version"))?;
    let mut history = Vec::new();
    if has_table(client, "schema_history").await? {
        let rows = client
            .query(
                "SELECT version, name, checksum, compatible_from, applied_at
                 FROM schema_history ORDER BY version",
                &[],
            )
            .await
            .map_err(pg("reading the schema history"))?;
        for row in rows {
            history.push(history_row(&row).map_err(pg("reading the schema history"))?);
        }
    }
    Ok(Recorded { version, history })
}

fn history_row(row: &tokio_postgres::Row) -> Result<Applied, tokio_postgres::Error> {
    Ok(Applied {
        version: row.try_get(0)?,
        name: row.try_get(1)?,
        checksum: row.try_get(2)?,
        compatible_from: row.try_get(3)?,
        applied_at: row.try_get(4)?,
    })
}

/// The database's id, once a binary or the tool has written to it.
pub async fn database_id(client: &impl GenericClient) -> Result<Option<String>, StoreError> {
    if !has_table(client, "schema_meta").await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT value FROM schema_meta WHERE key = 'database_id'",
            &[],
        )
        .await
        .map_err(pg("reading the database id"))?;
    row.map(|row| row.try_get(0).map_err(pg("reading the database id")))
        .transpose()
}

async fn record(
    client: &impl GenericClient,
    applied: &Applied,
    replace: bool,
) -> Result<(), StoreError> {
    let conflict = if replace {
        "ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, checksum = EXCLUDED.checksum,
             compatible_from = EXCLUDED.compatible_from, applied_at = EXCLUDED.applied_at"
    } else {
        "ON CONFLICT (version) DO NOTHING"
    };
    client
        .execute(
            &format!(
                "INSERT INTO schema_history (version, name, checksum, compatible_from, applied_at)
                 VALUES ($1, $2, $3, $4, $5) {conflict}"
            ),
            &[
                &applied.version,
                &applied.name,
                &applied.checksum,
                &applied.compatible_from,
                &applied.applied_at,
            ],
        )
        .await
        .map_err(pg("recording a migration"))?;
    Ok(())
}

/// Creates the bookkeeping tables and the database's id if missing, and
/// records the migrations applied before checksums were (as this
/// binary's).
async fn keep_books(client: &impl GenericClient, version: i64, now: i64) -> Result<(), StoreError> {
    client
        .batch_execute(BOOKKEEPING)
        .await
        .map_err(pg("creating the schema history"))?;
    client
        .execute(
            "INSERT INTO schema_meta (key, value) VALUES ('database_id', $1) ON CONFLICT DO NOTHING",
            &[&uuid::Uuid::new_v4().to_string()],
        )
        .await
        .map_err(pg("recording the database id"))?;
    for migration in MIGRATIONS.iter().filter(|m| m.version <= version) {
        record(client, &Applied::of(migration, now), false).await?;
    }
    Ok(())
}

/// Decides a plan from what the database records (`decide`) and carries
/// it out, in one transaction under [`MIGRATION_LOCK`]; returns it.
/// Nothing changes when `decide` refuses or a step fails.
pub async fn apply(
    client: &mut Client,
    decide: impl FnOnce(&Recorded) -> Result<Plan, SchemaError>,
) -> Result<Plan, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(pg("starting the migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg("taking the migration lock"))?;
    let before = recorded(&tx).await?;
    let plan = decide(&before)?;
    let now = micros_from_time(SystemTime::now());
    keep_books(&tx, before.version.min(SCHEMA_VERSION), now).await?;
    for step in &plan.steps {
        let migration = &step.migration;
        tx.batch_execute(step.sql()).await.map_err(|e| {
            StoreError::Database(format!(
                "migration {} ({}): {}",
                migration.version,
                migration.name,
                e.as_db_error()
                    .map_or_else(|| e.to_string(), ToString::to_string)
            ))
        })?;
        match step.direction {
            Direction::Up => {
                record(&tx, &Applied::of(migration, now), true).await?;
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES ($1)",
                    &[&migration.version],
                )
                .await
                .map_err(pg("recording the schema version"))?;
            }
            Direction::Down => {
                for table in ["schema_history", "schema_version"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE version = $1"),
                        &[&migration.version],
                    )
                    .await
                    .map_err(pg("recording a migration undone"))?;
                }
            }
        }
        tracing::info!(
            version = migration.version,
            name = migration.name,
            direction = ?step.direction,
            "grading schema migration (PostgreSQL)"
        );
    }
    tx.commit().await.map_err(pg("committing the migration"))?;
    Ok(plan)
}

/// Brings the schema up to date as a binary does when it opens the
/// database ([`plan::at_open`]).
pub async fn migrate_at_open(client: &mut Client) -> Result<(), StoreError> {
    apply(client, |recorded| {
        plan::at_open(MIGRATIONS, recorded, FIRST_TOLERANT_VERSION)
    })
    .await
    .map(drop)
}

/// The ids of every student and every grade, sorted.
pub async fn ids(client: &impl GenericClient) -> Result<(Vec<String>, Vec<String>), StoreError> {
    let mut sets = Vec::new();
    for table in ["students", "grades"] {
        let rows = client
            .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
            .await
            .map_err(pg("reading ids"))?;
        let ids = rows
            .iter()
            .map(|row| row.try_get(0).map_err(pg("reading ids")))
            .collect::<Result<Vec<String>, _>>()?;
        sets.push(ids);
    }
    let grades = sets.pop().unwrap_or_default();
    let students = sets.pop().unwrap_or_default();
    Ok((students, grades))
}

/// `url` without its password, and the password, so that a tool gets the
/// password from `PGPASSWORD` rather than on its command line, which every
/// user of the machine can read.
fn split_password(url: &str) -> (String, Option<String>) {
    let password = tokio_postgres::Config::from_str(url)
        .ok()
        .and_then(|config| {
            config
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        });
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), password);
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            (format!("{scheme}://{user}@{hosts}{tail}"), password)
        }
        None => (url.to_owned(), password),
    }
}

/// Runs `program` (`pg_dump`, `pg_restore`) against the database at
/// `url` with `args`, within [`DUMP_TIMEOUT`]; its error output is the
/// error.
async fn run_tool(program: &str, url: &str, args: &[&str]) -> Result<(), StoreError> {
    let (url, password) = split_password(url);
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .arg(format!("--dbname={url}"))
        .kill_on_drop(true);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = tokio::time::timeout(DUMP_TIMEOUT, command.output())
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!("{program} took longer than {DUMP_TIMEOUT:?}"))
        })?
        .map_err(|e| {
            StoreError::Database(format!(
                "running {program}: {e} (is PostgreSQL's client installed?)"
            ))
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(StoreError::Database(format!(
            "{program} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Takes a backup of the database at `url` (connected as `client`) into
/// the new file `path` with `pg_dump`, and writes its manifest beside it;
/// returns the manifest.
pub async fn backup(client: &mut Client, url: &str, path: &Path) -> Result<Manifest, StoreError> {
    if path.exists() {
        return Err(StoreError::Database(format!(
            "{} exists already",
            path.display()
        )));
    }
    // The id and the history must be in the backup.
    apply(client, |_| Ok(Plan::default())).await?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg("starting the backup's snapshot"))?;
    let snapshot: String = tx
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(pg("exporting the snapshot"))?
        .try_get(0)
        .map_err(pg("exporting the snapshot"))?;
    let taken_at = micros_from_time(SystemTime::now());
    let recorded = recorded(&tx).await?;
    let database_id = database_id(&tx)
        .await?
        .ok_or_else(|| StoreError::Corrupt("the database has no id".into()))?;
    let (students, grades) = if recorded.version > 0 {
        ids(&tx).await?
    } else {
        Default::default()
    };
    let file = path.to_string_lossy();
    run_tool(
        "pg_dump",
        url,
        &[
            "--format=custom",
            &format!("--snapshot={snapshot}"),
            &format!("--file={file}"),
        ],
    )
    .await?;
    tx.commit()
        .await
        .map_err(pg("ending the backup's snapshot"))?;
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

/// How many grading daemons' connections the database has.
pub async fn grading_connections(client: &Client) -> Result<i64, StoreError> {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1",
            &[&GRADING_APPLICATION],
        )
        .await
        .map_err(pg("counting connections"))?
        .try_get(0)
        .map_err(pg("counting connections"))
}

/// Replaces the database at `url` with the `pg_dump` backup at `backup`,
/// in one transaction.
pub async fn restore(url: &str, backup: &Path) -> Result<(), StoreError> {
    let file = backup.to_string_lossy();
    run_tool(
        "pg_restore",
        url,
        &[
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            &file,
        ],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::split_password;

    #[test]
    fn the_password_leaves_the_url_for_the_environment() {
        assert_eq!(
            split_password("postgres://gradebook:s%40cret@db:5432/grading?sslmode=disable"),
            (
                "postgres://gradebook@db:5432/grading?sslmode=disable".to_owned(),
                Some("s@cret".to_owned())
            )
        );
        assert_eq!(
            split_password("postgresql://me@localhost/db"),
            ("postgresql://me@localhost/db".to_owned(), None)
        );
    }
}
