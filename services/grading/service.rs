//! The `gradebook.grading.v1.Grading` gRPC service: validates requests,
//! runs storage work off the async threads, commits concurrent `AddGrade`
//! calls together (one transaction, one fsync per group), and fans changes
//! out to `WatchGrades` streams.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::{Request, Response, Status};

use crate::grading::store::{GradeStore, StoreError, StudentCursor};
use crate::mesh::Shutdown;
use crate::model::grading::{
    Change, ChangeKind, Grade, GradeUpdate, InvalidField, NewGrade, NewStudent, Student,
    page_size_from_pb, validate_id,
};
use crate::pb::grading::v1 as pb;
use crate::pb::grading::v1::grading_server::{Grading, GradingServer};

/// The largest request the service accepts.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// `AddGrade` calls waiting for the writer at most.
pub const WRITE_QUEUE: usize = 4096;
/// Most grades committed in one transaction.
pub const MAX_GROUP: usize = 512;
/// Changes buffered for each `WatchGrades` stream.
pub const WATCH_BUFFER: usize = 1024;

type AddGradeReply = oneshot::Sender<Result<(Grade, Student), StoreError>>;

/// The grading service.
#[derive(Clone)]
pub struct GradingService {
    store: Arc<dyn GradeStore>,
    writes: mpsc::Sender<(String, NewGrade, AddGradeReply)>,
    changes: broadcast::Sender<Arc<Change>>,
    shutdown: Shutdown,
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
        other => {
            tracing::error!(error = %other, "storage failed");
            Status::internal("storage failed; see the grading service's log")
        }
    }
}

impl GradingService {
    /// A service over `store`; starts the grade writer, which ends at `shutdown`
    /// after committing what it was given.
    pub fn new(store: Arc<dyn GradeStore>, shutdown: Shutdown) -> Self {
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let (changes, _) = broadcast::channel(WATCH_BUFFER);
        tokio::spawn(write_grades(store.clone(), queue, changes.clone()));
        GradingService {
            store,
            writes,
            changes,
            shutdown,
        }
    }

    /// The tonic server for this service, with the request size limit.
    pub fn into_server(self) -> GradingServer<Self> {
        GradingServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    /// Runs a storage call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn GradeStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(store.as_ref()))
            .await
            .map_err(|e| Status::internal(format!("storage task failed: {e}")))?
            .map_err(status)
    }

    fn publish(&self, kind: ChangeKind, student: Student, grade: Option<Grade>) {
        let _ = self.changes.send(Arc::new(Change {
            kind,
            student,
            grade,
        }));
    }
}

/// Commits queued `AddGrade`s in groups until every sender is gone.
async fn write_grades(
    store: Arc<dyn GradeStore>,
    mut queue: mpsc::Receiver<(String, NewGrade, AddGradeReply)>,
    changes: broadcast::Sender<Arc<Change>>,
) {
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
            .map(|(student, grade, reply)| ((student, grade), reply))
            .unzip();
        let store = store.clone();
        let results = match tokio::task::spawn_blocking(move || store.add_grades(&items)).await {
            Ok(results) => results,
            Err(e) => {
                let message = format!("storage task failed: {e}");
                replies.into_iter().for_each(|reply| {
                    let _ = reply.send(Err(StoreError::Database(message.clone())));
                });
                continue;
            }
        };
        for (result, reply) in results.into_iter().zip(replies) {
            if let Ok((grade, student)) = &result {
                let _ = changes.send(Arc::new(Change {
                    kind: ChangeKind::GradeAdded,
                    student: student.clone(),
                    grade: Some(grade.clone()),
                }));
            }
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
            .blocking(move |store| store.list_students(page_size, cursor.as_ref()))
            .await?;
        Ok(Response::new(pb::ListStudentsResponse {
            students: students.iter().map(pb::Student::from).collect(),
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn get_student(
        &self,
        request: Request<pb::GetStudentRequest>,
    ) -> Result<Response<pb::StudentDetail>, Status> {
        let id = request.into_inner().id;
        validate_id("id", &id).map_err(invalid)?;
        let detail = self.blocking(move |store| store.get_student(&id)).await?;
        Ok(Response::new(pb::StudentDetail::from(&detail)))
    }

    async fn create_student(
        &self,
        request: Request<pb::CreateStudentRequest>,
    ) -> Result<Response<pb::Student>, Status> {
        let new = NewStudent::try_from(request.get_ref()).map_err(invalid)?;
        let student = self
            .blocking(move |store| store.create_student(&new))
            .await?;
        self.publish(ChangeKind::StudentCreated, student.clone(), None);
        Ok(Response::new(pb::Student::from(&student)))
    }

    async fn update_student(
        &self,
        request: Request<pb::UpdateStudentRequest>,
    ) -> Result<Response<pb::Student>, Status> {
        let request = request.into_inner();
        validate_id("id", &request.id).map_err(invalid)?;
        let new = NewStudent::new(&request.first_name, &request.last_name).map_err(invalid)?;
        let id = request.id;
        let student = self
            .blocking(move |store| store.update_student(&id, &new))
            .await?;
        self.publish(ChangeKind::StudentUpdated, student.clone(), None);
        Ok(Response::new(pb::Student::from(&student)))
    }

    async fn delete_student(
        &self,
        request: Request<pb::DeleteStudentRequest>,
    ) -> Result<Response<pb::DeleteStudentResponse>, Status> {
        let id = request.into_inner().id;
        validate_id("id", &id).map_err(invalid)?;
        let student = self
            .blocking(move |store| store.delete_student(&id))
            .await?;
        self.publish(ChangeKind::StudentDeleted, student, None);
        Ok(Response::new(pb::DeleteStudentResponse {}))
    }

    async fn add_grade(
        &self,
        request: Request<pb::AddGradeRequest>,
    ) -> Result<Response<pb::Grade>, Status> {
        let request = request.into_inner();
        validate_id("student_id", &request.student_id).map_err(invalid)?;
        let new = NewGrade::try_from(&request).map_err(invalid)?;
        let (reply, answer) = oneshot::channel();
        self.writes
            .send((request.student_id, new, reply))
            .await
            .map_err(|_| Status::unavailable("the grading service is shutting down"))?;
        let (grade, _) = answer
            .await
            .map_err(|_| Status::unavailable("the grading service is shutting down"))?
            .map_err(status)?;
        Ok(Response::new(pb::Grade::from(&grade)))
    }

    async fn update_grade(
        &self,
        request: Request<pb::UpdateGradeRequest>,
    ) -> Result<Response<pb::Grade>, Status> {
        let update = GradeUpdate::try_from(request.get_ref()).map_err(invalid)?;
        let (grade, student) = self
            .blocking(move |store| {
                store.update_grade(&update.student_id, &update.grade_id, &update.grade)
            })
            .await?;
        self.publish(ChangeKind::GradeUpdated, student, Some(grade.clone()));
        Ok(Response::new(pb::Grade::from(&grade)))
    }

    async fn delete_grade(
        &self,
        request: Request<pb::DeleteGradeRequest>,
    ) -> Result<Response<pb::DeleteGradeResponse>, Status> {
        let request = request.into_inner();
        validate_id("student_id", &request.student_id).map_err(invalid)?;
        validate_id("grade_id", &request.grade_id).map_err(invalid)?;
        let (student_id, grade_id) = (request.student_id, request.grade_id);
        let (grade, student) = self
            .blocking(move |store| store.delete_grade(&student_id, &grade_id))
            .await?;
        self.publish(ChangeKind::GradeDeleted, student, Some(grade));
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
        let changes = tokio_stream::wrappers::BroadcastStream::new(self.changes.subscribe());
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
