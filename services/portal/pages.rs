//! The teachers' web app: server-rendered HTML (maud templates, compiled
//! into the binary) that works without JavaScript and reads well on a phone.
//! Forms post back and redirect; a form with a mistake is shown again with
//! the message next to its field.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use crate::mesh::api::grading::new_request_id;
use crate::model::grading::{GradeType, Student, StudentDetail};
use crate::model::log::{Level, LogFilter, LogRecord};
use crate::portal::api::grade_input;
use crate::portal::error::PortalError;
use crate::portal::{AppState, ops};

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:0 1rem;color:#222}
nav{display:flex;gap:1rem;padding:.8rem 0;border-bottom:1px solid #ddd;margin-bottom:1rem}
nav a{font-weight:600}
nav .signout{margin-left:auto}
table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{text-align:left;padding:.4rem;border-bottom:1px solid #eee}
td.num,th.num{text-align:right}
form.inline{display:inline}
label{display:block;margin:.5rem 0 .2rem}
input,select{font-size:1rem;padding:.3rem;max-width:100%}
.error{color:#b00020;font-size:.9rem}
.notice{background:#fff3cd;padding:.6rem;border-radius:4px}
.SERVING{color:#1b7f3b}.UNREACHABLE,.NOT_SERVING{color:#b00020}
.table-wrap{overflow-x:auto}
.REMOVED{color:#555}
ul.history{list-style:none;padding:0;margin:0;font-size:.85rem}
svg.spark{color:#3b6fb6;vertical-align:middle}
.lane{position:relative;height:1.1rem;min-width:8rem;background:#f1f3f5;border-radius:2px}
.lane span{position:absolute;top:0;bottom:0;min-width:2px;background:#3b6fb6;border-radius:2px}
.lane span.error{background:#b00020}
.waterfall{list-style:none;padding:0;margin:1rem 0}
.waterfall li{padding-top:.35rem;padding-bottom:.35rem;border-bottom:1px solid #eee;overflow-wrap:anywhere}
.meta{font-size:.85rem;color:#555}
.status-error{color:#b00020;font-weight:600}
";

/// The page frame around every page of a signed-in user.
pub(crate) fn layout(title: &str, body: Markup) -> Markup {
    frame(
        title,
        html! {
            nav {
                a href="/students" { "Students" } a href="/services" { "Services" } a href="/logs" { "Logs" } a href="/traces" { "Traces" }
                form.inline.signout method="post" action="/logout" { button type="submit" { "Sign out" } }
            }
        },
        body,
    )
}

/// The page frame without the navigation (the sign-in page).
pub(crate) fn bare_layout(title: &str, body: Markup) -> Markup {
    frame(title, html! {}, body)
}

fn frame(title: &str, nav: Markup, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Gradebook" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                (nav)
                main { (body) }
            }
        }
    }
}

/// The live-update script of a student's page (a file, since the Content
/// Security Policy allows no inline script).
const LIVE_JS: &str = "(function(){var s=document.currentScript;if(!window.EventSource||!s)return;new EventSource('/api/events?student_id='+encodeURIComponent(s.dataset.studentId)).addEventListener('change',function(){document.getElementById('live').hidden=false;});})();";

async fn live_js() -> Response {
    script_file(LIVE_JS)
}

/// A script of ours, served as a file.
fn script_file(script: &'static str) -> Response {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "public, max-age=300"),
        ],
        script,
    )
        .into_response()
}

fn average_text(average: Option<f64>) -> String {
    average.map_or_else(|| "–".to_owned(), |a| format!("{a:.1}"))
}

/// An error page with the right status.
pub(crate) fn error_page(error: &PortalError) -> Response {
    let page = layout(
        "Error",
        html! {
            h1 { (error.status.as_u16()) " " (error.status.canonical_reason().unwrap_or("")) }
            p.notice { (error.message) }
            @if let Some(trace) = crate::mesh::trace::current_trace_id() {
                p { "If you report this, quote the trace " code { (trace) } "." }
            }
            p { a href="/students" { "Back to the students" } }
        },
    );
    crate::portal::error::with_retry_after(
        error.status,
        (error.status, Html(page.into_string())).into_response(),
    )
}

/// Turns a page handler's result into a response, errors as error pages.
pub(crate) fn page(result: Result<Response, PortalError>) -> Response {
    result.unwrap_or_else(|error| error_page(&error))
}

/// Which field a grading validation message is about (`title: ...` → `title`).
fn field_of(message: &str) -> &str {
    message
        .split_once(':')
        .map_or("", |(field, _)| field.trim())
}

/// The form fields of a student.
#[derive(Debug, Default, Deserialize)]
pub struct StudentForm {
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    request_id: String,
}

/// The form fields of a grade.
#[derive(Debug, Default, Deserialize)]
pub struct GradeForm {
    #[serde(default)]
    title: String,
    #[serde(rename = "type", default)]
    grade_type: String,
    #[serde(default)]
    score: String,
    #[serde(default)]
    request_id: String,
}

/// The fields of a form with no fields but its request id (the delete buttons).
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    request_id: String,
}

/// A form's request id: made when the form is shown, so that submitting it
/// twice (a double click, a resent POST after a reload) writes once.
fn request_id_field() -> Markup {
    html! { input type="hidden" name="request_id" value=(new_request_id()); }
}

/// The request id a form sent, if any.
fn sent(request_id: &str) -> Option<&str> {
    Some(request_id).filter(|id| !id.is_empty())
}

fn field_error(errors: &Option<(String, String)>, field: &str) -> Markup {
    html! {
        @if let Some((f, message)) = errors {
            @if f == field { span.error id={ (field) "-error" } role="alert" { (message) } }
        }
    }
}

fn students_page(
    students: &[Student],
    form: &StudentForm,
    error: Option<(String, String)>,
) -> Markup {
    layout(
        "Students",
        html! {
            h1 { "Students" }
            div.table-wrap {
                table {
                    thead { tr { th { "Name" } th.num { "Grades" } th.num { "Average" } } }
                    tbody {
                        @for s in students {
                            tr {
                                td { a href={ "/students/" (s.id) } { (s.last_name) ", " (s.first_name) } }
                                td.num { (s.grade_count) }
                                td.num { (average_text(s.average)) }
                            }
                        }
                    }
                }
            }
            h2 { "Add a student" }
            form method="post" action="/students" {
                (request_id_field())
                label for="first_name" { "First name" }
                input id="first_name" name="first_name" value=(form.first_name) required maxlength="100";
                (field_error(&error, "first_name"))
                label for="last_name" { "Last name" }
                input id="last_name" name="last_name" value=(form.last_name) required maxlength="100";
                (field_error(&error, "last_name"))
                p { button type="submit" { "Add student" } }
            }
        },
    )
}

async fn students(State(app): State<AppState>) -> Response {
    page(
        async {
            let (students, _) = app.grading.list_students(500, String::new()).await?;
            Ok(
                Html(students_page(&students, &StudentForm::default(), None).into_string())
                    .into_response(),
            )
        }
        .await,
    )
}

async fn create_student(State(app): State<AppState>, Form(form): Form<StudentForm>) -> Response {
    match app
        .grading
        .create_student(
            form.first_name.clone(),
            form.last_name.clone(),
            sent(&form.request_id),
        )
        .await
        .map_err(PortalError::from)
    {
        Ok(student) => Redirect::to(&format!("/students/{}", student.id)).into_response(),
        Err(error) if error.status == StatusCode::BAD_REQUEST => page(
            async {
                let (students, _) = app.grading.list_students(500, String::new()).await?;
                let invalid = Some((field_of(&error.message).to_owned(), error.message.clone()));
                Ok((
                    StatusCode::BAD_REQUEST,
                    Html(students_page(&students, &form, invalid).into_string()),
                )
                    .into_response())
            }
            .await,
        ),
        Err(error) => error_page(&error),
    }
}

fn student_page(
    detail: &StudentDetail,
    form: &GradeForm,
    error: Option<(String, String)>,
) -> Markup {
    let s = &detail.student;
    let name = format!("{} {}", s.first_name, s.last_name);
    layout(
        &name,
        html! {
            h1 { (name) }
            p { "Average: " strong id="average" { (average_text(s.average)) } }
            // Live updates where JavaScript runs; the page works without it.
            p.notice id="live" hidden { "This student's grades changed. " a href={ "/students/" (s.id) } { "Reload" } }
            script src="/static/live.js" data-student-id=(s.id) {}
            div.table-wrap {
                table id="grades" {
                    thead { tr { th { "Title" } th { "Type" } th.num { "Score" } th { "Added" } th { "" } } }
                    tbody {
                        @for g in &detail.grades {
                            tr {
                                td { (g.title) }
                                td { (g.grade_type.as_str()) }
                                td.num { (format!("{:.1}", g.score)) }
                                td { (humantime::format_rfc3339_seconds(g.created_at).to_string().get(..10).unwrap_or("")) }
                                td {
                                    a href={ "/students/" (s.id) "/grades/" (g.id) "/edit" } { "Edit" }
                                    " "
                                    form.inline method="post" action={ "/students/" (s.id) "/grades/" (g.id) "/delete" } {
                                        (request_id_field())
                                        button type="submit" { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = &detail.next_grades {
                p id="more-grades" {
                    "Showing " (detail.grades.len()) " of " (s.grade_count) " grades. "
                    a href={ "/students/" (s.id) "?grades=" (next) } { "Next grades" }
                }
            }
            h2 { "Add a grade" }
            (grade_form(&format!("/students/{}/grades", s.id), form, &error, "Add grade"))
            h2 { "Rename or remove" }
            form method="post" action={ "/students/" (s.id) } {
                (request_id_field())
                label for="first_name" { "First name" }
                input id="first_name" name="first_name" value=(s.first_name) required maxlength="100";
                label for="last_name" { "Last name" }
                input id="last_name" name="last_name" value=(s.last_name) required maxlength="100";
                p { button type="submit" { "Save name" } }
            }
            form method="post" action={ "/students/" (s.id) "/delete" } {
                (request_id_field())
                button type="submit" { "Delete student" }
            }
        },
    )
}

fn grade_form(
    action: &str,
    form: &GradeForm,
    error: &Option<(String, String)>,
    submit: &str,
) -> Markup {
    html! {
        form method="post" action=(action) {
            (request_id_field())
            label for="title" { "Title" }
            input id="title" name="title" value=(form.title) required maxlength="200";
            (field_error(error, "title"))
            label for="type" { "Type" }
            select id="type" name="type" {
                @for t in GradeType::ALL {
                    option value=(t.as_str()) selected[form.grade_type == t.as_str()] { (t.as_str()) }
                }
            }
            (field_error(error, "type"))
            label for="score" { "Score (0 to 100)" }
            input id="score" name="score" type="number" step="any" value=(form.score) required;
            (field_error(error, "score"))
            p { button type="submit" { (submit) } }
        }
    }
}

/// The query of a student's page: which page of grades to show.
#[derive(Debug, Default, Deserialize)]
struct GradesQuery {
    /// The page token of the grades to show; absent: the first page.
    grades: Option<String>,
}

async fn student(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<GradesQuery>,
) -> Response {
    page(
        async {
            let mut detail = app.grading.get_student(&id).await?;
            if let Some(token) = query.grades {
                let page = app.grading.list_grades(&id, 0, token).await?;
                detail.grades = page.grades;
                detail.next_grades = page.next;
            }
            Ok(
                Html(student_page(&detail, &GradeForm::default(), None).into_string())
                    .into_response(),
            )
        }
        .await,
    )
}

fn parse_score(text: &str) -> Result<f64, PortalError> {
    text.trim()
        .parse::<f64>()
        .map_err(|_| PortalError::bad_request(format!("score: {text:?} is not a number")))
}

async fn add_grade(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<GradeForm>,
) -> Response {
    let added: Result<_, PortalError> = async {
        let score = parse_score(&form.score)?;
        Ok(app
            .grading
            .add_grade(
                &id,
                grade_input(form.title.clone(), &form.grade_type, score),
                sent(&form.request_id),
            )
            .await?)
    }
    .await;
    match added {
        Ok(_) => Redirect::to(&format!("/students/{id}")).into_response(),
        Err(error) if error.status == StatusCode::BAD_REQUEST => page(
            async {
                let detail = app.grading.get_student(&id).await?;
                let invalid = Some((field_of(&error.message).to_owned(), error.message.clone()));
                Ok((
                    StatusCode::BAD_REQUEST,
                    Html(student_page(&detail, &form, invalid).into_string()),
                )
                    .into_response())
            }
            .await,
        ),
        Err(error) => error_page(&error),
    }
}

async fn update_student(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<StudentForm>,
) -> Response {
    match app
        .grading
        .update_student(&id, form.first_name, form.last_name, sent(&form.request_id))
        .await
        .map_err(PortalError::from)
    {
        Ok(_) => Redirect::to(&format!("/students/{id}")).into_response(),
        Err(error) => error_page(&error),
    }
}

async fn delete_student(
    State(app): State<AppState>,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let form = form.map(|Form(form)| form).unwrap_or_default();
    match app
        .grading
        .delete_student(&id, sent(&form.request_id))
        .await
        .map_err(PortalError::from)
    {
        Ok(()) => Redirect::to("/students").into_response(),
        Err(error) => error_page(&error),
    }
}

/// The grade `grade_id` of the student: in the first page, or (for a
/// student with more grades than a page holds) in a later one.
async fn find_grade(
    app: &AppState,
    detail: &StudentDetail,
    grade_id: &str,
) -> Result<crate::model::grading::Grade, PortalError> {
    let mut page = detail.grades.clone();
    let mut next = detail.next_grades.clone();
    loop {
        if let Some(grade) = page.into_iter().find(|g| g.id == grade_id) {
            return Ok(grade);
        }
        let Some(token) = next else {
            return Err(PortalError::not_found("no such grade"));
        };
        let more = app
            .grading
            .list_grades(&detail.student.id, 0, token)
            .await?;
        (page, next) = (more.grades, more.next);
    }
}

async fn edit_grade(
    State(app): State<AppState>,
    Path((id, grade_id)): Path<(String, String)>,
) -> Response {
    page(async {
        let detail = app.grading.get_student(&id).await?;
        let grade = find_grade(&app, &detail, &grade_id).await?;
        let form = GradeForm {
            title: grade.title.clone(),
            grade_type: grade.grade_type.as_str().to_owned(),
            score: grade.score.to_string(),
            request_id: String::new(),
        };
        let body = html! {
            h1 { "Edit grade" }
            p { a href={ "/students/" (id) } { "Back to " (detail.student.first_name) " " (detail.student.last_name) } }
            (grade_form(&format!("/students/{id}/grades/{grade_id}"), &form, &None, "Save grade"))
        };
        Ok(Html(layout("Edit grade", body).into_string()).into_response())
    }
    .await)
}

async fn update_grade(
    State(app): State<AppState>,
    Path((id, grade_id)): Path<(String, String)>,
    Form(form): Form<GradeForm>,
) -> Response {
    let updated: Result<_, PortalError> = async {
        let score = parse_score(&form.score)?;
        Ok(app
            .grading
            .update_grade(
                &id,
                &grade_id,
                grade_input(form.title.clone(), &form.grade_type, score),
                sent(&form.request_id),
            )
            .await?)
    }
    .await;
    match updated {
        Ok(_) => Redirect::to(&format!("/students/{id}")).into_response(),
        Err(error) => error_page(&error),
    }
}

async fn delete_grade(
    State(app): State<AppState>,
    Path((id, grade_id)): Path<(String, String)>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let form = form.map(|Form(form)| form).unwrap_or_default();
    match app
        .grading
        .delete_grade(&id, &grade_id, sent(&form.request_id))
        .await
        .map_err(PortalError::from)
    {
        Ok(()) => Redirect::to(&format!("/students/{id}")).into_response(),
        Err(error) => error_page(&error),
    }
}

async fn services(State(app): State<AppState>) -> Response {
    page(
        async {
            let now = std::time::SystemTime::now();
            let live = app.ops.fleet().is_live();
            let content = if live {
                ops::page::content(&app.ops.fleet(), now)
            } else {
                // Before the view's first snapshot (or while its watch is
                // broken): the registry's list, as it is now.
                let mut fleet = ops::fleet::Fleet::default();
                let instances = app.registry_instances().await?;
                fleet.apply(
                    crate::model::registry::WatchUpdate::Snapshot {
                        instances,
                        registry_node: String::new(),
                        catching_up: true,
                        policies: app.registry_policies().await?,
                    },
                    now,
                );
                ops::page::content(&fleet, now)
            };
            Ok(Html(layout("Services", content).into_string()).into_response())
        }
        .await,
    )
}

/// The table of `/services`, sent again as the view changes (Server-Sent
/// Events `fleet`, each with the rows' HTML) until the portal shuts down.
async fn services_events(State(app): State<AppState>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    let ops = app.ops.clone();
    let events = tokio_stream::wrappers::WatchStream::new(app.ops.changes())
        .map(move |_| {
            let rows = ops::page::rows(&ops.fleet(), std::time::SystemTime::now());
            Ok::<_, std::convert::Infallible>(
                Event::default().event("fleet").data(rows.into_string()),
            )
        })
        .take_until(app.shutdown().cancelled_owned());
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn services_js() -> Response {
    script_file(ops::page::SERVICES_JS)
}

/// The `/logs` filters.
#[derive(Debug, Default, Deserialize)]
pub struct LogsQuery {
    #[serde(default)]
    service: String,
    #[serde(default)]
    level: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    trace: String,
}

async fn logs(State(app): State<AppState>, Query(query): Query<LogsQuery>) -> Response {
    page(async {
        let filter = LogFilter {
            service: Some(query.service.trim().to_owned()).filter(|s| !s.is_empty()),
            min_level: query.level.parse::<Level>().ok(),
            contains: Some(query.text.trim().to_owned()).filter(|s| !s.is_empty()),
            trace_id: Some(query.trace.trim().to_owned()).filter(|s| !s.is_empty()),
            ..LogFilter::default()
        }
        .validated()
        .map_err(|e| PortalError::bad_request(e.to_string()))?;
        let page = app.recent_logs(&filter, 200).await?;
        let records: &[LogRecord] = &page.records;
        let body = html! {
            h1 { "Logs" }
            form method="get" action="/logs" {
                label for="service" { "Service" }
                input id="service" name="service" value=(query.service);
                label for="level" { "Minimum level" }
                select id="level" name="level" {
                    option value="" { "any" }
                    @for l in Level::ALL { option value=(l.as_str().to_lowercase()) selected[query.level.eq_ignore_ascii_case(l.as_str())] { (l.as_str()) } }
                }
                label for="text" { "Text" }
                input id="text" name="text" value=(query.text);
                label for="trace" { "Trace" }
                input id="trace" name="trace" value=(query.trace);
                p { button type="submit" { "Filter" } }
            }
            @if !page.unanswered.is_empty() {
                p.notice role="status" {
                    "Some log instances did not answer, so their records are missing: "
                    (page.unanswered.join(", "))
                }
            }
            div.table-wrap {
                table {
                    thead { tr { th { "Time" } th { "Level" } th { "Service" } th { "Message" } } }
                    tbody {
                        @for r in records {
                            tr {
                                td { (humantime::format_rfc3339_millis(r.timestamp).to_string()) }
                                td { (r.level.as_str()) }
                                td { (r.service) }
                                td { (r.message) @for (k, v) in &r.fields { " " small { (k) "=" (v) } } }
                            }
                        }
                    }
                }
            }
        };
        Ok(Html(layout("Logs", body).into_string()).into_response())
    }
    .await)
}

async fn not_found() -> Response {
    error_page(&PortalError::not_found("There is no such page."))
}

/// The web app's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/students") }))
        .route("/students", get(students).post(create_student))
        .route("/students/{id}", get(student).post(update_student))
        .route("/students/{id}/delete", post(delete_student))
        .route("/students/{id}/grades", post(add_grade))
        .route("/students/{id}/grades/{grade_id}", post(update_grade))
        .route("/students/{id}/grades/{grade_id}/edit", get(edit_grade))
        .route(
            "/students/{id}/grades/{grade_id}/delete",
            post(delete_grade),
        )
        .route("/static/live.js", get(live_js))
        .route("/static/services.js", get(services_js))
        .route("/services", get(services))
        .route("/services/events", get(services_events))
        .route("/logs", get(logs))
        .fallback(not_found)
}
