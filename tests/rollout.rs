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

use support::cluster::{Cluster, TURN, serving_versions};
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

/// A rollout that succeeded; what it printed.
fn succeeded(output: &Output) -> String {
    let told = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{told}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    told
}

#[tokio::test]
async fn rolling_updates_under_load_roll_back_a_failing_version_and_replace_every_instance() {
    let _turn = TURN.lock().await;
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let dir = cluster.dir.path().to_owned();
    let dir = dir.as_path();
    let registry = &cluster.registry;
    let built = cluster.built.clone();

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
        let output = rollout_output(dir, &args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was refused");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let nowhere = rollout_output(&dir.join("elsewhere"), &["grading", "--binary", binary()]).await;
    assert!(
        String::from_utf8_lossy(&nowhere.stderr).contains("is it running with this --data-dir?"),
        "{nowhere:?}"
    );

    let load = cluster.load();
    load.run_for(150).await;

    // A new version whose instances never become SERVING (its database
    // cannot be reached): rolled back on its own, and a second rollout
    // meanwhile is refused.
    let mut failing = rollout(
        dir,
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
    let busy = rollout_output(dir, &["grading", "--binary", binary()]).await;
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
        (serving_versions(registry).await == [built.clone(), built.clone(), built.clone()])
            .then_some(())
    })
    .await;
    load.run_for(100).await;

    // A good new version replaces every instance, one at a time.
    let good = rollout_output(
        dir,
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
        (serving_versions(registry).await == ["2.0.0", "2.0.0", "2.0.0"]).then_some(())
    })
    .await;
    load.run_for(100).await;

    cluster.no_failure(load, "across the rollouts").await;

    cluster.stop().await;
}

#[tokio::test]
async fn blue_green_switches_and_canaries_under_load_with_their_rollbacks() {
    let _turn = TURN.lock().await;
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let dir = cluster.dir.path().to_owned();
    let dir = dir.as_path();
    let built = cluster.built.clone();
    let bin = binary();
    let blue_green = [
        "grading",
        "--binary",
        bin,
        "--strategy",
        "blue-green",
        "--",
        "--report-version",
        "2.0.0",
    ];
    let nothing_waits = rollout_output(dir, &["grading", "--finish"]).await;
    assert!(
        String::from_utf8_lossy(&nothing_waits.stderr)
            .contains("no blue-green switch of grading waits to be concluded"),
        "{nothing_waits:?}"
    );
    let same = rollout_output(
        dir,
        &["grading", "--binary", bin, "--strategy", "blue-green"],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&same.stdout).contains("the version running"),
        "a switch to the running version changes nothing: {same:?}"
    );
    let load = cluster.load();
    load.run_for(100).await;

    // Blue-green: switched, switched back, then switched and finished.
    let told = succeeded(&rollout_output(dir, &blue_green).await);
    assert!(
        told.contains("switched: every request goes to 2.0.0"),
        "{told}"
    );
    cluster
        .serving(&[&built, &built, &built, "2.0.0", "2.0.0", "2.0.0"])
        .await;
    load.run_for(100).await;
    let busy = rollout_output(dir, &blue_green).await;
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("a rollout of grading is running"),
        "{busy:?}"
    );
    let told =
        String::from_utf8_lossy(&rollout_output(dir, &["grading", "--rollback"]).await.stdout)
            .into_owned();
    assert!(
        told.contains("rolled back: asked by the operator"),
        "{told}"
    );
    cluster.serving(&[&built, &built, &built]).await;
    load.run_for(100).await;
    succeeded(&rollout_output(dir, &blue_green).await);
    load.run_for(100).await;
    let told = succeeded(&rollout_output(dir, &["grading", "--finish"]).await);
    assert!(
        told.contains("done: 3 instance(s) of 2.0.0 serve grading alone"),
        "{told}"
    );
    cluster.serving(&["2.0.0", "2.0.0", "2.0.0"]).await;
    load.run_for(100).await;
    cluster
        .no_failure(load, "across the blue-green switches")
        .await;
    let policies = cluster.registry.policies(Some("grading")).await.unwrap();
    assert!(policies.is_empty(), "the policy is cleared: {policies:?}");

    // A canary failing a fifth of its requests: rolled back on its own in
    // its first step, costing at most its share of the requests.
    let load = cluster.load();
    load.run_for(100).await;
    let failing = rollout_output(
        dir,
        &[
            "grading",
            "--binary",
            bin,
            "--strategy",
            "canary",
            "--steps",
            "10,100",
            "--interval",
            "3s",
            "--min-requests",
            "10",
            "--",
            "--report-version",
            "3.0.0-broken",
            "--fault-error-ratio",
            "0.2",
        ],
    )
    .await;
    let told = String::from_utf8_lossy(&failing.stdout).into_owned();
    assert!(!failing.status.success(), "{told}");
    assert!(
        told.contains("rolled back: at 10 %, the canary failed"),
        "{told}"
    );
    assert!(told.contains("at  10 %: canary"), "the report: {told}");
    cluster.serving(&["2.0.0", "2.0.0", "2.0.0"]).await;
    load.run_for(100).await;
    let report = load.stop().await;
    let failed = report.failures().len();
    assert!(
        failed * 10 <= report.answers.len(),
        "{failed} of {} requests failed: more than the canary's 10 %",
        report.answers.len()
    );

    // A healthy canary steps up to all the traffic; nothing fails.
    let load = cluster.load();
    load.run_for(100).await;
    let told = succeeded(
        &rollout_output(
            dir,
            &[
                "grading",
                "--binary",
                bin,
                "--strategy",
                "canary",
                "--steps",
                "20,100",
                "--interval",
                "2s",
                "--min-requests",
                "5",
                "--",
                "--report-version",
                "3.0.0",
            ],
        )
        .await,
    );
    assert!(
        told.contains("done: 3 instance(s) of 3.0.0 serve grading alone"),
        "{told}"
    );
    assert_eq!(told.matches(": passed").count(), 2, "{told}");
    cluster.serving(&["3.0.0", "3.0.0", "3.0.0"]).await;
    load.run_for(100).await;
    cluster.no_failure(load, "across the healthy canary").await;
    cluster.stop().await;
}
