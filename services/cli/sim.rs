//! `gradebook sim`: runs the gossip engine's simulator and prints what it
//! measured: messages per change, convergence, bytes, agreement.

use std::time::{Duration, Instant};

use crate::cli::parse_duration;
use crate::gossip::sim::{self, SimConfig};
use crate::gossip::{Config, Push};

/// `gradebook sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 25)]
    pub nodes: usize,
    /// The seed of every random choice: the same seed, the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How many writes, each at a random node.
    #[arg(long, default_value_t = 100)]
    pub writes: usize,
    /// The time between two writes.
    #[arg(long, value_parser = parse_duration, default_value = "10ms")]
    pub write_interval: Duration,
    /// One-way latency of a message.
    #[arg(long, value_parser = parse_duration, default_value = "10ms")]
    pub latency: Duration,
    /// How much a message's latency varies either way.
    #[arg(long, value_parser = parse_duration, default_value = "5ms")]
    pub jitter: Duration,
    /// The share of messages lost, 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Cut random halves apart and heal them, in turns, during the writes.
    #[arg(long)]
    pub partitions: bool,
    /// How many nodes crash (and restart with nothing) during the writes.
    #[arg(long, default_value_t = 0)]
    pub crashes: usize,
    /// Push through a hub instead of from each writer to every peer.
    #[arg(long)]
    pub hub: bool,
    /// How long new entries wait to be pushed together.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    pub push_interval: Duration,
    /// How often each node runs anti-entropy with a random peer.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub sync_interval: Duration,
    /// How long the run goes on after the last write and heal.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub settle: Duration,
}

impl SimArgs {
    /// The simulation these arguments describe.
    pub fn config(&self) -> anyhow::Result<SimConfig> {
        if !(0.0..=1.0).contains(&self.loss) {
            anyhow::bail!("--loss {} must be from 0 to 1", self.loss);
        }
        if self.nodes == 0 {
            anyhow::bail!("--nodes must be at least 1");
        }
        Ok(SimConfig {
            nodes: self.nodes,
            seed: self.seed,
            engine: Config {
                push: if self.hub { Push::Hub } else { Push::AllPeers },
                push_interval: self.push_interval,
                sync_interval: self.sync_interval,
                ..Config::default()
            },
            latency: self.latency,
            jitter: self.jitter,
            loss: self.loss,
            writes: self.writes,
            write_interval: self.write_interval,
            partitions: self.partitions,
            crashes: self.crashes,
            settle: self.settle,
        })
    }
}

/// Runs `gradebook sim`.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let started = Instant::now();
    let report = sim::run(config);
    println!("{report}");
    println!("wall time             {:?}", started.elapsed());
    if !report.identical {
        anyhow::bail!("the nodes did not end with the same state");
    }
    Ok(())
}
