//! Page tokens of the student listing: a [`StudentCursor`] is the sort key
//! of the last student of a page, and encodes to an opaque hex token.

use crate::model::grading::{InvalidField, Student, canonical_id};
use crate::model::page_token;

/// The longest page token [`StudentCursor::decode`] accepts, in characters.
const MAX_TOKEN_CHARS: usize = 4096;
/// The version tag at the start of a page token.
const TOKEN_VERSION: &str = "v1";
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
}
