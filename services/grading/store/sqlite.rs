//! [`SqliteStore`]: the grading store on an embedded SQLite file, the
//! default engine.
//!
//! The schema is versioned (`sqlite_schema`): when the store opens, the
//! migrations a binary applies itself are applied, in one transaction; a
//! database that needs a newer binary is refused. The database runs in WAL mode with `synchronous=FULL`, so every
//! committed write is durable; a batch of writes commits with one
//! transaction (one fsync) while each write keeps its own result.
//!
//! One writer connection serves every write, in order, and publishes each
//! change after its commit; reads run on a small, bounded pool of read-only
//! connections (WAL lets them read while the writer writes), each with its
//! prepared statements cached. SQLite calls block, so they run on tokio's
//! blocking threads: at most one for the writer plus one per reader.
//!
//! Averages and grade counts are computed by SQL from the stored grades,
//! never stored themselves, and never rounded. Times are stored as
//! microseconds since the Unix epoch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Semaphore, broadcast};

use crate::grading::store::demo::{DAY_MICROS, DEMO_STUDENTS, HOUR_MICROS};
use crate::grading::store::rows::{GRADE_COLUMNS, GradeRow, STUDENT_COLUMNS, StudentRow};
use crate::grading::store::sqlite_schema;
use crate::grading::store::time::{Clock, micros_before, micros_from_time, time_from_micros};
use crate::grading::store::write::{StoredRequest, check_repeat};
use crate::grading::store::{
    CHANGE_BUFFER, GradeCursor, GradeStore, REQUEST_RETENTION, RequestKey, StoreError,
    StudentCursor, StudentPage, Write, WriteRequest,
};
use crate::model::grading::{
    Change, Grade, GradePage, NewGrade, NewStudent, Student, StudentDetail, WriteAnswer, new_id,
};

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read-only connections, and so reads running at once.
pub const READERS: usize = 4;

/// The newest schema version this binary knows.
pub use crate::grading::store::sqlite_schema::SCHEMA_VERSION;

/// Wraps a SQLite error with what the store was doing.
pub(crate) fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Database(format!("{context}: {e}"))
}

/// The writer connection and the creation clock.
#[derive(Debug)]
struct Writer {
    conn: Connection,
    clock: Clock,
}

/// The read-only connections; a semaphore with one permit per connection
/// bounds the blocking threads that use them.
#[derive(Debug)]
struct Readers {
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

/// A reader taken from the pool; goes back when dropped (even on a panic).
struct Reader<'a> {
    readers: &'a Readers,
    conn: Option<Connection>,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.readers
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
    }
}

/// [`GradeStore`] on a SQLite database file.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<tokio::sync::Mutex<Writer>>,
    readers: Arc<Readers>,
    changes: broadcast::Sender<Arc<Change>>,
}

impl StudentRow {
    /// Reads the [`STUDENT_COLUMNS`].
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(StudentRow {
            id: row.get(0)?,
            first_name: row.get(1)?,
            last_name: row.get(2)?,
            created_at: row.get(3)?,
            average: row.get(4)?,
            grade_count: row.get(5)?,
        })
    }
}

impl GradeRow {
    /// Reads the [`GRADE_COLUMNS`].
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(GradeRow {
            id: row.get(0)?,
            student_id: row.get(1)?,
            title: row.get(2)?,
            grade_type: row.get(3)?,
            score: row.get(4)?,
            created_at: row.get(5)?,
        })
    }
}

/// The student `id`, if any, with its average.
fn find_student(conn: &Connection, id: &str) -> Result<Option<Student>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {STUDENT_COLUMNS} FROM students s WHERE s.id = ?1"
    ))
    .and_then(|mut statement| statement.query_row([id], StudentRow::read))
    .optional()
    .map_err(db("reading a student"))?
    .map(StudentRow::into_student)
    .transpose()
}

/// The student `id` with its average, or [`StoreError::NotFound`].
fn require_student(conn: &Connection, id: &str) -> Result<Student, StoreError> {
    find_student(conn, id)?.ok_or_else(|| StoreError::student_not_found(id))
}

/// The grade `grade_id` of the student `student_id`, if any.
fn find_grade(
    conn: &Connection,
    student_id: &str,
    grade_id: &str,
) -> Result<Option<Grade>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {GRADE_COLUMNS} FROM grades WHERE id = ?1 AND student_id = ?2"
    ))
    .and_then(|mut statement| statement.query_row([grade_id, student_id], GradeRow::read))
    .optional()
    .map_err(db("reading a grade"))?
    .map(GradeRow::into_grade)
    .transpose()
}

/// A page of a student's grades after `after`, oldest first (see
/// [`GradeCursor::page`]); `page_size` 0 counts as 1.
fn grade_page(
    conn: &Connection,
    student_id: &str,
    page_size: usize,
    after: &GradeCursor,
) -> Result<GradePage, StoreError> {
    let page_size = page_size.max(1);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {GRADE_COLUMNS} FROM grades WHERE student_id = ?1 \
             AND (created_at, id) > (?2, ?3) ORDER BY created_at, id LIMIT ?4"
        ))
        .map_err(db("reading grades"))?;
    let limit = i64::try_from(page_size)
        .unwrap_or(i64::MAX)
        .saturating_add(1);
    let rows = stmt
        .query_map(
            rusqlite::params![student_id, after.created_at, after.id, limit],
            GradeRow::read,
        )
        .map_err(db("reading grades"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db("reading grades"))?;
    let grades = rows
        .into_iter()
        .map(GradeRow::into_grade)
        .collect::<Result<_, _>>()?;
    Ok(GradeCursor::page(grades, page_size))
}

/// Inserts a grade for a student known to exist; returns it.
fn insert_grade(
    conn: &Connection,
    student_id: &str,
    new: &NewGrade,
    created_at: i64,
) -> Result<Grade, StoreError> {
    let id = new_id();
    conn.prepare_cached(
        "INSERT INTO grades (id, student_id, title, type, score, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            id,
            student_id,
            new.title,
            new.grade_type.as_str(),
            new.score,
            created_at
        ])
    })
    .map_err(db("adding a grade"))?;
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
fn insert_student(
    conn: &Connection,
    new: &NewStudent,
    created_at: i64,
) -> Result<Student, StoreError> {
    let id = new_id();
    conn.execute(
        "INSERT INTO students (id, first_name, last_name, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![id, new.first_name, new.last_name, created_at],
    )
    .map_err(db("adding a student"))?;
    Ok(Student {
        id,
        first_name: new.first_name.clone(),
        last_name: new.last_name.clone(),
        average: None,
        grade_count: 0,
        created_at: time_from_micros(created_at)?,
    })
}

/// The request id's stored fingerprint and answer, if any.
fn find_request(conn: &Connection, id: &str) -> Result<Option<StoredRequest>, StoreError> {
    conn.prepare_cached("SELECT fingerprint, answer FROM requests WHERE request_id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([id], |row| {
                Ok(StoredRequest {
                    fingerprint: row.get(0)?,
                    answer: row.get(1)?,
                })
            })
        })
        .optional()
        .map_err(db("reading a request id"))
}

/// Keeps a request id with its answer.
fn insert_request(
    conn: &Connection,
    key: &RequestKey,
    answer: &WriteAnswer,
    created_at: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO requests (request_id, fingerprint, answer, created_at)
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            key.id,
            key.fingerprint,
            answer.encode(),
            created_at
        ])
    })
    .map_err(db("keeping a request id"))?;
    Ok(())
}

/// Applies one write (ids canonical) on `conn`; returns its answer.
fn apply(conn: &Connection, write: &Write, clock: &mut Clock) -> Result<WriteAnswer, StoreError> {
    match write {
        Write::CreateStudent(new) => {
            insert_student(conn, new, clock.now()).map(WriteAnswer::Student)
        }
        Write::UpdateStudent { id, student } => {
            let changed = conn
                .prepare_cached("UPDATE students SET first_name = ?1, last_name = ?2 WHERE id = ?3")
                .and_then(|mut stmt| {
                    stmt.execute(params![student.first_name, student.last_name, id])
                })
                .map_err(db("renaming a student"))?;
            if changed == 0 {
                return Err(StoreError::student_not_found(id));
            }
            require_student(conn, id).map(WriteAnswer::Student)
        }
        Write::DeleteStudent { id } => {
            let student = require_student(conn, id)?;
            // ON DELETE CASCADE would do it too; explicit, it does not depend
            // on foreign keys being enabled.
            conn.execute("DELETE FROM grades WHERE student_id = ?1", [id])
                .map_err(db("removing a student's grades"))?;
            conn.execute("DELETE FROM students WHERE id = ?1", [id])
                .map_err(db("removing a student"))?;
            Ok(WriteAnswer::Student(student))
        }
        Write::AddGrade { student_id, grade } => {
            StoreError::check_room(&require_student(conn, student_id)?)?;
            let grade = insert_grade(conn, student_id, grade, clock.now())?;
            let student = require_student(conn, student_id)?;
            Ok(WriteAnswer::Grade(grade, student))
        }
        Write::UpdateGrade {
            student_id,
            grade_id,
            grade: new,
        } => {
            require_student(conn, student_id)?;
            let old = find_grade(conn, student_id, grade_id)?
                .ok_or_else(|| StoreError::grade_not_found(grade_id))?;
            conn.prepare_cached(
                "UPDATE grades SET title = ?1, type = ?2, score = ?3 WHERE id = ?4",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    new.title,
                    new.grade_type.as_str(),
                    new.score,
                    grade_id
                ])
            })
            .map_err(db("changing a grade"))?;
            let student = require_student(conn, student_id)?;
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
            require_student(conn, student_id)?;
            let grade = find_grade(conn, student_id, grade_id)?
                .ok_or_else(|| StoreError::grade_not_found(grade_id))?;
            conn.prepare_cached("DELETE FROM grades WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute([grade_id]))
                .map_err(db("removing a grade"))?;
            let student = require_student(conn, student_id)?;
            Ok(WriteAnswer::Grade(grade, student))
        }
    }
}

/// One item of a batch, in its own savepoint: the answer, and the change to
/// publish (none for a repeated request id).
fn write_item(
    tx: &mut rusqlite::Transaction<'_>,
    item: &WriteRequest,
    clock: &mut Clock,
) -> Result<(WriteAnswer, Option<Change>), StoreError> {
    let write = item.write.canonical()?;
    let savepoint = tx.savepoint().map_err(db("starting a write"))?;
    if let Some(key) = &item.request {
        let stored = find_request(&savepoint, &key.id)?;
        if let Some(answer) = check_repeat(&write, key, stored)? {
            return Ok((answer, None));
        }
    }
    let answer = apply(&savepoint, &write, clock)?;
    if let Some(key) = &item.request {
        insert_request(&savepoint, key, &answer, clock.now())?;
    }
    savepoint.commit().map_err(db("finishing a write"))?;
    let change = write.change(&answer);
    Ok((answer, Some(change)))
}

/// Opens a connection with the store's settings.
pub(crate) fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Database(format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db("setting the busy timeout"))?;
    Ok(conn)
}

/// Switches the database to WAL; returns the journal mode it is in.
/// SQLite answers "database is locked" at once, without waiting out the
/// busy timeout, when another connection is switching it at the same time
/// (several stores opening one new file together), so that is retried
/// for as long as the busy timeout.
fn enable_wal(conn: &Connection) -> Result<String, StoreError> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.map_err(db("enabling WAL")),
        }
    }
}

impl SqliteStore {
    /// Opens (creating it and its parent directories if needed) the
    /// database at `path`, and brings its schema up to date. Fails when the
    /// database was written by a newer binary.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(path))
            .await
            .map_err(|e| StoreError::Database(format!("opening the database failed: {e}")))?
    }

    fn open_blocking(path: PathBuf) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Database(format!("creating {}: {e}", parent.display())))?;
        }
        let mut conn = connect(&path, OpenFlags::default())?;
        let mode = enable_wal(&conn)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "{} does not support WAL (journal mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db("setting synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db("enabling foreign keys"))?;
        sqlite_schema::migrate_at_open(&mut conn)?;
        let readers = (0..READERS)
            .map(|_| {
                connect(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX
                        | OpenFlags::SQLITE_OPEN_URI,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Ok(SqliteStore {
            path,
            writer: Arc::new(tokio::sync::Mutex::new(Writer {
                conn,
                clock: Clock::default(),
            })),
            readers: Arc::new(Readers {
                idle: Mutex::new(readers),
                permits: Arc::new(Semaphore::new(READERS)),
            }),
            changes,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on a read-only connection, on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = self
            .readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = readers
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()
                .ok_or_else(|| StoreError::Database("no idle reader connection".into()))?;
            let mut reader = Reader {
                readers: &readers,
                conn: Some(conn),
            };
            match reader.conn.as_mut() {
                Some(conn) => work(conn),
                None => Err(StoreError::Database("no idle reader connection".into())),
            }
        })
        .await
        .map_err(|e| StoreError::Database(format!("a read failed: {e}")))?
    }

    /// Runs `work` with the writer, on a blocking thread; writers queue in
    /// order for the one connection.
    async fn with_writer<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Writer, &broadcast::Sender<Arc<Change>>) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let mut writer = self.writer.clone().lock_owned().await;
        let changes = self.changes.clone();
        tokio::task::spawn_blocking(move || work(&mut writer, &changes))
            .await
            .map_err(|e| StoreError::Database(format!("a write failed: {e}")))
    }
}

#[tonic::async_trait]
impl GradeStore for SqliteStore {
    async fn list_students(
        &self,
        page_size: usize,
        after: Option<&StudentCursor>,
    ) -> Result<StudentPage, StoreError> {
        let page_size = page_size.max(1);
        // One more than asked, to learn whether another page follows.
        let fetch = i64::try_from(page_size.saturating_add(1)).unwrap_or(i64::MAX);
        let after = after.cloned();
        let rows = self
            .read(move |conn| {
                let order = "ORDER BY s.last_name, s.first_name, s.id";
                match after {
                    None => conn
                        .prepare_cached(&format!(
                            "SELECT {STUDENT_COLUMNS} FROM students s {order} LIMIT ?1"
                        ))
                        .and_then(|mut stmt| {
                            stmt.query_map([fetch], StudentRow::read)?
                                .collect::<Result<Vec<_>, _>>()
                        })
                        .map_err(db("listing students")),
                    // The row value compares each column with its own
                    // collation (NOCASE for the names), the same as the
                    // ORDER BY.
                    Some(cursor) => conn
                        .prepare_cached(&format!(
                            "SELECT {STUDENT_COLUMNS} FROM students s
                             WHERE (s.last_name, s.first_name, s.id) > (?1, ?2, ?3)
                             {order} LIMIT ?4"
                        ))
                        .and_then(|mut stmt| {
                            stmt.query_map(
                                params![cursor.last_name, cursor.first_name, cursor.id, fetch],
                                StudentRow::read,
                            )?
                            .collect::<Result<Vec<_>, _>>()
                        })
                        .map_err(db("listing students")),
                }
            })
            .await?;
        let mut students = rows
            .into_iter()
            .map(StudentRow::into_student)
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
        let id = crate::model::grading::canonical_id("id", id)?;
        self.read(move |conn| {
            // One read transaction, so the grades match the average.
            let tx = conn.transaction().map_err(db("reading a student"))?;
            let student = require_student(&tx, &id)?;
            let page = grade_page(&tx, &id, grade_page_size, &GradeCursor::start())?;
            tx.commit().map_err(db("reading a student"))?;
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
        let id = crate::model::grading::canonical_id("student_id", student_id)?;
        let after = after.cloned().unwrap_or_else(GradeCursor::start);
        self.read(move |conn| {
            // One read transaction, so a missing student is told apart from
            // one without grades.
            let tx = conn.transaction().map_err(db("reading grades"))?;
            require_student(&tx, &id)?;
            let page = grade_page(&tx, &id, page_size, &after)?;
            tx.commit().map_err(db("reading grades"))?;
            Ok(page)
        })
        .await
    }

    async fn write(&self, batch: Vec<WriteRequest>) -> Vec<Result<WriteAnswer, StoreError>> {
        if batch.is_empty() {
            return Vec::new();
        }
        let size = batch.len();
        let done = self
            .with_writer(move |writer, changes| {
                let Writer { conn, clock } = writer;
                let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
                    Ok(tx) => tx,
                    Err(e) => {
                        let error = StoreError::Database(format!("starting to write: {e}"));
                        return batch.iter().map(|_| Err(error.clone())).collect();
                    }
                };
                let mut results: Vec<_> = batch
                    .iter()
                    .map(|item| write_item(&mut tx, item, clock))
                    .collect();
                if let Err(e) = tx.commit() {
                    let error = StoreError::Database(format!("committing writes: {e}"));
                    for result in &mut results {
                        if result.is_ok() {
                            *result = Err(error.clone());
                        }
                    }
                }
                // Published after the commit, still holding the writer: in
                // commit order.
                results
                    .into_iter()
                    .map(|result| {
                        result.map(|(answer, change)| {
                            if let Some(change) = change {
                                let _ = changes.send(Arc::new(change));
                            }
                            answer
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        match done {
            Ok(results) => results,
            Err(error) => (0..size).map(|_| Err(error.clone())).collect(),
        }
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM students)")
                .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
                .map_err(db("counting students"))
        })
        .await
    }

    async fn seed_demo_data(&self) -> Result<usize, StoreError> {
        self.with_writer(|writer, _| seed(&mut writer.conn)).await?
    }

    async fn prune(&self, now: SystemTime) -> Result<u64, StoreError> {
        let cutoff = micros_before(now, REQUEST_RETENTION);
        self.with_writer(move |writer, _| {
            writer
                .conn
                .execute("DELETE FROM requests WHERE created_at < ?1", [cutoff])
                .map(|n| n as u64)
                .map_err(db("removing old request ids"))
        })
        .await?
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }
}

/// Adds the demo students in one transaction if there is none yet.
fn seed(conn: &mut Connection) -> Result<usize, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("seeding demo data"))?;
    let empty: bool = tx
        .query_row("SELECT NOT EXISTS (SELECT 1 FROM students)", [], |row| {
            row.get(0)
        })
        .map_err(db("counting students"))?;
    if !empty {
        return Ok(0);
    }
    // Backdated: students four weeks ago, a grade every few days since.
    let start = micros_from_time(SystemTime::now()) - DAY_MICROS * 28;
    for (i, (first, last, grades)) in (0i64..).zip(DEMO_STUDENTS) {
        let student = insert_student(&tx, &NewStudent::new(first, last)?, start + i)?;
        for (j, (title, grade_type, score)) in (1i64..).zip(grades.iter()) {
            let new = NewGrade::new(title, *grade_type, *score)?;
            let created_at = start + j * 5 * DAY_MICROS + i * HOUR_MICROS;
            insert_grade(&tx, &student.id, &new, created_at)?;
        }
    }
    tx.commit().map_err(db("seeding demo data"))?;
    Ok(DEMO_STUDENTS.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(path: &Path, name: &str) -> String {
        Connection::open(path)
            .unwrap()
            .pragma_query_value(None, name, |row| {
                row.get::<_, rusqlite::types::Value>(0)
                    .map(|v| format!("{v:?}"))
            })
            .unwrap()
    }

    #[tokio::test]
    async fn open_creates_parent_directories_and_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/grading.db");
        let store = SqliteStore::open(&path).await.unwrap();
        assert!(path.exists());
        assert_eq!(store.path(), path);
        assert_eq!(pragma(&path, "journal_mode"), "Text(\"wal\")");
        let writer = store.writer.lock().await;
        let sync: i64 = writer
            .conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
        let fk: i64 = writer
            .conn
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        drop(writer);
        assert_eq!(
            pragma(&path, "user_version"),
            format!("Integer({SCHEMA_VERSION})")
        );
    }

    #[tokio::test]
    async fn reads_use_a_bounded_pool_of_read_only_connections() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("g.db")).await.unwrap();
        let err = store
            .read(|conn| {
                conn.execute("DELETE FROM students", [])
                    .map_err(db("writing on a reader"))
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        let reads: Vec<_> = (0..READERS * 4).map(|_| store.is_empty()).collect();
        for result in futures::future::join_all(reads).await {
            assert!(result.unwrap());
        }
        assert_eq!(store.readers.idle.lock().unwrap().len(), READERS);
    }
}
