//! The peer part of `gradebook.registry.v1`: gossip messages between
//! registry nodes, from and to the gossip engine's [`Message`] with
//! catalog records as values. What comes from a peer is checked like any
//! request: a malformed message is refused whole, naming the field.

use crate::gossip::{Message, Origin, Range, Update};
use crate::model::InvalidField;
use crate::model::registry::{
    CatalogRecord, Instance, RecordVersion, validate_address, validate_instance_id,
    validate_service_name,
};
use crate::model::traffic::{PolicyRecord, policy_key, policy_service};
use crate::pb::registry::v1 as pb;
use crate::pb::registry::v1::catalog_update::Record;
use crate::pb::registry::v1::gossip_message::Kind;

/// The most ranges in one message.
pub const MAX_RANGES: usize = 1024;
/// The most records in one range.
pub const MAX_UPDATES: usize = 512;
/// The most floors in one message.
pub const MAX_FLOORS: usize = 4096;

/// A gossip message as it arrived: who sent it and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerMessage {
    /// The sender's protocol version (`PeerProtocol` as a number).
    pub protocol: i32,
    /// The sender's group.
    pub cluster: String,
    /// The sender's peer address.
    pub from: String,
    /// The message.
    pub message: Message<CatalogRecord>,
}

impl PeerMessage {
    /// The message in this protocol version.
    pub fn new(cluster: &str, from: &str, message: Message<CatalogRecord>) -> Self {
        PeerMessage {
            protocol: pb::PeerProtocol::V1 as i32,
            cluster: cluster.to_owned(),
            from: from.to_owned(),
            message,
        }
    }
}

fn origin_to_pb(origin: &Origin) -> pb::Origin {
    pb::Origin {
        node: origin.node.clone(),
        generation: origin.generation,
    }
}

fn floors_to_pb(floors: &[(Origin, u64)]) -> Vec<pb::Floor> {
    floors
        .iter()
        .map(|(origin, seq)| pb::Floor {
            origin: Some(origin_to_pb(origin)),
            seq: *seq,
        })
        .collect()
}

fn ranges_to_pb(ranges: &[Range<CatalogRecord>]) -> Vec<pb::CatalogRange> {
    ranges
        .iter()
        .map(|range| pb::CatalogRange {
            origin: Some(origin_to_pb(&range.origin)),
            from: range.from,
            to: range.to,
            reset: range.reset,
            updates: range
                .updates
                .iter()
                .map(|update| pb::CatalogUpdate {
                    instance_id: update.key.clone(),
                    seq: update.seq,
                    record: update.value.as_ref().map(|record| match record {
                        CatalogRecord::Live(instance) => {
                            Record::Instance(pb::Instance::from(instance.as_ref()))
                        }
                        CatalogRecord::Removed(version) => Record::Removed(pb::RecordVersion {
                            counter: version.counter,
                            origin: version.origin.clone(),
                        }),
                        CatalogRecord::Policy(policy) => {
                            Record::Policy(pb::TrafficPolicy::from(policy.as_ref()))
                        }
                    }),
                })
                .collect(),
        })
        .collect()
}

impl From<&PeerMessage> for pb::GossipMessage {
    fn from(m: &PeerMessage) -> Self {
        let kind = match &m.message {
            Message::Push { ranges } => Kind::Push(pb::Push {
                ranges: ranges_to_pb(ranges),
            }),
            Message::Syn { floors } => Kind::Syn(pb::Syn {
                floors: floors_to_pb(floors),
            }),
            Message::SynAck { floors, ranges } => Kind::SynAck(pb::SynAck {
                floors: floors_to_pb(floors),
                ranges: ranges_to_pb(ranges),
            }),
            Message::Ack { ranges } => Kind::Ack(pb::Ack {
                ranges: ranges_to_pb(ranges),
            }),
        };
        pb::GossipMessage {
            protocol: m.protocol,
            cluster: m.cluster.clone(),
            from: m.from.clone(),
            kind: Some(kind),
        }
    }
}

fn origin_from_pb(field: &str, origin: Option<pb::Origin>) -> Result<Origin, InvalidField> {
    let origin = origin.ok_or_else(|| InvalidField::new(field, "missing"))?;
    validate_address(&format!("{field}.node"), &origin.node)?;
    Ok(Origin {
        node: origin.node,
        generation: origin.generation,
    })
}

fn floors_from_pb(field: &str, floors: Vec<pb::Floor>) -> Result<Vec<(Origin, u64)>, InvalidField> {
    if floors.len() > MAX_FLOORS {
        return Err(InvalidField::new(
            field,
            format!("{} floors, over the limit of {MAX_FLOORS}", floors.len()),
        ));
    }
    floors
        .into_iter()
        .enumerate()
        .map(|(i, floor)| {
            Ok((
                origin_from_pb(&format!("{field}[{i}].origin"), floor.origin)?,
                floor.seq,
            ))
        })
        .collect()
}

fn instance_from_pb(
    field: &str,
    id: &str,
    instance: pb::Instance,
) -> Result<Instance, InvalidField> {
    validate_service_name(&format!("{field}.service"), &instance.service)?;
    validate_address(&format!("{field}.address"), &instance.address)?;
    if instance.instance_id != id {
        return Err(InvalidField::new(
            format!("{field}.instance_id"),
            "differs from the update's instance_id",
        ));
    }
    Instance::try_from(instance).map_err(|e| InvalidField::new(field, e.0))
}

fn ranges_from_pb(
    field: &str,
    ranges: Vec<pb::CatalogRange>,
) -> Result<Vec<Range<CatalogRecord>>, InvalidField> {
    if ranges.len() > MAX_RANGES {
        return Err(InvalidField::new(
            field,
            format!("{} ranges, over the limit of {MAX_RANGES}", ranges.len()),
        ));
    }
    ranges
        .into_iter()
        .enumerate()
        .map(|(i, range)| {
            let at = format!("{field}[{i}]");
            if range.updates.len() > MAX_UPDATES {
                return Err(InvalidField::new(
                    format!("{at}.updates"),
                    format!(
                        "{} records, over the limit of {MAX_UPDATES}",
                        range.updates.len()
                    ),
                ));
            }
            let updates = range
                .updates
                .into_iter()
                .enumerate()
                .map(|(j, update)| {
                    let at = format!("{at}.updates[{j}]");
                    match policy_service(&update.instance_id) {
                        Some(service) => {
                            validate_service_name(&format!("{at}.instance_id"), service)?
                        }
                        None => {
                            validate_instance_id(&format!("{at}.instance_id"), &update.instance_id)?
                        }
                    }
                    let value = match update.record {
                        None => None,
                        Some(Record::Instance(instance)) => {
                            Some(CatalogRecord::Live(Box::new(instance_from_pb(
                                &format!("{at}.instance"),
                                &update.instance_id,
                                instance,
                            )?)))
                        }
                        Some(Record::Removed(version)) => {
                            Some(CatalogRecord::Removed(RecordVersion {
                                counter: version.counter,
                                origin: version.origin,
                            }))
                        }
                        Some(Record::Policy(policy)) => {
                            let field = format!("{at}.policy");
                            let policy = PolicyRecord::from_pb(&field, policy)?;
                            if policy_key(&policy.service) != update.instance_id {
                                return Err(InvalidField::new(
                                    format!("{field}.service"),
                                    "differs from the update's key",
                                ));
                            }
                            Some(CatalogRecord::Policy(Box::new(policy)))
                        }
                    };
                    Ok(Update {
                        key: update.instance_id,
                        seq: update.seq,
                        value,
                    })
                })
                .collect::<Result<Vec<_>, InvalidField>>()?;
            let range = Range {
                origin: origin_from_pb(&format!("{at}.origin"), range.origin)?,
                from: range.from,
                to: range.to,
                reset: range.reset,
                updates,
            };
            if !range.is_well_formed() {
                return Err(InvalidField::new(
                    at,
                    "not a range: from <= to, and records in increasing order within it",
                ));
            }
            Ok(range)
        })
        .collect()
}

impl TryFrom<pb::GossipMessage> for PeerMessage {
    type Error = InvalidField;

    fn try_from(m: pb::GossipMessage) -> Result<Self, InvalidField> {
        validate_address("from", &m.from)?;
        let message = match m.kind.ok_or_else(|| InvalidField::new("kind", "missing"))? {
            Kind::Push(push) => Message::Push {
                ranges: ranges_from_pb("push.ranges", push.ranges)?,
            },
            Kind::Syn(syn) => Message::Syn {
                floors: floors_from_pb("syn.floors", syn.floors)?,
            },
            Kind::SynAck(ack) => Message::SynAck {
                floors: floors_from_pb("syn_ack.floors", ack.floors)?,
                ranges: ranges_from_pb("syn_ack.ranges", ack.ranges)?,
            },
            Kind::Ack(ack) => Message::Ack {
                ranges: ranges_from_pb("ack.ranges", ack.ranges)?,
            },
        };
        Ok(PeerMessage {
            protocol: m.protocol,
            cluster: m.cluster,
            from: m.from,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::registry::Instance;

    #[test]
    fn messages_round_trip_and_bad_ones_name_the_field() {
        let origin = Origin {
            node: "127.0.0.1:50051".into(),
            generation: 7,
        };
        let instance = Instance::for_test(
            "grading",
            "grading-1",
            crate::model::registry::Health::Serving,
        );
        let message = PeerMessage::new(
            "gradebook",
            "127.0.0.1:50051",
            Message::SynAck {
                floors: vec![(origin.clone(), 4)],
                ranges: vec![Range {
                    origin,
                    from: 1,
                    to: 4,
                    reset: false,
                    updates: vec![
                        Update {
                            key: "grading-1".into(),
                            seq: 2,
                            value: Some(CatalogRecord::Live(Box::new(instance))),
                        },
                        Update {
                            key: "log-1".into(),
                            seq: 3,
                            value: Some(CatalogRecord::Removed(RecordVersion {
                                counter: 9,
                                origin: "registry-a".into(),
                            })),
                        },
                        Update {
                            key: crate::model::traffic::policy_key("grading"),
                            seq: 4,
                            value: Some(CatalogRecord::Policy(Box::new(PolicyRecord {
                                service: "grading".into(),
                                policy: crate::model::traffic::TrafficPolicy::only("2.0.0")
                                    .unwrap(),
                                version: RecordVersion {
                                    counter: 10,
                                    origin: "registry-a".into(),
                                },
                                set_at: std::time::UNIX_EPOCH
                                    + std::time::Duration::from_secs(1_800_000_000),
                            }))),
                        },
                    ],
                }],
            },
        );
        let wire = pb::GossipMessage::from(&message);
        assert_eq!(PeerMessage::try_from(wire.clone()).unwrap(), message);

        let mut bad = wire.clone();
        if let Some(Kind::SynAck(ack)) = bad.kind.as_mut() {
            ack.ranges[0].updates[0].seq = 9;
        }
        assert_eq!(
            PeerMessage::try_from(bad).unwrap_err().field,
            "syn_ack.ranges[0]"
        );
        let mut bad = wire;
        if let Some(Kind::SynAck(ack)) = bad.kind.as_mut()
            && let Some(Record::Instance(instance)) = ack.ranges[0].updates[0].record.as_mut()
        {
            instance.service = "Not A Name".into();
        }
        assert_eq!(
            PeerMessage::try_from(bad).unwrap_err().field,
            "syn_ack.ranges[0].updates[0].instance.service"
        );
    }
}
