//! Rolling updates through a running `gradebook up` (three grading
//! instances on a throwaway PostgreSQL), under a steady load of eight
//! clients reading and writing through the portal, with the real
//! `gradebook rollout`: a new version that never becomes SERVING is rolled
//! back on its own, and a good one replaces every instance, one at a time;
//! neither costs a request or an acknowledged write. Rollouts that cannot
//! work are refused before anything changes.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use gradebook::mesh::api::RegistryApi;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::load::Load;
use support::up::{EVERY_PORT_ZERO, start_up};
use support::{PATIENCE, binary, eventually};

/// `gradebook rollout ARGS` against the `up` of `dir`.
fn rollout(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.arg("rollout").arg("--data-dir").arg(dir).args(args);
    command
}

/// Runs a rollout to its end.
async fn rollout_output(dir: &Path, args: &[&str]) -> Output {
    let mut command = rollout(dir, args);
    tokio::task::spawn_blocking(move || command.output().expect("run gradebook rollout"))
        .await
        .expect("the rollout's thread")
}

/// The versions of the SERVING grading instances.
async fn serving_versions(registry: &RegistryApi) -> Vec<String> {
    let mut versions: Vec<String> = registry
        .list(Some("grading"), false)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.version)
        .collect();
    versions.sort();
    versions
}

#[tokio::test]
async fn rolling_updates_under_load_roll_back_a_failing_version_and_replace_every_instance() {
    let Some(server) = support::postgres::server() else {
        return;
    };
    let database = server.database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--scale", "grading=3", "--database-url", &database];
    args.extend(EVERY_PORT_ZERO);
    let (mut up, ready, _, _) = start_up(&args, dir.path());
    let portal = ready
        .trim_start_matches("Gradebook is ready: ")
        .trim_end_matches(" (Ctrl-C stops it)")
        .trim_end_matches("/students")
        .to_owned();
    let registry_address = support::up::children_running(up.id(), "registry")
        .first()
        .and_then(|pid| support::up::argument_of(*pid, "--listen"))
        .expect("the registry's address");
    let registry = RegistryApi::connect(
        &format!("http://{registry_address}"),
        &support::admin_tls(&dir.path().join("certs")),
    )
    .unwrap();
    eventually("three grading instances serve", PATIENCE, || async {
        (serving_versions(&registry).await.len() == 3).then_some(())
    })
    .await;
    let built = serving_versions(&registry).await[0].clone();

    // Refused before anything changes.
    for (args, says) in [
        (
            vec!["grading", "--binary", "/bin/false"],
            "/bin/false does not run",
        ),
        (
            vec!["grading", "--binary", "/nonexistent/gradebook"],
            "does not run",
        ),
        (vec!["log", "--binary", binary()], "not supported yet"),
        (
            vec!["reports", "--binary", binary()],
            "no service \"reports\"",
        ),
        (
            vec!["grading", "--binary", binary(), "--", "--listen", "x:1"],
            "--listen is set by gradebook up itself",
        ),
    ] {
        let output = rollout_output(dir.path(), &args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was refused");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let nowhere = rollout_output(
        &dir.path().join("elsewhere"),
        &["grading", "--binary", binary()],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&nowhere.stderr).contains("is it running with this --data-dir?"),
        "{nowhere:?}"
    );

    let token = support::api_token(dir.path(), "admin");
    let page: serde_json::Value = support::signed_in_builder(&token)
        .build()
        .unwrap()
        .get(format!("{portal}/api/students"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let students: Vec<String> = page["students"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    let load = Load::start(&portal, &token, students, 8, 4);
    load.run_for(150).await;

    // A new version whose instances never become SERVING (its database
    // cannot be reached): rolled back on its own, and a second rollout
    // meanwhile is refused.
    let mut failing = rollout(
        dir.path(),
        &[
            "grading",
            "--binary",
            binary(),
            "--ready-timeout",
            "4s",
            "--",
            "--report-version",
            "9.9.9-broken",
            "--database-url",
            "postgres://gradebook@127.0.0.1:1/nowhere",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(failing.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.contains("replacing 3 instance(s) of grading with 9.9.9-broken"),
        "{first}"
    );
    let busy = rollout_output(dir.path(), &["grading", "--binary", binary()]).await;
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("a rollout of grading is running"),
        "{busy:?}"
    );
    let rest: Vec<String> =
        tokio::task::spawn_blocking(move || lines.map_while(Result::ok).collect())
            .await
            .unwrap();
    let status = failing.wait().unwrap();
    assert!(!status.success(), "a rolled-back rollout fails: {rest:?}");
    let told = rest.join("\n");
    // It is seen NOT_SERVING (its database is away), or never SERVING.
    assert!(
        told.contains("the new instance grading-4 is unhealthy: NOT_SERVING")
            || told.contains("was not SERVING within 4s"),
        "{told}"
    );
    assert!(told.contains("rolled back"), "{told}");
    eventually("the old version serves alone again", PATIENCE, || async {
        (serving_versions(&registry).await == [built.clone(), built.clone(), built.clone()])
            .then_some(())
    })
    .await;
    load.run_for(100).await;

    // A good new version replaces every instance, one at a time.
    let good = rollout_output(
        dir.path(),
        &[
            "grading",
            "--binary",
            binary(),
            "--observe",
            "1s",
            "--min-requests",
            "5",
            "--",
            "--report-version",
            "2.0.0",
        ],
    )
    .await;
    let told = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{told}\n{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(
        told.contains("done: 3 instance(s) of grading replaced by 2.0.0"),
        "{told}"
    );
    assert_eq!(told.matches("draining grading").count(), 3, "{told}");
    eventually("only the new version serves", PATIENCE, || async {
        (serving_versions(&registry).await == ["2.0.0", "2.0.0", "2.0.0"]).then_some(())
    })
    .await;
    load.run_for(100).await;

    let report = load.stop().await;
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the rollouts: {:?}",
        failures.len(),
        report.answers.len(),
        &failures[..failures.len().min(10)]
    );
    report.check_writes(&portal, &token).await;

    kill(Pid::from_raw(up.id() as i32), Signal::SIGINT).unwrap();
    let status = eventually("up exits", PATIENCE, || {
        let status = up.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(status.success(), "{status:?}");
    assert!(
        !dir.path().join("control.sock").exists(),
        "the control socket is removed"
    );
}
