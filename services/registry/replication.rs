//! The registry's side of gossip: the engine ([`crate::gossip::Node`])
//! with catalog records as values, and the senders that carry its messages
//! to the peer nodes over the `gradebook.registry.v1.Peer` service, one
//! bounded queue and one task per peer (a message that does not fit is
//! dropped: anti-entropy repairs it). Every call has a deadline.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::gossip::membership::{Detector, DetectorConfig, Verdict};
use crate::gossip::{self, Message, Origin};
use crate::mesh::Shutdown;
use crate::mesh::Tls;
use crate::mesh::client::{deadline, lazy_channel_to, request};
use crate::model::peer::PeerMessage;
use crate::model::registry::CatalogRecord;
use crate::pb::registry::v1 as pb;
use crate::pb::registry::v1::peer_client::PeerClient;

/// The default name of a group of registry nodes.
pub const DEFAULT_CLUSTER: &str = "gradebook";
/// Messages waiting for one peer at most.
pub const PEER_QUEUE: usize = 256;
/// The deadline of one message to a peer.
pub const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a node that has just started may wait for a peer to answer
/// an anti-entropy exchange before it stops saying it is catching up (and
/// serves what it has, alone).
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);
/// How long the records of a node's earlier life (before a restart) stay
/// once its new life shows up: time for the instances it owned to register
/// again, through any node. What nobody claims by then goes.
pub const EARLIER_LIFE_GRACE: Duration = Duration::from_secs(10);

/// How this node takes part in a group of registry nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    /// This node's peer address (as the others' `--peers` name it).
    pub address: String,
    /// Every node of the group (this one may be among them).
    pub peers: Vec<String>,
    /// The group's name: messages of another group are refused.
    pub cluster: String,
    /// How long a peer stays down (silent past the failure detector's
    /// threshold) before the records it owned are forgotten.
    pub dead_after: Duration,
}

/// The gossip engine and the queues to the peers.
#[derive(Debug)]
pub struct Replication {
    engine: gossip::Node<CatalogRecord>,
    epoch: Instant,
    queues: HashMap<String, mpsc::Sender<Message<CatalogRecord>>>,
    /// Earlier lives of nodes, and when their later life showed up.
    superseded: HashMap<Origin, Duration>,
    /// Which peers are alive.
    detector: Detector,
    /// The peers.
    peers: Vec<String>,
    /// Peers found dead, whose records were forgotten.
    dead: std::collections::BTreeSet<String>,
    /// Whether a first anti-entropy exchange with a peer has completed
    /// since this node started (or [`CATCH_UP_LIMIT`] has passed).
    caught_up: bool,
}

impl Replication {
    /// Starts replicating as `config` says: the engine, and a sender task
    /// per peer until `shutdown`.
    pub fn start(config: &PeerConfig, tls: &Tls, shutdown: &Shutdown) -> Self {
        let epoch = Instant::now();
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let engine = gossip::Node::new(
            Origin {
                node: config.address.clone(),
                generation,
            },
            &config.peers,
            gossip::Config::default(),
            generation,
            Duration::ZERO,
        );
        let mut queues = HashMap::new();
        for peer in config.peers.iter().filter(|p| **p != config.address) {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            tokio::spawn(send_to_peer(
                peer.clone(),
                config.address.clone(),
                config.cluster.clone(),
                tls.clone(),
                rx,
                shutdown.clone(),
            ));
            queues.insert(peer.clone(), tx);
        }
        Replication {
            engine,
            epoch,
            queues,
            superseded: HashMap::new(),
            detector: Detector::new(DetectorConfig {
                dead_grace: config.dead_after,
                ..DetectorConfig::default()
            }),
            peers: config
                .peers
                .iter()
                .filter(|p| **p != config.address)
                .cloned()
                .collect(),
            dead: std::collections::BTreeSet::new(),
            caught_up: false,
        }
    }

    /// Whether this node has caught up with its peers since it started:
    /// until then, instances registered through other nodes may be missing.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// The engine's time now.
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// This node's origin.
    pub fn origin(&self) -> &Origin {
        self.engine.origin()
    }

    /// Writes this node's record of `instance_id`; returns the effects.
    pub fn write(
        &mut self,
        instance_id: &str,
        record: Option<CatalogRecord>,
    ) -> Vec<gossip::Effect<CatalogRecord>> {
        let now = self.now();
        self.engine.write(instance_id, record, now)
    }

    /// Takes in a message from the peer `from`.
    pub fn receive(
        &mut self,
        from: &str,
        message: Message<CatalogRecord>,
    ) -> Vec<gossip::Effect<CatalogRecord>> {
        let now = self.now();
        let peer = from.to_owned();
        let was_down = self.detector.verdict(&peer, now) != Verdict::Alive;
        self.detector.heard(&peer, now);
        if self.dead.remove(from) {
            tracing::info!(peer = %from, "a registry node found dead is back");
            self.engine.unforget_node(from);
        }
        if !self.caught_up && matches!(message, Message::SynAck { .. } | Message::Ack { .. }) {
            // The peer answered an exchange with everything this node lacked.
            tracing::info!(peer = %from, "caught up with the registry group");
            self.caught_up = true;
        }
        let mut effects = self.engine.receive(&peer, message, now);
        if was_down {
            // Back from a partition or a crash: catch up both ways now,
            // not at the next random exchange.
            tracing::info!(peer = %from, "a registry node is back; syncing with it");
            effects.extend(self.engine.sync_with(&peer));
        }
        effects
    }

    /// Does what is due (pushes, anti-entropy), and forgets the earlier
    /// lives of nodes past [`EARLIER_LIFE_GRACE`].
    pub fn tick(&mut self) -> Vec<gossip::Effect<CatalogRecord>> {
        let now = self.now();
        if !self.caught_up && now >= CATCH_UP_LIMIT {
            tracing::warn!(
                after = ?CATCH_UP_LIMIT,
                "no registry peer completed an exchange; serving what this node has"
            );
            self.caught_up = true;
        }
        let mut effects = self.engine.tick(now);
        let mut newest: HashMap<&str, u64> = HashMap::new();
        let me = self.engine.origin();
        for origin in self.engine.replica().origins().chain(std::iter::once(me)) {
            let generation = newest.entry(origin.node.as_str()).or_default();
            *generation = (*generation).max(origin.generation);
        }
        let earlier: Vec<Origin> = self
            .engine
            .replica()
            .origins()
            .filter(|o| {
                newest
                    .get(o.node.as_str())
                    .is_some_and(|g| *g > o.generation)
            })
            .cloned()
            .collect();
        for origin in earlier {
            let since = *self.superseded.entry(origin.clone()).or_insert(now);
            if now.saturating_sub(since) >= EARLIER_LIFE_GRACE {
                tracing::info!(node = %origin.node, generation = origin.generation, "forgot the records of a registry node's earlier life");
                effects.extend(self.engine.forget(&origin));
                self.superseded.remove(&origin);
            }
        }
        // A peer silent past the failure detector's threshold, for longer
        // than its grace: what it owned and nobody claimed since goes.
        for peer in &self.peers {
            if self.dead.contains(peer) || self.detector.verdict(peer, now) != Verdict::Dead {
                continue;
            }
            let origins: Vec<Origin> = self
                .engine
                .replica()
                .origins()
                .filter(|o| o.node == *peer)
                .cloned()
                .collect();
            tracing::warn!(%peer, "registry node dead; forgot the records it owned");
            for origin in origins {
                effects.extend(self.engine.forget(&origin));
            }
            self.dead.insert(peer.clone());
        }
        effects
    }

    /// How long until [`Replication::tick`] is due.
    pub fn until_due(&self) -> Duration {
        self.engine.next_deadline().saturating_sub(self.now())
    }

    /// Queues `message` for `peer`; a full queue drops it.
    pub fn send(&self, peer: &str, message: Message<CatalogRecord>) {
        if let Some(queue) = self.queues.get(peer)
            && queue.try_send(message).is_err()
        {
            tracing::debug!(%peer, "peer queue full; dropped a gossip message");
        }
    }

    /// The best record the other nodes hold of `instance_id`: the highest
    /// version among the origins other than this node's.
    pub fn best_remote(&self, instance_id: &str) -> Option<CatalogRecord> {
        let me = self.engine.origin();
        let replica = self.engine.replica();
        replica
            .origins()
            .filter(|origin| *origin != me)
            .filter_map(|origin| replica.get(origin, instance_id))
            .max_by(|a, b| a.version().cmp(b.version()))
            .cloned()
    }
}

/// Sends the messages queued for `peer`, one at a time, each within
/// [`PEER_CALL_TIMEOUT`], until `shutdown`. A failed send is dropped.
///
/// A send that fails in transport also drops the connection and what is
/// queued behind it: a connection cut by a partition can stay open with
/// its retransmissions backing off for seconds after the heal, and a peer
/// that moved (a container that came back with a new address) is only
/// found by dialing its name again. The next message dials afresh, and
/// anti-entropy repairs whatever was dropped.
async fn send_to_peer(
    peer: String,
    from: String,
    cluster: String,
    tls: Tls,
    mut queue: mpsc::Receiver<Message<CatalogRecord>>,
    shutdown: Shutdown,
) {
    let connect =
        || lazy_channel_to(&peer, crate::registry::SERVICE_NAME, &tls).map(PeerClient::new);
    let mut client = match connect() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%peer, %error, "not a peer address; nothing is sent to it");
            return;
        }
    };
    let mut failing = false;
    loop {
        let message = tokio::select! {
            message = queue.recv() => match message {
                Some(message) => message,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let wire = pb::GossipMessage::from(&PeerMessage::new(&cluster, &from, message));
        let call = client.gossip(request(wire, PEER_CALL_TIMEOUT));
        match deadline(PEER_CALL_TIMEOUT, call).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(%peer, "peer reachable again");
            }
            Ok(_) => {}
            Err(status) => {
                if !failing {
                    failing = true;
                    tracing::warn!(%peer, error = %status.message(), "peer unreachable; gossip to it is dropped until it answers");
                }
                if is_transport_failure(&status) {
                    while queue.try_recv().is_ok() {}
                    if let Ok(fresh) = connect() {
                        client = fresh;
                    }
                }
            }
        }
    }
}

/// Whether `status` says the call did not get through (as opposed to a
/// peer that answered with a refusal).
fn is_transport_failure(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
    )
}
