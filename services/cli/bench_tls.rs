//! `gradebook bench --only tls`: what mutual TLS costs on the registry's
//! hot paths, plaintext and TLS side by side in one run. Each round starts a
//! fresh registry per mode (alternating, so both see the same machine) with
//! 64 instances of a service whose health server speaks the same mode, then
//! measures their re-registration (the SDK's heartbeat, the hottest write)
//! and `List` over long-lived connections, so handshakes are amortised as
//! in the mesh. It prints each mode's rate and the registry's CPU per call,
//! and the TLS/plaintext ratios with their spread over the rounds; then the
//! same for the portal's read path without its cache.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cli::bench::{
    BenchArgs, Process, free_port, health_server, measure, spawn_daemon_with, wait_serving,
};
use crate::cli::bench_gradebook::{BenchMesh, Security};
use crate::mesh::Tls;
use crate::mesh::client::{lazy_channel, registry_client};
use crate::mesh::tls::{Identity, authority};
use crate::model::registry::HEALTH_SERVICE_METADATA;
use crate::pb::registry::v1 as pb;

/// The service the benchmark's instances belong to (and its identity).
const SERVICE: &str = "bench";
/// Instances registered, and re-registered over and over.
const INSTANCES: usize = 64;
/// Rounds per mode.
const ROUNDS: usize = 3;

/// One round's figures for one mode.
#[derive(Debug, Clone, Copy)]
struct Figures {
    register_rate: f64,
    register_cpu_us: f64,
    list_rate: f64,
    list_cpu_us: f64,
}

/// Runs the comparison.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let certs =
        std::env::temp_dir().join(format!("gradebook-bench-{}", uuid::Uuid::new_v4().simple()));
    let result = compare(args, &certs).await;
    let _ = std::fs::remove_dir_all(&certs);
    result
}

async fn compare(args: &BenchArgs, certs: &std::path::Path) -> anyhow::Result<()> {
    let identities = ["registry", "log", "grading", "portal", SERVICE, "admin"]
        .iter()
        .map(|name| Identity::new(name))
        .collect::<Result<Vec<_>, _>>()?;
    authority::ensure(
        certs,
        &identities,
        authority::DEFAULT_CERT_LIFETIME,
        SystemTime::now(),
    )?;
    println!(
        "tls: registry hot paths, plaintext vs mutual TLS; {ROUNDS} rounds each, {} calls in flight over {} connections, {:?} per measurement",
        args.concurrency, args.connections, args.duration
    );
    let mut plain = Vec::new();
    let mut tls = Vec::new();
    for _ in 0..ROUNDS {
        plain.push(round(args, None).await?);
        tls.push(round(args, Some(certs)).await?);
    }
    for (name, figures) in [("plaintext", &plain), ("mutual TLS", &tls)] {
        let mean =
            |f: fn(&Figures) -> f64| figures.iter().map(f).sum::<f64>() / figures.len() as f64;
        println!(
            "  {name}: Register {:.0}/s ({:.1} µs registry CPU per call), List {:.0}/s ({:.1} µs per call)",
            mean(|f| f.register_rate),
            mean(|f| f.register_cpu_us),
            mean(|f| f.list_rate),
            mean(|f| f.list_cpu_us),
        );
    }
    let ratios = |f: fn(&Figures) -> f64| -> (f64, f64, f64) {
        let r: Vec<f64> = plain.iter().zip(&tls).map(|(p, t)| f(t) / f(p)).collect();
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        let min = r.iter().copied().fold(f64::INFINITY, f64::min);
        let max = r.iter().copied().fold(0.0, f64::max);
        (mean, min, max)
    };
    for (what, f) in [
        (
            "Register rate",
            (|f: &Figures| f.register_rate) as fn(&Figures) -> f64,
        ),
        ("Register CPU per call", |f| f.register_cpu_us),
        ("List rate", |f| f.list_rate),
        ("List CPU per call", |f| f.list_cpu_us),
    ] {
        let (mean, min, max) = ratios(f);
        println!("  TLS/plaintext {what}: {mean:.2}x (rounds {min:.2}x to {max:.2}x)");
    }
    portal_reads(args, certs).await
}

/// The portal's read path without its cache, so that every read is a gRPC
/// call to grading (mutual TLS or plaintext): registry, log, grading on
/// SQLite and the portal as processes, per mode and round.
async fn portal_reads(args: &BenchArgs, certs: &std::path::Path) -> anyhow::Result<()> {
    println!(
        "tls: GET /api/students/{{id}} through the portal with --read-cache false (each read a gRPC call to grading), {ROUNDS} rounds each"
    );
    let binary = std::env::current_exe()?;
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut failed = 0;
    for round in 0..ROUNDS {
        for (mode, security) in [Security::plaintext(), Security::mutual(certs)?]
            .into_iter()
            .enumerate()
        {
            let data = certs.join(format!("mesh-{round}-{mode}"));
            let mesh = BenchMesh::start(
                &binary,
                1,
                None,
                &data,
                &["--read-cache", "false"],
                &security,
            )
            .await?;
            let student = mesh.student().await?;
            let load = mesh
                .reads(&format!("/api/students/{student}"), args.duration)
                .await?;
            rates[mode].push(load.rate);
            failed += load.failed;
        }
    }
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len().max(1) as f64;
    let ratios: Vec<f64> = rates[0].iter().zip(&rates[1]).map(|(p, t)| t / p).collect();
    println!(
        "  plaintext {:.0}/s, mutual TLS {:.0}/s: TLS/plaintext {:.2}x (rounds {:.2}x to {:.2}x), {failed} failed",
        mean(&rates[0]),
        mean(&rates[1]),
        mean(&ratios),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
    );
    Ok(())
}

/// One round in one mode: TLS with the certificates in `certs`, or plaintext.
async fn round(args: &BenchArgs, certs: Option<&std::path::Path>) -> anyhow::Result<Figures> {
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let listen = [
        "registry",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--ship-logs",
        "false",
    ]
    .map(str::to_owned);
    // The benchmark's clients and its health server both act as SERVICE.
    let (registry, service_tls) = match certs {
        None => (
            spawn_daemon_with(&std::env::current_exe()?, &listen, &[])?,
            Tls::Off,
        ),
        Some(dir) => (
            spawn_daemon_with(
                &std::env::current_exe()?,
                &listen,
                &[
                    ("GRADEBOOK_INSECURE", "false".as_ref()),
                    ("GRADEBOOK_CERTS", dir.as_os_str()),
                ],
            )?,
            Tls::load(dir, Identity::new(SERVICE)?)?,
        ),
    };
    let admin = match certs {
        None => Tls::Off,
        Some(dir) => Tls::load(dir, Identity::admin())?,
    };
    wait_serving(&url, &admin).await?;
    let health = health_server(&[SERVICE.to_owned()], &service_tls).await?;
    let clients: Arc<Vec<_>> = Arc::new(
        (0..args.connections.max(1))
            .map(|_| {
                lazy_channel("--registry", &url, "registry", &service_tls).map(registry_client)
            })
            .collect::<Result<_, _>>()?,
    );
    let registration = move |worker: usize| pb::RegisterRequest {
        service: SERVICE.into(),
        instance_id: format!("{SERVICE}-{}", worker % INSTANCES),
        address: health.to_string(),
        metadata: [(HEALTH_SERVICE_METADATA.to_owned(), SERVICE.to_owned())].into(),
        ..Default::default()
    };
    for worker in 0..INSTANCES {
        let mut client = clients[worker % clients.len()].clone();
        client.register(registration(worker)).await?;
    }
    let pid = registry.0.id();
    let cpu = crate::cli::bench::cpu_time(pid)?;
    let register_clients = clients.clone();
    let (register_rate, register_latencies) =
        measure(args.concurrency, args.duration, move |worker, _| {
            let mut client = register_clients[worker % register_clients.len()].clone();
            let request = registration(worker);
            async move { client.register(request).await.map(|_| ()) }
        })
        .await?;
    let register_cpu = crate::cli::bench::cpu_time(pid)?.saturating_sub(cpu);
    let cpu = crate::cli::bench::cpu_time(pid)?;
    let list_clients = clients.clone();
    let (list_rate, list_latencies) = measure(args.concurrency, args.duration, move |worker, _| {
        let mut client = list_clients[worker % list_clients.len()].clone();
        let request = pb::ListRequest {
            service: SERVICE.into(),
            include_unhealthy: true,
        };
        async move { client.list(request).await.map(|_| ()) }
    })
    .await?;
    let list_cpu = crate::cli::bench::cpu_time(pid)?.saturating_sub(cpu);
    drop::<Process>(registry);
    let per_call = |cpu: Duration, calls: usize| cpu.as_secs_f64() * 1e6 / calls.max(1) as f64;
    Ok(Figures {
        register_rate,
        register_cpu_us: per_call(register_cpu, register_latencies.len()),
        list_rate,
        list_cpu_us: per_call(list_cpu, list_latencies.len()),
    })
}
