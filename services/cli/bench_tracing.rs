//! `gradebook bench --only tracing`: what tracing every request costs.
//! Each round starts two gradebooks from this build, alternating so that
//! both see the same machine: one traces every request (the default) and
//! the other none (`OTEL_TRACES_SAMPLER=always_off`); both ship their log
//! records and spans to the log service. Two reads are measured: the
//! portal's read benchmark as it runs (`GET /api/students/{id}` from the
//! read cache: one span per request), and the same read without the read
//! cache, so that every request crosses the portal, grading and its store
//! (four spans), the worst case. It prints each one's reads per
//! second, latency and the daemons' CPU time per read, and the
//! traced/untraced ratios with their spread over the rounds. On a shared
//! machine the CPU per read is the steadier figure: the load generator's
//! rate moves with the neighbours.

use std::path::Path;

use crate::cli::bench::BenchArgs;
use crate::cli::bench_gradebook::{BenchMesh, Security};

/// Rounds per mode.
const ROUNDS: usize = 5;

/// One round's figures for one mode.
struct Figures {
    /// Reads per second.
    rate: f64,
    /// The daemons' CPU time per read, in microseconds.
    cpu_us: f64,
    /// Each daemon's CPU time per read, in microseconds, by name.
    by_daemon: Vec<(&'static str, f64)>,
}

/// Runs the comparison.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let data =
        std::env::temp_dir().join(format!("gradebook-bench-{}", uuid::Uuid::new_v4().simple()));
    let result = compare(args, &data).await;
    let _ = std::fs::remove_dir_all(&data);
    result
}

/// One round of one mode: a fresh gradebook, then reads for the
/// benchmark's duration.
async fn round(
    args: &BenchArgs,
    data: &Path,
    cached: bool,
    traced: bool,
    round: usize,
) -> anyhow::Result<Figures> {
    let mut security = Security::plaintext().shipping_logs();
    if !traced {
        security = security.with_env("OTEL_TRACES_SAMPLER", "always_off");
    }
    let name = if traced { "traced" } else { "untraced" };
    let cache = if cached { "true" } else { "false" };
    let mesh = BenchMesh::start(
        &std::env::current_exe()?,
        1,
        None,
        &data.join(format!("{name}-{cache}-{round}")),
        &["--read-cache", cache],
        &security,
    )
    .await?;
    let path = format!("/api/students/{}", mesh.student().await?);
    let before = mesh.cpu_by_daemon()?;
    let load = mesh.reads(&path, args.duration).await?;
    // The spans of the last reads are still being shipped and stored.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = mesh.cpu_by_daemon()?;
    if load.failed > 0 {
        anyhow::bail!("{} reads failed", load.failed);
    }
    let reads = (load.rate * args.duration.as_secs_f64()).max(1.0);
    let by_daemon: Vec<(&'static str, f64)> = after
        .iter()
        .zip(&before)
        .map(|((name, after), (_, before))| (*name, (*after - *before).as_secs_f64() * 1e6 / reads))
        .collect();
    let figures = Figures {
        rate: load.rate,
        cpu_us: by_daemon.iter().map(|(_, us)| us).sum(),
        by_daemon,
    };
    load.print(&format!(
        "round {round}, {name} ({:.0} µs of the daemons' CPU per read): GET /api/students/{{id}}",
        figures.cpu_us
    ));
    Ok(figures)
}

/// The median and the range of `values`, as `1.02x (0.95x to 1.10x)`.
fn spread(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "{:.2}x (rounds {:.2}x to {:.2}x)",
        values[values.len() / 2],
        values[0],
        values[values.len() - 1]
    )
}

async fn compare(args: &BenchArgs, data: &Path) -> anyhow::Result<()> {
    for (cached, what) in [
        (
            true,
            "the portal's read benchmark (read cache on: 1 span per read)",
        ),
        (false, "reads to grading (read cache off: 4 spans per read)"),
    ] {
        println!(
            "tracing: {what}, every request traced or none; {ROUNDS} rounds, {:?} each",
            args.duration
        );
        let (mut rates, mut cpus) = (Vec::new(), Vec::new());
        let mut extra: Vec<(&'static str, Vec<f64>)> = Vec::new();
        for n in 1..=ROUNDS {
            let traced = round(args, data, cached, true, n).await?;
            let untraced = round(args, data, cached, false, n).await?;
            rates.push(traced.rate / untraced.rate.max(1.0));
            cpus.push(traced.cpu_us / untraced.cpu_us.max(1e-9));
            for ((name, t), (_, u)) in traced.by_daemon.iter().zip(&untraced.by_daemon) {
                match extra.iter_mut().find(|(n, _)| n == name) {
                    Some((_, values)) => values.push(t - u),
                    None => extra.push((name, vec![t - u])),
                }
            }
        }
        println!("  reads/s, traced / untraced: {}", spread(rates));
        println!("  CPU per read, traced / untraced: {}", spread(cpus));
        let added: Vec<String> = extra
            .into_iter()
            .map(|(name, mut values)| {
                values.sort_by(f64::total_cmp);
                format!("{name} {:+.1}", values[values.len() / 2])
            })
            .collect();
        println!(
            "  CPU per read that tracing adds, µs (median of rounds): {}",
            added.join(", ")
        );
    }
    Ok(())
}
