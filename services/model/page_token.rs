//! Opaque page tokens: a cursor's text, hex-encoded, so that a client sees
//! one opaque string and cannot build or edit a cursor by hand. Every paged
//! listing (students, the merged log) writes and reads its tokens here; any
//! string that is not one of ours is an error about `page_token`.

use std::fmt::Write as _;

use crate::model::InvalidField;

/// The error about a string that is not a token from a previous page.
pub fn invalid() -> InvalidField {
    InvalidField::new("page_token", "not a token from a previous page")
}

/// The token of a cursor written as `text`.
pub fn encode(text: &str) -> String {
    let mut token = String::with_capacity(text.len() * 2);
    for byte in text.bytes() {
        // Writing to a String cannot fail.
        let _ = write!(token, "{byte:02x}");
    }
    token
}

/// The cursor text of a token made by [`encode`], at most `max_chars`
/// characters long.
pub fn decode(token: &str, max_chars: usize) -> Result<String, InvalidField> {
    if token.len() > max_chars
        || !token.len().is_multiple_of(2)
        || !token.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    String::from_utf8(bytes).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_others_are_refused() {
        let text = "v1\u{1f}Ødegaard\u{1f}Zoë";
        let token = encode(text);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(decode(&token, 1000).unwrap(), text);
        for bad in ["abc", "zz", "ff", "+1"] {
            assert_eq!(decode(bad, 1000).unwrap_err(), invalid(), "{bad:?}");
        }
        assert_eq!(decode(&token, 4).unwrap_err(), invalid(), "too long");
    }
}
