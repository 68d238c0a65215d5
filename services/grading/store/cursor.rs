//! Page tokens of the student listing and of a student's grades: a
//! [`StudentCursor`] or [`GradeCursor`] is the sort key of the last item of
//! a page, and encodes to an opaque hex token.

use crate::grading::store::time::micros_from_time;
use crate::model::grading::{Grade, GradePage, InvalidField, Student, canonical_id};
use crate::model::page_token;

/// The longest page token [`StudentCursor::decode`] accepts, in characters.
const MAX_TOKEN_CHARS: usize = 4096;
/// The version tag at the start of a page token of students.
const TOKEN_VERSION: &str = "v1";
/// The version tag at the start of a page token of grades.
const GRADE_TOKEN_VERSION: &str = "g1";
/// Separates the parts of a page token before it is hex-encoded (names
/// cannot contain it: control characters are rejected).
const TOKEN_SEPARATOR: char = '\u{1f}';

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
        page_token::encode(&joined)
    }

    /// Reads a page token made by [`StudentCursor::encode`]; any other
    /// string is an error about the field `page_token`.
    pub fn decode(token: &str) -> Result<Self, InvalidField> {
        let invalid = page_token::invalid;
        let joined = page_token::decode(token, MAX_TOKEN_CHARS)?;
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

/// Where a page of grades ends: the sort key of its last grade (grades are
/// ordered by creation time, then id). The next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GradeCursor {
    /// The creation time of the last grade of the page, in microseconds
    /// since the epoch (as stored).
    pub created_at: i64,
    /// The id of the last grade of the page.
    pub id: String,
}

impl GradeCursor {
    /// The cursor before every grade: where the first page starts.
    pub fn start() -> Self {
        GradeCursor {
            created_at: i64::MIN,
            id: String::new(),
        }
    }

    /// The cursor after `grade`.
    pub fn after(grade: &Grade) -> Self {
        GradeCursor {
            created_at: micros_from_time(grade.created_at),
            id: grade.id.clone(),
        }
    }

    /// The page of `grades`, read with a limit of `page_size + 1` after a
    /// cursor: the first `page_size`, and the token of the next page when
    /// the extra one shows that more follow.
    pub fn page(mut grades: Vec<Grade>, page_size: usize) -> GradePage {
        let next = if grades.len() > page_size {
            grades.truncate(page_size);
            grades.last().map(|last| GradeCursor::after(last).encode())
        } else {
            None
        };
        GradePage { grades, next }
    }

    /// The opaque page token of the cursor.
    pub fn encode(&self) -> String {
        page_token::encode(&format!(
            "{GRADE_TOKEN_VERSION}{TOKEN_SEPARATOR}{}{TOKEN_SEPARATOR}{}",
            self.created_at, self.id
        ))
    }

    /// Reads a page token made by [`GradeCursor::encode`]; any other string
    /// is an error about the field `page_token`.
    pub fn decode(token: &str) -> Result<Self, InvalidField> {
        let invalid = page_token::invalid;
        let joined = page_token::decode(token, MAX_TOKEN_CHARS)?;
        let mut parts = joined.split(TOKEN_SEPARATOR);
        let (Some(GRADE_TOKEN_VERSION), Some(created_at), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        Ok(GradeCursor {
            created_at: created_at.parse().map_err(|_| invalid())?,
            id: canonical_id("page_token", id).map_err(|_| invalid())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::grading::new_id;

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
    fn grade_cursors_round_trip_and_reject_student_tokens() {
        let cursor = GradeCursor {
            created_at: 1_700_000_000_123_456,
            id: new_id(),
        };
        let token = cursor.encode();
        assert_eq!(GradeCursor::decode(&token).unwrap(), cursor);
        let student = StudentCursor {
            last_name: "1".into(),
            first_name: "2".into(),
            id: new_id(),
        };
        let not_a_number = page_token::encode(&format!(
            "{GRADE_TOKEN_VERSION}{TOKEN_SEPARATOR}soon{TOKEN_SEPARATOR}{}",
            cursor.id
        ));
        for bad in [
            String::new(),
            student.encode(),
            not_a_number,
            token[2..].to_owned(),
        ] {
            assert_eq!(
                GradeCursor::decode(&bad).unwrap_err().to_string(),
                "page_token: not a token from a previous page",
                "{bad:?}"
            );
        }
        assert!(StudentCursor::decode(&token).is_err());
    }
}
