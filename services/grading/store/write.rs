//! The writes of the store as values: what each changes, how its stored
//! answer is read back for a repeated request id, and the change it
//! publishes. Both engines apply the same [`Write`]s.

use crate::grading::store::StoreError;
use crate::model::grading::{
    Change, ChangeKind, NewGrade, NewStudent, RequestKey, WriteAnswer, canonical_id,
};

/// One write to the store. Ids may be in any UUID spelling until
/// [`Write::canonical`].
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Adds a student.
    CreateStudent(NewStudent),
    /// Renames a student.
    UpdateStudent {
        /// The student's id.
        id: String,
        /// The new names.
        student: NewStudent,
    },
    /// Removes a student with every grade.
    DeleteStudent {
        /// The student's id.
        id: String,
    },
    /// Adds a grade.
    AddGrade {
        /// The student's id.
        student_id: String,
        /// The grade.
        grade: NewGrade,
    },
    /// Changes a grade.
    UpdateGrade {
        /// The student's id.
        student_id: String,
        /// The grade's id.
        grade_id: String,
        /// The new values.
        grade: NewGrade,
    },
    /// Removes a grade.
    DeleteGrade {
        /// The student's id.
        student_id: String,
        /// The grade's id.
        grade_id: String,
    },
}

/// A write with the request key it came with, one item of
/// [`super::GradeStore::write`].
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRequest {
    /// The write.
    pub write: Write,
    /// The request's id and fingerprint, if the client gave an id.
    pub request: Option<RequestKey>,
}

impl Write {
    /// The write with its ids checked and in their stored spelling.
    pub fn canonical(&self) -> Result<Write, StoreError> {
        Ok(match self {
            Write::CreateStudent(new) => Write::CreateStudent(new.clone()),
            Write::UpdateStudent { id, student } => Write::UpdateStudent {
                id: canonical_id("id", id)?,
                student: student.clone(),
            },
            Write::DeleteStudent { id } => Write::DeleteStudent {
                id: canonical_id("id", id)?,
            },
            Write::AddGrade { student_id, grade } => Write::AddGrade {
                student_id: canonical_id("student_id", student_id)?,
                grade: grade.clone(),
            },
            Write::UpdateGrade {
                student_id,
                grade_id,
                grade,
            } => Write::UpdateGrade {
                student_id: canonical_id("student_id", student_id)?,
                grade_id: canonical_id("grade_id", grade_id)?,
                grade: grade.clone(),
            },
            Write::DeleteGrade {
                student_id,
                grade_id,
            } => Write::DeleteGrade {
                student_id: canonical_id("student_id", student_id)?,
                grade_id: canonical_id("grade_id", grade_id)?,
            },
        })
    }

    /// The student whose row the write locks, if any (not a new student's).
    pub fn locked_student(&self) -> Option<&str> {
        match self {
            Write::CreateStudent(_) => None,
            Write::UpdateStudent { id, .. } | Write::DeleteStudent { id } => Some(id),
            Write::AddGrade { student_id, .. }
            | Write::UpdateGrade { student_id, .. }
            | Write::DeleteGrade { student_id, .. } => Some(student_id),
        }
    }

    /// What kind of change the write makes.
    pub fn kind(&self) -> ChangeKind {
        match self {
            Write::CreateStudent(_) => ChangeKind::StudentCreated,
            Write::UpdateStudent { .. } => ChangeKind::StudentUpdated,
            Write::DeleteStudent { .. } => ChangeKind::StudentDeleted,
            Write::AddGrade { .. } => ChangeKind::GradeAdded,
            Write::UpdateGrade { .. } => ChangeKind::GradeUpdated,
            Write::DeleteGrade { .. } => ChangeKind::GradeDeleted,
        }
    }

    /// Reads the answer stored for this write's request id.
    pub fn decode_answer(&self, bytes: &[u8]) -> Result<WriteAnswer, StoreError> {
        let corrupt = |e: crate::model::grading::MalformedMessage| StoreError::Corrupt(e.0);
        if self.kind().is_grade_change() {
            let (grade, student) = WriteAnswer::decode_grade(bytes).map_err(corrupt)?;
            Ok(WriteAnswer::Grade(grade, student))
        } else {
            Ok(WriteAnswer::Student(
                WriteAnswer::decode_student(bytes).map_err(corrupt)?,
            ))
        }
    }

    /// The change this write made, given its answer.
    pub fn change(&self, answer: &WriteAnswer) -> Change {
        let (student, grade) = match answer {
            WriteAnswer::Student(student) => (student.clone(), None),
            WriteAnswer::Grade(grade, student) => (student.clone(), Some(grade.clone())),
        };
        Change {
            kind: self.kind(),
            student,
            grade,
        }
    }
}

/// What is stored under a request id: the request's fingerprint and the
/// answer (protobuf bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    /// The fingerprint of the request that used the id first.
    pub fingerprint: Vec<u8>,
    /// Its answer.
    pub answer: Vec<u8>,
}

/// What a request key says about a write, given what is stored under its
/// id: `Ok(None)` to apply the write, `Ok(Some(answer))` for a repeat, or a
/// conflict.
pub fn check_repeat(
    write: &Write,
    key: &RequestKey,
    stored: Option<StoredRequest>,
) -> Result<Option<WriteAnswer>, StoreError> {
    match stored {
        None => Ok(None),
        Some(stored) if stored.fingerprint != key.fingerprint => Err(StoreError::RequestConflict {
            request_id: key.id.clone(),
        }),
        Some(stored) => write.decode_answer(&stored.answer).map(Some),
    }
}
