//! Maelstrom's wire protocol: newline-delimited JSON envelopes
//! `{src, dest, body}` (unknown top-level keys, such as the network's `id`,
//! ignored), the requests of the workloads this node serves, and its
//! replies and error bodies, shaped exactly as Maelstrom's schemas want
//! them (no extra keys in an `*_ok` body).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::gossip::Message;

/// Maelstrom's error codes that this node answers with.
pub mod code {
    /// The request type is not one this node serves.
    pub const NOT_SUPPORTED: u64 = 10;
    /// The node cannot serve the request yet (before `init`).
    pub const TEMPORARILY_UNAVAILABLE: u64 = 11;
    /// The request is malformed.
    pub const MALFORMED_REQUEST: u64 = 12;
}

/// One message on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender: a node (`n3`) or a client (`c12`).
    pub src: String,
    /// The receiver.
    pub dest: String,
    /// What it says.
    pub body: Value,
}

impl Envelope {
    /// The envelope as one output line (without the newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A request this node serves, or gossip from a peer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Who this node is and who the others are.
    Init {
        /// The request's id.
        msg_id: Option<u64>,
        /// This node's id.
        node_id: String,
        /// Every node's id, this one's included.
        node_ids: Vec<String>,
    },
    /// Echo #1: answer the same `echo`.
    Echo {
        /// The request's id.
        msg_id: Option<u64>,
        /// Whatever to send back.
        echo: Value,
    },
    /// Unique ids #2: a new id, unique across nodes and time.
    Generate {
        /// The request's id.
        msg_id: Option<u64>,
    },
    /// Broadcast #3: who neighbours whom (this node makes its own
    /// topology, so the map is only acknowledged).
    Topology {
        /// The request's id.
        msg_id: Option<u64>,
    },
    /// Broadcast #3: keep `message` and pass it on to every node.
    Broadcast {
        /// The request's id.
        msg_id: Option<u64>,
        /// The value.
        message: i64,
    },
    /// Broadcast #3: every value this node has.
    Read {
        /// The request's id.
        msg_id: Option<u64>,
    },
    /// Between nodes: a gossip message.
    Gossip {
        /// The message.
        gossip: Message<i64>,
    },
}

/// The types of [`Request`] (to tell an unknown type from a malformed
/// request of a known one).
const KNOWN_TYPES: [&str; 7] = [
    "init",
    "echo",
    "generate",
    "topology",
    "broadcast",
    "read",
    "gossip",
];

/// Why a line is not a request this node can serve.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadInput {
    /// Not a JSON envelope at all: nobody to answer.
    #[error("not a message: {0}")]
    NotAnEnvelope(String),
    /// An envelope whose body this node cannot serve.
    #[error("{text}")]
    Refused {
        /// The envelope (to answer).
        envelope: Envelope,
        /// The Maelstrom error code.
        code: u64,
        /// What is wrong.
        text: String,
    },
}

/// Reads one input line.
pub fn parse(line: &str) -> Result<(Envelope, Request), BadInput> {
    let envelope: Envelope =
        serde_json::from_str(line).map_err(|e| BadInput::NotAnEnvelope(e.to_string()))?;
    let kind = envelope.body.get("type").and_then(Value::as_str);
    match serde_json::from_value::<Request>(envelope.body.clone()) {
        Ok(request) => Ok((envelope, request)),
        Err(error) => {
            let (code, text) = match kind {
                Some(kind) if !KNOWN_TYPES.contains(&kind) => (
                    code::NOT_SUPPORTED,
                    format!("this node does not serve {kind:?} requests"),
                ),
                None => (
                    code::MALFORMED_REQUEST,
                    "the body has no string \"type\"".to_owned(),
                ),
                Some(_) => (code::MALFORMED_REQUEST, error.to_string()),
            };
            Err(BadInput::Refused {
                envelope,
                code,
                text,
            })
        }
    }
}

/// The reply to `request_body`'s sender: `body` with `type` and
/// `in_reply_to` added (when the request had a `msg_id`; a request without
/// one is not answered).
pub fn reply(
    to: &Envelope,
    kind: &str,
    mut fields: serde_json::Map<String, Value>,
) -> Option<Envelope> {
    let msg_id = to.body.get("msg_id")?.as_u64()?;
    fields.insert("type".into(), json!(kind));
    fields.insert("in_reply_to".into(), json!(msg_id));
    Some(Envelope {
        src: to.dest.clone(),
        dest: to.src.clone(),
        body: Value::Object(fields),
    })
}

/// An error body answering `to`.
pub fn error(to: &Envelope, code: u64, text: &str) -> Option<Envelope> {
    let mut fields = serde_json::Map::new();
    fields.insert("code".into(), json!(code));
    fields.insert("text".into(), json!(text));
    reply(to, "error", fields)
}

/// A gossip message from `src` to `dest`.
pub fn gossip(src: &str, dest: &str, message: &Message<i64>) -> Envelope {
    Envelope {
        src: src.to_owned(),
        dest: dest.to_owned(),
        body: json!({ "type": "gossip", "gossip": message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_unknown_top_level_keys_and_bad_ones_are_refused_precisely() {
        let (envelope, request) = parse(
            r#"{"id":3,"src":"c1","dest":"n0","body":{"type":"broadcast","msg_id":7,"message":42}}"#,
        )
        .unwrap();
        assert_eq!(envelope.src, "c1");
        assert_eq!(
            request,
            Request::Broadcast {
                msg_id: Some(7),
                message: 42
            }
        );
        let refused = |line: &str| match parse(line) {
            Err(BadInput::Refused { code, text, .. }) => (code, text),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused(r#"{"src":"c1","dest":"n0","body":{"type":"cas","msg_id":1}}"#).0,
            code::NOT_SUPPORTED
        );
        let (code, text) =
            refused(r#"{"src":"c1","dest":"n0","body":{"type":"broadcast","msg_id":1}}"#);
        assert_eq!(code, code::MALFORMED_REQUEST);
        assert!(text.contains("message"), "{text}");
        assert_eq!(
            refused(r#"{"src":"c1","dest":"n0","body":{"msg_id":1}}"#).0,
            code::MALFORMED_REQUEST
        );
        assert!(matches!(
            parse("{not json"),
            Err(BadInput::NotAnEnvelope(_))
        ));
        assert!(matches!(parse(""), Err(BadInput::NotAnEnvelope(_))));
    }

    #[test]
    fn replies_carry_exactly_type_in_reply_to_and_their_fields() {
        let request = Envelope {
            src: "c1".into(),
            dest: "n0".into(),
            body: json!({"type": "read", "msg_id": 9}),
        };
        let mut fields = serde_json::Map::new();
        fields.insert("messages".into(), json!([1, 2]));
        let answer = reply(&request, "read_ok", fields).unwrap();
        assert_eq!(
            answer.to_line(),
            r#"{"src":"n0","dest":"c1","body":{"in_reply_to":9,"messages":[1,2],"type":"read_ok"}}"#
        );
        let no_id = Envelope {
            body: json!({"type": "read"}),
            ..request
        };
        assert_eq!(reply(&no_id, "read_ok", serde_json::Map::new()), None);
    }
}
