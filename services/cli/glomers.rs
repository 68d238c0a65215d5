//! `gradebook glomers`: runs a Gossip Glomers workload against real
//! `gradebook maelstrom` processes in the Maelstrom-like harness and
//! prints the verdict and the figures; exits non-zero when a check fails.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::parse_duration;
use crate::glomers::{self, TestConfig, Workload};

/// The only fault the harness injects, as Maelstrom's `--nemesis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Nemesis {
    /// Partitions that come and go.
    Partition,
}

/// `gradebook glomers`.
#[derive(Debug, Clone, clap::Args)]
pub struct GlomersArgs {
    /// The workload.
    #[arg(short, long, value_enum)]
    pub workload: Workload,
    /// How many nodes.
    #[arg(long, default_value_t = 1)]
    pub node_count: usize,
    /// How long requests are made.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub time_limit: Duration,
    /// Requests per second, over all clients.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// One-way latency between nodes.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    pub latency: Duration,
    /// Faults to inject.
    #[arg(long, value_enum)]
    pub nemesis: Option<Nemesis>,
    /// The mean time between two partition changes.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub nemesis_interval: Duration,
    /// How long the nodes get after the heal before the final reads.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub recovery: Duration,
    /// The seed of the test's random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The node binary (this one by default), run as `BIN maelstrom`.
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `gradebook glomers`.
pub async fn run(args: GlomersArgs) -> anyhow::Result<()> {
    if args.node_count == 0 || args.rate <= 0.0 {
        anyhow::bail!("--node-count and --rate must be positive");
    }
    let bin = match args.bin {
        Some(bin) => bin,
        None => std::env::current_exe()?,
    };
    let report = glomers::workload::run(TestConfig {
        workload: args.workload,
        bin,
        nodes: args.node_count,
        time_limit: args.time_limit,
        rate: args.rate,
        latency: args.latency,
        partitions: args.nemesis.is_some(),
        nemesis_interval: args.nemesis_interval,
        recovery: args.recovery,
        seed: args.seed,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("workload      {:?}", report.workload);
        println!("nodes         {}", report.nodes);
        println!(
            "operations    {} ({} ok, {} not)",
            report.operations, report.ok, report.not_ok
        );
        println!(
            "msgs-per-op   {:.2} ({} between nodes, {} dropped by partitions)",
            report.msgs_per_op, report.server_messages, report.dropped
        );
        if let Some(broadcast) = &report.broadcast {
            println!(
                "values        {} attempted, {} stable, {} lost, {} never read, {} stale",
                broadcast.attempted,
                broadcast.stable,
                broadcast.lost.len(),
                broadcast.never_read,
                broadcast.stale
            );
        }
        if let Some(l) = report.latencies() {
            println!(
                "stable ms     min {} median {} p95 {} p99 {} max {}",
                l.min, l.median, l.p95, l.p99, l.max
            );
        }
        println!("valid         {}", report.valid);
    }
    if !report.valid {
        anyhow::bail!("the {:?} checks failed", report.workload);
    }
    Ok(())
}
