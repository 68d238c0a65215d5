//! A deterministic simulator of the gossip engine: many [`Node`]s in one
//! process on virtual time, messages delivered after a per-link latency,
//! some lost, partitions that come and go, nodes that crash and restart
//! (with a new generation and nothing remembered). The same seed gives the
//! same run. It reports messages per change, convergence times, bytes sent,
//! and whether every node ended with the same state.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};

use crate::gossip::message::{Message, WireSize};
use crate::gossip::node::{Config, Effect, Node, view};
use crate::gossip::replica::{NodeId, Origin};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How many nodes.
    pub nodes: usize,
    /// The seed of every random choice.
    pub seed: u64,
    /// The engine's settings, the same on every node.
    pub engine: Config,
    /// One-way latency of every message.
    pub latency: Duration,
    /// Each message's latency varies by up to this much either way.
    pub jitter: Duration,
    /// The probability that a message is lost.
    pub loss: f64,
    /// How many writes, each at a random node.
    pub writes: usize,
    /// The time between two writes.
    pub write_interval: Duration,
    /// Random halves are cut off from each other and healed again, in turns,
    /// while writes go on (healed for good after the last write).
    pub partitions: bool,
    /// This many nodes crash during the writes, each restarting a second
    /// later with nothing remembered.
    pub crashes: usize,
    /// How long the run goes on after the last write and the last heal.
    pub settle: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 25,
            seed: 1,
            engine: Config::default(),
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            loss: 0.0,
            writes: 100,
            write_interval: Duration::from_millis(10),
            partitions: false,
            crashes: 0,
            settle: Duration::from_secs(10),
        }
    }
}

/// Quantiles of a set of durations.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quantiles {
    /// The median.
    pub median: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The largest.
    pub max: Duration,
}

impl Quantiles {
    /// The quantiles of `values` (all zero when empty).
    pub fn of(mut values: Vec<Duration>) -> Self {
        if values.is_empty() {
            return Quantiles::default();
        }
        values.sort();
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Quantiles {
            median: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Nodes simulated.
    pub nodes: usize,
    /// Writes made.
    pub writes: usize,
    /// Messages sent between nodes (lost ones included).
    pub messages: u64,
    /// Their bytes, roughly.
    pub bytes: u64,
    /// Messages lost (loss or partition).
    pub dropped: u64,
    /// From a write to the moment the last node had it, over the writes
    /// every node ended with.
    pub convergence: Quantiles,
    /// Writes that did not reach every node.
    pub unconverged: usize,
    /// Whether every node ended with the same state.
    pub identical: bool,
    /// Virtual time simulated.
    pub simulated: Duration,
}

impl Report {
    /// Messages per write.
    pub fn messages_per_change(&self) -> f64 {
        self.messages as f64 / self.writes.max(1) as f64
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "nodes                 {}", self.nodes)?;
        writeln!(f, "writes                {}", self.writes)?;
        writeln!(
            f,
            "messages              {} ({:.1} per change, {} dropped)",
            self.messages,
            self.messages_per_change(),
            self.dropped
        )?;
        writeln!(f, "bytes sent            {}", self.bytes)?;
        writeln!(
            f,
            "convergence           median {:?}, p99 {:?}, max {:?}",
            self.convergence.median, self.convergence.p99, self.convergence.max
        )?;
        writeln!(f, "writes not everywhere {}", self.unconverged)?;
        writeln!(
            f,
            "same state everywhere {}",
            if self.identical { "yes" } else { "NO" }
        )?;
        write!(f, "simulated             {:?}", self.simulated)
    }
}

/// Something that happens at a moment of the run.
enum Event {
    Deliver {
        to: usize,
        from: usize,
        message: Message<u64>,
    },
    Tick(usize),
    Write,
    Partition,
    Heal,
    Crash(usize),
    Restart(usize),
}

/// An event and when it happens; ordered by time, then by scheduling order.
struct Scheduled {
    at: Duration,
    order: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// A simulated node: its engine (none while crashed) and when its next
/// tick is scheduled.
struct SimNode {
    engine: Option<Node<u64>>,
    generation: u64,
    tick_at: Option<Duration>,
}

/// The state of one run.
struct Run {
    config: SimConfig,
    rng: SmallRng,
    now: Duration,
    queue: BinaryHeap<Reverse<Scheduled>>,
    order: u64,
    ids: Vec<NodeId>,
    nodes: Vec<SimNode>,
    /// The side of the partition each node is on (all 0 when healed).
    side: Vec<u8>,
    /// For each write: when it was made, and when each node got it.
    written_at: Vec<Duration>,
    received: Vec<Vec<Option<Duration>>>,
    messages: u64,
    bytes: u64,
    dropped: u64,
}

/// Runs a simulation.
pub fn run(config: SimConfig) -> Report {
    let mut run = Run::new(config);
    run.go();
    run.report()
}

impl Run {
    fn new(config: SimConfig) -> Self {
        let ids: Vec<NodeId> = (0..config.nodes).map(|i| format!("n{i}")).collect();
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let nodes = (0..config.nodes)
            .map(|i| SimNode {
                engine: Some(Node::new(
                    Origin {
                        node: ids[i].clone(),
                        generation: 1,
                    },
                    &ids,
                    config.engine.clone(),
                    rng.random(),
                    Duration::ZERO,
                )),
                generation: 1,
                tick_at: None,
            })
            .collect();
        Run {
            side: vec![0; config.nodes],
            written_at: Vec::with_capacity(config.writes),
            received: Vec::with_capacity(config.writes),
            config,
            rng,
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            order: 0,
            ids,
            nodes,
            messages: 0,
            bytes: 0,
            dropped: 0,
        }
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        self.order += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            order: self.order,
            event,
        }));
    }

    /// Schedules the writes, partitions and crashes, then runs until the
    /// queue is empty or the settle time has passed.
    fn go(&mut self) {
        let config = self.config.clone();
        for node in 0..config.nodes {
            self.schedule_tick(node);
        }
        let writes_end = config.write_interval * config.writes as u32;
        for write in 0..config.writes {
            self.schedule(config.write_interval * write as u32, Event::Write);
        }
        if config.partitions && config.nodes > 1 {
            let mut at = Duration::from_millis(500);
            while at < writes_end {
                self.schedule(at, Event::Partition);
                self.schedule(at + Duration::from_secs(1), Event::Heal);
                at += Duration::from_secs(2);
            }
            self.schedule(writes_end, Event::Heal);
        }
        for _ in 0..config.crashes.min(config.nodes) {
            let node = self.rng.random_range(0..config.nodes);
            let at = self.random_time_before(writes_end);
            self.schedule(at, Event::Crash(node));
            self.schedule(at + Duration::from_secs(1), Event::Restart(node));
        }
        let end = writes_end + Duration::from_secs(1) + config.settle;
        while let Some(Reverse(next)) = self.queue.pop() {
            if next.at > end {
                break;
            }
            self.now = next.at;
            self.handle(next.event);
        }
        self.now = end;
    }

    fn random_time_before(&mut self, end: Duration) -> Duration {
        let millis = end.as_millis().max(1) as u64;
        Duration::from_millis(self.rng.random_range(0..millis))
    }

    /// Handles `event`; then reschedules the tick of the node it touched,
    /// if that node's deadline moved earlier.
    fn handle(&mut self, event: Event) {
        let touched = match event {
            Event::Deliver { to, from, message } => {
                let from_id = self.ids[from].clone();
                if let Some(engine) = self.nodes[to].engine.as_mut() {
                    let effects = engine.receive(&from_id, message, self.now);
                    self.carry_out(to, effects);
                }
                Some(to)
            }
            Event::Tick(node) => {
                if self.nodes[node].tick_at != Some(self.now) {
                    return;
                }
                self.nodes[node].tick_at = None;
                if let Some(engine) = self.nodes[node].engine.as_mut() {
                    let effects = engine.tick(self.now);
                    self.carry_out(node, effects);
                }
                Some(node)
            }
            Event::Write => {
                // At a node that is up (a client would try another).
                let up: Vec<usize> = (0..self.config.nodes)
                    .filter(|node| self.nodes[*node].engine.is_some())
                    .collect();
                let Some(&node) = up.choose(&mut self.rng) else {
                    return;
                };
                let index = self.written_at.len();
                self.written_at.push(self.now);
                self.received.push(vec![None; self.config.nodes]);
                let key = format!("w{index}");
                if let Some(engine) = self.nodes[node].engine.as_mut() {
                    let effects = engine.write(&key, Some(index as u64), self.now);
                    self.carry_out(node, effects);
                }
                Some(node)
            }
            Event::Partition => {
                let mut order: Vec<usize> = (0..self.config.nodes).collect();
                order.shuffle(&mut self.rng);
                for (rank, node) in order.into_iter().enumerate() {
                    self.side[node] = u8::from(rank % 2 == 1);
                }
                None
            }
            Event::Heal => {
                self.side.iter_mut().for_each(|side| *side = 0);
                None
            }
            Event::Crash(node) => {
                self.nodes[node].engine = None;
                for received in &mut self.received {
                    received[node] = None;
                }
                None
            }
            Event::Restart(node) => {
                let generation = self.nodes[node].generation + 1;
                let engine = Node::new(
                    Origin {
                        node: self.ids[node].clone(),
                        generation,
                    },
                    &self.ids,
                    self.config.engine.clone(),
                    self.rng.random(),
                    self.now,
                );
                self.nodes[node] = SimNode {
                    engine: Some(engine),
                    generation,
                    tick_at: None,
                };
                Some(node)
            }
        };
        if let Some(node) = touched {
            let due = self.nodes[node].engine.as_ref().map(Node::next_deadline);
            if let Some(due) = due
                && self.nodes[node].tick_at.is_none_or(|at| due < at)
            {
                self.schedule_tick(node);
            }
        }
    }

    fn schedule_tick(&mut self, node: usize) {
        let Some(due) = self.nodes[node].engine.as_ref().map(Node::next_deadline) else {
            return;
        };
        let at = due.max(self.now);
        self.nodes[node].tick_at = Some(at);
        self.schedule(at, Event::Tick(node));
    }

    fn carry_out(&mut self, node: usize, effects: Vec<Effect<u64>>) {
        for effect in effects {
            match effect {
                Effect::Send { to, message } => {
                    let Some(to) = self.index_of(&to) else {
                        continue;
                    };
                    self.messages += 1;
                    self.bytes += message.wire_size() as u64;
                    let lost = self.side[node] != self.side[to]
                        || (self.config.loss > 0.0 && self.rng.random_bool(self.config.loss));
                    if lost {
                        self.dropped += 1;
                        continue;
                    }
                    let jitter = self.config.jitter.as_micros() as i64;
                    let shift = if jitter > 0 {
                        self.rng.random_range(-jitter..=jitter)
                    } else {
                        0
                    };
                    let latency = Duration::from_micros(
                        (self.config.latency.as_micros() as i64 + shift).max(0) as u64,
                    );
                    self.schedule(
                        self.now + latency,
                        Event::Deliver {
                            to,
                            from: node,
                            message,
                        },
                    );
                }
                Effect::Changed(change) => {
                    if let (Some(value), Some(write)) = (
                        change.value,
                        change
                            .key
                            .strip_prefix('w')
                            .and_then(|n| n.parse::<usize>().ok()),
                    ) && value == write as u64
                        && let Some(slot) = self
                            .received
                            .get_mut(write)
                            .and_then(|received| received.get_mut(node))
                        && slot.is_none()
                    {
                        *slot = Some(self.now);
                    }
                }
            }
        }
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        id.strip_prefix('n')?
            .parse()
            .ok()
            .filter(|i| *i < self.ids.len())
    }

    fn report(&self) -> Report {
        let mut times = Vec::new();
        let mut unconverged = 0;
        for (written_at, received) in self.written_at.iter().zip(&self.received) {
            match received.iter().copied().collect::<Option<Vec<_>>>() {
                Some(all) => {
                    let last = all.into_iter().max().unwrap_or(*written_at);
                    times.push(last.saturating_sub(*written_at));
                }
                None => unconverged += 1,
            }
        }
        let views: Vec<BTreeMap<(NodeId, String), u64>> = self
            .nodes
            .iter()
            .filter_map(|node| node.engine.as_ref().map(view))
            .collect();
        Report {
            nodes: self.config.nodes,
            writes: self.written_at.len(),
            messages: self.messages,
            bytes: self.bytes,
            dropped: self.dropped,
            convergence: Quantiles::of(times),
            unconverged,
            identical: views.windows(2).all(|pair| pair[0] == pair[1]),
            simulated: self.now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_agree_despite_loss_partitions_and_crashes() {
        let config = SimConfig {
            nodes: 25,
            seed: 7,
            loss: 0.1,
            partitions: true,
            crashes: 2,
            writes: 200,
            ..SimConfig::default()
        };
        let report = run(config.clone());
        assert!(report.identical, "{report}");
        assert_eq!(report.unconverged, 0, "{report}");
        assert!(report.dropped > 0, "the network did lose messages");
        assert_eq!(run(config), report, "the same seed, the same run");
    }

    #[test]
    fn a_hub_carries_every_write_to_everyone_in_two_hops() {
        let report = run(SimConfig {
            nodes: 25,
            latency: Duration::from_millis(100),
            jitter: Duration::ZERO,
            engine: Config {
                push: crate::gossip::Push::Hub,
                push_interval: Duration::from_millis(50),
                ..Config::default()
            },
            ..SimConfig::default()
        });
        assert!(report.identical, "{report}");
        assert_eq!(report.unconverged, 0);
        // Two hops of 100 ms, each batched for at most 50 ms.
        assert!(
            report.convergence.max <= Duration::from_millis(300),
            "{report}"
        );
    }
}
