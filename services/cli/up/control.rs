//! `up`'s control socket: the `gradebook.supervisor.v1.Supervisor` service
//! on a Unix socket in the data directory (`control.sock`, its owner's
//! only: whoever may read the data directory may change what runs), which
//! `gradebook rollout` calls. A rollout is checked whole before anything
//! changes (the service, the database it needs, a binary that runs, no
//! other rollout running), then carried out by [`crate::cli::up::rollout`]
//! on a task of its own, which goes on if the caller goes away. A
//! blue-green switch waits on that task for the operator's conclusion.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status};

use crate::cli::up::Kind;
use crate::cli::up::fleet::Fleet;
use crate::cli::up::rollout as shell;
use crate::mesh::api::RegistryApi;
use crate::mesh::{Shutdown, Tls};
use crate::model::supervisor::{Conclusion, Progress, RolloutPlan};
use crate::pb::supervisor::v1 as pb;
use crate::pb::supervisor::v1::supervisor_server::{Supervisor, SupervisorServer};

/// The control socket's file name in the data directory.
pub const SOCKET_NAME: &str = "control.sock";
/// How long a new binary may take to say its version.
const VERSION_PATIENCE: Duration = Duration::from_secs(10);
/// Progress messages waiting for a slow reader at most (more are dropped
/// from its stream; `up`'s own log keeps every one).
const PROGRESS_QUEUE: usize = 256;

/// What a rollout needs of the running `up`.
#[derive(Debug, Clone)]
pub struct Context {
    /// The children.
    pub fleet: Arc<Fleet>,
    /// How `up` reaches the daemons (as the operators).
    pub tls: Tls,
    /// The registry's URLs, comma-separated.
    pub registry_urls: String,
    /// Whether grading instances share a database (PostgreSQL).
    pub shared_database: bool,
}

/// The running control socket; [`Control::remove`] deletes its file.
#[derive(Debug)]
pub struct Control {
    path: PathBuf,
}

impl Control {
    /// Removes the socket's file (at shutdown).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The socket's path for the data directory `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Serves the control socket under `data_dir` until `shutdown`.
pub fn serve(data_dir: &Path, context: Context, shutdown: &Shutdown) -> anyhow::Result<Control> {
    let path = socket_path(data_dir);
    // A file left by an `up` that died: this `up` holds the ports, so no
    // other one is running on this data directory.
    let _ = std::fs::remove_file(&path);
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    let service = ControlService {
        context,
        running: Arc::default(),
        shutdown: shutdown.clone(),
    };
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(SupervisorServer::new(service))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the control socket failed");
        }
    });
    tracing::info!(socket = %path.display(), "taking rollouts");
    Ok(Control { path })
}

/// The rollout that runs.
#[derive(Debug)]
struct Running {
    /// Its service.
    service: String,
    /// Where the operator's conclusions of a blue-green switch go.
    conclusions: mpsc::Sender<(Conclusion, mpsc::Sender<Progress>)>,
}

/// The service behind the socket.
#[derive(Debug, Clone)]
struct ControlService {
    context: Context,
    /// The rollout that runs, if one does.
    running: Arc<Mutex<Option<Running>>>,
    shutdown: Shutdown,
}

impl ControlService {
    fn running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The kind of daemon a rollout of `service` replaces, if it can.
fn rollable(service: &str, shared_database: bool) -> Result<Kind, Status> {
    let kind = Kind::START_ORDER
        .into_iter()
        .find(|k| k.name() == service)
        .ok_or_else(|| {
            Status::not_found(format!(
                "service: no service {service:?} runs here (registry, log, grading, portal)"
            ))
        })?;
    match kind {
        Kind::Grading if !shared_database => Err(Status::failed_precondition(
            "service: a rolling update runs old and new grading instances side by side, so they \
             must share a PostgreSQL database (gradebook up --database-url); with SQLite, stop \
             gradebook up and start the new binary instead",
        )),
        Kind::Grading => Ok(kind),
        Kind::Registry | Kind::Log | Kind::Portal => Err(Status::unimplemented(format!(
            "service: rolling updates of {service} are not supported yet (only grading): \
             restart gradebook up with the new binary"
        ))),
    }
}

/// The version `binary` says it is (`gradebook --version`), or why it
/// does not run.
async fn version_of(binary: &Path) -> Result<String, Status> {
    let refused = |why: String| {
        Status::invalid_argument(format!("binary: {} does not run: {why}", binary.display()))
    };
    let output = tokio::process::Command::new(binary)
        .arg("--version")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(VERSION_PATIENCE, output)
        .await
        .map_err(|_| refused(format!("--version took over {VERSION_PATIENCE:?}")))?
        .map_err(|e| refused(e.to_string()))?;
    if !output.status.success() {
        return Err(refused(format!("--version exited with {}", output.status)));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .strip_prefix("gradebook ")
        .map(str::to_owned)
        .ok_or_else(|| {
            refused(format!(
                "--version printed {:?}, not gradebook's",
                text.trim()
            ))
        })
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::RolloutProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Supervisor for ControlService {
    type RolloutStream = ProgressStream;

    async fn rollout(
        &self,
        request: Request<pb::RolloutRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let plan = RolloutPlan::try_from(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let kind = rollable(&plan.service, self.context.shared_database)?;
        let built = version_of(&plan.binary).await?;
        let version = plan
            .args
            .iter()
            .find(|(flag, _)| flag == "--report-version")
            .map_or(built, |(_, reported)| reported.clone());
        let registry = RegistryApi::connect(&self.context.registry_urls, &self.context.tls)
            .map_err(|e| Status::internal(e.to_string()))?;
        let (conclude, conclusions) = mpsc::channel(1);
        {
            let mut running = self.running();
            if let Some(other) = running.as_ref() {
                return Err(Status::failed_precondition(format!(
                    "a rollout of {} is running; wait for it to end (a blue-green switch ends with --finish or --rollback)",
                    other.service
                )));
            }
            *running = Some(Running {
                service: plan.service.clone(),
                conclusions: conclude,
            });
        }
        let (progress, stream) = mpsc::channel(PROGRESS_QUEUE);
        let rollout = shell::Rollout {
            plan,
            kind,
            version,
            fleet: self.context.fleet.clone(),
            registry,
            tls: self.context.tls.clone(),
        };
        let running = self.running.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            rollout.run(progress, conclusions, shutdown).await;
            *running
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        });
        let stream = ReceiverStream::new(stream)
            .map(|progress: Progress| Ok(pb::RolloutProgress::from(&progress)));
        Ok(Response::new(Box::pin(stream)))
    }

    type ConcludeStream = ProgressStream;

    async fn conclude(
        &self,
        request: Request<pb::ConcludeRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let (service, conclusion) = <(String, Conclusion)>::try_from(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let sender = self
            .running()
            .as_ref()
            .filter(|r| r.service == service)
            .map(|r| r.conclusions.clone())
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "no blue-green switch of {service} waits to be concluded"
                ))
            })?;
        let (progress, stream) = mpsc::channel(PROGRESS_QUEUE);
        sender.try_send((conclusion, progress)).map_err(|_| {
            Status::failed_precondition(format!(
                "the rollout of {service} is not waiting for a conclusion (it may be ending)"
            ))
        })?;
        let stream = ReceiverStream::new(stream)
            .map(|progress: Progress| Ok(pb::RolloutProgress::from(&progress)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_instances(
        &self,
        _request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let instances = self
            .context
            .fleet
            .all()
            .into_iter()
            .map(|child| pb::SupervisedInstance {
                service: child.kind.name().to_owned(),
                instance_id: child.name,
                address: child.address.to_string(),
                binary: child.binary.display().to_string(),
            })
            .collect();
        Ok(Response::new(pb::ListInstancesResponse { instances }))
    }
}
