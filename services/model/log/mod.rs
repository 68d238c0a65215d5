//! The domain types of package `gradebook.log.v1`: log records, levels and
//! filters, the limits every stored record keeps to, and the conversions from
//! and to [`crate::pb::log::v1`]. This is the only module of the crate that
//! converts log protobufs; every conversion from the wire validates. The
//! spans of traces, which the log service keeps too, are in [`trace`].

pub mod trace;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

pub use crate::model::time::{InvalidTimestamp, timestamp_from_pb, timestamp_to_pb};
use crate::pb::log::v1 as pb;

/// The most bytes a record's message may have.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// The most structured fields a record may have.
pub const MAX_FIELDS: usize = 64;
/// The most bytes one field may have, key and value together.
pub const MAX_FIELD_BYTES: usize = 4 * 1024;
/// The most bytes of a service name, an instance name or a trace id.
pub const MAX_NAME_BYTES: usize = 128;
/// The most records one write batch may have.
pub const MAX_BATCH_RECORDS: usize = 10_000;

/// How many bytes of a field key are quoted in an error message.
const QUOTED_KEY_BYTES: usize = 40;

/// The severity of a record, from the least severe ([`Level::Trace`]) to the
/// most severe ([`Level::Error`]); the order is the severity order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the service handled.
    Warn,
    /// A failure.
    Error,
}

impl Level {
    /// Every level, least severe first.
    pub const ALL: [Level; 5] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ];

    /// The upper-case name of the level: `"TRACE"`, `"DEBUG"`, `"INFO"`,
    /// `"WARN"` or `"ERROR"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }

    /// The level of a protobuf enum value, or `None` for
    /// `LEVEL_UNSPECIFIED` and unknown values.
    pub fn from_pb(value: i32) -> Option<Self> {
        match pb::Level::try_from(value).ok()? {
            pb::Level::Unspecified => None,
            pb::Level::Trace => Some(Level::Trace),
            pb::Level::Debug => Some(Level::Debug),
            pb::Level::Info => Some(Level::Info),
            pb::Level::Warn => Some(Level::Warn),
            pb::Level::Error => Some(Level::Error),
        }
    }
}

impl From<Level> for pb::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => pb::Level::Trace,
            Level::Debug => pb::Level::Debug,
            Level::Info => pb::Level::Info,
            Level::Warn => pb::Level::Warn,
            Level::Error => pb::Level::Error,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level name that [`Level::from_str`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level {0:?} (expected trace, debug, info, warn or error)")]
pub struct ParseLevelError(pub String);

impl FromStr for Level {
    type Err = ParseLevelError;

    /// Parses `trace`, `debug`, `info`, `warn` (or `warning`) and `error`, in
    /// any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(Level::Trace),
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warn" | "warning" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            _ => Err(ParseLevelError(s.to_owned())),
        }
    }
}

impl From<tracing::Level> for Level {
    fn from(level: tracing::Level) -> Self {
        if level == tracing::Level::TRACE {
            Level::Trace
        } else if level == tracing::Level::DEBUG {
            Level::Debug
        } else if level == tracing::Level::INFO {
            Level::Info
        } else if level == tracing::Level::WARN {
            Level::Warn
        } else {
            Level::Error
        }
    }
}

/// One structured log record, as stored by the log service.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// When the record was made.
    pub timestamp: SystemTime,
    /// The service that made the record, for example `"grading"`; never empty.
    pub service: String,
    /// The instance of that service that made the record; may be empty.
    pub instance: String,
    /// The severity.
    pub level: Level,
    /// The human-readable message.
    pub message: String,
    /// Structured key/value fields.
    pub fields: BTreeMap<String, String>,
    /// The trace the record belongs to, when there is one.
    pub trace_id: Option<String>,
    /// The span the record was made in, when there is one.
    pub span_id: Option<String>,
    /// The position of the record in the store, assigned when stored
    /// (starting at 1); 0 for a record that is not stored yet.
    pub sequence: u64,
}

/// Why a record from the wire was rejected. The message names the record
/// (by its index in the batch) and the field, and says what is wrong, for
/// example `records[3].service: must not be empty`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    /// The batch has more than [`MAX_BATCH_RECORDS`] records.
    #[error("records: {count} records is over the limit of {limit} per batch")]
    TooManyRecords {
        /// How many records the batch has.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A field that must be set is empty.
    #[error("records[{index}].{field}: must not be empty")]
    Empty {
        /// The index of the record in its batch.
        index: usize,
        /// The name of the field.
        field: &'static str,
    },
    /// A field is over its size limit.
    #[error("records[{index}].{field}: {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// The index of the record in its batch.
        index: usize,
        /// The name of the field, for example `message` or `fields["user"]`.
        field: String,
        /// The size of the field in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The record has more than [`MAX_FIELDS`] structured fields.
    #[error("records[{index}].fields: {count} fields is over the limit of {limit}")]
    TooManyFields {
        /// The index of the record in its batch.
        index: usize,
        /// How many fields the record has.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A structured field has an empty key.
    #[error("records[{index}].fields: keys must not be empty")]
    EmptyFieldKey {
        /// The index of the record in its batch.
        index: usize,
    },
    /// The level is `LEVEL_UNSPECIFIED` or a value the contract does not know.
    #[error("records[{index}].level: must be set ({})", describe_level(*value))]
    Level {
        /// The index of the record in its batch.
        index: usize,
        /// The wire value of the level.
        value: i32,
    },
    /// The timestamp is not a valid point in time.
    #[error("records[{index}].timestamp: {reason}")]
    Timestamp {
        /// The index of the record in its batch.
        index: usize,
        /// What is wrong with it.
        reason: InvalidTimestamp,
    },
}

/// Describes a rejected record level value.
fn describe_level(value: i32) -> String {
    if value == pb::Level::Unspecified as i32 {
        "got LEVEL_UNSPECIFIED".to_owned()
    } else {
        format!("unknown value {value}")
    }
}

impl InvalidRecord {
    /// Whether the record was rejected for being over a size limit (which a
    /// service reports as `RESOURCE_EXHAUSTED`) rather than for being
    /// malformed (`INVALID_ARGUMENT`).
    pub fn is_oversize(&self) -> bool {
        matches!(
            self,
            InvalidRecord::TooManyRecords { .. }
                | InvalidRecord::TooLarge { .. }
                | InvalidRecord::TooManyFields { .. }
        )
    }
}

/// Returns `Err(TooLarge)` when `value` is over `limit` bytes.
fn check_size(index: usize, field: &str, value: &str, limit: usize) -> Result<(), InvalidRecord> {
    if value.len() > limit {
        return Err(InvalidRecord::TooLarge {
            index,
            field: field.to_owned(),
            size: value.len(),
            limit,
        });
    }
    Ok(())
}

/// Quotes a field key for an error message, shortened to a char boundary.
fn quote_key(key: &str) -> String {
    if key.len() <= QUOTED_KEY_BYTES {
        return format!("fields[{key:?}]");
    }
    let mut end = QUOTED_KEY_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("fields[{:?}...]", &key[..end])
}

impl LogRecord {
    /// Validates and converts the record at `index` of a written batch.
    ///
    /// A missing timestamp becomes `now`; an empty trace id becomes `None`;
    /// the wire `sequence` is ignored (the result's is 0). The service must
    /// not be empty; the instance may be. Every limit of this module applies.
    pub fn from_pb(
        index: usize,
        pb: pb::LogRecord,
        now: SystemTime,
    ) -> Result<Self, InvalidRecord> {
        if pb.service.is_empty() {
            return Err(InvalidRecord::Empty {
                index,
                field: "service",
            });
        }
        check_size(index, "service", &pb.service, MAX_NAME_BYTES)?;
        check_size(index, "instance", &pb.instance, MAX_NAME_BYTES)?;
        let level = Level::from_pb(pb.level).ok_or(InvalidRecord::Level {
            index,
            value: pb.level,
        })?;
        let timestamp = match &pb.timestamp {
            Some(ts) => timestamp_from_pb(ts)
                .map_err(|reason| InvalidRecord::Timestamp { index, reason })?,
            None => now,
        };
        check_size(index, "message", &pb.message, MAX_MESSAGE_BYTES)?;
        if pb.fields.len() > MAX_FIELDS {
            return Err(InvalidRecord::TooManyFields {
                index,
                count: pb.fields.len(),
                limit: MAX_FIELDS,
            });
        }
        for (key, value) in &pb.fields {
            if key.is_empty() {
                return Err(InvalidRecord::EmptyFieldKey { index });
            }
            let size = key.len() + value.len();
            if size > MAX_FIELD_BYTES {
                return Err(InvalidRecord::TooLarge {
                    index,
                    field: quote_key(key),
                    size,
                    limit: MAX_FIELD_BYTES,
                });
            }
        }
        check_size(index, "trace_id", &pb.trace_id, MAX_NAME_BYTES)?;
        check_size(index, "span_id", &pb.span_id, MAX_NAME_BYTES)?;
        Ok(LogRecord {
            timestamp,
            service: pb.service,
            instance: pb.instance,
            level,
            message: pb.message,
            fields: pb.fields.into_iter().collect(),
            trace_id: (!pb.trace_id.is_empty()).then_some(pb.trace_id),
            span_id: (!pb.span_id.is_empty()).then_some(pb.span_id),
            sequence: 0,
        })
    }

    /// Converts a record read back from storage: unlike
    /// [`LogRecord::from_pb`] it keeps the sequence and applies no size
    /// limit (what was stored stays readable if limits change), but the
    /// level must be known and the timestamp set and valid.
    pub fn from_stored_pb(pb: pb::LogRecord) -> Result<Self, InvalidRecord> {
        let index = 0;
        let level = Level::from_pb(pb.level).ok_or(InvalidRecord::Level {
            index,
            value: pb.level,
        })?;
        let timestamp = match &pb.timestamp {
            Some(ts) => timestamp_from_pb(ts)
                .map_err(|reason| InvalidRecord::Timestamp { index, reason })?,
            None => {
                return Err(InvalidRecord::Empty {
                    index,
                    field: "timestamp",
                });
            }
        };
        Ok(LogRecord {
            timestamp,
            service: pb.service,
            instance: pb.instance,
            level,
            message: pb.message,
            fields: pb.fields.into_iter().collect(),
            trace_id: (!pb.trace_id.is_empty()).then_some(pb.trace_id),
            span_id: (!pb.span_id.is_empty()).then_some(pb.span_id),
            sequence: pb.sequence,
        })
    }

    /// Validates and converts a whole written batch: at most
    /// [`MAX_BATCH_RECORDS`] records, each as [`LogRecord::from_pb`]. The
    /// first invalid record rejects the batch.
    pub fn batch_from_pb(
        records: Vec<pb::LogRecord>,
        now: SystemTime,
    ) -> Result<Vec<Self>, InvalidRecord> {
        if records.len() > MAX_BATCH_RECORDS {
            return Err(InvalidRecord::TooManyRecords {
                count: records.len(),
                limit: MAX_BATCH_RECORDS,
            });
        }
        records
            .into_iter()
            .enumerate()
            .map(|(index, pb)| LogRecord::from_pb(index, pb, now))
            .collect()
    }
}

impl From<&LogRecord> for pb::LogRecord {
    fn from(record: &LogRecord) -> Self {
        pb::LogRecord {
            timestamp: Some(timestamp_to_pb(record.timestamp)),
            service: record.service.clone(),
            instance: record.instance.clone(),
            level: pb::Level::from(record.level) as i32,
            message: record.message.clone(),
            fields: record
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            trace_id: record.trace_id.clone().unwrap_or_default(),
            span_id: record.span_id.clone().unwrap_or_default(),
            sequence: record.sequence,
        }
    }
}

impl From<LogRecord> for pb::LogRecord {
    fn from(record: LogRecord) -> Self {
        pb::LogRecord {
            timestamp: Some(timestamp_to_pb(record.timestamp)),
            service: record.service,
            instance: record.instance,
            level: pb::Level::from(record.level) as i32,
            message: record.message,
            fields: record.fields.into_iter().collect(),
            trace_id: record.trace_id.unwrap_or_default(),
            span_id: record.span_id.unwrap_or_default(),
            sequence: record.sequence,
        }
    }
}

/// Which records to match. Every field that is set must match; the default
/// filter matches every record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFilter {
    /// Only records of this service (exact match).
    pub service: Option<String>,
    /// Only records at this level or more severe.
    pub min_level: Option<Level>,
    /// Only records made at or after this time.
    pub since: Option<SystemTime>,
    /// Only records made before this time.
    pub until: Option<SystemTime>,
    /// Only records whose message contains this text, ignoring case.
    pub contains: Option<String>,
    /// Only records of this trace (exact match).
    pub trace_id: Option<String>,
}

impl LogFilter {
    /// The filter, if the log service would accept it (the same checks as
    /// on the wire: lengths, levels), so callers refuse bad input up front.
    pub fn validated(self) -> Result<Self, InvalidFilter> {
        LogFilter::try_from(pb::Filter::from(&self))
    }

    /// Whether `record` matches every condition that is set.
    pub fn matches(&self, record: &LogRecord) -> bool {
        if let Some(service) = &self.service
            && record.service != *service
        {
            return false;
        }
        if let Some(min) = self.min_level
            && record.level < min
        {
            return false;
        }
        if let Some(since) = self.since
            && record.timestamp < since
        {
            return false;
        }
        if let Some(until) = self.until
            && record.timestamp >= until
        {
            return false;
        }
        if let Some(trace_id) = &self.trace_id
            && record.trace_id.as_deref() != Some(trace_id.as_str())
        {
            return false;
        }
        if let Some(text) = &self.contains
            && !contains_ignore_case(&record.message, text)
        {
            return false;
        }
        true
    }
}

/// Whether `haystack` contains `needle`, ignoring case. ASCII needles are
/// searched without allocating; others compare the lower-cased texts.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if needle.is_ascii() {
        let needle = needle.as_bytes();
        return haystack
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle));
    }
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// Why a filter from the wire was rejected. The message names the field, for
/// example `filter.min_level: unknown value 9`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidFilter {
    /// The minimum level is a value the contract does not know.
    #[error("filter.min_level: unknown value {0}")]
    MinLevel(i32),
    /// A time bound is not a valid point in time.
    #[error("filter.{field}: {reason}")]
    Timestamp {
        /// `since` or `until`.
        field: &'static str,
        /// What is wrong with it.
        reason: InvalidTimestamp,
    },
    /// A text condition is longer than any record could match.
    #[error("filter.{field}: {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// The name of the field.
        field: &'static str,
        /// The size of the field in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

/// `None` for an empty string; `Err` when over `limit` bytes.
fn optional_text(
    field: &'static str,
    value: String,
    limit: usize,
) -> Result<Option<String>, InvalidFilter> {
    if value.len() > limit {
        return Err(InvalidFilter::TooLarge {
            field,
            size: value.len(),
            limit,
        });
    }
    Ok((!value.is_empty()).then_some(value))
}

/// Converts an optional filter time bound.
fn optional_time(
    field: &'static str,
    value: Option<prost_types::Timestamp>,
) -> Result<Option<SystemTime>, InvalidFilter> {
    value
        .map(|ts| {
            timestamp_from_pb(&ts).map_err(|reason| InvalidFilter::Timestamp { field, reason })
        })
        .transpose()
}

impl TryFrom<pb::Filter> for LogFilter {
    type Error = InvalidFilter;

    /// Validates a wire filter: empty strings and `LEVEL_UNSPECIFIED` mean
    /// "any".
    fn try_from(pb: pb::Filter) -> Result<Self, Self::Error> {
        let min_level = match pb.min_level {
            0 => None,
            value => Some(Level::from_pb(value).ok_or(InvalidFilter::MinLevel(value))?),
        };
        Ok(LogFilter {
            service: optional_text("service", pb.service, MAX_NAME_BYTES)?,
            min_level,
            since: optional_time("since", pb.since)?,
            until: optional_time("until", pb.until)?,
            contains: optional_text("contains", pb.contains, MAX_MESSAGE_BYTES)?,
            trace_id: optional_text("trace_id", pb.trace_id, MAX_NAME_BYTES)?,
        })
    }
}

impl From<&LogFilter> for pb::Filter {
    fn from(filter: &LogFilter) -> Self {
        pb::Filter {
            service: filter.service.clone().unwrap_or_default(),
            min_level: filter
                .min_level
                .map_or(pb::Level::Unspecified, pb::Level::from) as i32,
            since: filter.since.map(timestamp_to_pb),
            until: filter.until.map(timestamp_to_pb),
            contains: filter.contains.clone().unwrap_or_default(),
            trace_id: filter.trace_id.clone().unwrap_or_default(),
        }
    }
}

impl From<LogFilter> for pb::Filter {
    fn from(filter: LogFilter) -> Self {
        pb::Filter::from(&filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn pb_record() -> pb::LogRecord {
        pb::LogRecord {
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            service: "grading".into(),
            instance: "grading-1".into(),
            level: pb::Level::Info as i32,
            message: "Grade Saved".into(),
            fields: [("student".to_string(), "42".to_string())].into(),
            trace_id: "abc".into(),
            span_id: "00f067aa0ba902b7".into(),
            sequence: 77,
        }
    }

    fn record() -> LogRecord {
        LogRecord {
            timestamp: at(1000),
            service: "grading".into(),
            instance: "g1".into(),
            level: Level::Warn,
            message: "Disk Almost FULL".into(),
            fields: BTreeMap::new(),
            trace_id: Some("t1".into()),
            span_id: None,
            sequence: 9,
        }
    }

    fn error_of(pb: pb::LogRecord, index: usize) -> InvalidRecord {
        LogRecord::from_pb(index, pb, at(5)).unwrap_err()
    }

    #[test]
    fn levels_order_parse_and_print() {
        assert!(Level::Trace < Level::Debug && Level::Warn < Level::Error);
        assert_eq!("WARNING".parse::<Level>(), Ok(Level::Warn));
        assert_eq!("Info".parse::<Level>(), Ok(Level::Info));
        assert!("loud".parse::<Level>().is_err());
        assert_eq!(Level::Error.to_string(), "ERROR");
        assert_eq!(Level::from(tracing::Level::DEBUG), Level::Debug);
        assert_eq!(Level::from(tracing::Level::ERROR), Level::Error);
        for level in Level::ALL {
            assert_eq!(Level::from_pb(pb::Level::from(level) as i32), Some(level));
            assert_eq!(level.as_str().parse::<Level>(), Ok(level));
        }
        assert_eq!(Level::from_pb(0), None);
        assert_eq!(Level::from_pb(9), None);
    }

    #[test]
    fn from_pb_fills_defaults() {
        let mut pb = pb_record();
        pb.timestamp = None;
        pb.trace_id.clear();
        pb.instance.clear();
        let r = LogRecord::from_pb(0, pb, at(5)).unwrap();
        assert_eq!(r.timestamp, at(5));
        assert_eq!(r.trace_id, None);
        assert_eq!(r.instance, "");
        assert_eq!(r.sequence, 0);
        assert_eq!(r.fields.get("student").map(String::as_str), Some("42"));
    }

    #[test]
    fn validation_messages_name_the_field() {
        let mut pb = pb_record();
        pb.service.clear();
        let e = error_of(pb, 3);
        assert_eq!(e.to_string(), "records[3].service: must not be empty");
        assert!(!e.is_oversize());

        let mut pb = pb_record();
        pb.message = "x".repeat(20_000);
        let e = error_of(pb, 0);
        assert_eq!(
            e.to_string(),
            "records[0].message: 20000 bytes is over the 16384-byte limit"
        );
        assert!(e.is_oversize());

        let mut pb = pb_record();
        pb.level = 9;
        assert_eq!(
            error_of(pb, 1).to_string(),
            "records[1].level: must be set (unknown value 9)"
        );
        let mut pb = pb_record();
        pb.level = 0;
        assert_eq!(
            error_of(pb, 1).to_string(),
            "records[1].level: must be set (got LEVEL_UNSPECIFIED)"
        );

        let mut pb = pb_record();
        pb.service = "s".repeat(129);
        assert_eq!(
            error_of(pb, 0).to_string(),
            "records[0].service: 129 bytes is over the 128-byte limit"
        );
        let mut pb = pb_record();
        pb.trace_id = "t".repeat(200);
        assert!(
            error_of(pb, 0)
                .to_string()
                .starts_with("records[0].trace_id: 200 bytes")
        );

        let mut pb = pb_record();
        pb.fields = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        let e = error_of(pb, 2);
        assert_eq!(
            e.to_string(),
            "records[2].fields: 65 fields is over the limit of 64"
        );
        assert!(e.is_oversize());

        let mut pb = pb_record();
        pb.fields = [("user".to_string(), "v".repeat(4093))].into();
        assert_eq!(
            error_of(pb, 0).to_string(),
            "records[0].fields[\"user\"]: 4097 bytes is over the 4096-byte limit"
        );
        let mut pb = pb_record();
        pb.fields = [("user".to_string(), "v".repeat(4092))].into();
        assert!(LogRecord::from_pb(0, pb, at(5)).is_ok());

        let mut pb = pb_record();
        pb.fields = [(String::new(), "v".into())].into();
        assert_eq!(
            error_of(pb, 0).to_string(),
            "records[0].fields: keys must not be empty"
        );

        let mut pb = pb_record();
        pb.timestamp = Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 2_000_000_000,
        });
        let e = error_of(pb, 4);
        assert_eq!(
            e.to_string(),
            "records[4].timestamp: nanos 2000000000 is out of range (0 to 999999999)"
        );
        assert!(!e.is_oversize());
        let mut pb = pb_record();
        pb.timestamp = Some(prost_types::Timestamp {
            seconds: -5,
            nanos: 0,
        });
        assert_eq!(
            error_of(pb, 0).to_string(),
            "records[0].timestamp: -5 seconds is before the Unix epoch"
        );
        let mut pb = pb_record();
        pb.timestamp = Some(prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        });
        assert!(matches!(
            error_of(pb, 0),
            InvalidRecord::Timestamp {
                reason: InvalidTimestamp::TooLate(_),
                ..
            }
        ));
    }

    #[test]
    fn long_field_keys_are_shortened_in_messages() {
        let mut pb = pb_record();
        pb.fields = [("é".repeat(3000), String::new())].into();
        let message = error_of(pb, 0).to_string();
        assert!(message.starts_with("records[0].fields[\"éé"), "{message}");
        assert!(message.contains("...]: 6000 bytes"), "{message}");
    }

    #[test]
    fn batches_are_limited_and_validated_whole() {
        let batch = vec![pb_record(); MAX_BATCH_RECORDS + 1];
        let e = LogRecord::batch_from_pb(batch, at(1)).unwrap_err();
        assert!(e.is_oversize());
        assert_eq!(
            e.to_string(),
            "records: 10001 records is over the limit of 10000 per batch"
        );
        let mut bad = pb_record();
        bad.service.clear();
        let e = LogRecord::batch_from_pb(vec![pb_record(), pb_record(), bad], at(1)).unwrap_err();
        assert_eq!(e.to_string(), "records[2].service: must not be empty");
        assert_eq!(LogRecord::batch_from_pb(vec![], at(1)), Ok(vec![]));
    }

    #[test]
    fn record_round_trips() {
        let r = record();
        let pb: pb::LogRecord = (&r).into();
        assert_eq!(pb.sequence, 9);
        assert_eq!(pb.level, pb::Level::Warn as i32);
        let mut back = LogRecord::from_pb(0, pb, at(0)).unwrap();
        back.sequence = r.sequence;
        assert_eq!(back, r);

        let original = pb_record();
        let mut expected = original.clone();
        expected.sequence = 0;
        let domain = LogRecord::from_pb(0, original, at(0)).unwrap();
        assert_eq!(pb::LogRecord::from(domain), expected);
    }

    #[test]
    fn stored_records_keep_sequence_and_skip_limits() {
        let mut pb = pb_record();
        pb.message = "x".repeat(MAX_MESSAGE_BYTES + 1);
        let r = LogRecord::from_stored_pb(pb.clone()).unwrap();
        assert_eq!(r.sequence, 77);
        assert_eq!(pb::LogRecord::from(r), pb);
        pb.timestamp = None;
        assert!(LogRecord::from_stored_pb(pb).is_err());
    }

    #[test]
    fn filter_matching() {
        let r = record();
        assert!(LogFilter::default().matches(&r));
        let f = |f: LogFilter| f.matches(&r);
        assert!(f(LogFilter {
            service: Some("grading".into()),
            ..Default::default()
        }));
        assert!(!f(LogFilter {
            service: Some("grad".into()),
            ..Default::default()
        }));
        assert!(f(LogFilter {
            min_level: Some(Level::Warn),
            ..Default::default()
        }));
        assert!(!f(LogFilter {
            min_level: Some(Level::Error),
            ..Default::default()
        }));
        assert!(f(LogFilter {
            since: Some(at(1000)),
            until: Some(at(1001)),
            ..Default::default()
        }));
        assert!(!f(LogFilter {
            until: Some(at(1000)),
            ..Default::default()
        }));
        assert!(!f(LogFilter {
            since: Some(at(1001)),
            ..Default::default()
        }));
        assert!(f(LogFilter {
            contains: Some("almost full".into()),
            ..Default::default()
        }));
        assert!(!f(LogFilter {
            contains: Some("empty".into()),
            ..Default::default()
        }));
        assert!(f(LogFilter {
            trace_id: Some("t1".into()),
            ..Default::default()
        }));
        assert!(!f(LogFilter {
            trace_id: Some("t2".into()),
            ..Default::default()
        }));
        let mut unicode = record();
        unicode.message = "Schüler ÄNDERUNG".into();
        assert!(
            LogFilter {
                contains: Some("schüler änderung".into()),
                ..Default::default()
            }
            .matches(&unicode)
        );
    }

    #[test]
    fn filter_conversions() {
        let pb = pb::Filter {
            min_level: 9,
            ..Default::default()
        };
        assert_eq!(
            LogFilter::try_from(pb).unwrap_err().to_string(),
            "filter.min_level: unknown value 9"
        );
        let pb = pb::Filter {
            since: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            ..Default::default()
        };
        assert!(
            LogFilter::try_from(pb)
                .unwrap_err()
                .to_string()
                .starts_with("filter.since: nanos -1")
        );
        assert_eq!(
            LogFilter::try_from(pb::Filter::default()).unwrap(),
            LogFilter::default()
        );
        let filter = LogFilter {
            service: Some("grading".into()),
            min_level: Some(Level::Info),
            since: Some(at(10)),
            until: Some(at(20) + Duration::from_nanos(3)),
            contains: Some("saved".into()),
            trace_id: Some("t".into()),
        };
        let pb = pb::Filter::from(&filter);
        assert_eq!(LogFilter::try_from(pb).unwrap(), filter);
    }
}
