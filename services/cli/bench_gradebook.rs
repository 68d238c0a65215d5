//! `gradebook bench --only gradebook`: starts registry, log, grading and
//! portal as processes, then measures reads through the portal (the JSON API
//! and the HTML page of one student, over keep-alive HTTP/1.1 connections)
//! and durable `AddGrade` writes against grading. Prints figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::bench::{
    BenchArgs, Process, free_port, ms, percentile, spawn_daemon, wait_serving,
};
use crate::mesh::client::lazy_channel;
use crate::pb::grading::v1 as pb;
use crate::pb::grading::v1::grading_client::GradingClient;

/// HTTP connections of the read benchmark.
const CONNECTIONS: usize = 16;
/// `AddGrade` calls in flight in the write benchmark.
const WRITERS: usize = 64;

/// One keep-alive HTTP/1.1 connection that GETs a path again and again.
struct HttpConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl HttpConnection {
    async fn open(address: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConnection {
            stream,
            buffer: Vec::with_capacity(64 * 1024),
        })
    }

    /// GETs `path`; returns the status code and body length.
    async fn get(&mut self, path: &str) -> anyhow::Result<(u16, usize)> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        self.stream.write_all(request.as_bytes()).await?;
        self.buffer.clear();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).to_ascii_lowercase();
                let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .context("no content-length")?;
                while self.buffer.len() < end + 4 + length {
                    let n = self.stream.read(&mut chunk).await?;
                    if n == 0 {
                        bail!("connection closed");
                    }
                    self.buffer.extend_from_slice(&chunk[..n]);
                }
                return Ok((status, length));
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

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
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..WRITERS {
        let mut client = GradingClient::new(channels[worker % channels.len()].clone());
        let student_id = id.clone();
        let duration = args.duration;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while start.elapsed() < duration {
                let t = Instant::now();
                client
                    .add_grade(pb::AddGradeRequest {
                        student_id: student_id.clone(),
                        title: format!("Bench {worker}"),
                        r#type: pb::GradeType::Quiz as i32,
                        score: 75.0,
                    })
                    .await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, tonic::Status>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    latencies.sort();
    println!(
        "  AddGrade (durable, {WRITERS} in flight): {:.0} writes/s, p50 {} p99 {} ({} writes)",
        latencies.len() as f64 / start.elapsed().as_secs_f64(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        latencies.len()
    );
    drop(processes);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
