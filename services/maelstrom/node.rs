//! The Maelstrom node as a state machine: lines in, envelopes out, with
//! the gossip engine doing the broadcast. Before `init` it answers only
//! `init` (and `echo`, which needs nothing); every other request gets
//! "temporarily unavailable". It sends nothing to other nodes before a
//! client has asked it something beyond `init` (the topology, say):
//! Maelstrom starts nodes one by one, and a message to a node it has not
//! registered yet would make it stop reading this node.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::gossip::{self, Effect, Origin, Push};
use crate::maelstrom::protocol::{self, BadInput, Envelope, Request, code};

/// How long new values wait to be pushed together: each hop of a value
/// (writer to hub, hub to everyone) waits at most this long.
pub const PUSH_INTERVAL: Duration = Duration::from_millis(100);
/// How often each node runs anti-entropy with a random peer.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The gossip settings of a Maelstrom node: through a hub, batched.
pub fn engine_config() -> gossip::Config {
    gossip::Config {
        push: Push::Hub,
        push_interval: PUSH_INTERVAL,
        sync_interval: SYNC_INTERVAL,
        ..gossip::Config::default()
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write this envelope to stdout.
    Send(Envelope),
    /// Write this line to stderr.
    Log(String),
}

/// A node once `init` told it who it is.
#[derive(Debug)]
struct Member {
    id: String,
    engine: gossip::Node<i64>,
    /// Ids handed out by `generate`.
    generated: u64,
    /// Every node is up: a request other than `init` has come.
    started: bool,
}

/// One Maelstrom node.
#[derive(Debug)]
pub struct MaelstromNode {
    member: Option<Member>,
    generation: u64,
    seed: u64,
}

impl MaelstromNode {
    /// A node not yet initialized; `generation` tells its life apart from
    /// earlier ones (a start time), `seed` makes its random choices
    /// repeatable.
    pub fn new(generation: u64, seed: u64) -> Self {
        MaelstromNode {
            member: None,
            generation,
            seed,
        }
    }

    /// Handles one input line.
    pub fn handle_line(&mut self, line: &str, now: Duration) -> Vec<Output> {
        match protocol::parse(line) {
            Ok((envelope, request)) => self.handle(envelope, request, now),
            Err(BadInput::NotAnEnvelope(error)) => {
                vec![Output::Log(format!(
                    "ignored a line that is not a message: {error}"
                ))]
            }
            Err(BadInput::Refused {
                envelope,
                code,
                text,
            }) => {
                let mut out = vec![Output::Log(format!("refused {}: {text}", envelope.body))];
                out.extend(protocol::error(&envelope, code, &text).map(Output::Send));
                out
            }
        }
    }

    /// Does what is due at `now` (pushes, anti-entropy).
    pub fn tick(&mut self, now: Duration) -> Vec<Output> {
        let Some(member) = self.member.as_mut() else {
            return Vec::new();
        };
        let effects = member.engine.tick(now);
        member.carry_out(effects)
    }

    /// When [`MaelstromNode::tick`] must be called next; `None` before
    /// `init`.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.member.as_ref().map(|m| m.engine.next_deadline())
    }

    fn handle(&mut self, envelope: Envelope, request: Request, now: Duration) -> Vec<Output> {
        let answer = |kind: &str, fields: Map<String, Value>| {
            protocol::reply(&envelope, kind, fields)
                .map(Output::Send)
                .into_iter()
                .collect::<Vec<_>>()
        };
        match request {
            Request::Init {
                node_id, node_ids, ..
            } => {
                let engine = gossip::Node::new(
                    Origin {
                        node: node_id.clone(),
                        generation: self.generation,
                    },
                    &node_ids,
                    engine_config(),
                    self.seed,
                    now,
                );
                self.member = Some(Member {
                    id: node_id,
                    engine,
                    generated: 0,
                    started: false,
                });
                answer("init_ok", Map::new())
            }
            Request::Echo { echo, .. } => {
                let mut fields = Map::new();
                fields.insert("echo".into(), echo);
                answer("echo_ok", fields)
            }
            request => {
                let Some(member) = self.member.as_mut() else {
                    return protocol::error(
                        &envelope,
                        code::TEMPORARILY_UNAVAILABLE,
                        "this node has not been initialized yet",
                    )
                    .map(Output::Send)
                    .into_iter()
                    .collect();
                };
                member.started = true;
                match request {
                    Request::Generate { .. } => {
                        member.generated += 1;
                        let mut fields = Map::new();
                        // Unique: node ids are, each node counts on its
                        // own, and its generation tells its lives apart.
                        fields.insert(
                            "id".into(),
                            json!(format!(
                                "{}-{}-{}",
                                member.id, self.generation, member.generated
                            )),
                        );
                        answer("generate_ok", fields)
                    }
                    Request::Topology { .. } => answer("topology_ok", Map::new()),
                    Request::Broadcast { message, .. } => {
                        let effects = member
                            .engine
                            .write(&message.to_string(), Some(message), now);
                        let mut out = member.carry_out(effects);
                        out.extend(answer("broadcast_ok", Map::new()));
                        out
                    }
                    Request::Read { .. } => {
                        let values: BTreeSet<i64> = member
                            .engine
                            .replica()
                            .live()
                            .map(|(_, _, value)| *value)
                            .collect();
                        let mut fields = Map::new();
                        fields.insert("messages".into(), json!(values));
                        answer("read_ok", fields)
                    }
                    Request::Gossip { gossip } => {
                        let effects = member.engine.receive(&envelope.src, gossip, now);
                        member.carry_out(effects)
                    }
                    Request::Init { .. } | Request::Echo { .. } => Vec::new(),
                }
            }
        }
    }
}

impl Member {
    fn carry_out(&self, effects: Vec<Effect<i64>>) -> Vec<Output> {
        effects
            .into_iter()
            .filter_map(|effect| match effect {
                Effect::Send { to, message } if self.started => {
                    Some(Output::Send(protocol::gossip(&self.id, &to, &message)))
                }
                Effect::Send { .. } => None,
                Effect::Changed(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(out: &[Output]) -> Vec<&Envelope> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(envelope) => Some(envelope),
                Output::Log(_) => None,
            })
            .collect()
    }

    fn line(src: &str, dest: &str, body: Value) -> String {
        json!({"src": src, "dest": dest, "body": body}).to_string()
    }

    #[test]
    fn two_nodes_serve_every_workload_and_share_broadcasts_by_gossip() {
        let now = Duration::ZERO;
        let ids = json!(["n0", "n1"]);
        let mut nodes = [MaelstromNode::new(1, 1), MaelstromNode::new(1, 2)];
        // Before init: unavailable, not a crash.
        let early =
            nodes[0].handle_line(&line("c0", "n0", json!({"type": "read", "msg_id": 1})), now);
        assert_eq!(
            sent(&early)[0].body["code"],
            json!(code::TEMPORARILY_UNAVAILABLE)
        );
        for (i, node) in nodes.iter_mut().enumerate() {
            let out = node.handle_line(
                &line(
                    "c0",
                    &format!("n{i}"),
                    json!({"type": "init", "msg_id": 1, "node_id": format!("n{i}"), "node_ids": ids}),
                ),
                now,
            );
            assert_eq!(
                sent(&out)[0].body,
                json!({"type": "init_ok", "in_reply_to": 1})
            );
        }
        // Nothing to peers before a client asked for more than init.
        assert!(sent(&nodes[0].tick(SYNC_INTERVAL * 2)).is_empty());
        let echo = nodes[0].handle_line(
            &line(
                "c1",
                "n0",
                json!({"type": "echo", "msg_id": 2, "echo": "hi"}),
            ),
            now,
        );
        assert_eq!(
            sent(&echo)[0].body,
            json!({"type": "echo_ok", "in_reply_to": 2, "echo": "hi"})
        );
        let ids: BTreeSet<String> = (0..100)
            .map(|i| {
                let out = nodes[i % 2].handle_line(
                    &line(
                        "c2",
                        &format!("n{}", i % 2),
                        json!({"type": "generate", "msg_id": i}),
                    ),
                    now,
                );
                sent(&out)[0].body["id"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(ids.len(), 100, "unique");

        // A broadcast to n1 (not the hub) goes to the hub, n0, at the push tick.
        let out = nodes[1].handle_line(
            &line(
                "c3",
                "n1",
                json!({"type": "broadcast", "msg_id": 5, "message": 42}),
            ),
            now,
        );
        assert_eq!(
            sent(&out)[0].body,
            json!({"type": "broadcast_ok", "in_reply_to": 5})
        );
        let pushed = nodes[1].tick(PUSH_INTERVAL);
        let gossip = sent(&pushed)
            .into_iter()
            .find(|e| e.body["type"] == "gossip")
            .expect("a push");
        assert_eq!(gossip.dest, "n0");
        nodes[0].handle_line(&gossip.to_line(), PUSH_INTERVAL);
        let read = nodes[0].handle_line(
            &line("c4", "n0", json!({"type": "read", "msg_id": 6})),
            PUSH_INTERVAL,
        );
        assert_eq!(
            sent(&read)[0].body,
            json!({"type": "read_ok", "in_reply_to": 6, "messages": [42]})
        );

        // Malformed input: an error body, and the node goes on.
        let bad = nodes[0].handle_line(
            &line(
                "c5",
                "n0",
                json!({"type": "broadcast", "msg_id": 7, "message": "x"}),
            ),
            now,
        );
        assert_eq!(sent(&bad)[0].body["code"], json!(code::MALFORMED_REQUEST));
        assert!(sent(&nodes[0].handle_line("garbage", now)).is_empty());
    }
}
