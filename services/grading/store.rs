//! The storage of the grading service: students and their grades behind the
//! [`GradeStore`] trait, and [`SqliteStore`], its SQLite implementation.
//!
//! The schema is versioned with SQLite's `user_version`: the migrations (`MIGRATIONS`) are
//! applied in order, in one transaction, when the store opens, each bumping
//! the version; a database written by a newer binary is refused. The
//! database runs in WAL mode with `synchronous=FULL`, so every committed
//! write is durable; [`GradeStore::add_grades`] commits a whole batch of
//! grades with one transaction (one fsync) while each grade keeps its own
//! result.
//!
//! Averages and grade counts are computed by SQL from the stored grades,
//! never stored themselves, and never rounded. Times are stored as
//! microseconds since the Unix epoch.
//!
//! Everything here is synchronous; callers in async code run it on a
//! blocking thread (`tokio::task::spawn_blocking`).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::model::grading::{
    Grade, GradeType, InvalidField, NewGrade, NewStudent, Student, StudentDetail, canonical_id,
    new_id,
};

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema migrations, in order: migration `i` (from 0) takes the
/// database from `user_version` `i` to `i + 1`. Append only; never edit a
/// migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: students and grades. Names compare case-insensitively (ASCII), so
    // the listing order and its index ignore case.
    "CREATE TABLE students (
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
];

/// The longest page token [`StudentCursor::decode`] accepts, in characters.
const MAX_TOKEN_CHARS: usize = 4096;
/// The version tag at the start of a page token.
const TOKEN_VERSION: &str = "v1";
/// Separates the parts of a page token before it is hex-encoded (names
/// cannot contain it: control characters are rejected).
const TOKEN_SEPARATOR: char = '\u{1f}';

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The student or grade does not exist.
    #[error("{what} {id:?} not found")]
    NotFound {
        /// What was looked for: `"student"` or `"grade"`.
        what: &'static str,
        /// The id looked for.
        id: String,
    },
    /// An argument is invalid, e.g. an id that is not a UUID.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// SQLite failed, or the database cannot be used (e.g. its schema is
    /// newer than this binary's).
    #[error("database error: {0}")]
    Database(String),
    /// A stored row does not convert to a domain value.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl StoreError {
    fn student_not_found(id: &str) -> Self {
        StoreError::NotFound {
            what: "student",
            id: id.to_owned(),
        }
    }

    fn grade_not_found(id: &str) -> Self {
        StoreError::NotFound {
            what: "grade",
            id: id.to_owned(),
        }
    }
}

/// Wraps a SQLite error with what the store was doing.
fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Database(format!("{context}: {e}"))
}

/// Where a page of students ends: the sort key of its last student. The
/// next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudentCursor {
    /// The last name of the last student of the page.
    pub last_name: String,
    /// The first name of the last student of the page.
    pub first_name: String,
    /// The id of the last student of the page.
    pub id: String,
}

impl StudentCursor {
    /// The cursor after `student`.
    pub fn after(student: &Student) -> Self {
        StudentCursor {
            last_name: student.last_name.clone(),
            first_name: student.first_name.clone(),
            id: student.id.clone(),
        }
    }

    /// The opaque page token of the cursor: its parts, joined and
    /// hex-encoded.
    pub fn encode(&self) -> String {
        let joined = format!(
            "{TOKEN_VERSION}{TOKEN_SEPARATOR}{}{TOKEN_SEPARATOR}{}{TOKEN_SEPARATOR}{}",
            self.last_name, self.first_name, self.id
        );
        let mut token = String::with_capacity(joined.len() * 2);
        for byte in joined.bytes() {
            // Writing to a String cannot fail.
            let _ = write!(token, "{byte:02x}");
        }
        token
    }

    /// Reads a page token made by [`StudentCursor::encode`]; any other
    /// string is an error about the field `page_token`.
    pub fn decode(token: &str) -> Result<Self, InvalidField> {
        let invalid = || InvalidField::new("page_token", "not a token from a previous page");
        if token.len() > MAX_TOKEN_CHARS || !token.len().is_multiple_of(2) {
            return Err(invalid());
        }
        let bytes = token
            .as_bytes()
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(invalid)?;
        let joined = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = joined.split(TOKEN_SEPARATOR);
        let (Some(TOKEN_VERSION), Some(last_name), Some(first_name), Some(id), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid());
        };
        let id = canonical_id("page_token", id).map_err(|_| invalid())?;
        Ok(StudentCursor {
            last_name: last_name.to_owned(),
            first_name: first_name.to_owned(),
            id,
        })
    }
}

/// The storage of students and grades. Every method is synchronous and
/// commits before it returns; ids are checked (an invalid id is
/// [`StoreError::Invalid`] about the field `id`, `student_id` or `grade_id`)
/// and may be in any form a UUID parses from.
pub trait GradeStore: Send + Sync + 'static {
    /// Lists at most `page_size` students (0 counts as 1) after the cursor,
    /// ordered by last name, first name (both ignoring ASCII case) and id;
    /// returns the cursor of the next page when more students follow.
    fn list_students(
        &self,
        page_size: usize,
        after: Option<&StudentCursor>,
    ) -> Result<(Vec<Student>, Option<StudentCursor>), StoreError>;

    /// Returns one student with every grade, oldest first.
    fn get_student(&self, id: &str) -> Result<StudentDetail, StoreError>;

    /// Adds a student, with a new id.
    fn create_student(&self, new: &NewStudent) -> Result<Student, StoreError>;

    /// Renames a student; returns it as renamed.
    fn update_student(&self, id: &str, new: &NewStudent) -> Result<Student, StoreError>;

    /// Removes a student and every grade of theirs in one transaction;
    /// returns the student as it was.
    fn delete_student(&self, id: &str) -> Result<Student, StoreError>;

    /// Adds a batch of grades, each `(student_id, grade)`, in one
    /// transaction (one fsync). Each item has its own result, in the order of
    /// the batch: the stored grade and the student with the new average, or
    /// why that item failed (the others are stored all the same).
    fn add_grades(&self, batch: &[(String, NewGrade)])
    -> Vec<Result<(Grade, Student), StoreError>>;

    /// Changes a grade of a student; returns the grade as changed and the
    /// student with the new average.
    fn update_grade(
        &self,
        student_id: &str,
        grade_id: &str,
        new: &NewGrade,
    ) -> Result<(Grade, Student), StoreError>;

    /// Removes a grade of a student; returns the grade as it was and the
    /// student with the new average.
    fn delete_grade(
        &self,
        student_id: &str,
        grade_id: &str,
    ) -> Result<(Grade, Student), StoreError>;

    /// Whether there is no student at all.
    fn is_empty(&self) -> Result<bool, StoreError>;

    /// Adds a few demo students with grades, in one transaction, if there is
    /// no student yet (checked in the same transaction); returns how many
    /// students were added (0 when the store was not empty).
    fn seed_demo_data(&self) -> Result<usize, StoreError>;
}

/// Hands out creation times: microseconds since the epoch, strictly
/// increasing within the store, so that "oldest first" is also the order in
/// which things were added.
#[derive(Debug, Default)]
struct Clock {
    /// The last time handed out.
    last: i64,
}

impl Clock {
    /// The current time, or just after the last one handed out.
    fn now(&mut self) -> i64 {
        let now = micros_from_time(SystemTime::now());
        self.last = now.max(self.last.saturating_add(1));
        self.last
    }
}

/// Microseconds since the epoch (0 before it, `i64::MAX` far after it).
fn micros_from_time(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The time of a stored microsecond count.
fn time_from_micros(micros: i64) -> Result<SystemTime, StoreError> {
    u64::try_from(micros)
        .ok()
        .and_then(|m| UNIX_EPOCH.checked_add(Duration::from_micros(m)))
        .ok_or_else(|| StoreError::Corrupt(format!("created_at {micros} is out of range")))
}

/// The state behind the store's lock.
#[derive(Debug)]
struct Inner {
    /// The one connection, used for reads and writes.
    conn: Connection,
    /// Creation times.
    clock: Clock,
}

/// [`GradeStore`] on a SQLite database file.
///
/// One connection behind a mutex serves every call, reads included: calls
/// are short and SQLite serializes writers anyway, and it keeps every read
/// consistent with the writes before it. (WAL mode would allow separate
/// reader connections if reads ever need to scale.)
#[derive(Debug)]
pub struct SqliteStore {
    inner: Mutex<Inner>,
}

/// The columns of a student with its average and grade count, from `s`.
const STUDENT_COLUMNS: &str = "s.id, s.first_name, s.last_name, s.created_at,
     (SELECT AVG(g.score) FROM grades g WHERE g.student_id = s.id),
     (SELECT COUNT(*) FROM grades g WHERE g.student_id = s.id)";

/// The columns of a grade.
const GRADE_COLUMNS: &str = "id, student_id, title, type, score, created_at";

/// A student row as read, before conversion.
struct StudentRow {
    id: String,
    first_name: String,
    last_name: String,
    created_at: i64,
    average: Option<f64>,
    grade_count: i64,
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

    fn into_student(self) -> Result<Student, StoreError> {
        let grade_count = u32::try_from(self.grade_count).map_err(|_| {
            StoreError::Corrupt(format!(
                "student {:?}: grade count {} is out of range",
                self.id, self.grade_count
            ))
        })?;
        Ok(Student {
            created_at: time_from_micros(self.created_at)?,
            id: self.id,
            first_name: self.first_name,
            last_name: self.last_name,
            average: self.average,
            grade_count,
        })
    }
}

/// A grade row as read, before conversion.
struct GradeRow {
    id: String,
    student_id: String,
    title: String,
    grade_type: String,
    score: f64,
    created_at: i64,
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

    fn into_grade(self) -> Result<Grade, StoreError> {
        let grade_type = self.grade_type.parse::<GradeType>().map_err(|_| {
            StoreError::Corrupt(format!(
                "grade {:?}: unknown type {:?}",
                self.id, self.grade_type
            ))
        })?;
        Ok(Grade {
            created_at: time_from_micros(self.created_at)?,
            id: self.id,
            student_id: self.student_id,
            title: self.title,
            grade_type,
            score: self.score,
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

/// Every grade of a student, oldest first.
fn grades_of(conn: &Connection, student_id: &str) -> Result<Vec<Grade>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {GRADE_COLUMNS} FROM grades WHERE student_id = ?1 ORDER BY created_at, id"
        ))
        .map_err(db("reading grades"))?;
    let rows = stmt
        .query_map([student_id], GradeRow::read)
        .map_err(db("reading grades"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db("reading grades"))?;
    rows.into_iter().map(GradeRow::into_grade).collect()
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

/// Adds one grade of a batch: checks the student, inserts, and reads the
/// student back with the new average.
fn add_one_grade(
    conn: &Connection,
    student_id: &str,
    new: &NewGrade,
    created_at: i64,
) -> Result<(Grade, Student), StoreError> {
    require_student(conn, student_id)?;
    let grade = insert_grade(conn, student_id, new, created_at)?;
    let student = require_student(conn, student_id)?;
    Ok((grade, student))
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

/// Brings the schema up to date, in one transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("starting the migration"))?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db("reading the schema version"))?;
    let supported = MIGRATIONS.len();
    let current = usize::try_from(found)
        .map_err(|_| StoreError::Corrupt(format!("schema version {found} is not a version")))?;
    if current > supported {
        return Err(StoreError::Database(format!(
            "the database has schema version {current}, newer than version {supported} \
             that this binary knows; run a newer gradebook"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = index + 1;
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Database(format!("applying migration {version}: {e}")))?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(db("setting the schema version"))?;
        tracing::info!(version, "applied grading schema migration");
    }
    tx.commit().map_err(db("committing the migration"))
}

impl SqliteStore {
    /// Opens (creating it and its parent directories if needed) the
    /// database at `path`, and brings its schema up to date. Fails when the
    /// database was written by a newer binary.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Database(format!("creating {}: {e}", parent.display())))?;
        }
        let mut conn = Connection::open(path)
            .map_err(|e| StoreError::Database(format!("opening {}: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(db("setting the busy timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(db("enabling WAL"))?;
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
        migrate(&mut conn)?;
        Ok(SqliteStore {
            inner: Mutex::new(Inner {
                conn,
                clock: Clock::default(),
            }),
        })
    }

    /// Locks the connection. A panic while it was locked rolled back any
    /// open transaction (transactions roll back when dropped), so a poisoned
    /// lock is still safe to use.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl GradeStore for SqliteStore {
    fn list_students(
        &self,
        page_size: usize,
        after: Option<&StudentCursor>,
    ) -> Result<(Vec<Student>, Option<StudentCursor>), StoreError> {
        let page_size = page_size.max(1);
        // One more than asked, to learn whether another page follows.
        let fetch = i64::try_from(page_size.saturating_add(1)).unwrap_or(i64::MAX);
        let inner = self.lock();
        let order = "ORDER BY s.last_name, s.first_name, s.id";
        let rows = match after {
            None => {
                let mut stmt = inner
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {STUDENT_COLUMNS} FROM students s {order} LIMIT ?1"
                    ))
                    .map_err(db("listing students"))?;
                stmt.query_map([fetch], StudentRow::read)
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(db("listing students"))?
            }
            Some(cursor) => {
                // The row value compares each column with its own collation
                // (NOCASE for the names), the same as the ORDER BY.
                let mut stmt = inner
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {STUDENT_COLUMNS} FROM students s
                         WHERE (s.last_name, s.first_name, s.id) > (?1, ?2, ?3)
                         {order} LIMIT ?4"
                    ))
                    .map_err(db("listing students"))?;
                stmt.query_map(
                    params![cursor.last_name, cursor.first_name, cursor.id, fetch],
                    StudentRow::read,
                )
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db("listing students"))?
            }
        };
        drop(inner);
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

    fn get_student(&self, id: &str) -> Result<StudentDetail, StoreError> {
        let id = canonical_id("id", id)?;
        let mut inner = self.lock();
        // One read transaction, so the grades match the average.
        let tx = inner.conn.transaction().map_err(db("reading a student"))?;
        let student = require_student(&tx, &id)?;
        let grades = grades_of(&tx, &id)?;
        tx.commit().map_err(db("reading a student"))?;
        Ok(StudentDetail { student, grades })
    }

    fn create_student(&self, new: &NewStudent) -> Result<Student, StoreError> {
        let mut inner = self.lock();
        let created_at = inner.clock.now();
        insert_student(&inner.conn, new, created_at)
    }

    fn update_student(&self, id: &str, new: &NewStudent) -> Result<Student, StoreError> {
        let id = canonical_id("id", id)?;
        let mut inner = self.lock();
        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("renaming a student"))?;
        let changed = tx
            .execute(
                "UPDATE students SET first_name = ?1, last_name = ?2 WHERE id = ?3",
                params![new.first_name, new.last_name, id],
            )
            .map_err(db("renaming a student"))?;
        if changed == 0 {
            return Err(StoreError::student_not_found(&id));
        }
        let student = require_student(&tx, &id)?;
        tx.commit().map_err(db("renaming a student"))?;
        Ok(student)
    }

    fn delete_student(&self, id: &str) -> Result<Student, StoreError> {
        let id = canonical_id("id", id)?;
        let mut inner = self.lock();
        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("removing a student"))?;
        let student = require_student(&tx, &id)?;
        // ON DELETE CASCADE would do it too; explicit, it does not depend on
        // foreign keys being enabled.
        tx.execute("DELETE FROM grades WHERE student_id = ?1", [&id])
            .map_err(db("removing a student's grades"))?;
        tx.execute("DELETE FROM students WHERE id = ?1", [&id])
            .map_err(db("removing a student"))?;
        tx.commit().map_err(db("removing a student"))?;
        Ok(student)
    }

    fn add_grades(
        &self,
        batch: &[(String, NewGrade)],
    ) -> Vec<Result<(Grade, Student), StoreError>> {
        if batch.is_empty() {
            return Vec::new();
        }
        let mut guard = self.lock();
        let Inner { conn, clock } = &mut *guard;
        let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let error = StoreError::Database(format!("starting to add grades: {e}"));
                return batch.iter().map(|_| Err(error.clone())).collect();
            }
        };
        let mut results = Vec::with_capacity(batch.len());
        for (student_id, new) in batch {
            let result = canonical_id("student_id", student_id)
                .map_err(StoreError::from)
                .and_then(|student_id| {
                    // A savepoint per item: a failed item leaves no trace and
                    // the others go on.
                    let savepoint = tx.savepoint().map_err(db("adding a grade"))?;
                    let added = add_one_grade(&savepoint, &student_id, new, clock.now())?;
                    savepoint.commit().map_err(db("adding a grade"))?;
                    Ok(added)
                });
            results.push(result);
        }
        if let Err(e) = tx.commit() {
            let error = StoreError::Database(format!("committing grades: {e}"));
            for result in &mut results {
                if result.is_ok() {
                    *result = Err(error.clone());
                }
            }
        }
        results
    }

    fn update_grade(
        &self,
        student_id: &str,
        grade_id: &str,
        new: &NewGrade,
    ) -> Result<(Grade, Student), StoreError> {
        let student_id = canonical_id("student_id", student_id)?;
        let grade_id = canonical_id("grade_id", grade_id)?;
        let mut inner = self.lock();
        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("changing a grade"))?;
        require_student(&tx, &student_id)?;
        let old = find_grade(&tx, &student_id, &grade_id)?
            .ok_or_else(|| StoreError::grade_not_found(&grade_id))?;
        tx.execute(
            "UPDATE grades SET title = ?1, type = ?2, score = ?3 WHERE id = ?4",
            params![new.title, new.grade_type.as_str(), new.score, grade_id],
        )
        .map_err(db("changing a grade"))?;
        let student = require_student(&tx, &student_id)?;
        tx.commit().map_err(db("changing a grade"))?;
        let grade = Grade {
            title: new.title.clone(),
            grade_type: new.grade_type,
            score: new.score,
            ..old
        };
        Ok((grade, student))
    }

    fn delete_grade(
        &self,
        student_id: &str,
        grade_id: &str,
    ) -> Result<(Grade, Student), StoreError> {
        let student_id = canonical_id("student_id", student_id)?;
        let grade_id = canonical_id("grade_id", grade_id)?;
        let mut inner = self.lock();
        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("removing a grade"))?;
        require_student(&tx, &student_id)?;
        let grade = find_grade(&tx, &student_id, &grade_id)?
            .ok_or_else(|| StoreError::grade_not_found(&grade_id))?;
        tx.execute("DELETE FROM grades WHERE id = ?1", [&grade_id])
            .map_err(db("removing a grade"))?;
        let student = require_student(&tx, &student_id)?;
        tx.commit().map_err(db("removing a grade"))?;
        Ok((grade, student))
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        let inner = self.lock();
        inner
            .conn
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM students)", [], |row| {
                row.get(0)
            })
            .map_err(db("counting students"))
    }

    fn seed_demo_data(&self) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let tx = inner
            .conn
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
}

/// Microseconds in an hour.
const HOUR_MICROS: i64 = 3_600_000_000;
/// Microseconds in a day.
const DAY_MICROS: i64 = 24 * HOUR_MICROS;

/// The demo students: first name, last name, grades (title, type, score).
type DemoStudent = (
    &'static str,
    &'static str,
    &'static [(&'static str, GradeType, f64)],
);

/// What [`GradeStore::seed_demo_data`] adds.
const DEMO_STUDENTS: &[DemoStudent] = &[
    (
        "Amara",
        "Okafor",
        &[
            ("Fractions quiz", GradeType::Quiz, 92.0),
            ("Reading log, week 1", GradeType::Homework, 100.0),
            ("Chapter 3 test", GradeType::Test, 88.5),
            ("Midterm exam", GradeType::Exam, 84.0),
        ],
    ),
    (
        "Lucas",
        "Martin",
        &[
            ("Fractions quiz", GradeType::Quiz, 71.0),
            ("Chapter 3 test", GradeType::Test, 64.5),
            ("Midterm exam", GradeType::Exam, 77.0),
        ],
    ),
    (
        "Sofía",
        "García",
        &[
            ("Fractions quiz", GradeType::Quiz, 85.0),
            ("Reading log, week 1", GradeType::Homework, 95.0),
            ("Chapter 3 test", GradeType::Test, 91.0),
            ("Lab report: plant growth", GradeType::Homework, 89.5),
            ("Midterm exam", GradeType::Exam, 93.0),
        ],
    ),
    (
        "Kenji",
        "Watanabe",
        &[
            ("Fractions quiz", GradeType::Quiz, 98.0),
            ("Chapter 3 test", GradeType::Test, 95.5),
            ("Lab report: plant growth", GradeType::Homework, 82.0),
            ("Midterm exam", GradeType::Exam, 97.0),
        ],
    ),
    (
        "Emma",
        "Schmidt",
        &[
            ("Reading log, week 1", GradeType::Homework, 60.0),
            ("Fractions quiz", GradeType::Quiz, 55.5),
            ("Chapter 3 test", GradeType::Test, 68.0),
        ],
    ),
    (
        "Noah",
        "O'Brien",
        &[
            ("Fractions quiz", GradeType::Quiz, 79.0),
            ("Reading log, week 1", GradeType::Homework, 90.0),
            ("Chapter 3 test", GradeType::Test, 74.5),
            ("Lab report: plant growth", GradeType::Homework, 86.0),
            ("Midterm exam", GradeType::Exam, 81.0),
        ],
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::PathBuf;

    use super::*;
    use crate::model::grading::average;

    fn temp_store() -> (tempfile::TempDir, PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grading.db");
        let store = SqliteStore::open(&path).unwrap();
        (dir, path, store)
    }

    fn student(first: &str, last: &str) -> NewStudent {
        NewStudent::new(first, last).unwrap()
    }

    fn grade(title: &str, grade_type: GradeType, score: f64) -> NewGrade {
        NewGrade::new(title, grade_type, score).unwrap()
    }

    fn add_one(store: &SqliteStore, student_id: &str, new: NewGrade) -> (Grade, Student) {
        store
            .add_grades(&[(student_id.to_owned(), new)])
            .pop()
            .unwrap()
            .unwrap()
    }

    fn user_version(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    fn grade_rows(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM grades", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn open_creates_parent_directories_and_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/grading.db");
        let store = SqliteStore::open(&path).unwrap();
        assert!(path.exists());
        let inner = store.lock();
        let mode: String = inner
            .conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = inner
            .conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
        let fk: i64 = inner
            .conn
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn migrations_are_idempotent_and_data_survives_reopen() {
        let (_dir, path, store) = temp_store();
        assert_eq!(user_version(&path), MIGRATIONS.len() as i64);
        let s = store.create_student(&student("Ada", "Lovelace")).unwrap();
        let (g, _) = add_one(&store, &s.id, grade("Engines quiz", GradeType::Quiz, 97.5));
        let before = store.get_student(&s.id).unwrap();
        drop(store);

        for _ in 0..2 {
            let store = SqliteStore::open(&path).unwrap();
            assert_eq!(user_version(&path), MIGRATIONS.len() as i64);
            let after = store.get_student(&s.id).unwrap();
            assert_eq!(after, before);
            assert_eq!(after.grades, vec![g.clone()]);
            assert!(!store.is_empty().unwrap());
        }
    }

    #[test]
    fn a_newer_database_is_refused() {
        let (_dir, path, store) = temp_store();
        drop(store);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StoreError::Database(_)), "{err:?}");
        assert!(
            message.contains("version 99")
                && message.contains(&format!("version {}", MIGRATIONS.len())),
            "{message}"
        );
        assert_eq!(user_version(&path), 99, "left untouched");
    }

    #[test]
    fn students_crud() {
        let (_dir, _path, store) = temp_store();
        assert!(store.is_empty().unwrap());
        let created = store.create_student(&student(" Zoë ", "Ødegaard")).unwrap();
        assert_eq!(created.first_name, "Zoë");
        assert_eq!(created.average, None);
        assert_eq!(created.grade_count, 0);
        assert!(created.created_at <= SystemTime::now());
        assert!(!store.is_empty().unwrap());

        let detail = store.get_student(&created.id).unwrap();
        assert_eq!(detail.student, created);
        assert!(detail.grades.is_empty());
        // Any UUID spelling finds it.
        assert_eq!(
            store
                .get_student(&created.id.to_uppercase())
                .unwrap()
                .student,
            created
        );

        let renamed = store
            .update_student(&created.id, &student("Zoe", "Odegaard"))
            .unwrap();
        assert_eq!(renamed.first_name, "Zoe");
        assert_eq!(renamed.last_name, "Odegaard");
        assert_eq!(renamed.created_at, created.created_at);
        assert_eq!(store.get_student(&created.id).unwrap().student, renamed);

        let deleted = store.delete_student(&created.id).unwrap();
        assert_eq!(deleted, renamed);
        assert!(store.is_empty().unwrap());
    }

    #[test]
    fn not_found_and_invalid_ids() {
        let (_dir, _path, store) = temp_store();
        let missing = new_id();
        let not_found = StoreError::student_not_found(&missing);
        assert_eq!(store.get_student(&missing).unwrap_err(), not_found);
        assert_eq!(
            store
                .update_student(&missing, &student("A", "B"))
                .unwrap_err(),
            not_found
        );
        assert_eq!(store.delete_student(&missing).unwrap_err(), not_found);
        assert_eq!(
            not_found.to_string(),
            format!("student \"{missing}\" not found")
        );
        let g = grade("Quiz", GradeType::Quiz, 50.0);
        assert_eq!(
            store.update_grade(&missing, &new_id(), &g).unwrap_err(),
            not_found
        );
        assert_eq!(
            store.delete_grade(&missing, &new_id()).unwrap_err(),
            not_found
        );

        let s = store.create_student(&student("A", "B")).unwrap();
        let other = store.create_student(&student("C", "D")).unwrap();
        let (g_other, _) = add_one(&store, &other.id, g.clone());
        let missing_grade = new_id();
        assert_eq!(
            store.update_grade(&s.id, &missing_grade, &g).unwrap_err(),
            StoreError::grade_not_found(&missing_grade)
        );
        // A grade of another student is not found under this one.
        assert_eq!(
            store.delete_grade(&s.id, &g_other.id).unwrap_err(),
            StoreError::grade_not_found(&g_other.id)
        );
        assert_eq!(store.get_student(&other.id).unwrap().grades.len(), 1);

        let err = store.get_student("xyz").unwrap_err();
        assert_eq!(err.to_string(), "id: \"xyz\" is not a valid id");
        assert!(matches!(err, StoreError::Invalid(_)));
        assert_eq!(
            store.delete_grade(&s.id, "nope").unwrap_err().to_string(),
            "grade_id: \"nope\" is not a valid id"
        );
    }

    #[test]
    fn grades_and_averages() {
        let (_dir, _path, store) = temp_store();
        let s = store.create_student(&student("Grace", "Hopper")).unwrap();
        let (g1, after1) = add_one(&store, &s.id, grade("Quiz 1", GradeType::Quiz, 90.0));
        assert_eq!(after1.average, Some(90.0));
        assert_eq!(after1.grade_count, 1);
        let (g2, after2) = add_one(&store, &s.id, grade("Test 1", GradeType::Test, 75.5));
        assert_eq!(after2.average, Some(82.75));
        let (g3, after3) = add_one(
            &store,
            &s.id,
            grade("Homework 1", GradeType::Homework, 70.0),
        );
        assert_eq!(after3.average, average(&[90.0, 75.5, 70.0]));
        assert_eq!(after3.grade_count, 3);

        let detail = store.get_student(&s.id).unwrap();
        assert_eq!(detail.grades, vec![g1.clone(), g2.clone(), g3.clone()]);
        assert_eq!(detail.student, after3);

        let (changed, after) = store
            .update_grade(&s.id, &g2.id, &grade("Final exam", GradeType::Exam, 100.0))
            .unwrap();
        assert_eq!(changed.id, g2.id);
        assert_eq!(changed.created_at, g2.created_at);
        assert_eq!(changed.title, "Final exam");
        assert_eq!(changed.grade_type, GradeType::Exam);
        assert_eq!(after.average, average(&[90.0, 100.0, 70.0]));
        assert_eq!(store.get_student(&s.id).unwrap().grades[1], changed);

        let (removed, after) = store.delete_grade(&s.id, &g1.id).unwrap();
        assert_eq!(removed, g1);
        assert_eq!(after.average, Some(85.0));
        assert_eq!(after.grade_count, 2);

        store.delete_grade(&s.id, &g2.id).unwrap();
        let (_, after) = store.delete_grade(&s.id, &g3.id).unwrap();
        assert_eq!(after.average, None);
        assert_eq!(after.grade_count, 0);
    }

    #[test]
    fn deleting_a_student_deletes_its_grades() {
        let (_dir, path, store) = temp_store();
        let s = store.create_student(&student("Alan", "Turing")).unwrap();
        let keep = store.create_student(&student("Kept", "Student")).unwrap();
        add_one(&store, &s.id, grade("Quiz", GradeType::Quiz, 80.0));
        let (g, _) = add_one(&store, &s.id, grade("Exam", GradeType::Exam, 60.0));
        add_one(&store, &keep.id, grade("Quiz", GradeType::Quiz, 50.0));
        assert_eq!(grade_rows(&path), 3);

        let deleted = store.delete_student(&s.id).unwrap();
        assert_eq!(deleted.grade_count, 2, "as it was");
        assert_eq!(deleted.average, Some(70.0));
        assert_eq!(grade_rows(&path), 1);
        assert_eq!(
            store.delete_grade(&s.id, &g.id).unwrap_err(),
            StoreError::student_not_found(&s.id)
        );
        assert_eq!(store.get_student(&keep.id).unwrap().grades.len(), 1);
    }

    #[test]
    fn add_grades_commits_a_batch_with_per_item_results() {
        let (_dir, path, store) = temp_store();
        let a = store.create_student(&student("Ann", "A")).unwrap();
        let b = store.create_student(&student("Bob", "B")).unwrap();
        let unknown = new_id();
        let batch = vec![
            (a.id.clone(), grade("One", GradeType::Quiz, 80.0)),
            (unknown.clone(), grade("Lost", GradeType::Test, 10.0)),
            (a.id.clone(), grade("Two", GradeType::Test, 90.0)),
            ("bad".to_owned(), grade("Bad", GradeType::Exam, 20.0)),
            (b.id.clone(), grade("Three", GradeType::Homework, 70.0)),
        ];
        let results = store.add_grades(&batch);
        assert_eq!(results.len(), 5);

        let (g1, s1) = results[0].clone().unwrap();
        assert_eq!(g1.title, "One");
        assert_eq!(s1.average, Some(80.0));
        assert_eq!(
            results[1].clone().unwrap_err(),
            StoreError::student_not_found(&unknown)
        );
        let (g2, s2) = results[2].clone().unwrap();
        assert_eq!(s2.average, Some(85.0), "sees the batch's earlier grade");
        assert_eq!(s2.grade_count, 2);
        assert_eq!(
            results[3].clone().unwrap_err().to_string(),
            "student_id: \"bad\" is not a valid id"
        );
        let (g3, s3) = results[4].clone().unwrap();
        assert_eq!(s3.id, b.id);
        assert_eq!(s3.average, Some(70.0));

        assert_eq!(grade_rows(&path), 3);
        assert_eq!(store.get_student(&a.id).unwrap().grades, vec![g1, g2]);
        assert_eq!(store.get_student(&b.id).unwrap().grades, vec![g3]);
        assert!(store.add_grades(&[]).is_empty());
    }

    #[test]
    fn grades_are_listed_in_the_order_added() {
        let (_dir, _path, store) = temp_store();
        let s = store.create_student(&student("Order", "Test")).unwrap();
        let batch: Vec<_> = (0..20)
            .map(|i| (s.id.clone(), grade(&format!("G{i}"), GradeType::Quiz, 50.0)))
            .collect();
        let results = store.add_grades(&batch);
        assert!(results.iter().all(Result::is_ok));
        let titles: Vec<_> = store
            .get_student(&s.id)
            .unwrap()
            .grades
            .into_iter()
            .map(|g| g.title)
            .collect();
        let expected: Vec<_> = (0..20).map(|i| format!("G{i}")).collect();
        assert_eq!(titles, expected);
    }

    #[test]
    fn paging_through_250_students() {
        let (_dir, _path, store) = temp_store();
        // Mixed case and repeated names, so order depends on NOCASE and ids.
        let lasts = [
            "smith", "Smith", "de Vries", "Dawson", "ABBOTT", "zhang", "Young",
        ];
        let firsts = ["amy", "Ben", "carl", "Dana"];
        for i in 0..250 {
            let last = lasts[i % lasts.len()];
            let first = firsts[(i / lasts.len()) % firsts.len()];
            store.create_student(&student(first, last)).unwrap();
        }

        let mut all = Vec::new();
        let mut sizes = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let cursor = token.as_deref().map(|t| StudentCursor::decode(t).unwrap());
            let (page, next) = store.list_students(100, cursor.as_ref()).unwrap();
            sizes.push(page.len());
            all.extend(page);
            match next {
                Some(next) => token = Some(next.encode()),
                None => break,
            }
        }
        assert_eq!(sizes, vec![100, 100, 50]);
        let ids: HashSet<_> = all.iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids.len(), 250, "no duplicates");
        let key = |s: &Student| {
            (
                s.last_name.to_ascii_lowercase(),
                s.first_name.to_ascii_lowercase(),
                s.id.clone(),
            )
        };
        assert!(
            all.windows(2).all(|w| key(&w[0]) < key(&w[1])),
            "ordered by last name, first name, id ignoring case"
        );
        assert_eq!(all[0].last_name, "ABBOTT");
    }

    #[test]
    fn no_next_page_when_the_last_page_is_full() {
        let (_dir, _path, store) = temp_store();
        let (page, next) = store.list_students(10, None).unwrap();
        assert!(page.is_empty() && next.is_none());
        for i in 0..4 {
            store
                .create_student(&student(&format!("F{i}"), "L"))
                .unwrap();
        }
        let (page, next) = store.list_students(2, None).unwrap();
        assert_eq!(page.len(), 2);
        let (page, next) = store.list_students(2, next.as_ref()).unwrap();
        assert_eq!(page.len(), 2);
        assert_eq!(next, None);
        let (page, _) = store.list_students(0, None).unwrap();
        assert_eq!(page.len(), 1, "0 counts as 1");
    }

    #[test]
    fn listing_includes_averages() {
        let (_dir, _path, store) = temp_store();
        let s = store.create_student(&student("Avg", "Test")).unwrap();
        add_one(&store, &s.id, grade("A", GradeType::Quiz, 100.0));
        add_one(&store, &s.id, grade("B", GradeType::Quiz, 50.0));
        store.create_student(&student("No", "Grades")).unwrap();
        let (page, _) = store.list_students(10, None).unwrap();
        assert_eq!(page[0].last_name, "Grades");
        assert_eq!(page[0].average, None);
        assert_eq!(page[1].average, Some(75.0));
        assert_eq!(page[1].grade_count, 2);
    }

    #[test]
    fn cursors_round_trip_and_reject_other_tokens() {
        let cursor = StudentCursor {
            last_name: "Ødegaard".into(),
            first_name: "Zoë 📚".into(),
            id: new_id(),
        };
        let token = cursor.encode();
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(StudentCursor::decode(&token).unwrap(), cursor);
        let bad_id = StudentCursor {
            id: "nope".into(),
            ..cursor.clone()
        };
        for bad in [
            "".to_owned(),
            "abc".to_owned(),
            "zz".to_owned(),
            "ff".to_owned(),
            token[2..].to_owned(),
            bad_id.encode(),
            "a".repeat(MAX_TOKEN_CHARS + 2),
        ] {
            assert_eq!(
                StudentCursor::decode(&bad).unwrap_err().to_string(),
                "page_token: not a token from a previous page",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn demo_data_is_seeded_once() {
        let (_dir, path, store) = temp_store();
        assert!(store.is_empty().unwrap());
        assert_eq!(store.seed_demo_data().unwrap(), 6);
        assert!(!store.is_empty().unwrap());
        assert_eq!(store.seed_demo_data().unwrap(), 0);
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.seed_demo_data().unwrap(), 0);

        let (students, next) = store.list_students(100, None).unwrap();
        assert_eq!(students.len(), 6);
        assert!(next.is_none());
        let mut types = HashSet::new();
        for s in &students {
            let detail = store.get_student(&s.id).unwrap();
            assert!((3..=5).contains(&detail.grades.len()), "{s:?}");
            let scores: Vec<f64> = detail.grades.iter().map(|g| g.score).collect();
            let expected = average(&scores).unwrap();
            assert!((s.average.unwrap() - expected).abs() < 1e-9);
            assert!(
                detail
                    .grades
                    .windows(2)
                    .all(|w| w[0].created_at < w[1].created_at)
            );
            types.extend(detail.grades.iter().map(|g| g.grade_type));
        }
        assert_eq!(types.len(), 4, "every type appears");
    }

    #[test]
    fn the_store_is_usable_from_many_threads() {
        let (_dir, _path, store) = temp_store();
        let store = std::sync::Arc::new(store);
        let s = store.create_student(&student("Many", "Threads")).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let id = s.id.clone();
                std::thread::spawn(move || {
                    let batch: Vec<_> = (0..5)
                        .map(|j| {
                            (
                                id.clone(),
                                grade(&format!("T{i}-{j}"), GradeType::Quiz, 60.0),
                            )
                        })
                        .collect();
                    store.add_grades(&batch)
                })
            })
            .collect();
        for handle in handles {
            assert!(handle.join().unwrap().iter().all(Result::is_ok));
        }
        let detail = store.get_student(&s.id).unwrap();
        assert_eq!(detail.grades.len(), 40);
        assert_eq!(detail.student.average, Some(60.0));
    }
}
