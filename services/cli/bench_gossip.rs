//! `gradebook bench --only gossip`: the gossip engine on its own. The
//! simulator (virtual time, `gradebook sim`'s defaults: 100 writes, 10 ms
//! ± 5 ms per message, anti-entropy every second) at 25, 100 and 1,000
//! nodes; then Gossip Glomers #3d/#3e in the Maelstrom-like harness, with
//! real `gradebook maelstrom` processes: 25 nodes, 100 ms between nodes,
//! 100 requests a second for 20 s, as the challenges measure it.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::bench::BenchArgs;
use crate::glomers::{self, TestConfig, Workload};
use crate::gossip::sim::{self, SimConfig};

/// Runs the gossip benchmark.
pub async fn run(_args: &BenchArgs) -> anyhow::Result<()> {
    println!("gossip engine: the simulator on virtual time, seed 1");
    for nodes in [25, 100, 1_000] {
        let started = Instant::now();
        let report = tokio::task::spawn_blocking(move || {
            sim::run(SimConfig {
                nodes,
                ..SimConfig::default()
            })
        })
        .await
        .context("the simulator")?;
        println!(
            "  {nodes} nodes: {:.1} messages per change, {:.2} MB, convergence median {:?} p99 {:?} max {:?}, same state: {}, wall time {:.2} s",
            report.messages_per_change(),
            report.bytes as f64 / 1e6,
            report.convergence.median,
            report.convergence.p99,
            report.convergence.max,
            if report.identical { "yes" } else { "NO" },
            started.elapsed().as_secs_f64()
        );
    }

    println!(
        "Gossip Glomers #3d/#3e: 25 node processes, 100 ms between nodes, 100 requests/s for 20 s"
    );
    let report = glomers::workload::run(TestConfig {
        workload: Workload::Broadcast,
        bin: std::env::current_exe()?,
        nodes: 25,
        time_limit: Duration::from_secs(20),
        rate: 100.0,
        latency: Duration::from_millis(100),
        partitions: false,
        nemesis_interval: Duration::from_secs(10),
        recovery: Duration::from_secs(3),
        seed: 1,
    })
    .await?;
    let latencies = report
        .latencies()
        .map(|l| format!("median {} ms, p95 {} ms, max {} ms", l.median, l.p95, l.max))
        .unwrap_or_else(|| "none measured".to_owned());
    let lost = report.broadcast.as_ref().map_or(0, |b| b.lost.len());
    println!(
        "  {:.2} msgs-per-op (targets: #3d < 30, #3e < 20, ours < 10); stable latency {latencies} (ours: median < 400, max < 600); {} operations, {lost} values lost, valid: {}",
        report.msgs_per_op, report.operations, report.valid
    );
    Ok(())
}
