//! `gradebook migrate` on a real PostgreSQL under a real `gradebook up`
//! (three grading instances) and eight clients reading and writing through
//! the portal: a database made at schema version 3 holding a score of the
//! old shape (85.126) gets, under load, a rolling update of every grading
//! instance and then the irreversible contract migration 4 (scores in
//! hundredths), with a backup taken first and no request failing; going down through it is refused; a restore is refused while
//! grading is connected and from another database's backup; with grading
//! stopped, the restore states what it loses (exactly the grades written
//! since the backup) and brings the old score back; the reversible
//! migration 3 goes down and up again.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::binary;
use support::cluster::{Cluster, TURN};

/// Runs `gradebook migrate --database-url DATABASE ARGS` to its end.
async fn migrate(database: &str, args: &[&str]) -> Output {
    let mut command = Command::new(binary());
    command
        .arg("migrate")
        .arg("--database-url")
        .arg(database)
        .args(args)
        .env_remove("GRADEBOOK_DATA_DIR");
    tokio::task::spawn_blocking(move || command.output().expect("run gradebook migrate"))
        .await
        .expect("the migration's thread")
}

/// What a command printed, both streams.
fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a migration command that must succeed; what it printed.
async fn migrated(database: &str, args: &[&str]) -> String {
    let output = migrate(database, args).await;
    let told = printed(&output);
    assert!(output.status.success(), "migrate {args:?}: {told}");
    told
}

/// Runs a migration command that must be refused; what it printed.
async fn refused(database: &str, args: &[&str]) -> String {
    let output = migrate(database, args).await;
    let told = printed(&output);
    assert!(
        !output.status.success(),
        "migrate {args:?} must fail: {told}"
    );
    told
}

/// Runs `sql` on `database`; the first column of the first row, as text.
async fn query(database: &str, sql: &str) -> String {
    let (client, connection) = tokio_postgres::connect(database, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    let driver = tokio::spawn(connection);
    let rows = client.simple_query(sql).await.expect("run the query");
    drop(client);
    let _ = driver.await;
    rows.iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default()
}

/// The backup a `migrate up` output names.
fn backup_named(told: &str) -> PathBuf {
    let line = told
        .lines()
        .find(|l| l.starts_with("backup taken first"))
        .unwrap_or_else(|| panic!("no backup in: {told}"));
    let path = line
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split(" (").next())
        .expect("a backup path");
    PathBuf::from(path)
}

/// The ids of the grades a backup holds, from its manifest.
fn backed_up_grades(backup: &Path) -> BTreeSet<String> {
    let mut manifest = backup.as_os_str().to_owned();
    manifest.push(".json");
    let text = std::fs::read(&manifest).expect("the backup's manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&text).expect("a JSON manifest");
    manifest["grades"]
        .as_array()
        .expect("grades")
        .iter()
        .map(|id| id.as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn an_irreversible_migration_under_load_is_backed_up_and_restored() {
    let _turn = TURN.lock().await;
    let Some(server) = support::postgres::server() else {
        return;
    };
    let database = server.database().await;
    let backups = tempfile::tempdir().unwrap();
    let backup_dir = backups.path().to_str().unwrap();

    // A database at version 3, as the release before this one left it.
    let told = migrated(&database, &["up", "--to", "3"]).await;
    assert!(
        told.contains("applied 3 (grades indexed by time, expand)"),
        "{told}"
    );
    assert!(
        !told.contains("backup taken"),
        "a new database has nothing to back up: {told}"
    );
    let status = migrated(&database, &["status"]).await;
    assert!(
        status.contains("schema version 3; this binary knows 4"),
        "{status}"
    );
    assert!(
        status.contains("scores in hundredths")
            && status.contains("contract  irreversible  pending"),
        "{status}"
    );

    // The binaries start on it and leave the contract for the operator.
    let cluster = Cluster::start_on(database.clone()).await;
    assert_eq!(
        query(&database, "SELECT MAX(version) FROM schema_version").await,
        "3"
    );
    let student = &cluster.students[0];
    let old_grade = "0190a0a0-0000-7000-8000-00000000cafe";
    query(
        &database,
        &format!(
            "INSERT INTO grades VALUES ('{old_grade}', '{student}', 'Old quiz', 'quiz', 85.126, 1)"
        ),
    )
    .await;

    // Under load: the rollout to the release that no longer writes the
    // old shape, then the contract, a backup first.
    let load = cluster.load();
    load.run_for(100).await;
    let mut rollout = Command::new(binary());
    rollout
        .args(["rollout", "grading", "--binary", binary(), "--data-dir"])
        .arg(cluster.dir.path())
        .args(["--observe", "1s", "--min-requests", "5"])
        .args(["--", "--report-version", "2.0.0"]);
    let rolled =
        tokio::task::spawn_blocking(move || rollout.output().expect("run gradebook rollout"))
            .await
            .expect("the rollout's thread");
    assert!(rolled.status.success(), "{}", printed(&rolled));
    cluster.serving(&["2.0.0", "2.0.0", "2.0.0"]).await;
    load.run_for(100).await;
    let told = migrated(&database, &["up", "--backup-dir", backup_dir]).await;
    assert!(
        told.contains("applied 4 (scores in hundredths, contract)"),
        "{told}"
    );
    let backup = backup_named(&told);
    assert!(backup.exists(), "{told}");
    load.run_for(100).await;
    let report = cluster
        .no_failure(load, "during the rollout and the migration")
        .await;
    let score = format!("SELECT score FROM grades WHERE id = '{old_grade}'");
    assert_eq!(query(&database, &score).await, "85.13");

    // Refusals, each before anything changes.
    let told = refused(&database, &["down", "--to", "3"]).await;
    assert!(
        told.contains("migration 4 (scores in hundredths) is irreversible: restore a backup"),
        "{told}"
    );
    let from = backup.to_str().unwrap();
    let told = refused(&database, &["restore", "--from", from, "--yes"]).await;
    assert!(
        told.contains("grading connection(s) are open on the database"),
        "{told}"
    );
    let other = server.database().await;
    migrated(&other, &["up"]).await;
    let other_backup = migrated(&other, &["backup", "--backup-dir", backup_dir]).await;
    let other_backup = other_backup
        .split_whitespace()
        .nth(1)
        .expect("the other backup's path")
        .to_owned();
    let told = refused(&database, &["restore", "--from", &other_backup, "--yes"]).await;
    assert!(
        told.contains("restoring it would replace another database's data"),
        "{told}"
    );

    // With grading stopped, the restore says exactly what it loses.
    let written_since = report
        .acknowledged
        .values()
        .filter(|id| !backed_up_grades(&backup).contains(*id))
        .count();
    assert!(written_since > 0, "the load went on after the backup");
    cluster.stop().await;
    let told = refused(&database, &["restore", "--from", from]).await;
    let loss = format!(
        "restoring it loses what was written since: 0 student(s) and {written_since} grade(s) created since are removed"
    );
    assert!(told.contains(&loss), "{loss}\n{told}");
    assert!(
        told.contains("nothing changed: pass --yes to restore"),
        "{told}"
    );
    assert_eq!(query(&database, &score).await, "85.13", "nothing changed");
    let told = migrated(&database, &["restore", "--from", from, "--yes"]).await;
    assert!(
        told.contains("restored: the database is as it was"),
        "{told}"
    );
    assert_eq!(query(&database, &score).await, "85.126");
    assert_eq!(
        query(&database, "SELECT MAX(version) FROM schema_version").await,
        "3"
    );
    let grades = query(&database, "SELECT count(*) FROM grades").await;
    assert_eq!(grades, backed_up_grades(&backup).len().to_string());
    let status = migrated(&database, &["status"]).await;
    assert!(status.contains("schema version 3"), "{status}");

    // A reversible migration goes down and up again.
    let index_gone = "SELECT to_regclass('grades_by_time') IS NULL";
    assert_eq!(query(&database, index_gone).await, "f");
    let told = migrated(&database, &["down", "--to", "2"]).await;
    assert!(
        told.contains("undone 3 (grades indexed by time, expand): now at version 2"),
        "{told}"
    );
    assert_eq!(query(&database, index_gone).await, "t");
    let told = migrated(&database, &["up", "--to", "3"]).await;
    assert!(told.contains("applied 3"), "{told}");
    assert!(!told.contains("backup taken"), "3 is reversible: {told}");
    assert_eq!(query(&database, index_gone).await, "f");
}
