//! Driving a workload as Maelstrom does: init every node (and, for
//! broadcast, send the topology), then for the time limit requests spread
//! at random over the test (`rate` per second in all) to free workers, one
//! synchronous client per node; partitions started and healed at random
//! meanwhile; then heal, wait for recovery, and (for broadcast) one final
//! read per node. The history goes to the checkers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::glomers::checker::{self, Function, Kind, Latencies, Op, SetFull};
use crate::glomers::network::{Network, NetworkError};

/// How long a client waits for `init_ok`.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for any other reply.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Which Gossip Glomers workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// #1: echo.
    Echo,
    /// #2: unique ids.
    UniqueIds,
    /// #3: broadcast.
    Broadcast,
}

/// A test to run.
#[derive(Debug, Clone)]
pub struct TestConfig {
    /// The workload.
    pub workload: Workload,
    /// The node binary (`gradebook`, run as `gradebook maelstrom`).
    pub bin: PathBuf,
    /// How many nodes.
    pub nodes: usize,
    /// How long requests are made.
    pub time_limit: Duration,
    /// Requests per second, over all clients.
    pub rate: f64,
    /// One-way latency between nodes.
    pub latency: Duration,
    /// Partitions come and go during the test.
    pub partitions: bool,
    /// The mean time between two partition changes.
    pub nemesis_interval: Duration,
    /// How long to wait after the heal before the final reads.
    pub recovery: Duration,
    /// The seed of the test's random choices.
    pub seed: u64,
}

/// Why a test could not run.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// The network did not start.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A node did not answer `init` (or `topology`).
    #[error("node {node} did not answer {request} within {timeout:?}")]
    Setup {
        /// The node.
        node: String,
        /// The request.
        request: &'static str,
        /// How long it had.
        timeout: Duration,
    },
}

/// What a test found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The workload.
    pub workload: Workload,
    /// Whether every check passed.
    pub valid: bool,
    /// Nodes.
    pub nodes: usize,
    /// Client operations invoked (final reads included).
    pub operations: usize,
    /// Operations answered.
    pub ok: usize,
    /// Operations that failed or timed out.
    pub not_ok: usize,
    /// Messages between nodes.
    pub server_messages: u64,
    /// Messages between nodes per client operation (Maelstrom's
    /// `:net :servers :msgs-per-op`).
    pub msgs_per_op: f64,
    /// Messages between nodes dropped by partitions.
    pub dropped: u64,
    /// Lines nodes wrote that were not valid messages.
    pub invalid_lines: u64,
    /// Nodes that exited during the test.
    pub crashed: usize,
    /// Ids handed out twice (unique ids).
    pub duplicated_ids: usize,
    /// Echo answers that did not match (echo).
    pub echo_errors: usize,
    /// The broadcast verdict.
    pub broadcast: Option<SetFull>,
}

impl Report {
    /// The stable latencies, if the workload has them.
    pub fn latencies(&self) -> Option<Latencies> {
        self.broadcast.as_ref()?.stable_latencies
    }
}

/// The history, shared by the workers.
#[derive(Debug, Default)]
struct History {
    ops: Mutex<Vec<Op>>,
}

impl History {
    fn record(&self, process: usize, function: Function, kind: Kind, value: Value, time: Duration) {
        let mut ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let index = ops.len();
        ops.push(Op {
            index,
            process,
            function,
            kind,
            value,
            time,
        });
    }
}

/// One synchronous client, bound to one node.
struct Worker {
    node: String,
    client: Mutex<String>,
    next_msg_id: AtomicU64,
    busy: AtomicBool,
}

/// Runs a test.
pub async fn run(config: TestConfig) -> Result<Report, TestError> {
    let network = Network::start(&config.bin, config.nodes, config.latency)?;
    let nodes = network.node_ids();
    setup(&network, &nodes, config.workload).await?;
    let network = Arc::new(network);
    let workers: Arc<Vec<Worker>> = Arc::new(
        nodes
            .iter()
            .map(|node| Worker {
                node: node.clone(),
                client: Mutex::new(network.new_client()),
                next_msg_id: AtomicU64::new(1),
                busy: AtomicBool::new(false),
            })
            .collect(),
    );
    let history = Arc::new(History::default());
    let freed = Arc::new(Notify::new());
    let start = Instant::now();
    let mut rng = SmallRng::seed_from_u64(config.seed);

    let nemesis = config.partitions.then(|| {
        tokio::spawn(nemesis(
            network.clone(),
            nodes.clone(),
            config.nemesis_interval,
            config.time_limit,
            rng.random(),
        ))
    });

    let mut next_value = 0i64;
    let mut rotation = 0usize;
    let gap = Duration::from_secs_f64(2.0 / config.rate.max(0.001));
    while start.elapsed() < config.time_limit {
        tokio::time::sleep(gap.mul_f64(rng.random::<f64>())).await;
        let worker = loop {
            let free = (0..workers.len())
                .map(|i| (rotation + i) % workers.len())
                .find(|i| !workers[*i].busy.load(Ordering::Acquire));
            match free {
                Some(i) => break i,
                None => freed.notified().await,
            }
        };
        rotation = worker + 1;
        let (function, body, value) = match config.workload {
            Workload::Echo => {
                let text = format!("Please echo {}", rng.random_range(0..128));
                (
                    Function::Echo,
                    json!({"type": "echo", "echo": text}),
                    json!(text),
                )
            }
            Workload::UniqueIds => (Function::Generate, json!({"type": "generate"}), Value::Null),
            Workload::Broadcast if rng.random_bool(0.5) => {
                next_value += 1;
                let value = next_value - 1;
                (
                    Function::Broadcast,
                    json!({"type": "broadcast", "message": value}),
                    json!(value),
                )
            }
            Workload::Broadcast => (Function::Read, json!({"type": "read"}), Value::Null),
        };
        workers[worker].busy.store(true, Ordering::Release);
        let (network, workers, history, freed) = (
            network.clone(),
            workers.clone(),
            history.clone(),
            freed.clone(),
        );
        tokio::spawn(async move {
            invoke(
                &network,
                &workers[worker],
                worker,
                function,
                body,
                value,
                &history,
                start,
            )
            .await;
            workers[worker].busy.store(false, Ordering::Release);
            freed.notify_waiters();
        });
    }
    // Every operation in flight completes, the network heals, then the
    // nodes get time to recover.
    while workers.iter().any(|w| w.busy.load(Ordering::Acquire)) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(nemesis) = nemesis {
        nemesis.abort();
    }
    network.heal();
    if config.workload == Workload::Broadcast {
        tokio::time::sleep(config.recovery).await;
        let finals: Vec<_> = (0..workers.len())
            .map(|i| {
                let (network, workers, history) =
                    (network.clone(), workers.clone(), history.clone());
                tokio::spawn(async move {
                    invoke(
                        &network,
                        &workers[i],
                        i,
                        Function::Read,
                        json!({"type": "read"}),
                        Value::Null,
                        &history,
                        start,
                    )
                    .await;
                })
            })
            .collect();
        for read in finals {
            let _ = read.await;
        }
    }

    let ops = history
        .ops
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let operations = ops.iter().filter(|op| op.kind == Kind::Invoke).count();
    let ok = ops.iter().filter(|op| op.kind == Kind::Ok).count();
    let counts = network.counts();
    let server_messages = counts.servers.load(Ordering::Relaxed);
    let broadcast = (config.workload == Workload::Broadcast).then(|| checker::set_full(&ops));
    let duplicated_ids = checker::duplicated_ids(&ops);
    let echo_errors = checker::echo_errors(&ops);
    let invalid_lines = counts.invalid.load(Ordering::Relaxed);
    let dropped = counts.dropped.load(Ordering::Relaxed);
    let crashed = nodes.len() - network.running();
    let valid = ok > 0
        && duplicated_ids == 0
        && echo_errors == 0
        && invalid_lines == 0
        && crashed == 0
        && broadcast.as_ref().is_none_or(|b| b.valid)
        && (config.workload != Workload::UniqueIds || ok == operations);
    Ok(Report {
        workload: config.workload,
        valid,
        nodes: nodes.len(),
        operations,
        ok,
        not_ok: operations - ok,
        server_messages,
        msgs_per_op: server_messages as f64 / operations.max(1) as f64,
        dropped,
        invalid_lines,
        crashed,
        duplicated_ids,
        echo_errors,
        broadcast,
    })
}

/// Sends `init` to every node, and the topology for broadcast.
async fn setup(network: &Network, nodes: &[String], workload: Workload) -> Result<(), TestError> {
    let inits = nodes.iter().map(|node| {
        let client = network.new_client();
        let body = json!({"type": "init", "msg_id": 1, "node_id": node, "node_ids": nodes});
        async move {
            let reply = network.call(&client, node, body, INIT_TIMEOUT).await;
            match reply {
                Some(body) if body["type"] == "init_ok" => Ok(()),
                _ => Err(TestError::Setup {
                    node: node.clone(),
                    request: "init",
                    timeout: INIT_TIMEOUT,
                }),
            }
        }
    });
    for result in futures::future::join_all(inits).await {
        result?;
    }
    if workload == Workload::Broadcast {
        let topology = grid(nodes);
        for node in nodes {
            let client = network.new_client();
            let body = json!({"type": "topology", "msg_id": 1, "topology": topology});
            let reply = network.call(&client, node, body, RPC_TIMEOUT).await;
            if reply.is_none_or(|body| body["type"] != "topology_ok") {
                return Err(TestError::Setup {
                    node: node.clone(),
                    request: "topology",
                    timeout: RPC_TIMEOUT,
                });
            }
        }
    }
    Ok(())
}

/// Maelstrom's default topology: the nodes in a square grid, each with
/// its up to four neighbours.
pub fn grid(nodes: &[String]) -> serde_json::Map<String, Value> {
    let n = nodes.len();
    let side = (n as f64).sqrt().ceil().max(1.0) as usize;
    let at = |i: usize, j: usize| {
        (i < side && j < side)
            .then(|| i * side + j)
            .filter(|k| *k < n)
    };
    let mut topology = serde_json::Map::new();
    for (k, node) in nodes.iter().enumerate() {
        let (i, j) = (k / side, k % side);
        let neighbours: Vec<&String> = [
            at(i + 1, j),
            i.checked_sub(1).and_then(|i| at(i, j)),
            at(i, j + 1),
            j.checked_sub(1).and_then(|j| at(i, j)),
        ]
        .into_iter()
        .flatten()
        .map(|k| &nodes[k])
        .collect();
        topology.insert(node.clone(), json!(neighbours));
    }
    topology
}

/// Runs one operation on `worker` and records it.
#[allow(clippy::too_many_arguments)]
async fn invoke(
    network: &Network,
    worker: &Worker,
    process: usize,
    function: Function,
    mut body: Value,
    value: Value,
    history: &History,
    start: Instant,
) {
    let msg_id = worker.next_msg_id.fetch_add(1, Ordering::Relaxed);
    body["msg_id"] = json!(msg_id);
    let client = worker
        .client
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    history.record(
        process,
        function,
        Kind::Invoke,
        value.clone(),
        start.elapsed(),
    );
    let reply = network.call(&client, &worker.node, body, RPC_TIMEOUT).await;
    let (kind, answer) = match reply {
        Some(body) if body["type"] == "error" => (Kind::Fail, value),
        Some(body) => (
            Kind::Ok,
            match function {
                Function::Echo => body,
                Function::Generate => body["id"].clone(),
                Function::Broadcast => value,
                Function::Read => body["messages"].clone(),
            },
        ),
        None => {
            // A timed-out client is replaced, as Jepsen does.
            *worker.client.lock().unwrap_or_else(PoisonError::into_inner) = network.new_client();
            let kind = if function == Function::Read {
                Kind::Fail
            } else {
                Kind::Info
            };
            (kind, value)
        }
    };
    history.record(process, function, kind, answer, start.elapsed());
}

/// Starts and heals partitions at random, with gaps averaging `interval`,
/// until `limit`: each a random one of Maelstrom's shapes (one node alone,
/// a third cut off, random halves, a ring of overlapping majorities).
async fn nemesis(
    network: Arc<Network>,
    nodes: Vec<String>,
    interval: Duration,
    limit: Duration,
    seed: u64,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut cut = false;
    loop {
        if cut {
            tokio::time::sleep((interval * 2).mul_f64(rng.random::<f64>())).await;
        }
        if start.elapsed() >= limit {
            return;
        }
        if cut {
            network.heal();
        } else {
            network.partition(partition(&nodes, &mut rng));
        }
        cut = !cut;
    }
}

/// A random partition as a grudge: `dest -> sources dropped`.
fn partition(
    nodes: &[String],
    rng: &mut SmallRng,
) -> std::collections::HashMap<String, std::collections::HashSet<String>> {
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    let n = shuffled.len();
    let apart = |groups: Vec<&[String]>| {
        let mut grudge = std::collections::HashMap::new();
        for (g, group) in groups.iter().enumerate() {
            for node in *group {
                let others: std::collections::HashSet<String> = groups
                    .iter()
                    .enumerate()
                    .filter(|(h, _)| *h != g)
                    .flat_map(|(_, other)| other.iter().cloned())
                    .collect();
                grudge.insert(node.clone(), others);
            }
        }
        grudge
    };
    match rng.random_range(0..4) {
        0 => apart(vec![&shuffled[..1.min(n)], &shuffled[1.min(n)..]]),
        1 => {
            let third = n.saturating_sub(1) / 3;
            apart(vec![&shuffled[..third], &shuffled[third..]])
        }
        2 => apart(vec![&shuffled[..n / 2], &shuffled[n / 2..]]),
        _ => {
            // Each node sees the majority of the ring centred on itself.
            let reach = n / 2 / 2 + (n / 2) % 2;
            let mut grudge = std::collections::HashMap::new();
            for (i, node) in shuffled.iter().enumerate() {
                let unseen = shuffled
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| {
                        let d = i.abs_diff(*j);
                        d.min(n - d) > reach
                    })
                    .map(|(_, other)| other.clone())
                    .collect();
                grudge.insert(node.clone(), unseen);
            }
            grudge
        }
    }
}
