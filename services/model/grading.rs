//! The domain types of package `gradebook.grading.v1`: students, grades and
//! their averages, the validated inputs that create or change them, the
//! changes streamed to live views, and the conversions from and to
//! [`crate::pb::grading::v1`]. This is the only module of the crate that
//! converts grading protobufs; every conversion of a request validates, and
//! every validation error names the field it is about.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use prost::Message;

pub use crate::model::InvalidField;
use crate::model::time::{timestamp_from_pb, timestamp_to_pb};
use crate::pb::grading::v1 as pb;

/// The most characters of a first or a last name.
pub const MAX_NAME_CHARS: usize = 100;
/// The most characters of a grade's title.
pub const MAX_TITLE_CHARS: usize = 200;
/// The lowest score.
pub const MIN_SCORE: f64 = 0.0;
/// The highest score.
pub const MAX_SCORE: f64 = 100.0;
/// The page size used when a request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The largest page size a request may ask for.
pub const MAX_PAGE_SIZE: usize = 500;
/// The most grades one student may have: a student's page (and its message
/// on the wire) stays small enough to read, whatever is written.
pub const MAX_GRADES_PER_STUDENT: u32 = 1000;
/// The largest page of grades a request may ask for, and the size of a page
/// when it leaves it at 0: every grade of a student within the limit.
pub const MAX_GRADE_PAGE_SIZE: usize = MAX_GRADES_PER_STUDENT as usize;
/// The most characters of a write's `request_id`.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// The names of the grade types as listed in error messages.
const GRADE_TYPE_NAMES: &str = "quiz, test, exam, homework";

/// A message from the grading service that a client cannot make sense of.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed grading message: {0}")]
pub struct MalformedMessage(pub String);

/// The kind of work a grade is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GradeType {
    /// A short quiz.
    Quiz,
    /// A test.
    Test,
    /// An exam.
    Exam,
    /// Homework.
    Homework,
}

impl GradeType {
    /// Every grade type, in the order of the contract.
    pub const ALL: [GradeType; 4] = [
        GradeType::Quiz,
        GradeType::Test,
        GradeType::Exam,
        GradeType::Homework,
    ];

    /// The lower-case name used in storage, JSON and HTML: `"quiz"`,
    /// `"test"`, `"exam"` or `"homework"`.
    pub fn as_str(self) -> &'static str {
        match self {
            GradeType::Quiz => "quiz",
            GradeType::Test => "test",
            GradeType::Exam => "exam",
            GradeType::Homework => "homework",
        }
    }

    /// The grade type of a protobuf enum value, or `None` for
    /// `GRADE_TYPE_UNSPECIFIED` and unknown values.
    pub fn from_pb(value: i32) -> Option<Self> {
        match pb::GradeType::try_from(value).ok()? {
            pb::GradeType::Unspecified => None,
            pb::GradeType::Quiz => Some(GradeType::Quiz),
            pb::GradeType::Test => Some(GradeType::Test),
            pb::GradeType::Exam => Some(GradeType::Exam),
            pb::GradeType::Homework => Some(GradeType::Homework),
        }
    }
}

impl From<GradeType> for pb::GradeType {
    fn from(grade_type: GradeType) -> Self {
        match grade_type {
            GradeType::Quiz => pb::GradeType::Quiz,
            GradeType::Test => pb::GradeType::Test,
            GradeType::Exam => pb::GradeType::Exam,
            GradeType::Homework => pb::GradeType::Homework,
        }
    }
}

impl fmt::Display for GradeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GradeType {
    type Err = InvalidField;

    /// Parses `quiz`, `test`, `exam` or `homework` in any case (surrounding
    /// whitespace ignored); the error is about the field `type`.
    fn from_str(s: &str) -> Result<Self, InvalidField> {
        let wanted = s.trim();
        GradeType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                InvalidField::new("type", format!("{s:?} is not one of {GRADE_TYPE_NAMES}"))
            })
    }
}

/// Something that names a grade type: a [`GradeType`] itself, or its name
/// (as a `str` or `String`, parsed with [`GradeType::from_str`]). Lets
/// [`NewGrade::new`] take either.
pub trait AsGradeType {
    /// The grade type named, or why it names none.
    fn as_grade_type(&self) -> Result<GradeType, InvalidField>;
}

impl AsGradeType for GradeType {
    fn as_grade_type(&self) -> Result<GradeType, InvalidField> {
        Ok(*self)
    }
}

impl AsGradeType for str {
    fn as_grade_type(&self) -> Result<GradeType, InvalidField> {
        self.parse()
    }
}

impl AsGradeType for String {
    fn as_grade_type(&self) -> Result<GradeType, InvalidField> {
        self.parse()
    }
}

impl<T: AsGradeType + ?Sized> AsGradeType for &T {
    fn as_grade_type(&self) -> Result<GradeType, InvalidField> {
        (**self).as_grade_type()
    }
}

/// A student, with the average and count of their grades.
#[derive(Debug, Clone, PartialEq)]
pub struct Student {
    /// The student's id (a UUIDv7, hyphenated lower case).
    pub id: String,
    /// First name: 1 to [`MAX_NAME_CHARS`] characters.
    pub first_name: String,
    /// Last name: 1 to [`MAX_NAME_CHARS`] characters.
    pub last_name: String,
    /// The mean of the student's scores, unrounded; `None` without grades.
    pub average: Option<f64>,
    /// How many grades the student has.
    pub grade_count: u32,
    /// When the student was added.
    pub created_at: SystemTime,
}

/// One grade of one student.
#[derive(Debug, Clone, PartialEq)]
pub struct Grade {
    /// The grade's id (a UUIDv7, hyphenated lower case).
    pub id: String,
    /// The id of the student it belongs to.
    pub student_id: String,
    /// What it was for, e.g. "Fractions quiz": 1 to [`MAX_TITLE_CHARS`]
    /// characters.
    pub title: String,
    /// The kind of work.
    pub grade_type: GradeType,
    /// The score, from 0 to 100.
    pub score: f64,
    /// When the grade was added.
    pub created_at: SystemTime,
}

/// A student with the first page of grades.
#[derive(Debug, Clone, PartialEq)]
pub struct StudentDetail {
    /// The student, with the average of every grade.
    pub student: Student,
    /// The first grades, oldest first.
    pub grades: Vec<Grade>,
    /// The page token of the grades after these; `None` when `grades` holds
    /// every grade of the student.
    pub next_grades: Option<String>,
}

impl StudentDetail {
    /// The student with `page`, the first page of their grades.
    pub fn with_grades(student: Student, page: GradePage) -> Self {
        StudentDetail {
            student,
            grades: page.grades,
            next_grades: page.next,
        }
    }
}

/// A page of a student's grades.
#[derive(Debug, Clone, PartialEq)]
pub struct GradePage {
    /// The grades, oldest first.
    pub grades: Vec<Grade>,
    /// The page token of the grades after these; `None` on the last page.
    pub next: Option<String>,
}

/// The mean of `scores`, or `None` when there is none. Unrounded: rounding
/// for display is the portal's job.
pub fn average(scores: &[f64]) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    Some(scores.iter().sum::<f64>() / scores.len() as f64)
}

/// Checks a name or title, trimmed: not empty, at most `max` characters
/// (not bytes), no control characters. Returns it trimmed.
fn validate_text(field: &str, value: &str, max: usize) -> Result<String, InvalidField> {
    let value = value.trim();
    if value.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(InvalidField::new(
            field,
            format!("{chars} characters is over the limit of {max}"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidField::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

/// Checks a score: a number from 0 to 100, given to the hundredth at most
/// (85, 89.5, 92.25). Returns it as the nearest hundredth, with `-0` as
/// `0`.
pub fn validate_score(score: f64) -> Result<f64, InvalidField> {
    if score.is_nan() {
        return Err(InvalidField::new("score", "must be a number"));
    }
    if !(MIN_SCORE..=MAX_SCORE).contains(&score) {
        return Err(InvalidField::new(
            "score",
            format!("{score} is out of range ({MIN_SCORE} to {MAX_SCORE})"),
        ));
    }
    let hundredths = (score * 100.0).round();
    // Decimal input is not exact in binary (89.15 * 100 is
    // 8915.000000000002): what is closer than a millionth to a hundredth is
    // one.
    if (score * 100.0 - hundredths).abs() > 1e-6 {
        return Err(InvalidField::new(
            "score",
            format!("{score} has more than two decimals: give it to the hundredth, like 89.25"),
        ));
    }
    // Adding 0.0 turns -0.0 into 0.0.
    Ok(hundredths / 100.0 + 0.0)
}

/// Parses and checks a score typed by a person, e.g. `"87.5"`.
pub fn parse_score(text: &str) -> Result<f64, InvalidField> {
    let text = text.trim();
    if text.is_empty() {
        return Err(InvalidField::new("score", "must not be empty"));
    }
    let score = text
        .parse::<f64>()
        .map_err(|_| InvalidField::new("score", format!("{text:?} is not a number")))?;
    validate_score(score)
}

/// A new student's names, or a student's new names, validated: trimmed, 1 to
/// [`MAX_NAME_CHARS`] characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStudent {
    /// First name, trimmed.
    pub first_name: String,
    /// Last name, trimmed.
    pub last_name: String,
}

impl NewStudent {
    /// Validates the names (fields `first_name` and `last_name`).
    pub fn new(first_name: &str, last_name: &str) -> Result<Self, InvalidField> {
        Ok(NewStudent {
            first_name: validate_text("first_name", first_name, MAX_NAME_CHARS)?,
            last_name: validate_text("last_name", last_name, MAX_NAME_CHARS)?,
        })
    }

    /// The request that renames the student `id` to these names, without a
    /// request id; add one with [`IdempotentRequest::with_request_id`].
    pub fn to_update_request(&self, id: &str) -> pb::UpdateStudentRequest {
        pb::UpdateStudentRequest {
            id: id.to_owned(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            request_id: String::new(),
        }
    }
}

/// A new grade, or a grade's new values, validated: title trimmed and 1 to
/// [`MAX_TITLE_CHARS`] characters without control characters, score from 0
/// to 100.
#[derive(Debug, Clone, PartialEq)]
pub struct NewGrade {
    /// What it was for, trimmed.
    pub title: String,
    /// The kind of work.
    pub grade_type: GradeType,
    /// The score, from 0 to 100.
    pub score: f64,
}

impl NewGrade {
    /// Validates a grade (fields `title`, `type` and `score`); `grade_type`
    /// is a [`GradeType`] or its name, e.g. `"quiz"`.
    pub fn new(
        title: &str,
        grade_type: impl AsGradeType,
        score: f64,
    ) -> Result<Self, InvalidField> {
        Ok(NewGrade {
            title: validate_text("title", title, MAX_TITLE_CHARS)?,
            grade_type: grade_type.as_grade_type()?,
            score: validate_score(score)?,
        })
    }

    /// The request that adds this grade to the student `student_id`,
    /// without a request id; add one with
    /// [`IdempotentRequest::with_request_id`], e.g.
    /// `grade.to_add_request(&id).with_request_id(request_id)`.
    pub fn to_add_request(&self, student_id: &str) -> pb::AddGradeRequest {
        pb::AddGradeRequest {
            student_id: student_id.to_owned(),
            title: self.title.clone(),
            r#type: pb::GradeType::from(self.grade_type) as i32,
            score: self.score,
            request_id: String::new(),
        }
    }

    /// The request that changes the grade `grade_id` of the student
    /// `student_id` to these values, without a request id; add one with
    /// [`IdempotentRequest::with_request_id`].
    pub fn to_update_request(&self, student_id: &str, grade_id: &str) -> pb::UpdateGradeRequest {
        pb::UpdateGradeRequest {
            student_id: student_id.to_owned(),
            grade_id: grade_id.to_owned(),
            title: self.title.clone(),
            r#type: pb::GradeType::from(self.grade_type) as i32,
            score: self.score,
            request_id: String::new(),
        }
    }
}

/// Makes a new id: a UUIDv7, hyphenated lower case.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// Checks an id: it must parse as a UUID (any form the `uuid` crate
/// accepts). Use [`canonical_id`] to also get the stored spelling.
pub fn validate_id(field: &str, id: &str) -> Result<(), InvalidField> {
    canonical_id(field, id).map(|_| ())
}

/// Checks an id like [`validate_id`] and returns it as stored: hyphenated
/// lower case.
pub fn canonical_id(field: &str, id: &str) -> Result<String, InvalidField> {
    if id.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    uuid::Uuid::parse_str(id)
        .map(|uuid| uuid.hyphenated().to_string())
        .map_err(|_| InvalidField::new(field, format!("{id:?} is not a valid id")))
}

/// The number of students to list for a request's `page_size`: 0 means
/// [`DEFAULT_PAGE_SIZE`]; over [`MAX_PAGE_SIZE`] is rejected.
pub fn page_size_from_pb(page_size: u32) -> Result<usize, InvalidField> {
    match usize::try_from(page_size) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) if size <= MAX_PAGE_SIZE => Ok(size),
        _ => Err(InvalidField::new(
            "page_size",
            format!("{page_size} is over the limit of {MAX_PAGE_SIZE}"),
        )),
    }
}

/// The number of grades to return for a request's page size (the field
/// `field`): 0 means [`MAX_GRADE_PAGE_SIZE`]; over it is rejected.
pub fn grade_page_size_from_pb(field: &str, page_size: u32) -> Result<usize, InvalidField> {
    match usize::try_from(page_size) {
        Ok(0) => Ok(MAX_GRADE_PAGE_SIZE),
        Ok(size) if size <= MAX_GRADE_PAGE_SIZE => Ok(size),
        _ => Err(InvalidField::new(
            field,
            format!("{page_size} is over the limit of {MAX_GRADE_PAGE_SIZE}"),
        )),
    }
}

/// A page token as sent, or `None` for an empty one (the first page).
fn page_token_from_pb(token: String) -> Option<String> {
    (!token.is_empty()).then_some(token)
}

/// The grade type of a request, or an error about the field `type`.
fn request_grade_type(value: i32) -> Result<GradeType, InvalidField> {
    GradeType::from_pb(value)
        .ok_or_else(|| InvalidField::new("type", format!("must be one of {GRADE_TYPE_NAMES}")))
}

impl TryFrom<&pb::CreateStudentRequest> for NewStudent {
    type Error = InvalidField;

    fn try_from(req: &pb::CreateStudentRequest) -> Result<Self, InvalidField> {
        NewStudent::new(&req.first_name, &req.last_name)
    }
}

impl From<&NewStudent> for pb::CreateStudentRequest {
    fn from(new: &NewStudent) -> Self {
        pb::CreateStudentRequest {
            first_name: new.first_name.clone(),
            last_name: new.last_name.clone(),
            request_id: String::new(),
        }
    }
}

impl TryFrom<&pb::AddGradeRequest> for NewGrade {
    type Error = InvalidField;

    /// Validates the grade of the request; its `student_id` is checked
    /// separately (see [`validate_id`]).
    fn try_from(req: &pb::AddGradeRequest) -> Result<Self, InvalidField> {
        Ok(NewGrade {
            title: validate_text("title", &req.title, MAX_TITLE_CHARS)?,
            grade_type: request_grade_type(req.r#type)?,
            score: validate_score(req.score)?,
        })
    }
}

/// A validated `UpdateStudentRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudentUpdate {
    /// The student's id, hyphenated lower case.
    pub id: String,
    /// The new names.
    pub student: NewStudent,
}

impl TryFrom<&pb::UpdateStudentRequest> for StudentUpdate {
    type Error = InvalidField;

    fn try_from(req: &pb::UpdateStudentRequest) -> Result<Self, InvalidField> {
        Ok(StudentUpdate {
            id: canonical_id("id", &req.id)?,
            student: NewStudent::new(&req.first_name, &req.last_name)?,
        })
    }
}

/// A validated `UpdateGradeRequest`.
#[derive(Debug, Clone, PartialEq)]
pub struct GradeUpdate {
    /// The student's id, hyphenated lower case.
    pub student_id: String,
    /// The grade's id, hyphenated lower case.
    pub grade_id: String,
    /// The new values.
    pub grade: NewGrade,
}

impl TryFrom<&pb::UpdateGradeRequest> for GradeUpdate {
    type Error = InvalidField;

    fn try_from(req: &pb::UpdateGradeRequest) -> Result<Self, InvalidField> {
        Ok(GradeUpdate {
            student_id: canonical_id("student_id", &req.student_id)?,
            grade_id: canonical_id("grade_id", &req.grade_id)?,
            grade: NewGrade {
                title: validate_text("title", &req.title, MAX_TITLE_CHARS)?,
                grade_type: request_grade_type(req.r#type)?,
                score: validate_score(req.score)?,
            },
        })
    }
}

/// What happened to a student or one of their grades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A student was added.
    StudentCreated,
    /// A student was renamed.
    StudentUpdated,
    /// A student was removed, with every grade.
    StudentDeleted,
    /// A grade was added.
    GradeAdded,
    /// A grade was changed.
    GradeUpdated,
    /// A grade was removed.
    GradeDeleted,
}

impl ChangeKind {
    /// The lower-case name used in JSON: `"student_created"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::StudentCreated => "student_created",
            ChangeKind::StudentUpdated => "student_updated",
            ChangeKind::StudentDeleted => "student_deleted",
            ChangeKind::GradeAdded => "grade_added",
            ChangeKind::GradeUpdated => "grade_updated",
            ChangeKind::GradeDeleted => "grade_deleted",
        }
    }

    /// Whether the change is about a grade (and so carries one).
    pub fn is_grade_change(self) -> bool {
        matches!(
            self,
            ChangeKind::GradeAdded | ChangeKind::GradeUpdated | ChangeKind::GradeDeleted
        )
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ChangeKind> for pb::GradeEventKind {
    fn from(kind: ChangeKind) -> Self {
        match kind {
            ChangeKind::StudentCreated => pb::GradeEventKind::StudentCreated,
            ChangeKind::StudentUpdated => pb::GradeEventKind::StudentUpdated,
            ChangeKind::StudentDeleted => pb::GradeEventKind::StudentDeleted,
            ChangeKind::GradeAdded => pb::GradeEventKind::GradeAdded,
            ChangeKind::GradeUpdated => pb::GradeEventKind::GradeUpdated,
            ChangeKind::GradeDeleted => pb::GradeEventKind::GradeDeleted,
        }
    }
}

/// One change to a student or a grade, as streamed by `WatchGrades`.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The student after the change, with the new average (for a removed
    /// student: as it was).
    pub student: Student,
    /// The grade, for grade changes (for a removed grade: as it was).
    pub grade: Option<Grade>,
}

impl Change {
    /// The id of the student the change is about, for filtering watches.
    pub fn student_id(&self) -> &str {
        &self.student.id
    }
}

/// Converts a wire timestamp that must be present.
fn required_time(
    field: &str,
    ts: Option<&prost_types::Timestamp>,
) -> Result<SystemTime, MalformedMessage> {
    let ts = ts.ok_or_else(|| MalformedMessage(format!("{field}: missing")))?;
    timestamp_from_pb(ts).map_err(|e| MalformedMessage(format!("{field}: {e}")))
}

impl From<&Student> for pb::Student {
    fn from(s: &Student) -> Self {
        pb::Student {
            id: s.id.clone(),
            first_name: s.first_name.clone(),
            last_name: s.last_name.clone(),
            average: s.average,
            grade_count: s.grade_count,
            created_at: Some(timestamp_to_pb(s.created_at)),
        }
    }
}

impl TryFrom<pb::Student> for Student {
    type Error = MalformedMessage;

    fn try_from(s: pb::Student) -> Result<Self, MalformedMessage> {
        if s.id.is_empty() {
            return Err(MalformedMessage("student.id: missing".into()));
        }
        if s.average.is_some_and(|a| !a.is_finite()) {
            return Err(MalformedMessage("student.average: not a number".into()));
        }
        Ok(Student {
            created_at: required_time("student.created_at", s.created_at.as_ref())?,
            id: s.id,
            first_name: s.first_name,
            last_name: s.last_name,
            average: s.average,
            grade_count: s.grade_count,
        })
    }
}

impl From<&Grade> for pb::Grade {
    fn from(g: &Grade) -> Self {
        pb::Grade {
            id: g.id.clone(),
            student_id: g.student_id.clone(),
            title: g.title.clone(),
            r#type: pb::GradeType::from(g.grade_type) as i32,
            score: g.score,
            created_at: Some(timestamp_to_pb(g.created_at)),
        }
    }
}

impl TryFrom<pb::Grade> for Grade {
    type Error = MalformedMessage;

    fn try_from(g: pb::Grade) -> Result<Self, MalformedMessage> {
        if g.id.is_empty() {
            return Err(MalformedMessage("grade.id: missing".into()));
        }
        let grade_type = GradeType::from_pb(g.r#type)
            .ok_or_else(|| MalformedMessage(format!("grade.type: unknown value {}", g.r#type)))?;
        if !g.score.is_finite() {
            return Err(MalformedMessage("grade.score: not a number".into()));
        }
        Ok(Grade {
            created_at: required_time("grade.created_at", g.created_at.as_ref())?,
            id: g.id,
            student_id: g.student_id,
            title: g.title,
            grade_type,
            score: g.score,
        })
    }
}

impl From<&StudentDetail> for pb::StudentDetail {
    fn from(d: &StudentDetail) -> Self {
        pb::StudentDetail {
            student: Some(pb::Student::from(&d.student)),
            grades: d.grades.iter().map(pb::Grade::from).collect(),
            next_grades_page_token: d.next_grades.clone().unwrap_or_default(),
        }
    }
}

impl From<&GradePage> for pb::ListGradesResponse {
    fn from(page: &GradePage) -> Self {
        pb::ListGradesResponse {
            grades: page.grades.iter().map(pb::Grade::from).collect(),
            next_page_token: page.next.clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::ListGradesResponse> for GradePage {
    type Error = MalformedMessage;

    fn try_from(page: pb::ListGradesResponse) -> Result<Self, MalformedMessage> {
        Ok(GradePage {
            grades: page
                .grades
                .into_iter()
                .map(Grade::try_from)
                .collect::<Result<_, _>>()?,
            next: page_token_from_pb(page.next_page_token),
        })
    }
}

impl TryFrom<pb::StudentDetail> for StudentDetail {
    type Error = MalformedMessage;

    fn try_from(d: pb::StudentDetail) -> Result<Self, MalformedMessage> {
        let student = d
            .student
            .ok_or_else(|| MalformedMessage("student_detail.student: missing".into()))?;
        Ok(StudentDetail {
            student: Student::try_from(student)?,
            grades: d
                .grades
                .into_iter()
                .map(Grade::try_from)
                .collect::<Result<_, _>>()?,
            next_grades: page_token_from_pb(d.next_grades_page_token),
        })
    }
}

impl From<&Change> for pb::GradeEvent {
    fn from(change: &Change) -> Self {
        pb::GradeEvent {
            kind: pb::GradeEventKind::from(change.kind) as i32,
            student: Some(pb::Student::from(&change.student)),
            grade: change.grade.as_ref().map(pb::Grade::from),
        }
    }
}

impl TryFrom<pb::GradeEvent> for Change {
    type Error = MalformedMessage;

    fn try_from(event: pb::GradeEvent) -> Result<Self, MalformedMessage> {
        let kind = match pb::GradeEventKind::try_from(event.kind) {
            Ok(pb::GradeEventKind::StudentCreated) => ChangeKind::StudentCreated,
            Ok(pb::GradeEventKind::StudentUpdated) => ChangeKind::StudentUpdated,
            Ok(pb::GradeEventKind::StudentDeleted) => ChangeKind::StudentDeleted,
            Ok(pb::GradeEventKind::GradeAdded) => ChangeKind::GradeAdded,
            Ok(pb::GradeEventKind::GradeUpdated) => ChangeKind::GradeUpdated,
            Ok(pb::GradeEventKind::GradeDeleted) => ChangeKind::GradeDeleted,
            Ok(pb::GradeEventKind::Unspecified) | Err(_) => {
                return Err(MalformedMessage(format!(
                    "grade_event.kind: unknown value {}",
                    event.kind
                )));
            }
        };
        let student = event
            .student
            .ok_or_else(|| MalformedMessage("grade_event.student: missing".into()))?;
        let grade = event.grade.map(Grade::try_from).transpose()?;
        if kind.is_grade_change() && grade.is_none() {
            return Err(MalformedMessage(format!(
                "grade_event.grade: missing for a {kind} event"
            )));
        }
        Ok(Change {
            kind,
            student: Student::try_from(student)?,
            grade,
        })
    }
}

/// Checks a write's `request_id`: empty means none; otherwise 1 to
/// [`MAX_REQUEST_ID_CHARS`] printable ASCII characters without spaces.
pub fn validate_request_id(request_id: &str) -> Result<Option<String>, InvalidField> {
    if request_id.is_empty() {
        return Ok(None);
    }
    let chars = request_id.chars().count();
    if chars > MAX_REQUEST_ID_CHARS {
        return Err(InvalidField::new(
            "request_id",
            format!("{chars} characters is over the limit of {MAX_REQUEST_ID_CHARS}"),
        ));
    }
    if !request_id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(InvalidField::new(
            "request_id",
            "must be printable ASCII without spaces",
        ));
    }
    Ok(Some(request_id.to_owned()))
}

/// A write's request id with the fingerprint of the request it came with, so
/// that a repeat can be told from a different request reusing the id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// The client's request id (validated by [`validate_request_id`]).
    pub id: String,
    /// The method's name, a zero byte, and the protobuf encoding of the
    /// request with `request_id` cleared.
    pub fingerprint: Vec<u8>,
}

impl RequestKey {
    /// A key from parts (tests and non-gRPC callers).
    pub fn new(id: impl Into<String>, fingerprint: impl Into<Vec<u8>>) -> Self {
        RequestKey {
            id: id.into(),
            fingerprint: fingerprint.into(),
        }
    }
}

/// A write request that may carry a `request_id` for idempotency.
pub trait IdempotentRequest: Message + Clone + Sized {
    /// The gRPC method, part of the fingerprint (so that one id reused for
    /// another method is a different request).
    const METHOD: &'static str;

    /// The request's `request_id` (empty when none).
    fn request_id(&self) -> &str;

    /// Sets the request's `request_id`.
    fn set_request_id(&mut self, request_id: String);

    /// The request with `request_id` set: the builder for the `to_*_request`
    /// helpers, e.g. `grade.to_add_request(&id).with_request_id("abc-1")`.
    fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.set_request_id(request_id.into());
        self
    }

    /// The validated request id with the request's fingerprint, `None`
    /// without a request id; an invalid id is an error about `request_id`.
    fn request_key(&self) -> Result<Option<RequestKey>, InvalidField> {
        let Some(id) = validate_request_id(self.request_id())? else {
            return Ok(None);
        };
        let mut cleared = self.clone();
        cleared.set_request_id(String::new());
        let mut fingerprint = Vec::with_capacity(Self::METHOD.len() + 1 + cleared.encoded_len());
        fingerprint.extend_from_slice(Self::METHOD.as_bytes());
        fingerprint.push(0);
        cleared.encode_raw(&mut fingerprint);
        Ok(Some(RequestKey { id, fingerprint }))
    }
}

macro_rules! idempotent_request {
    ($($message:ident => $method:literal),* $(,)?) => {$(
        impl IdempotentRequest for pb::$message {
            const METHOD: &'static str = $method;

            fn request_id(&self) -> &str {
                &self.request_id
            }

            fn set_request_id(&mut self, request_id: String) {
                self.request_id = request_id;
            }
        }
    )*};
}

idempotent_request! {
    CreateStudentRequest => "CreateStudent",
    UpdateStudentRequest => "UpdateStudent",
    DeleteStudentRequest => "DeleteStudent",
    AddGradeRequest => "AddGrade",
    UpdateGradeRequest => "UpdateGrade",
    DeleteGradeRequest => "DeleteGrade",
}

/// The answer of a write, as kept with its request id so that a repeat gets
/// the same answer: a student, or a grade with its student.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteAnswer {
    /// A student as created, renamed or removed.
    Student(Student),
    /// A grade as added, changed or removed, and its student after.
    Grade(Grade, Student),
}

impl WriteAnswer {
    /// The stored form: a `Student`, or a `StudentDetail` with the one grade.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            WriteAnswer::Student(student) => pb::Student::from(student).encode_to_vec(),
            WriteAnswer::Grade(grade, student) => pb::StudentDetail {
                student: Some(pb::Student::from(student)),
                grades: vec![pb::Grade::from(grade)],
                next_grades_page_token: String::new(),
            }
            .encode_to_vec(),
        }
    }

    /// Reads a stored student answer.
    pub fn decode_student(bytes: &[u8]) -> Result<Student, MalformedMessage> {
        let student = pb::Student::decode(bytes)
            .map_err(|e| MalformedMessage(format!("stored answer: {e}")))?;
        Student::try_from(student)
    }

    /// Reads a stored grade answer.
    pub fn decode_grade(bytes: &[u8]) -> Result<(Grade, Student), MalformedMessage> {
        let detail = pb::StudentDetail::decode(bytes)
            .map_err(|e| MalformedMessage(format!("stored answer: {e}")))?;
        let StudentDetail {
            student, grades, ..
        } = StudentDetail::try_from(detail)?;
        let [grade]: [Grade; 1] = grades
            .try_into()
            .map_err(|_| MalformedMessage("stored answer: not exactly one grade".into()))?;
        Ok((grade, student))
    }
}

impl Change {
    /// The stored form of the change (a `GradeEvent`), for a change feed
    /// shared by several processes.
    pub fn encode(&self) -> Vec<u8> {
        pb::GradeEvent::from(self).encode_to_vec()
    }

    /// Reads a change stored by [`Change::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, MalformedMessage> {
        let event = pb::GradeEvent::decode(bytes)
            .map_err(|e| MalformedMessage(format!("stored change: {e}")))?;
        Change::try_from(event)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn student() -> Student {
        Student {
            id: new_id(),
            first_name: "Zoë".into(),
            last_name: "Ødegaard".into(),
            average: Some(87.25),
            grade_count: 4,
            created_at: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000),
        }
    }

    fn grade(student_id: &str) -> Grade {
        Grade {
            id: new_id(),
            student_id: student_id.into(),
            title: "Fractions quiz".into(),
            grade_type: GradeType::Quiz,
            score: 92.5,
            created_at: UNIX_EPOCH + Duration::new(1_700_000_100, 7_000),
        }
    }

    fn err<T: fmt::Debug>(result: Result<T, InvalidField>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn grade_types_parse_in_any_case_and_round_trip() {
        for t in GradeType::ALL {
            assert_eq!(t.as_str().parse::<GradeType>().unwrap(), t);
            assert_eq!(t.as_str().to_uppercase().parse::<GradeType>().unwrap(), t);
            assert_eq!(t.to_string(), t.as_str());
            assert_eq!(
                GradeType::from_pb(pb::GradeType::from(t) as i32),
                Some(t),
                "{t}"
            );
        }
        assert_eq!(" Exam ".parse::<GradeType>().unwrap(), GradeType::Exam);
        assert_eq!(
            err("essay".parse::<GradeType>()),
            "type: \"essay\" is not one of quiz, test, exam, homework"
        );
        assert_eq!(GradeType::from_pb(0), None);
        assert_eq!(GradeType::from_pb(99), None);
    }

    #[test]
    fn student_names_are_trimmed_and_validated() {
        let s = NewStudent::new("  Ada ", "\tLovelace\n").unwrap();
        assert_eq!(s.first_name, "Ada");
        assert_eq!(s.last_name, "Lovelace");

        assert_eq!(
            err(NewStudent::new("", "X")),
            "first_name: must not be empty"
        );
        assert_eq!(
            err(NewStudent::new("X", "   ")),
            "last_name: must not be empty"
        );
        assert_eq!(
            err(NewStudent::new(&"a".repeat(101), "X")),
            "first_name: 101 characters is over the limit of 100"
        );
        assert_eq!(
            err(NewStudent::new("Ann\u{7}", "X")),
            "first_name: must not contain control characters"
        );
        assert_eq!(
            err(NewStudent::new("Ann\nMarie", "X")),
            "first_name: must not contain control characters"
        );
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        // 100 two-byte characters (200 bytes) fit; 101 do not.
        let hundred = "é".repeat(100);
        assert_eq!(hundred.len(), 200);
        let s = NewStudent::new(&hundred, "Żółć").unwrap();
        assert_eq!(s.first_name.chars().count(), 100);
        assert_eq!(
            err(NewStudent::new("X", &"é".repeat(101))),
            "last_name: 101 characters is over the limit of 100"
        );
        // Four-byte characters too.
        assert!(NewGrade::new(&"📚".repeat(200), GradeType::Test, 1.0).is_ok());
        assert_eq!(
            err(NewGrade::new(&"📚".repeat(201), GradeType::Test, 1.0)),
            "title: 201 characters is over the limit of 200"
        );
    }

    #[test]
    fn grades_are_validated() {
        let g = NewGrade::new(" Unit 3 test ", "TEST", 100.0).unwrap();
        assert_eq!(g.title, "Unit 3 test");
        assert_eq!(g.grade_type, GradeType::Test);
        let kind = String::from("homework");
        assert_eq!(
            NewGrade::new("Essay", &kind, 0.0).unwrap().grade_type,
            GradeType::Homework
        );
        assert_eq!(
            NewGrade::new("Zero", GradeType::Quiz, -0.0)
                .unwrap()
                .score
                .to_bits(),
            0.0f64.to_bits()
        );

        assert_eq!(
            err(NewGrade::new("", GradeType::Quiz, 1.0)),
            "title: must not be empty"
        );
        assert_eq!(
            err(NewGrade::new("T", "essay", 1.0)),
            "type: \"essay\" is not one of quiz, test, exam, homework"
        );
        assert_eq!(
            err(NewGrade::new("T", GradeType::Quiz, 101.0)),
            "score: 101 is out of range (0 to 100)"
        );
        assert_eq!(
            err(NewGrade::new("T", GradeType::Quiz, -0.5)),
            "score: -0.5 is out of range (0 to 100)"
        );
        assert_eq!(
            err(NewGrade::new("T", GradeType::Quiz, f64::NAN)),
            "score: must be a number"
        );
        assert_eq!(
            err(NewGrade::new("T", GradeType::Quiz, f64::INFINITY)),
            "score: inf is out of range (0 to 100)"
        );
        assert_eq!(
            err(NewGrade::new("a\u{0}b", GradeType::Quiz, 1.0)),
            "title: must not contain control characters"
        );
    }

    #[test]
    fn scores_parse() {
        assert_eq!(parse_score(" 87.5 ").unwrap(), 87.5);
        assert_eq!(err(parse_score("")), "score: must not be empty");
        assert_eq!(err(parse_score("abc")), "score: \"abc\" is not a number");
        assert_eq!(err(parse_score("NaN")), "score: must be a number");
        assert_eq!(
            err(parse_score("100.5")),
            "score: 100.5 is out of range (0 to 100)"
        );
        assert_eq!(parse_score("89.15").unwrap(), 89.15);
        assert_eq!(parse_score("-0").unwrap().to_bits(), 0.0f64.to_bits());
        assert_eq!(
            err(parse_score("85.125")),
            "score: 85.125 has more than two decimals: give it to the hundredth, like 89.25"
        );
    }

    #[test]
    fn ids() {
        let id = new_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id, id.to_lowercase());
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        assert!(validate_id("id", &id).is_ok());
        assert_eq!(
            canonical_id("id", &id.to_uppercase()).unwrap(),
            id,
            "upper case is accepted and canonicalized"
        );
        assert_eq!(
            err(validate_id("id", "xyz")),
            "id: \"xyz\" is not a valid id"
        );
        assert_eq!(
            err(validate_id("student_id", "")),
            "student_id: must not be empty"
        );
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size_from_pb(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size_from_pb(1).unwrap(), 1);
        assert_eq!(page_size_from_pb(500).unwrap(), 500);
        assert_eq!(
            err(page_size_from_pb(501)),
            "page_size: 501 is over the limit of 500"
        );
    }

    #[test]
    fn averages() {
        assert_eq!(average(&[]), None);
        assert_eq!(average(&[90.0, 80.0, 75.5]), Some(245.5 / 3.0));
    }

    #[test]
    fn request_ids_are_validated_and_fingerprinted() {
        assert_eq!(validate_request_id("").unwrap(), None);
        assert_eq!(
            validate_request_id("abc-1_X.~").unwrap().as_deref(),
            Some("abc-1_X.~")
        );
        assert!(validate_request_id(&"a".repeat(MAX_REQUEST_ID_CHARS)).is_ok());
        for bad in [
            "a b",
            "é",
            "tab\there",
            &"a".repeat(MAX_REQUEST_ID_CHARS + 1),
        ] {
            let e = validate_request_id(bad).unwrap_err();
            assert_eq!(e.field, "request_id", "{bad:?}");
        }

        let grade = NewGrade::new("Lab", GradeType::Quiz, 50.0).unwrap();
        let student_id = new_id();
        let plain = grade.to_add_request(&student_id);
        assert_eq!(plain.request_key().unwrap(), None);
        let with_id = plain.clone().with_request_id("r-1");
        assert_eq!(with_id.request_id, "r-1");
        let key = with_id.request_key().unwrap().unwrap();
        assert_eq!(key.id, "r-1");
        assert!(key.fingerprint.starts_with(b"AddGrade\0"));
        // The id is not part of the fingerprint; the body is.
        let other_id = plain.clone().with_request_id("r-2").request_key().unwrap();
        assert_eq!(other_id.unwrap().fingerprint, key.fingerprint);
        let other_body = NewGrade::new("Lab", GradeType::Quiz, 51.0)
            .unwrap()
            .to_add_request(&student_id)
            .with_request_id("r-1");
        assert_ne!(
            other_body.request_key().unwrap().unwrap().fingerprint,
            key.fingerprint
        );
        assert_eq!(
            err(plain.with_request_id("no spaces").request_key()),
            "request_id: must be printable ASCII without spaces"
        );
    }

    #[test]
    fn answers_and_changes_round_trip_as_bytes() {
        let s = student();
        let g = grade(&s.id);
        let bytes = WriteAnswer::Student(s.clone()).encode();
        assert_eq!(WriteAnswer::decode_student(&bytes).unwrap(), s);
        let bytes = WriteAnswer::Grade(g.clone(), s.clone()).encode();
        assert_eq!(
            WriteAnswer::decode_grade(&bytes).unwrap(),
            (g.clone(), s.clone())
        );
        assert!(WriteAnswer::decode_grade(&[0xff]).is_err());
        let change = Change {
            kind: ChangeKind::GradeAdded,
            student: s,
            grade: Some(g),
        };
        assert_eq!(Change::decode(&change.encode()).unwrap(), change);
    }

    #[test]
    fn requests_convert() {
        let new = NewStudent::new(" Grace ", "Hopper").unwrap();
        let req = pb::CreateStudentRequest::from(&new);
        assert_eq!(NewStudent::try_from(&req).unwrap(), new);
        assert_eq!(
            err(NewStudent::try_from(&pb::CreateStudentRequest {
                first_name: "A".into(),
                last_name: String::new(),
                request_id: String::new(),
            })),
            "last_name: must not be empty"
        );

        let grade = NewGrade::new("Lab report", GradeType::Homework, 88.0).unwrap();
        let student_id = new_id();
        let add = grade.to_add_request(&student_id);
        assert_eq!(NewGrade::try_from(&add).unwrap(), grade);
        for bad_type in [0, 9] {
            let req = pb::AddGradeRequest {
                r#type: bad_type,
                ..add.clone()
            };
            assert_eq!(
                err(NewGrade::try_from(&req)),
                "type: must be one of quiz, test, exam, homework"
            );
        }

        let grade_id = new_id();
        let update =
            GradeUpdate::try_from(&grade.to_update_request(&student_id, &grade_id)).unwrap();
        assert_eq!(update.student_id, student_id);
        assert_eq!(update.grade_id, grade_id);
        assert_eq!(update.grade, grade);
        assert_eq!(
            err(GradeUpdate::try_from(
                &grade.to_update_request(&student_id, "nope")
            )),
            "grade_id: \"nope\" is not a valid id"
        );

        let rename = StudentUpdate::try_from(&new.to_update_request(&student_id)).unwrap();
        assert_eq!(rename.id, student_id);
        assert_eq!(rename.student, new);
        assert_eq!(
            err(StudentUpdate::try_from(&new.to_update_request("x"))),
            "id: \"x\" is not a valid id"
        );
    }

    #[test]
    fn messages_round_trip() {
        let s = student();
        assert_eq!(Student::try_from(pb::Student::from(&s)).unwrap(), s);
        let no_grades = Student {
            average: None,
            grade_count: 0,
            ..student()
        };
        assert_eq!(
            Student::try_from(pb::Student::from(&no_grades)).unwrap(),
            no_grades
        );

        let g = grade(&s.id);
        assert_eq!(Grade::try_from(pb::Grade::from(&g)).unwrap(), g);

        let detail = StudentDetail {
            grades: vec![
                g.clone(),
                Grade {
                    grade_type: GradeType::Exam,
                    ..grade(&s.id)
                },
            ],
            student: s.clone(),
            next_grades: Some("7631".into()),
        };
        assert_eq!(
            StudentDetail::try_from(pb::StudentDetail::from(&detail)).unwrap(),
            detail
        );

        for kind in [ChangeKind::StudentCreated, ChangeKind::GradeDeleted] {
            let change = Change {
                kind,
                student: s.clone(),
                grade: kind.is_grade_change().then(|| g.clone()),
            };
            assert_eq!(
                Change::try_from(pb::GradeEvent::from(&change)).unwrap(),
                change
            );
        }
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let s = student();
        let mut msg = pb::Student::from(&s);
        msg.created_at = None;
        assert_eq!(
            Student::try_from(msg).unwrap_err().to_string(),
            "malformed grading message: student.created_at: missing"
        );
        let mut msg = pb::Grade::from(&grade(&s.id));
        msg.r#type = 0;
        assert!(
            Grade::try_from(msg)
                .unwrap_err()
                .0
                .contains("grade.type: unknown value 0")
        );
        assert!(StudentDetail::try_from(pb::StudentDetail::default()).is_err());
        let event = pb::GradeEvent {
            kind: pb::GradeEventKind::GradeAdded as i32,
            student: Some(pb::Student::from(&s)),
            grade: None,
        };
        assert!(Change::try_from(event).unwrap_err().0.contains("missing"));
        let event = pb::GradeEvent {
            kind: 0,
            student: Some(pb::Student::from(&s)),
            grade: None,
        };
        assert!(Change::try_from(event).is_err());
    }
}
