//! `gradebook bench`: measures a real registry process on this machine:
//! dependency-update fan-out to many watchers (on registration and on
//! kill -9 of a provider), registration and `List` throughput, and the
//! registry's memory and CPU while it monitors many instances. It prints
//! figures; it asserts nothing (the tests do that).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic_health::ServingStatus;

use crate::cli::parse_duration;
use crate::mesh::Tls;
use crate::mesh::client::{lazy_channel, registry_client};
use crate::mesh::tls::ClientAuth;
use crate::mesh::tls::accept::{self, Accepting, DEFAULT_MAX_CONNECTIONS};
use crate::model::registry::HEALTH_SERVICE_METADATA;
use crate::pb::registry::v1 as pb;
use crate::pb::registry::v1::registry_client::RegistryClient;

/// `gradebook bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Which benchmarks to run.
    #[arg(long, value_enum, default_values_t = [Part::Fanout, Part::Throughput, Part::Monitoring, Part::Gradebook, Part::Group, Part::Gossip])]
    pub only: Vec<Part>,
    /// Watchers of the provider's service in the fan-out benchmark.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Registrations (and kills) measured in the fan-out benchmark.
    #[arg(long, default_value_t = 30)]
    pub rounds: usize,
    /// How long each throughput measurement runs.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub duration: Duration,
    /// Calls in flight at once in the throughput benchmark.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Connections the throughput benchmark spreads its calls over.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Instances monitored in the monitoring benchmark.
    #[arg(long, default_value_t = 1000)]
    pub instances: usize,
    /// How long the registry's CPU use is sampled in the monitoring benchmark.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub sample: Duration,
    /// Another build's `gradebook` binary (for example today's main, built
    /// in a git worktree): the gradebook reads alternate between it and
    /// this build, and the ratio is printed.
    #[arg(long)]
    pub baseline: Option<std::path::PathBuf>,
    /// PostgreSQL for the gradebook's PostgreSQL parts; a throwaway durable
    /// server is started from the machine's `postgresql` package when absent.
    #[arg(long, env = "GRADEBOOK_DATABASE_URL")]
    pub database_url: Option<String>,
}

/// One benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Watch fan-out latency on registration and on kill -9.
    Fanout,
    /// Register, deregister and List calls per second.
    Throughput,
    /// Registry RSS and CPU while monitoring many instances.
    Monitoring,
    /// The gradebook: reads through the portal, durable grade writes.
    Gradebook,
    /// The registry's hot paths with mutual TLS and without, side by side.
    Tls,
    /// Reads through the portal with every request traced and with none.
    Tracing,
    /// Three registry nodes: convergence of a change, and failover.
    Group,
    /// Rolling updates of grading x3 through `gradebook up`, under load.
    Rollout,
    /// The gossip engine: the simulator at 25 to 1,000 nodes, and Gossip
    /// Glomers #3d/#3e in the harness.
    Gossip,
}

/// A daemon started by the benchmark, killed when dropped.
pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn spawn_daemon(args: &[String]) -> anyhow::Result<Process> {
    let exe = std::env::current_exe().context("cannot find the gradebook binary")?;
    spawn_daemon_from(&exe, args)
}

/// Starts `binary` (this build's, or a baseline build's) with `args`.
pub(crate) fn spawn_daemon_from(
    binary: &std::path::Path,
    args: &[String],
) -> anyhow::Result<Process> {
    spawn_daemon_with(binary, args, &[])
}

/// [`spawn_daemon_from`] with extra environment variables.
pub(crate) fn spawn_daemon_with(
    binary: &std::path::Path,
    args: &[String],
    env: &[(&str, &std::ffi::OsStr)],
) -> anyhow::Result<Process> {
    let child = Command::new(binary)
        .args(args)
        .env("GRADEBOOK_LOG_LEVEL", "warn")
        // The benchmarks measure plaintext unless they say otherwise
        // (`env` comes after, and wins).
        .env("GRADEBOOK_INSECURE", "true")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start a daemon")?;
    Ok(Process(child))
}

/// Waits (15 s at most) until the server at `url` answers SERVING to a
/// client connecting as `tls` says.
pub(crate) async fn wait_serving(url: &str, tls: &Tls) -> anyhow::Result<()> {
    if !crate::cli::health_check::wait_serving(url, tls, Duration::from_secs(15)).await {
        bail!("{url} did not become SERVING");
    }
    Ok(())
}

/// A grpc.health.v1 server in this process that answers SERVING for
/// `names`, secured as `tls` says: the stand-in for providers and
/// monitored instances.
pub(crate) async fn health_server(names: &[String], tls: &Tls) -> anyhow::Result<SocketAddr> {
    let (reporter, service) = tonic_health::server::health_reporter();
    for name in names {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let accepting = Accepting::new(tls, ClientAuth::Required, false, None)?;
    tokio::spawn(async move {
        let _keep = reporter;
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(accept::incoming(
                listener,
                accepting,
                DEFAULT_MAX_CONNECTIONS,
            ))
            .await;
    });
    Ok(address)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

/// A fresh registry process for one benchmark, so that none inherits
/// another's memory or load.
struct BenchRegistry {
    url: String,
    pid: u32,
    _process: Process,
}

async fn fresh_registry() -> anyhow::Result<BenchRegistry> {
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let process = spawn_daemon(&[
        "registry".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--ship-logs".into(),
        "false".into(),
    ])?;
    wait_serving(&url, &Tls::Off).await?;
    Ok(BenchRegistry {
        url,
        pid: process.0.id(),
        _process: process,
    })
}

/// Runs the selected benchmarks, each against a registry process of its own.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    println!("machine: {}", machine());
    if args.only.contains(&Part::Fanout) {
        let registry = fresh_registry().await?;
        fanout(&registry.url, &args).await?;
    }
    if args.only.contains(&Part::Throughput) {
        let registry = fresh_registry().await?;
        throughput(&registry.url, registry.pid, &args).await?;
    }
    if args.only.contains(&Part::Monitoring) {
        let registry = fresh_registry().await?;
        monitoring(&registry.url, registry.pid, &args).await?;
    }
    if args.only.contains(&Part::Gradebook) {
        crate::cli::bench_gradebook::run(&args).await?;
    }
    if args.only.contains(&Part::Tls) {
        crate::cli::bench_tls::run(&args).await?;
    }
    if args.only.contains(&Part::Tracing) {
        crate::cli::bench_tracing::run(&args).await?;
    }
    if args.only.contains(&Part::Rollout) {
        crate::cli::bench_rollout::run(&args).await?;
    }
    if args.only.contains(&Part::Group) {
        crate::cli::bench_group::run(&args).await?;
    }
    if args.only.contains(&Part::Gossip) {
        crate::cli::bench_gossip::run(&args).await?;
    }
    Ok(())
}

/// Arrival times of watch events, by (instance id, what happened).
type Arrivals = Arc<Mutex<HashMap<(String, &'static str), Vec<Instant>>>>;

fn label(kind: i32, health: i32) -> &'static str {
    match (
        pb::ChangeKind::try_from(kind),
        pb::HealthStatus::try_from(health),
    ) {
        (Ok(pb::ChangeKind::Added), _) => "added",
        (Ok(pb::ChangeKind::Removed), _) => "removed",
        (Ok(pb::ChangeKind::HealthChanged), Ok(pb::HealthStatus::Serving)) => "serving",
        (Ok(pb::ChangeKind::HealthChanged), Ok(pb::HealthStatus::Unreachable)) => "unreachable",
        _ => "other",
    }
}

async fn start_watchers(url: &str, count: usize, services: &[&str]) -> anyhow::Result<Arrivals> {
    let arrivals: Arrivals = Arc::default();
    // Watch streams are spread over a few HTTP/2 connections.
    let channels: Vec<Channel> = (0..(count / 100).max(1))
        .map(|_| lazy_channel("--registry", url, "registry", &Tls::Off))
        .collect::<Result<_, _>>()?;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(count.max(1));
    for i in 0..count {
        let mut client = registry_client(channels[i % channels.len()].clone());
        let arrivals = arrivals.clone();
        let ready = ready_tx.clone();
        let request = pb::WatchRequest {
            services: services.iter().map(|s| s.to_string()).collect(),
        };
        tokio::spawn(async move {
            let Ok(response) = client.watch(request).await else {
                return;
            };
            let mut stream = response.into_inner();
            while let Ok(Some(event)) = stream.message().await {
                match event.event {
                    Some(pb::watch_event::Event::Snapshot(_)) => {
                        let _ = ready.send(()).await;
                    }
                    Some(pb::watch_event::Event::Change(change)) => {
                        let at = Instant::now();
                        if let Some(instance) = change.instance {
                            let key = (instance.instance_id, label(change.kind, instance.health));
                            if let Ok(mut arrivals) = arrivals.lock() {
                                arrivals.entry(key).or_default().push(at);
                            }
                        }
                    }
                    Some(pb::watch_event::Event::Policy(_)) | None => {}
                }
            }
        });
    }
    drop(ready_tx);
    for _ in 0..count {
        if tokio::time::timeout(Duration::from_secs(30), ready_rx.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            bail!("not every watcher got its snapshot");
        }
    }
    Ok(arrivals)
}

/// Waits until every watcher saw `what` for `instance`; returns the time
/// from `start` to the first and the last arrival, and every arrival.
async fn all_saw(
    arrivals: &Arrivals,
    instance: &str,
    what: &'static str,
    watchers: usize,
    start: Instant,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = arrivals
            .lock()
            .ok()
            .and_then(|a| a.get(&(instance.to_owned(), what)).cloned())
            .unwrap_or_default();
        if seen.len() >= watchers {
            let mut latencies: Vec<Duration> = seen
                .iter()
                .map(|t| t.saturating_duration_since(start))
                .collect();
            latencies.sort();
            return Ok((latencies[latencies.len() - 1], latencies));
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {watchers} watchers saw {what} for {instance}",
                seen.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn report(title: &str, lasts: &mut [Duration], all: &mut [Duration]) {
    lasts.sort();
    all.sort();
    println!(
        "  {title}: to the last watcher p50 {} p99 {} max {}; per event p50 {} p99 {} ({} rounds, {} events)",
        ms(percentile(lasts, 50.0)),
        ms(percentile(lasts, 99.0)),
        ms(percentile(lasts, 100.0)),
        ms(percentile(all, 50.0)),
        ms(percentile(all, 99.0)),
        lasts.len(),
        all.len()
    );
}

async fn fanout(url: &str, args: &BenchArgs) -> anyhow::Result<()> {
    println!("fan-out: 1 provider, {} watchers", args.watchers);
    let service = "bench-provider";
    let arrivals = start_watchers(url, args.watchers, &[service, crate::log::SERVICE_NAME]).await?;
    let health = health_server(&["bench".into()], &Tls::Off).await?;
    let mut client = registry_client(lazy_channel("--registry", url, "registry", &Tls::Off)?);
    let (mut lasts, mut all) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let id = format!("provider-{round}");
        let start = Instant::now();
        client
            .register(pb::RegisterRequest {
                service: service.into(),
                instance_id: id.clone(),
                address: health.to_string(),
                metadata: [(HEALTH_SERVICE_METADATA.to_owned(), "bench".to_owned())].into(),
                ..Default::default()
            })
            .await?;
        let (last, every) = all_saw(&arrivals, &id, "added", args.watchers, start).await?;
        lasts.push(last);
        all.extend(every);
        all_saw(&arrivals, &id, "serving", args.watchers, start).await?;
        client
            .deregister(pb::DeregisterRequest {
                instance_id: id.clone(),
            })
            .await?;
        all_saw(&arrivals, &id, "removed", args.watchers, start).await?;
    }
    report("registration -> ADDED", &mut lasts, &mut all);

    // kill -9 of a real provider process (a log daemon) to UNREACHABLE.
    let data =
        std::env::temp_dir().join(format!("gradebook-bench-{}", uuid::Uuid::new_v4().simple()));
    let (mut lasts, mut all) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.clamp(1, 10) {
        let id = format!("killed-{round}");
        let port = free_port()?;
        let mut provider = spawn_daemon(&[
            "log".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--registry".into(),
            url.into(),
            "--data-dir".into(),
            data.join(&id).display().to_string(),
            "--instance-id".into(),
            id.clone(),
            "--ship-logs".into(),
            "false".into(),
        ])?;
        all_saw(&arrivals, &id, "serving", args.watchers, Instant::now()).await?;
        let start = Instant::now();
        provider.0.kill()?;
        let (last, every) = all_saw(&arrivals, &id, "unreachable", args.watchers, start).await?;
        let _ = provider.0.wait();
        lasts.push(last);
        all.extend(every);
        client
            .deregister(pb::DeregisterRequest {
                instance_id: id.clone(),
            })
            .await?;
    }
    report("kill -9 -> UNREACHABLE", &mut lasts, &mut all);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// Runs `call` from `concurrency` tasks for `duration`; returns calls per
/// second and the sorted latencies.
pub(crate) async fn measure<F, Fut>(
    concurrency: usize,
    duration: Duration,
    call: F,
) -> anyhow::Result<(f64, Vec<Duration>)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let (rate, latencies, _) = measure_counted(concurrency, duration, None, call).await?;
    Ok((rate, latencies))
}

/// Like [`measure`], but each worker stops after `limits[worker]` calls
/// when limits are given; also returns how many calls each worker made.
async fn measure_counted<F, Fut>(
    concurrency: usize,
    duration: Duration,
    limits: Option<Arc<Vec<u64>>>,
    call: F,
) -> anyhow::Result<(f64, Vec<Duration>, Vec<u64>)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let call = call.clone();
        let limit = limits
            .as_ref()
            .map_or(u64::MAX, |l| l.get(worker).copied().unwrap_or(0));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while n < limit && (limit != u64::MAX || start.elapsed() < duration) {
                let t = Instant::now();
                call(worker, n).await?;
                latencies.push(t.elapsed());
                n += 1;
            }
            Ok::<_, tonic::Status>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    let mut counts = Vec::new();
    for task in tasks {
        let worker_latencies = task.await??;
        counts.push(worker_latencies.len() as u64);
        latencies.extend(worker_latencies);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Ok((
        latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
        counts,
    ))
}

/// Prints a call rate, its latencies, and the registry's CPU per call
/// (`cpu` is the registry's CPU time over the run): the server's own cost,
/// apart from the load generator that shares the machine.
fn print_rate(what: &str, rate: f64, latencies: &[Duration], cpu: Duration) {
    let per_call = cpu.as_secs_f64() / latencies.len().max(1) as f64;
    println!(
        "  {what}: {rate:.0}/s, latency p50 {} p99 {} ({} calls); registry CPU {:.1} µs per call (= {:.0}/s per core)",
        ms(percentile(latencies, 50.0)),
        ms(percentile(latencies, 99.0)),
        latencies.len(),
        per_call * 1e6,
        1.0 / per_call.max(1e-9)
    );
}

fn clients(url: &str, connections: usize) -> anyhow::Result<Arc<Vec<RegistryClient<Channel>>>> {
    let clients = (0..connections.max(1))
        .map(|_| lazy_channel("--registry", url, "registry", &Tls::Off).map(registry_client))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(clients))
}

async fn throughput(url: &str, pid: u32, args: &BenchArgs) -> anyhow::Result<()> {
    println!(
        "throughput: {} concurrent calls over {} connections, {:?} each",
        args.concurrency, args.connections, args.duration
    );
    let health = health_server(&["bench".into()], &Tls::Off).await?;
    let clients = clients(url, args.connections)?;
    let register = |service: &'static str, address: String| {
        let clients = clients.clone();
        move |worker: usize, n: u64| {
            let mut client = clients[worker % clients.len()].clone();
            let request = pb::RegisterRequest {
                service: service.into(),
                instance_id: format!("{service}-{worker}-{n}"),
                address: address.clone(),
                metadata: [(HEALTH_SERVICE_METADATA.to_owned(), "bench".to_owned())].into(),
                ..Default::default()
            };
            async move { client.register(request).await.map(|_| ()) }
        }
    };
    // New instances, each starting a health monitor.
    let cpu = cpu_time(pid)?;
    let (rate, latencies, registered) = measure_counted(
        args.concurrency,
        args.duration,
        None,
        register("bench-new", health.to_string()),
    )
    .await?;
    print_rate(
        "Register (new instances)",
        rate,
        &latencies,
        cpu_time(pid)?.saturating_sub(cpu),
    );
    let deregister = {
        let clients = clients.clone();
        move |worker: usize, n: u64| {
            let mut client = clients[worker % clients.len()].clone();
            let request = pb::DeregisterRequest {
                instance_id: format!("bench-new-{worker}-{n}"),
            };
            async move { client.deregister(request).await.map(|_| ()) }
        }
    };
    let cpu = cpu_time(pid)?;
    // Exactly the instances registered above.
    let (rate, latencies, _) = measure_counted(
        args.concurrency,
        args.duration,
        Some(Arc::new(registered)),
        deregister,
    )
    .await?;
    print_rate(
        "Deregister",
        rate,
        &latencies,
        cpu_time(pid)?.saturating_sub(cpu),
    );
    let mut client = clients[0].clone();
    let left = client
        .list(pb::ListRequest {
            service: "bench-new".into(),
            include_unhealthy: true,
        })
        .await?
        .into_inner()
        .instances
        .len();
    if left > 0 {
        bail!("{left} instances were left after deregistration");
    }

    // Re-registration of known instances (the SDK's idempotent refresh).
    let refresh = {
        let clients = clients.clone();
        let address = health.to_string();
        move |worker: usize, n: u64| {
            let mut client = clients[worker % clients.len()].clone();
            let request = pb::RegisterRequest {
                service: "bench-list".into(),
                instance_id: format!("bench-list-{}", (worker as u64 * 7 + n) % 3),
                address: address.clone(),
                metadata: [(HEALTH_SERVICE_METADATA.to_owned(), "bench".to_owned())].into(),
                ..Default::default()
            };
            async move { client.register(request).await.map(|_| ()) }
        }
    };
    let cpu = cpu_time(pid)?;
    let (rate, latencies) = measure(args.concurrency, args.duration, refresh).await?;
    print_rate(
        "Register (idempotent re-registration)",
        rate,
        &latencies,
        cpu_time(pid)?.saturating_sub(cpu),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .list(pb::ListRequest {
            service: "bench-list".into(),
            include_unhealthy: false,
        })
        .await?
        .into_inner()
        .instances
        .len()
        < 3
    {
        if Instant::now() > deadline {
            bail!("the 3 bench-list instances did not become healthy");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let list = {
        let clients = clients.clone();
        move |worker: usize, _n: u64| {
            let mut client = clients[worker % clients.len()].clone();
            let request = pb::ListRequest {
                service: "bench-list".into(),
                include_unhealthy: false,
            };
            async move { client.list(request).await.map(|_| ()) }
        }
    };
    let cpu = cpu_time(pid)?;
    let (rate, latencies) = measure(args.concurrency, args.duration, list).await?;
    print_rate(
        "List (a service of 3 instances)",
        rate,
        &latencies,
        cpu_time(pid)?.saturating_sub(cpu),
    );
    Ok(())
}

/// User plus system CPU time of a process, from /proc (in USER_HZ = 100 ticks).
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat; 0-based 11 and 12 after the name.
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields
            .get(12)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
    Ok(Duration::from_millis(ticks * 10))
}

fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(kb * 1024)
}

async fn monitoring(url: &str, pid: u32, args: &BenchArgs) -> anyhow::Result<()> {
    println!(
        "monitoring: {} instances under health checks at the default interval",
        args.instances
    );
    let names: Vec<String> = (0..args.instances)
        .map(|i| format!("monitored-{i}"))
        .collect();
    let health = health_server(&names, &Tls::Off).await?;
    let clients = clients(url, 1)?;
    let mut client = clients[0].clone();
    for name in &names {
        client
            .register(pb::RegisterRequest {
                service: "bench-monitored".into(),
                instance_id: name.clone(),
                address: health.to_string(),
                metadata: [(HEALTH_SERVICE_METADATA.to_owned(), name.clone())].into(),
                ..Default::default()
            })
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let healthy = client
            .list(pb::ListRequest {
                service: "bench-monitored".into(),
                include_unhealthy: false,
            })
            .await?
            .into_inner()
            .instances
            .len();
        if healthy == args.instances {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {healthy} of {} instances became healthy",
                args.instances
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let connection set-up settle, then sample.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = cpu_time(pid)?;
    let started = Instant::now();
    tokio::time::sleep(args.sample).await;
    let cpu = cpu_time(pid)?.saturating_sub(cpu_before);
    let wall = started.elapsed();
    let rss = rss_bytes(pid)?;
    println!(
        "  registry RSS {:.1} MB, CPU {:.1} % of one core (over {:?})",
        rss as f64 / 1e6,
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        args.sample
    );
    Ok(())
}
