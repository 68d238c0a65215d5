//! Rows as read from either engine, and their conversion to domain values
//! (the same SQL columns in both engines).

use crate::grading::store::StoreError;
use crate::grading::store::time::time_from_micros;
use crate::model::grading::{Grade, GradeType, Student};

/// The columns of a student with its average and grade count, from `s`.
pub(crate) const STUDENT_COLUMNS: &str = "s.id, s.first_name, s.last_name, s.created_at,
     (SELECT AVG(g.score) FROM grades g WHERE g.student_id = s.id),
     (SELECT COUNT(*) FROM grades g WHERE g.student_id = s.id)";

/// The columns of a grade.
pub(crate) const GRADE_COLUMNS: &str = "id, student_id, title, type, score, created_at";

/// A student row as read, before conversion.
pub(crate) struct StudentRow {
    pub(crate) id: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) created_at: i64,
    pub(crate) average: Option<f64>,
    pub(crate) grade_count: i64,
}

impl StudentRow {
    /// The student of the row.
    pub(crate) fn into_student(self) -> Result<Student, StoreError> {
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
pub(crate) struct GradeRow {
    pub(crate) id: String,
    pub(crate) student_id: String,
    pub(crate) title: String,
    pub(crate) grade_type: String,
    pub(crate) score: f64,
    pub(crate) created_at: i64,
}

impl GradeRow {
    /// The grade of the row.
    pub(crate) fn into_grade(self) -> Result<Grade, StoreError> {
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
