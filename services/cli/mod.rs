//! The `gradebook` command line: one subcommand per daemon and tool. This is
//! the one place where settings are read, from flags and from `GRADEBOOK_*`
//! environment variables, and turned into the daemons' config structs.
//!
//! # Layout
//!
//! - [`daemons`]: `gradebook registry`, `log`, `grading` and `portal`.
//! - [`up`]: `gradebook up`, which starts and supervises all four.
//! - [`services`]: `gradebook services`, the registry's table and watch.
//! - [`route`]: `gradebook route`, traffic policies by version.
//! - [`rollout`]: `gradebook rollout`, rolling, blue-green and canary updates through `up`'s control socket.
//! - [`migrate`]: `gradebook migrate`, grading's schema: status, up, down, backup, restore.
//! - [`logs`]: `gradebook logs`, query and follow the log service.
//! - [`health_check`]: `gradebook health-check`, for containers and scripts.
//! - [`certs`]: `gradebook certs`, the local certificate authority by hand.
//! - [`users`]: `gradebook users`, the portal's accounts.
//! - [`listen`]: daemons' listening sockets, bound or passed down by `up`.
//! - [`scratch_postgres`]: a throwaway PostgreSQL for the benchmark and the tests.
//! - [`http_get`]: a minimal HTTP/1.1 client for `up` and `bench`.
//! - [`bench`]: `gradebook bench`, the registry's benchmarks.
//! - [`bench_gradebook`]: `gradebook bench --only gradebook`, the portal and grading.
//! - [`bench_rollout`]: `gradebook bench --only rollout`, rolling updates under load.
//! - [`bench_tls`]: `gradebook bench --only tls`, mutual TLS against plaintext.
//! - [`bench_tracing`]: `gradebook bench --only tracing`, every request traced against none.

pub mod bench;
pub mod bench_gossip;
pub mod bench_gradebook;
pub mod bench_group;
pub mod bench_rollout;
pub mod bench_tls;
pub mod bench_tracing;
pub mod certs;
pub mod daemons;
pub mod glomers;
pub mod health_check;
pub mod http_get;
pub mod listen;
pub mod logs;
pub mod migrate;
pub mod rollout;
pub mod route;
pub mod scratch_postgres;
pub mod services;
pub mod sim;
pub mod up;
pub mod users;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::mesh::Tls;
use crate::mesh::config::{DEFAULT_CERTS_DIR, DEFAULT_REGISTRY_URL};
use crate::mesh::tls::Identity;

/// Gradebook Mesh: a gRPC service mesh that runs a teachers' gradebook.
#[derive(Debug, Parser)]
#[command(name = "gradebook", version, about, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry daemon: the hub services register with.
    Registry(daemons::RegistryArgs),
    /// Run the log daemon: central, durable, queryable logging.
    Log(daemons::LogArgs),
    /// Run the grading daemon: students, grades and averages.
    Grading(daemons::GradingArgs),
    /// Run the teacher portal: the web app and the HTTP/JSON gateway.
    Portal(daemons::PortalArgs),
    /// Start the whole gradebook (registry, log, grading, portal) and supervise it.
    Up(up::UpArgs),
    /// Show the registered services, their instances and health.
    Services(services::ServicesArgs),
    /// Show or set how callers split a service's requests between its
    /// versions (canary weights, a blue-green switch).
    Route(route::RouteArgs),
    /// Replace a service's instances in a running `gradebook up` with a new
    /// binary, one at a time, rolled back on its own if a new one fails.
    Rollout(rollout::RolloutArgs),
    /// Show or change grading's schema: status, up, down, backup, restore.
    Migrate(migrate::MigrateArgs),
    /// Query or follow the central log.
    Logs(logs::LogsArgs),
    /// Check a gRPC server's health; exit 0 only when it is SERVING.
    HealthCheck(health_check::HealthCheckArgs),
    /// Create the mesh's certificate authority and issue certificates.
    Certs(certs::CertsArgs),
    /// Manage the portal's accounts: add, set a password, make an API token.
    Users(users::UsersArgs),
    /// Measure the registry: fan-out latency, throughput, monitoring cost.
    Bench(bench::BenchArgs),
    /// Simulate the registry's gossip engine: many nodes on virtual time,
    /// with latency, loss, partitions and crashes; print its figures.
    Sim(sim::SimArgs),
    /// Run a Maelstrom node (Gossip Glomers: echo, unique ids, broadcast)
    /// on stdin and stdout, for Maelstrom or `gradebook glomers`.
    Maelstrom,
    /// Run a Gossip Glomers workload against `gradebook maelstrom` nodes in
    /// a Maelstrom-like harness; print the verdict and msgs-per-op.
    Glomers(glomers::GlomersArgs),
}

/// Where to find the registry (shared by every subcommand that needs it).
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArg {
    /// The registry's URL.
    #[arg(long, env = "GRADEBOOK_REGISTRY", default_value = DEFAULT_REGISTRY_URL)]
    pub registry: String,
}

/// How a daemon or a tool secures its connections (shared by every
/// subcommand that talks to the mesh).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// The mesh's certificate directory: `ca.crt`, and `SERVICE.crt` and
    /// `SERVICE.key` per identity (`gradebook up` creates it under its data
    /// directory; `gradebook certs` makes one by hand).
    #[arg(long, env = "GRADEBOOK_CERTS", default_value = DEFAULT_CERTS_DIR)]
    pub certs: PathBuf,
    /// Turn TLS off: plaintext everywhere, for local debugging with
    /// `grpcurl -plaintext`. Never on a network others can reach.
    #[arg(long, env = "GRADEBOOK_INSECURE")]
    pub insecure: bool,
}

impl TlsArgs {
    /// The connections' security for `identity`: its certificate from
    /// `--certs`, or plaintext with a loud warning under `--insecure`.
    pub fn load(&self, identity: &str) -> anyhow::Result<Tls> {
        if self.insecure {
            eprintln!("{INSECURE_WARNING}");
            tracing::warn!("{INSECURE_WARNING}");
            return Ok(Tls::Off);
        }
        let identity = Identity::new(identity)?;
        Ok(Tls::load(&self.certs, identity)?)
    }
}

/// What `--insecure` prints at start.
pub const INSECURE_WARNING: &str = "WARNING: --insecure: TLS is OFF. Every connection is plaintext and unauthenticated: anyone who can reach these ports can read the traffic and act as any service. Use it only for local debugging.";

/// Parses a version an instance may register and a traffic policy name
/// (`--report-version`).
pub fn parse_version(value: &str) -> Result<String, String> {
    crate::model::traffic::check_version(value)
        .map(|()| value.to_owned())
        .map_err(|e| e.to_string())
}

/// Parses a duration such as `500ms`, `2s` or `1m`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{value:?} is not a duration like 500ms, 2s or 1m: {e}"))
}

/// Lets a tool whose output goes to a closed pipe (`gradebook logs | head`)
/// end quietly, as Unix tools do, instead of failing on the write: Rust
/// ignores SIGPIPE by default, which suits the daemons (a closed socket is
/// an error to handle) but not a tool printing to a pipe.
fn end_quietly_on_closed_pipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: the default disposition installs no handler, so no code of
    // ours ever runs in signal context.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Runs the parsed command line; returns the process's exit code.
pub async fn run(cli: Cli) -> ExitCode {
    if matches!(
        cli.command,
        Command::Services(_)
            | Command::Route(_)
            | Command::Logs(_)
            | Command::Users(_)
            | Command::Certs(_)
    ) {
        end_quietly_on_closed_pipe();
    }
    let result = match cli.command {
        Command::Registry(args) => daemons::registry(args).await,
        Command::Log(args) => daemons::log(args).await,
        Command::Grading(args) => daemons::grading(args).await,
        Command::Portal(args) => daemons::portal(args).await,
        Command::Up(args) => up::run(args).await,
        Command::Services(args) => services::run(args).await,
        Command::Route(args) => route::run(args).await,
        Command::Rollout(args) => rollout::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Logs(args) => logs::run(args).await,
        Command::HealthCheck(args) => return health_check::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Sim(args) => sim::run(args),
        Command::Maelstrom => crate::maelstrom::run(tokio::io::stdin(), tokio::io::stdout())
            .await
            .map_err(anyhow::Error::from),
        Command::Glomers(args) => glomers::run(args).await,
        Command::Certs(args) => certs::run(args).await,
        Command::Users(args) => users::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
