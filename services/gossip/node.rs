//! The gossip engine of one node: its [`Replica`], what it pushes to whom
//! and when, and the periodic anti-entropy exchange, as a plain state
//! machine. Every call takes the current time (any monotonic clock, real
//! or virtual) and returns [`Effect`]s for the shell to carry out; the
//! shell calls [`Node::tick`] at [`Node::next_deadline`].
//!
//! Writes are pushed as they happen, batched over [`Config::push_interval`]
//! and bounded per message; a lost push is repaired by anti-entropy with a
//! random peer every [`Config::sync_interval`].

use std::collections::BTreeMap;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;

use crate::gossip::message::Message;
use crate::gossip::replica::{KeyChange, NodeId, Origin, Range, Replica};

/// Whom a node pushes new entries to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Its own writes to every peer, at once; nothing is relayed (a few
    /// nodes: the registry).
    AllPeers,
    /// Through a hub (the first node by id): a node pushes its own writes
    /// to the hub, the hub relays everything new to every other node. Two
    /// hops for any write, few messages (Maelstrom's efficiency
    /// challenges); anti-entropy repairs around a hub that is cut off.
    Hub,
}

/// The engine's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Whom to push to.
    pub push: Push,
    /// How long new entries wait to be pushed together (zero: at once).
    pub push_interval: Duration,
    /// How often the node opens an anti-entropy exchange with a random peer.
    pub sync_interval: Duration,
    /// The most entries in one message.
    pub max_updates: usize,
    /// How long a tombstone is kept before it is collected.
    pub tombstone_grace: Duration,
}

impl Default for Config {
    /// Every peer pushed to at once; anti-entropy every second; tombstones
    /// kept an hour.
    fn default() -> Self {
        Config {
            push: Push::AllPeers,
            push_interval: Duration::ZERO,
            sync_interval: Duration::from_secs(1),
            max_updates: 512,
            tombstone_grace: Duration::from_secs(3600),
        }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect<V> {
    /// Send `message` to the peer `to`.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        message: Message<V>,
    },
    /// A key's value changed in this node's view.
    Changed(KeyChange<V>),
}

/// Entries waiting to be pushed, and the peer they came from (not sent
/// back there).
#[derive(Debug, Clone)]
struct Pending<V> {
    range: Range<V>,
    from: Option<NodeId>,
}

/// Counters of what the node sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages sent.
    pub messages: u64,
    /// Entries sent.
    pub updates: u64,
}

/// One node's gossip engine.
#[derive(Debug)]
pub struct Node<V> {
    me: Origin,
    peers: Vec<NodeId>,
    config: Config,
    replica: Replica<V>,
    outbox: Vec<Pending<V>>,
    next_push: Option<Duration>,
    next_sync: Duration,
    next_collection: Duration,
    rng: SmallRng,
    stats: Stats,
}

impl<V: Clone + PartialEq> Node<V> {
    /// The engine of node `me` among `peers` (its own id among them is
    /// skipped), starting at `now`; `seed` makes its random choices
    /// repeatable.
    pub fn new(me: Origin, peers: &[NodeId], config: Config, seed: u64, now: Duration) -> Self {
        let mut peers: Vec<NodeId> = peers.iter().filter(|p| **p != me.node).cloned().collect();
        peers.sort();
        peers.dedup();
        let mut rng = SmallRng::seed_from_u64(seed);
        // Nodes started together do not all sync at once.
        let first_sync = now
            + config
                .sync_interval
                .mul_f64(rand::RngExt::random::<f64>(&mut rng));
        Node {
            next_collection: now + config.tombstone_grace,
            me,
            peers,
            config,
            replica: Replica::default(),
            outbox: Vec::new(),
            next_push: None,
            next_sync: first_sync,
            rng,
            stats: Stats::default(),
        }
    }

    /// This node's origin.
    pub fn origin(&self) -> &Origin {
        &self.me
    }

    /// The replicated state as this node sees it.
    pub fn replica(&self) -> &Replica<V> {
        &self.replica
    }

    /// What the node sent so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Writes `key` (`None`: deletes it) as this node.
    pub fn write(&mut self, key: &str, value: Option<V>, now: Duration) -> Vec<Effect<V>> {
        let (range, change) = self.replica.write(&self.me, key, value, now);
        let mut effects: Vec<Effect<V>> = change.into_iter().map(Effect::Changed).collect();
        self.enqueue(range, None, now, &mut effects);
        effects
    }

    /// Handles a message from the peer `from`.
    pub fn receive(&mut self, from: &NodeId, message: Message<V>, now: Duration) -> Vec<Effect<V>> {
        let mut effects = Vec::new();
        match message {
            Message::Push { ranges } => {
                for range in ranges {
                    self.apply(from, range, now, &mut effects);
                }
            }
            Message::Syn { floors } => {
                let ranges = self.replica.delta_for(&floors, self.config.max_updates);
                let floors = self.replica.floors();
                self.send(from, Message::SynAck { floors, ranges }, &mut effects);
            }
            Message::SynAck { floors, ranges } => {
                for range in ranges {
                    self.apply(from, range, now, &mut effects);
                }
                let back = self.replica.delta_for(&floors, self.config.max_updates);
                if !back.is_empty() {
                    self.send(from, Message::Ack { ranges: back }, &mut effects);
                }
            }
            Message::Ack { ranges } => {
                for range in ranges {
                    self.apply(from, range, now, &mut effects);
                }
            }
        }
        effects
    }

    /// Does what is due at `now`: pushes, anti-entropy, tombstone
    /// collection.
    pub fn tick(&mut self, now: Duration) -> Vec<Effect<V>> {
        let mut effects = Vec::new();
        if self.next_push.is_some_and(|at| at <= now) {
            self.flush(&mut effects);
        }
        if self.next_sync <= now {
            self.next_sync = now + self.config.sync_interval;
            if let Some(peer) = self.peers.choose(&mut self.rng).cloned() {
                let floors = self.replica.floors();
                self.send(&peer, Message::Syn { floors }, &mut effects);
            }
        }
        if self.next_collection <= now {
            self.next_collection = now + self.config.tombstone_grace / 4;
            self.replica
                .collect_tombstones(now, self.config.tombstone_grace);
        }
        effects
    }

    /// Opens an anti-entropy exchange with `peer` now (a peer just back
    /// from a partition or a crash).
    pub fn sync_with(&mut self, peer: &NodeId) -> Vec<Effect<V>> {
        let mut effects = Vec::new();
        let floors = self.replica.floors();
        self.send(peer, Message::Syn { floors }, &mut effects);
        effects
    }

    /// Forgets everything of `origin`, a node's earlier life or a node gone
    /// for good (never this node's own): its keys go, and whatever still
    /// comes of it is ignored.
    pub fn forget(&mut self, origin: &Origin) -> Vec<Effect<V>> {
        if *origin == self.me {
            return Vec::new();
        }
        self.replica
            .forget(origin)
            .into_iter()
            .map(Effect::Changed)
            .collect()
    }

    /// Takes in what comes of `node`'s origins again (it was forgotten as
    /// dead, and turned out alive).
    pub fn unforget_node(&mut self, node: &str) {
        self.replica.unforget_node(node);
    }

    /// When [`Node::tick`] must be called next.
    pub fn next_deadline(&self) -> Duration {
        let mut next = self.next_sync.min(self.next_collection);
        if let Some(push) = self.next_push {
            next = next.min(push);
        }
        next
    }

    /// Whether this node passes on what it is pushed.
    fn relays(&self) -> bool {
        match self.config.push {
            Push::AllPeers => false,
            Push::Hub => self.is_hub(),
        }
    }

    /// The hub: the first node by id.
    fn hub(&self) -> &NodeId {
        match self.peers.first() {
            Some(first) if *first < self.me.node => first,
            _ => &self.me.node,
        }
    }

    fn is_hub(&self) -> bool {
        *self.hub() == self.me.node
    }

    /// The peers new entries go to.
    fn push_targets(&self) -> Vec<NodeId> {
        match self.config.push {
            Push::AllPeers => self.peers.clone(),
            Push::Hub if self.is_hub() => self.peers.clone(),
            Push::Hub => vec![self.hub().clone()],
        }
    }

    /// Applies `range` from the peer `from`, reporting the keys that
    /// changed; a relay passes on what was new to it, however it came (a
    /// push, or an anti-entropy exchange that got there first).
    fn apply(
        &mut self,
        from: &NodeId,
        range: Range<V>,
        now: Duration,
        effects: &mut Vec<Effect<V>>,
    ) {
        let copy = self.relays().then(|| range.clone());
        let changes = self.replica.apply(range, now);
        let changed = !changes.is_empty();
        effects.extend(changes.into_iter().map(Effect::Changed));
        if let Some(range) = copy.filter(|_| changed) {
            self.enqueue(range, Some(from.clone()), now, effects);
        }
    }

    fn enqueue(
        &mut self,
        range: Range<V>,
        from: Option<NodeId>,
        now: Duration,
        effects: &mut Vec<Effect<V>>,
    ) {
        self.outbox.push(Pending { range, from });
        if self.config.push_interval.is_zero() {
            self.flush(effects);
        } else if self.next_push.is_none() {
            self.next_push = Some(now + self.config.push_interval);
        }
    }

    /// Pushes everything waiting: to each target, what did not come from it,
    /// in messages of at most `max_updates` entries.
    fn flush(&mut self, effects: &mut Vec<Effect<V>>) {
        self.next_push = None;
        let pending = std::mem::take(&mut self.outbox);
        for target in self.push_targets() {
            let mut message: Vec<Range<V>> = Vec::new();
            let mut count = 0;
            for item in pending.iter().filter(|p| p.from.as_ref() != Some(&target)) {
                let size = item.range.updates.len();
                if count > 0 && count + size > self.config.max_updates {
                    let ranges = std::mem::take(&mut message);
                    self.send(&target, Message::Push { ranges }, effects);
                    count = 0;
                }
                message.push(item.range.clone());
                count += size;
            }
            if !message.is_empty() {
                self.send(&target, Message::Push { ranges: message }, effects);
            }
        }
    }

    fn send(&mut self, to: &NodeId, message: Message<V>, effects: &mut Vec<Effect<V>>) {
        self.stats.messages += 1;
        self.stats.updates += message.updates() as u64;
        effects.push(Effect::Send {
            to: to.clone(),
            message,
        });
    }
}

/// The live values of every key across origins, as a set of
/// `(origin node, key)`: what two nodes compare to tell they agree.
pub fn view<V: Clone + PartialEq>(node: &Node<V>) -> BTreeMap<(NodeId, String), V> {
    node.replica()
        .live()
        .map(|(origin, key, value)| ((origin.node.clone(), key.to_owned()), value.clone()))
        .collect()
}
