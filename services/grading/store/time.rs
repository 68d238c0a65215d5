//! Creation times: microseconds since the Unix epoch, handed out strictly
//! increasing within a store, so that "oldest first" is also the order in
//! which things were added.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::grading::store::StoreError;

/// Hands out creation times.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    /// The last time handed out.
    last: i64,
}

impl Clock {
    /// The current time, or just after the last one handed out.
    pub(crate) fn now(&mut self) -> i64 {
        let now = micros_from_time(SystemTime::now());
        self.last = now.max(self.last.saturating_add(1));
        self.last
    }
}

/// Microseconds since the epoch (0 before it, `i64::MAX` far after it).
pub(crate) fn micros_from_time(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The time of a stored microsecond count.
pub(crate) fn time_from_micros(micros: i64) -> Result<SystemTime, StoreError> {
    u64::try_from(micros)
        .ok()
        .and_then(|m| UNIX_EPOCH.checked_add(Duration::from_micros(m)))
        .ok_or_else(|| StoreError::Corrupt(format!("created_at {micros} is out of range")))
}

/// The microsecond time `age` before `now` (for retention cut-offs).
pub(crate) fn micros_before(now: SystemTime, age: Duration) -> i64 {
    micros_from_time(now.checked_sub(age).unwrap_or(UNIX_EPOCH))
}
