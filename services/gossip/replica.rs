//! The replicated state, scuttlebutt-style: every origin (a node in one of
//! its lives, see [`Origin`]) writes only its own keys, each write numbered
//! by the origin's own sequence. A replica holds, per origin, the current
//! value of each key and its *floor*: the sequence number up to which it
//! has every current entry of that origin. Whatever a replica sends about an
//! origin is a [`Range`]: "every current entry of this origin with a
//! sequence number in `(from, to]`"; a receiver whose floor is at least
//! `from` is then complete up to `to`. One entry on its own is always such a
//! range (`(seq - 1, seq]`), so eager pushes and anti-entropy deltas are the
//! same thing.
//!
//! Deletes are tombstones, collected after a grace. A peer that is behind a
//! collected tombstone can no longer be sent a plain range (the tombstone is
//! gone), so it is sent a *reset*: the origin's whole live state.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Identifies a node (its address, or a Maelstrom node id).
pub type NodeId = String;
/// An origin's write sequence number; 0 means nothing written.
pub type Seq = u64;

/// A node in one of its lives: a restarted node starts a new generation,
/// with its own sequence from 1, so its new writes are never mistaken for
/// old ones.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The node.
    pub node: NodeId,
    /// Its life: larger for a later start (a start time, say).
    pub generation: u64,
}

/// One key of one origin as sent: its value, or `None` for a deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update<V> {
    /// The key.
    pub key: String,
    /// The origin's sequence number of this write.
    pub seq: Seq,
    /// The value; `None`: deleted.
    pub value: Option<V>,
}

/// Every current entry of `origin` with a sequence number in `(from, to]`
/// (see the module documentation); with `reset`, every live entry of the
/// origin up to `to`, whatever the receiver had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Range<V> {
    /// Whose entries.
    pub origin: Origin,
    /// The range starts after this sequence number.
    pub from: Seq,
    /// The range ends at this sequence number.
    pub to: Seq,
    /// The origin's whole live state: entries of the origin up to `to` that
    /// are not listed are gone.
    pub reset: bool,
    /// The entries, in sequence order.
    pub updates: Vec<Update<V>>,
}

impl<V> Range<V> {
    /// The range of one write.
    pub fn single(origin: Origin, update: Update<V>) -> Self {
        Range {
            origin,
            from: update.seq.saturating_sub(1),
            to: update.seq,
            reset: false,
            updates: vec![update],
        }
    }

    /// Whether the range is well-formed: `from <= to`, entries in strictly
    /// increasing sequence order within `(from, to]`.
    pub fn is_well_formed(&self) -> bool {
        self.from <= self.to
            && self
                .updates
                .iter()
                .all(|u| u.seq > self.from && u.seq <= self.to)
            && self.updates.windows(2).all(|w| w[0].seq < w[1].seq)
    }
}

/// A key's value changed in the replica's view.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyChange<V> {
    /// Whose key.
    pub origin: Origin,
    /// The key.
    pub key: String,
    /// The value now; `None`: deleted (or forgotten).
    pub value: Option<V>,
}

/// One stored entry.
#[derive(Debug, Clone)]
struct Entry<V> {
    seq: Seq,
    value: Option<V>,
    /// When a tombstone was stored here (for its collection).
    deleted_at: Option<Duration>,
}

/// What a replica holds of one origin.
#[derive(Debug, Clone)]
struct OriginState<V> {
    /// Complete up to here.
    floor: Seq,
    /// Tombstones up to here have been collected (here).
    collected: Seq,
    entries: BTreeMap<String, Entry<V>>,
    /// The key of each entry, by sequence number.
    by_seq: BTreeMap<Seq, String>,
}

impl<V> Default for OriginState<V> {
    fn default() -> Self {
        OriginState {
            floor: 0,
            collected: 0,
            entries: BTreeMap::new(),
            by_seq: BTreeMap::new(),
        }
    }
}

impl<V: Clone> OriginState<V> {
    /// Stores `update` if it is newer than what the key has; returns
    /// whether it changed the key's value.
    fn store(&mut self, update: Update<V>, now: Duration) -> Option<Option<V>>
    where
        V: PartialEq,
    {
        if update.seq <= self.collected && update.value.is_none() {
            // A tombstone already collected here: nothing to keep.
            return None;
        }
        let previous = self.entries.get(&update.key);
        if previous.is_some_and(|p| p.seq >= update.seq) {
            return None;
        }
        let changed = previous.map(|p| &p.value) != Some(&update.value)
            && !(previous.is_none() && update.value.is_none());
        if let Some(previous) = previous {
            self.by_seq.remove(&previous.seq);
        }
        self.by_seq.insert(update.seq, update.key.clone());
        let deleted_at = update.value.is_none().then_some(now);
        let value = update.value.clone();
        self.entries.insert(
            update.key,
            Entry {
                seq: update.seq,
                value: update.value,
                deleted_at,
            },
        );
        changed.then_some(value)
    }
}

/// The replicated state of every origin, as one node holds it.
#[derive(Debug, Clone)]
pub struct Replica<V> {
    origins: BTreeMap<Origin, OriginState<V>>,
    /// Origins gone for good: whatever still comes of them is ignored.
    forgotten: std::collections::BTreeSet<Origin>,
}

impl<V> Default for Replica<V> {
    fn default() -> Self {
        Replica {
            origins: BTreeMap::new(),
            forgotten: std::collections::BTreeSet::new(),
        }
    }
}

impl<V: Clone + PartialEq> Replica<V> {
    /// Writes `key` as `origin` (this node's own origin): the next sequence
    /// number; returns the range to send, and the change if the value
    /// changed.
    pub fn write(
        &mut self,
        origin: &Origin,
        key: &str,
        value: Option<V>,
        now: Duration,
    ) -> (Range<V>, Option<KeyChange<V>>) {
        let state = self.origins.entry(origin.clone()).or_default();
        // An origin writes only through here, so its own floor is its last
        // sequence number.
        let seq = state.floor + 1;
        let update = Update {
            key: key.to_owned(),
            seq,
            value,
        };
        let changed = state.store(update.clone(), now);
        state.floor = seq;
        let change = changed.map(|value| KeyChange {
            origin: origin.clone(),
            key: key.to_owned(),
            value,
        });
        (Range::single(origin.clone(), update), change)
    }

    /// Applies a range received from a peer; returns the keys whose value
    /// changed. A malformed range is ignored whole.
    pub fn apply(&mut self, range: Range<V>, now: Duration) -> Vec<KeyChange<V>> {
        if !range.is_well_formed() || self.forgotten.contains(&range.origin) {
            return Vec::new();
        }
        let state = self.origins.entry(range.origin.clone()).or_default();
        let mut changes = Vec::new();
        if range.reset && range.to > state.floor {
            // Entries up to `to` that the reset does not list are gone.
            let listed: std::collections::BTreeSet<&str> =
                range.updates.iter().map(|u| u.key.as_str()).collect();
            let gone: Vec<String> = state
                .entries
                .iter()
                .filter(|(key, entry)| entry.seq <= range.to && !listed.contains(key.as_str()))
                .map(|(key, _)| key.clone())
                .collect();
            for key in gone {
                if let Some(entry) = state.entries.remove(&key) {
                    state.by_seq.remove(&entry.seq);
                    if entry.value.is_some() {
                        changes.push(KeyChange {
                            origin: range.origin.clone(),
                            key,
                            value: None,
                        });
                    }
                }
            }
        }
        let contiguous = range.reset || range.from <= state.floor;
        for update in range.updates {
            let key = update.key.clone();
            if let Some(value) = state.store(update, now) {
                changes.push(KeyChange {
                    origin: range.origin.clone(),
                    key,
                    value,
                });
            }
        }
        if contiguous {
            state.floor = state.floor.max(range.to);
            // Entries already held just above close on.
            while state.by_seq.contains_key(&(state.floor + 1)) {
                state.floor += 1;
            }
        }
        changes
    }

    /// The floor of every origin: what this replica has, for a digest.
    pub fn floors(&self) -> Vec<(Origin, Seq)> {
        self.origins
            .iter()
            .map(|(origin, state)| (origin.clone(), state.floor))
            .collect()
    }

    /// The floor of `origin` (0 when unknown).
    pub fn floor(&self, origin: &Origin) -> Seq {
        self.origins.get(origin).map_or(0, |state| state.floor)
    }

    /// What a peer whose floors are `theirs` lacks, at most `budget`
    /// entries in all (a reset is sent whole): per origin, the range from
    /// the peer's floor up, or the origin's whole live state when the
    /// peer is behind a collected tombstone.
    pub fn delta_for(&self, theirs: &[(Origin, Seq)], budget: usize) -> Vec<Range<V>> {
        let theirs: BTreeMap<&Origin, Seq> = theirs.iter().map(|(o, s)| (o, *s)).collect();
        let mut ranges = Vec::new();
        let mut left = budget;
        for (origin, state) in &self.origins {
            if left == 0 {
                break;
            }
            let their_floor = theirs.get(origin).copied().unwrap_or(0);
            if state.floor <= their_floor {
                continue;
            }
            if their_floor < state.collected {
                let updates: Vec<Update<V>> = state
                    .by_seq
                    .range(..=state.floor)
                    .filter_map(|(seq, key)| {
                        let entry = state.entries.get(key)?;
                        entry.value.as_ref().map(|value| Update {
                            key: key.clone(),
                            seq: *seq,
                            value: Some(value.clone()),
                        })
                    })
                    .collect();
                left = left.saturating_sub(updates.len());
                ranges.push(Range {
                    origin: origin.clone(),
                    from: 0,
                    to: state.floor,
                    reset: true,
                    updates,
                });
                continue;
            }
            let mut updates = Vec::new();
            let mut to = state.floor;
            for (seq, key) in state.by_seq.range(their_floor + 1..=state.floor) {
                if updates.len() == left {
                    to = updates.last().map_or(their_floor, |u: &Update<V>| u.seq);
                    break;
                }
                if let Some(entry) = state.entries.get(key) {
                    updates.push(Update {
                        key: key.clone(),
                        seq: *seq,
                        value: entry.value.clone(),
                    });
                }
            }
            left -= updates.len();
            if to > their_floor {
                ranges.push(Range {
                    origin: origin.clone(),
                    from: their_floor,
                    to,
                    reset: false,
                    updates,
                });
            }
        }
        ranges
    }

    /// Collects the tombstones stored longer than `grace` ago; returns how
    /// many went.
    pub fn collect_tombstones(&mut self, now: Duration, grace: Duration) -> usize {
        let mut collected = 0;
        for state in self.origins.values_mut() {
            let expired: Vec<String> = state
                .entries
                .iter()
                .filter(|(_, entry)| {
                    entry
                        .deleted_at
                        .is_some_and(|at| now.saturating_sub(at) >= grace)
                        && entry.seq <= state.floor
                })
                .map(|(key, _)| key.clone())
                .collect();
            for key in expired {
                if let Some(entry) = state.entries.remove(&key) {
                    state.by_seq.remove(&entry.seq);
                    state.collected = state.collected.max(entry.seq);
                    collected += 1;
                }
            }
        }
        collected
    }

    /// Drops everything of `origin` (a node gone for good) and ignores
    /// whatever still comes of it; returns the live keys that went.
    pub fn forget(&mut self, origin: &Origin) -> Vec<KeyChange<V>> {
        self.forgotten.insert(origin.clone());
        let Some(state) = self.origins.remove(origin) else {
            return Vec::new();
        };
        state
            .entries
            .into_iter()
            .filter(|(_, entry)| entry.value.is_some())
            .map(|(key, _)| KeyChange {
                origin: origin.clone(),
                key,
                value: None,
            })
            .collect()
    }

    /// Stops ignoring the origins of `node` (it turned out alive): what
    /// comes of them is taken in again.
    pub fn unforget_node(&mut self, node: &str) {
        self.forgotten.retain(|origin| origin.node != node);
    }

    /// Every origin this replica holds something of.
    pub fn origins(&self) -> impl Iterator<Item = &Origin> {
        self.origins.keys()
    }

    /// The live value of `key` of `origin`.
    pub fn get(&self, origin: &Origin, key: &str) -> Option<&V> {
        self.origins.get(origin)?.entries.get(key)?.value.as_ref()
    }

    /// Every live entry: origin, key, value.
    pub fn live(&self) -> impl Iterator<Item = (&Origin, &str, &V)> {
        self.origins.iter().flat_map(|(origin, state)| {
            state
                .entries
                .iter()
                .filter_map(move |(key, entry)| Some((origin, key.as_str(), entry.value.as_ref()?)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_secs(1);

    fn origin(node: &str) -> Origin {
        Origin {
            node: node.into(),
            generation: 1,
        }
    }

    fn live(replica: &Replica<u64>) -> Vec<(String, u64)> {
        replica
            .live()
            .map(|(_, key, value)| (key.to_owned(), *value))
            .collect()
    }

    #[test]
    fn floors_advance_only_over_what_is_complete_and_deltas_fill_the_gaps() {
        let a = origin("a");
        let mut writer = Replica::default();
        let (first, _) = writer.write(&a, "x", Some(1), NOW);
        let (second, _) = writer.write(&a, "y", Some(2), NOW);
        let (third, _) = writer.write(&a, "x", Some(3), NOW);

        let mut reader = Replica::default();
        // The second write arrives alone: seen, but the floor stays.
        assert_eq!(reader.apply(second, NOW).len(), 1);
        assert_eq!(reader.floor(&a), 0);
        assert_eq!(live(&reader), [("y".to_owned(), 2)]);
        // The first closes the gap (over the second, held already), the
        // third follows on.
        reader.apply(first, NOW);
        assert_eq!(reader.floor(&a), 2);
        reader.apply(third, NOW);
        assert_eq!(reader.floor(&a), 3);
        assert_eq!(live(&reader), live(&writer));

        // A late copy of an older write changes nothing.
        let stale = Range::single(
            a.clone(),
            Update {
                key: "x".into(),
                seq: 1,
                value: Some(1),
            },
        );
        assert!(reader.apply(stale, NOW).is_empty());
        assert_eq!(reader.get(&a, "x"), Some(&3));

        // A fresh replica gets everything from a delta, within the budget.
        let mut fresh = Replica::default();
        let delta = writer.delta_for(&fresh.floors(), 1);
        assert_eq!(delta.len(), 1);
        assert_eq!((delta[0].from, delta[0].updates.len()), (0, 1));
        for range in delta {
            fresh.apply(range, NOW);
        }
        assert_eq!(fresh.floor(&a), 2, "complete up to the first entry sent");
        for range in writer.delta_for(&fresh.floors(), 10) {
            fresh.apply(range, NOW);
        }
        assert_eq!(live(&fresh), live(&writer));
        assert!(writer.delta_for(&fresh.floors(), 10).is_empty());
    }

    #[test]
    fn a_peer_behind_a_collected_tombstone_gets_a_reset() {
        let a = origin("a");
        let mut writer = Replica::default();
        let mut behind = Replica::default();
        for range in [
            writer.write(&a, "x", Some(1), NOW).0,
            writer.write(&a, "y", Some(2), NOW).0,
        ] {
            behind.apply(range, NOW);
        }
        let (deletion, change) = writer.write(&a, "x", None, NOW);
        assert_eq!(change.map(|c| c.value), Some(None));
        // The deletion never reaches `behind`; the writer collects it.
        drop(deletion);
        assert_eq!(writer.collect_tombstones(NOW, Duration::from_secs(60)), 0);
        let later = NOW + Duration::from_secs(61);
        assert_eq!(writer.collect_tombstones(later, Duration::from_secs(60)), 1);

        let delta = writer.delta_for(&behind.floors(), 10);
        assert!(delta[0].reset, "{delta:?}");
        let changes = behind.apply(delta[0].clone(), later);
        assert_eq!(
            changes,
            [KeyChange {
                origin: a.clone(),
                key: "x".into(),
                value: None
            }]
        );
        assert_eq!(live(&behind), [("y".to_owned(), 2)]);
        assert_eq!(behind.floor(&a), 3);
        assert!(writer.delta_for(&behind.floors(), 10).is_empty());
    }

    #[test]
    fn malformed_ranges_are_ignored_whole() {
        let a = origin("a");
        let mut replica: Replica<u64> = Replica::default();
        let update = |seq| Update {
            key: format!("k{seq}"),
            seq,
            value: Some(seq),
        };
        for bad in [
            Range {
                origin: a.clone(),
                from: 5,
                to: 4,
                reset: false,
                updates: vec![],
            },
            Range {
                origin: a.clone(),
                from: 0,
                to: 2,
                reset: false,
                updates: vec![update(3)],
            },
            Range {
                origin: a.clone(),
                from: 0,
                to: 3,
                reset: false,
                updates: vec![update(2), update(1)],
            },
        ] {
            assert!(replica.apply(bad, NOW).is_empty());
        }
        assert_eq!(replica.floor(&a), 0);
        assert_eq!(replica.live().count(), 0);
    }

    #[test]
    fn a_forgotten_origin_takes_its_keys_with_it() {
        let (a, b) = (origin("a"), origin("b"));
        let mut replica = Replica::default();
        replica.write(&a, "x", Some(1), NOW);
        replica.write(&b, "y", Some(2), NOW);
        let (late, _) = Replica::default().write(&a, "z", Some(3), NOW);
        let gone = replica.forget(&a);
        assert_eq!(gone.len(), 1);
        assert_eq!(live(&replica), [("y".to_owned(), 2)]);
        assert_eq!(replica.origins().collect::<Vec<_>>(), [&b]);
        // What still comes of it is ignored.
        assert!(replica.apply(late, NOW).is_empty());
        assert_eq!(replica.origins().collect::<Vec<_>>(), [&b]);
    }
}
