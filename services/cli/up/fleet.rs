//! The children `up` supervises, shared by its start and stop sequence and
//! its control socket: each child's supervisor task, and the tokens that
//! stop it (with the rest of its kind, or alone, for a rollout) or kill
//! it. Nothing here waits while holding the lock.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::up::Kind;
use crate::cli::up::children::{ChildSpec, supervise};
use crate::mesh::Shutdown;
use crate::mesh::backoff::Backoff;

/// What is known of one supervised child.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildInfo {
    /// Its name (unique among the children).
    pub name: String,
    /// Which daemon.
    pub kind: Kind,
    /// Where it listens.
    pub address: SocketAddr,
    /// The binary it runs.
    pub binary: PathBuf,
    /// Its flags after the subcommand.
    pub args: Vec<String>,
}

/// One child's supervisor and the tokens that end it.
#[derive(Debug)]
struct Supervised {
    info: ChildInfo,
    /// Stops it gracefully (a child of its kind's token).
    stop: Shutdown,
    /// Kills it.
    kill: Shutdown,
    /// Becomes true once the supervisor has ended (the process is gone).
    ended: watch::Receiver<bool>,
    task: Option<JoinHandle<()>>,
    /// Asked to stop on its own (a rollout drains it).
    draining: bool,
}

#[derive(Debug, Default)]
struct Inner {
    children: Vec<Supervised>,
    /// Each kind's stop token: cancelled to stop every child of the kind.
    kinds: Vec<(Kind, Shutdown)>,
    /// The index of the last name [`Fleet::fresh_name`] gave.
    started: usize,
}

/// Every supervised child, cheap to share (`Arc<Fleet>`).
#[derive(Debug)]
pub struct Fleet {
    inner: Mutex<Inner>,
    backoff: Backoff,
}

impl Fleet {
    /// No child yet; children restart with `backoff`.
    pub fn new(backoff: Backoff) -> Self {
        Fleet {
            inner: Mutex::default(),
            backoff,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change is whole before the lock is let go.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts supervising `spec`.
    pub fn start(&self, spec: ChildSpec) {
        let mut inner = self.lock();
        let kind_stop = match inner.kinds.iter().find(|(k, _)| *k == spec.kind) {
            Some((_, stop)) => stop.clone(),
            None => {
                let stop = Shutdown::new();
                inner.kinds.push((spec.kind, stop.clone()));
                stop
            }
        };
        let stop = kind_stop.child_token();
        let kill = Shutdown::new();
        let (ended_tx, ended) = watch::channel(false);
        let info = ChildInfo {
            name: spec.name.clone(),
            kind: spec.kind,
            address: spec.address,
            binary: spec.binary.clone(),
            args: spec.args.clone(),
        };
        tracing::info!(daemon = %info.name, address = %info.address, binary = %info.binary.display(), "starting");
        let task = tokio::spawn({
            let (stop, kill, backoff) = (stop.clone(), kill.clone(), self.backoff);
            async move {
                supervise(spec, stop, kill, backoff).await;
                let _ = ended_tx.send(true);
            }
        });
        inner.children.push(Supervised {
            info,
            stop,
            kill,
            ended,
            task: Some(task),
            draining: false,
        });
    }

    /// A name for a new child of `kind` that no child has had: `grading-4`.
    pub fn fresh_name(&self, kind: Kind) -> String {
        let mut inner = self.lock();
        inner.started += 1;
        let taken = |name: &str| inner.children.iter().any(|c| c.info.name == name);
        let mut index = inner.started.max(2);
        while taken(&format!("{}-{index}", kind.name())) {
            index += 1;
        }
        inner.started = index;
        format!("{}-{index}", kind.name())
    }

    /// The children of `kind` that are not draining, in start order.
    pub fn running(&self, kind: Kind) -> Vec<ChildInfo> {
        self.lock()
            .children
            .iter()
            .filter(|c| c.info.kind == kind && !c.draining)
            .map(|c| c.info.clone())
            .collect()
    }

    /// Every child that is not draining.
    pub fn all(&self) -> Vec<ChildInfo> {
        self.lock()
            .children
            .iter()
            .filter(|c| !c.draining)
            .map(|c| c.info.clone())
            .collect()
    }

    /// The child, draining or not, called `name`.
    pub fn get(&self, name: &str) -> Option<ChildInfo> {
        self.lock()
            .children
            .iter()
            .find(|c| c.info.name == name)
            .map(|c| c.info.clone())
    }

    /// Asks the child `name` to drain and exit (not to be restarted);
    /// returns what becomes true once it has ended.
    pub fn drain(&self, name: &str) -> Option<watch::Receiver<bool>> {
        let mut inner = self.lock();
        let child = inner.children.iter_mut().find(|c| c.info.name == name)?;
        child.draining = true;
        child.stop.cancel();
        Some(child.ended.clone())
    }

    /// Kills the child `name` at once.
    pub fn kill(&self, name: &str) {
        if let Some(child) = self.lock().children.iter().find(|c| c.info.name == name) {
            child.kill.cancel();
        }
    }

    /// Forgets the children that have ended.
    pub fn prune(&self) {
        self.lock().children.retain(|c| !*c.ended.borrow());
    }

    /// Stops every child of `kind` and waits until they have ended.
    pub async fn stop_kind(&self, kind: Kind) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut inner = self.lock();
            if let Some((_, stop)) = inner.kinds.iter().find(|(k, _)| *k == kind) {
                stop.cancel();
            }
            inner
                .children
                .iter_mut()
                .filter(|c| c.info.kind == kind)
                .filter_map(|c| c.task.take())
                .collect()
        };
        for task in tasks {
            let _ = task.await;
        }
        tracing::debug!(kind = kind.name(), "stopped every instance");
    }
}
