//! What gossip nodes send each other.
//!
//! - `Push`: ranges as they happen (a node's own writes, or what a relay
//!   passes on); nothing answers it.
//! - Anti-entropy, three-way as in scuttlebutt: `Syn` carries the sender's
//!   floors, `SynAck` what the receiver has that the sender lacks plus the
//!   receiver's floors, `Ack` what the first lacks back.

use serde::{Deserialize, Serialize};

use crate::gossip::replica::{Origin, Range, Seq};

/// A node's floor of every origin it knows (see [`crate::gossip::replica`]).
pub type Floors = Vec<(Origin, Seq)>;

/// One gossip message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message<V> {
    /// New entries, unasked.
    Push {
        /// The ranges.
        ranges: Vec<Range<V>>,
    },
    /// Opens an anti-entropy exchange: what the sender has.
    Syn {
        /// The sender's floor of every origin it knows.
        floors: Floors,
    },
    /// What the receiver of a `Syn` has that its sender lacks, and what it
    /// has itself.
    SynAck {
        /// The floors of the `SynAck`'s sender.
        floors: Floors,
        /// What the `Syn`'s sender lacks.
        ranges: Vec<Range<V>>,
    },
    /// Closes the exchange: what the `SynAck`'s sender lacks.
    Ack {
        /// The ranges.
        ranges: Vec<Range<V>>,
    },
}

/// The size of a value on the wire, roughly: for the figures of the
/// simulator and the bound of a message.
pub trait WireSize {
    /// Bytes.
    fn wire_size(&self) -> usize;
}

impl WireSize for () {
    fn wire_size(&self) -> usize {
        0
    }
}

impl WireSize for u64 {
    fn wire_size(&self) -> usize {
        8
    }
}

impl WireSize for i64 {
    fn wire_size(&self) -> usize {
        8
    }
}

impl WireSize for String {
    fn wire_size(&self) -> usize {
        self.len()
    }
}

/// An origin's size: its node id and generation.
fn origin_size(origin: &Origin) -> usize {
    origin.node.len() + 8
}

fn floors_size(floors: &Floors) -> usize {
    floors
        .iter()
        .map(|(origin, _)| origin_size(origin) + 8)
        .sum()
}

fn ranges_size<V: WireSize>(ranges: &[Range<V>]) -> usize {
    ranges
        .iter()
        .map(|range| {
            origin_size(&range.origin)
                + 17
                + range
                    .updates
                    .iter()
                    .map(|u| u.key.len() + 9 + u.value.as_ref().map_or(0, V::wire_size))
                    .sum::<usize>()
        })
        .sum()
}

impl<V: WireSize> WireSize for Message<V> {
    fn wire_size(&self) -> usize {
        1 + match self {
            Message::Push { ranges } | Message::Ack { ranges } => ranges_size(ranges),
            Message::Syn { floors } => floors_size(floors),
            Message::SynAck { floors, ranges } => floors_size(floors) + ranges_size(ranges),
        }
    }
}

impl<V> Message<V> {
    /// How many entries the message carries.
    pub fn updates(&self) -> usize {
        match self {
            Message::Push { ranges } | Message::Ack { ranges } | Message::SynAck { ranges, .. } => {
                ranges.iter().map(|r| r.updates.len()).sum()
            }
            Message::Syn { .. } => 0,
        }
    }
}
