//! `gradebook rollout`: asks a running `gradebook up` (through its control
//! socket in the data directory) to replace a service's instances with a
//! new binary, one at a time, and prints each step until the rollout is
//! done (exit 0) or rolled back (exit 1, saying why). Flags after `--` go
//! to the new instances (`-- --report-version 2.0.0`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::cli::parse_duration;
use crate::cli::up::control::socket_path;
use crate::model::supervisor::{Outcome, Progress, RolloutPlan};
use crate::pb::supervisor::v1 as pb;
use crate::pb::supervisor::v1::supervisor_client::SupervisorClient;
use crate::rollout::FailureLimit;
use crate::rollout::rolling::RollingSettings;

/// `gradebook rollout`.
#[derive(Debug, Clone, clap::Args)]
pub struct RolloutArgs {
    /// The service whose instances are replaced (grading).
    pub service: String,
    /// The new binary.
    #[arg(long)]
    pub binary: PathBuf,
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

/// Runs `gradebook rollout`.
pub async fn run(args: RolloutArgs) -> anyhow::Result<()> {
    let binary = std::path::absolute(&args.binary)
        .with_context(|| format!("--binary {}", args.binary.display()))?;
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
    };
    let mut request = pb::RolloutRequest::from(&plan);
    // An odd flag list is the server's to refuse, naming it.
    request.args = args.flags.clone();
    let channel = connect(&socket_path(&args.data_dir)).await?;
    let mut stream = SupervisorClient::new(channel)
        .rollout(request)
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
    while let Some(message) = stream
        .message()
        .await
        .context("the rollout's progress broke off (it goes on in gradebook up: see its log)")?
    {
        let progress = Progress::from(message);
        println!("{}", progress.message);
        match progress.outcome {
            Some(Outcome::Done) => return Ok(()),
            Some(Outcome::RolledBack) => bail!("the rollout was rolled back"),
            None => {}
        }
    }
    bail!("gradebook up ended the rollout's progress without saying how it ended")
}
