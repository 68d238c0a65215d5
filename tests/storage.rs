//! The grading store's one test suite, run against both engines: each test
//! is written once, as a function of a fresh [`Database`] (a factory of
//! stores on one database), and instantiated for SQLite and for a
//! throwaway PostgreSQL (skipped with a message when PostgreSQL is not
//! installed, outside CI).

mod support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gradebook::grading::schema::SchemaError;
use gradebook::grading::store::{
    GradeCursor, GradeStore, GradeToAdd, PostgresStore, REQUEST_RETENTION, RequestKey, SqliteStore,
    StoreError, StudentCursor, postgres, sqlite,
};
use gradebook::model::grading::{
    Change, ChangeKind, Grade, GradeType, MAX_GRADE_PAGE_SIZE, NewGrade, NewStudent, Student,
    average, new_id,
};

/// A page size that holds every grade of a student.
const ALL: usize = MAX_GRADE_PAGE_SIZE;

/// How long a change may take to reach a subscriber.
const FEED_PATIENCE: Duration = Duration::from_secs(15);

/// The engines.
#[derive(Debug, Clone, Copy)]
enum Engine {
    Sqlite,
    Postgres,
}

/// A fresh, empty database of one engine; opens stores on it.
enum Database {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        url: String,
    },
}

impl Database {
    /// A fresh database, or `None` when the engine is not installed.
    async fn fresh(engine: Engine) -> Option<Database> {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("grading.db");
                Some(Database::Sqlite { _dir: dir, path })
            }
            Engine::Postgres => {
                let server = support::postgres::server()?;
                Some(Database::Postgres {
                    url: server.database().await,
                })
            }
        }
    }

    async fn try_open(&self) -> Result<Arc<dyn GradeStore>, StoreError> {
        Ok(match self {
            Database::Sqlite { path, .. } => Arc::new(SqliteStore::open(path).await?),
            Database::Postgres { url } => Arc::new(PostgresStore::open(url).await?),
        })
    }

    async fn open(&self) -> Arc<dyn GradeStore> {
        self.try_open().await.unwrap()
    }

    /// The one number `sql` answers, read on a separate connection.
    async fn number(&self, sql: &str) -> i64 {
        match self {
            Database::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(sql, [], |row| row.get(0))
                .unwrap(),
            Database::Postgres { url } => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let driver = tokio::spawn(connection);
                let n: i64 = client.query_one(sql, &[]).await.unwrap().get(0);
                drop(client);
                let _ = driver.await;
                n
            }
        }
    }

    async fn rows(&self, table: &str) -> i64 {
        self.number(&format!("SELECT COUNT(*) FROM {table}")).await
    }

    async fn schema_version(&self) -> i64 {
        match self {
            Database::Sqlite { .. } => self.number("PRAGMA user_version").await,
            Database::Postgres { .. } => {
                self.number("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                    .await
            }
        }
    }

    fn supported_version(&self) -> i64 {
        match self {
            Database::Sqlite { .. } => sqlite::SCHEMA_VERSION,
            Database::Postgres { .. } => postgres::SCHEMA_VERSION,
        }
    }

    async fn set_schema_version(&self, version: i64) {
        match self {
            Database::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .pragma_update(None, "user_version", version)
                .unwrap(),
            Database::Postgres { url } => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let driver = tokio::spawn(connection);
                client
                    .execute(
                        "INSERT INTO schema_version (version) VALUES ($1)",
                        &[&version],
                    )
                    .await
                    .unwrap();
                drop(client);
                let _ = driver.await;
            }
        }
    }
}

/// Instantiates each test function for both engines.
macro_rules! on_both_engines {
    ($($test:ident),* $(,)?) => {
        mod sqlite_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(db) = super::Database::fresh(super::Engine::Sqlite).await {
                        super::$test(db).await;
                    }
                }
            )*
        }
        mod postgres_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(db) = super::Database::fresh(super::Engine::Postgres).await {
                        super::$test(db).await;
                    }
                }
            )*
        }
    };
}

on_both_engines!(
    students_crud,
    not_found_and_invalid_ids,
    grades_and_averages,
    deleting_a_student_deletes_its_grades,
    add_grades_commits_a_batch_with_per_item_results,
    a_student_holds_at_most_the_grade_limit,
    a_students_grades_are_paged_in_the_order_added,
    grades_are_listed_in_the_order_added,
    paging_through_250_students,
    no_next_page_when_the_last_page_is_full,
    listing_includes_averages,
    demo_data_is_seeded_once,
    migrations_are_idempotent_and_data_survives_reopen,
    a_newer_schema_is_refused,
    stores_opening_together_migrate_once,
    a_repeated_request_id_returns_the_first_answer_and_writes_once,
    a_request_id_reused_for_another_request_is_a_conflict,
    a_failed_write_does_not_keep_its_request_id,
    concurrent_duplicates_from_two_stores_write_once,
    old_request_ids_are_pruned,
    the_change_feed_carries_every_write_in_order,
);

/// Only PostgreSQL shares one change feed between stores (processes).
mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_through_one_store_reach_subscribers_of_another() {
        if let Some(db) = super::Database::fresh(super::Engine::Postgres).await {
            super::changes_cross_stores(db).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stores_and_the_feed_recover_from_lost_connections() {
        if let Some(db) = super::Database::fresh(super::Engine::Postgres).await {
            super::recovers_from_lost_connections(db).await;
        }
    }
}

fn student(first: &str, last: &str) -> NewStudent {
    NewStudent::new(first, last).unwrap()
}

fn grade(title: &str, grade_type: GradeType, score: f64) -> NewGrade {
    NewGrade::new(title, grade_type, score).unwrap()
}

fn item(student_id: &str, new: NewGrade) -> GradeToAdd {
    GradeToAdd {
        student_id: student_id.to_owned(),
        grade: new,
        request: None,
    }
}

fn key(id: &str, body: &str) -> Option<RequestKey> {
    Some(RequestKey::new(id, body.as_bytes()))
}

async fn add_one(store: &dyn GradeStore, student_id: &str, new: NewGrade) -> (Grade, Student) {
    store
        .add_grades(vec![item(student_id, new)])
        .await
        .pop()
        .unwrap()
        .unwrap()
}

async fn students_crud(db: Database) {
    let store = db.open().await;
    assert!(store.is_empty().await.unwrap());
    let created = store
        .create_student(&student(" Zoë ", "Ødegaard"), None)
        .await
        .unwrap();
    assert_eq!(created.first_name, "Zoë");
    assert_eq!(created.average, None);
    assert_eq!(created.grade_count, 0);
    assert!(created.created_at <= SystemTime::now());
    assert!(!store.is_empty().await.unwrap());

    let detail = store.get_student(&created.id, ALL).await.unwrap();
    assert_eq!(detail.student, created);
    assert!(detail.grades.is_empty());
    // Any UUID spelling finds it.
    let upper = created.id.to_uppercase();
    assert_eq!(
        store.get_student(&upper, ALL).await.unwrap().student,
        created
    );

    let renamed = store
        .update_student(&created.id, &student("Zoe", "Odegaard"), None)
        .await
        .unwrap();
    assert_eq!(renamed.first_name, "Zoe");
    assert_eq!(renamed.last_name, "Odegaard");
    assert_eq!(renamed.created_at, created.created_at);
    assert_eq!(
        store.get_student(&created.id, ALL).await.unwrap().student,
        renamed
    );

    let deleted = store.delete_student(&created.id, None).await.unwrap();
    assert_eq!(deleted, renamed);
    assert!(store.is_empty().await.unwrap());
}

async fn not_found_and_invalid_ids(db: Database) {
    let store = db.open().await;
    let missing = new_id();
    let not_found = StoreError::student_not_found(&missing);
    assert_eq!(
        store.get_student(&missing, ALL).await.unwrap_err(),
        not_found
    );
    assert_eq!(
        store
            .update_student(&missing, &student("A", "B"), None)
            .await
            .unwrap_err(),
        not_found
    );
    assert_eq!(
        store.delete_student(&missing, None).await.unwrap_err(),
        not_found
    );
    assert_eq!(
        not_found.to_string(),
        format!("student \"{missing}\" not found")
    );
    let g = grade("Quiz", GradeType::Quiz, 50.0);
    assert_eq!(
        store
            .update_grade(&missing, &new_id(), &g, None)
            .await
            .unwrap_err(),
        not_found
    );
    assert_eq!(
        store
            .delete_grade(&missing, &new_id(), None)
            .await
            .unwrap_err(),
        not_found
    );

    let s = store
        .create_student(&student("A", "B"), None)
        .await
        .unwrap();
    let other = store
        .create_student(&student("C", "D"), None)
        .await
        .unwrap();
    let (g_other, _) = add_one(store.as_ref(), &other.id, g.clone()).await;
    let missing_grade = new_id();
    assert_eq!(
        store
            .update_grade(&s.id, &missing_grade, &g, None)
            .await
            .unwrap_err(),
        StoreError::grade_not_found(&missing_grade)
    );
    // A grade of another student is not found under this one.
    assert_eq!(
        store
            .delete_grade(&s.id, &g_other.id, None)
            .await
            .unwrap_err(),
        StoreError::grade_not_found(&g_other.id)
    );
    assert_eq!(
        store
            .get_student(&other.id, ALL)
            .await
            .unwrap()
            .grades
            .len(),
        1
    );

    let err = store.get_student("xyz", ALL).await.unwrap_err();
    assert_eq!(err.to_string(), "id: \"xyz\" is not a valid id");
    assert!(matches!(err, StoreError::Invalid(_)));
    assert_eq!(
        store
            .delete_grade(&s.id, "nope", None)
            .await
            .unwrap_err()
            .to_string(),
        "grade_id: \"nope\" is not a valid id"
    );
}

async fn grades_and_averages(db: Database) {
    let store = db.open().await;
    let store = store.as_ref();
    let s = store
        .create_student(&student("Grace", "Hopper"), None)
        .await
        .unwrap();
    let (g1, after1) = add_one(store, &s.id, grade("Quiz 1", GradeType::Quiz, 90.0)).await;
    assert_eq!(after1.average, Some(90.0));
    assert_eq!(after1.grade_count, 1);
    let (g2, after2) = add_one(store, &s.id, grade("Test 1", GradeType::Test, 75.5)).await;
    assert_eq!(after2.average, Some(82.75));
    let (g3, after3) = add_one(store, &s.id, grade("Homework 1", GradeType::Homework, 70.0)).await;
    assert_eq!(after3.average, average(&[90.0, 75.5, 70.0]));
    assert_eq!(after3.grade_count, 3);

    let detail = store.get_student(&s.id, ALL).await.unwrap();
    assert_eq!(detail.grades, vec![g1.clone(), g2.clone(), g3.clone()]);
    assert_eq!(detail.student, after3);

    let (changed, after) = store
        .update_grade(
            &s.id,
            &g2.id,
            &grade("Final exam", GradeType::Exam, 100.0),
            None,
        )
        .await
        .unwrap();
    assert_eq!(changed.id, g2.id);
    assert_eq!(changed.created_at, g2.created_at);
    assert_eq!(changed.title, "Final exam");
    assert_eq!(changed.grade_type, GradeType::Exam);
    assert_eq!(after.average, average(&[90.0, 100.0, 70.0]));
    assert_eq!(
        store.get_student(&s.id, ALL).await.unwrap().grades[1],
        changed
    );

    let (removed, after) = store.delete_grade(&s.id, &g1.id, None).await.unwrap();
    assert_eq!(removed, g1);
    assert_eq!(after.average, Some(85.0));
    assert_eq!(after.grade_count, 2);

    store.delete_grade(&s.id, &g2.id, None).await.unwrap();
    let (_, after) = store.delete_grade(&s.id, &g3.id, None).await.unwrap();
    assert_eq!(after.average, None);
    assert_eq!(after.grade_count, 0);
}

async fn deleting_a_student_deletes_its_grades(db: Database) {
    let store = db.open().await;
    let store = store.as_ref();
    let s = store
        .create_student(&student("Alan", "Turing"), None)
        .await
        .unwrap();
    let keep = store
        .create_student(&student("Kept", "Student"), None)
        .await
        .unwrap();
    add_one(store, &s.id, grade("Quiz", GradeType::Quiz, 80.0)).await;
    let (g, _) = add_one(store, &s.id, grade("Exam", GradeType::Exam, 60.0)).await;
    add_one(store, &keep.id, grade("Quiz", GradeType::Quiz, 50.0)).await;
    assert_eq!(db.rows("grades").await, 3);

    let deleted = store.delete_student(&s.id, None).await.unwrap();
    assert_eq!(deleted.grade_count, 2, "as it was");
    assert_eq!(deleted.average, Some(70.0));
    assert_eq!(db.rows("grades").await, 1);
    assert_eq!(
        store.delete_grade(&s.id, &g.id, None).await.unwrap_err(),
        StoreError::student_not_found(&s.id)
    );
    assert_eq!(
        store.get_student(&keep.id, ALL).await.unwrap().grades.len(),
        1
    );
}

async fn a_student_holds_at_most_the_grade_limit(db: Database) {
    use gradebook::model::grading::MAX_GRADES_PER_STUDENT;
    let store = db.open().await;
    let full = store
        .create_student(&student("Full", "Up"), None)
        .await
        .unwrap();
    let limit = MAX_GRADES_PER_STUDENT as usize;
    // One batch up to the limit and two past it: the ones past are refused
    // by name, the rest stored.
    let batch: Vec<_> = (0..limit + 2)
        .map(|i| item(&full.id, grade(&format!("G{i}"), GradeType::Quiz, 50.0)))
        .collect();
    let results = store.add_grades(batch).await;
    assert!(results[..limit].iter().all(Result::is_ok));
    for refused in &results[limit..] {
        let error = refused.clone().unwrap_err();
        assert_eq!(
            error,
            StoreError::TooManyGrades {
                student_id: full.id.clone()
            }
        );
        assert!(error.to_string().contains("delete some"), "{error}");
    }
    let detail = store.get_student(&full.id, ALL).await.unwrap();
    assert_eq!(detail.student.grade_count as usize, limit);
    assert_eq!(detail.grades.len(), limit);
    // Room again after a deletion.
    store
        .delete_grade(&full.id, &detail.grades[0].id, None)
        .await
        .unwrap();
    let again = store
        .add_grades(vec![item(&full.id, grade("Again", GradeType::Quiz, 60.0))])
        .await;
    assert!(again[0].is_ok());
}

async fn a_students_grades_are_paged_in_the_order_added(db: Database) {
    let store = db.open().await;
    let s = store
        .create_student(&student("Many", "Grades"), None)
        .await
        .unwrap();
    let batch: Vec<_> = (0..25)
        .map(|i| item(&s.id, grade(&format!("G{i}"), GradeType::Quiz, 50.0)))
        .collect();
    assert!(store.add_grades(batch).await.iter().all(Result::is_ok));
    let every = store.get_student(&s.id, ALL).await.unwrap();
    assert_eq!(every.grades.len(), 25);
    assert_eq!(every.next_grades, None, "one page holds them all");

    // The first page comes with the student; the rest a page at a time,
    // the last one without a token.
    let first = store.get_student(&s.id, 10).await.unwrap();
    assert_eq!(first.student, every.student, "the average of every grade");
    let mut paged = first.grades;
    let mut token = first.next_grades;
    let mut pages = 1;
    while let Some(next) = token {
        let cursor = GradeCursor::decode(&next).expect("a token of ours");
        let page = store.list_grades(&s.id, 10, Some(&cursor)).await.unwrap();
        assert!(!page.grades.is_empty() && page.grades.len() <= 10);
        paged.extend(page.grades);
        token = page.next;
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, every.grades, "every grade once, oldest first");

    // A full last page has no next page.
    let two = store.list_grades(&s.id, 5, None).await.unwrap();
    let cursor = GradeCursor::decode(two.next.as_deref().unwrap()).unwrap();
    let last = store.list_grades(&s.id, 20, Some(&cursor)).await.unwrap();
    assert_eq!(last.grades.len(), 20);
    assert_eq!(last.next, None);

    let missing = new_id();
    assert_eq!(
        store.list_grades(&missing, 10, None).await.unwrap_err(),
        StoreError::student_not_found(&missing)
    );
    assert_eq!(
        store
            .list_grades("nope", 10, None)
            .await
            .unwrap_err()
            .to_string(),
        "student_id: \"nope\" is not a valid id"
    );
}

async fn add_grades_commits_a_batch_with_per_item_results(db: Database) {
    let store = db.open().await;
    let a = store
        .create_student(&student("Ann", "A"), None)
        .await
        .unwrap();
    let b = store
        .create_student(&student("Bob", "B"), None)
        .await
        .unwrap();
    let unknown = new_id();
    let batch = vec![
        item(&a.id, grade("One", GradeType::Quiz, 80.0)),
        item(&unknown, grade("Lost", GradeType::Test, 10.0)),
        item(&a.id, grade("Two", GradeType::Test, 90.0)),
        item("bad", grade("Bad", GradeType::Exam, 20.0)),
        item(&b.id, grade("Three", GradeType::Homework, 70.0)),
    ];
    let results = store.add_grades(batch).await;
    assert_eq!(results.len(), 5);

    let (g1, s1) = results[0].clone().unwrap();
    assert_eq!(g1.title, "One");
    assert_eq!(s1.average, Some(80.0));
    assert_eq!(
        results[1].clone().unwrap_err(),
        StoreError::student_not_found(&unknown)
    );
    let (g2, s2) = results[2].clone().unwrap();
    assert_eq!(s2.average, Some(85.0), "sees the batch's earlier grade");
    assert_eq!(s2.grade_count, 2);
    assert_eq!(
        results[3].clone().unwrap_err().to_string(),
        "student_id: \"bad\" is not a valid id"
    );
    let (g3, s3) = results[4].clone().unwrap();
    assert_eq!(s3.id, b.id);
    assert_eq!(s3.average, Some(70.0));

    assert_eq!(db.rows("grades").await, 3);
    assert_eq!(
        store.get_student(&a.id, ALL).await.unwrap().grades,
        vec![g1, g2]
    );
    assert_eq!(
        store.get_student(&b.id, ALL).await.unwrap().grades,
        vec![g3]
    );
    assert!(store.add_grades(Vec::new()).await.is_empty());
}

async fn grades_are_listed_in_the_order_added(db: Database) {
    let store = db.open().await;
    let s = store
        .create_student(&student("Order", "Test"), None)
        .await
        .unwrap();
    let batch: Vec<_> = (0..20)
        .map(|i| item(&s.id, grade(&format!("G{i}"), GradeType::Quiz, 50.0)))
        .collect();
    let results = store.add_grades(batch).await;
    assert!(results.iter().all(Result::is_ok));
    let titles: Vec<_> = store
        .get_student(&s.id, ALL)
        .await
        .unwrap()
        .grades
        .into_iter()
        .map(|g| g.title)
        .collect();
    let expected: Vec<_> = (0..20).map(|i| format!("G{i}")).collect();
    assert_eq!(titles, expected);
}

async fn paging_through_250_students(db: Database) {
    let store = db.open().await;
    // Mixed case and repeated names, so order depends on case folding and ids.
    let lasts = [
        "smith",
        "Smith",
        "de Vries",
        "Dawson",
        "ABBOTT",
        "zhang",
        "Young",
        "Ødegaard",
    ];
    let firsts = ["amy", "Ben", "carl", "Dana"];
    for i in 0..250 {
        let last = lasts[i % lasts.len()];
        let first = firsts[(i / lasts.len()) % firsts.len()];
        store
            .create_student(&student(first, last), None)
            .await
            .unwrap();
    }

    let mut all = Vec::new();
    let mut sizes = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let cursor = token.as_deref().map(|t| StudentCursor::decode(t).unwrap());
        let (page, next) = store.list_students(100, cursor.as_ref()).await.unwrap();
        sizes.push(page.len());
        all.extend(page);
        match next {
            Some(next) => token = Some(next.encode()),
            None => break,
        }
    }
    assert_eq!(sizes, vec![100, 100, 50]);
    let ids: HashSet<_> = all.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids.len(), 250, "no duplicates");
    let key = |s: &Student| {
        (
            s.last_name.to_ascii_lowercase(),
            s.first_name.to_ascii_lowercase(),
            s.id.clone(),
        )
    };
    assert!(
        all.windows(2).all(|w| key(&w[0]) < key(&w[1])),
        "ordered by last name, first name, id ignoring ASCII case"
    );
    assert_eq!(all[0].last_name, "ABBOTT");
    assert_eq!(all[249].last_name, "Ødegaard", "non-ASCII sorts by bytes");
}

async fn no_next_page_when_the_last_page_is_full(db: Database) {
    let store = db.open().await;
    let (page, next) = store.list_students(10, None).await.unwrap();
    assert!(page.is_empty() && next.is_none());
    for i in 0..4 {
        store
            .create_student(&student(&format!("F{i}"), "L"), None)
            .await
            .unwrap();
    }
    let (page, next) = store.list_students(2, None).await.unwrap();
    assert_eq!(page.len(), 2);
    let (page, next) = store.list_students(2, next.as_ref()).await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(next, None);
    let (page, _) = store.list_students(0, None).await.unwrap();
    assert_eq!(page.len(), 1, "0 counts as 1");
}

async fn listing_includes_averages(db: Database) {
    let store = db.open().await;
    let s = store
        .create_student(&student("Avg", "Test"), None)
        .await
        .unwrap();
    add_one(store.as_ref(), &s.id, grade("A", GradeType::Quiz, 100.0)).await;
    add_one(store.as_ref(), &s.id, grade("B", GradeType::Quiz, 50.0)).await;
    store
        .create_student(&student("No", "Grades"), None)
        .await
        .unwrap();
    let (page, _) = store.list_students(10, None).await.unwrap();
    assert_eq!(page[0].last_name, "Grades");
    assert_eq!(page[0].average, None);
    assert_eq!(page[1].average, Some(75.0));
    assert_eq!(page[1].grade_count, 2);
}

async fn demo_data_is_seeded_once(db: Database) {
    let store = db.open().await;
    assert!(store.is_empty().await.unwrap());
    assert_eq!(store.seed_demo_data().await.unwrap(), 6);
    assert!(!store.is_empty().await.unwrap());
    assert_eq!(store.seed_demo_data().await.unwrap(), 0);
    drop(store);
    let store = db.open().await;
    assert_eq!(store.seed_demo_data().await.unwrap(), 0);

    let (students, next) = store.list_students(100, None).await.unwrap();
    assert_eq!(students.len(), 6);
    assert!(next.is_none());
    let mut types = HashSet::new();
    for s in &students {
        let detail = store.get_student(&s.id, ALL).await.unwrap();
        assert!((3..=5).contains(&detail.grades.len()), "{s:?}");
        let scores: Vec<f64> = detail.grades.iter().map(|g| g.score).collect();
        let expected = average(&scores).unwrap();
        assert!((s.average.unwrap() - expected).abs() < 1e-9);
        assert!(
            detail
                .grades
                .windows(2)
                .all(|w| w[0].created_at < w[1].created_at)
        );
        types.extend(detail.grades.iter().map(|g| g.grade_type));
    }
    assert_eq!(types.len(), 4, "every type appears");
}

async fn migrations_are_idempotent_and_data_survives_reopen(db: Database) {
    let store = db.open().await;
    assert_eq!(db.schema_version().await, db.supported_version());
    let s = store
        .create_student(&student("Ada", "Lovelace"), None)
        .await
        .unwrap();
    let (g, _) = add_one(
        store.as_ref(),
        &s.id,
        grade("Engines quiz", GradeType::Quiz, 97.5),
    )
    .await;
    let before = store.get_student(&s.id, ALL).await.unwrap();
    drop(store);
    for _ in 0..2 {
        let store = db.open().await;
        assert_eq!(db.schema_version().await, db.supported_version());
        let after = store.get_student(&s.id, ALL).await.unwrap();
        assert_eq!(after, before);
        assert_eq!(after.grades, vec![g.clone()]);
        assert!(!store.is_empty().await.unwrap());
    }
}

async fn a_newer_schema_is_refused(db: Database) {
    drop(db.open().await);
    db.set_schema_version(99).await;
    let Err(err) = db.try_open().await else {
        panic!("a database with a newer schema opened");
    };
    let supported = db.supported_version();
    assert_eq!(
        err,
        StoreError::Schema(SchemaError::TooNew {
            found: 99,
            compatible_from: 99,
            supported
        })
    );
    let message = err.to_string();
    assert!(
        message.contains("version 99")
            && message.contains(&format!("version {supported}"))
            && message.contains("run a newer gradebook"),
        "{message}"
    );
    assert_eq!(db.schema_version().await, 99, "left untouched");
}

async fn stores_opening_together_migrate_once(db: Database) {
    let opens: Vec<_> = (0..4).map(|_| db.try_open()).collect();
    let stores: Vec<_> = futures::future::join_all(opens)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(db.schema_version().await, db.supported_version());
    if let Database::Postgres { .. } = db {
        assert_eq!(
            db.rows("schema_version").await,
            db.supported_version(),
            "each migration recorded once"
        );
    }
    // Every store works on the one schema.
    let s = stores[0]
        .create_student(&student("One", "Schema"), None)
        .await
        .unwrap();
    for store in &stores {
        assert_eq!(store.get_student(&s.id, ALL).await.unwrap().student, s);
    }
}

async fn a_repeated_request_id_returns_the_first_answer_and_writes_once(db: Database) {
    let store = db.open().await;
    // Subscribed before the first write: a store's feed may still deliver
    // changes committed just before a subscription.
    let mut feed = store.subscribe();
    let new = student("Idem", "Potent");
    let first = store
        .create_student(&new, key("create-1", "create"))
        .await
        .unwrap();
    let again = store
        .create_student(&new, key("create-1", "create"))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(db.rows("students").await, 1);

    let add = |id: &str| GradeToAdd {
        student_id: first.id.clone(),
        grade: grade("Quiz", GradeType::Quiz, 70.0),
        request: key(id, "add"),
    };
    // Twice in one batch, then once more on its own.
    let results = store.add_grades(vec![add("add-1"), add("add-1")]).await;
    let (g1, s1) = results[0].clone().unwrap();
    assert_eq!(results[1].clone().unwrap(), (g1.clone(), s1.clone()));
    let repeat = store.add_grades(vec![add("add-1")]).await.pop().unwrap();
    assert_eq!(repeat.unwrap(), (g1.clone(), s1.clone()));
    assert_eq!(db.rows("grades").await, 1);

    let update = grade("Quiz", GradeType::Test, 75.0);
    let u1 = store
        .update_grade(&first.id, &g1.id, &update, key("update-1", "update"))
        .await
        .unwrap();
    let u2 = store
        .update_grade(&first.id, &g1.id, &update, key("update-1", "update"))
        .await
        .unwrap();
    assert_eq!(u1, u2);

    let d1 = store
        .delete_grade(&first.id, &g1.id, key("delete-1", "delete"))
        .await
        .unwrap();
    // The grade is gone, but the repeat gets the first answer all the same.
    let d2 = store
        .delete_grade(&first.id, &g1.id, key("delete-1", "delete"))
        .await
        .unwrap();
    assert_eq!(d1, d2);
    assert_eq!(db.rows("grades").await, 0);
    assert_eq!(db.rows("requests").await, 4);

    // One change per write, none for the repeats.
    let kinds = next_changes(&mut feed, 4).await;
    assert_eq!(
        kinds.iter().map(|c| c.kind).collect::<Vec<_>>(),
        vec![
            ChangeKind::StudentCreated,
            ChangeKind::GradeAdded,
            ChangeKind::GradeUpdated,
            ChangeKind::GradeDeleted
        ]
    );
    let marker = store
        .create_student(&student("Marker", "Last"), None)
        .await
        .unwrap();
    let last = next_changes(&mut feed, 1).await;
    assert_eq!(last[0].student.id, marker.id, "no change for the repeats");
}

async fn a_request_id_reused_for_another_request_is_a_conflict(db: Database) {
    let store = db.open().await;
    let s = store
        .create_student(&student("First", "Body"), key("shared-id", "body-1"))
        .await
        .unwrap();
    let conflict = StoreError::RequestConflict {
        request_id: "shared-id".into(),
    };
    assert_eq!(
        store
            .create_student(&student("Other", "Body"), key("shared-id", "body-2"))
            .await
            .unwrap_err(),
        conflict
    );
    assert!(conflict.to_string().contains("shared-id"));
    let results = store
        .add_grades(vec![GradeToAdd {
            student_id: s.id.clone(),
            grade: grade("Q", GradeType::Quiz, 1.0),
            request: key("shared-id", "body-3"),
        }])
        .await;
    assert_eq!(results[0].clone().unwrap_err(), conflict);
    assert_eq!(db.rows("students").await, 1);
    assert_eq!(db.rows("grades").await, 0);
}

async fn a_failed_write_does_not_keep_its_request_id(db: Database) {
    let store = db.open().await;
    let missing = new_id();
    let err = store
        .update_student(&missing, &student("A", "B"), key("failing", "rename"))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::student_not_found(&missing));
    let results = store
        .add_grades(vec![GradeToAdd {
            student_id: missing.clone(),
            grade: grade("Q", GradeType::Quiz, 1.0),
            request: key("failing-add", "add"),
        }])
        .await;
    assert!(results[0].is_err());
    assert_eq!(db.rows("requests").await, 0);
    // The id is free for the request that works.
    store
        .create_student(&student("A", "B"), key("failing", "create"))
        .await
        .unwrap();
}

async fn concurrent_duplicates_from_two_stores_write_once(db: Database) {
    let a = db.open().await;
    let b = db.open().await;
    let s = a
        .create_student(&student("Race", "Condition"), None)
        .await
        .unwrap();
    for round in 0..10 {
        let id = format!("race-{round}");
        let add = || {
            vec![GradeToAdd {
                student_id: s.id.clone(),
                grade: grade("Raced", GradeType::Quiz, 60.0),
                request: key(&id, "raced"),
            }]
        };
        let (ra, rb) = tokio::join!(a.add_grades(add()), b.add_grades(add()));
        let ga = ra.into_iter().next().unwrap().unwrap();
        let gb = rb.into_iter().next().unwrap().unwrap();
        assert_eq!(ga.0.id, gb.0.id, "round {round}: one grade, one answer");
    }
    assert_eq!(db.rows("grades").await, 10);
    assert_eq!(db.rows("requests").await, 10);
}

async fn old_request_ids_are_pruned(db: Database) {
    let store = db.open().await;
    let first = store
        .create_student(&student("Old", "Request"), key("old", "create"))
        .await
        .unwrap();
    assert_eq!(
        store.prune(SystemTime::now()).await.unwrap(),
        0,
        "kept 24 h"
    );
    assert_eq!(db.rows("requests").await, 1);
    let later = SystemTime::now() + REQUEST_RETENTION + Duration::from_secs(60);
    assert!(store.prune(later).await.unwrap() >= 1);
    assert_eq!(db.rows("requests").await, 0);
    // Forgotten: the same id writes again.
    let second = store
        .create_student(&student("Old", "Request"), key("old", "create"))
        .await
        .unwrap();
    assert_ne!(second.id, first.id);
}

async fn the_change_feed_carries_every_write_in_order(db: Database) {
    let store = db.open().await;
    let mut feed = store.subscribe();
    let s = store
        .create_student(&student("Feed", "Order"), None)
        .await
        .unwrap();
    let renamed = store
        .update_student(&s.id, &student("Fed", "Order"), None)
        .await
        .unwrap();
    let (g, _) = add_one(store.as_ref(), &s.id, grade("Q", GradeType::Quiz, 40.0)).await;
    store
        .update_grade(&s.id, &g.id, &grade("Q", GradeType::Quiz, 45.0), None)
        .await
        .unwrap();
    store.delete_grade(&s.id, &g.id, None).await.unwrap();
    store.delete_student(&s.id, None).await.unwrap();
    let changes = next_changes(&mut feed, 6).await;
    assert_eq!(
        changes.iter().map(|c| c.kind).collect::<Vec<_>>(),
        vec![
            ChangeKind::StudentCreated,
            ChangeKind::StudentUpdated,
            ChangeKind::GradeAdded,
            ChangeKind::GradeUpdated,
            ChangeKind::GradeDeleted,
            ChangeKind::StudentDeleted,
        ]
    );
    assert_eq!(changes[1].student, renamed);
    assert_eq!(changes[2].grade.as_ref().unwrap().id, g.id);
    assert_eq!(changes[3].student.average, Some(45.0));
    assert!(changes.iter().all(|c| c.student.id == s.id));
}

async fn changes_cross_stores(db: Database) {
    let a = db.open().await;
    let b = db.open().await;
    let mut on_b = b.subscribe();
    let mut on_a = a.subscribe();
    let s = a
        .create_student(&student("Cross", "Store"), None)
        .await
        .unwrap();
    let first = next_changes(&mut on_b, 1).await;
    assert_eq!(first[0].kind, ChangeKind::StudentCreated);
    assert_eq!(first[0].student, s);
    next_changes(&mut on_a, 1).await;

    // 200 writes, from both stores at once: every one reaches both
    // subscribers, in one order, with the grade count growing by one.
    const WRITES: usize = 200;
    let writers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, store)| {
            let id = s.id.clone();
            tokio::spawn(async move {
                let writes = (0..WRITES / 2).map(|i| {
                    let store = store.clone();
                    let id = id.clone();
                    async move {
                        add_one(
                            store.as_ref(),
                            &id,
                            grade(&format!("W{n}-{i}"), GradeType::Quiz, 50.0),
                        )
                        .await
                    }
                });
                futures::future::join_all(writes).await
            })
        })
        .collect();
    for writer in writers {
        assert_eq!(writer.await.unwrap().len(), WRITES / 2);
    }
    let seen_on_b = next_changes(&mut on_b, WRITES).await;
    let seen_on_a = next_changes(&mut on_a, WRITES).await;
    let counts: Vec<u32> = seen_on_b.iter().map(|c| c.student.grade_count).collect();
    assert_eq!(counts, (1..=WRITES as u32).collect::<Vec<_>>(), "in order");
    assert_eq!(seen_on_a, seen_on_b, "the same order everywhere");
    let titles: HashSet<_> = seen_on_b
        .iter()
        .map(|c| c.grade.as_ref().unwrap().title.clone())
        .collect();
    assert_eq!(titles.len(), WRITES, "nothing lost");
}

async fn recovers_from_lost_connections(db: Database) {
    let a = db.open().await;
    let b = db.open().await;
    let mut on_b = b.subscribe();
    let s = a
        .create_student(&student("Lost", "Connection"), None)
        .await
        .unwrap();
    next_changes(&mut on_b, 1).await;

    // Every connection of both stores (pools and change feeds) goes.
    let killed = db
        .number(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await;
    assert!(killed >= 2, "{killed} connections terminated");

    // Writes work again on their own (a call may fail as Unavailable while
    // the pool replaces its connections), and B's feed reconnects and
    // delivers them.
    let renamed = support::eventually("a write after the loss", FEED_PATIENCE, || {
        let a = a.clone();
        let id = s.id.clone();
        async move {
            match a
                .update_student(&id, &student("Found", "Again"), None)
                .await
            {
                Ok(renamed) => Some(renamed),
                Err(StoreError::Unavailable(_)) => None,
                Err(other) => panic!("not Unavailable: {other:?}"),
            }
        }
    })
    .await;
    let change = next_changes(&mut on_b, 1).await.pop().unwrap();
    assert_eq!(change.kind, ChangeKind::StudentUpdated);
    assert_eq!(change.student, renamed);
}

/// The next `n` changes of `feed`, or a panic after [`FEED_PATIENCE`].
async fn next_changes(
    feed: &mut tokio::sync::broadcast::Receiver<Arc<Change>>,
    n: usize,
) -> Vec<Change> {
    let mut changes = Vec::with_capacity(n);
    while changes.len() < n {
        let change = tokio::time::timeout(FEED_PATIENCE, feed.recv())
            .await
            .unwrap_or_else(|_| panic!("change {} of {n} within {FEED_PATIENCE:?}", changes.len()))
            .expect("no lag");
        changes.push(change.as_ref().clone());
    }
    changes
}
