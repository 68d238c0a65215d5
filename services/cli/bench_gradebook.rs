//! `gradebook bench --only gradebook`: starts registry, log, grading and
//! portal as processes, then measures reads through the portal (the JSON API
//! and the HTML page of one student, over keep-alive HTTP/1.1 connections)
//! and durable `AddGrade` writes against grading. Prints figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::cli::bench::{
    BenchArgs, Process, free_port, measure, ms, percentile, spawn_daemon, wait_serving,
};
use crate::cli::http_get::HttpConnection;
use crate::mesh::client::lazy_channel;
use crate::pb::grading::v1 as pb;
use crate::pb::grading::v1::grading_client::GradingClient;

/// HTTP connections of the read benchmark.
const CONNECTIONS: usize = 16;
/// `AddGrade` calls in flight in the write benchmark.
const WRITERS: usize = 64;

async fn read_load(
    address: &str,
    path: &str,
    duration: Duration,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut connection = HttpConnection::open(address).await?;
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while start.elapsed() < duration {
                let t = Instant::now();
                let (status, _) = connection.get(&path).await?;
                if status != 200 {
                    bail!("GET {path} answered {status}");
                }
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    latencies.sort();
    Ok((
        latencies.len() as f64 / start.elapsed().as_secs_f64(),
        latencies,
    ))
}

fn print_reads(what: &str, rate: f64, latencies: &[Duration]) {
    println!(
        "  {what}: {rate:.0} requests/s, p50 {} p99 {} ({} requests, {CONNECTIONS} connections)",
        ms(percentile(latencies, 50.0)),
        ms(percentile(latencies, 99.0)),
        latencies.len()
    );
}

/// Runs the gradebook benchmark.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    println!("gradebook: registry, log, grading and portal as processes");
    let data =
        std::env::temp_dir().join(format!("gradebook-bench-{}", uuid::Uuid::new_v4().simple()));
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect::<Result<_, _>>()?;
    let address = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let registry_url = format!("http://{}", address(0));
    let common = |listen: String| -> Vec<String> {
        vec![
            "--listen".into(),
            listen,
            "--registry".into(),
            registry_url.clone(),
            "--ship-logs".into(),
            "false".into(),
        ]
    };
    let mut processes: Vec<Process> = Vec::new();
    processes.push(spawn_daemon(&[
        "registry".into(),
        "--listen".into(),
        address(0),
        "--ship-logs".into(),
        "false".into(),
    ])?);
    wait_serving(&registry_url).await?;
    let mut log = vec!["log".to_owned()];
    log.extend(common(address(1)));
    log.extend(["--data-dir".into(), data.join("log").display().to_string()]);
    processes.push(spawn_daemon(&log)?);
    let mut grading = vec!["grading".to_owned()];
    grading.extend(common(address(2)));
    grading.extend([
        "--data-dir".into(),
        data.join("grading").display().to_string(),
    ]);
    processes.push(spawn_daemon(&grading)?);
    wait_serving(&format!("http://{}", address(2))).await?;
    let mut portal = vec!["portal".to_owned()];
    portal.extend(common(address(3)));
    processes.push(spawn_daemon(&portal)?);
    wait_serving(&format!("http://{}", address(3))).await?;

    // The portal is ready once it sees a healthy grading instance.
    let mut connection = HttpConnection::open(&address(3)).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while connection.get("/readyz").await?.0 != 200 {
        if Instant::now() > deadline {
            bail!("the portal did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut grading_client =
        GradingClient::new(lazy_channel("grading", &format!("http://{}", address(2)))?);
    let students = grading_client
        .list_students(pb::ListStudentsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .students;
    let Some(student) = students.first() else {
        bail!("no demo student")
    };
    let id = student.id.clone();

    let (rate, latencies) =
        read_load(&address(3), &format!("/api/students/{id}"), args.duration).await?;
    print_reads("GET /api/students/{id}", rate, &latencies);
    let (rate, latencies) =
        read_load(&address(3), &format!("/students/{id}"), args.duration).await?;
    print_reads("GET /students/{id} (HTML)", rate, &latencies);

    // Durable writes: each answered only once committed (WAL, synchronous=FULL).
    let channels: Vec<_> = (0..4)
        .map(|_| lazy_channel("grading", &format!("http://{}", address(2))))
        .collect::<Result<_, _>>()?;
    let channels = Arc::new(channels);
    let add_grade = move |worker: usize, _n: u64| {
        let mut client = GradingClient::new(channels[worker % channels.len()].clone());
        let request = pb::AddGradeRequest {
            student_id: id.clone(),
            title: format!("Bench {worker}"),
            r#type: pb::GradeType::Quiz as i32,
            score: 75.0,
            request_id: String::new(),
        };
        async move { client.add_grade(request).await.map(|_| ()) }
    };
    let (rate, latencies) = measure(WRITERS, args.duration, add_grade).await?;
    println!(
        "  AddGrade (durable, {WRITERS} in flight): {rate:.0} writes/s, p50 {} p99 {} ({} writes)",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        latencies.len()
    );
    drop(processes);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
