//! Calls to the grading service, found through the dependency view, each
//! with a deadline; answers in domain types.

use std::time::Duration;

use crate::mesh::DependencyView;
use crate::mesh::client::{deadline, request};
use crate::model::grading::{Grade, Student, StudentDetail};
use crate::pb::grading::v1 as pb;
use crate::pb::grading::v1::grading_client::GradingClient;
use crate::portal::error::PortalError;

/// A handle for calling grading with a deadline.
#[derive(Debug, Clone)]
pub struct Grading {
    dependencies: DependencyView,
    timeout: Duration,
}

fn malformed(error: impl std::fmt::Display) -> PortalError {
    tracing::error!(error = %error, "malformed answer from grading");
    PortalError {
        status: axum::http::StatusCode::BAD_GATEWAY,
        code: "INTERNAL",
        message: "internal error".into(),
    }
}

impl Grading {
    /// Calls grading through `dependencies`, each call within `timeout`.
    pub fn new(dependencies: DependencyView, timeout: Duration) -> Self {
        Grading {
            dependencies,
            timeout,
        }
    }

    fn client(&self) -> Result<GradingClient<tonic::transport::Channel>, PortalError> {
        Ok(GradingClient::new(
            self.dependencies.channel(crate::grading::SERVICE_NAME)?,
        ))
    }

    /// A page of students.
    pub async fn list_students(
        &self,
        page_size: u32,
        page_token: String,
    ) -> Result<(Vec<Student>, String), PortalError> {
        let mut client = self.client()?;
        let message = pb::ListStudentsRequest {
            page_size,
            page_token,
        };
        let page = deadline(
            self.timeout,
            client.list_students(request(message, self.timeout)),
        )
        .await?
        .into_inner();
        let students = page
            .students
            .into_iter()
            .map(Student::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(malformed)?;
        Ok((students, page.next_page_token))
    }

    /// One student with grades.
    pub async fn get_student(&self, id: &str) -> Result<StudentDetail, PortalError> {
        let mut client = self.client()?;
        let message = pb::GetStudentRequest { id: id.to_owned() };
        let detail = deadline(
            self.timeout,
            client.get_student(request(message, self.timeout)),
        )
        .await?
        .into_inner();
        StudentDetail::try_from(detail).map_err(malformed)
    }

    /// Adds a student.
    pub async fn create_student(
        &self,
        first_name: String,
        last_name: String,
    ) -> Result<Student, PortalError> {
        let mut client = self.client()?;
        let message = pb::CreateStudentRequest {
            first_name,
            last_name,
            request_id: String::new(),
        };
        let student = deadline(
            self.timeout,
            client.create_student(request(message, self.timeout)),
        )
        .await?
        .into_inner();
        Student::try_from(student).map_err(malformed)
    }

    /// Renames a student.
    pub async fn update_student(
        &self,
        id: &str,
        first_name: String,
        last_name: String,
    ) -> Result<Student, PortalError> {
        let mut client = self.client()?;
        let message = pb::UpdateStudentRequest {
            id: id.to_owned(),
            first_name,
            last_name,
            request_id: String::new(),
        };
        let student = deadline(
            self.timeout,
            client.update_student(request(message, self.timeout)),
        )
        .await?
        .into_inner();
        Student::try_from(student).map_err(malformed)
    }

    /// Removes a student.
    pub async fn delete_student(&self, id: &str) -> Result<(), PortalError> {
        let mut client = self.client()?;
        let message = pb::DeleteStudentRequest {
            id: id.to_owned(),
            request_id: String::new(),
        };
        deadline(
            self.timeout,
            client.delete_student(request(message, self.timeout)),
        )
        .await?;
        Ok(())
    }

    /// Adds a grade; `grade_type` is the pb enum value (0 when unknown, which
    /// grading rejects with a message naming the field).
    pub async fn add_grade(
        &self,
        student_id: &str,
        title: String,
        grade_type: i32,
        score: f64,
    ) -> Result<Grade, PortalError> {
        let mut client = self.client()?;
        let message = pb::AddGradeRequest {
            student_id: student_id.to_owned(),
            title,
            r#type: grade_type,
            score,
            request_id: String::new(),
        };
        let grade = deadline(
            self.timeout,
            client.add_grade(request(message, self.timeout)),
        )
        .await?
        .into_inner();
        Grade::try_from(grade).map_err(malformed)
    }

    /// Changes a grade.
    pub async fn update_grade(
        &self,
        student_id: &str,
        grade_id: &str,
        title: String,
        grade_type: i32,
        score: f64,
    ) -> Result<Grade, PortalError> {
        let mut client = self.client()?;
        let message = pb::UpdateGradeRequest {
            student_id: student_id.to_owned(),
            grade_id: grade_id.to_owned(),
            title,
            r#type: grade_type,
            score,
            request_id: String::new(),
        };
        let grade = deadline(
            self.timeout,
            client.update_grade(request(message, self.timeout)),
        )
        .await?
        .into_inner();
        Grade::try_from(grade).map_err(malformed)
    }

    /// Streams changes (of one student, or of all when `student_id` is
    /// empty) from now on. Only opening the stream has a deadline.
    pub async fn watch(
        &self,
        student_id: &str,
    ) -> Result<tonic::Streaming<pb::GradeEvent>, PortalError> {
        let mut client = self.client()?;
        let message = pb::WatchGradesRequest {
            student_id: student_id.to_owned(),
        };
        Ok(deadline(self.timeout, client.watch_grades(message))
            .await?
            .into_inner())
    }

    /// Removes a grade.
    pub async fn delete_grade(&self, student_id: &str, grade_id: &str) -> Result<(), PortalError> {
        let mut client = self.client()?;
        let message = pb::DeleteGradeRequest {
            student_id: student_id.to_owned(),
            grade_id: grade_id.to_owned(),
            request_id: String::new(),
        };
        deadline(
            self.timeout,
            client.delete_grade(request(message, self.timeout)),
        )
        .await?;
        Ok(())
    }
}
