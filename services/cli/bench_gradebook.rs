//! `gradebook bench --only gradebook`: the gradebook as processes, measured
//! from outside through the portal, as a teacher's browser would load it.
//!
//! - reads of one student (JSON and HTML) with one grading instance on
//!   SQLite; with `--baseline PATH`, the same load alternates between this
//!   build's mesh and one started from another build's binary (today's
//!   main, built in a git worktree), and the ratio is printed with its spread;
//! - the same reads with three grading instances on PostgreSQL (a
//!   throwaway durable server from the machine's `postgresql` package, or
//!   `--database-url`);
//! - a fault run: the same load while one grading instance is killed and
//!   another SIGSTOPped for three seconds: failed requests and the p99
//!   during the fault;
//! - durable `AddGrade` through the portal on PostgreSQL, and straight to
//!   grading on SQLite.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::bench::{
    BenchArgs, Process, free_port, measure, ms, percentile, spawn_daemon_with, wait_serving,
};
use crate::cli::http_get::HttpConnection;
use crate::cli::scratch_postgres::{Durability, ScratchPostgres};
use crate::mesh::Tls;
use crate::mesh::client::lazy_channel;
use crate::pb::grading::v1 as pb;
use crate::pb::grading::v1::grading_client::GradingClient;

/// HTTP connections of the read benchmarks.
const CONNECTIONS: usize = 16;
/// Writes in flight in the write benchmarks.
const WRITERS: usize = 64;
/// Alternating rounds of the comparison with a baseline build.
const ROUNDS: usize = 3;

/// A request of the HTTP load.
pub(crate) enum Request {
    Get(String),
    Post {
        path: String,
        idempotency_key: String,
        body: String,
    },
}

/// What an HTTP load measured.
pub(crate) struct HttpLoad {
    pub(crate) rate: f64,
    latencies: Vec<Duration>,
    pub(crate) failed: u64,
    /// Answered writes among the requests.
    writes: u64,
    connections: usize,
    /// When each answered request was sent, and how long it took.
    samples: Vec<(Instant, Duration)>,
    /// What the first failed requests got (at most [`FAILURES_KEPT`]).
    first_failures: Vec<String>,
}

/// How many failed requests an HTTP load describes.
const FAILURES_KEPT: usize = 5;

impl HttpLoad {
    /// Every answered request's latency, sorted.
    pub(crate) fn latencies(&self) -> Vec<Duration> {
        self.latencies.clone()
    }

    /// The latencies of the requests sent between `from` and `to`, sorted.
    pub(crate) fn latencies_between(&self, from: Instant, to: Instant) -> Vec<Duration> {
        let mut during: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, latency)| *latency)
            .collect();
        during.sort();
        during
    }

    pub(crate) fn p99_between(&self, from: Instant, to: Instant) -> Duration {
        percentile(&self.latencies_between(from, to), 99.0)
    }

    pub(crate) fn print(&self, what: &str) {
        println!(
            "  {what}: {:.0}/s, p50 {} p99 {} ({} requests, {} failed, {} connections)",
            self.rate,
            ms(percentile(&self.latencies, 50.0)),
            ms(percentile(&self.latencies, 99.0)),
            self.latencies.len(),
            self.failed,
            self.connections
        );
        self.print_failures();
    }

    /// What the first failed requests got, if any failed.
    pub(crate) fn print_failures(&self) {
        if !self.first_failures.is_empty() {
            println!("    first failures: {}", self.first_failures.join("; "));
        }
    }
}

/// An admin account in the accounts database at `dir`, and a personal API
/// token for it, for the benchmark's requests.
pub(crate) fn bench_token(dir: &Path) -> anyhow::Result<String> {
    use crate::portal::accounts::store::SecretKind;
    use crate::portal::accounts::{AccountStore, Role, secret};
    let store = AccountStore::open(dir)?;
    store.add_user("bench", Role::Admin, &secret::new_password()?)?;
    Ok(store.new_secret("bench", SecretKind::Token, std::time::SystemTime::now())?)
}

/// Sends `request(connection, n)` over `connections` keep-alive connections
/// for `duration`; a failed request counts and the connection is opened
/// again, so the load goes on through faults.
pub(crate) async fn http_load<F>(
    address: &str,
    token: &str,
    connections: usize,
    duration: Duration,
    request: F,
) -> anyhow::Result<HttpLoad>
where
    F: Fn(usize, u64) -> Request + Send + Sync + 'static,
{
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        let _ = stop.send(true);
    });
    http_load_until(address, token, connections, stopped, request).await
}

/// [`http_load`] until `stop` turns true (or its sender goes).
pub(crate) async fn http_load_until<F>(
    address: &str,
    token: &str,
    connections: usize,
    stop: tokio::sync::watch::Receiver<bool>,
    request: F,
) -> anyhow::Result<HttpLoad>
where
    F: Fn(usize, u64) -> Request + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let failed = Arc::new(AtomicU64::new(0));
    let first_failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for connection_index in 0..connections {
        let mut connection = HttpConnection::open(address).await?.with_token(token);
        let token = token.to_owned();
        let request = request.clone();
        let failed = failed.clone();
        let first_failures = first_failures.clone();
        let writes = writes.clone();
        let address = address.to_owned();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut n = 0u64;
            while !*stop.borrow() && stop.has_changed().is_ok() {
                let at = Instant::now();
                let (answer, write) = match request(connection_index, n) {
                    Request::Get(path) => (connection.get(&path).await, false),
                    Request::Post {
                        path,
                        idempotency_key,
                        body,
                    } => (
                        connection.post_json(&path, &idempotency_key, &body).await,
                        true,
                    ),
                };
                n += 1;
                let failure = match &answer {
                    Ok((status, _)) if (200..300).contains(status) => None,
                    Ok((status, _)) => Some(format!("HTTP {status}")),
                    Err(error) => Some(format!("{error:#}")),
                };
                if let Some(failure) = failure {
                    let mut kept = first_failures.lock().unwrap_or_else(|e| e.into_inner());
                    if kept.len() < FAILURES_KEPT {
                        kept.push(failure);
                    }
                }
                match answer {
                    Ok((status, _)) if (200..300).contains(&status) => {
                        samples.push((at, at.elapsed()));
                        if write {
                            writes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        match HttpConnection::open(&address).await {
                            Ok(fresh) => connection = fresh.with_token(&token),
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                }
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut latencies: Vec<Duration> = samples.iter().map(|(_, l)| *l).collect();
    latencies.sort();
    Ok(HttpLoad {
        rate: latencies.len() as f64 / elapsed,
        latencies,
        failed: failed.load(Ordering::Relaxed),
        first_failures: std::mem::take(
            &mut *first_failures.lock().unwrap_or_else(|e| e.into_inner()),
        ),
        writes: writes.load(Ordering::Relaxed),
        connections,
        samples,
    })
}

/// Registry, log, `gradings` grading instances and a portal, started from
/// `binary`; killed when dropped.
pub(crate) struct BenchMesh {
    portal: String,
    /// How the benchmark's own gRPC clients connect.
    admin: Tls,
    /// An admin's API token for the portal.
    token: String,
    grading: Vec<(String, Process)>,
    _others: Vec<Process>,
}

/// How a benchmark's daemons and clients secure their connections, and
/// what else the daemons are told.
pub(crate) struct Security {
    /// Environment for the daemons.
    env: Vec<(&'static str, std::ffi::OsString)>,
    /// Whether the daemons ship their log records and spans (off by
    /// default: the benchmarks measure the request path).
    ship_logs: bool,
    /// The benchmark's own gRPC clients (health checks, listing students).
    admin: Tls,
}

impl Security {
    /// Plaintext, as the benchmarks run by default.
    pub(crate) fn plaintext() -> Self {
        Security {
            env: Vec::new(),
            ship_logs: false,
            admin: Tls::Off,
        }
    }

    /// Mutual TLS with the certificates in `certs` (registry, log,
    /// grading, portal and admin issued).
    pub(crate) fn mutual(certs: &Path) -> anyhow::Result<Self> {
        Ok(Security {
            env: vec![
                ("GRADEBOOK_INSECURE", "false".into()),
                ("GRADEBOOK_CERTS", certs.as_os_str().to_owned()),
            ],
            ship_logs: false,
            admin: Tls::load(certs, crate::mesh::tls::Identity::admin())?,
        })
    }

    /// The same, with `name=value` in the daemons' environment.
    pub(crate) fn with_env(mut self, name: &'static str, value: &str) -> Self {
        self.env.push((name, value.into()));
        self
    }

    /// The same, with the daemons shipping their log records and spans to
    /// the log service.
    pub(crate) fn shipping_logs(mut self) -> Self {
        self.ship_logs = true;
        self
    }

    fn env(&self) -> Vec<(&str, &std::ffi::OsStr)> {
        self.env.iter().map(|(k, v)| (*k, v.as_os_str())).collect()
    }
}

impl BenchMesh {
    /// Starts registry, log, `gradings` grading instances and a portal
    /// from `binary`, secured as `security` says.
    pub(crate) async fn start(
        binary: &Path,
        gradings: usize,
        database_url: Option<&str>,
        data: &Path,
        portal_flags: &[&str],
        security: &Security,
    ) -> anyhow::Result<BenchMesh> {
        let address = || -> anyhow::Result<String> { Ok(format!("127.0.0.1:{}", free_port()?)) };
        let registry = address()?;
        let registry_url = format!("http://{registry}");
        let ship_logs = if security.ship_logs { "true" } else { "false" };
        let common = |listen: &str| -> Vec<String> {
            [
                "--listen",
                listen,
                "--registry",
                &registry_url,
                "--ship-logs",
                ship_logs,
            ]
            .map(str::to_owned)
            .to_vec()
        };
        let mut others = vec![spawn_daemon_with(
            binary,
            &["registry", "--listen", &registry, "--ship-logs", ship_logs].map(str::to_owned),
            &security.env(),
        )?];
        wait_serving(&registry_url, &security.admin).await?;
        let log = address()?;
        let mut args = vec!["log".to_owned()];
        args.extend(common(&log));
        args.extend(["--data-dir".into(), data.join("log").display().to_string()]);
        others.push(spawn_daemon_with(binary, &args, &security.env())?);
        let mut grading = Vec::new();
        for i in 0..gradings {
            let listen = address()?;
            let mut args = vec!["grading".to_owned()];
            args.extend(common(&listen));
            args.extend([
                "--data-dir".into(),
                data.join(format!("grading-{i}")).display().to_string(),
            ]);
            if let Some(url) = database_url {
                args.extend(["--database-url".into(), url.to_owned()]);
            }
            grading.push((
                listen.clone(),
                spawn_daemon_with(binary, &args, &security.env())?,
            ));
            wait_serving(&format!("http://{listen}"), &security.admin).await?;
        }
        let portal = address()?;
        let mut args = vec!["portal".to_owned()];
        args.extend(common(&portal));
        args.extend(portal_flags.iter().map(|f| f.to_string()));
        // The accounts, made here; the portal finds them through the
        // environment (a baseline build without accounts ignores it).
        let accounts = data.join("portal");
        let token = bench_token(&accounts)?;
        let mut env = security.env();
        env.push(("GRADEBOOK_DATA_DIR", accounts.as_os_str()));
        others.push(spawn_daemon_with(binary, &args, &env)?);
        wait_serving(&format!("http://{portal}"), &security.admin).await?;
        // Ready once the portal sees a healthy grading instance.
        let mut connection = HttpConnection::open(&portal).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while connection.get("/readyz").await?.0 != 200 {
            if Instant::now() > deadline {
                bail!("the portal did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mesh = BenchMesh {
            portal,
            token,
            admin: security.admin.clone(),
            grading,
            _others: others,
        };
        mesh.wait_students().await?;
        Ok(mesh)
    }

    /// The CPU time each daemon has used so far, by name (registry, log,
    /// portal, then the grading instances).
    pub(crate) fn cpu_by_daemon(&self) -> anyhow::Result<Vec<(&'static str, Duration)>> {
        let names = ["registry", "log", "portal"];
        let processes = self
            ._others
            .iter()
            .zip(names)
            .map(|(process, name)| (name, process))
            .chain(self.grading.iter().map(|(_, process)| ("grading", process)));
        processes
            .map(|(name, process)| Ok((name, crate::cli::bench::cpu_time(process.0.id())?)))
            .collect()
    }

    /// Waits until the portal lists students (every grading instance seeds
    /// or sees the demo data).
    async fn wait_students(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.student().await.is_err() {
            if Instant::now() > deadline {
                bail!("no demo student appeared");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The id of a demo student, asked of the first grading instance.
    pub(crate) async fn student(&self) -> anyhow::Result<String> {
        self.students()
            .await?
            .into_iter()
            .next()
            .context("no demo student")
    }

    /// A client of the first grading instance, as the admin.
    fn first_grading(&self) -> anyhow::Result<GradingClient<tonic::transport::Channel>> {
        let (address, _) = self.grading.first().context("no grading instance")?;
        Ok(GradingClient::new(lazy_channel(
            "grading",
            &format!("http://{address}"),
            "grading",
            &self.admin,
        )?))
    }

    /// The ids of the students (the demo class), asked of the first grading instance.
    async fn students(&self) -> anyhow::Result<Vec<String>> {
        let mut client = self.first_grading()?;
        let students = client
            .list_students(pb::ListStudentsRequest {
                page_size: 100,
                page_token: String::new(),
            })
            .await?
            .into_inner()
            .students;
        Ok(students.into_iter().map(|s| s.id).collect())
    }

    /// Creates `count` students for writers, so that no student reaches
    /// [`crate::model::grading::MAX_GRADES_PER_STUDENT`] grades in a run;
    /// their ids.
    async fn new_students(&self, count: usize) -> anyhow::Result<Vec<String>> {
        let mut client = self.first_grading()?;
        let mut students = Vec::with_capacity(count);
        for writer in 0..count {
            let request = pb::CreateStudentRequest {
                first_name: format!("Writer{writer}"),
                last_name: "Bench".to_owned(),
                request_id: String::new(),
            };
            let created = client
                .create_student(request)
                .await
                .context("creating the writers' students")?;
            students.push(created.into_inner().id);
        }
        Ok(students)
    }

    pub(crate) async fn reads(&self, path: &str, duration: Duration) -> anyhow::Result<HttpLoad> {
        let path = path.to_owned();
        http_load(
            &self.portal,
            &self.token,
            CONNECTIONS,
            duration,
            move |_, _| Request::Get(path.clone()),
        )
        .await
    }

    /// POSTs grades through the portal from [`WRITERS`] connections, each
    /// connection to one of `students`.
    async fn writes(&self, students: &[String], duration: Duration) -> anyhow::Result<HttpLoad> {
        let paths: Vec<String> = students
            .iter()
            .map(|id| format!("/api/students/{id}/grades"))
            .collect();
        if paths.is_empty() {
            bail!("no student to add grades to");
        }
        let run = uuid::Uuid::now_v7().simple().to_string();
        http_load(
            &self.portal,
            &self.token,
            WRITERS,
            duration,
            move |connection, n| Request::Post {
                path: paths[connection % paths.len()].clone(),
                idempotency_key: format!("bench-{run}-{connection}-{n}"),
                body: format!(r#"{{"title":"Bench {connection}-{n}","type":"quiz","score":75}}"#),
            },
        )
        .await
    }

    fn pid(&self, grading: usize) -> Option<Pid> {
        self.grading
            .get(grading)
            .map(|(_, process)| Pid::from_raw(process.0.id() as i32))
    }
}

/// A PostgreSQL database for one part: on `--database-url`'s server, or on
/// a throwaway durable server started here.
pub(crate) struct BenchDatabase {
    server: Option<ScratchPostgres>,
    given: Option<String>,
}

impl BenchDatabase {
    pub(crate) fn start(given: Option<&str>) -> anyhow::Result<BenchDatabase> {
        if let Some(url) = given {
            return Ok(BenchDatabase {
                server: None,
                given: Some(url.to_owned()),
            });
        }
        let server = ScratchPostgres::start_on(free_port()?, Durability::Durable)
            .context("no --database-url, and a throwaway PostgreSQL could not start")?;
        Ok(BenchDatabase {
            server: Some(server),
            given: None,
        })
    }

    /// This build's mesh with three grading instances on a fresh database,
    /// data under `data`.
    async fn mesh(&self, data: &Path) -> anyhow::Result<BenchMesh> {
        let url = self.fresh().await?;
        BenchMesh::start(
            &std::env::current_exe()?,
            3,
            Some(&url),
            data,
            &[],
            &Security::plaintext(),
        )
        .await
    }

    /// A fresh database's URL (the given one, emptied by nobody: use a
    /// fresh database per run when giving one).
    pub(crate) async fn fresh(&self) -> anyhow::Result<String> {
        match (&self.server, &self.given) {
            (Some(server), _) => {
                let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
                server.create_database(&name).await
            }
            (None, Some(url)) => Ok(url.clone()),
            (None, None) => bail!("no database"),
        }
    }
}

/// Reads on one grading instance (SQLite), alone or against a baseline build.
async fn sqlite_reads(args: &BenchArgs, data: &Path) -> anyhow::Result<BenchMesh> {
    let ours = BenchMesh::start(
        &std::env::current_exe()?,
        1,
        None,
        &data.join("ours"),
        &[],
        &Security::plaintext(),
    )
    .await?;
    let id = ours.student().await?;
    let json = format!("/api/students/{id}");
    let Some(baseline) = &args.baseline else {
        ours.reads(&json, args.duration)
            .await?
            .print("GET /api/students/{id}");
        ours.reads(&format!("/students/{id}"), args.duration)
            .await?
            .print("GET /students/{id} (HTML)");
        return Ok(ours);
    };
    let base = BenchMesh::start(
        baseline,
        1,
        None,
        &data.join("baseline"),
        &[],
        &Security::plaintext(),
    )
    .await?;
    let uncached = BenchMesh::start(
        &std::env::current_exe()?,
        1,
        None,
        &data.join("uncached"),
        &["--read-cache", "false"],
        &Security::plaintext(),
    )
    .await?;
    let uncached_path = format!("/api/students/{}", uncached.student().await?);
    let base_path = format!("/api/students/{}", base.student().await?);
    let (mut ratios, mut uncached_ratios) = (Vec::new(), Vec::new());
    let (mut ours_rates, mut base_rates) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let mine = ours.reads(&json, args.duration).await?;
        let plain = uncached.reads(&uncached_path, args.duration).await?;
        let theirs = base.reads(&base_path, args.duration).await?;
        mine.print(&format!(
            "round {round}, this build: GET /api/students/{{id}}"
        ));
        plain.print(&format!("round {round}, this build without the read cache"));
        theirs.print(&format!(
            "round {round}, baseline: GET /api/students/{{id}}"
        ));
        ratios.push(mine.rate / theirs.rate.max(1.0));
        uncached_ratios.push(plain.rate / theirs.rate.max(1.0));
        ours_rates.push(mine.rate);
        base_rates.push(theirs.rate);
    }
    ratios.sort_by(f64::total_cmp);
    uncached_ratios.sort_by(f64::total_cmp);
    println!(
        "  this build / baseline: {:.2}x (rounds {:.2}x to {:.2}x); {} vs {} reads/s at the median",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        median(&mut ours_rates),
        median(&mut base_rates)
    );
    println!(
        "  without the read cache / baseline: {:.2}x (rounds {:.2}x to {:.2}x)",
        uncached_ratios[uncached_ratios.len() / 2],
        uncached_ratios[0],
        uncached_ratios[uncached_ratios.len() - 1],
    );
    ours.reads(&format!("/students/{id}"), args.duration)
        .await?
        .print("GET /students/{id} (HTML), this build");
    Ok(ours)
}

fn median(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "{:.0}",
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    )
}

/// Reads on three grading instances (PostgreSQL), then the fault run.
async fn postgres_reads_and_faults(
    args: &BenchArgs,
    database: &BenchDatabase,
    data: &Path,
) -> anyhow::Result<()> {
    let mesh = database.mesh(&data.join("pg")).await?;
    let id = mesh.student().await?;
    let path = format!("/api/students/{id}");
    mesh.reads(&path, args.duration)
        .await?
        .print("GET /api/students/{id}, grading x3 on PostgreSQL");

    // The same load while one instance is killed and another stopped.
    let fault_length = Duration::from_secs(3);
    let total = args.duration.max(Duration::from_secs(2)) + fault_length + Duration::from_secs(2);
    // Every fourth request a write, so that reads go to grading too (a
    // write drops the student from the portal's cache). Each connection
    // reads and writes a student of its own, so that none reaches the
    // limit of grades.
    let students: Vec<String> = mesh
        .new_students(CONNECTIONS)
        .await?
        .into_iter()
        .map(|id| format!("/api/students/{id}"))
        .collect();
    let load = {
        let portal = mesh.portal.clone();
        let token = mesh.token.clone();
        let run = uuid::Uuid::now_v7().simple().to_string();
        tokio::spawn(async move {
            http_load(&portal, &token, CONNECTIONS, total, move |connection, n| {
                let student = &students[connection % students.len()];
                if n % 4 == 3 {
                    Request::Post {
                        path: format!("{student}/grades"),
                        idempotency_key: format!("fault-{run}-{connection}-{n}"),
                        body: format!(
                            r#"{{"title":"Fault {connection}-{n}","type":"quiz","score":60}}"#
                        ),
                    }
                } else {
                    Request::Get(student.clone())
                }
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let from = Instant::now();
    if let Some(pid) = mesh.pid(0) {
        let _ = kill(pid, Signal::SIGKILL);
    }
    let stopped = mesh.pid(1);
    if let Some(pid) = stopped {
        let _ = kill(pid, Signal::SIGSTOP);
    }
    tokio::time::sleep(fault_length).await;
    if let Some(pid) = stopped {
        let _ = kill(pid, Signal::SIGCONT);
    }
    let to = Instant::now();
    let result = load.await??;
    println!(
        "  fault run (reads and 1 in 4 writes; kill -9 of one grading, SIGSTOP of another for {fault_length:?}): {} requests ({} writes), {} failed, p99 {} overall, p99 {} during the fault",
        result.latencies.len() + result.failed as usize,
        result.writes,
        result.failed,
        ms(percentile(&result.latencies, 99.0)),
        ms(result.p99_between(from, to)),
    );
    result.print_failures();
    Ok(())
}

/// Durable `AddGrade` through the portal, three grading instances on PostgreSQL.
async fn postgres_writes(
    args: &BenchArgs,
    database: &BenchDatabase,
    data: &Path,
) -> anyhow::Result<()> {
    let mesh = database.mesh(&data.join("pg-writes")).await?;
    let students = mesh.new_students(WRITERS).await?;
    let writes = mesh.writes(&students, args.duration).await?;
    println!(
        "  POST /api/students/{{id}}/grades (durable AddGrade, grading x3 on PostgreSQL, {WRITERS} connections over {} students): {:.0} writes/s, p50 {} p99 {} ({} writes, {} failed)",
        students.len(),
        writes.rate,
        ms(percentile(&writes.latencies, 50.0)),
        ms(percentile(&writes.latencies, 99.0)),
        writes.latencies.len(),
        writes.failed
    );
    Ok(())
}

/// Durable `AddGrade` straight to grading on SQLite, [`WRITERS`] in flight,
/// each writer to a student of its own (a student holds at most
/// [`crate::model::grading::MAX_GRADES_PER_STUDENT`] grades).
async fn sqlite_writes(args: &BenchArgs, mesh: &BenchMesh) -> anyhow::Result<()> {
    let (address, _) = mesh.grading.first().context("no grading instance")?;
    let channels: Vec<_> = (0..4)
        .map(|_| {
            lazy_channel(
                "grading",
                &format!("http://{address}"),
                "grading",
                &Tls::Off,
            )
        })
        .collect::<Result<_, _>>()?;
    let students = Arc::new(mesh.new_students(WRITERS).await?);
    let channels = Arc::new(channels);
    let add_grade = move |worker: usize, _n: u64| {
        let mut client = GradingClient::new(channels[worker % channels.len()].clone());
        let request = pb::AddGradeRequest {
            student_id: students[worker % students.len()].clone(),
            title: format!("Bench {worker}"),
            r#type: pb::GradeType::Quiz as i32,
            score: 75.0,
            request_id: String::new(),
        };
        async move { client.add_grade(request).await.map(|_| ()) }
    };
    let (rate, latencies) = measure(WRITERS, args.duration, add_grade).await?;
    println!(
        "  AddGrade straight to grading on SQLite (durable, {WRITERS} in flight): {rate:.0} writes/s, p50 {} p99 {} ({} writes)",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        latencies.len()
    );
    Ok(())
}

/// Runs the gradebook benchmark.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    println!(
        "gradebook: registry, log, grading and portal as processes; {CONNECTIONS} keep-alive connections for reads"
    );
    let data: PathBuf =
        std::env::temp_dir().join(format!("gradebook-bench-{}", uuid::Uuid::new_v4().simple()));
    let result = async {
        let sqlite = sqlite_reads(args, &data).await?;
        sqlite_writes(args, &sqlite).await?;
        drop(sqlite);
        match BenchDatabase::start(args.database_url.as_deref()) {
            Ok(database) => {
                postgres_reads_and_faults(args, &database, &data).await?;
                postgres_writes(args, &database, &data).await?;
            }
            Err(error) => println!("  PostgreSQL parts skipped: {error:#}"),
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&data);
    result
}
