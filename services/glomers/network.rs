//! The network between node processes, as Maelstrom runs it: one process
//! per node, messages read from its stdout and written to the receiver's
//! stdin after a latency (none to or from clients), messages across a
//! partition dropped silently, and every message between servers counted.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use crate::maelstrom::protocol::Envelope;

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A node process did not start.
    #[error("cannot start node {node} ({bin}): {source}")]
    Spawn {
        /// The node.
        node: String,
        /// The binary.
        bin: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Who is cut off from whom: `blocked[dest]` holds the sources whose
/// messages to `dest` are dropped.
type Grudge = HashMap<String, HashSet<String>>;

/// Counts of messages sent, as Maelstrom's net stats count them.
#[derive(Debug, Default)]
pub struct Counts {
    /// Messages between servers (neither end a client), dropped ones too.
    pub servers: AtomicU64,
    /// Messages dropped by a partition.
    pub dropped: AtomicU64,
    /// Lines a node wrote that were not valid messages.
    pub invalid: AtomicU64,
}

/// The state every routing task shares.
struct Shared {
    latency: Duration,
    nodes: HashMap<String, mpsc::UnboundedSender<String>>,
    clients: Mutex<HashMap<String, HashMap<u64, oneshot::Sender<Value>>>>,
    grudge: Mutex<Grudge>,
    counts: Counts,
}

/// The running network and its node processes (killed when dropped).
pub struct Network {
    shared: Arc<Shared>,
    children: Mutex<Vec<Child>>,
    next_client: AtomicU64,
}

impl Network {
    /// Starts `count` nodes (`n0`...) running `bin maelstrom`, with
    /// `latency` between servers.
    pub fn start(bin: &Path, count: usize, latency: Duration) -> Result<Self, NetworkError> {
        let ids: Vec<String> = (0..count).map(|i| format!("n{i}")).collect();
        let mut children = Vec::with_capacity(count);
        let mut inputs = HashMap::new();
        let mut outputs = Vec::new();
        for id in &ids {
            let mut child = Command::new(bin)
                .arg("maelstrom")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| NetworkError::Spawn {
                    node: id.clone(),
                    bin: bin.display().to_string(),
                    source,
                })?;
            let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                continue;
            };
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            tokio::spawn(async move {
                while let Some(mut line) = rx.recv().await {
                    line.push('\n');
                    if stdin.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
            inputs.insert(id.clone(), tx);
            outputs.push(stdout);
            children.push(child);
        }
        let shared = Arc::new(Shared {
            latency,
            nodes: inputs,
            clients: Mutex::new(HashMap::new()),
            grudge: Mutex::new(Grudge::new()),
            counts: Counts::default(),
        });
        for stdout in outputs {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Envelope>(&line) {
                        Ok(envelope) => route(&shared, envelope),
                        Err(_) => {
                            shared.counts.invalid.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        Ok(Network {
            shared,
            children: Mutex::new(children),
            next_client: AtomicU64::new(0),
        })
    }

    /// The nodes' ids.
    pub fn node_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.shared.nodes.keys().cloned().collect();
        ids.sort_by_key(|id| id[1..].parse::<usize>().unwrap_or(usize::MAX));
        ids
    }

    /// A new client id (`c0`, `c1`, ...), never used before.
    pub fn new_client(&self) -> String {
        format!("c{}", self.next_client.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends `body` (which must carry `msg_id`) from `client` to `node` and
    /// waits up to `timeout` for the reply's body.
    pub async fn call(
        &self,
        client: &str,
        node: &str,
        body: Value,
        timeout: Duration,
    ) -> Option<Value> {
        let msg_id = body.get("msg_id")?.as_u64()?;
        let (tx, rx) = oneshot::channel();
        self.shared
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(client.to_owned())
            .or_default()
            .insert(msg_id, tx);
        route(
            &self.shared,
            Envelope {
                src: client.to_owned(),
                dest: node.to_owned(),
                body,
            },
        );
        let reply = tokio::time::timeout(timeout, rx).await.ok()?.ok();
        if let Some(waiting) = self
            .shared
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(client)
        {
            waiting.remove(&msg_id);
        }
        reply
    }

    /// Cuts the network as `grudge` says (replacing any partition).
    pub fn partition(&self, grudge: Grudge) {
        *self
            .shared
            .grudge
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = grudge;
    }

    /// Heals every partition.
    pub fn heal(&self) {
        self.partition(Grudge::new());
    }

    /// What was counted so far.
    pub fn counts(&self) -> &Counts {
        &self.shared.counts
    }

    /// How many node processes are still running.
    pub fn running(&self) -> usize {
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter_mut()
            .map(|child| usize::from(matches!(child.try_wait(), Ok(None))))
            .sum()
    }
}

/// Routes one message: to a waiting client, or (after the latency, unless a
/// partition drops it) to a node.
fn route(shared: &Arc<Shared>, envelope: Envelope) {
    let is_client = |id: &str| id.starts_with('c');
    if is_client(&envelope.dest) {
        let in_reply_to = envelope.body.get("in_reply_to").and_then(Value::as_u64);
        let waiting = shared
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&envelope.dest)
            .and_then(|w| in_reply_to.and_then(|id| w.remove(&id)));
        if let Some(waiting) = waiting {
            let _ = waiting.send(envelope.body);
        }
        return;
    }
    let Some(input) = shared.nodes.get(&envelope.dest).cloned() else {
        shared.counts.invalid.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let between_servers = !is_client(&envelope.src);
    if between_servers {
        shared.counts.servers.fetch_add(1, Ordering::Relaxed);
        let blocked = shared
            .grudge
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&envelope.dest)
            .is_some_and(|sources| sources.contains(&envelope.src));
        if blocked {
            shared.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    let line = envelope.to_line();
    if between_servers && !shared.latency.is_zero() {
        let latency = shared.latency;
        tokio::spawn(async move {
            tokio::time::sleep(latency).await;
            let _ = input.send(line);
        });
    } else {
        let _ = input.send(line);
    }
}
