//! `gradebook rollout`: asks a running `gradebook up` (through its control
//! socket in the data directory) to replace a service's instances with a
//! new binary, one at a time (`--strategy rolling`, the default), by a new
//! set switched to at once (`blue-green`, ended later with `--finish` or
//! `--rollback`) or step by step (`canary --steps 5,25,50,100 --interval
//! 30s`), and prints each step until the rollout is done or switched (exit
//! 0) or rolled back (exit 1, saying why). Flags after `--` go to the new
//! instances (`-- --report-version 2.0.0`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::cli::parse_duration;
use crate::cli::up::control::socket_path;
use crate::model::supervisor::{
    Conclusion, DEFAULT_CANARY_STEPS, Outcome, Progress, RolloutPlan, Strategy, conclude_request,
};
use crate::pb::supervisor::v1 as pb;
use crate::pb::supervisor::v1::supervisor_client::SupervisorClient;
use crate::rollout::FailureLimit;
use crate::rollout::canary::CanarySettings;
use crate::rollout::rolling::RollingSettings;

/// How the traffic moves to the new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyArg {
    /// Instances replaced one at a time.
    Rolling,
    /// A full new set, every request switched to it at once; the old set
    /// kept until --finish (or --rollback).
    BlueGreen,
    /// A full new set, given a growing share step by step.
    Canary,
}

/// `gradebook rollout`.
#[derive(Debug, Clone, clap::Args)]
pub struct RolloutArgs {
    /// The service whose instances are replaced (grading).
    pub service: String,
    /// The new binary.
    #[arg(long, required_unless_present_any = ["finish", "rollback"])]
    pub binary: Option<PathBuf>,
    /// How the traffic moves to the new version.
    #[arg(long, value_enum, default_value = "rolling")]
    pub strategy: StrategyArg,
    /// For a canary: its share at each step, in percent (rising, ending at 100).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_CANARY_STEPS)]
    pub steps: Vec<u32>,
    /// For a canary: how long each step lasts.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub interval: Duration,
    /// Finish the blue-green switch of SERVICE: its old set drains.
    #[arg(long, conflicts_with_all = ["binary", "rollback"])]
    pub finish: bool,
    /// Roll the blue-green switch of SERVICE back: every request to the
    /// old set again, the new set stops.
    #[arg(long, conflicts_with_all = ["binary", "finish"])]
    pub rollback: bool,
    /// The data directory of the `gradebook up` to ask.
    #[arg(long, env = "GRADEBOOK_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// How long a new instance may take to become SERVING.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub ready_timeout: Duration,
    /// How long a SERVING new instance is watched before its old one drains.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub observe: Duration,
    /// Requests a new instance must have answered before it is judged (0:
    /// judged by its health alone, for a mesh without traffic).
    #[arg(long, default_value_t = FailureLimit::default().min_requests)]
    pub min_requests: u64,
    /// The share of failed requests (0 to 1) above which a new instance is
    /// rolled back.
    #[arg(long, default_value_t = FailureLimit::default().max_error_ratio)]
    pub max_error_ratio: f64,
    /// Flags for the new instances, replacing the old ones' (after `--`).
    #[arg(last = true)]
    pub flags: Vec<String>,
}

/// A channel to the control socket at `path`.
async fn connect(path: &Path) -> anyhow::Result<Channel> {
    let path = path.to_owned();
    let shown = path.display().to_string();
    // The URI is not used: every connection goes to the socket.
    Endpoint::from_static("http://gradebook-up")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .with_context(|| {
            format!("cannot reach gradebook up at {shown}: is it running with this --data-dir?")
        })
}

/// Prints a rollout's progress until it ends; fails when it was rolled back.
async fn follow(mut stream: tonic::Streaming<pb::RolloutProgress>) -> anyhow::Result<()> {
    while let Some(message) = stream
        .message()
        .await
        .context("the rollout's progress broke off (it goes on in gradebook up: see its log)")?
    {
        let progress = Progress::from(message);
        println!("{}", progress.message);
        match progress.outcome {
            Some(Outcome::Done | Outcome::Switched) => return Ok(()),
            Some(Outcome::RolledBack) => bail!("the rollout was rolled back"),
            None => {}
        }
    }
    bail!("gradebook up ended the rollout's progress without saying how it ended")
}

/// Runs `gradebook rollout`.
pub async fn run(args: RolloutArgs) -> anyhow::Result<()> {
    let socket = socket_path(&args.data_dir);
    if args.finish || args.rollback {
        let conclusion = if args.finish {
            Conclusion::Finish
        } else {
            Conclusion::RollBack
        };
        let stream = SupervisorClient::new(connect(&socket).await?)
            .conclude(conclude_request(&args.service, conclusion))
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .into_inner();
        return follow(stream).await;
    }
    let given = args.binary.clone().unwrap_or_default();
    let binary =
        std::path::absolute(&given).with_context(|| format!("--binary {}", given.display()))?;
    let strategy = match args.strategy {
        StrategyArg::Rolling => Strategy::Rolling,
        StrategyArg::BlueGreen => Strategy::BlueGreen,
        StrategyArg::Canary => {
            let mut canary = CanarySettings::new(args.steps.clone(), args.interval)
                .map_err(|e| anyhow::anyhow!("--{e}"))?;
            canary.min_requests = args.min_requests;
            Strategy::Canary(canary)
        }
    };
    let flags: Vec<(String, String)> = args
        .flags
        .chunks(2)
        .map(|pair| (pair[0].clone(), pair.get(1).cloned().unwrap_or_default()))
        .collect();
    let plan = RolloutPlan {
        service: args.service.clone(),
        binary,
        settings: RollingSettings {
            ready_timeout: args.ready_timeout,
            observe: args.observe,
            failures: FailureLimit {
                min_requests: args.min_requests,
                max_error_ratio: args.max_error_ratio,
            },
            ..RollingSettings::default()
        },
        args: flags,
        strategy,
    };
    let mut request = pb::RolloutRequest::from(&plan);
    // An odd flag list is the server's to refuse, naming it.
    request.args = args.flags.clone();
    let stream = SupervisorClient::new(connect(&socket).await?)
        .rollout(request)
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
    follow(stream).await
}
