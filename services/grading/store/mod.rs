//! The storage of the grading service: students and their grades behind the
//! async [`GradeStore`] trait, shaped by the domain, with two engines.
//!
//! Every write may carry a [`RequestKey`]: the key is stored with the write's
//! answer in the same transaction, so a repeat of the same request returns
//! the first answer and writes nothing, and the same id with another request
//! is [`StoreError::RequestConflict`]. Keys are kept at least
//! [`REQUEST_RETENTION`] and then removed by [`GradeStore::prune`].
//!
//! Every committed change reaches the receivers of [`GradeStore::subscribe`],
//! in commit order; with PostgreSQL, whatever instance made it.
//!
//! # Layout
//!
//! - [`cursor`]: page tokens of the student listing and of grades.
//! - [`write`]: the writes as values, their answers and their changes.
//! - [`sqlite`]: [`SqliteStore`], embedded SQLite (the default).
//! - [`postgres`]: [`PostgresStore`], PostgreSQL shared by several instances.
//! - [`demo`]: the demo data.
//! - `rows`: rows as read, to domain values.
//! - `time`: creation times.

pub mod cursor;
pub mod demo;
pub mod postgres;
mod rows;
pub mod sqlite;
pub mod sqlite_schema;
mod time;
pub mod write;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

pub use crate::model::grading::RequestKey;
use crate::model::grading::{
    Change, Grade, GradePage, InvalidField, MAX_GRADES_PER_STUDENT, NewGrade, NewStudent, Student,
    StudentDetail, WriteAnswer,
};
pub use cursor::{GradeCursor, StudentCursor};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use write::{Write, WriteRequest};

/// How long a request id and its answer are kept at least.
pub const REQUEST_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Changes buffered for each receiver of [`GradeStore::subscribe`]; a
/// receiver further behind loses changes (and learns it: `Lagged`).
pub const CHANGE_BUFFER: usize = 1024;

/// Why a store operation failed. Callers branch on the variant.
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
    /// The request id was already used for a different request.
    #[error("request_id {request_id:?} was already used for a different request")]
    RequestConflict {
        /// The request id.
        request_id: String,
    },
    /// The student has [`MAX_GRADES_PER_STUDENT`] grades already.
    #[error(
        "student {student_id:?} has {MAX_GRADES_PER_STUDENT} grades, the most one student may have; delete some before adding more"
    )]
    TooManyGrades {
        /// The student.
        student_id: String,
    },
    /// The database cannot be reached, or did not answer in time; retrying
    /// later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database's schema cannot be used or changed as asked.
    #[error(transparent)]
    Schema(#[from] crate::grading::schema::SchemaError),
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
    /// A stored row does not convert to a domain value.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Refuses a grade for `student` when it has the most grades allowed.
    pub fn check_room(student: &Student) -> Result<(), StoreError> {
        if student.grade_count >= MAX_GRADES_PER_STUDENT {
            return Err(StoreError::TooManyGrades {
                student_id: student.id.clone(),
            });
        }
        Ok(())
    }

    /// The student `id` does not exist.
    pub fn student_not_found(id: &str) -> Self {
        StoreError::NotFound {
            what: "student",
            id: id.to_owned(),
        }
    }

    /// The grade `id` does not exist.
    pub fn grade_not_found(id: &str) -> Self {
        StoreError::NotFound {
            what: "grade",
            id: id.to_owned(),
        }
    }

    /// The answer of one item of a batch whose commit failed.
    fn unexpected(answer: &str) -> Self {
        StoreError::Corrupt(format!("the store answered {answer} for this write"))
    }
}

/// A grade to add, one item of [`GradeStore::add_grades`].
#[derive(Debug, Clone, PartialEq)]
pub struct GradeToAdd {
    /// The student's id (any UUID spelling).
    pub student_id: String,
    /// The grade.
    pub grade: NewGrade,
    /// The request's id and fingerprint, if the client gave an id.
    pub request: Option<RequestKey>,
}

/// A page of students and the cursor of the next page, if any.
pub type StudentPage = (Vec<Student>, Option<StudentCursor>);

/// The storage of students and grades. Every write commits before it
/// returns; ids are checked (an invalid id is [`StoreError::Invalid`] about
/// the field `id`, `student_id` or `grade_id`) and may be in any form a UUID
/// parses from. Writes take an optional [`RequestKey`] (see the module
/// documentation).
#[tonic::async_trait]
pub trait GradeStore: Send + Sync + 'static {
    /// Lists at most `page_size` students (0 counts as 1) after the cursor,
    /// ordered by last name, first name (both ignoring ASCII case) and id;
    /// returns the cursor of the next page when more students follow.
    async fn list_students(
        &self,
        page_size: usize,
        after: Option<&StudentCursor>,
    ) -> Result<StudentPage, StoreError>;

    /// Returns one student with its first `grade_page_size` grades (0
    /// counts as 1), oldest first, read in one snapshot with the average.
    async fn get_student(
        &self,
        id: &str,
        grade_page_size: usize,
    ) -> Result<StudentDetail, StoreError>;

    /// Lists at most `page_size` grades (0 counts as 1) of the student
    /// `student_id` after the cursor, oldest first, with the token of the
    /// next page when more grades follow. A student that does not exist is
    /// [`StoreError::NotFound`].
    async fn list_grades(
        &self,
        student_id: &str,
        page_size: usize,
        after: Option<&GradeCursor>,
    ) -> Result<GradePage, StoreError>;

    /// Applies a batch of writes in one transaction (one fsync), each in
    /// its own savepoint: each has its own result, in the order of the
    /// batch (a failed item leaves no trace and the others are stored all
    /// the same). The typed methods below are the usual way in.
    async fn write(&self, batch: Vec<WriteRequest>) -> Vec<Result<WriteAnswer, StoreError>>;

    /// Whether there is no student at all.
    async fn is_empty(&self) -> Result<bool, StoreError>;

    /// Adds a few demo students with grades, in one transaction, if there is
    /// no student yet (checked in the same transaction); returns how many
    /// students were added (0 when the store was not empty). Publishes no
    /// change.
    async fn seed_demo_data(&self) -> Result<usize, StoreError>;

    /// Removes request ids older than [`REQUEST_RETENTION`] (and, where the
    /// engine keeps them, stored changes that every reader is past) as of
    /// `now`; returns how many rows went.
    async fn prune(&self, now: SystemTime) -> Result<u64, StoreError>;

    /// A receiver of every change committed from now on, in commit order.
    /// It may also get a few changes committed just before the call (a
    /// PostgreSQL store publishes what its feed reads from the outbox,
    /// which can lag the caller's own commits), so consumers apply changes
    /// idempotently, as the watch snapshot-then-changes protocol does.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>>;

    /// Adds a student, with a new id.
    async fn create_student(
        &self,
        new: &NewStudent,
        request: Option<RequestKey>,
    ) -> Result<Student, StoreError> {
        let write = Write::CreateStudent(new.clone());
        student_answer(self.write_one(write, request).await)
    }

    /// Renames a student; returns it as renamed.
    async fn update_student(
        &self,
        id: &str,
        new: &NewStudent,
        request: Option<RequestKey>,
    ) -> Result<Student, StoreError> {
        let write = Write::UpdateStudent {
            id: id.to_owned(),
            student: new.clone(),
        };
        student_answer(self.write_one(write, request).await)
    }

    /// Removes a student and every grade of theirs in one transaction;
    /// returns the student as it was.
    async fn delete_student(
        &self,
        id: &str,
        request: Option<RequestKey>,
    ) -> Result<Student, StoreError> {
        let write = Write::DeleteStudent { id: id.to_owned() };
        student_answer(self.write_one(write, request).await)
    }

    /// Adds a batch of grades in one transaction. Each item has its own
    /// result, in the order of the batch: the stored grade and the student
    /// with the new average, or why that item failed.
    async fn add_grades(
        &self,
        batch: Vec<GradeToAdd>,
    ) -> Vec<Result<(Grade, Student), StoreError>> {
        let batch = batch
            .into_iter()
            .map(|item| WriteRequest {
                write: Write::AddGrade {
                    student_id: item.student_id,
                    grade: item.grade,
                },
                request: item.request,
            })
            .collect();
        self.write(batch)
            .await
            .into_iter()
            .map(grade_answer)
            .collect()
    }

    /// Changes a grade of a student; returns the grade as changed and the
    /// student with the new average.
    async fn update_grade(
        &self,
        student_id: &str,
        grade_id: &str,
        new: &NewGrade,
        request: Option<RequestKey>,
    ) -> Result<(Grade, Student), StoreError> {
        let write = Write::UpdateGrade {
            student_id: student_id.to_owned(),
            grade_id: grade_id.to_owned(),
            grade: new.clone(),
        };
        grade_answer(self.write_one(write, request).await)
    }

    /// Removes a grade of a student; returns the grade as it was and the
    /// student with the new average.
    async fn delete_grade(
        &self,
        student_id: &str,
        grade_id: &str,
        request: Option<RequestKey>,
    ) -> Result<(Grade, Student), StoreError> {
        let write = Write::DeleteGrade {
            student_id: student_id.to_owned(),
            grade_id: grade_id.to_owned(),
        };
        grade_answer(self.write_one(write, request).await)
    }

    /// Applies one write.
    async fn write_one(
        &self,
        write: Write,
        request: Option<RequestKey>,
    ) -> Result<WriteAnswer, StoreError> {
        self.write(vec![WriteRequest { write, request }])
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::unexpected("nothing")))
    }
}

/// The student of a student write's answer.
fn student_answer(answer: Result<WriteAnswer, StoreError>) -> Result<Student, StoreError> {
    match answer? {
        WriteAnswer::Student(student) => Ok(student),
        WriteAnswer::Grade(..) => Err(StoreError::unexpected("a grade")),
    }
}

/// The grade and student of a grade write's answer.
fn grade_answer(answer: Result<WriteAnswer, StoreError>) -> Result<(Grade, Student), StoreError> {
    match answer? {
        WriteAnswer::Grade(grade, student) => Ok((grade, student)),
        WriteAnswer::Student(_) => Err(StoreError::unexpected("a student")),
    }
}
