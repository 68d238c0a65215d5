//! The PostgreSQL schema and its versioned migrations, applied at open
//! under a transaction-scoped advisory lock, so that several instances
//! starting together migrate once and the others wait, then find the schema
//! current. A database whose version is newer than this binary's is
//! refused.

use deadpool_postgres::Client;

use crate::grading::store::StoreError;
use crate::grading::store::postgres::pg;

/// The advisory lock that serializes migrations ("gbmigrat").
pub const MIGRATION_LOCK: i64 = 0x6762_6d69_6772_6174;

/// The migrations, in order: migration `i` (from 0) makes version `i + 1`.
/// The same logical schema as SQLite's, plus the change outbox. Append only;
/// never edit a migration that has shipped.
///
/// Text that is sorted or compared is `COLLATE "C"`: byte order, and
/// `lower()` folds ASCII only, like SQLite's `NOCASE`.
const MIGRATIONS: &[&str] = &[
    // 1: students and grades.
    r#"CREATE TABLE students (
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
    // 2: request ids of idempotent writes (the answer is NULL only inside
    // the transaction that claimed the id), and the outbox of changes that
    // every instance tails for WatchGrades.
    r#"CREATE TABLE requests (
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
];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the schema up to date in one transaction, under
/// [`MIGRATION_LOCK`].
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(pg("starting the migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg("taking the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    BIGINT NOT NULL PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(pg("creating schema_version"))?;
    let found: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await
        .map_err(pg("reading the schema version"))?
        .try_get(0)
        .map_err(pg("reading the schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in (1i64..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Database(format!("applying migration {version}: {e}")))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(pg("recording the schema version"))?;
        tracing::info!(version, "applied grading schema migration (PostgreSQL)");
    }
    tx.commit().await.map_err(pg("committing the migration"))
}
