//! The spans of traces, as the log service stores and answers them: W3C
//! Trace Context identifiers, spans, the summary of a trace, and the
//! conversions from and to [`crate::pb::log::v1`]. Every conversion from the
//! wire validates and names the field it refuses.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::model::log::{MAX_FIELD_BYTES, MAX_FIELDS, MAX_NAME_BYTES};
use crate::model::time::{InvalidTimestamp, timestamp_from_pb, timestamp_to_pb};
use crate::pb::log::v1 as pb;

/// The most bytes of a span's name.
pub const MAX_SPAN_NAME_BYTES: usize = 256;
/// The most bytes of a span's status message.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 4 * 1024;
/// The most spans one write batch may have.
pub const MAX_BATCH_SPANS: usize = 10_000;
/// The most traces one query answers.
pub const MAX_TRACES_PAGE: usize = 1000;
/// The traces a query answers when it asks for 0.
pub const DEFAULT_TRACES_PAGE: usize = 50;

/// A trace's identifier: 16 bytes, never all zero, written as 32 lowercase
/// hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TraceId(u128);

/// A span's identifier: 8 bytes, never all zero, written as 16 lowercase hex
/// digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpanId(u64);

/// Why a trace or span identifier does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be {digits} lowercase hex digits, not all zero; got {got:?}")]
pub struct InvalidId {
    /// How many digits the identifier has.
    digits: usize,
    /// What was given (shortened).
    got: String,
}

/// Parses exactly `digits` lowercase hex digits, not all zero, in one pass
/// (every span the log service stores has two or three ids).
fn parse_hex(text: &str, digits: usize) -> Result<u128, InvalidId> {
    let invalid = || InvalidId {
        digits,
        got: text.chars().take(40).collect(),
    };
    if text.len() != digits {
        return Err(invalid());
    }
    let mut value = 0u128;
    for byte in text.bytes() {
        let nibble = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            _ => return Err(invalid()),
        };
        value = (value << 4) | u128::from(nibble);
    }
    if value == 0 {
        return Err(invalid());
    }
    Ok(value)
}

/// Writes the low `digits` hex digits of `value`, lowercase, zero-padded.
fn write_hex(f: &mut fmt::Formatter<'_>, value: u128, digits: usize) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (i, slot) in text[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = DIGITS[((value >> shift) & 0xf) as usize];
    }
    // Only ASCII hex digits were written.
    f.write_str(std::str::from_utf8(&text[..digits]).map_err(|_| fmt::Error)?)
}

impl TraceId {
    /// The identifier from its 16 bytes; `None` when all are zero.
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        let value = u128::from_be_bytes(bytes);
        (value != 0).then_some(TraceId(value))
    }
}

impl SpanId {
    /// The identifier from its 8 bytes; `None` when all are zero.
    pub fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        let value = u64::from_be_bytes(bytes);
        (value != 0).then_some(SpanId(value))
    }
}

impl FromStr for TraceId {
    type Err = InvalidId;

    fn from_str(text: &str) -> Result<Self, InvalidId> {
        parse_hex(text, 32).map(TraceId)
    }
}

impl FromStr for SpanId {
    type Err = InvalidId;

    fn from_str(text: &str) -> Result<Self, InvalidId> {
        parse_hex(text, 16).and_then(|value| {
            u64::try_from(value).map(SpanId).map_err(|_| InvalidId {
                digits: 16,
                got: text.to_owned(),
            })
        })
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.0, 32)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, u128::from(self.0), 16)
    }
}

/// What part a span plays in its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// An operation inside a service.
    Internal,
    /// The handling of a request from outside the service.
    Server,
    /// A request to another service.
    Client,
}

impl SpanKind {
    /// The lowercase name, as pages and JSON show it.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
        }
    }
}

/// How a span ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SpanStatus {
    /// Not known to have failed.
    Unset,
    /// Succeeded.
    Ok,
    /// Failed, and how.
    Error(String),
}

impl SpanStatus {
    /// Whether the span failed.
    pub fn is_error(&self) -> bool {
        matches!(self, SpanStatus::Error(_))
    }

    /// `"unset"`, `"ok"` or `"error"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SpanStatus::Unset => "unset",
            SpanStatus::Ok => "ok",
            SpanStatus::Error(_) => "error",
        }
    }
}

/// One finished operation of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The trace.
    pub trace_id: TraceId,
    /// The span.
    pub span_id: SpanId,
    /// The parent span; `None` for the root of a trace.
    pub parent_span_id: Option<SpanId>,
    /// The service that made the span; never empty.
    pub service: String,
    /// The instance of that service.
    pub instance: String,
    /// What the span did.
    pub name: String,
    /// Its part in the trace.
    pub kind: SpanKind,
    /// When it started.
    pub start: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// How it ended.
    pub status: SpanStatus,
    /// Its attributes, sorted by key, each key once. A sorted vector
    /// rather than a map: the log service keeps every retained span in
    /// memory, and a span has few attributes.
    pub attributes: Vec<(String, String)>,
    /// Its position in the store, assigned when stored; 0 before.
    pub sequence: u64,
}

/// `attributes` sorted by key, for [`Span::attributes`]; of two values of
/// one key, the last is kept.
pub fn sorted_attributes(mut attributes: Vec<(String, String)>) -> Vec<(String, String)> {
    attributes.reverse();
    attributes.sort_by(|a, b| a.0.cmp(&b.0));
    attributes.dedup_by(|later, earlier| later.0 == earlier.0);
    attributes
}

impl Span {
    /// When it ended.
    pub fn end(&self) -> SystemTime {
        self.start + self.duration
    }
}

/// Why a span from the wire was rejected; the message names the span by
/// its index in the batch and the field, for example
/// `spans[2].trace_id: must be 32 lowercase hex digits, not all zero; got "x"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpan {
    /// The batch has more than [`MAX_BATCH_SPANS`] spans.
    #[error("spans: {count} spans is over the limit of {limit} per batch")]
    TooManySpans {
        /// How many spans the batch has.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// An identifier is malformed.
    #[error("spans[{index}].{field}: {reason}")]
    Id {
        /// The index of the span in its batch.
        index: usize,
        /// `trace_id`, `span_id` or `parent_span_id`.
        field: &'static str,
        /// What is wrong with it.
        reason: InvalidId,
    },
    /// A field that must be set is empty.
    #[error("spans[{index}].{field}: must not be empty")]
    Empty {
        /// The index of the span in its batch.
        index: usize,
        /// The name of the field.
        field: &'static str,
    },
    /// A field is over its size limit.
    #[error("spans[{index}].{field}: {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// The index of the span in its batch.
        index: usize,
        /// The name of the field.
        field: String,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The start is not a valid point in time.
    #[error("spans[{index}].start: {reason}")]
    Start {
        /// The index of the span in its batch.
        index: usize,
        /// What is wrong with it.
        reason: InvalidTimestamp,
    },
    /// The duration is negative or malformed.
    #[error("spans[{index}].duration: must be zero or positive, with nanos in 0..1e9")]
    Duration {
        /// The index of the span in its batch.
        index: usize,
    },
    /// The kind or status is a value the contract does not know.
    #[error("spans[{index}].{field}: unknown value {value}")]
    Enum {
        /// The index of the span in its batch.
        index: usize,
        /// `kind` or `status`.
        field: &'static str,
        /// The wire value.
        value: i32,
    },
}

impl InvalidSpan {
    /// Whether the span was rejected for its size (`RESOURCE_EXHAUSTED`)
    /// rather than for being malformed (`INVALID_ARGUMENT`).
    pub fn is_oversize(&self) -> bool {
        matches!(
            self,
            InvalidSpan::TooManySpans { .. } | InvalidSpan::TooLarge { .. }
        )
    }
}

/// `Err(TooLarge)` when `value` is over `limit` bytes.
fn check_size(index: usize, field: &str, value: &str, limit: usize) -> Result<(), InvalidSpan> {
    if value.len() > limit {
        return Err(InvalidSpan::TooLarge {
            index,
            field: field.to_owned(),
            size: value.len(),
            limit,
        });
    }
    Ok(())
}

/// Converts a wire duration that must not be negative.
pub fn duration_from_pb(duration: &prost_types::Duration) -> Option<Duration> {
    let seconds = u64::try_from(duration.seconds).ok()?;
    let nanos = u32::try_from(duration.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    Some(Duration::new(seconds, nanos))
}

/// Converts a duration to the wire (saturating far beyond any span).
pub fn duration_to_pb(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

impl Span {
    /// Validates and converts the span at `index` of a written batch. The
    /// wire `sequence` is ignored; a missing start or duration is refused.
    pub fn from_pb(index: usize, pb: pb::Span) -> Result<Self, InvalidSpan> {
        let id = |field: &'static str, text: &str| InvalidSpan::Id {
            index,
            field,
            reason: InvalidId {
                digits: if field == "trace_id" { 32 } else { 16 },
                got: text.chars().take(40).collect(),
            },
        };
        let trace_id = pb
            .trace_id
            .parse()
            .map_err(|_| id("trace_id", &pb.trace_id))?;
        let span_id = pb.span_id.parse().map_err(|_| id("span_id", &pb.span_id))?;
        let parent_span_id = match pb.parent_span_id.as_str() {
            "" => None,
            text => Some(text.parse().map_err(|_| id("parent_span_id", text))?),
        };
        for (field, value) in [("service", &pb.service), ("name", &pb.name)] {
            if value.is_empty() {
                return Err(InvalidSpan::Empty { index, field });
            }
        }
        check_size(index, "service", &pb.service, MAX_NAME_BYTES)?;
        check_size(index, "instance", &pb.instance, MAX_NAME_BYTES)?;
        check_size(index, "name", &pb.name, MAX_SPAN_NAME_BYTES)?;
        check_size(
            index,
            "status_message",
            &pb.status_message,
            MAX_STATUS_MESSAGE_BYTES,
        )?;
        if pb.attributes.len() > MAX_FIELDS {
            return Err(InvalidSpan::TooLarge {
                index,
                field: "attributes".to_owned(),
                size: pb.attributes.len(),
                limit: MAX_FIELDS,
            });
        }
        for (key, value) in &pb.attributes {
            if key.is_empty() {
                return Err(InvalidSpan::Empty {
                    index,
                    field: "attributes (a key)",
                });
            }
            let size = key.len() + value.len();
            if size > MAX_FIELD_BYTES {
                return Err(InvalidSpan::TooLarge {
                    index,
                    field: format!("attributes[{:?}]", key.chars().take(40).collect::<String>()),
                    size,
                    limit: MAX_FIELD_BYTES,
                });
            }
        }
        let start = pb
            .start
            .as_ref()
            .ok_or(InvalidSpan::Empty {
                index,
                field: "start",
            })
            .and_then(|ts| {
                timestamp_from_pb(ts).map_err(|reason| InvalidSpan::Start { index, reason })
            })?;
        let duration = pb
            .duration
            .as_ref()
            .ok_or(InvalidSpan::Empty {
                index,
                field: "duration",
            })
            .and_then(|d| duration_from_pb(d).ok_or(InvalidSpan::Duration { index }))?;
        let kind = match pb::SpanKind::try_from(pb.kind) {
            Ok(pb::SpanKind::Unspecified | pb::SpanKind::Internal) => SpanKind::Internal,
            Ok(pb::SpanKind::Server) => SpanKind::Server,
            Ok(pb::SpanKind::Client) => SpanKind::Client,
            Err(_) => {
                return Err(InvalidSpan::Enum {
                    index,
                    field: "kind",
                    value: pb.kind,
                });
            }
        };
        let status = match pb::SpanStatus::try_from(pb.status) {
            Ok(pb::SpanStatus::Unset) => SpanStatus::Unset,
            Ok(pb::SpanStatus::Ok) => SpanStatus::Ok,
            Ok(pb::SpanStatus::Error) => SpanStatus::Error(pb.status_message),
            Err(_) => {
                return Err(InvalidSpan::Enum {
                    index,
                    field: "status",
                    value: pb.status,
                });
            }
        };
        Ok(Span {
            trace_id,
            span_id,
            parent_span_id,
            service: pb.service,
            instance: pb.instance,
            name: pb.name,
            kind,
            start,
            duration,
            status,
            attributes: sorted_attributes(pb.attributes.into_iter().collect()),
            sequence: 0,
        })
    }

    /// Converts a span read back from storage: the checks of
    /// [`Span::from_pb`], keeping the sequence.
    pub fn from_stored_pb(pb: pb::Span) -> Result<Self, InvalidSpan> {
        let sequence = pb.sequence;
        Span::from_pb(0, pb).map(|span| Span { sequence, ..span })
    }

    /// Validates and converts a whole written batch; the first invalid span
    /// rejects the batch.
    pub fn batch_from_pb(spans: Vec<pb::Span>) -> Result<Vec<Self>, InvalidSpan> {
        if spans.len() > MAX_BATCH_SPANS {
            return Err(InvalidSpan::TooManySpans {
                count: spans.len(),
                limit: MAX_BATCH_SPANS,
            });
        }
        spans
            .into_iter()
            .enumerate()
            .map(|(index, pb)| Span::from_pb(index, pb))
            .collect()
    }
}

impl From<&Span> for pb::Span {
    fn from(span: &Span) -> Self {
        let (status, status_message) = match &span.status {
            SpanStatus::Unset => (pb::SpanStatus::Unset, String::new()),
            SpanStatus::Ok => (pb::SpanStatus::Ok, String::new()),
            SpanStatus::Error(message) => (pb::SpanStatus::Error, message.clone()),
        };
        pb::Span {
            trace_id: span.trace_id.to_string(),
            span_id: span.span_id.to_string(),
            parent_span_id: span
                .parent_span_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            service: span.service.clone(),
            instance: span.instance.clone(),
            name: span.name.clone(),
            kind: match span.kind {
                SpanKind::Internal => pb::SpanKind::Internal,
                SpanKind::Server => pb::SpanKind::Server,
                SpanKind::Client => pb::SpanKind::Client,
            } as i32,
            start: Some(timestamp_to_pb(span.start)),
            duration: Some(duration_to_pb(span.duration)),
            status: status as i32,
            status_message,
            attributes: span
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            sequence: span.sequence,
        }
    }
}

/// One trace at a glance.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    /// The trace.
    pub trace_id: TraceId,
    /// The service of its root span (its earliest span when the root is
    /// not stored).
    pub root_service: String,
    /// The name of that span.
    pub root_name: String,
    /// When the trace started.
    pub start: SystemTime,
    /// From its first start to its last end.
    pub duration: Duration,
    /// How many spans it has.
    pub span_count: usize,
    /// How many of them failed.
    pub error_count: usize,
    /// Every service it touched.
    pub services: BTreeSet<String>,
}

impl TraceSummary {
    /// Sums up the spans of one trace; `None` when there are none.
    pub fn of<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Option<Self> {
        let mut spans = spans.into_iter();
        let first = spans.next()?;
        let mut summary = TraceSummary {
            trace_id: first.trace_id,
            root_service: first.service.clone(),
            root_name: first.name.clone(),
            start: first.start,
            duration: first.duration,
            span_count: 0,
            error_count: 0,
            services: BTreeSet::new(),
        };
        let mut root_is_real = false;
        let mut end = first.end();
        for span in std::iter::once(first).chain(spans) {
            summary.span_count += 1;
            summary.error_count += usize::from(span.status.is_error());
            summary.services.insert(span.service.clone());
            end = end.max(span.end());
            let is_root = span.parent_span_id.is_none();
            if !root_is_real && (is_root || span.start < summary.start) {
                summary.root_service = span.service.clone();
                summary.root_name = span.name.clone();
                root_is_real = is_root;
            }
            summary.start = summary.start.min(span.start);
        }
        summary.duration = end.duration_since(summary.start).unwrap_or_default();
        Some(summary)
    }
}

impl TraceSummary {
    /// Adds what another store holds of the same trace.
    pub fn absorb(&mut self, other: TraceSummary) {
        let end = (self.start + self.duration).max(other.start + other.duration);
        if other.start < self.start {
            self.start = other.start;
            self.root_service = other.root_service;
            self.root_name = other.root_name;
        }
        self.duration = end.duration_since(self.start).unwrap_or_default();
        self.span_count += other.span_count;
        self.error_count += other.error_count;
        self.services.extend(other.services);
    }
}

impl From<&TraceSummary> for pb::TraceSummary {
    fn from(summary: &TraceSummary) -> Self {
        pb::TraceSummary {
            trace_id: summary.trace_id.to_string(),
            root_service: summary.root_service.clone(),
            root_name: summary.root_name.clone(),
            start: Some(timestamp_to_pb(summary.start)),
            duration: Some(duration_to_pb(summary.duration)),
            span_count: u32::try_from(summary.span_count).unwrap_or(u32::MAX),
            error_count: u32::try_from(summary.error_count).unwrap_or(u32::MAX),
            services: summary.services.iter().cloned().collect(),
        }
    }
}

/// Which traces a query finds. Every condition that is set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceQuery {
    /// Only traces with a span of this service.
    pub service: Option<String>,
    /// Only traces with a failed span.
    pub errors_only: bool,
    /// Only traces that took at least this long.
    pub min_duration: Option<Duration>,
    /// Only traces that started at or after this time.
    pub since: Option<SystemTime>,
    /// At most this many traces.
    pub limit: usize,
}

impl TraceQuery {
    /// Whether a trace's summary matches.
    pub fn matches(&self, summary: &TraceSummary) -> bool {
        self.service
            .as_ref()
            .is_none_or(|service| summary.services.contains(service))
            && (!self.errors_only || summary.error_count > 0)
            && self.min_duration.is_none_or(|min| summary.duration >= min)
            && self.since.is_none_or(|since| summary.start >= since)
    }
}

/// Why a trace query from the wire was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTraceQuery {
    /// The page size is over [`MAX_TRACES_PAGE`].
    #[error("page_size: {0} is over the limit of {MAX_TRACES_PAGE}")]
    PageSize(u32),
    /// The service is longer than any service name.
    #[error("service: {0} bytes is over the {MAX_NAME_BYTES}-byte limit")]
    Service(usize),
    /// The minimum duration is negative or malformed.
    #[error("min_duration: must be zero or positive, with nanos in 0..1e9")]
    MinDuration,
    /// The start bound is not a valid point in time.
    #[error("since: {0}")]
    Since(InvalidTimestamp),
}

impl TryFrom<pb::QueryTracesRequest> for TraceQuery {
    type Error = InvalidTraceQuery;

    fn try_from(pb: pb::QueryTracesRequest) -> Result<Self, Self::Error> {
        if pb.page_size as usize > MAX_TRACES_PAGE {
            return Err(InvalidTraceQuery::PageSize(pb.page_size));
        }
        if pb.service.len() > MAX_NAME_BYTES {
            return Err(InvalidTraceQuery::Service(pb.service.len()));
        }
        Ok(TraceQuery {
            service: (!pb.service.is_empty()).then_some(pb.service),
            errors_only: pb.errors_only,
            min_duration: pb
                .min_duration
                .as_ref()
                .map(|d| duration_from_pb(d).ok_or(InvalidTraceQuery::MinDuration))
                .transpose()?,
            since: pb
                .since
                .as_ref()
                .map(|ts| timestamp_from_pb(ts).map_err(InvalidTraceQuery::Since))
                .transpose()?,
            limit: match pb.page_size {
                0 => DEFAULT_TRACES_PAGE,
                size => size as usize,
            },
        })
    }
}

impl From<&TraceQuery> for pb::QueryTracesRequest {
    fn from(query: &TraceQuery) -> Self {
        pb::QueryTracesRequest {
            service: query.service.clone().unwrap_or_default(),
            errors_only: query.errors_only,
            min_duration: query.min_duration.map(duration_to_pb),
            since: query.since.map(timestamp_to_pb),
            page_size: u32::try_from(query.limit).unwrap_or(u32::MAX),
        }
    }
}

/// A summary from the wire, as a client reads it; `None` when malformed.
pub fn summary_from_pb(pb: pb::TraceSummary) -> Option<TraceSummary> {
    Some(TraceSummary {
        trace_id: pb.trace_id.parse().ok()?,
        root_service: pb.root_service,
        root_name: pb.root_name,
        start: timestamp_from_pb(pb.start.as_ref()?).ok()?,
        duration: duration_from_pb(pb.duration.as_ref()?)?,
        span_count: pb.span_count as usize,
        error_count: pb.error_count as usize,
        services: pb.services.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn span(id: u64, parent: Option<u64>, service: &str, start_ms: u64, ms: u64) -> Span {
        Span {
            trace_id: TraceId(7),
            span_id: SpanId(id),
            parent_span_id: parent.map(SpanId),
            service: service.to_owned(),
            instance: format!("{service}-1"),
            name: format!("op-{id}"),
            kind: SpanKind::Server,
            start: UNIX_EPOCH + Duration::from_millis(start_ms),
            duration: Duration::from_millis(ms),
            status: SpanStatus::Unset,
            attributes: Vec::new(),
            sequence: 0,
        }
    }

    #[test]
    fn ids_parse_and_print_as_w3c_hex() {
        let trace: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        assert_eq!(trace.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let span: SpanId = "00f067aa0ba902b7".parse().unwrap();
        assert_eq!(span.to_string(), "00f067aa0ba902b7");
        assert_eq!(TraceId(1).to_string(), format!("{:032x}", 1));
        assert_eq!(SpanId(u64::MAX).to_string(), "ffffffffffffffff");
        for bad in [
            "",
            "00000000000000000000000000000000",
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "4bf92f3577b34da6a3ce929d0e0e473",
        ] {
            assert!(bad.parse::<TraceId>().is_err(), "{bad:?}");
        }
        assert!("0000000000000000".parse::<SpanId>().is_err());
        assert!("+0f067aa0ba902b7".parse::<SpanId>().is_err());
    }

    #[test]
    fn attributes_are_sorted_by_key_and_the_last_value_of_a_key_wins() {
        let pairs = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            sorted_attributes(pairs(&[("b", "1"), ("a", "2"), ("b", "3")])),
            pairs(&[("a", "2"), ("b", "3")])
        );
        assert!(sorted_attributes(Vec::new()).is_empty());
    }

    #[test]
    fn spans_round_trip_and_bad_ones_name_their_field() {
        let mut original = span(1, Some(2), "grading", 5, 3);
        original.status = SpanStatus::Error("boom".into());
        original
            .attributes
            .push(("rpc.grpc.status_code".into(), "13".into()));
        let back = Span::from_pb(0, pb::Span::from(&original)).unwrap();
        assert_eq!(back, original);

        let mut wire = pb::Span::from(&original);
        wire.trace_id = "nope".into();
        let error = Span::batch_from_pb(vec![pb::Span::from(&original), wire]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("spans[1].trace_id: must be 32"),
            "{error}"
        );
        let mut wire = pb::Span::from(&original);
        wire.duration = Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        });
        assert_eq!(
            Span::from_pb(0, wire).unwrap_err().to_string(),
            "spans[0].duration: must be zero or positive, with nanos in 0..1e9"
        );
        let mut wire = pb::Span::from(&original);
        wire.service.clear();
        assert_eq!(
            Span::from_pb(3, wire).unwrap_err().to_string(),
            "spans[3].service: must not be empty"
        );
    }

    #[test]
    fn a_summary_spans_from_the_first_start_to_the_last_end() {
        let spans = [
            span(2, Some(1), "grading", 12, 5),
            span(1, None, "portal", 10, 10),
            span(3, Some(2), "grading", 13, 9),
        ];
        let mut failed = spans[2].clone();
        failed.status = SpanStatus::Error("x".into());
        let summary = TraceSummary::of([&spans[0], &spans[1], &failed]).unwrap();
        assert_eq!(summary.root_service, "portal");
        assert_eq!(summary.root_name, "op-1");
        assert_eq!(summary.start, UNIX_EPOCH + Duration::from_millis(10));
        assert_eq!(summary.duration, Duration::from_millis(12));
        assert_eq!((summary.span_count, summary.error_count), (3, 1));
        assert_eq!(summary.services.len(), 2);
        let query = TraceQuery {
            service: Some("grading".into()),
            errors_only: true,
            min_duration: Some(Duration::from_millis(12)),
            ..TraceQuery::default()
        };
        assert!(query.matches(&summary));
        let slower = TraceQuery {
            min_duration: Some(Duration::from_millis(13)),
            ..query
        };
        assert!(!slower.matches(&summary));
        // Without its root, the earliest span stands for the trace.
        let orphan = TraceSummary::of([&spans[2], &spans[0]]).unwrap();
        assert_eq!(orphan.root_name, "op-2");
    }
}
