//! `gradebook bench --only rollout`: rolling updates of three grading
//! instances through a real `gradebook up` (on PostgreSQL) while
//! [`CONNECTIONS`] keep-alive connections read and write through the
//! portal: how long each update takes, and the p50 and p99 latency during
//! it against the steady state before, with every failed request counted.
//! Two updates run one after the other (to 2.0.0, then 2.0.1), so the
//! figures come with their spread. It prints figures; it asserts nothing
//! (`tests/rollout.rs` proves 0 failed requests).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::bench::{BenchArgs, Process, ms, percentile};
use crate::cli::bench_gradebook::{
    BenchDatabase, HttpLoad, Request, bench_token, http_load, http_load_until,
};
use crate::cli::http_get::HttpConnection;
use crate::cli::users::accounts_dir;

/// Keep-alive connections of the load.
const CONNECTIONS: usize = 8;
/// How long `up` may take to be ready, and a rollout to end.
const PATIENCE: Duration = Duration::from_secs(180);
/// The versions rolled out, in turn.
const VERSIONS: [&str; 2] = ["2.0.0", "2.0.1"];

/// `gradebook up` with three grading instances, and its portal.
struct Up {
    process: Process,
    dir: std::path::PathBuf,
    portal: String,
}

impl Up {
    /// Starts it on the database at `url`, data under `dir`; waits until
    /// it says it is ready.
    async fn start(url: &str, dir: &Path) -> anyhow::Result<Up> {
        let exe = std::env::current_exe()?;
        let mut child = std::process::Command::new(&exe)
            .args([
                "up",
                "--scale",
                "grading=3",
                "--database-url",
                url,
                "--data-dir",
            ])
            .arg(dir)
            .args([
                "--registry-listen",
                "127.0.0.1:0",
                "--log-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--grading-listen",
                "127.0.0.1:0",
                "--portal-listen",
                "127.0.0.1:0",
            ])
            .env("GRADEBOOK_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start gradebook up")?;
        let stdout = child.stdout.take().context("up's output")?;
        let process = Process(child);
        // Read up's output to its end, or it would fail writing to a
        // closed pipe; the ready line comes through `ready`.
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Gradebook is ready: ")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(line);
                }
            }
        });
        let ready = tokio::time::timeout(PATIENCE, ready)
            .await
            .context("gradebook up was not ready in time")?
            .context("gradebook up ended before it was ready")?;
        let portal = ready
            .trim_start_matches("Gradebook is ready: http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Ok(Up {
            process,
            dir: dir.to_owned(),
            portal,
        })
    }

    /// Stops it with Ctrl-C and waits for it.
    fn stop(mut self) {
        let _ = kill(Pid::from_raw(self.process.0.id() as i32), Signal::SIGINT);
        let _ = self.process.0.wait();
    }
}

/// Creates `count` students through the portal; returns their pages' paths.
async fn new_students(portal: &str, token: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let mut connection = HttpConnection::open(portal).await?.with_token(token);
    let mut students = Vec::new();
    for n in 0..count {
        let body = format!(r#"{{"first_name":"Roller{n}","last_name":"Bench"}}"#);
        let key = uuid::Uuid::now_v7().to_string();
        let (status, _) = connection.post_json("/api/students", &key, &body).await?;
        if status != 201 && status != 200 {
            bail!("creating a student answered HTTP {status}");
        }
        let created: serde_json::Value = serde_json::from_slice(connection.body())?;
        let id = created["id"].as_str().context("a student id")?;
        students.push(format!("/api/students/{id}"));
    }
    Ok(students)
}

/// Reads of each connection's student, and one request in four a write.
fn mixed(students: Vec<String>) -> impl Fn(usize, u64) -> Request + Send + Sync + 'static {
    let run = uuid::Uuid::now_v7().simple().to_string();
    move |connection, n| {
        let student = &students[connection % students.len()];
        if n % 4 == 3 {
            Request::Post {
                path: format!("{student}/grades"),
                idempotency_key: format!("roll-{run}-{connection}-{n}"),
                body: format!(r#"{{"title":"Roll {connection}-{n}","type":"quiz","score":70}}"#),
            }
        } else {
            Request::Get(student.clone())
        }
    }
}

/// One rolling update to `version` under the load; returns how long it
/// took, the load's figures, and when it ran.
async fn rolling_update(
    up: &Up,
    token: &str,
    students: Vec<String>,
    version: &str,
) -> anyhow::Result<(Duration, HttpLoad, Instant, Instant)> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = {
        let portal = up.portal.clone();
        let token = token.to_owned();
        tokio::spawn(async move {
            http_load_until(&portal, &token, CONNECTIONS, stopped, mixed(students)).await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let exe = std::env::current_exe()?;
    let from = Instant::now();
    let rollout = tokio::process::Command::new(&exe)
        .args(["rollout", "grading", "--binary"])
        .arg(&exe)
        .arg("--data-dir")
        .arg(&up.dir)
        .args(["--", "--report-version", version])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(PATIENCE, rollout)
        .await
        .context("the rollout did not end in time")??;
    let to = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    let load = load.await??;
    if !output.status.success() {
        bail!(
            "the rollout to {version} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((to - from, load, from, to))
}

/// Runs the rollout benchmark.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    println!(
        "rollout: rolling updates of grading x3 through gradebook up on PostgreSQL, {CONNECTIONS} connections through the portal (reads, 1 in 4 writes)"
    );
    let database = match BenchDatabase::start(args.database_url.as_deref()) {
        Ok(database) => database,
        Err(error) => {
            println!("  skipped: {error:#}");
            return Ok(());
        }
    };
    let dir =
        std::env::temp_dir().join(format!("gradebook-bench-{}", uuid::Uuid::new_v4().simple()));
    let result = async {
        let up = Up::start(&database.fresh().await?, &dir).await?;
        let token = bench_token(&accounts_dir(&dir))?;
        let students = new_students(&up.portal, &token, CONNECTIONS).await?;
        let steady_for = args.duration.max(Duration::from_secs(5));
        let steady = http_load(&up.portal, &token, CONNECTIONS, steady_for, mixed(students.clone())).await?;
        let steady_p99 = percentile(&steady.latencies(), 99.0);
        steady.print(&format!("steady state ({steady_for:?})"));
        for version in VERSIONS {
            let (took, load, from, to) = rolling_update(&up, &token, students.clone(), version).await?;
            let during = load.latencies_between(from, to);
            let p99 = percentile(&during, 99.0);
            load.print_failures();
            println!(
                "  rolling update to {version} (3 instances, --observe 5s, --min-requests 20 each): {:.1} s; during it p50 {} p99 {} ({:.2}x steady), {} requests, {} failed",
                took.as_secs_f64(),
                ms(percentile(&during, 50.0)),
                ms(p99),
                p99.as_secs_f64() / steady_p99.as_secs_f64().max(f64::EPSILON),
                during.len() as u64 + load.failed,
                load.failed
            );
        }
        up.stop();
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
