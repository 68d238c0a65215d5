//! The durable, append-only stores of the log daemon: one for log records
//! ([`LogStore`]) and one for the spans of traces ([`SpanStore`]), the same
//! [`SegmentStore`] over a different [`Entry`].
//!
//! Entries (records or spans) live in segment files `segment-<first sequence>.log` (the number
//! zero-padded to 20 digits) in one directory. Each record is one frame:
//! `[u32 LE payload length][u32 LE CRC-32 of the payload][payload]`, the
//! payload being the protobuf encoding of the entry ([`pb::LogRecord`],
//! [`pb::Span`]) with its sequence.
//! An append writes every frame of a group commit with one write and makes it
//! durable with one `sync_data` before it returns. Every retained record is
//! also held in memory, oldest first, to answer queries.
//!
//! Opening recovers from a crash mid-append: a torn or corrupt tail of the
//! newest segment is truncated away, and corruption inside an older segment
//! skips the rest of that segment; both are logged, neither stops the store
//! from opening. Retention deletes whole segments, oldest first.
//!
//! Everything here is synchronous; callers in async code run it on a
//! blocking thread.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use prost::Message;

use crate::model::log::trace::{Span, TraceId, TraceQuery, TraceSummary};
use crate::model::log::{LogFilter, LogRecord};
use crate::pb::log::v1 as pb;

/// What a [`SegmentStore`] holds: entries with a sequence the store assigns
/// and a time retention goes by, stored as their protobuf.
pub trait Entry: Clone + Send + Sync + 'static {
    /// The protobuf an entry is stored as.
    type Stored: Message + Default;
    /// The entry's sequence (0 before it is stored).
    fn sequence(&self) -> u64;
    /// Sets the sequence, when stored.
    fn set_sequence(&mut self, sequence: u64);
    /// The time retention by age goes by.
    fn time(&self) -> SystemTime;
    /// The protobuf to store.
    fn to_stored(&self) -> Self::Stored;
    /// The sequence of a stored protobuf.
    fn stored_sequence(stored: &Self::Stored) -> u64;
    /// The entry read back; `Err` says why it is not valid.
    fn from_stored(stored: Self::Stored) -> Result<Self, String>;
}

impl Entry for LogRecord {
    type Stored = pb::LogRecord;
    fn sequence(&self) -> u64 {
        self.sequence
    }
    fn set_sequence(&mut self, sequence: u64) {
        self.sequence = sequence;
    }
    fn time(&self) -> SystemTime {
        self.timestamp
    }
    fn to_stored(&self) -> pb::LogRecord {
        pb::LogRecord::from(self)
    }
    fn stored_sequence(stored: &pb::LogRecord) -> u64 {
        stored.sequence
    }
    fn from_stored(stored: pb::LogRecord) -> Result<Self, String> {
        LogRecord::from_stored_pb(stored).map_err(|e| e.to_string())
    }
}

impl Entry for Span {
    type Stored = pb::Span;
    fn sequence(&self) -> u64 {
        self.sequence
    }
    fn set_sequence(&mut self, sequence: u64) {
        self.sequence = sequence;
    }
    fn time(&self) -> SystemTime {
        self.end()
    }
    fn to_stored(&self) -> pb::Span {
        pb::Span::from(self)
    }
    fn stored_sequence(stored: &pb::Span) -> u64 {
        stored.sequence
    }
    fn from_stored(stored: pb::Span) -> Result<Self, String> {
        Span::from_stored_pb(stored).map_err(|e| e.to_string())
    }
}

/// The store of log records.
pub type LogStore = SegmentStore<LogRecord>;
/// The store of the spans of traces.
pub type SpanStore = SegmentStore<Span>;

/// A segment is closed, and a new one started, once it holds at least this
/// many bytes.
pub const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// The bytes of a frame header: length and checksum.
const FRAME_HEADER_BYTES: usize = 8;
/// The largest payload a frame may have; a longer length means corruption.
/// Valid records are far smaller (see the limits of [`crate::model::log`]).
const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// The file name prefix of a segment.
const SEGMENT_PREFIX: &str = "segment-";
/// The file name suffix of a segment.
const SEGMENT_SUFFIX: &str = ".log";

/// How much the store keeps. Whole segments are deleted, oldest first, while
/// the store is over either limit; the segment being written is never
/// deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The most bytes of segment files to keep.
    pub max_bytes: u64,
    /// Delete a segment once its newest record is older than this.
    pub max_age: Duration,
}

impl Default for Retention {
    /// 256 MiB and 7 days.
    fn default() -> Self {
        Retention {
            max_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(7 * 24 * 60 * 60),
        }
    }
}

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{operation} {}: {source}", path.display())]
    Io {
        /// What the store was doing, for example "writing".
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error of the operating system.
        #[source]
        source: io::Error,
    },
    /// A record is too large to store as one frame.
    #[error("a record encodes to {size} bytes, over the {limit}-byte frame limit")]
    RecordTooLarge {
        /// The size of the encoded record.
        size: usize,
        /// The frame limit.
        limit: usize,
    },
}

/// Builds a closure that wraps an io error with what was done to which path.
fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        operation,
        path,
        source,
    }
}

/// A page of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage<E = LogRecord> {
    /// The matching entries, newest first.
    pub records: Vec<E>,
    /// When more matching records may exist: the sequence of the last record
    /// of this page, to pass as `before` for the next page.
    pub next_before: Option<u64>,
}

impl<E> Default for QueryPage<E> {
    fn default() -> Self {
        QueryPage {
            records: Vec::new(),
            next_before: None,
        }
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    /// The path of the file.
    path: PathBuf,
    /// The sequence in the file name.
    first_sequence: u64,
    /// The sequence of the newest record in the file, 0 if none.
    last_sequence: u64,
    /// The newest record timestamp in the file, if any.
    newest: Option<SystemTime>,
    /// The length of the file.
    bytes: u64,
}

impl Segment {
    /// A segment that holds no records yet.
    fn empty(dir: &Path, first_sequence: u64) -> Self {
        Segment {
            path: segment_path(dir, first_sequence),
            first_sequence,
            last_sequence: 0,
            newest: None,
            bytes: 0,
        }
    }

    /// Accounts for an entry stored in this segment.
    fn note<E: Entry>(&mut self, entry: &E) {
        self.last_sequence = entry.sequence();
        self.newest = Some(self.newest.map_or(entry.time(), |t| t.max(entry.time())));
    }
}

/// The path of the segment whose first sequence is `first_sequence`.
fn segment_path(dir: &Path, first_sequence: u64) -> PathBuf {
    dir.join(format!(
        "{SEGMENT_PREFIX}{first_sequence:020}{SEGMENT_SUFFIX}"
    ))
}

/// The first sequence of a segment file name, or `None` for other files.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Appends the frame of `record` to `out`.
fn encode_frame<E: Entry>(record: &E, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let payload = record.to_stored().encode_to_vec();
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len as usize <= MAX_FRAME_BYTES)
        .ok_or(StoreError::RecordTooLarge {
            size: payload.len(),
            limit: MAX_FRAME_BYTES,
        })?;
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// The records of one segment file, and where its valid frames end.
struct Decoded<E> {
    /// The valid entries, in order.
    records: Vec<E>,
    /// The byte offset just after the last valid frame.
    valid_len: usize,
    /// Why decoding stopped before the end of the file, if it did.
    problem: Option<String>,
}

/// Reads the frames of `data`, stopping at the first incomplete or corrupt
/// one. Records must continue after `after` in increasing sequence order.
fn decode_segment<E: Entry>(data: &[u8], mut after: u64) -> Decoded<E> {
    let mut records = Vec::new();
    let mut offset = 0;
    let problem = loop {
        let rest = &data[offset..];
        if rest.is_empty() {
            break None;
        }
        let Some((header, rest)) = rest.split_first_chunk::<FRAME_HEADER_BYTES>() else {
            break Some(format!("incomplete frame header of {} bytes", rest.len()));
        };
        let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
        let length = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        if length > MAX_FRAME_BYTES {
            break Some(format!("frame length {length} is over the limit"));
        }
        let Some(payload) = rest.get(..length) else {
            break Some(format!(
                "incomplete frame: {} of {length} payload bytes",
                rest.len()
            ));
        };
        if crc32fast::hash(payload) != crc {
            break Some("checksum mismatch".to_owned());
        }
        let message = match E::Stored::decode(payload) {
            Ok(message) => message,
            Err(e) => break Some(format!("undecodable record: {e}")),
        };
        let sequence = E::stored_sequence(&message);
        if sequence <= after {
            break Some(format!(
                "sequence {sequence} does not follow sequence {after}"
            ));
        }
        let record = match E::from_stored(message) {
            Ok(record) => record,
            Err(e) => break Some(format!("invalid record {sequence}: {e}")),
        };
        after = sequence;
        records.push(record);
        offset += FRAME_HEADER_BYTES + length;
    };
    Decoded {
        records,
        valid_len: offset,
        problem,
    }
}

/// Makes a directory entry change (a new file) durable. Best effort: some
/// platforms cannot sync a directory.
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "cannot sync the log directory");
    }
}

/// The durable, append-only store of entries. See the module documentation.
#[derive(Debug)]
pub struct SegmentStore<E> {
    /// The directory of the segment files.
    dir: PathBuf,
    /// What to keep.
    retention: Retention,
    /// The size at which the active segment is closed.
    segment_bytes: u64,
    /// The segments, oldest first; the last is the active one. Never empty.
    segments: VecDeque<Segment>,
    /// The active segment, open for appending.
    active: File,
    /// Set when a failed append could not be undone: the next append starts
    /// a new segment rather than write after unknown bytes.
    active_dirty: bool,
    /// Every retained entry, oldest (lowest sequence) first.
    records: VecDeque<E>,
    /// The highest sequence ever assigned, 0 if none.
    last_sequence: u64,
}

impl<E: Entry> SegmentStore<E> {
    /// Opens the store in `dir`, creating the directory if needed, reading
    /// every segment and recovering from a torn or corrupt tail (see the
    /// module documentation), then applies the retention.
    pub fn open(dir: &Path, retention: Retention) -> Result<Self, StoreError> {
        Self::open_with_segment_bytes(dir, retention, SEGMENT_BYTES)
    }

    /// [`SegmentStore::open`] with a different segment size, for tests.
    pub(crate) fn open_with_segment_bytes(
        dir: &Path,
        retention: Retention,
        segment_bytes: u64,
    ) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        let mut firsts = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error("listing", dir))? {
            let entry = entry.map_err(io_error("listing", dir))?;
            if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();

        let mut segments = VecDeque::with_capacity(firsts.len() + 1);
        let mut records = VecDeque::new();
        let mut last_sequence = 0;
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let mut segment = Segment::empty(dir, first);
            let data = fs::read(&segment.path).map_err(io_error("reading", &segment.path))?;
            let decoded = decode_segment::<E>(&data, last_sequence);
            segment.bytes = data.len() as u64;
            if let Some(problem) = &decoded.problem {
                if is_last {
                    tracing::warn!(
                        segment = %segment.path.display(),
                        problem = %problem,
                        kept_bytes = decoded.valid_len,
                        dropped_bytes = data.len() - decoded.valid_len,
                        "torn or corrupt tail of the newest log segment; truncating it"
                    );
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&segment.path)
                        .map_err(io_error("opening", &segment.path))?;
                    file.set_len(decoded.valid_len as u64)
                        .and_then(|()| file.sync_all())
                        .map_err(io_error("truncating", &segment.path))?;
                    segment.bytes = decoded.valid_len as u64;
                } else {
                    tracing::warn!(
                        segment = %segment.path.display(),
                        problem = %problem,
                        offset = decoded.valid_len,
                        skipped_bytes = data.len() - decoded.valid_len,
                        "corrupt log segment; skipping the rest of it"
                    );
                }
            }
            for record in decoded.records {
                segment.note(&record);
                last_sequence = record.sequence();
                records.push_back(record);
            }
            segments.push_back(segment);
        }

        match segments.back() {
            // Never reuse a sequence the name of the active segment claims.
            Some(active) => {
                last_sequence = last_sequence.max(active.first_sequence.saturating_sub(1))
            }
            None => {
                let segment = Segment::empty(dir, last_sequence + 1);
                segments.push_back(segment);
            }
        }
        let active_path = match segments.back() {
            Some(segment) => segment.path.clone(),
            None => segment_path(dir, last_sequence + 1),
        };
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&active_path)
            .map_err(io_error("opening", &active_path))?;
        sync_dir(dir);

        let mut store = SegmentStore {
            dir: dir.to_path_buf(),
            retention,
            segment_bytes,
            segments,
            active,
            active_dirty: false,
            records,
            last_sequence,
        };
        let removed = store.enforce_retention(SystemTime::now())?;
        tracing::info!(
            dir = %dir.display(),
            records = store.records.len(),
            segments = store.segments.len(),
            last_sequence = store.last_sequence,
            removed,
            "log store opened"
        );
        Ok(store)
    }

    /// The retention the store applies.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Starts a new active segment, whose first sequence is the next one.
    fn roll(&mut self) -> Result<(), StoreError> {
        let segment = Segment::empty(&self.dir, self.last_sequence + 1);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&segment.path)
            .map_err(io_error("creating", &segment.path))?;
        // A leftover file of that name holds no acknowledged records.
        file.set_len(0)
            .map_err(io_error("creating", &segment.path))?;
        sync_dir(&self.dir);
        tracing::debug!(segment = %segment.path.display(), "new log segment");
        self.active = file;
        self.active_dirty = false;
        self.segments.push_back(segment);
        Ok(())
    }

    /// Durably appends a group commit of batches of records, and returns how
    /// many records of each batch were stored (always the length of the
    /// batch: an append stores everything or nothing).
    ///
    /// The records get consecutive sequences after [`SegmentStore::last_sequence`],
    /// in order; their `sequence` fields are overwritten. Every frame is
    /// written with one write, then made durable with one `sync_data`. If
    /// either fails the records are not stored: the file is truncated back to
    /// its previous length (best effort) and the error returned.
    ///
    /// A whole append goes to one segment: the active one is closed before
    /// the append once it holds [`SEGMENT_BYTES`] or more.
    pub fn append(&mut self, batches: Vec<Vec<E>>) -> Result<Vec<u64>, StoreError> {
        let counts: Vec<u64> = batches.iter().map(|b| b.len() as u64).collect();
        let total = batches.iter().map(Vec::len).sum::<usize>();
        if total == 0 {
            return Ok(counts);
        }

        let mut frames = Vec::new();
        let mut stored = Vec::with_capacity(total);
        let mut sequence = self.last_sequence;
        for mut record in batches.into_iter().flatten() {
            sequence += 1;
            record.set_sequence(sequence);
            encode_frame(&record, &mut frames)?;
            stored.push(record);
        }

        let needs_roll = self.active_dirty
            || self
                .segments
                .back()
                .is_none_or(|active| active.bytes >= self.segment_bytes);
        if needs_roll {
            self.roll()?;
        }
        let Some(active) = self.segments.back_mut() else {
            // `roll` always leaves an active segment; this is unreachable.
            return Err(StoreError::Io {
                operation: "writing",
                path: self.dir.clone(),
                source: io::Error::other("no active segment"),
            });
        };

        let written = self
            .active
            .write_all(&frames)
            .and_then(|()| self.active.sync_data());
        if let Err(source) = written {
            let undone = self
                .active
                .set_len(active.bytes)
                .and_then(|()| self.active.sync_data());
            if let Err(e) = undone {
                tracing::error!(
                    segment = %active.path.display(),
                    error = %e,
                    "cannot undo a failed append; the next append starts a new segment"
                );
                // The failed frames may survive: never reuse their sequences.
                self.active_dirty = true;
                self.last_sequence = sequence;
            }
            return Err(StoreError::Io {
                operation: "writing",
                path: active.path.clone(),
                source,
            });
        }

        active.bytes += frames.len() as u64;
        for record in &stored {
            active.note(record);
        }
        self.last_sequence = sequence;
        self.records.extend(stored);
        Ok(counts)
    }

    /// The records with a sequence after `sequence`, oldest first: for
    /// example the records of the last append.
    pub fn records_after(&self, sequence: u64) -> impl DoubleEndedIterator<Item = &E> {
        let start = self.records.partition_point(|r| r.sequence() <= sequence);
        self.records.range(start..)
    }

    /// The stored entries that `matches` with a sequence below `before`
    /// (every entry when `None`), newest first, at most `limit` of them.
    ///
    /// `next_before` is set only when another matching entry exists beyond
    /// the page. A `limit` of 0 gives an empty last page.
    pub fn query_where(
        &self,
        matches: impl Fn(&E) -> bool,
        before: Option<u64>,
        limit: usize,
    ) -> QueryPage<E> {
        let end = match before {
            Some(before) => self.records.partition_point(|r| r.sequence() < before),
            None => self.records.len(),
        };
        let mut page = QueryPage::default();
        if limit == 0 {
            return page;
        }
        for record in self.records.range(..end).rev() {
            if !matches(record) {
                continue;
            }
            if page.records.len() == limit {
                page.next_before = page.records.last().map(E::sequence);
                break;
            }
            page.records.push(record.clone());
        }
        page
    }

    /// Deletes whole segments, oldest first and never the active one, while
    /// the segment files total more than [`Retention::max_bytes`] or while
    /// the oldest segment's newest record is older than `now` minus
    /// [`Retention::max_age`]. Their records leave memory too. Returns how
    /// many records were removed.
    pub fn enforce_retention(&mut self, now: SystemTime) -> Result<usize, StoreError> {
        let cutoff = now.checked_sub(self.retention.max_age);
        let mut removed = 0;
        while self.segments.len() > 1 {
            let Some(oldest) = self.segments.front() else {
                break;
            };
            let over_size = self.disk_bytes() > self.retention.max_bytes;
            let expired = match (oldest.newest, cutoff) {
                (None, _) => true,
                (Some(newest), Some(cutoff)) => newest < cutoff,
                (Some(_), None) => false,
            };
            if !over_size && !expired {
                break;
            }
            match fs::remove_file(&oldest.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("deleting", &oldest.path)(e)),
            }
            let last = oldest.last_sequence;
            let mut dropped = 0;
            while self.records.front().is_some_and(|r| r.sequence() <= last) {
                self.records.pop_front();
                dropped += 1;
            }
            tracing::info!(
                segment = %oldest.path.display(),
                records = dropped,
                reason = if over_size { "size" } else { "age" },
                "deleted log segment"
            );
            removed += dropped;
            self.segments.pop_front();
        }
        Ok(removed)
    }

    /// The highest sequence assigned so far, 0 if none.
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// How many records are retained.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is retained.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The total size of the segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// How many segment files there are, the active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

impl SegmentStore<LogRecord> {
    /// The stored records that match `filter`: [`SegmentStore::query_where`].
    pub fn query(&self, filter: &LogFilter, before: Option<u64>, limit: usize) -> QueryPage {
        self.query_where(|record| filter.matches(record), before, limit)
    }
}

impl SegmentStore<Span> {
    /// Every stored span of `trace`, by start time.
    pub fn trace(&self, trace: TraceId) -> Vec<Span> {
        let mut spans: Vec<Span> = self
            .records
            .iter()
            .filter(|span| span.trace_id == trace)
            .cloned()
            .collect();
        spans.sort_by_key(|span| (span.start, span.sequence));
        spans
    }

    /// The traces that match `query`, newest (by their latest stored span)
    /// first, at most `query.limit`. Looks at no more than `scan_limit` of
    /// the newest spans, so that a query costs a bounded time.
    pub fn recent_traces(&self, query: &TraceQuery, scan_limit: usize) -> Vec<TraceSummary> {
        let mut order: Vec<TraceId> = Vec::new();
        let mut by_trace: std::collections::HashMap<TraceId, Vec<&Span>> =
            std::collections::HashMap::new();
        for span in self.records.iter().rev().take(scan_limit) {
            let spans = by_trace.entry(span.trace_id).or_default();
            if spans.is_empty() {
                order.push(span.trace_id);
            }
            spans.push(span);
        }
        order
            .into_iter()
            .filter_map(|trace| TraceSummary::of(by_trace.get(&trace)?.iter().copied()))
            .filter(|summary| query.matches(summary))
            .take(query.limit)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::log::Level;
    use std::collections::BTreeMap;
    use std::time::UNIX_EPOCH;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn rec(service: &str, level: Level, message: &str, time: SystemTime) -> LogRecord {
        LogRecord {
            timestamp: time,
            service: service.into(),
            instance: "i1".into(),
            level,
            message: message.into(),
            fields: BTreeMap::from([("k".to_string(), "v".to_string())]),
            trace_id: None,
            span_id: None,
            sequence: 0,
        }
    }

    fn msg(n: usize) -> LogRecord {
        rec("svc", Level::Info, &format!("m{n}"), SystemTime::now())
    }

    fn keep_all() -> Retention {
        Retention {
            max_bytes: u64::MAX,
            max_age: Duration::MAX,
        }
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(parse_segment_name)
                    .is_some()
            })
            .collect();
        files.sort();
        files
    }

    fn messages(store: &LogStore) -> Vec<String> {
        store.records.iter().map(|r| r.message.clone()).collect()
    }

    fn span(trace: &str, id: &str, parent: Option<&str>, service: &str, start: u64) -> Span {
        use crate::model::log::trace::{SpanKind, SpanStatus};
        Span {
            trace_id: trace.parse().unwrap(),
            span_id: id.parse().unwrap(),
            parent_span_id: parent.map(|p| p.parse().unwrap()),
            service: service.into(),
            instance: format!("{service}-1"),
            name: format!("op {id}"),
            kind: SpanKind::Server,
            start: at(start),
            duration: Duration::from_millis(5),
            status: if service == "grading" {
                SpanStatus::Error("boom".into())
            } else {
                SpanStatus::Unset
            },
            attributes: Vec::new(),
            sequence: 0,
        }
    }

    #[test]
    fn spans_are_kept_read_back_by_trace_and_summed_up_by_recent_trace() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            "0af7651916cd43dd8448eb211c80319c",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        );
        {
            let mut spans = SpanStore::open(dir.path(), keep_all()).unwrap();
            let first = vec![
                span(
                    a,
                    "00000000000000a2",
                    Some("00000000000000a1"),
                    "grading",
                    11,
                ),
                span(b, "00000000000000b1", None, "portal", 20),
            ];
            let second = vec![span(a, "00000000000000a1", None, "portal", 10)];
            assert_eq!(spans.append(vec![first, second]).unwrap(), vec![2, 1]);
        }
        let spans = SpanStore::open(dir.path(), keep_all()).unwrap();
        let trace = spans.trace(a.parse().unwrap());
        let ids: Vec<String> = trace.iter().map(|s| s.span_id.to_string()).collect();
        assert_eq!(
            ids,
            ["00000000000000a1", "00000000000000a2"],
            "by start time"
        );
        assert_eq!(trace[1].sequence, 1);
        assert!(
            spans
                .trace("00000000000000000000000000000001".parse().unwrap())
                .is_empty()
        );

        let all = spans.recent_traces(
            &TraceQuery {
                limit: 10,
                ..TraceQuery::default()
            },
            1000,
        );
        let order: Vec<String> = all.iter().map(|t| t.trace_id.to_string()).collect();
        assert_eq!(order, [a, b], "newest stored first");
        assert_eq!(
            (
                all[0].root_service.as_str(),
                all[0].span_count,
                all[0].error_count
            ),
            ("portal", 2, 1)
        );
        let failed = TraceQuery {
            errors_only: true,
            limit: 10,
            ..TraceQuery::default()
        };
        assert_eq!(spans.recent_traces(&failed, 1000).len(), 1);
        let one = TraceQuery {
            limit: 1,
            ..TraceQuery::default()
        };
        assert_eq!(spans.recent_traces(&one, 1000).len(), 1);
    }

    #[test]
    fn append_and_reopen_keep_records_and_sequences() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path(), keep_all()).unwrap();
            assert!(store.is_empty());
            assert_eq!(store.last_sequence(), 0);
            let counts = store
                .append(vec![vec![msg(1), msg(2)], vec![], vec![msg(3)]])
                .unwrap();
            assert_eq!(counts, vec![2, 0, 1]);
            assert_eq!(store.last_sequence(), 3);
            assert_eq!(store.append(vec![vec![]]).unwrap(), vec![0]);
            assert_eq!(store.last_sequence(), 3);
        }
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 1);
        assert!(files[0].ends_with("segment-00000000000000000001.log"));

        let mut store = LogStore::open(dir.path(), keep_all()).unwrap();
        assert_eq!(store.len(), 3);
        assert_eq!(store.last_sequence(), 3);
        let seqs: Vec<u64> = store.records.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(messages(&store), vec!["m1", "m2", "m3"]);
        assert_eq!(
            store.records[0].fields.get("k").map(String::as_str),
            Some("v")
        );
        store.append(vec![vec![msg(4)]]).unwrap();
        assert_eq!(store.last_sequence(), 4);
        assert_eq!(store.disk_bytes(), fs::metadata(&files[0]).unwrap().len());
        assert_eq!(
            store
                .records_after(2)
                .map(|r| r.sequence)
                .collect::<Vec<_>>(),
            vec![3, 4]
        );
    }

    #[test]
    fn torn_tail_is_truncated_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let good_len;
        {
            let mut store = LogStore::open(dir.path(), keep_all()).unwrap();
            store.append(vec![vec![msg(1), msg(2)]]).unwrap();
            good_len = store.disk_bytes();
        }
        let path = segment_files(dir.path()).remove(0);
        // Half a frame: a header promising more bytes than follow.
        let mut frame = Vec::new();
        encode_frame(&msg(3), &mut frame).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&frame[..frame.len() / 2]).unwrap();
        drop(file);

        {
            let mut store = LogStore::open(dir.path(), keep_all()).unwrap();
            assert_eq!(store.len(), 2);
            assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
            store.append(vec![vec![msg(3)]]).unwrap();
            assert_eq!(store.last_sequence(), 3);
        }
        // Garbage bytes: a bad checksum, then a short header.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[5, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9, 9, 7, 7])
            .unwrap();
        drop(file);
        {
            let mut store = LogStore::open(dir.path(), keep_all()).unwrap();
            assert_eq!(messages(&store), vec!["m1", "m2", "m3"]);
            store.append(vec![vec![msg(4)]]).unwrap();
        }
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[1, 2, 3]).unwrap();
        drop(file);
        let store = LogStore::open(dir.path(), keep_all()).unwrap();
        assert_eq!(messages(&store), vec!["m1", "m2", "m3", "m4"]);
        assert_eq!(store.last_sequence(), 4);
    }

    #[test]
    fn corruption_in_an_older_segment_skips_its_rest() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open_with_segment_bytes(dir.path(), keep_all(), 1).unwrap();
            store.append(vec![vec![msg(1), msg(2), msg(3)]]).unwrap();
            store.append(vec![vec![msg(4)]]).unwrap();
            assert_eq!(store.segment_count(), 2);
        }
        let files = segment_files(dir.path());
        // Flip a byte in the payload of the second frame of the first segment.
        let mut data = fs::read(&files[0]).unwrap();
        let first_len = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
        let second_payload = FRAME_HEADER_BYTES * 2 + first_len;
        data[second_payload + 2] ^= 0xff;
        fs::write(&files[0], &data).unwrap();

        let mut store = LogStore::open_with_segment_bytes(dir.path(), keep_all(), 1).unwrap();
        assert_eq!(messages(&store), vec!["m1", "m4"]);
        store.append(vec![vec![msg(5)]]).unwrap();
        assert_eq!(store.last_sequence(), 5);
    }

    #[test]
    fn query_filters_orders_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), keep_all()).unwrap();
        let mut batch = Vec::new();
        for i in 1..=10 {
            let service = if i % 2 == 0 { "even" } else { "odd" };
            let level = if i > 5 { Level::Error } else { Level::Info };
            batch.push(rec(service, level, &format!("Message {i}"), at(i)));
        }
        store.append(vec![batch]).unwrap();

        let all = store.query(&LogFilter::default(), None, 100);
        assert_eq!(all.records.len(), 10);
        assert_eq!(all.records[0].sequence, 10);
        assert_eq!(all.next_before, None);

        let even = LogFilter {
            service: Some("even".into()),
            ..Default::default()
        };
        let page1 = store.query(&even, None, 2);
        let seqs: Vec<u64> = page1.records.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, vec![10, 8]);
        assert_eq!(page1.next_before, Some(8));
        let page2 = store.query(&even, page1.next_before, 2);
        let seqs: Vec<u64> = page2.records.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, vec![6, 4]);
        assert_eq!(page2.next_before, Some(4));
        let page3 = store.query(&even, page2.next_before, 2);
        let seqs: Vec<u64> = page3.records.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, vec![2]);
        assert_eq!(page3.next_before, None);

        // Exactly a full last page: no next page.
        let errors = LogFilter {
            min_level: Some(Level::Error),
            ..Default::default()
        };
        let page = store.query(&errors, None, 5);
        assert_eq!(page.records.len(), 5);
        assert_eq!(page.next_before, None);

        let window = LogFilter {
            since: Some(at(3)),
            until: Some(at(5)),
            contains: Some("MESSAGE".into()),
            ..Default::default()
        };
        let seqs: Vec<u64> = store
            .query(&window, None, 10)
            .records
            .iter()
            .map(|r| r.sequence)
            .collect();
        assert_eq!(seqs, vec![4, 3]);
        assert!(
            store
                .query(&LogFilter::default(), Some(1), 10)
                .records
                .is_empty()
        );
        assert!(
            store
                .query(&LogFilter::default(), None, 0)
                .records
                .is_empty()
        );
    }

    #[test]
    fn segments_roll_at_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(16 * 1024);
        {
            let mut store = LogStore::open(dir.path(), keep_all()).unwrap();
            // 600 records of 16 KiB: the first segment passes 8 MiB.
            for chunk in 0..10 {
                let batch = (0..60)
                    .map(|i| rec("svc", Level::Info, &format!("{chunk}-{i}{big}"), at(1)))
                    .collect();
                store.append(vec![batch]).unwrap();
            }
            assert_eq!(store.segment_count(), 2);
            assert!(store.segments[0].bytes >= SEGMENT_BYTES);
            assert_eq!(
                store.segments[1].first_sequence,
                store.segments[0].last_sequence + 1
            );
        }
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 2);
        let store = LogStore::open(dir.path(), keep_all()).unwrap();
        assert_eq!(store.len(), 600);
        assert_eq!(store.last_sequence(), 600);
        let second = format!("segment-{:020}.log", store.segments[0].last_sequence + 1);
        assert!(files[1].ends_with(second));
    }

    #[test]
    fn retention_by_size_deletes_oldest_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open_with_segment_bytes(dir.path(), keep_all(), 1).unwrap();
        for i in 0..5 {
            store
                .append(vec![vec![msg(2 * i), msg(2 * i + 1)]])
                .unwrap();
        }
        assert_eq!(store.segment_count(), 5);
        let per_segment = store.segments[0].bytes;
        drop(store);

        let retention = Retention {
            max_bytes: per_segment * 5 / 2,
            ..keep_all()
        };
        let mut store = LogStore::open_with_segment_bytes(dir.path(), retention, 1).unwrap();
        assert_eq!(store.segment_count(), 2);
        assert_eq!(messages(&store), vec!["m6", "m7", "m8", "m9"]);
        assert_eq!(segment_files(dir.path()).len(), 2);
        assert_eq!(store.last_sequence(), 10);

        // Even far over the limit, the active segment stays.
        store.retention.max_bytes = 0;
        assert_eq!(store.enforce_retention(SystemTime::now()).unwrap(), 2);
        assert_eq!(store.segment_count(), 1);
        assert_eq!(messages(&store), vec!["m8", "m9"]);
        store.append(vec![vec![msg(10)]]).unwrap();
        assert_eq!(store.last_sequence(), 11);
    }

    #[test]
    fn retention_by_age_deletes_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let retention = Retention {
            max_bytes: u64::MAX,
            max_age: Duration::from_secs(100),
        };
        let mut store = LogStore::open_with_segment_bytes(dir.path(), retention, 1).unwrap();
        store
            .append(vec![vec![rec("a", Level::Info, "old", at(1000))]])
            .unwrap();
        store
            .append(vec![vec![rec("a", Level::Info, "older", at(900))]])
            .unwrap();
        store
            .append(vec![vec![rec("a", Level::Info, "new", at(1150))]])
            .unwrap();
        store
            .append(vec![vec![rec("a", Level::Info, "newest", at(1200))]])
            .unwrap();
        assert_eq!(store.segment_count(), 4);
        // Cutoff 1010: segments whose newest record is older go.
        assert_eq!(store.enforce_retention(at(1110)).unwrap(), 2);
        assert_eq!(messages(&store), vec!["new", "newest"]);
        assert_eq!(segment_files(dir.path()).len(), 2);
        // The active segment is never deleted, however old.
        assert_eq!(store.enforce_retention(at(10_000)).unwrap(), 1);
        assert_eq!(messages(&store), vec!["newest"]);
        assert_eq!(store.segment_count(), 1);
    }

    #[test]
    fn ignores_other_files_and_names() {
        assert_eq!(
            parse_segment_name("segment-00000000000000000042.log"),
            Some(42)
        );
        assert_eq!(parse_segment_name("segment-42.log"), None);
        assert_eq!(parse_segment_name("segment-0000000000000000004x.log"), None);
        assert_eq!(parse_segment_name("notes.txt"), None);
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
        let mut store = LogStore::open(dir.path(), keep_all()).unwrap();
        store.append(vec![vec![msg(1)]]).unwrap();
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn oversize_records_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), keep_all()).unwrap();
        let huge = rec("svc", Level::Info, &"x".repeat(MAX_FRAME_BYTES + 1), at(1));
        let e = store.append(vec![vec![msg(1), huge]]).unwrap_err();
        assert!(matches!(e, StoreError::RecordTooLarge { .. }));
        assert!(store.is_empty());
        assert_eq!(store.disk_bytes(), 0);
        assert_eq!(store.last_sequence(), 0);
    }
}
