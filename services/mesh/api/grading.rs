//! [`GradingApi`]: calls to the grading service through its mesh channel,
//! in domain types. Every write carries a request id (the caller's, or a
//! new one), so grading answers a repeat with the first answer and writes
//! nothing: reads and writes alike are safe to retry, even after an attempt
//! timed out on an instance that may still commit it.

use std::time::Duration;

use futures::stream::BoxStream;

use crate::mesh::api::{CallError, Retry, request, stream, unary};
use crate::mesh::channel::MeshChannel;
use crate::mesh::discovery::DependencyView;
use crate::model::grading::{Change, Grade, GradePage, GradeType, Student, StudentDetail};
use crate::pb::grading::v1 as pb;
use crate::pb::grading::v1::grading_client::GradingClient;

/// The grading service's name in the registry.
pub const SERVICE: &str = "grading";

/// A grade as a user wrote it, before grading validates it: an unknown type
/// is `None` (grading answers INVALID_ARGUMENT naming `type`).
#[derive(Debug, Clone, PartialEq)]
pub struct GradeInput {
    /// What it was for.
    pub title: String,
    /// The kind of work, if it is one.
    pub grade_type: Option<GradeType>,
    /// The score.
    pub score: f64,
}

impl GradeInput {
    fn type_value(&self) -> i32 {
        self.grade_type
            .map(|t| pb::GradeType::from(t) as i32)
            .unwrap_or(pb::GradeType::Unspecified as i32)
    }
}

/// A new request id for a write whose caller gave none: unique without
/// coordination (a UUIDv7), the same for every retry of that write.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn request_id_or_new(request_id: Option<&str>) -> String {
    request_id.map_or_else(new_request_id, str::to_owned)
}

/// Calls grading, each call within `timeout` (and within the deadline of the
/// request being served, if any).
#[derive(Debug, Clone)]
pub struct GradingApi {
    dependencies: DependencyView,
    timeout: Duration,
}

impl GradingApi {
    /// Calls grading through `dependencies`, each call within `timeout`.
    pub fn new(dependencies: DependencyView, timeout: Duration) -> Self {
        GradingApi {
            dependencies,
            timeout,
        }
    }

    fn client(&self) -> Result<GradingClient<MeshChannel>, CallError> {
        Ok(GradingClient::new(self.dependencies.channel(SERVICE)?))
    }

    fn malformed(error: impl std::fmt::Display) -> CallError {
        CallError::malformed(SERVICE, error)
    }

    /// A page of students, and the next page's token (empty on the last page).
    pub async fn list_students(
        &self,
        page_size: u32,
        page_token: String,
    ) -> Result<(Vec<Student>, String), CallError> {
        let mut client = self.client()?;
        let message = pb::ListStudentsRequest {
            page_size,
            page_token,
        };
        let call = client.list_students(request(message, self.timeout, Retry::Safe));
        let page = unary(SERVICE, self.timeout, call).await?;
        let students = page
            .students
            .into_iter()
            .map(Student::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Self::malformed)?;
        Ok((students, page.next_page_token))
    }

    /// One student with the first page of grades: every grade, while the
    /// student has no more than a page holds (the most one may have).
    pub async fn get_student(&self, id: &str) -> Result<StudentDetail, CallError> {
        let mut client = self.client()?;
        let message = pb::GetStudentRequest {
            id: id.to_owned(),
            grade_page_size: 0,
        };
        let call = client.get_student(request(message, self.timeout, Retry::Safe));
        StudentDetail::try_from(unary(SERVICE, self.timeout, call).await?).map_err(Self::malformed)
    }

    /// A page of a student's grades (`page_size` 0: the largest), after the
    /// page whose token is `page_token` (empty: the first page).
    pub async fn list_grades(
        &self,
        student_id: &str,
        page_size: u32,
        page_token: String,
    ) -> Result<GradePage, CallError> {
        let mut client = self.client()?;
        let message = pb::ListGradesRequest {
            student_id: student_id.to_owned(),
            page_size,
            page_token,
        };
        let call = client.list_grades(request(message, self.timeout, Retry::Safe));
        GradePage::try_from(unary(SERVICE, self.timeout, call).await?).map_err(Self::malformed)
    }

    /// Adds a student.
    pub async fn create_student(
        &self,
        first_name: String,
        last_name: String,
        request_id: Option<&str>,
    ) -> Result<Student, CallError> {
        let mut client = self.client()?;
        let message = pb::CreateStudentRequest {
            first_name,
            last_name,
            request_id: request_id_or_new(request_id),
        };
        let call = client.create_student(request(message, self.timeout, Retry::Safe));
        Student::try_from(unary(SERVICE, self.timeout, call).await?).map_err(Self::malformed)
    }

    /// Renames a student.
    pub async fn update_student(
        &self,
        id: &str,
        first_name: String,
        last_name: String,
        request_id: Option<&str>,
    ) -> Result<Student, CallError> {
        let mut client = self.client()?;
        let message = pb::UpdateStudentRequest {
            id: id.to_owned(),
            first_name,
            last_name,
            request_id: request_id_or_new(request_id),
        };
        let call = client.update_student(request(message, self.timeout, Retry::Safe));
        Student::try_from(unary(SERVICE, self.timeout, call).await?).map_err(Self::malformed)
    }

    /// Removes a student and every grade of theirs.
    pub async fn delete_student(
        &self,
        id: &str,
        request_id: Option<&str>,
    ) -> Result<(), CallError> {
        let mut client = self.client()?;
        let message = pb::DeleteStudentRequest {
            id: id.to_owned(),
            request_id: request_id_or_new(request_id),
        };
        let call = client.delete_student(request(message, self.timeout, Retry::Safe));
        unary(SERVICE, self.timeout, call).await.map(|_| ())
    }

    /// Adds a grade to a student.
    pub async fn add_grade(
        &self,
        student_id: &str,
        grade: GradeInput,
        request_id: Option<&str>,
    ) -> Result<Grade, CallError> {
        let mut client = self.client()?;
        let message = pb::AddGradeRequest {
            student_id: student_id.to_owned(),
            r#type: grade.type_value(),
            title: grade.title,
            score: grade.score,
            request_id: request_id_or_new(request_id),
        };
        let call = client.add_grade(request(message, self.timeout, Retry::Safe));
        Grade::try_from(unary(SERVICE, self.timeout, call).await?).map_err(Self::malformed)
    }

    /// Changes a grade of a student.
    pub async fn update_grade(
        &self,
        student_id: &str,
        grade_id: &str,
        grade: GradeInput,
        request_id: Option<&str>,
    ) -> Result<Grade, CallError> {
        let mut client = self.client()?;
        let message = pb::UpdateGradeRequest {
            student_id: student_id.to_owned(),
            grade_id: grade_id.to_owned(),
            r#type: grade.type_value(),
            title: grade.title,
            score: grade.score,
            request_id: request_id_or_new(request_id),
        };
        let call = client.update_grade(request(message, self.timeout, Retry::Safe));
        Grade::try_from(unary(SERVICE, self.timeout, call).await?).map_err(Self::malformed)
    }

    /// Removes a grade of a student.
    pub async fn delete_grade(
        &self,
        student_id: &str,
        grade_id: &str,
        request_id: Option<&str>,
    ) -> Result<(), CallError> {
        let mut client = self.client()?;
        let message = pb::DeleteGradeRequest {
            student_id: student_id.to_owned(),
            grade_id: grade_id.to_owned(),
            request_id: request_id_or_new(request_id),
        };
        let call = client.delete_grade(request(message, self.timeout, Retry::Safe));
        unary(SERVICE, self.timeout, call).await.map(|_| ())
    }

    /// Streams changes (of one student, or of all when `student_id` is
    /// empty) from now on. Only opening the stream has a deadline; the
    /// stream ends after its first error.
    pub async fn watch(
        &self,
        student_id: &str,
    ) -> Result<BoxStream<'static, Result<Change, CallError>>, CallError> {
        let mut client = self.client()?;
        let message = pb::WatchGradesRequest {
            student_id: student_id.to_owned(),
        };
        let call = client.watch_grades(request(message, self.timeout, Retry::Safe));
        stream(SERVICE, self.timeout, call, Change::try_from).await
    }
}
