//! [`PostgresStore`]: the grading store on PostgreSQL, shared by several
//! grading instances.
//!
//! The driver is tokio-postgres with a deadpool pool (no TLS): async-native,
//! small, no macros and no database needed at compile time; the pool is
//! bounded ([`POOL_SIZE`]) and every wait on it, every connection and every
//! operation has a deadline, and the server cancels any statement after
//! [`STATEMENT_TIMEOUT`]. A lost connection makes calls fail with
//! [`StoreError::Unavailable`] and the pool reconnects on its own.
//!
//! Writes: a batch is one transaction, each item in a savepoint. The
//! transaction first claims the batch's request ids (sorted) by inserting
//! their rows: a concurrent transaction with one of the ids waits on the
//! unique index until the first commits, then finds the stored answer.
//! Then it takes [`WRITE_LOCK`], an advisory lock held until commit, so
//! that appends to the `changes` outbox are numbered in commit order; each
//! item appends its change, and the commit NOTIFYs the tailers (see
//! [`feed`]).
//!
//! # Layout
//!
//! - [`schema`]: the migrations, applied under an advisory lock; backups
//!   and restores with `pg_dump` and `pg_restore`.
//! - [`feed`]: the outbox tailer behind [`GradeStore::subscribe`].

pub mod feed;
pub mod schema;

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::broadcast;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::grading::store::demo::{DAY_MICROS, DEMO_STUDENTS, HOUR_MICROS};
use crate::grading::store::rows::{GRADE_COLUMNS, GradeRow, STUDENT_COLUMNS, StudentRow};
use crate::grading::store::time::{Clock, micros_before, micros_from_time, time_from_micros};
use crate::grading::store::write::{StoredRequest, check_repeat};
use crate::grading::store::{
    CHANGE_BUFFER, GradeCursor, GradeStore, REQUEST_RETENTION, RequestKey, StoreError,
    StudentCursor, StudentPage, Write, WriteRequest,
};
use crate::mesh::Shutdown;
use crate::model::grading::{
    Change, Grade, GradePage, NewGrade, NewStudent, Student, StudentDetail, WriteAnswer,
    canonical_id, new_id,
};

pub use schema::SCHEMA_VERSION;

/// Connections in the pool at most.
pub const POOL_SIZE: usize = 8;
/// How long a call waits for a free connection.
pub const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long checking a pooled connection before reuse may take.
pub const RECYCLE_TIMEOUT: Duration = Duration::from_secs(2);
/// The server cancels a statement running longer than this.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The server ends a session that stays inside a transaction, idle, for
/// longer than this: a grading instance that hangs (SIGSTOP, a long GC-like
/// pause) while holding [`WRITE_LOCK`] must not stop every other
/// instance's writes for longer than this.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one store operation (pool wait, transaction, commit) may take.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);
/// How long changes stay in the outbox: far longer than any tailer needs.
pub const CHANGE_RETENTION: Duration = Duration::from_secs(60 * 60);
/// The advisory lock every write holds until commit ("gbwrites").
pub const WRITE_LOCK: i64 = 0x6762_7772_6974_6573;
/// The NOTIFY channel of new changes.
pub const CHANNEL: &str = "gradebook_changes";

/// The ordering of the student listing: names ignoring ASCII case, then id.
const STUDENT_ORDER: &str = "ORDER BY lower(s.last_name), lower(s.first_name), s.id";

/// Turns a driver error into a store error: connection trouble, timeouts
/// and server shutdowns are [`StoreError::Unavailable`].
pub(crate) fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| {
        let detail = match e.as_db_error() {
            Some(db) => db.to_string(),
            None => e.to_string(),
        };
        let unavailable = match e.code() {
            Some(code) => {
                code.code().starts_with("08")
                    || [
                        SqlState::ADMIN_SHUTDOWN,
                        SqlState::CRASH_SHUTDOWN,
                        SqlState::CANNOT_CONNECT_NOW,
                        SqlState::QUERY_CANCELED,
                        SqlState::TOO_MANY_CONNECTIONS,
                    ]
                    .contains(code)
            }
            None => {
                e.is_closed()
                    || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
            }
        };
        if unavailable {
            StoreError::Unavailable(format!("{context}: {detail}"))
        } else {
            StoreError::Database(format!("{context}: {detail}"))
        }
    }
}

/// Turns a pool error into a store error.
fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg("connecting to the database")(e),
        other => StoreError::Unavailable(format!("connecting to the database: {other}")),
    }
}

/// Reads a column, a malformed one being corrupt data.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    index: usize,
) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))
}

impl StudentRow {
    /// Reads the [`STUDENT_COLUMNS`] of a PostgreSQL row.
    fn from_pg(row: &tokio_postgres::Row) -> Result<Self, StoreError> {
        Ok(StudentRow {
            id: column(row, 0)?,
            first_name: column(row, 1)?,
            last_name: column(row, 2)?,
            created_at: column(row, 3)?,
            average: column(row, 4)?,
            grade_count: column(row, 5)?,
        })
    }
}

impl GradeRow {
    /// Reads the [`GRADE_COLUMNS`] of a PostgreSQL row.
    fn from_pg(row: &tokio_postgres::Row) -> Result<Self, StoreError> {
        Ok(GradeRow {
            id: column(row, 0)?,
            student_id: column(row, 1)?,
            title: column(row, 2)?,
            grade_type: column(row, 3)?,
            score: column(row, 4)?,
            created_at: column(row, 5)?,
        })
    }
}

/// A transaction (or savepoint) of the pool.
type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// The settings of a database URL, with this store's timeouts added.
fn connection_config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::Database(format!("the database URL is invalid: {e}")))?;
    let timeout = format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
        STATEMENT_TIMEOUT.as_millis(),
        IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
    );
    let options = match config.get_options() {
        Some(given) => format!("{given} {timeout}"),
        None => timeout,
    };
    config
        .options(options)
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name(schema::GRADING_APPLICATION);
    Ok(config)
}

/// [`GradeStore`] on PostgreSQL.
pub struct PostgresStore {
    pool: Pool,
    clock: Mutex<Clock>,
    changes: broadcast::Sender<Arc<Change>>,
    /// Stops the change feed when the store goes.
    stop: Shutdown,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://...`), brings its
    /// schema up to date, and starts the change feed from the newest change.
    /// Fails with [`StoreError::Unavailable`] when the database cannot be
    /// reached (retrying may help) and [`StoreError::Schema`] when its
    /// schema cannot be used by this binary.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let config = connection_config(url)?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Database(format!("building the connection pool: {e}")))?;
        let start = timed("opening the database", async {
            let mut client = pool.get().await.map_err(pool_error)?;
            schema::migrate_at_open(&mut client).await?;
            let row = client
                .query_one("SELECT COALESCE(MAX(seq), 0) FROM changes", &[])
                .await
                .map_err(pg("reading the newest change"))?;
            column::<i64>(&row, 0)
        })
        .await?;
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        let stop = Shutdown::new();
        tokio::spawn(feed::tail(config, start, changes.clone(), stop.clone()));
        Ok(PostgresStore {
            pool,
            clock: Mutex::new(Clock::default()),
            changes,
            stop,
        })
    }

    /// A creation time.
    fn now(&self) -> i64 {
        self.clock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .now()
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// One batch in one transaction; an `Err` fails every item.
    async fn write_batch(
        &self,
        batch: &[WriteRequest],
        writes: Vec<Result<Write, StoreError>>,
    ) -> Result<Vec<Result<WriteAnswer, StoreError>>, StoreError> {
        let mut client = self.client().await?;
        let mut tx = client
            .transaction()
            .await
            .map_err(pg("starting to write"))?;
        // Claim the request ids first, in one order (no deadlock between
        // batches): a concurrent claimer of one waits here for our commit.
        let mut keys: Vec<&RequestKey> = batch
            .iter()
            .zip(&writes)
            .filter(|(_, write)| write.is_ok())
            .filter_map(|(item, _)| item.request.as_ref())
            .collect();
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        keys.dedup_by(|a, b| a.id == b.id);
        let mut claimed = Vec::new();
        if !keys.is_empty() {
            let claim = tx
                .prepare_cached(
                    "INSERT INTO requests (request_id, fingerprint, answer, created_at)
                     VALUES ($1, $2, NULL, $3) ON CONFLICT (request_id) DO NOTHING",
                )
                .await
                .map_err(pg("claiming request ids"))?;
            let now = micros_from_time(SystemTime::now());
            for key in keys {
                let inserted = tx
                    .execute(&claim, &[&key.id, &key.fingerprint, &now])
                    .await
                    .map_err(pg("claiming a request id"))?;
                if inserted == 1 {
                    claimed.push(key.id.clone());
                }
            }
        }
        // Items in the order of the students they lock (the same order in
        // every batch of every instance, so row locks never deadlock); one
        // student's items keep their order.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by(|a, b| {
            let key = |i: &usize| writes[*i].as_ref().ok().and_then(Write::locked_student);
            key(a).cmp(&key(b))
        });
        let mut writes: Vec<Option<Result<Write, StoreError>>> =
            writes.into_iter().map(Some).collect();
        let mut results: Vec<Option<Result<WriteAnswer, StoreError>>> =
            (0..batch.len()).map(|_| None).collect();
        let mut changes = Vec::new();
        for index in order {
            let item = &batch[index];
            let write = match writes[index].take() {
                Some(Ok(write)) => write,
                Some(Err(e)) => {
                    results[index] = Some(Err(e));
                    continue;
                }
                None => continue,
            };
            let savepoint = tx.savepoint("item").await.map_err(pg("starting a write"))?;
            match self
                .write_item(&savepoint, &write, item.request.as_ref())
                .await
            {
                Ok((answer, change)) => {
                    savepoint.commit().await.map_err(pg("finishing a write"))?;
                    changes.extend(change);
                    results[index] = Some(Ok(answer));
                }
                Err(StoreError::Unavailable(e)) => return Err(StoreError::Unavailable(e)),
                Err(e) => {
                    savepoint
                        .rollback()
                        .await
                        .map_err(pg("undoing a failed write"))?;
                    results[index] = Some(Err(e));
                }
            }
        }
        let results: Vec<Result<WriteAnswer, StoreError>> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Database("a write was skipped".into()))))
            .collect();
        let changed = !changes.is_empty();
        if changed {
            // One writer at a time from here to the commit, for as short as
            // it takes to append to the outbox and commit: outbox order is
            // commit order.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                .await
                .map_err(pg("taking the write lock"))?;
            let student_ids: Vec<&str> = changes
                .iter()
                .map(|c: &Change| c.student.id.as_str())
                .collect();
            let payloads: Vec<Vec<u8>> = changes.iter().map(Change::encode).collect();
            let now = micros_from_time(SystemTime::now());
            tx.execute(
                "INSERT INTO changes (student_id, payload, created_at)
                 SELECT s, p, $3 FROM UNNEST($1::text[], $2::bytea[]) WITH ORDINALITY AS t(s, p, n)
                 ORDER BY n",
                &[&student_ids, &payloads, &now],
            )
            .await
            .map_err(pg("recording changes"))?;
        }
        if !claimed.is_empty() {
            // Claims of items that failed: released, as if never made.
            tx.execute(
                "DELETE FROM requests WHERE request_id = ANY($1) AND answer IS NULL",
                &[&claimed],
            )
            .await
            .map_err(pg("releasing request ids"))?;
        }
        if changed {
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
                .await
                .map_err(pg("notifying the change feed"))?;
        }
        tx.commit().await.map_err(pg("committing writes"))?;
        Ok(results)
    }

    /// One write in its savepoint: a repeated request id's stored answer, or
    /// the write applied, its answer kept under the id, and its change (for
    /// the outbox, appended by the batch just before commit).
    async fn write_item(
        &self,
        tx: &Tx<'_>,
        write: &Write,
        key: Option<&RequestKey>,
    ) -> Result<(WriteAnswer, Option<Change>), StoreError> {
        if let Some(key) = key {
            let row = tx
                .query_opt(
                    "SELECT fingerprint, answer FROM requests WHERE request_id = $1",
                    &[&key.id],
                )
                .await
                .map_err(pg("reading a request id"))?;
            if let Some(row) = row {
                let fingerprint: Vec<u8> = column(&row, 0)?;
                // No answer yet: this transaction's own claim.
                if let Some(answer) = column::<Option<Vec<u8>>>(&row, 1)?
                    && let Some(answer) = check_repeat(
                        write,
                        key,
                        Some(StoredRequest {
                            fingerprint,
                            answer,
                        }),
                    )?
                {
                    return Ok((answer, None));
                }
            }
        }
        let answer = self.apply(tx, write).await?;
        if let Some(key) = key {
            tx.execute(
                "INSERT INTO requests (request_id, fingerprint, answer, created_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (request_id) DO UPDATE
                 SET fingerprint = EXCLUDED.fingerprint, answer = EXCLUDED.answer",
                &[&key.id, &key.fingerprint, &answer.encode(), &self.now()],
            )
            .await
            .map_err(pg("keeping a request id"))?;
        }
        let change = write.change(&answer);
        Ok((answer, Some(change)))
    }

    /// Applies one write (ids canonical); returns its answer.
    async fn apply(&self, tx: &Tx<'_>, write: &Write) -> Result<WriteAnswer, StoreError> {
        match write {
            Write::CreateStudent(new) => insert_student(tx, new, self.now())
                .await
                .map(WriteAnswer::Student),
            Write::UpdateStudent { id, student } => {
                let changed = tx
                    .execute(
                        "UPDATE students SET first_name = $1, last_name = $2 WHERE id = $3",
                        &[&student.first_name, &student.last_name, id],
                    )
                    .await
                    .map_err(pg("renaming a student"))?;
                if changed == 0 {
                    return Err(StoreError::student_not_found(id));
                }
                require_student(tx, id).await.map(WriteAnswer::Student)
            }
            Write::DeleteStudent { id } => {
                let student = require_student(tx, id).await?;
                tx.execute("DELETE FROM grades WHERE student_id = $1", &[id])
                    .await
                    .map_err(pg("removing a student's grades"))?;
                tx.execute("DELETE FROM students WHERE id = $1", &[id])
                    .await
                    .map_err(pg("removing a student"))?;
                Ok(WriteAnswer::Student(student))
            }
            Write::AddGrade { student_id, grade } => {
                // Locks the student's row, so a concurrent removal waits.
                lock_student(tx, student_id).await?;
                StoreError::check_room(&require_student(tx, student_id).await?)?;
                let grade = insert_grade(tx, student_id, grade, self.now()).await?;
                let student = require_student(tx, student_id).await?;
                Ok(WriteAnswer::Grade(grade, student))
            }
            Write::UpdateGrade {
                student_id,
                grade_id,
                grade: new,
            } => {
                lock_student(tx, student_id).await?;
                let old = find_grade(tx, student_id, grade_id)
                    .await?
                    .ok_or_else(|| StoreError::grade_not_found(grade_id))?;
                tx.execute(
                    "UPDATE grades SET title = $1, type = $2, score = $3 WHERE id = $4",
                    &[&new.title, &new.grade_type.as_str(), &new.score, grade_id],
                )
                .await
                .map_err(pg("changing a grade"))?;
                let student = require_student(tx, student_id).await?;
                let grade = Grade {
                    title: new.title.clone(),
                    grade_type: new.grade_type,
                    score: new.score,
                    ..old
                };
                Ok(WriteAnswer::Grade(grade, student))
            }
            Write::DeleteGrade {
                student_id,
                grade_id,
            } => {
                lock_student(tx, student_id).await?;
                let grade = find_grade(tx, student_id, grade_id)
                    .await?
                    .ok_or_else(|| StoreError::grade_not_found(grade_id))?;
                tx.execute("DELETE FROM grades WHERE id = $1", &[grade_id])
                    .await
                    .map_err(pg("removing a grade"))?;
                let student = require_student(tx, student_id).await?;
                Ok(WriteAnswer::Grade(grade, student))
            }
        }
    }
}

/// Runs `work` with [`OPERATION_TIMEOUT`].
async fn timed<T>(
    what: &'static str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(OPERATION_TIMEOUT, work)
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!("{what}: no answer within {OPERATION_TIMEOUT:?}"))
        })?
}

/// The student `id`, if any, with its average.
async fn find_student(tx: &Tx<'_>, id: &str) -> Result<Option<Student>, StoreError> {
    let statement = tx
        .prepare_cached(&format!(
            "SELECT {STUDENT_COLUMNS} FROM students s WHERE s.id = $1"
        ))
        .await
        .map_err(pg("reading a student"))?;
    tx.query_opt(&statement, &[&id])
        .await
        .map_err(pg("reading a student"))?
        .map(|row| StudentRow::from_pg(&row)?.into_student())
        .transpose()
}

/// The student `id` with its average, or [`StoreError::NotFound`].
async fn require_student(tx: &Tx<'_>, id: &str) -> Result<Student, StoreError> {
    find_student(tx, id)
        .await?
        .ok_or_else(|| StoreError::student_not_found(id))
}

/// Locks the student's row until the end of the transaction, or
/// [`StoreError::NotFound`].
async fn lock_student(tx: &Tx<'_>, id: &str) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached("SELECT 1 FROM students WHERE id = $1 FOR UPDATE")
        .await
        .map_err(pg("locking a student"))?;
    match tx
        .query_opt(&statement, &[&id])
        .await
        .map_err(pg("locking a student"))?
    {
        Some(_) => Ok(()),
        None => Err(StoreError::student_not_found(id)),
    }
}

/// The grade `grade_id` of the student `student_id`, if any.
async fn find_grade(
    tx: &Tx<'_>,
    student_id: &str,
    grade_id: &str,
) -> Result<Option<Grade>, StoreError> {
    let statement = tx
        .prepare_cached(&format!(
            "SELECT {GRADE_COLUMNS} FROM grades WHERE id = $1 AND student_id = $2"
        ))
        .await
        .map_err(pg("reading a grade"))?;
    tx.query_opt(&statement, &[&grade_id, &student_id])
        .await
        .map_err(pg("reading a grade"))?
        .map(|row| GradeRow::from_pg(&row)?.into_grade())
        .transpose()
}

/// A read-only transaction on one snapshot.
async fn read_snapshot<'a>(
    client: &'a mut deadpool_postgres::Client,
    doing: &'static str,
) -> Result<Tx<'a>, StoreError> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg(doing))
}

/// A page of a student's grades after `after`, oldest first (see
/// [`GradeCursor::page`]); `page_size` 0 counts as 1.
async fn grade_page(
    tx: &Tx<'_>,
    student_id: &str,
    page_size: usize,
    after: &GradeCursor,
) -> Result<GradePage, StoreError> {
    let page_size = page_size.max(1);
    let statement = tx
        .prepare_cached(&format!(
            "SELECT {GRADE_COLUMNS} FROM grades WHERE student_id = $1 \
             AND (created_at, id) > ($2, $3) ORDER BY created_at, id LIMIT $4"
        ))
        .await
        .map_err(pg("reading grades"))?;
    let limit = i64::try_from(page_size)
        .unwrap_or(i64::MAX)
        .saturating_add(1);
    let grades = tx
        .query(
            &statement,
            &[&student_id, &after.created_at, &after.id, &limit],
        )
        .await
        .map_err(pg("reading grades"))?
        .iter()
        .map(|row| GradeRow::from_pg(row)?.into_grade())
        .collect::<Result<_, _>>()?;
    Ok(GradeCursor::page(grades, page_size))
}

/// Inserts a grade for a student known to exist; returns it.
async fn insert_grade(
    tx: &Tx<'_>,
    student_id: &str,
    new: &NewGrade,
    created_at: i64,
) -> Result<Grade, StoreError> {
    let id = new_id();
    let statement = tx
        .prepare_cached(
            "INSERT INTO grades (id, student_id, title, type, score, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(pg("adding a grade"))?;
    tx.execute(
        &statement,
        &[
            &id,
            &student_id,
            &new.title,
            &new.grade_type.as_str(),
            &new.score,
            &created_at,
        ],
    )
    .await
    .map_err(pg("adding a grade"))?;
    Ok(Grade {
        id,
        student_id: student_id.to_owned(),
        title: new.title.clone(),
        grade_type: new.grade_type,
        score: new.score,
        created_at: time_from_micros(created_at)?,
    })
}

/// Inserts a student; returns it.
async fn insert_student(
    tx: &Tx<'_>,
    new: &NewStudent,
    created_at: i64,
) -> Result<Student, StoreError> {
    let id = new_id();
    tx.execute(
        "INSERT INTO students (id, first_name, last_name, created_at) VALUES ($1, $2, $3, $4)",
        &[&id, &new.first_name, &new.last_name, &created_at],
    )
    .await
    .map_err(pg("adding a student"))?;
    Ok(Student {
        id,
        first_name: new.first_name.clone(),
        last_name: new.last_name.clone(),
        average: None,
        grade_count: 0,
        created_at: time_from_micros(created_at)?,
    })
}

#[tonic::async_trait]
impl GradeStore for PostgresStore {
    async fn list_students(
        &self,
        page_size: usize,
        after: Option<&StudentCursor>,
    ) -> Result<StudentPage, StoreError> {
        let page_size = page_size.max(1);
        // One more than asked, to learn whether another page follows.
        let fetch = i64::try_from(page_size.saturating_add(1)).unwrap_or(i64::MAX);
        let rows = timed("listing students", async {
            let client = self.client().await?;
            match after {
                None => {
                    let statement = client
                        .prepare_cached(&format!(
                            "SELECT {STUDENT_COLUMNS} FROM students s {STUDENT_ORDER} LIMIT $1"
                        ))
                        .await
                        .map_err(pg("listing students"))?;
                    client.query(&statement, &[&fetch]).await
                }
                Some(cursor) => {
                    let statement = client
                        .prepare_cached(&format!(
                            r#"SELECT {STUDENT_COLUMNS} FROM students s
                               WHERE (lower(s.last_name), lower(s.first_name), s.id)
                                   > (lower($1::text COLLATE "C"), lower($2::text COLLATE "C"),
                                      $3::text COLLATE "C")
                               {STUDENT_ORDER} LIMIT $4"#
                        ))
                        .await
                        .map_err(pg("listing students"))?;
                    client
                        .query(
                            &statement,
                            &[&cursor.last_name, &cursor.first_name, &cursor.id, &fetch],
                        )
                        .await
                }
            }
            .map_err(pg("listing students"))
        })
        .await?;
        let mut students = rows
            .iter()
            .map(|row| StudentRow::from_pg(row)?.into_student())
            .collect::<Result<Vec<_>, _>>()?;
        let next = if students.len() > page_size {
            students.truncate(page_size);
            students.last().map(StudentCursor::after)
        } else {
            None
        };
        Ok((students, next))
    }

    async fn get_student(
        &self,
        id: &str,
        grade_page_size: usize,
    ) -> Result<StudentDetail, StoreError> {
        let id = canonical_id("id", id)?;
        timed("reading a student", async {
            let mut client = self.client().await?;
            // One snapshot, so the grades match the average.
            let tx = read_snapshot(&mut client, "reading a student").await?;
            let student = require_student(&tx, &id).await?;
            let page = grade_page(&tx, &id, grade_page_size, &GradeCursor::start()).await?;
            tx.commit().await.map_err(pg("reading a student"))?;
            Ok(StudentDetail::with_grades(student, page))
        })
        .await
    }

    async fn list_grades(
        &self,
        student_id: &str,
        page_size: usize,
        after: Option<&GradeCursor>,
    ) -> Result<GradePage, StoreError> {
        let id = canonical_id("student_id", student_id)?;
        let after = after.cloned().unwrap_or_else(GradeCursor::start);
        timed("reading grades", async {
            let mut client = self.client().await?;
            // One snapshot, so a missing student is told apart from one
            // without grades.
            let tx = read_snapshot(&mut client, "reading grades").await?;
            require_student(&tx, &id).await?;
            let page = grade_page(&tx, &id, page_size, &after).await?;
            tx.commit().await.map_err(pg("reading grades"))?;
            Ok(page)
        })
        .await
    }

    async fn write(&self, batch: Vec<WriteRequest>) -> Vec<Result<WriteAnswer, StoreError>> {
        if batch.is_empty() {
            return Vec::new();
        }
        let writes: Vec<_> = batch.iter().map(|item| item.write.canonical()).collect();
        let invalid: Vec<_> = writes.iter().map(|w| w.as_ref().err().cloned()).collect();
        match timed("writing", self.write_batch(&batch, writes)).await {
            Ok(results) => results,
            Err(error) => invalid
                .into_iter()
                .map(|invalid| Err(invalid.unwrap_or_else(|| error.clone())))
                .collect(),
        }
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        timed("counting students", async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT NOT EXISTS (SELECT 1 FROM students)", &[])
                .await
                .map_err(pg("counting students"))?;
            column(&row, 0)
        })
        .await
    }

    async fn seed_demo_data(&self) -> Result<usize, StoreError> {
        timed("seeding demo data", async {
            let mut client = self.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(pg("seeding demo data"))?;
            // Under the write lock, so that instances starting together seed
            // once.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                .await
                .map_err(pg("taking the write lock"))?;
            let empty: bool = column(
                &tx.query_one("SELECT NOT EXISTS (SELECT 1 FROM students)", &[])
                    .await
                    .map_err(pg("counting students"))?,
                0,
            )?;
            if !empty {
                return Ok(0);
            }
            // Backdated: students four weeks ago, a grade every few days since.
            let start = micros_from_time(SystemTime::now()) - DAY_MICROS * 28;
            for (i, (first, last, grades)) in (0i64..).zip(DEMO_STUDENTS) {
                let student =
                    insert_student(&tx, &NewStudent::new(first, last)?, start + i).await?;
                for (j, (title, grade_type, score)) in (1i64..).zip(grades.iter()) {
                    let new = NewGrade::new(title, *grade_type, *score)?;
                    let created_at = start + j * 5 * DAY_MICROS + i * HOUR_MICROS;
                    insert_grade(&tx, &student.id, &new, created_at).await?;
                }
            }
            tx.commit().await.map_err(pg("seeding demo data"))?;
            Ok(DEMO_STUDENTS.len())
        })
        .await
    }

    async fn prune(&self, now: SystemTime) -> Result<u64, StoreError> {
        let requests = micros_before(now, REQUEST_RETENTION);
        let changes = micros_before(now, CHANGE_RETENTION);
        timed("pruning", async {
            let client = self.client().await?;
            let old_requests = client
                .execute(
                    "DELETE FROM requests WHERE created_at < $1 AND answer IS NOT NULL",
                    &[&requests],
                )
                .await
                .map_err(pg("removing old request ids"))?;
            let old_changes = client
                .execute("DELETE FROM changes WHERE created_at < $1", &[&changes])
                .await
                .map_err(pg("removing old changes"))?;
            Ok(old_requests + old_changes)
        })
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }
}
