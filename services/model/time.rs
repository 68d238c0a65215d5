//! Protobuf timestamps and points in time, converted the same way for every
//! package.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a timestamp from the wire is not a valid point in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTimestamp {
    /// The nanoseconds are not in `0..1_000_000_000`.
    #[error("nanos {0} is out of range (0 to 999999999)")]
    Nanos(i32),
    /// The time is before 1970-01-01T00:00:00Z.
    #[error("{0} seconds is before the Unix epoch")]
    BeforeEpoch(i64),
    /// The time is after 9999-12-31T23:59:59Z, the end of the protobuf
    /// timestamp range.
    #[error("{0} seconds is after the year 9999")]
    TooLate(i64),
}

/// The last second of the protobuf timestamp range, 9999-12-31T23:59:59Z.
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// Converts a protobuf timestamp to a point in time from the epoch to the
/// end of the year 9999.
pub fn timestamp_from_pb(ts: &prost_types::Timestamp) -> Result<SystemTime, InvalidTimestamp> {
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or(InvalidTimestamp::Nanos(ts.nanos))?;
    if ts.seconds > MAX_TIMESTAMP_SECONDS {
        return Err(InvalidTimestamp::TooLate(ts.seconds));
    }
    let seconds =
        u64::try_from(ts.seconds).map_err(|_| InvalidTimestamp::BeforeEpoch(ts.seconds))?;
    UNIX_EPOCH
        .checked_add(Duration::new(seconds, nanos))
        .ok_or(InvalidTimestamp::TooLate(ts.seconds))
}

/// Converts a point in time to a protobuf timestamp.
pub fn timestamp_to_pb(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}
