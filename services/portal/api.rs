//! The JSON gateway: `/api/...` routes onto the same gRPC calls as the
//! pages, fields in snake_case, errors as `{"error":{"code","message"}}`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::mesh::api::grading::GradeInput;
use crate::model::grading::{Grade, GradeType, Student, StudentDetail, validate_request_id};
use crate::portal::AppState;
use crate::portal::error::PortalError;

/// A JSON body whose rejection (malformed JSON, wrong content type, too
/// large) is answered in the API's error format.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = PortalError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, PortalError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => {
                let status = match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    _ => StatusCode::BAD_REQUEST,
                };
                Err(PortalError {
                    status,
                    code: crate::portal::error::code_of(status),
                    message: rejection.body_text(),
                })
            }
        }
    }
}

/// The `Idempotency-Key` header of a write, checked: a repeat of a write
/// with the same key answers as the first did and writes nothing; without
/// one, the portal makes one for the write (the same for its retries).
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey(pub Option<String>);

/// The header's name.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdempotencyKey {
    type Rejection = PortalError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, PortalError> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(IdempotencyKey(None));
        };
        let invalid = |reason: &str| PortalError::bad_request(format!("Idempotency-Key: {reason}"));
        let text = value
            .to_str()
            .map_err(|_| invalid("must be printable ASCII"))?;
        match validate_request_id(text) {
            Ok(Some(key)) => Ok(IdempotencyKey(Some(key))),
            Ok(None) => Err(invalid("must not be empty")),
            Err(error) => Err(invalid(&error.reason)),
        }
    }
}

impl IdempotencyKey {
    /// The key, if the client sent one.
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// A student as the API shows it.
#[derive(Debug, Serialize)]
pub struct StudentJson {
    id: String,
    first_name: String,
    last_name: String,
    average: Option<f64>,
    grade_count: u32,
}

impl From<&Student> for StudentJson {
    fn from(s: &Student) -> Self {
        StudentJson {
            id: s.id.clone(),
            first_name: s.first_name.clone(),
            last_name: s.last_name.clone(),
            average: s.average,
            grade_count: s.grade_count,
        }
    }
}

/// A grade as the API shows it.
#[derive(Debug, Serialize)]
pub struct GradeJson {
    id: String,
    title: String,
    #[serde(rename = "type")]
    grade_type: &'static str,
    score: f64,
    created_at: String,
}

impl From<&Grade> for GradeJson {
    fn from(g: &Grade) -> Self {
        GradeJson {
            id: g.id.clone(),
            title: g.title.clone(),
            grade_type: g.grade_type.as_str(),
            score: g.score,
            created_at: humantime::format_rfc3339_millis(g.created_at).to_string(),
        }
    }
}

/// A student with grades as the API shows it.
#[derive(Debug, Serialize)]
pub struct StudentDetailJson {
    id: String,
    first_name: String,
    last_name: String,
    average: Option<f64>,
    grades: Vec<GradeJson>,
    /// Pass as `page_token` to `GET /api/students/{id}/grades` for the
    /// grades after these; empty when `grades` holds every grade.
    next_grades_page_token: String,
}

impl From<&StudentDetail> for StudentDetailJson {
    fn from(d: &StudentDetail) -> Self {
        StudentDetailJson {
            id: d.student.id.clone(),
            first_name: d.student.first_name.clone(),
            last_name: d.student.last_name.clone(),
            average: d.student.average,
            grades: d.grades.iter().map(GradeJson::from).collect(),
            next_grades_page_token: d.next_grades.clone().unwrap_or_default(),
        }
    }
}

/// `POST`/`PUT` body for a student.
#[derive(Debug, Deserialize)]
pub struct StudentInput {
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
}

/// `POST`/`PUT` body for a grade.
#[derive(Debug, Deserialize)]
pub struct GradeBody {
    #[serde(default)]
    title: String,
    #[serde(rename = "type", default)]
    grade_type: String,
    score: Option<f64>,
}

/// A grade as a user wrote it; a type that is not one is left for grading
/// to reject, naming the `type` field.
pub fn grade_input(title: String, grade_type: &str, score: f64) -> GradeInput {
    GradeInput {
        title,
        grade_type: grade_type.parse::<GradeType>().ok(),
        score,
    }
}

fn score_of(score: Option<f64>) -> Result<f64, PortalError> {
    score.ok_or_else(|| PortalError::bad_request("score: must be a number from 0 to 100"))
}

/// Paging of `GET /api/students` and `GET /api/students/{id}/grades`.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

async fn list_students(
    State(app): State<AppState>,
    Query(page): Query<PageQuery>,
) -> Result<Response, PortalError> {
    let (students, next) = app
        .grading
        .list_students(page.page_size, page.page_token)
        .await?;
    let students: Vec<StudentJson> = students.iter().map(StudentJson::from).collect();
    Ok(Json(serde_json::json!({ "students": students, "next_page_token": next })).into_response())
}

async fn create_student(
    State(app): State<AppState>,
    key: IdempotencyKey,
    ApiJson(input): ApiJson<StudentInput>,
) -> Result<Response, PortalError> {
    let student = app
        .grading
        .create_student(input.first_name, input.last_name, key.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(StudentJson::from(&student))).into_response())
}

async fn get_student(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let detail = app.grading.get_student(&id).await?;
    Ok(Json(StudentDetailJson::from(&detail)).into_response())
}

async fn list_grades(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Response, PortalError> {
    let page = app
        .grading
        .list_grades(&id, page.page_size, page.page_token)
        .await?;
    let grades: Vec<GradeJson> = page.grades.iter().map(GradeJson::from).collect();
    let next = page.next.unwrap_or_default();
    Ok(Json(serde_json::json!({ "grades": grades, "next_page_token": next })).into_response())
}

async fn update_student(
    State(app): State<AppState>,
    Path(id): Path<String>,
    key: IdempotencyKey,
    ApiJson(input): ApiJson<StudentInput>,
) -> Result<Response, PortalError> {
    let student = app
        .grading
        .update_student(&id, input.first_name, input.last_name, key.as_deref())
        .await?;
    Ok(Json(StudentJson::from(&student)).into_response())
}

async fn delete_student(
    State(app): State<AppState>,
    Path(id): Path<String>,
    key: IdempotencyKey,
) -> Result<Response, PortalError> {
    app.grading.delete_student(&id, key.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_grade(
    State(app): State<AppState>,
    Path(id): Path<String>,
    key: IdempotencyKey,
    ApiJson(input): ApiJson<GradeBody>,
) -> Result<Response, PortalError> {
    let score = score_of(input.score)?;
    let grade = app
        .grading
        .add_grade(
            &id,
            grade_input(input.title, &input.grade_type, score),
            key.as_deref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(GradeJson::from(&grade))).into_response())
}

async fn update_grade(
    State(app): State<AppState>,
    Path((id, grade_id)): Path<(String, String)>,
    key: IdempotencyKey,
    ApiJson(input): ApiJson<GradeBody>,
) -> Result<Response, PortalError> {
    let score = score_of(input.score)?;
    let grade = app
        .grading
        .update_grade(
            &id,
            &grade_id,
            grade_input(input.title, &input.grade_type, score),
            key.as_deref(),
        )
        .await?;
    Ok(Json(GradeJson::from(&grade)).into_response())
}

async fn delete_grade(
    State(app): State<AppState>,
    Path((id, grade_id)): Path<(String, String)>,
    key: IdempotencyKey,
) -> Result<Response, PortalError> {
    app.grading
        .delete_grade(&id, &grade_id, key.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn services(State(app): State<AppState>) -> Result<Response, PortalError> {
    let instances = app.registry_instances().await?;
    let rows: Vec<serde_json::Value> = instances
        .iter()
        .map(|i| {
            serde_json::json!({
                "service": i.service,
                "instance_id": i.instance_id,
                "address": i.address,
                "version": i.version,
                "health": i.health.as_str(),
                "last_check": i.last_check.map(|t| humantime::format_rfc3339_millis(t).to_string()),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "instances": rows })).into_response())
}

/// `GET /api/events?student_id=`: changes as Server-Sent Events (the web
/// app's live updates), one JSON object per event. Ends when grading goes
/// away or the portal shuts down; browsers reconnect on their own.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    student_id: String,
}

async fn events(
    State(app): State<AppState>,
    Query(query): Query<EventsQuery>,
) -> Result<Response, PortalError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    let stream = app.grading.watch(&query.student_id).await?;
    let events = stream
        .take_while(|item| futures::future::ready(item.is_ok()))
        .filter_map(|item| async move {
            let change = item.ok()?;
            let data = serde_json::json!({
                "kind": change.kind.as_str(),
                "student_id": change.student.id,
                "average": change.student.average,
                "grade_id": change.grade.as_ref().map(|g| g.id.clone()),
            });
            Some(Ok::<_, std::convert::Infallible>(
                Event::default().event("change").data(data.to_string()),
            ))
        })
        .take_until(app.shutdown().cancelled_owned());
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn unknown_api() -> PortalError {
    PortalError::not_found("no such API route")
}

/// The `/api` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/students", get(list_students).post(create_student))
        .route(
            "/api/students/{id}",
            get(get_student).put(update_student).delete(delete_student),
        )
        .route(
            "/api/students/{id}/grades",
            get(list_grades).post(add_grade),
        )
        .route(
            "/api/students/{id}/grades/{grade_id}",
            put(update_grade).delete(delete_grade),
        )
        .route("/api/services", get(services))
        .route("/api/events", get(events))
        .route("/api/{*rest}", axum::routing::any(unknown_api))
}
