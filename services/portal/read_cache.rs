//! The portal's read cache of students, fed by `WatchGrades` (as the
//! Kubernetes API server's watch cache is fed by its watch): a student read
//! once is served from memory until a change to that student arrives.
//!
//! It is correct by construction, with any number of grading instances:
//! - **Nothing is missed.** Every committed change, whichever grading
//!   instance made it, reaches every `WatchGrades` stream (grading's change
//!   feed; with PostgreSQL an outbox read in commit order). A change drops
//!   the student's entry.
//! - **Only while live.** Entries are served and stored only while the
//!   watch stream is open; when it breaks, everything is dropped and reads
//!   go to grading until a new stream is open (changes made meanwhile were
//!   never seen, so nothing from before is kept).
//! - **No stale fill.** A read that fills an entry is stored only if no
//!   change to that student arrived, and the stream was not lost, while it
//!   was in flight (a version per student and an epoch per stream).
//! - **Read your writes.** A write acknowledged through this portal drops
//!   the student's entry before the answer goes out (and bumps its version,
//!   so a read that started earlier cannot put the old state back).
//!
//! A change made through another portal or straight to grading is visible
//! here once its event arrives: milliseconds, the time the change feed takes.
//!
//! [`ReadCache`] is the state machine (tested without I/O); [`run_watch`]
//! is the task that feeds it; [`CachedGrading`] is the grading client the
//! portal's handlers use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;

use crate::mesh::api::grading::GradeInput;
use crate::mesh::api::{CallError, GradingApi};
use crate::mesh::backoff::Backoff;
use crate::mesh::shutdown::Shutdown;
use crate::model::grading::{Change, Grade, GradePage, Student, StudentDetail, canonical_id};

/// Students kept at most; past it the cache starts over.
pub const MAX_ENTRIES: usize = 10_000;

/// A read in flight that may fill an entry: the stream epoch and the
/// student's version when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    version: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Whether the watch stream is open.
    live: bool,
    /// Bumped whenever the stream opens or is lost.
    epoch: u64,
    /// Per student, bumped by every change or write.
    versions: HashMap<String, u64>,
    entries: HashMap<String, Arc<StudentDetail>>,
}

/// The cache's state: which students are known, and whether it may be used.
#[derive(Debug, Default)]
pub struct ReadCache {
    state: Mutex<State>,
}

impl ReadCache {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached student, if the cache is live and holds it.
    pub fn get(&self, id: &str) -> Option<Arc<StudentDetail>> {
        let state = self.state();
        if !state.live {
            return None;
        }
        state.entries.get(id).cloned()
    }

    /// A read of `id` starts; `None` when the cache is not live (the answer
    /// must not be kept).
    pub fn begin(&self, id: &str) -> Option<Ticket> {
        let state = self.state();
        state.live.then(|| Ticket {
            epoch: state.epoch,
            version: state.versions.get(id).copied().unwrap_or(0),
        })
    }

    /// The read of `id` that started with `ticket` answered `detail`: kept
    /// only if nothing about the student, or the stream, changed meanwhile.
    pub fn fill(&self, ticket: Ticket, id: &str, detail: StudentDetail) {
        let mut state = self.state();
        let version = state.versions.get(id).copied().unwrap_or(0);
        if !state.live || state.epoch != ticket.epoch || version != ticket.version {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.clear();
        }
        state.entries.insert(id.to_owned(), Arc::new(detail));
    }

    /// Something about `id` changed (an event, or a write through this portal).
    pub fn invalidate(&self, id: &str) {
        let mut state = self.state();
        state.entries.remove(id);
        let version = state.versions.entry(id.to_owned()).or_default();
        *version = version.wrapping_add(1);
    }

    /// The watch stream opened (`true`) or was lost (`false`): either way
    /// nothing known before is kept.
    pub fn set_live(&self, live: bool) {
        let mut state = self.state();
        state.live = live;
        state.epoch = state.epoch.wrapping_add(1);
        state.entries.clear();
        state.versions.clear();
    }

    /// Whether the cache is in use.
    pub fn is_live(&self) -> bool {
        self.state().live
    }

    /// Students held now.
    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    /// Whether no student is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps a `WatchGrades` stream open (on any grading instance) and feeds
/// every change to `cache`, reconnecting with backoff, until `shutdown`.
pub async fn run_watch(grading: GradingApi, cache: Arc<ReadCache>, shutdown: Shutdown) {
    let backoff =
        Backoff::new(Duration::from_millis(50), Duration::from_secs(2), 0.2).unwrap_or_default();
    let mut attempt = 0u32;
    while !shutdown.is_cancelled() {
        let opened = tokio::select! {
            opened = grading.watch("") => opened,
            _ = shutdown.cancelled() => break,
        };
        match opened {
            Ok(mut changes) => {
                cache.set_live(true);
                attempt = 0;
                loop {
                    let next = tokio::select! {
                        next = changes.next() => next,
                        _ = shutdown.cancelled() => None,
                    };
                    match next {
                        Some(Ok(change)) => cache.invalidate(&change.student.id),
                        Some(Err(error)) => {
                            tracing::debug!(error = %error, "the read cache's watch broke");
                            break;
                        }
                        None => break,
                    }
                }
                cache.set_live(false);
            }
            Err(error) => {
                if attempt == 0 {
                    tracing::debug!(error = %error, "the read cache's watch cannot open yet");
                }
            }
        }
        let delay = backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    cache.set_live(false);
}

/// The cache's key of a student id: its canonical form (the one change
/// events carry), whatever form of the UUID the request used.
fn cache_key(id: &str) -> String {
    canonical_id("id", id).unwrap_or_else(|_| id.to_owned())
}

/// Grading as the portal's handlers call it: students read through the
/// cache, writes invalidating it before they answer.
#[derive(Debug, Clone)]
pub struct CachedGrading {
    grading: GradingApi,
    cache: Arc<ReadCache>,
}

impl CachedGrading {
    /// Calls `grading`, caching in `cache`.
    pub fn new(grading: GradingApi, cache: Arc<ReadCache>) -> Self {
        CachedGrading { grading, cache }
    }

    /// The cache.
    pub fn cache(&self) -> &Arc<ReadCache> {
        &self.cache
    }

    /// A page of students (not cached).
    pub async fn list_students(
        &self,
        page_size: u32,
        page_token: String,
    ) -> Result<(Vec<Student>, String), CallError> {
        self.grading.list_students(page_size, page_token).await
    }

    /// One student with the first page of grades, from the cache when it
    /// holds it.
    pub async fn get_student(&self, id: &str) -> Result<StudentDetail, CallError> {
        let key = cache_key(id);
        if let Some(hit) = self.cache.get(&key) {
            return Ok(StudentDetail::clone(&hit));
        }
        let ticket = self.cache.begin(&key);
        let detail = self.grading.get_student(id).await?;
        if let Some(ticket) = ticket {
            self.cache.fill(ticket, &key, detail.clone());
        }
        Ok(detail)
    }

    /// A page of a student's grades after the first (not cached: only a
    /// student with more grades than one page holds has them).
    pub async fn list_grades(
        &self,
        student_id: &str,
        page_size: u32,
        page_token: String,
    ) -> Result<GradePage, CallError> {
        self.grading
            .list_grades(student_id, page_size, page_token)
            .await
    }

    /// Adds a student.
    pub async fn create_student(
        &self,
        first_name: String,
        last_name: String,
        request_id: Option<&str>,
    ) -> Result<Student, CallError> {
        let student = self
            .grading
            .create_student(first_name, last_name, request_id)
            .await?;
        self.cache.invalidate(&student.id);
        Ok(student)
    }

    /// Renames a student.
    pub async fn update_student(
        &self,
        id: &str,
        first_name: String,
        last_name: String,
        request_id: Option<&str>,
    ) -> Result<Student, CallError> {
        let result = self
            .grading
            .update_student(id, first_name, last_name, request_id)
            .await;
        self.cache.invalidate(&cache_key(id));
        result
    }

    /// Removes a student.
    pub async fn delete_student(
        &self,
        id: &str,
        request_id: Option<&str>,
    ) -> Result<(), CallError> {
        let result = self.grading.delete_student(id, request_id).await;
        self.cache.invalidate(&cache_key(id));
        result
    }

    /// Adds a grade.
    pub async fn add_grade(
        &self,
        student_id: &str,
        grade: GradeInput,
        request_id: Option<&str>,
    ) -> Result<Grade, CallError> {
        let result = self.grading.add_grade(student_id, grade, request_id).await;
        self.cache.invalidate(&cache_key(student_id));
        result
    }

    /// Changes a grade.
    pub async fn update_grade(
        &self,
        student_id: &str,
        grade_id: &str,
        grade: GradeInput,
        request_id: Option<&str>,
    ) -> Result<Grade, CallError> {
        let result = self
            .grading
            .update_grade(student_id, grade_id, grade, request_id)
            .await;
        self.cache.invalidate(&cache_key(student_id));
        result
    }

    /// Removes a grade.
    pub async fn delete_grade(
        &self,
        student_id: &str,
        grade_id: &str,
        request_id: Option<&str>,
    ) -> Result<(), CallError> {
        let result = self
            .grading
            .delete_grade(student_id, grade_id, request_id)
            .await;
        self.cache.invalidate(&cache_key(student_id));
        result
    }

    /// Streams changes from now on (not through the cache).
    pub async fn watch(
        &self,
        student_id: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Change, CallError>>, CallError> {
        self.grading.watch(student_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn detail(id: &str, average: f64) -> StudentDetail {
        StudentDetail {
            student: Student {
                id: id.into(),
                first_name: "A".into(),
                last_name: "B".into(),
                average: Some(average),
                grade_count: 1,
                created_at: UNIX_EPOCH,
            },
            grades: vec![],
            next_grades: None,
        }
    }

    #[test]
    fn nothing_is_served_or_kept_unless_the_watch_is_live() {
        let cache = ReadCache::default();
        assert_eq!(cache.begin("s"), None, "no ticket while not live");
        cache.set_live(true);
        let ticket = cache.begin("s").unwrap();
        cache.fill(ticket, "s", detail("s", 1.0));
        assert_eq!(cache.get("s").unwrap().student.average, Some(1.0));
        cache.set_live(false);
        assert!(cache.get("s").is_none(), "a lost watch drops everything");
        cache.set_live(true);
        assert!(cache.get("s").is_none(), "and a new one starts empty");
    }

    #[test]
    fn a_fill_that_raced_a_change_or_a_lost_stream_is_not_kept() {
        let cache = ReadCache::default();
        cache.set_live(true);
        // A change arrives while the read is in flight: its answer may be old.
        let ticket = cache.begin("s").unwrap();
        cache.invalidate("s");
        cache.fill(ticket, "s", detail("s", 1.0));
        assert!(cache.get("s").is_none());
        // A change to another student does not matter.
        let ticket = cache.begin("s").unwrap();
        cache.invalidate("t");
        cache.fill(ticket, "s", detail("s", 2.0));
        assert_eq!(cache.get("s").unwrap().student.average, Some(2.0));
        // The stream is lost and found again while the read is in flight.
        let ticket = cache.begin("u").unwrap();
        cache.set_live(false);
        cache.set_live(true);
        cache.fill(ticket, "u", detail("u", 3.0));
        assert!(cache.get("u").is_none());
    }

    #[test]
    fn a_write_drops_the_entry() {
        let cache = ReadCache::default();
        cache.set_live(true);
        let ticket = cache.begin("s").unwrap();
        cache.fill(ticket, "s", detail("s", 1.0));
        cache.invalidate("s");
        assert!(cache.get("s").is_none());
        assert!(cache.is_empty());
    }
}
