//! The `gradebook.grading.v1.Grading` gRPC service: validates requests
//! (request ids included, fingerprinted for idempotent writes), calls the
//! async store, commits concurrent `AddGrade` calls together (one
//! transaction, one fsync per group), and serves `WatchGrades` from the
//! store's change feed (with PostgreSQL, changes made through any instance).

use crate::grading::metrics::StoreMetrics;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::{OnceCell, mpsc, oneshot};
use tonic::{Request, Response, Status};

use crate::grading::store::{GradeCursor, GradeStore, GradeToAdd, StoreError, StudentCursor};
use crate::mesh::Shutdown;
use crate::model::grading::{
    Grade, GradeUpdate, IdempotentRequest, InvalidField, NewGrade, NewStudent, RequestKey, Student,
    grade_page_size_from_pb, page_size_from_pb, validate_id,
};
use crate::pb::grading::v1 as pb;
use crate::pb::grading::v1::grading_server::{Grading, GradingServer};

/// The largest request the service accepts.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// `AddGrade` calls waiting for the writer at most.
pub const WRITE_QUEUE: usize = 4096;
/// Most grades committed in one transaction.
pub const MAX_GROUP: usize = 512;

/// The store, once it is open: with PostgreSQL the service serves (with
/// health NOT_SERVING, answering UNAVAILABLE) before the database is
/// reachable.
pub type StoreCell = Arc<OnceCell<Arc<dyn GradeStore>>>;

/// An `AddGrade` waiting for the writer, and where its answer goes.
struct PendingGrade {
    item: GradeToAdd,
    reply: oneshot::Sender<Result<(Grade, Student), StoreError>>,
}

/// The grading service.
#[derive(Clone)]
pub struct GradingService {
    store: StoreCell,
    writes: mpsc::Sender<PendingGrade>,
    shutdown: Shutdown,
    metrics: StoreMetrics,
    /// The share of calls failed on purpose (fault tests; 0 otherwise).
    fault_error_ratio: f64,
}

impl std::fmt::Debug for GradingService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradingService").finish_non_exhaustive()
    }
}

fn invalid(error: InvalidField) -> Status {
    Status::invalid_argument(error.to_string())
}

/// Maps a storage error to the status a caller can act on; database detail
/// stays in this service's log.
fn status(error: StoreError) -> Status {
    match error {
        StoreError::NotFound { .. } => Status::not_found(error.to_string()),
        StoreError::Invalid(field) => invalid(field),
        StoreError::RequestConflict { .. } => Status::already_exists(error.to_string()),
        StoreError::TooManyGrades { .. } => Status::failed_precondition(error.to_string()),
        StoreError::Unavailable(_) => {
            tracing::warn!(error = %error, "storage unavailable");
            Status::unavailable("the grading database is unavailable; retry later")
        }
        other => {
            tracing::error!(error = %other, "storage failed");
            Status::internal("storage failed; see the grading service's log")
        }
    }
}

/// The validated request key of a write request.
fn request_key(request: &impl IdempotentRequest) -> Result<Option<RequestKey>, Status> {
    request.request_key().map_err(invalid)
}

impl GradingService {
    /// A service over the store in `store` (UNAVAILABLE until it is set);
    /// starts the grade writer, which ends once every clone of the service
    /// is gone, after committing what it was given.
    pub fn new(store: StoreCell, shutdown: Shutdown) -> Self {
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(write_grades(store.clone(), queue));
        GradingService {
            store,
            writes,
            shutdown,
            metrics: StoreMetrics::default(),
            fault_error_ratio: 0.0,
        }
    }

    /// The same service, failing `ratio` of its calls with INTERNAL on
    /// purpose (`--fault-error-ratio`, for fault tests of rollouts).
    pub fn failing(mut self, ratio: f64) -> Self {
        self.fault_error_ratio = ratio;
        self
    }

    /// The same service, measuring its store calls in `metrics`.
    pub fn with_metrics(mut self, metrics: StoreMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// A service over a store that is open already.
    pub fn ready(store: Arc<dyn GradeStore>, shutdown: Shutdown) -> Self {
        Self::new(Arc::new(OnceCell::new_with(Some(store))), shutdown)
    }

    /// The tonic server for this service, with the request size limit.
    pub fn into_server(self) -> GradingServer<Self> {
        GradingServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    /// The store, or UNAVAILABLE while it is not open yet (or, for fault
    /// tests, INTERNAL for the share of calls failed on purpose).
    fn store(&self) -> Result<&Arc<dyn GradeStore>, Status> {
        if self.fault_error_ratio > 0.0 && rand::random::<f64>() < self.fault_error_ratio {
            return Err(Status::internal("a fault injected by --fault-error-ratio"));
        }
        self.store
            .get()
            .ok_or_else(|| Status::unavailable("the grading database is not connected yet"))
    }
}

/// Commits queued `AddGrade`s in groups (one `add_grades` batch each)
/// until every sender is gone.
async fn write_grades(store: StoreCell, mut queue: mpsc::Receiver<PendingGrade>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (items, replies): (Vec<_>, Vec<_>) = group
            .into_iter()
            .map(|pending| (pending.item, pending.reply))
            .unzip();
        let Some(store) = store.get() else {
            for reply in replies {
                let _ = reply.send(Err(StoreError::Unavailable(
                    "the grading database is not connected yet".into(),
                )));
            }
            continue;
        };
        let results = store.add_grades(items).await;
        for (result, reply) in results.into_iter().zip(replies) {
            let _ = reply.send(result);
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::GradeEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Grading for GradingService {
    async fn list_students(
        &self,
        request: Request<pb::ListStudentsRequest>,
    ) -> Result<Response<pb::ListStudentsResponse>, Status> {
        let request = request.into_inner();
        let page_size = page_size_from_pb(request.page_size).map_err(invalid)?;
        let cursor = if request.page_token.is_empty() {
            None
        } else {
            Some(StudentCursor::decode(&request.page_token).map_err(invalid)?)
        };
        let (students, next) = self
            .metrics
            .measure(
                "list_students",
                self.store()?.list_students(page_size, cursor.as_ref()),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListStudentsResponse {
            students: students.iter().map(pb::Student::from).collect(),
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn get_student(
        &self,
        request: Request<pb::GetStudentRequest>,
    ) -> Result<Response<pb::StudentDetail>, Status> {
        let request = request.into_inner();
        validate_id("id", &request.id).map_err(invalid)?;
        let page_size =
            grade_page_size_from_pb("grade_page_size", request.grade_page_size).map_err(invalid)?;
        let detail = self
            .metrics
            .measure(
                "get_student",
                self.store()?.get_student(&request.id, page_size),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::StudentDetail::from(&detail)))
    }

    async fn list_grades(
        &self,
        request: Request<pb::ListGradesRequest>,
    ) -> Result<Response<pb::ListGradesResponse>, Status> {
        let request = request.into_inner();
        validate_id("student_id", &request.student_id).map_err(invalid)?;
        let page_size = grade_page_size_from_pb("page_size", request.page_size).map_err(invalid)?;
        let cursor = if request.page_token.is_empty() {
            None
        } else {
            Some(GradeCursor::decode(&request.page_token).map_err(invalid)?)
        };
        let page = self
            .metrics
            .measure(
                "list_grades",
                self.store()?
                    .list_grades(&request.student_id, page_size, cursor.as_ref()),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListGradesResponse::from(&page)))
    }

    async fn create_student(
        &self,
        request: Request<pb::CreateStudentRequest>,
    ) -> Result<Response<pb::Student>, Status> {
        let new = NewStudent::try_from(request.get_ref()).map_err(invalid)?;
        let key = request_key(request.get_ref())?;
        let student = self
            .metrics
            .measure("create_student", self.store()?.create_student(&new, key))
            .await
            .map_err(status)?;
        tracing::info!(student_id = %student.id, "student created");
        Ok(Response::new(pb::Student::from(&student)))
    }

    async fn update_student(
        &self,
        request: Request<pb::UpdateStudentRequest>,
    ) -> Result<Response<pb::Student>, Status> {
        let request = request.into_inner();
        validate_id("id", &request.id).map_err(invalid)?;
        let new = NewStudent::new(&request.first_name, &request.last_name).map_err(invalid)?;
        let key = request_key(&request)?;
        let student = self
            .metrics
            .measure(
                "update_student",
                self.store()?.update_student(&request.id, &new, key),
            )
            .await
            .map_err(status)?;
        tracing::info!(student_id = %student.id, "student updated");
        Ok(Response::new(pb::Student::from(&student)))
    }

    async fn delete_student(
        &self,
        request: Request<pb::DeleteStudentRequest>,
    ) -> Result<Response<pb::DeleteStudentResponse>, Status> {
        let request = request.into_inner();
        validate_id("id", &request.id).map_err(invalid)?;
        let key = request_key(&request)?;
        self.metrics
            .measure(
                "delete_student",
                self.store()?.delete_student(&request.id, key),
            )
            .await
            .map_err(status)?;
        tracing::info!(student_id = %request.id, "student deleted");
        Ok(Response::new(pb::DeleteStudentResponse {}))
    }

    async fn add_grade(
        &self,
        request: Request<pb::AddGradeRequest>,
    ) -> Result<Response<pb::Grade>, Status> {
        let request = request.into_inner();
        validate_id("student_id", &request.student_id).map_err(invalid)?;
        let new = NewGrade::try_from(&request).map_err(invalid)?;
        let key = request_key(&request)?;
        self.store()?;
        let (reply, answer) = oneshot::channel();
        let item = GradeToAdd {
            student_id: request.student_id,
            grade: new,
            request: key,
        };
        self.writes
            .send(PendingGrade { item, reply })
            .await
            .map_err(|_| Status::unavailable("the grading service is shutting down"))?;
        let committed = self.metrics.measure("add_grades", async {
            answer.await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the grading service is shutting down".into(),
                ))
            })
        });
        let (grade, _) = committed.await.map_err(status)?;
        tracing::info!(student_id = %grade.student_id, grade_id = %grade.id, "grade added");
        Ok(Response::new(pb::Grade::from(&grade)))
    }

    async fn update_grade(
        &self,
        request: Request<pb::UpdateGradeRequest>,
    ) -> Result<Response<pb::Grade>, Status> {
        let update = GradeUpdate::try_from(request.get_ref()).map_err(invalid)?;
        let key = request_key(request.get_ref())?;
        let (grade, _) = self
            .metrics
            .measure(
                "update_grade",
                self.store()?.update_grade(
                    &update.student_id,
                    &update.grade_id,
                    &update.grade,
                    key,
                ),
            )
            .await
            .map_err(status)?;
        tracing::info!(student_id = %update.student_id, grade_id = %update.grade_id, "grade updated");
        Ok(Response::new(pb::Grade::from(&grade)))
    }

    async fn delete_grade(
        &self,
        request: Request<pb::DeleteGradeRequest>,
    ) -> Result<Response<pb::DeleteGradeResponse>, Status> {
        let request = request.into_inner();
        validate_id("student_id", &request.student_id).map_err(invalid)?;
        validate_id("grade_id", &request.grade_id).map_err(invalid)?;
        let key = request_key(&request)?;
        self.metrics
            .measure(
                "delete_grade",
                self.store()?
                    .delete_grade(&request.student_id, &request.grade_id, key),
            )
            .await
            .map_err(status)?;
        tracing::info!(student_id = %request.student_id, grade_id = %request.grade_id, "grade deleted");
        Ok(Response::new(pb::DeleteGradeResponse {}))
    }

    type WatchGradesStream = EventStream;

    async fn watch_grades(
        &self,
        request: Request<pb::WatchGradesRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let student_id = request.into_inner().student_id;
        if !student_id.is_empty() {
            validate_id("student_id", &student_id).map_err(invalid)?;
        }
        let changes = tokio_stream::wrappers::BroadcastStream::new(self.store()?.subscribe());
        let events = changes
            .filter_map(move |change| {
                let student_id = student_id.clone();
                async move {
                    match change {
                        Ok(change) if student_id.is_empty() || change.student.id == student_id => {
                            Some(Ok(pb::GradeEvent::from(change.as_ref())))
                        }
                        Ok(_) => None,
                        Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(
                            n,
                        )) => Some(Err(Status::resource_exhausted(format!(
                            "watch fell behind by {n} changes; reconnect and reload"
                        )))),
                    }
                }
            })
            // A lagging watcher gets the status, then the stream ends.
            .scan(false, |ended, item| {
                let next = (!*ended).then(|| {
                    *ended = item.is_err();
                    item
                });
                futures::future::ready(next)
            })
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::grading::new_id;
    use tonic::Code;

    #[test]
    fn store_errors_map_to_statuses_callers_act_on() {
        let id = new_id();
        let cases = [
            (
                StoreError::student_not_found(&id),
                Code::NotFound,
                "not found",
            ),
            (
                StoreError::Invalid(InvalidField::new("student_id", "bad")),
                Code::InvalidArgument,
                "student_id: bad",
            ),
            (
                StoreError::RequestConflict {
                    request_id: "r-1".into(),
                },
                Code::AlreadyExists,
                "request_id \"r-1\"",
            ),
            (
                StoreError::Unavailable("connection refused".into()),
                Code::Unavailable,
                "retry later",
            ),
            (
                StoreError::Database("secret detail".into()),
                Code::Internal,
                "see the grading service's log",
            ),
            (
                StoreError::Schema(crate::grading::schema::SchemaError::TooNew {
                    found: 9,
                    compatible_from: 9,
                    supported: 2,
                }),
                Code::Internal,
                "see the grading service's log",
            ),
        ];
        for (error, code, message) in cases {
            let mapped = status(error.clone());
            assert_eq!(mapped.code(), code, "{error:?}");
            assert!(mapped.message().contains(message), "{error:?}: {mapped:?}");
            assert!(!mapped.message().contains("secret"), "{mapped:?}");
        }
    }

    #[tokio::test]
    async fn calls_before_the_store_opens_are_unavailable() {
        let service = GradingService::new(Arc::new(OnceCell::new()), Shutdown::new());
        let listed = service
            .list_students(Request::new(pb::ListStudentsRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(listed.code(), Code::Unavailable);
        let added = service
            .add_grade(Request::new(
                NewGrade::new("Quiz", "quiz", 50.0)
                    .unwrap()
                    .to_add_request(&new_id()),
            ))
            .await
            .unwrap_err();
        assert_eq!(added.code(), Code::Unavailable);
        let watched = service
            .watch_grades(Request::new(pb::WatchGradesRequest::default()))
            .await
            .err()
            .map(|status| status.code());
        assert_eq!(watched, Some(Code::Unavailable));
    }
}
